"""Statistics against hand-computed values and the normal approximation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tunewise.evaluation.metrics import macro_f1
from tunewise.evaluation.records import MetricValue
from tunewise.evaluation.stats import (
    LOWER_ALPHA,
    bca_metric,
    bootstrap_ci,
    bootstrap_mean_ci,
    compare_paired,
    confidence_words,
    confident_bound,
    lower_bound,
    mcnemar_exact,
    mde_proportion,
    metric_with_ci,
    paired_bootstrap_diff,
    paired_bootstrap_stat_diff,
    percentile,
    proportion_interval,
    proportion_lower_bound,
    proportion_metric,
    summarize,
)


def _pairs(b01: int, b10: int, both_right: int = 5, both_wrong: int = 3) -> tuple[list[bool], list[bool]]:
    """Paired correctness vectors with the given discordant counts."""
    a = [False] * b01 + [True] * b10 + [True] * both_right + [False] * both_wrong
    b = [True] * b01 + [False] * b10 + [True] * both_right + [False] * both_wrong
    return a, b


def test_mcnemar_hand_computed() -> None:
    # Two-sided exact binomial: 2 * P(X <= 1 | n=9, p=1/2) = 2 * (1 + 9) / 512.
    result = mcnemar_exact(*_pairs(1, 8))
    assert result == {"b01": 1, "b10": 8, "p_value": pytest.approx(0.0390625)}


def test_mcnemar_symmetric_counts_give_p_one() -> None:
    assert mcnemar_exact(*_pairs(4, 4))["p_value"] == pytest.approx(1.0)


def test_mcnemar_no_discordant_pairs() -> None:
    assert mcnemar_exact(*_pairs(0, 0)) == {"b01": 0, "b10": 0, "p_value": 1.0}


def test_mcnemar_rejects_unequal_lengths() -> None:
    with pytest.raises(ValueError, match="same length"):
        mcnemar_exact([True, False], [True])


def test_bootstrap_mean_ci_matches_normal_approximation() -> None:
    rng = np.random.default_rng(1)
    x = (rng.random(400) < 0.8).astype(float)
    low, high = bootstrap_mean_ci(x, resamples=4000, seed=0)
    mean = x.mean()
    half = 1.96 * math.sqrt(mean * (1 - mean) / x.size)
    assert low < mean < high
    assert (high - low) == pytest.approx(2 * half, rel=0.1)
    assert (mean - low) == pytest.approx(half, rel=0.15)


def test_bootstrap_is_deterministic_and_seed_sensitive() -> None:
    x = np.random.default_rng(2).random(50)
    assert bootstrap_mean_ci(x, seed=3) == bootstrap_mean_ci(x, seed=3)
    assert bootstrap_mean_ci(x, seed=3) != bootstrap_mean_ci(x, seed=4)


def test_generic_bootstrap_equals_vectorised_mean() -> None:
    x = np.random.default_rng(5).random(60)
    generic = bootstrap_ci(lambda idx: float(x[idx].mean()), x.size, resamples=500, seed=7)
    assert generic == pytest.approx(bootstrap_mean_ci(x, resamples=500, seed=7))


def test_chunked_resampling_gives_the_same_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    import tunewise.evaluation.stats as stats

    x = np.random.default_rng(6).random(40)
    whole = bootstrap_mean_ci(x, resamples=300, seed=1)
    monkeypatch.setattr(stats, "_CHUNK_ENTRIES", 40 * 7)  # 7 rows per chunk
    assert bootstrap_mean_ci(x, resamples=300, seed=1) == pytest.approx(whole)


def test_bootstrap_degenerate_cases() -> None:
    assert all(math.isnan(v) for v in bootstrap_mean_ci([]))
    assert all(math.isnan(v) for v in bootstrap_ci(lambda idx: 0.0, 0))
    assert bootstrap_mean_ci([0.7]) == (pytest.approx(0.7), pytest.approx(0.7))


def test_an_all_correct_sample_does_not_get_a_zero_width_interval() -> None:
    # Every resample of 30 right answers is all right, so the percentile bootstrap said [1.0, 1.0]. Thirty
    # examples cannot show that the rate is 1: Clopper-Pearson's 30/30 is [0.025 ** (1 / 30), 1] = [0.884, 1].
    ones, zeros = np.ones(30), np.zeros(30)
    mv = metric_with_ci("accuracy", lambda idx: float(ones[idx].mean()), 30)
    assert (mv.value, mv.high) == (1.0, 1.0) and mv.low == pytest.approx(0.025 ** (1 / 30))
    mv = metric_with_ci("accuracy", lambda idx: float(zeros[idx].mean()), 30)
    assert (mv.value, mv.low) == (0.0, 0.0) and mv.high == pytest.approx(1 - 0.025 ** (1 / 30))


def test_bootstrap_ci_for_a_non_mean_metric() -> None:
    rng = np.random.default_rng(8)
    golds = np.array(rng.choice(["a", "b", "c"], size=150))
    preds = np.where(rng.random(150) < 0.7, golds, rng.choice(["a", "b", "c"], size=150))
    value = macro_f1(list(golds), list(preds))
    low, high = bootstrap_ci(lambda idx: macro_f1(list(golds[idx]), list(preds[idx])), 150, resamples=300)
    assert low < value < high
    assert 0.05 < high - low < 0.3


def test_metric_with_ci() -> None:
    x = np.array([1, 0, 1, 1, 0, 1, 1, 1, 0, 1], dtype=float)
    mv = metric_with_ci("accuracy", lambda idx: float(x[idx].mean()), x.size, resamples=500)
    assert isinstance(mv, MetricValue)
    assert mv.value == pytest.approx(0.7) and mv.n == 10
    assert mv.low < 0.7 < mv.high and mv.method.startswith("BCa bootstrap") and "500 resamples" in mv.method
    empty = metric_with_ci("accuracy", lambda idx: 0.0, 0)
    assert math.isnan(empty.value) and empty.n == 0


def test_paired_bootstrap_diff_sign_and_interval() -> None:
    rng = np.random.default_rng(9)
    b = (rng.random(300) < 0.6).astype(float)
    a = np.maximum(b, rng.random(300) < 0.3)  # A is right wherever B is, and more
    result = paired_bootstrap_diff(a, b)
    assert result["diff"] == pytest.approx(a.mean() - b.mean())
    assert 0 < result["low"] < result["diff"] < result["high"]
    flipped = paired_bootstrap_diff(b, a)
    assert flipped["diff"] == pytest.approx(-result["diff"])
    assert flipped["high"] < 0


def test_paired_bootstrap_stat_diff_matches_mean_version() -> None:
    rng = np.random.default_rng(10)
    a, b = rng.random(80), rng.random(80)
    generic = paired_bootstrap_stat_diff(lambda i: a[i].mean(), lambda i: b[i].mean(), 80, resamples=400, seed=2)
    vector = paired_bootstrap_diff(a, b, resamples=400, seed=2)
    assert generic == pytest.approx(vector)


def test_compare_paired_a_better() -> None:
    a, b = _pairs(2, 30, both_right=150, both_wrong=18)
    result = compare_paired(a, b)
    assert result["verdict"] == "A better" and result["decided_by"] == "both"
    assert result["b01"] == 2 and result["b10"] == 30
    assert result["diff"] == pytest.approx(28 / 200)
    assert result["explanation"].startswith("A better: +14.0 points")


def test_compare_paired_b_better() -> None:
    a, b = _pairs(30, 2, both_right=150, both_wrong=18)
    assert compare_paired(a, b)["verdict"] == "B better"


def test_compare_paired_not_different() -> None:
    a, b = _pairs(10, 12, both_right=150, both_wrong=28)
    result = compare_paired(a, b)
    assert result["verdict"] == "not significantly different"
    assert result["decided_by"] == "both"
    assert "neither test" in result["explanation"]


def test_compare_paired_small_but_significant() -> None:
    a, b = _pairs(1, 8, both_right=0, both_wrong=0)
    result = compare_paired(a, b)
    assert result["p_value"] == pytest.approx(0.0390625)
    assert result["low"] > 0
    assert result["verdict"] == "A better"


def test_verdict_names_the_bootstrap_when_only_it_is_not_significant() -> None:
    from tunewise.evaluation.stats import _verdict

    assert _verdict(0.02, -0.001, 0.04, 0.01, 0.05) == ("not significantly different", "bootstrap")
    assert _verdict(-0.05, -0.08, -0.02, 0.001, 0.05) == ("B better", "both")


def test_compare_paired_mcnemar_decides() -> None:
    # 5 vs 0 discordant among 5: p = 0.0625 (not significant) while every resample favours A.
    a, b = _pairs(0, 5, both_right=0, both_wrong=0)
    result = compare_paired(a, b)
    assert result["p_value"] == pytest.approx(0.0625)
    assert result["low"] > 0
    assert result["verdict"] == "not significantly different" and result["decided_by"] == "mcnemar"
    assert "the McNemar exact test finds no difference" in result["explanation"]


def test_percentile_and_summarize() -> None:
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 50) == pytest.approx(50.5)
    assert summarize(values) == pytest.approx({"mean": 50.5, "p50": 50.5, "p95": 95.05, "max": 100.0})
    assert all(math.isnan(v) for v in summarize([]).values())
    assert math.isnan(percentile([], 90))


def test_mde_proportion_hand_computed() -> None:
    z = 1.959963984540054 + 0.8416212335729143
    assert mde_proportion(0.9, 300) == pytest.approx(z * math.sqrt(2 * 0.9 * 0.1 / 300))
    assert mde_proportion(0.9, 300, discordance=0.05) == pytest.approx(z * math.sqrt(0.05 / 300))
    assert mde_proportion(0.5, 1200) == pytest.approx(mde_proportion(0.5, 300) / 2)


def test_mde_proportion_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        mde_proportion(1.5, 100)
    with pytest.raises(ValueError):
        mde_proportion(0.5, 0)


# --------------------------------------------------------------------------- intervals with coverage


def test_proportion_interval_hand_computed() -> None:
    assert proportion_interval(30, 30) == (pytest.approx(0.025 ** (1 / 30)), 1.0)  # 0.884
    assert proportion_interval(0, 30) == (0.0, pytest.approx(1 - 0.025 ** (1 / 30)))
    assert proportion_interval(49, 50)[0] == pytest.approx(0.8935, abs=1e-4)  # the 49/50
    assert proportion_lower_bound(10, 10, 0.01) == pytest.approx(0.01 ** (1 / 10))
    assert all(math.isnan(x) for x in proportion_interval(0, 0))


def test_proportion_metric() -> None:
    mv = proportion_metric([1, 0, 1, 1])
    assert (mv.value, mv.n, mv.method) == (0.75, 4, "Clopper-Pearson exact, 95%")
    assert (mv.low, mv.high) == pytest.approx(proportion_interval(3, 4))
    assert math.isnan(proportion_metric([]).value)
    with pytest.raises(ValueError, match="0/1"):
        proportion_metric([0.5, 1.0])


def _mean_batch(x: np.ndarray):
    return lambda rows: x[rows].mean(axis=1)


def test_bca_corrects_the_percentile_interval_of_a_skewed_mean() -> None:
    from scipy.stats import bootstrap

    x = np.random.default_rng(11).exponential(size=40)
    mv = bca_metric(_mean_batch(x), x.size, resamples=4000, seed=0)
    ref = bootstrap((x,), np.mean, method="BCa", n_resamples=4000, random_state=0).confidence_interval
    assert (mv.low, mv.high) == pytest.approx((ref.low, ref.high), abs=0.03)
    percentile_low, percentile_high = bootstrap_mean_ci(x, resamples=4000, seed=0)
    assert mv.low > percentile_low and mv.high > percentile_high  # right skew: BCa moves both ends up


def test_grouped_jackknife_gives_about_the_leave_one_out_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    import tunewise.evaluation.stats as stats

    x = np.random.default_rng(12).exponential(size=300)
    exact = bca_metric(_mean_batch(x), x.size, seed=1)
    monkeypatch.setattr(stats, "_JACKKNIFE_GROUPS", 60)  # 60 groups of 5 left out in turn
    grouped = bca_metric(_mean_batch(x), x.size, seed=1)
    assert (grouped.low, grouped.high) == pytest.approx((exact.low, exact.high), abs=0.01)
    monkeypatch.setattr(stats, "_JACKKNIFE_GROUPS", 7)  # uneven groups (43 and 42)
    assert bca_metric(_mean_batch(x), x.size, seed=1).low == pytest.approx(exact.low, abs=0.02)


def test_bca_degenerate_cases() -> None:
    empty = bca_metric(_mean_batch(np.zeros(0)), 0)
    assert empty.n == 0 and all(math.isnan(v) for v in (empty.value, empty.low, empty.high))
    halves = np.full(20, 0.5)  # every example scores 0.5: a mix of 5% others moves the mean by at most 5% of 0.5
    mv = bca_metric(_mean_batch(halves), 20)
    keep = 0.025 ** (1 / 20)
    assert (mv.low, mv.high) == pytest.approx((0.5 * keep, 0.5 + 0.5 * (1 - keep)))
    assert mv.method.startswith("exact bound for n examples alike")


def test_lower_bound_at_other_levels() -> None:
    cp = proportion_metric([1] * 97 + [0] * 3)
    assert lower_bound(cp, LOWER_ALPHA) == cp.low  # the stored low end, as shown
    assert lower_bound(cp, 0.005) == pytest.approx(proportion_lower_bound(97, 100, 0.005))
    ones = np.ones(30)
    alike = bca_metric(_mean_batch(ones), 30)
    assert lower_bound(alike, 0.005) == pytest.approx(0.005 ** (1 / 30))  # Clopper-Pearson's 30/30 at 0.5%
    boot = MetricValue(0.8, 0.7, 0.88, 200, "BCa bootstrap over examples, 95%, 2000 resamples")
    assert lower_bound(boot, 0.005) == pytest.approx(0.8 - 0.1 * 2.5758293035489 / 1.959963984540054)
    assert math.isnan(lower_bound(MetricValue(math.nan, math.nan, math.nan, 0), 0.005))


def test_confident_bound_is_bonferroni_over_the_candidates() -> None:
    cp = proportion_metric([1] * 97 + [0] * 3)
    assert confident_bound(cp, 1) == cp.low
    assert confident_bound(cp, 5) == pytest.approx(proportion_lower_bound(97, 100, 0.025 / 5))
    assert confident_bound(cp, 5, metrics=2) == pytest.approx(proportion_lower_bound(97, 100, 0.025 / 10))
    assert confident_bound(cp, 1) > confident_bound(cp, 5) > confident_bound(cp, 11)
    assert confidence_words(0.8945, 5) == "lower bound 89.5% adjusted for 5 candidates, Bonferroni at one-sided 99.5%"
    assert "5 candidates x 2 target metrics" in confidence_words(0.9, 5, metrics=2)


def test_bonferroni_bound_keeps_the_best_of_several_honest() -> None:
    # Eight candidates, all truly at 90%, 200 examples each: how often does the best one's bound clear 90%?
    rng = np.random.default_rng(13)
    k = rng.binomial(200, 0.9, size=(4000, 8))
    best = k.max(axis=1)
    raw_low = {b: proportion_interval(int(b), 200)[0] for b in np.unique(best)}
    adjusted_low = {b: proportion_lower_bound(int(b), 200, 0.025 / 8) for b in np.unique(best)}
    raw, adjusted = np.mean([raw_low[b] >= 0.9 for b in best]), np.mean([adjusted_low[b] >= 0.9 for b in best])
    assert raw > 0.08 and adjusted <= 0.025  # the unadjusted low claims a false "with confidence" over 8% of the time
