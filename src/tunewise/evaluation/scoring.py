"""From gold targets and predictions to metrics with confidence intervals (pure).

Each task kind has a primary metric (classification: accuracy; extraction: field F1;
generation: exact match under the task's match mode) and secondary ones. Every metric gets a 95%
interval (``stats.py``): a mean of 0/1 per-example scores (accuracy, exact_match, json_validity) the exact
Clopper-Pearson interval, a statistic of the whole sample (macro-F1, field precision, recall and F1) a BCa
bootstrap interval over examples, its resamples scored in batches. Paired comparisons use the per-example
correctness vector (for extraction: the whole JSON object matching).

Out of scope: running models (``evaluator.py``), presentation (``report/``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..task import TARGET_METRICS
from .metrics import (
    correct_vector,
    field_counts,
    generation_metric_key,
    generation_scores,
    json_validity,
    match_vector,
    per_label_scores,
    top_confusions,
)
from .records import MetricValue, Prediction
from .stats import BatchStatistic, bca_metric, compare_paired, proportion_metric

__all__ = ["PRIMARY_METRIC", "score_predictions", "per_example_correct", "compare_rungs", "macro_f1_statistic",
           "field_statistic", "mean_metric"]

# the first metric a task kind may target is its primary one: one list, in task.py
PRIMARY_METRIC = {kind: metrics[0] for kind, metrics in TARGET_METRICS.items()}
RESAMPLES = 2000


def _stat_metric(stat: BatchStatistic, n: int, seed: int) -> MetricValue:
    return bca_metric(stat, n, resamples=RESAMPLES, seed=seed)


def macro_f1_statistic(golds: Sequence[Any], preds: Sequence[Any], labels: Sequence[Any]) -> BatchStatistic:
    """``metrics.macro_f1(golds, preds, labels)`` of every row of resampled example indices at once.

    Per label, F1 = 2 tp / (gold count + predicted count) (equal to 2 P R / (P + R)); labels with neither
    gold examples nor predictions in the resample are left out, a None prediction counts against its gold.
    """
    index = {label: i for i, label in enumerate(labels)}
    other = len(index)
    g = np.array([index.get(x, other) for x in golds], dtype=np.int64)
    p = np.array([other if x is None else index.get(x, other) for x in preds], dtype=np.int64)

    def stat(rows: np.ndarray) -> np.ndarray:
        rows = np.atleast_2d(rows)
        offset = (np.arange(rows.shape[0], dtype=np.int64) * (other + 1))[:, None]

        def count(codes: np.ndarray) -> np.ndarray:
            flat = np.bincount((codes + offset).ravel(), minlength=rows.shape[0] * (other + 1))
            return flat.reshape(rows.shape[0], other + 1)[:, :other]

        gc, pc = g[rows], p[rows]
        tp, total = count(np.where(gc == pc, gc, other)), count(gc) + count(pc)
        present = total > 0
        f1 = np.divide(2.0 * tp, total, out=np.zeros(total.shape), where=present)
        labels_seen = present.sum(axis=1)
        return np.where(labels_seen > 0, f1.sum(axis=1) / np.maximum(labels_seen, 1), np.nan)

    return stat


def field_statistic(counts: np.ndarray, which: str) -> BatchStatistic:
    """Micro field precision, recall or F1 from per-example (tp, fp, fn) ``counts`` of each row of indices.

    Nothing predicted gives precision 1, nothing to find recall 1.
    """
    tp_n, fp_n, fn_n = (np.asarray(counts, dtype=float).reshape(-1, 3)[:, j] for j in range(3))

    def stat(rows: np.ndarray) -> np.ndarray:
        rows = np.atleast_2d(rows)
        tp, fp, fn = tp_n[rows].sum(axis=1), fp_n[rows].sum(axis=1), fn_n[rows].sum(axis=1)
        precision = np.divide(tp, tp + fp, out=np.ones(tp.shape), where=tp + fp > 0)
        recall = np.divide(tp, tp + fn, out=np.ones(tp.shape), where=tp + fn > 0)
        f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(tp.shape),
                       where=precision + recall > 0)
        return {"precision": precision, "recall": recall, "f1": f1}[which]

    return stat


def _canonical(obj: Any) -> Any:
    import json

    return json.dumps(obj, sort_keys=True, ensure_ascii=False) if obj is not None else None


def per_example_correct(kind: str, golds: Sequence[Any], preds: Sequence[Any], *, match: str = "exact",
                        generation_metric: str | None = None, embed: Any = None, inputs: Sequence[str] = (),
                        judge: Any = None) -> np.ndarray:
    """The vector that paired tests compare: 0/1 correctness, or a generation metric's score per example."""
    if kind == "classification":
        return correct_vector(golds, preds)
    if kind == "extraction":
        return correct_vector([_canonical(g) for g in golds], [_canonical(p) for p in preds])
    if generation_metric:
        return generation_scores(generation_metric, golds, preds, embed=embed, inputs=inputs, judge=judge)
    return match_vector(golds, preds, match)


