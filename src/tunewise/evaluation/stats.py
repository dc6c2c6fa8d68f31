"""Uncertainty and significance: bootstrap intervals, paired tests, minimum detectable effects.

Every number tunewise reports comes with an interval, and every comparison of two candidates on
the same test examples is a *paired* comparison: McNemar's exact test on the examples where they
disagree, and a paired bootstrap of the difference. Both resample or count over example indices,
so non-mean metrics (macro-F1, field-F1) get intervals too, through a statistic over indices.

Conventions: intervals are percentile bootstrap intervals; results are deterministic for a given
seed; undefined quantities (no examples) are NaN rather than a misleading 0.

Out of scope: computing the metrics themselves (``metrics.py``) and deciding between candidates
on cost as well as quality (``decision.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from .records import MetricValue

__all__ = [
    "bootstrap_ci",
    "bootstrap_mean_ci",
    "metric_with_ci",
    "mcnemar_exact",
    "paired_bootstrap_diff",
    "paired_bootstrap_stat_diff",
    "compare_paired",
    "percentile",
    "summarize",
    "mde_proportion",
]

Statistic = Callable[[np.ndarray], float]

# Resampled index matrices are generated in chunks of about this many entries (8 M int64 = 64 MB)
# so that large test sets do not need resamples x n memory at once.
_CHUNK_ENTRIES = 8_000_000


def _index_chunks(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Rows of ``n`` indices drawn with replacement; the same stream for the same (n, resamples, seed)."""
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_ENTRIES // max(n, 1))
    for start in range(0, resamples, rows):
        yield rng.integers(0, n, size=(min(rows, resamples - start), n))


