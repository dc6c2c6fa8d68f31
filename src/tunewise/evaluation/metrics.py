"""Metrics: pure functions from gold answers and predictions to numbers.

Which metric fits which task kind (see :data:`METRICS`):

==============  ===============================  ==========================================
metric          task kinds                       what it needs
==============  ===============================  ==========================================
accuracy        classification                   gold labels, predicted labels (None = wrong)
macro_f1        classification                   gold labels, predicted labels
exact_match     generation                       gold strings, predicted strings, a match mode
rouge_l         generation                       gold and predicted strings (rouge-score's ROUGE-L F)
chrf            generation                       gold and predicted strings (sacrebleu's sentence chrF / 100)
embedding_sim.  generation                       an embedding function (cosine of the two texts, clipped at 0)
module:function generation                       the user's function scoring one (gold, prediction) pair
field_f1        extraction                       gold dicts, predicted dicts (None = invalid)
json_validity   extraction                       the raw model outputs (and the JSON Schema)
==============  ===============================  ==========================================

Every function takes whole sequences so that bootstrap resampling (``stats.py``) can call it on
resampled subsets; metrics that are means also have a per-example vector (``correct_vector``,
``match_vector``, ``json_validity``) for paired tests.

Out of scope: confidence intervals and significance (``stats.py``), parsing raw model text into
labels or dicts (the strategies do that), and any I/O.
"""

from __future__ import annotations

import json
import math
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..errors import TaskSpecError

__all__ = [
    "accuracy",
    "correct_vector",
    "macro_f1",
    "per_label_scores",
    "top_confusions",
    "normalize_text",
    "text_match",
    "match_vector",
    "exact_match",
    "json_validity",
    "flatten_fields",
    "field_counts",
    "field_prf",
    "Metric",
    "METRICS",
    "metric_for",
    "metrics_for_kind",
    "GENERATION_METRICS",
    "generation_metric_key",
    "generation_scores",
]

MatchMode = Literal["exact", "normalized", "contains"]


def _check_lengths(golds: Sequence[Any], preds: Sequence[Any]) -> None:
    if len(golds) != len(preds):
        raise ValueError(f"{len(golds)} gold answers but {len(preds)} predictions")


# --- classification ---------------------------------------------------------------------------


def correct_vector(golds: Sequence[Hashable], preds: Sequence[Hashable | None]) -> np.ndarray:
    """Per-example correctness (bool); a None prediction is wrong."""
    _check_lengths(golds, preds)
    return np.fromiter((p is not None and p == g for g, p in zip(golds, preds)), dtype=bool, count=len(golds))


def accuracy(golds: Sequence[Hashable], preds: Sequence[Hashable | None]) -> float:
    """Fraction correct; NaN for no examples (undefined, not zero)."""
    return float(correct_vector(golds, preds).mean()) if len(golds) else math.nan


def _label_counts(
    golds: Sequence[Hashable], preds: Sequence[Hashable | None]
) -> tuple[Counter, Counter, Counter]:
    """(true positives, gold counts, predicted counts) per label."""
    _check_lengths(golds, preds)
    tp = Counter(g for g, p in zip(golds, preds) if p is not None and p == g)
    return tp, Counter(golds), Counter(p for p in preds if p is not None)


def _prf(tp: int, n_pred: int, n_gold: int) -> tuple[float, float, float]:
    # Zero denominators give 0, as sklearn does with zero_division=0.
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def per_label_scores(
    golds: Sequence[Hashable], preds: Sequence[Hashable | None], labels: Sequence[Hashable]
) -> dict[Hashable, dict[str, float]]:
    """Precision, recall, F1 and support (gold count) for each of ``labels``."""
    tp, gold_n, pred_n = _label_counts(golds, preds)
    scores = {}
    for label in labels:
        p, r, f = _prf(tp[label], pred_n[label], gold_n[label])
        scores[label] = {"precision": p, "recall": r, "f1": f, "support": gold_n[label]}
    return scores