def mean_metric(scores: np.ndarray, seed: int) -> MetricValue:
    """The mean of per-example scores (a generation metric) with its BCa bootstrap interval over examples."""
    v = np.asarray(scores, dtype=float)
    return _stat_metric(lambda rows: v[np.atleast_2d(rows)].mean(axis=1), len(v), seed)


def _classification(golds: list[Any], outs: list[Any], labels: Sequence[str], seed: int) -> dict[str, Any]:
    return {
        "metrics": {
            "accuracy": proportion_metric(correct_vector(golds, outs).astype(float)),
            "macro_f1": _stat_metric(macro_f1_statistic(golds, outs, list(labels)), len(golds), seed),
        },
        "per_label": per_label_scores(golds, outs, list(labels)),
        "confusions": top_confusions(golds, outs, k=10),
    }


def _extraction(golds: list[Any], outs: list[Any], raws: list[str], schema: Any, seed: int) -> dict[str, Any]:
    counts = np.array([field_counts(g, o) for g, o in zip(golds, outs)], dtype=float).reshape(-1, 3)
    n = len(golds)
    return {
        "metrics": {
            "field_f1": _stat_metric(field_statistic(counts, "f1"), n, seed),
            "field_precision": _stat_metric(field_statistic(counts, "precision"), n, seed),
            "field_recall": _stat_metric(field_statistic(counts, "recall"), n, seed),
            "json_validity": proportion_metric(json_validity(raws, schema).astype(float)),
            "exact_match": proportion_metric(per_example_correct("extraction", golds, outs).astype(float)),
        }
    }


def score_predictions(
    kind: str,
    golds: Sequence[Any],
    predictions: Sequence[Prediction],
    *,
    labels: Sequence[str] = (),
    schema: dict[str, Any] | None = None,
    match: str = "normalized",
    seed: int = 0,
    generation_metric: str | None = None,
    embed: Any = None,
    inputs: Sequence[str] = (),
    judge: Any = None,
) -> dict[str, Any]:
    """-> {"metrics": {name: MetricValue}, "per_label": ..., "confusions": ..., "parse": {...}}; a generation task's
    ``generation_metric`` (``embed``: the embedding function ``embedding_similarity`` needs) adds its mean score."""
    golds, outs = list(golds), [p.output for p in predictions]
    if kind == "classification":
        scored = _classification(golds, outs, labels, seed)
    elif kind == "extraction":
        scored = _extraction(golds, outs, [p.raw for p in predictions], schema, seed)
    else:
        scored = {"metrics": {"exact_match": proportion_metric(match_vector(golds, outs, match).astype(float))}}
        if generation_metric:
            scores = generation_scores(generation_metric, golds, outs, embed=embed, inputs=inputs, judge=judge)
            scored["metrics"] = {generation_metric_key(generation_metric): mean_metric(scores, seed),
                                 **scored["metrics"]}
    rules: dict[str, int] = {}
    for p in predictions:
        if p.parse_rule:
            rules[p.parse_rule] = rules.get(p.parse_rule, 0) + 1
    scored["parse"] = {"rules": rules, "unparsed": sum(p.output is None for p in predictions)}
    return scored


def compare_rungs(a: np.ndarray, b: np.ndarray, *, seed: int = 0) -> dict[str, Any]:
    """Exact McNemar test and paired bootstrap interval of the difference (A - B)."""
    return compare_paired(a, b, resamples=RESAMPLES, seed=seed)
