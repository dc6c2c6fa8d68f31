"""From gold targets and predictions to metrics with confidence intervals (pure).

Each task kind has a primary metric (classification: accuracy; extraction: field F1;
generation: exact match under the task's match mode) and secondary ones. Every metric gets a
95% percentile-bootstrap interval over examples; paired comparisons use the per-example
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
    json_validity,
    macro_f1,
    match_vector,
    per_label_scores,
    top_confusions,
)
from .records import MetricValue, Prediction
from .stats import bootstrap_ci, bootstrap_mean_ci, compare_paired

__all__ = ["PRIMARY_METRIC", "score_predictions", "per_example_correct", "compare_rungs"]

# the first metric a task kind may target is its primary one: one list, in task.py
PRIMARY_METRIC = {kind: metrics[0] for kind, metrics in TARGET_METRICS.items()}
RESAMPLES = 2000


def _method() -> str:
    return f"percentile bootstrap over examples, 95%, {RESAMPLES} resamples"


def _mean_metric(values: np.ndarray, seed: int) -> MetricValue:
    low, high = bootstrap_mean_ci(values, resamples=RESAMPLES, seed=seed)
    return MetricValue(float(values.mean()) if values.size else float("nan"), low, high, int(values.size), _method())


def _stat_metric(stat: Any, n: int, seed: int) -> MetricValue:
    low, high = bootstrap_ci(stat, n, resamples=RESAMPLES, seed=seed)
    return MetricValue(float(stat(np.arange(n))) if n else float("nan"), low, high, n, _method())


def _canonical(obj: Any) -> Any:
    import json

    return json.dumps(obj, sort_keys=True, ensure_ascii=False) if obj is not None else None


def per_example_correct(kind: str, golds: Sequence[Any], preds: Sequence[Any], *, match: str = "exact") -> np.ndarray:
    """The 0/1 vector that paired tests compare."""
    if kind == "classification":
        return correct_vector(golds, preds)
    if kind == "extraction":
        return correct_vector([_canonical(g) for g in golds], [_canonical(p) for p in preds])
    return match_vector(golds, preds, match)


def _classification(golds: list[Any], outs: list[Any], labels: Sequence[str], seed: int) -> dict[str, Any]:
    g, p = np.array(golds, dtype=object), np.array(outs, dtype=object)
    return {
        "metrics": {
            "accuracy": _mean_metric(correct_vector(golds, outs).astype(float), seed),
            "macro_f1": _stat_metric(lambda idx: macro_f1(list(g[idx]), list(p[idx]), list(labels)), len(golds), seed),
        },
        "per_label": per_label_scores(golds, outs, list(labels)),
        "confusions": top_confusions(golds, outs, k=10),
    }


def _extraction(golds: list[Any], outs: list[Any], raws: list[str], schema: Any, seed: int) -> dict[str, Any]:
    counts = np.array([field_counts(g, o) for g, o in zip(golds, outs)], dtype=float).reshape(-1, 3)

    def prf(idx: np.ndarray, which: str) -> float:
        tp, fp, fn = counts[idx].sum(axis=0)
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"precision": precision, "recall": recall, "f1": f1}[which]

    n = len(golds)
    return {
        "metrics": {
            "field_f1": _stat_metric(lambda idx: prf(idx, "f1"), n, seed),
            "field_precision": _stat_metric(lambda idx: prf(idx, "precision"), n, seed),
            "field_recall": _stat_metric(lambda idx: prf(idx, "recall"), n, seed),
            "json_validity": _mean_metric(json_validity(raws, schema).astype(float), seed),
            "exact_match": _mean_metric(per_example_correct("extraction", golds, outs).astype(float), seed),
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
) -> dict[str, Any]:
    """-> {"metrics": {name: MetricValue}, "per_label": ..., "confusions": ..., "parse": {...}}."""
    golds, outs = list(golds), [p.output for p in predictions]
    if kind == "classification":
        scored = _classification(golds, outs, labels, seed)
    elif kind == "extraction":
        scored = _extraction(golds, outs, [p.raw for p in predictions], schema, seed)
    else:
        scored = {"metrics": {"exact_match": _mean_metric(match_vector(golds, outs, match).astype(float), seed)}}
    rules: dict[str, int] = {}
    for p in predictions:
        if p.parse_rule:
            rules[p.parse_rule] = rules.get(p.parse_rule, 0) + 1
    scored["parse"] = {"rules": rules, "unparsed": sum(p.output is None for p in predictions)}
    return scored


def compare_rungs(a: np.ndarray, b: np.ndarray, *, seed: int = 0) -> dict[str, Any]:
    """Exact McNemar test and paired bootstrap interval of the difference (A - B)."""
    return compare_paired(a, b, resamples=RESAMPLES, seed=seed)
