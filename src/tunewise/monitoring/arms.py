"""Comparing the arms of an A/B split, and a shadow candidate with the served one: pure functions.

* :func:`compare_accuracy` - feedback accuracy of two arms: a pooled two-proportion z-test, or
  Fisher's exact test when an expected cell is below 5; Newcombe's interval on the difference.
* :func:`compare_latency` - two-sided Mann-Whitney U, bootstrap interval on the difference of medians.
* :func:`compare_paired_arms` - two arms that answered the same labelled inputs (shadow mode):
  McNemar's exact test and a paired bootstrap (``evaluation/stats.py``).

Each returns an :class:`ArmComparison` whose verdict is "<arm> better", "not significantly
different" or "not enough data", with one sentence carrying the numbers. These are comparisons,
not alarms: they are not part of the drift checks' family-wise correction.

Out of scope: the drift checks (``drift.py``) and picking the requests of each arm (``monitor.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats as _scipy_stats

from ..evaluation.stats import compare_paired
from .drift import _clean, _p, _pct, _wilson

__all__ = ["ArmComparison", "compare_accuracy", "compare_latency", "compare_paired_arms"]


@dataclass(frozen=True)
class ArmComparison:
    """Two arms (``a``, ``b`` or ``shadow``) on one metric: values, difference ``a - b`` with its CI, test, verdict."""

    metric: str
    arm_a: str
    arm_b: str
    value_a: float
    value_b: float
    n_a: int
    n_b: int
    diff: float
    low: float
    high: float
    p_value: float
    test: str
    verdict: str  # "<arm> better" | "not significantly different" | "not enough data"
    explanation: str

    def to_json(self) -> dict[str, Any]:
        return _clean(asdict(self))


def _arm_verdict(diff: float, p: float, alpha: float, a: str, b: str) -> str:
    if math.isnan(p) or p >= alpha:
        return "not significantly different"
    return f"{a} better" if diff > 0 else f"{b} better"


def compare_accuracy(correct_a: int, n_a: int, correct_b: int, n_b: int, *, arm_a: str = "a", arm_b: str = "b",
                     alpha: float = 0.05, min_n: int = 10) -> ArmComparison:
    """Feedback accuracy of two arms: Fisher's exact test when an expected cell is below 5, else a
    pooled two-proportion z-test; Newcombe's interval (from Wilson intervals) on the difference a - b."""
    if min(n_a, n_b) < min_n:
        why = f"not enough feedback yet ({min(n_a, n_b)} of {min_n} labels needed in each arm)"
        return ArmComparison("accuracy", arm_a, arm_b, math.nan, math.nan, n_a, n_b, math.nan, math.nan, math.nan,
                             math.nan, "", "not enough data", f"Accuracy, {arm_a} vs {arm_b}: {why}.")
    pa, pb = correct_a / n_a, correct_b / n_b
    pooled = (correct_a + correct_b) / (n_a + n_b)
    if min(n_a, n_b) * min(pooled, 1 - pooled) < 5:
        test = "Fisher exact (two-sided)"
        p = float(_scipy_stats.fisher_exact([[correct_a, n_a - correct_a], [correct_b, n_b - correct_b]]).pvalue)
    else:
        test = "two-proportion z-test (two-sided)"
        se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
        p = float(2 * _scipy_stats.norm.sf(abs(pa - pb) / se)) if se > 0 else 1.0
    (la, ha), (lb, hb) = _wilson(correct_a, n_a, alpha), _wilson(correct_b, n_b, alpha)
    diff = pa - pb
    low = diff - math.sqrt((pa - la) ** 2 + (hb - pb) ** 2)
    high = diff + math.sqrt((ha - pa) ** 2 + (pb - lb) ** 2)
    verdict = _arm_verdict(diff, p, alpha, arm_a, arm_b)
    text = (f"Accuracy {arm_a} {_pct(pa)} (n={n_a}) vs {arm_b} {_pct(pb)} (n={n_b}): {verdict}, "
            f"difference {100 * diff:+.1f} points, {1 - alpha:.0%} CI [{100 * low:+.1f}, {100 * high:+.1f}]; "
            f"{test} p {_p(p)}.")
    return ArmComparison("accuracy", arm_a, arm_b, pa, pb, n_a, n_b, diff, low, high, p, test, verdict, text)


