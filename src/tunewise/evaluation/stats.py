"""Uncertainty and significance: metric intervals, paired tests, minimum detectable effects.

Every number tunewise reports comes with a 95% interval, chosen for its coverage:

* a metric that is a mean of 0/1 per-example scores (accuracy, exact_match, json_validity) gets the exact
  Clopper-Pearson interval of k successes in n (:func:`proportion_metric`): its coverage is at least 95% for
  every n and true rate, so 30/30 gives [88.4%, 100%], not the percentile bootstrap's [100%, 100%]. Wilson's
  interval is narrower but falls below 94% at some (n, rate), e.g. 93.6% at n = 100 and a rate of 0.9
  (``benchmarks/bench_coverage.py``);
* a statistic of the whole sample (macro-F1, field-F1) gets a BCa bootstrap interval (:func:`bca_metric`:
  bias-corrected and accelerated, jackknife acceleration), which corrects the percentile bootstrap's bias and
  skew near the ends of [0, 1]. When no resample differs from the sample (every example scored alike, e.g. all
  perfect), the bootstrap has nothing to measure and the interval is the exact bound for n examples alike
  (:func:`_alike_interval`), the Clopper-Pearson interval of n/n (or 0/n) where the value is 1 (or 0).

"With confidence" (:func:`confident_bound`): the best of m candidates clears a target with confidence when
its lower bound at one-sided level 2.5% / m does (Bonferroni over the m candidates compared), so picking the
best of several does not turn one lucky interval into a claim. Paired comparisons of two candidates on the
same test examples use McNemar's exact test on the examples where they disagree and a paired percentile
bootstrap of the difference.

Conventions: results are deterministic for a given seed; undefined quantities (no examples) are NaN rather
than a misleading 0.

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
    "LOWER_ALPHA",
    "EXACT_METHOD",
    "bootstrap_ci",
    "bootstrap_mean_ci",
    "proportion_interval",
    "proportion_lower_bound",
    "proportion_metric",
    "bca_metric",
    "metric_with_ci",
    "lower_bound",
    "confident_bound",
    "confidence_words",
    "mcnemar_exact",
    "paired_bootstrap_diff",
    "paired_bootstrap_stat_diff",
    "compare_paired",
    "percentile",
    "summarize",
    "mde_proportion",
]

Statistic = Callable[[np.ndarray], float]
#: a statistic of many resamples at once: (rows, m) example indices -> (rows,) values
BatchStatistic = Callable[[np.ndarray], np.ndarray]

#: one-sided error of the lower end of a two-sided 95% interval: "with confidence" for a single candidate
LOWER_ALPHA = 0.025
#: how a proportion's interval is named in ``MetricValue.method`` (the bound is recomputed from value and n)
EXACT_METHOD = "Clopper-Pearson exact"
_ALIKE_METHOD = "exact bound for n examples alike"
#: leave-one-out jackknife up to this many examples; beyond, this many groups left out in turn
_JACKKNIFE_GROUPS = 1000

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


def _beta_ppf(q: float, a: float, b: float) -> float:
    from scipy import stats as _scipy_stats  # ~0.5 s to import: only where an interval is computed

    return float(_scipy_stats.beta.ppf(q, a, b))


def proportion_lower_bound(k: int, n: int, alpha: float) -> float:
    """Exact one-sided Clopper-Pearson lower bound of a proportion, confidence ``1 - alpha``; NaN for n = 0."""
    if n <= 0:
        return math.nan
    return 0.0 if k <= 0 else _beta_ppf(alpha, k, n - k + 1)


def proportion_interval(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact two-sided Clopper-Pearson interval of ``k`` successes in ``n`` (each end at ``alpha / 2``)."""
    if n <= 0:
        return math.nan, math.nan
    high = 1.0 if k >= n else _beta_ppf(1 - alpha / 2, k + 1, n - k)
    return proportion_lower_bound(k, n, alpha / 2), high


