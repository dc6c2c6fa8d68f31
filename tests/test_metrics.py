"""Metrics against hand-computed values and against scikit-learn."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_recall_fscore_support

from tunewise.errors import TaskSpecError
from tunewise.evaluation.metrics import (
    METRICS,
    accuracy,
    correct_vector,
    exact_match,
    field_counts,
    field_prf,
    flatten_fields,
    json_validity,
    macro_f1,
    match_vector,
    metric_for,
    metrics_for_kind,
    normalize_text,
    per_label_scores,
    text_match,
    top_confusions,
)
from tunewise.evaluation.records import Prediction
from tunewise.evaluation.scoring import score_predictions

GOLDS = ["a", "a", "a", "b", "b", "c"]
PREDS = ["a", "a", "b", "b", "c", "c"]


def test_accuracy_and_correct_vector() -> None:
    assert correct_vector(GOLDS, PREDS).tolist() == [True, True, False, True, False, True]
    assert accuracy(GOLDS, PREDS) == pytest.approx(4 / 6)


def test_none_prediction_is_wrong() -> None:
    assert correct_vector(["a", "b"], [None, "b"]).tolist() == [False, True]
    assert math.isnan(accuracy([], []))  # undefined, not 0


def test_length_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="2 gold answers but 1 predictions"):
        accuracy(["a", "b"], ["a"])


def test_macro_f1_hand_computed() -> None:
    # a: P=2/2 R=2/3 F=0.8 ; b: P=1/2 R=1/2 F=0.5 ; c: P=1/2 R=1/1 F=2/3
    expected = (0.8 + 0.5 + 2 / 3) / 3
    assert macro_f1(GOLDS, PREDS) == pytest.approx(expected)


def test_per_label_scores_hand_computed() -> None:
    scores = per_label_scores(GOLDS, PREDS, ["a", "b", "c", "z"])
    assert scores["a"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert scores["c"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert scores["z"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


@pytest.mark.parametrize("seed", range(5))
def test_macro_f1_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = [f"l{i}" for i in range(8)]
    golds = list(rng.choice(labels[:6], size=200))  # l6, l7 never gold: predicted only
    preds = [g if rng.random() < 0.6 else str(rng.choice(labels)) for g in golds]
    gold_labels = sorted(set(golds))
    ours = macro_f1(golds, preds)
    theirs = f1_score(golds, preds, average="macro", labels=gold_labels, zero_division=0)
    assert ours == pytest.approx(theirs)
    p, r, f, s = precision_recall_fscore_support(golds, preds, labels=gold_labels, zero_division=0)
    table = per_label_scores(golds, preds, gold_labels)
    for i, label in enumerate(gold_labels):
        assert table[label]["precision"] == pytest.approx(p[i])
        assert table[label]["recall"] == pytest.approx(r[i])
        assert table[label]["f1"] == pytest.approx(f[i])
        assert table[label]["support"] == s[i]


def test_macro_f1_none_counts_against_gold_like_sklearn_with_a_sentinel() -> None:
    golds, preds = ["a", "a", "b"], ["a", None, "b"]
    sentinel = ["a", "<none>", "b"]
    assert macro_f1(golds, preds) == pytest.approx(f1_score(golds, sentinel, average="macro", labels=["a", "b"]))


def test_macro_f1_skips_labels_never_seen_and_counts_predicted_only_labels() -> None:
    golds, preds = ["a", "b"], ["a", "x"]
    # "unused" has no gold and no prediction: skipped; "x" was predicted but never gold: F1 0.
    assert macro_f1(golds, preds, labels=["a", "b", "unused"]) == pytest.approx(0.5)
    assert macro_f1(golds, preds, labels=["a", "b", "x"]) == pytest.approx(1 / 3)


def test_top_confusions_ranked() -> None:
    golds = ["a", "a", "a", "b", "b", "c"]
    preds = ["b", "b", "c", "a", "b", None]
    assert top_confusions(golds, preds, k=2) == [
        {"gold": "a", "predicted": "b", "count": 2},
        {"gold": "a", "predicted": "c", "count": 1},
    ]
    assert {"gold": "c", "predicted": None, "count": 1} in top_confusions(golds, preds)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  The  Eiffel   Tower. ", "eiffel tower"),
        ("An apple, a day!", "apple day"),
        ("3.5", "3.5"),
        ("card_arrival", "card_arrival"),
        ("\u201cQuoted\u201d", "quoted"),
        ("", ""),
    ],
)
def test_normalize_text(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected


@pytest.mark.parametrize(
    ("gold", "pred", "mode", "expected"),
    [
        ("Paris", "Paris", "exact", True),
        ("Paris", " Paris\n", "exact", True),
        ("Paris", "paris", "exact", False),
        ("Paris", "paris.", "normalized", True),
        ("the Paris", "Paris", "normalized", True),
        ("Paris", "It is Paris, France.", "contains", True),
        ("Paris", "Parisian food", "contains", False),
        ("Paris", "It is Lyon.", "contains", False),
        ("Paris", None, "normalized", False),
    ],
)
def test_text_match(gold: str, pred: str | None, mode: str, expected: bool) -> None:
    assert text_match(gold, pred, mode) is expected  # type: ignore[arg-type]


def test_text_match_unknown_mode() -> None:
    with pytest.raises(ValueError, match="unknown match mode"):
        text_match("a", "a", "fuzzy")  # type: ignore[arg-type]


def test_exact_match_modes() -> None:
    golds, preds = ["Paris", "Rome", "Oslo"], ["paris", "Rome", "I think Oslo"]
    assert exact_match(golds, preds) == pytest.approx(1 / 3)
    assert exact_match(golds, preds, mode="normalized") == pytest.approx(2 / 3)
    assert exact_match(golds, preds, mode="contains") == pytest.approx(1.0)
    assert match_vector(golds, preds, "normalized").tolist() == [True, True, False]


SCHEMA = {
    "type": "object",
    "required": ["intent", "slots"],
    "properties": {"intent": {"type": "string"}, "slots": {"type": "array"}},
}


def test_json_validity_without_and_with_schema() -> None:
    raws = ['{"intent": "X", "slots": []}', '{"intent": "X"}', "[1, 2]", "not json", "```json\n{}\n```", None, ""]
    assert json_validity(raws, None).tolist() == [True, True, False, False, False, False, False]
    assert json_validity(raws, SCHEMA).tolist() == [True, False, False, False, False, False, False]


def test_json_validity_rejects_an_invalid_schema() -> None:
    with pytest.raises(TaskSpecError, match="not a valid JSON Schema"):
        json_validity(["{}"], {"type": "no-such-type"})


SNIPS = {
    "intent": "AddToPlaylist",
    "slots": [
        {"slot": "artist", "value": "clem burke"},
        {"slot": "playlist_owner", "value": "my"},
        {"slot": "playlist", "value": "Pre-Party R&B Jams"},
    ],
}


def test_flatten_fields_snips_slots() -> None:
    assert flatten_fields(SNIPS) == Counter(
        {
            ("intent", "addtoplaylist"): 1,
            ("slots.artist", "clem burke"): 1,
            ("slots.playlist_owner", "my"): 1,
            ("slots.playlist", "pre-party r&b jams"): 1,
        }
    )


def test_flatten_fields_nested_dicts_plain_lists_and_scalars() -> None:
    obj = {"a": {"b": 1.0, "c": [" X ", "x", "y"]}, "d": None, "e": True, "f": [], "g": "A"}
    assert flatten_fields(obj) == Counter(
        {("a.b", "1"): 1, ("a.c", "x"): 2, ("a.c", "y"): 1, ("d", "null"): 1, ("e", "true"): 1, ("g", "a"): 1}
    )


def test_flatten_fields_repeated_slot_type_is_a_multiset() -> None:
    obj = {"slots": [{"slot": "city", "value": "Rome"}, {"slot": "city", "value": "Rome"}]}
    assert flatten_fields(obj) == Counter({("slots.city", "rome"): 2})


def test_field_counts_multiset_matching() -> None:
    pred = {
        "intent": "addtoplaylist",
        "slots": [
            {"slot": "playlist", "value": "pre-party R&B jams"},  # same after normalising
            {"slot": "artist", "value": "Clem"},  # wrong value
            {"slot": "playlist", "value": "Pre-Party R&B Jams"},  # duplicate: a false positive
        ],
    }
    # gold 4 fields; pred 4 fields; matches: intent, playlist -> tp 2, fp 2, fn 2
    assert field_counts(SNIPS, pred) == (2, 2, 2)


@pytest.mark.parametrize("invalid", [None, "garbage", ["intent"]])
def test_field_counts_invalid_prediction_is_all_false_negatives(invalid: object) -> None:
    assert field_counts(SNIPS, invalid) == (0, 0, 4)


def test_field_prf_micro_average() -> None:
    golds = [SNIPS, {"intent": "GetWeather", "slots": [{"slot": "city", "value": "Oslo"}]}]
    slots = [{"slot": "city", "value": "Oslo"}, {"slot": "day", "value": "today"}]
    preds = [None, {"intent": "GetWeather", "slots": slots}]
    # tp = 0 + 2, fp = 0 + 1, fn = 4 + 0
    scores = field_prf(golds, preds)
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == pytest.approx(2 / 6)
    assert scores["f1"] == pytest.approx(2 * (2 / 3) * (1 / 3) / (2 / 3 + 1 / 3))


def test_field_prf_edge_cases() -> None:
    assert field_prf([{}], [{}]) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert field_prf([{"a": 1}], [None]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_registry_names_and_kinds() -> None:
    assert set(METRICS) == {"accuracy", "macro_f1", "exact_match", "json_validity", "field_f1"}
    assert [m.name for m in metrics_for_kind("classification")] == ["accuracy", "macro_f1"]
    assert [m.name for m in metrics_for_kind("extraction")] == ["field_f1", "json_validity"]
    assert [m.name for m in metrics_for_kind("generation")] == ["exact_match"]
    assert metric_for("macro_f1")(GOLDS, PREDS) == pytest.approx(macro_f1(GOLDS, PREDS))
    assert metric_for("exact_match")(["A"], ["a"], mode="normalized") == 1.0
    assert metric_for("json_validity").needs_raw
    assert metric_for("json_validity")([None, None], ['{"intent": "x"}', "{"], schema=SCHEMA) == 0.0
    assert metric_for("field_f1")([SNIPS], [SNIPS]) == 1.0
    assert metric_for("accuracy").per_example(GOLDS, PREDS).sum() == 4
    assert math.isnan(metric_for("accuracy")([], []))


def test_registry_unknown_name_is_a_user_error() -> None:
    with pytest.raises(TaskSpecError, match="unknown metric 'bleu'; choose one of accuracy"):
        metric_for("bleu")


# --- scoring: the intervals each metric gets ---------------------------------------------------


def _cp(k: int, n: int) -> tuple[float, float]:
    """The exact two-sided 95% Clopper-Pearson interval of k successes in n, from the beta quantiles."""
    from scipy.stats import beta

    return (float(beta.ppf(0.025, k, n - k + 1)) if k else 0.0, float(beta.ppf(0.975, k + 1, n - k)) if k < n else 1.0)


def _classified(k: int, n: int) -> tuple[list[str], list[Prediction]]:
    """n golds over three labels, the first k predicted right and the rest wrong."""
    golds = [("a", "b", "c")[i % 3] for i in range(n)]
    outs = [g if i < k else {"a": "b", "b": "c", "c": "a"}[g] for i, g in enumerate(golds)]
    return golds, [Prediction(example_id=str(i), output=o, raw=o) for i, o in enumerate(outs)]


@pytest.mark.parametrize(("k", "n"), [(30, 30), (49, 50), (0, 30), (15, 30), (277, 308)])
def test_accuracy_gets_the_exact_clopper_pearson_interval(k: int, n: int) -> None:
    # 30/30: the percentile bootstrap said [1.0, 1.0] and 49/50 a low of 0.94; Clopper-Pearson: 0.884 and 0.894
    golds, preds = _classified(k, n)
    acc = score_predictions("classification", golds, preds, labels=["a", "b", "c"])["metrics"]["accuracy"]
    assert (acc.value, acc.n) == (pytest.approx(k / n), n)
    assert (acc.low, acc.high) == pytest.approx(_cp(k, n), abs=1e-9)
    assert acc.method.startswith("Clopper-Pearson")


def test_every_mean_of_zero_one_scores_gets_the_exact_interval() -> None:
    golds = [f"answer {i}" for i in range(50)]
    preds = [Prediction(example_id=str(i), output=g if i else "wrong", raw="") for i, g in enumerate(golds)]
    em = score_predictions("generation", golds, preds)["metrics"]["exact_match"]
    assert (em.low, em.high) == pytest.approx(_cp(49, 50), abs=1e-9)
    gold = {"intent": "x", "slots": [{"slot": "a", "value": "1"}]}
    preds = [Prediction(example_id=str(i), output=gold, raw=json.dumps(gold)) for i in range(30)]
    metrics = score_predictions("extraction", [gold] * 30, preds, schema=SCHEMA)["metrics"]
    for name in ("exact_match", "json_validity"):
        assert (metrics[name].low, metrics[name].high) == pytest.approx(_cp(30, 30), abs=1e-9), name
        assert metrics[name].method.startswith("Clopper-Pearson"), name


def test_macro_f1_interval_does_not_collapse_when_every_answer_is_right() -> None:
    golds, preds = _classified(30, 30)
    f1 = score_predictions("classification", golds, preds, labels=["a", "b", "c"])["metrics"]["macro_f1"]
    assert f1.value == 1.0 and f1.high == 1.0
    assert f1.low == pytest.approx(0.025 ** (1 / 30))  # no resample varies: the bound of 30 alike examples
    assert "no spread" in f1.method


def test_field_f1_interval_does_not_collapse_at_either_end() -> None:
    gold = {"intent": "x", "slots": [{"slot": "a", "value": "1"}]}
    perfect = [Prediction(example_id=str(i), output=gold, raw=json.dumps(gold)) for i in range(30)]
    f1 = score_predictions("extraction", [gold] * 30, perfect, schema=SCHEMA)["metrics"]["field_f1"]
    assert (f1.value, f1.high) == (1.0, 1.0) and f1.low == pytest.approx(0.025 ** (1 / 30))
    invalid = [Prediction(example_id=str(i), output=None, raw="{") for i in range(30)]
    f1 = score_predictions("extraction", [gold] * 30, invalid, schema=SCHEMA)["metrics"]["field_f1"]
    assert (f1.value, f1.low) == (0.0, 0.0) and f1.high == pytest.approx(1 - 0.025 ** (1 / 30))


def test_macro_f1_gets_a_bca_interval_that_agrees_with_scipy() -> None:
    from scipy.stats import bootstrap

    rng = np.random.default_rng(3)
    golds = list(rng.choice(["a", "b", "c", "d"], size=200, p=[0.4, 0.3, 0.2, 0.1]))
    outs = [g if rng.random() < 0.8 else str(rng.choice(["a", "b", "c", "d"])) for g in golds]
    preds = [Prediction(example_id=str(i), output=o, raw=o) for i, o in enumerate(outs)]
    f1 = score_predictions("classification", golds, preds, labels=["a", "b", "c", "d"])["metrics"]["macro_f1"]
    assert f1.method.startswith("BCa bootstrap") and f1.value == pytest.approx(macro_f1(golds, outs))
    g, o = np.array(golds), np.array(outs)
    ref = bootstrap((np.arange(200),), lambda i: macro_f1(list(g[i]), list(o[i])), vectorized=False,
                    method="BCa", n_resamples=2000, random_state=0).confidence_interval
    assert (f1.low, f1.high) == pytest.approx((ref.low, ref.high), abs=0.015)  # two Monte Carlo draws


def test_batched_macro_f1_equals_macro_f1_on_every_resample() -> None:
    from tunewise.evaluation.scoring import macro_f1_statistic

    rng = np.random.default_rng(4)
    labels = ["a", "b", "c", "d", "e"]
    golds = list(rng.choice(labels[:4], size=60))  # "e" has no gold examples
    preds = [None if r < 0.1 else str(rng.choice(labels + ["zzz"])) for r in rng.random(60)]  # None, "zzz": no label
    rows = rng.integers(0, 60, size=(200, 60))
    got = macro_f1_statistic(golds, preds, labels)(rows)
    want = [macro_f1([golds[i] for i in r], [preds[i] for i in r], labels) for r in rows]
    assert got == pytest.approx(want, abs=1e-12)
    assert math.isnan(macro_f1_statistic(["a"], ["a"], [])(np.zeros((1, 1), dtype=int))[0])  # no label: undefined


def test_batched_field_scores_equal_the_pooled_counts() -> None:
    from tunewise.evaluation.scoring import field_statistic

    rng = np.random.default_rng(5)
    counts = rng.integers(0, 3, size=(40, 3)).astype(float)
    rows = rng.integers(0, 40, size=(50, 40))
    for which in ("precision", "recall", "f1"):
        got = field_statistic(counts, which)(rows)
        for r, value in zip(rows, got):
            tp, fp, fn = counts[r].sum(axis=0)
            p, rc = (tp / (tp + fp) if tp + fp else 1.0), (tp / (tp + fn) if tp + fn else 1.0)
            want = {"precision": p, "recall": rc, "f1": 2 * p * rc / (p + rc) if p + rc else 0.0}[which]
            assert value == pytest.approx(want, abs=1e-12)