def compare_latency(latency_a: Sequence[float], latency_b: Sequence[float], *, arm_a: str = "a", arm_b: str = "b",
                    alpha: float = 0.05, min_n: int = 10, resamples: int = 2000, seed: int = 0) -> ArmComparison:
    """Latency of two arms: two-sided Mann-Whitney U; difference of medians (a - b) with a bootstrap CI.

    Here "better" means faster, so a negative difference favours ``arm_a``.
    """
    x, y = np.asarray(latency_a, dtype=float), np.asarray(latency_b, dtype=float)
    if min(len(x), len(y)) < min_n:
        why = f"not enough traffic yet ({min(len(x), len(y))} of {min_n} requests needed in each arm)"
        return ArmComparison("latency_s", arm_a, arm_b, math.nan, math.nan, len(x), len(y), math.nan, math.nan,
                             math.nan, math.nan, "", "not enough data", f"Latency, {arm_a} vs {arm_b}: {why}.")
    p = float(_scipy_stats.mannwhitneyu(x, y, alternative="two-sided").pvalue)
    rng = np.random.default_rng(seed)
    boot = (np.median(x[rng.integers(0, len(x), (resamples, len(x)))], axis=1)
            - np.median(y[rng.integers(0, len(y), (resamples, len(y)))], axis=1))
    low, high = (float(v) for v in np.percentile(boot, [100 * alpha / 2, 100 * (1 - alpha / 2)]))
    ma, mb = float(np.median(x)), float(np.median(y))
    diff = ma - mb
    verdict = _arm_verdict(-diff, p, alpha, arm_a, arm_b)
    text = (f"Median latency {arm_a} {1000 * ma:.0f} ms vs {arm_b} {1000 * mb:.0f} ms: {verdict}, difference "
            f"{1000 * diff:+.0f} ms, {1 - alpha:.0%} CI [{1000 * low:+.0f}, {1000 * high:+.0f}]; Mann-Whitney U p {_p(p)}.")
    return ArmComparison("latency_s", arm_a, arm_b, ma, mb, len(x), len(y), diff, low, high, p,
                         "Mann-Whitney U (two-sided)", verdict, text)


def compare_paired_arms(correct_a: Sequence[bool], correct_b: Sequence[bool], *, arm_a: str = "a",
                        arm_b: str = "shadow", alpha: float = 0.05, min_n: int = 10, seed: int = 0) -> ArmComparison:
    """Two arms that answered the same labelled inputs (shadow mode): McNemar exact + paired bootstrap."""
    n = len(correct_a)
    if n < min_n:
        why = f"not enough paired feedback yet ({n} of {min_n} labelled inputs answered by both)"
        return ArmComparison("accuracy (paired)", arm_a, arm_b, math.nan, math.nan, n, n, math.nan, math.nan,
                             math.nan, math.nan, "", "not enough data", f"Accuracy, {arm_a} vs {arm_b}: {why}.")
    r = compare_paired(correct_a, correct_b, seed=seed, alpha=alpha)
    verdict = {"A better": f"{arm_a} better", "B better": f"{arm_b} better"}.get(r["verdict"], r["verdict"])
    text = (f"Accuracy on {n} labelled inputs both answered ({arm_a} = A, {arm_b} = B), {_pct(r['accuracy_a'])} vs "
            f"{_pct(r['accuracy_b'])}: {r['explanation']}")
    return ArmComparison("accuracy (paired)", arm_a, arm_b, r["accuracy_a"], r["accuracy_b"], n, n, r["diff"],
                         r["low"], r["high"], r["p_value"], "McNemar exact + paired bootstrap", verdict, text)