def proportion_metric(scores: Sequence[float] | np.ndarray, *, alpha: float = 0.05) -> MetricValue:
    """The mean of 0/1 per-example ``scores`` with its exact Clopper-Pearson interval."""
    v = np.asarray(scores, dtype=float)
    if v.size and not np.isin(v, (0.0, 1.0)).all():
        raise ValueError("proportion_metric needs 0/1 scores; use bca_metric for other statistics")
    k, n = int(v.sum()), int(v.size)
    low, high = proportion_interval(k, n, alpha)
    return MetricValue(k / n if n else math.nan, low, high, n, f"{EXACT_METHOD}, {1 - alpha:.0%}")


def _alike_interval(value: float, n: int, alpha: float) -> tuple[float, float]:
    """The interval when all ``n`` examples scored alike, so that no resample differs from the sample.

    Nothing in the sample varies, but n examples alike only show that a differently scored example has
    probability at most q = 1 - (alpha / 2) ** (1 / n) (Clopper-Pearson for 0 of n). A share q of such examples
    moves a mean of per-example scores in [0, 1] by at most q towards either end: [value (1 - q), value + q
    (1 - value)]. At value 1 (or 0) this is exactly the Clopper-Pearson interval of n/n (or 0/n); for ratio
    statistics such as micro field-F1 it is the same bound with the examples as the unit.
    """
    if not 0.0 <= value <= 1.0:
        return math.nan, math.nan
    keep = (alpha / 2) ** (1 / n)
    return value * keep, value + (1 - keep) * (1 - value)