def macro_f1(
    golds: Sequence[Hashable], preds: Sequence[Hashable | None], labels: Sequence[Hashable] | None = None
) -> float:
    """Unweighted mean of per-label F1 (sklearn ``f1_score(average="macro", labels=...)``).

    ``labels`` defaults to the gold labels present. A None prediction counts against its gold label;
    a label with neither gold examples nor predictions is skipped (sklearn would count it as 0).
    """
    tp, gold_n, pred_n = _label_counts(golds, preds)
    labels = sorted(gold_n, key=str) if labels is None else labels
    f1s = [_prf(tp[l], pred_n[l], gold_n[l])[2] for l in labels if gold_n[l] or pred_n[l]]
    return float(np.mean(f1s)) if f1s else math.nan


def top_confusions(
    golds: Sequence[Hashable], preds: Sequence[Hashable | None], k: int = 10
) -> list[dict[str, Any]]:
    """The ``k`` most frequent (gold, predicted) mistakes, most frequent first (ties by name)."""
    _check_lengths(golds, preds)
    pairs = Counter((g, p) for g, p in zip(golds, preds) if p is None or p != g)
    ranked = sorted(pairs.items(), key=lambda item: (-item[1], str(item[0][0]), str(item[0][1])))
    return [{"gold": g, "predicted": p, "count": c} for (g, p), c in ranked[:k]]


# --- free text --------------------------------------------------------------------------------

_ARTICLES = frozenset({"a", "an", "the"})
_PUNCT = string.punctuation + "\u2018\u2019\u201c\u201d\u00ab\u00bb\u2026\u2013\u2014"


def normalize_text(s: str) -> str:
    """Lowercase, drop punctuation around words and the articles a/an/the, collapse whitespace.

    Like SQuAD's normalisation, except that punctuation *inside* a word is kept, so "3.5" stays
    distinct from "35" and "card_arrival" stays one token.
    """
    words = unicodedata.normalize("NFKC", s).lower().split()
    stripped = (w.strip(_PUNCT) for w in words)
    return " ".join(w for w in stripped if w and w not in _ARTICLES)


def text_match(gold: str, pred: str | None, mode: MatchMode = "exact") -> bool:
    """Whether ``pred`` answers ``gold``.

    ``exact``: equal after trimming surrounding whitespace; ``normalized``: equal after
    :func:`normalize_text`; ``contains``: the normalised gold occurs as whole words in the
    normalised prediction. A None prediction never matches.
    """
    if pred is None:
        return False
    if mode == "exact":
        return str(pred).strip() == str(gold).strip()
    g, p = normalize_text(str(gold)), normalize_text(str(pred))
    if mode == "normalized":
        return g == p
    if mode == "contains":
        return f" {g} " in f" {p} " if g else not p
    raise ValueError(f"unknown match mode {mode!r}; choose exact, normalized or contains")


def match_vector(golds: Sequence[str], preds: Sequence[str | None], mode: MatchMode = "exact") -> np.ndarray:
    """Per-example :func:`text_match` (bool)."""
    _check_lengths(golds, preds)
    return np.fromiter((text_match(g, p, mode) for g, p in zip(golds, preds)), dtype=bool, count=len(golds))


def exact_match(golds: Sequence[str], preds: Sequence[str | None], mode: MatchMode = "exact") -> float:
    """Fraction of predictions matching their gold answer under ``mode``; NaN for no examples."""
    return float(match_vector(golds, preds, mode).mean()) if len(golds) else math.nan


# --- extraction -------------------------------------------------------------------------------


def _schema_validator(schema: Mapping[str, Any]) -> Any:
    import jsonschema  # only extraction tasks need it

    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise TaskSpecError(f"extraction.schema is not a valid JSON Schema: {exc.message}.") from None
    return cls(schema)


def _as_object(raw: Any) -> dict | None:
    """A JSON object from a raw string (or an already-parsed dict); None when it is not one."""
    if isinstance(raw, Mapping):
        return dict(raw)
    if not isinstance(raw, str):
        return None
    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def json_validity(raws: Sequence[str | None], schema: Mapping[str, Any] | None = None) -> np.ndarray:
    """Per-example: the raw output is a JSON object (and valid against ``schema`` when given).

    The raw text is parsed as it is (surrounding whitespace aside): a JSON object wrapped in prose or
    a Markdown code fence is not valid output, because a program consuming it would fail too.
    """
    validator = _schema_validator(schema) if schema is not None else None
    flags = []
    for raw in raws:
        obj = _as_object(raw)
        flags.append(obj is not None and (validator is None or validator.is_valid(obj)))
    return np.array(flags, dtype=bool)