def _percentile_interval(values: np.ndarray, alpha: float) -> tuple[float, float]:
    values = values[~np.isnan(values)]  # a resample where the statistic is undefined is skipped
    if values.size == 0:
        return math.nan, math.nan
    low, high = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def bootstrap_ci(
    statistic: Statistic, n: int, *, resamples: int = 2000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(idx)`` over resampled example indices.

    ``statistic`` receives an int array of ``n`` indices drawn with replacement and returns a
    float, so it works for any metric (accuracy, macro-F1, field-F1). ``n == 0`` gives (NaN, NaN).
    """
    if n <= 0:
        return math.nan, math.nan
    values = np.array([statistic(idx) for chunk in _index_chunks(n, resamples, seed) for idx in chunk], dtype=float)
    return _percentile_interval(values, alpha)


def bootstrap_mean_ci(
    values: Sequence[float] | np.ndarray, *, resamples: int = 2000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (0/1 or real), vectorised.

    Uses the same resampled indices as :func:`bootstrap_ci` with the same seed, so both give
    identical intervals for a mean.
    """
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return math.nan, math.nan
    means = np.concatenate([v[chunk].mean(axis=1) for chunk in _index_chunks(v.size, resamples, seed)])
    return _percentile_interval(means, alpha)


def metric_with_ci(
    name: str, value_fn: Statistic, n: int, *, resamples: int = 2000, seed: int = 0, alpha: float = 0.05
) -> MetricValue:
    """``value_fn`` on all ``n`` examples, with its bootstrap interval, as a :class:`MetricValue`.

    ``name`` only labels error messages; ``MetricValue`` itself carries no name.
    """
    if n < 0:
        raise ValueError(f"metric {name}: n must be >= 0, got {n}")
    value = float(value_fn(np.arange(n))) if n else math.nan
    low, high = bootstrap_ci(value_fn, n, resamples=resamples, seed=seed, alpha=alpha)
    method = f"percentile bootstrap, {1 - alpha:.0%}, {resamples} resamples"
    return MetricValue(value=value, low=low, high=high, n=n, method=method)


def _paired_bools(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired vectors must be 1-D and the same length, got {a.shape} and {b.shape}")
    return a, b


def mcnemar_exact(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> dict[str, Any]:
    """McNemar's exact test: a two-sided binomial test on the discordant pairs.

    ``b01`` counts examples A got wrong and B got right; ``b10`` those A got right and B wrong.
    With no discordant pairs the p-value is 1.0.
    """
    a, b = _paired_bools(a_correct, b_correct)
    b01, b10 = int(np.sum(~a & b)), int(np.sum(a & ~b))
    if b01 + b10 == 0:
        return {"b01": 0, "b10": 0, "p_value": 1.0}
    from scipy import stats as _scipy_stats  # ~0.5 s to import: only where a p-value is computed

    p = _scipy_stats.binomtest(b10, b01 + b10, 0.5, alternative="two-sided").pvalue
    return {"b01": b01, "b10": b10, "p_value": float(min(1.0, p))}


def paired_bootstrap_diff(
    a_scores: Sequence[float], b_scores: Sequence[float], *, resamples: int = 2000, seed: int = 0, alpha: float = 0.05
) -> dict[str, float]:
    """Mean of ``a - b`` per example, with a bootstrap interval over the same resampled examples."""
    a, b = np.asarray(a_scores, dtype=float), np.asarray(b_scores, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired scores must be the same length, got {a.shape} and {b.shape}")
    diff = a - b
    low, high = bootstrap_mean_ci(diff, resamples=resamples, seed=seed, alpha=alpha)
    return {"diff": float(diff.mean()) if diff.size else math.nan, "low": low, "high": high}


def paired_bootstrap_stat_diff(
    statistic_a: Statistic,
    statistic_b: Statistic,
    n: int,
    *,
    resamples: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, float]:
    """``statistic_a - statistic_b`` (e.g. macro-F1 of A minus B), resampling both on the same indices."""
    if n <= 0:
        return {"diff": math.nan, "low": math.nan, "high": math.nan}
    full = np.arange(n)
    low, high = bootstrap_ci(
        lambda idx: statistic_a(idx) - statistic_b(idx), n, resamples=resamples, seed=seed, alpha=alpha
    )
    return {"diff": float(statistic_a(full) - statistic_b(full)), "low": low, "high": high}


def _verdict(diff: float, low: float, high: float, p: float, alpha: float) -> tuple[str, str]:
    """(verdict, which test decided it). Both tests must agree before a winner is named."""
    mcnemar_sig = p < alpha
    ci_sig = not (low <= 0.0 <= high) and not math.isnan(low)
    if mcnemar_sig and ci_sig:
        return ("A better" if diff > 0 else "B better"), "both"
    if not mcnemar_sig and not ci_sig:
        return "not significantly different", "both"
    return "not significantly different", "mcnemar" if not mcnemar_sig else "bootstrap"


def compare_paired(
    a_correct: Sequence[bool],
    b_correct: Sequence[bool],
    *,
    resamples: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Compare two candidates' per-example correctness on the same examples.

    Returns accuracies, the difference A - B with its paired bootstrap interval, McNemar's counts
    and p-value, a ``verdict`` ("A better", "B better" or "not significantly different"),
    ``decided_by`` ("both", "mcnemar" or "bootstrap": the test(s) that found no significant
    difference, or "both" when both found one) and a one-sentence ``explanation``.
    """
    a, b = _paired_bools(a_correct, b_correct)
    test = mcnemar_exact(a, b)
    boot = paired_bootstrap_diff(a, b, resamples=resamples, seed=seed, alpha=alpha)
    verdict, decided_by = _verdict(boot["diff"], boot["low"], boot["high"], test["p_value"], alpha)
    result = {
        "n": int(a.size),
        "accuracy_a": float(a.mean()) if a.size else math.nan,
        "accuracy_b": float(b.mean()) if b.size else math.nan,
        **boot,
        **test,
        "alpha": alpha,
        "verdict": verdict,
        "decided_by": decided_by,
    }
    result["explanation"] = _explain(result)
    return result


def _explain(r: dict[str, Any]) -> str:
    ci = f"{100 * r['diff']:+.1f} points, {1 - r['alpha']:.0%} CI [{100 * r['low']:+.1f}, {100 * r['high']:+.1f}]"
    test = f"McNemar exact p = {r['p_value']:.3g} on {r['b01'] + r['b10']} discordant examples"
    if r["verdict"] != "not significantly different":
        return f"{r['verdict']}: {ci}; {test}."
    why = {
        "both": "neither test finds a difference",
        "mcnemar": "McNemar's test finds no difference although the bootstrap interval excludes 0",
        "bootstrap": "the bootstrap interval includes 0 although McNemar's test is significant",
    }[r["decided_by"]]
    return f"Not significantly different ({why}): {ci}; {test}."


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100, linear interpolation); NaN for no values."""
    v = np.asarray(values, dtype=float)
    return float(np.percentile(v, q)) if v.size else math.nan


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Mean, median, 95th percentile and maximum (for tokens and latency); NaN for no values."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return {"mean": math.nan, "p50": math.nan, "p95": math.nan, "max": math.nan}
    p50, p95 = np.percentile(v, [50, 95])
    return {"mean": float(v.mean()), "p50": float(p50), "p95": float(p95), "max": float(v.max())}


def mde_proportion(
    p: float, n: int, alpha: float = 0.05, power: float = 0.8, *, discordance: float | None = None
) -> float:
    """Smallest accuracy difference a paired test on ``n`` examples detects with ``power``.

    Normal approximation to McNemar's test: the per-example difference d_i = a_i - b_i has
    variance about ``discordance`` (the fraction of examples where the candidates disagree) under
    no difference, so MDE = (z_{1-alpha/2} + z_{power}) * sqrt(discordance / n). When the
    discordance is unknown it defaults to 2 p (1 - p), which assumes the two candidates err
    independently; real candidates usually err on the same hard examples, so this is conservative
    (it overstates the MDE). Example: p = 0.9, n = 300 gives about 0.069 (7 points).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    q = 2 * p * (1 - p) if discordance is None else discordance
    from scipy import stats as _scipy_stats

    z = _scipy_stats.norm.ppf(1 - alpha / 2) + _scipy_stats.norm.ppf(power)
    return float(z * math.sqrt(q / n))