def _jackknife(statistic: BatchStatistic, n: int, seed: int) -> np.ndarray:
    """Leave-one-out values of the statistic, or leave-one-group-out (random groups) beyond 1,000 examples.

    Leaving out groups of d examples estimates the same acceleration as leaving out one (the skewness of a
    sum of d influences shrinks as 1 / sqrt(d) while the groups' count grows as n / d).
    """
    order = np.random.default_rng([seed, n]).permutation(n) if n > _JACKKNIFE_GROUPS else np.arange(n)
    groups = np.array_split(order, min(n, _JACKKNIFE_GROUPS))  # sizes differ by one at most, larger first
    batch, values, start = max(1, _CHUNK_ENTRIES // max(n, 1)), [], 0
    while start < len(groups):
        stop = start
        while stop < len(groups) and stop - start < batch and len(groups[stop]) == len(groups[start]):
            stop += 1
        rows = []
        for g in groups[start:stop]:
            keep = np.ones(n, dtype=bool)
            keep[g] = False
            rows.append(np.flatnonzero(keep))
        values.append(np.asarray(statistic(np.stack(rows)), dtype=float))
        start = stop
    return np.concatenate(values)


def _bca_levels(boot: np.ndarray, value: float, jack: np.ndarray, alpha: float) -> tuple[float, float]:
    """The percentiles of the bootstrap distribution that BCa takes as the interval's ends (Efron 1987)."""
    from scipy import stats as _scipy_stats

    norm = _scipy_stats.norm
    below = (np.sum(boot < value) + 0.5 * np.sum(boot == value)) / boot.size  # ties split: discrete statistics
    z0 = norm.ppf(min(max(below, 0.5 / boot.size), 1 - 0.5 / boot.size))
    jack = jack[~np.isnan(jack)]
    d = jack.mean() - jack if jack.size else np.zeros(1)
    spread = float(np.sum(d**2))
    accel = float(np.sum(d**3)) / (6 * spread**1.5) if spread > 0 else 0.0
    levels = []
    for z in (norm.ppf(alpha / 2), norm.ppf(1 - alpha / 2)):
        shifted = z0 + z
        denom = 1 - accel * shifted
        levels.append(float(norm.cdf(z0 + shifted / denom)) if denom > 0 else (0.0 if z < 0 else 1.0))
    return levels[0], levels[1]


def bca_metric(
    statistic: BatchStatistic, n: int, *, resamples: int = 2000, seed: int = 0, alpha: float = 0.05
) -> MetricValue:
    """A statistic of the whole sample with its BCa bootstrap interval, as a :class:`MetricValue`.

    ``statistic`` maps a (rows, m) array of example indices to one value per row, so the resamples are
    scored in batches; the value is the statistic on all ``n`` examples. Resamples where the statistic is
    undefined (NaN) are left out. When no resample differs from the sample, the interval is the exact bound
    for n examples alike (:func:`_alike_interval`). ``n == 0`` gives NaN everywhere.
    """
    if n <= 0:
        return MetricValue(math.nan, math.nan, math.nan, 0, f"BCa bootstrap, {1 - alpha:.0%}")
    value = float(np.asarray(statistic(np.arange(n)[None, :]), dtype=float)[0])
    boot = np.concatenate([np.asarray(statistic(chunk), dtype=float) for chunk in _index_chunks(n, resamples, seed)])
    boot = boot[~np.isnan(boot)]
    if math.isnan(value) or boot.size == 0:
        return MetricValue(value, math.nan, math.nan, n, f"BCa bootstrap, {1 - alpha:.0%}")
    if np.all(boot == boot[0]) and boot[0] == value:
        low, high = _alike_interval(value, n, alpha)
        return MetricValue(value, low, high, n, f"{_ALIKE_METHOD}, {1 - alpha:.0%} (no spread over {resamples} "
                                                f"bootstrap resamples)")
    lo_level, hi_level = _bca_levels(boot, value, _jackknife(statistic, n, seed), alpha)
    low, high = (float(x) for x in np.percentile(boot, [100 * lo_level, 100 * hi_level]))
    return MetricValue(value, low, high, n, f"BCa bootstrap over examples, {1 - alpha:.0%}, {resamples} resamples")


def metric_with_ci(
    name: str, value_fn: Statistic, n: int, *, resamples: int = 2000, seed: int = 0, alpha: float = 0.05
) -> MetricValue:
    """``value_fn`` (one resample of indices -> a float) on all ``n`` examples, with its BCa interval.

    ``name`` only labels error messages; ``MetricValue`` itself carries no name. For a mean of 0/1 scores,
    :func:`proportion_metric` gives the exact interval instead.
    """
    if n < 0:
        raise ValueError(f"metric {name}: n must be >= 0, got {n}")
    return bca_metric(lambda rows: np.array([value_fn(r) for r in rows], dtype=float), n, resamples=resamples,
                      seed=seed, alpha=alpha)


def lower_bound(metric: MetricValue, alpha: float) -> float:
    """A one-sided ``1 - alpha`` lower bound of ``metric``, from what a :class:`MetricValue` stores.

    At ``alpha`` = :data:`LOWER_ALPHA` it is the stored interval's low end. Otherwise: for a proportion
    (Clopper-Pearson) the exact bound of k = value x n in n; for n examples alike, the same bound as
    :func:`_alike_interval`'s at that level; for a bootstrap interval, the stored lower half-width scaled by
    z(1 - alpha) / z(0.975) (a normal-scale extrapolation: 2,000 resamples cannot place a 0.1% quantile).
    NaN when the metric has no value.
    """
    value, low, n = metric.value, metric.low, int(metric.n or 0)
    if n <= 0 or value is None or low is None or math.isnan(value) or math.isnan(low):
        return math.nan
    if math.isclose(alpha, LOWER_ALPHA, rel_tol=1e-12):
        return float(low)
    method = metric.method or ""
    if method.startswith(EXACT_METHOD):
        return proportion_lower_bound(round(value * n), n, alpha)
    if method.startswith(_ALIKE_METHOD):
        return _alike_interval(value, n, 2 * alpha)[0]
    from scipy import stats as _scipy_stats

    scale = _scipy_stats.norm.ppf(1 - alpha) / _scipy_stats.norm.ppf(1 - LOWER_ALPHA)
    return max(0.0, float(value - (value - low) * scale))


def confident_bound(metric: MetricValue, candidates: int, *, metrics: int = 1, alpha: float = LOWER_ALPHA) -> float:
    """The lower bound that may be compared with a target after picking among ``candidates`` candidates.

    Bonferroni: each of the ``candidates x metrics`` bounds at one-sided level ``alpha / (candidates x
    metrics)``, so that all of them hold together with probability at least ``1 - alpha`` and a claim about
    whichever candidate is picked (every target metric met) errs with probability at most ``alpha``. With one
    candidate and one metric it is the 95% interval's low end.
    """
    return lower_bound(metric, alpha / max(1, candidates * metrics))


def confidence_words(bound: float, candidates: int, *, metrics: int = 1, alpha: float = LOWER_ALPHA) -> str:
    """``"lower bound 92.8% adjusted for 5 candidates, Bonferroni at one-sided 99.5%"``."""
    level = 100 * (1 - alpha / max(1, candidates * metrics))
    shown = "n/a" if math.isnan(bound) else f"{100 * bound:.1f}%"
    also = f" x {metrics} target metrics" if metrics > 1 else ""
    return f"lower bound {shown} adjusted for {candidates} candidates{also}, Bonferroni at one-sided {level:.4g}%"


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
    if not (_binary(a_correct) and _binary(b_correct)):  # a generation metric's scores, not 0/1 correctness
        return _compare_scores(a_correct, b_correct, resamples=resamples, seed=seed, alpha=alpha)
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
        "test": "McNemar exact",
    }
    result["explanation"] = _explain(result)
    return result