# A list of {"<name key>": name, "value": v} objects is a list of named fields (SNIPS slots,
# NER entities, key/value pairs): it is scored as fields keyed by the name, not as list items.
_NAME_KEYS = frozenset({"slot", "name", "key", "field", "type", "entity", "label", "attribute", "tag"})


def _named_value(item: Any) -> tuple[str, Any] | None:
    if not isinstance(item, Mapping) or len(item) != 2 or "value" not in item:
        return None
    (name_key,) = (k for k in item if k != "value")
    name = item[name_key]
    return (str(name).strip(), item["value"]) if name_key in _NAME_KEYS and isinstance(name, str) else None


def _scalar(value: Any) -> str:
    """Canonical text for a leaf so that "Paris" == "paris " and 1 == 1.0."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    text = str(value)
    # A value that is only an article or punctuation ("A", "-") must not collapse to "".
    return normalize_text(text) or " ".join(text.lower().split())


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _walk(obj: Any, path: str, out: Counter) -> None:
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            _walk(value, _join(path, key), out)
    elif isinstance(obj, (list, tuple)):
        for item in obj:  # a multiset: order does not matter, repeats do
            named = _named_value(item)
            if named is None:
                _walk(item, path, out)
            else:
                _walk(named[1], _join(path, named[0]), out)
    else:
        out[(path, _scalar(obj))] += 1


def flatten_fields(obj: Any) -> Counter:
    """A nested JSON value as a multiset of (field path, normalised value) items.

    ``{"intent": "X", "slots": [{"slot": "artist", "value": "clem burke"}]}`` becomes
    ``{("intent", "x"): 1, ("slots.artist", "clem burke"): 1}``. A list element that is an object
    with exactly one name-like key (slot, name, key, field, type, entity, label, attribute, tag) and
    a "value" key becomes a field keyed by that name; other elements contribute items under the
    list's own path. Empty containers contribute nothing.
    """
    out: Counter = Counter()
    _walk(obj, "", out)
    return out


def field_counts(gold: Any, pred: Any) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) of one prediction, multiset matching.

    A prediction that is not a dict (None, unparsed text) predicts nothing: every gold field is a
    false negative.
    """
    g = flatten_fields(gold)
    p = flatten_fields(pred) if isinstance(pred, Mapping) else Counter()
    tp = sum((g & p).values())
    return tp, sum(p.values()) - tp, sum(g.values()) - tp


def field_prf(golds: Sequence[Any], preds: Sequence[Any]) -> dict[str, float]:
    """Micro-averaged field precision, recall and F1 over all examples.

    With nothing to find, recall is 1; with nothing predicted, precision is 1 only when there was
    nothing to find either.
    """
    _check_lengths(golds, preds)
    tp = fp = fn = 0
    for gold, pred in zip(golds, preds):
        a, b, c = field_counts(gold, pred)
        tp, fp, fn = tp + a, fp + b, fn + c
    precision = tp / (tp + fp) if tp + fp else float(tp + fn == 0)
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


# --- generation: a score per example ---------------------------------------------------------

#: built-in per-example generation metrics, each a score in [0, 1] (``generation.metric``)
GENERATION_METRICS = ("rouge_l", "chrf", "embedding_similarity", "judge")


def generation_metric_key(metric: str) -> str:
    """The name a generation metric is reported and targeted under: a built-in's name, or a ``module:function``'s
    function name."""
    return metric if metric in GENERATION_METRICS else metric.rpartition(":")[2]


def _rouge_l(golds: Sequence[Any], preds: Sequence[Any]) -> np.ndarray:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    return np.array([0.0 if p is None else scorer.score(str(g), str(p))["rougeL"].fmeasure
                     for g, p in zip(golds, preds)], dtype=float)


def _chrf(golds: Sequence[Any], preds: Sequence[Any]) -> np.ndarray:
    from sacrebleu.metrics import CHRF

    chrf = CHRF()
    return np.array([0.0 if p is None else chrf.sentence_score(str(p), [str(g)]).score / 100
                     for g, p in zip(golds, preds)], dtype=float)


def _embedding_similarity(golds: Sequence[Any], preds: Sequence[Any], embed: Callable[[Sequence[str]], Any]) -> np.ndarray:
    g = np.asarray(embed([str(x) for x in golds]), dtype=float)
    p = np.asarray(embed(["" if x is None else str(x) for x in preds]), dtype=float)
    norms = np.linalg.norm(g, axis=1) * np.linalg.norm(p, axis=1)
    cos = np.divide((g * p).sum(axis=1), norms, out=np.zeros(len(g)), where=norms > 0)
    return np.where([x is None for x in preds], 0.0, np.clip(cos, 0.0, 1.0))