def _binary(v: Sequence[Any]) -> bool:
    return bool(np.isin(np.asarray(v, dtype=float), (0.0, 1.0)).all())


def wilcoxon_signed_rank(a_scores: Sequence[float], b_scores: Sequence[float]) -> dict[str, Any]:
    """The two-sided Wilcoxon signed-rank test of paired per-example scores (ties at zero difference dropped, as
    McNemar drops concordant pairs); ``b01`` counts the examples where B scored higher, ``b10`` where A did."""
    a, b = np.asarray(a_scores, dtype=float), np.asarray(b_scores, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired vectors must be 1-D and the same length, got {a.shape} and {b.shape}")
    b01, b10 = int(np.sum(a < b)), int(np.sum(a > b))
    if b01 + b10 == 0:
        return {"b01": 0, "b10": 0, "p_value": 1.0}
    from scipy import stats as _scipy_stats

    p = _scipy_stats.wilcoxon(a - b, zero_method="wilcox", alternative="two-sided").pvalue
    return {"b01": b01, "b10": b10, "p_value": float(min(1.0, p))}


def _compare_scores(a_scores: Sequence[float], b_scores: Sequence[float], *, resamples: int, seed: int,
                    alpha: float) -> dict[str, Any]:
    """:func:`compare_paired` for per-example scores: the mean difference with its paired bootstrap interval and
    the Wilcoxon signed-rank test in McNemar's place; both must agree before a winner is named."""
    a, b = np.asarray(a_scores, dtype=float), np.asarray(b_scores, dtype=float)
    test = wilcoxon_signed_rank(a, b)
    boot = paired_bootstrap_diff(a, b, resamples=resamples, seed=seed, alpha=alpha)
    verdict, decided_by = _verdict(boot["diff"], boot["low"], boot["high"], test["p_value"], alpha)
    result = {"n": int(a.size), "accuracy_a": float(a.mean()) if a.size else math.nan,
              "accuracy_b": float(b.mean()) if b.size else math.nan, **boot, **test, "alpha": alpha,
              "verdict": verdict, "decided_by": decided_by, "test": "Wilcoxon signed-rank"}
    result["explanation"] = _explain(result, name="Wilcoxon signed-rank")
    return result


def _explain(r: dict[str, Any], name: str = "McNemar exact") -> str:
    ci = f"{100 * r['diff']:+.1f} points, {1 - r['alpha']:.0%} CI [{100 * r['low']:+.1f}, {100 * r['high']:+.1f}]"
    test = f"{name} p = {r['p_value']:.3g} on {r['b01'] + r['b10']} discordant examples"
    if r["verdict"] != "not significantly different":
        return f"{r['verdict']}: {ci}; {test}."
    why = {
        "both": "neither test finds a difference",
        "mcnemar": f"the {name} test finds no difference although the bootstrap interval excludes 0",
        "bootstrap": f"the bootstrap interval includes 0 although the {name} test is significant",
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