def _user_function(metric: str) -> Callable[[Any, Any], float]:
    import importlib

    module, _, name = metric.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise TaskSpecError(f"generation.metric '{metric}' cannot be loaded ({exc.__class__.__name__}: {exc}); give "
                            f"one of {', '.join(GENERATION_METRICS)} or an importable module:function.") from None
    if not callable(fn):
        raise TaskSpecError(f"generation.metric '{metric}' is not a function.")
    return fn


def generation_scores(metric: str, golds: Sequence[Any], preds: Sequence[Any], *,
                      embed: Callable[[Sequence[str]], Any] | None = None, inputs: Sequence[str] = (),
                      judge: Any = None) -> np.ndarray:
    """One score per example under ``generation.metric``: a built-in (:data:`GENERATION_METRICS`; ``judge``: an
    :class:`~tunewise.evaluation.judge.Judge` grading ``inputs``' answers against the golds) or the user's
    ``module:function`` called as ``function(gold, prediction)`` (prediction None when the answer did not parse),
    which must return a finite number."""
    if metric == "judge":
        if judge is None:
            raise TaskSpecError("generation.metric 'judge' needs the task's judge (generation.judge).")
        return judge.scores(inputs, golds, preds)
    if metric == "rouge_l":
        return _rouge_l(golds, preds)
    if metric == "chrf":
        return _chrf(golds, preds)
    if metric == "embedding_similarity":
        if embed is None:
            raise TaskSpecError("generation.metric 'embedding_similarity' needs the task's embedder.")
        return _embedding_similarity(golds, preds, embed)
    fn = _user_function(metric)
    out = []
    for i, (g, p) in enumerate(zip(golds, preds)):
        value = fn(g, p)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise TaskSpecError(f"generation.metric '{metric}' returned {value!r} for test example {i + 1}; it must "
                                "return a finite number.")
        out.append(float(value))
    return np.array(out, dtype=float)


# --- registry ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """A named metric: ``metric(golds, preds, **options) -> float``.

    ``kinds`` are the task kinds it suits; ``needs_raw`` means ``preds`` must be the raw model
    outputs rather than parsed answers; ``per_example`` (when the metric is a mean) gives the
    per-example vector that paired tests need.
    """

    name: str
    kinds: tuple[str, ...]
    description: str
    fn: Callable[..., float]
    per_example: Callable[..., np.ndarray] | None = None
    needs_raw: bool = False

    def __call__(self, golds: Sequence[Any], preds: Sequence[Any], **options: Any) -> float:
        return self.fn(golds, preds, **options)


def _json_validity_rate(golds: Sequence[Any], raws: Sequence[str | None], schema: Mapping | None = None) -> float:
    flags = json_validity(raws, schema)
    return float(flags.mean()) if len(flags) else math.nan


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("accuracy", ("classification",), "fraction of exactly correct answers",
               accuracy, per_example=correct_vector),
        Metric("macro_f1", ("classification",), "unweighted mean of per-label F1", macro_f1),
        Metric("exact_match", ("generation",),
               "fraction matching the gold text under a match mode (exact, normalized, contains)",
               exact_match, per_example=match_vector),
        Metric("field_f1", ("extraction",), "micro-averaged F1 over (field path, value) items",
               lambda golds, preds: field_prf(golds, preds)["f1"]),
        Metric("json_validity", ("extraction",),
               "fraction of raw outputs that are valid JSON objects (and valid against the schema)",
               _json_validity_rate, per_example=lambda golds, raws, schema=None: json_validity(raws, schema),
               needs_raw=True),
    )
}


def metric_for(name: str) -> Metric:
    """The registered metric called ``name``."""
    try:
        return METRICS[name]
    except KeyError:
        raise TaskSpecError(f"unknown metric '{name}'; choose one of {', '.join(METRICS)}.") from None


def metrics_for_kind(kind: str) -> tuple[Metric, ...]:
    """The metrics that suit a task kind, primary first."""
    return tuple(m for m in METRICS.values() if kind in m.kinds)
