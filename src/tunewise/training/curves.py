"""Learning curves: fit metric-vs-training-size points and forecast how many labelled examples a target needs.

A learning curve is a higher-is-better metric (a proportion such as test accuracy, or any metric bounded
by 1) measured after training on n labelled examples, for several n. We fit the inverse power law

    value(n) = a - b * n**(-c),     0 <= a <= ceiling,  b >= 0,  0 < c <= 3,

where ``a`` is the asymptote (the ceiling this model/recipe approaches with unlimited data), and invert it,
n = (b / (a - target))**(1/c) when a > target, to forecast the examples a target needs.

Conventions: the fit is weighted by each point's standard error when known (binomial sqrt(p(1-p)/n_test)
from ``n_test``, else (high - low) / 3.92 from its 95% CI; points with neither borrow the median se),
unweighted when no point has one. It is a least-squares profile over c (a and b in closed form under their
bounds for every c, a grid then a golden-section search in log c), vectorised over bootstrap replicates; the
point estimate is polished with ``scipy.optimize.curve_fit``.

Uncertainty. The points of a curve are usually scored on the *same* test examples, so their test errors are
correlated: an easy test set lifts every point, and the errors do not average out over the points as
independent ones would. Given ``test_stats`` (for each point, its metric as a function of rows of test-example
indices, e.g. :func:`mean_statistic` of its per-example correctness), the bootstrap resamples the test
examples *jointly*: each replicate draws one row of indices, rescores every point on it and refits, so the
band carries the test-sampling noise with its correlation across points and the fit's instability. Without
them each replicate redraws every point independently from its own sampling distribution (binomial with
``n_test``, else normal with the CI-derived se, else normal with the residual se, floored at 0.005): the
parametric bootstrap, too narrow when the points share test examples (tests/test_curves.py,
benchmarks/bench_curve_coverage.py). Training-run variation (seed, subset draw) moves every point too: points
that repeat a training size are runs of their own, their pooled within-size standard deviation is ``run_sd``,
and every replicate perturbs every point by a normal draw with that sd. With one run a size it is not measured:
the joint bootstrap then *assumes* each run varies by its point's test standard error (``run_sd_assumed``; on
the bundled tasks' probe curves the measured between-run sd was 0.6 to 1.2 times that, see the benchmark), and
``assume_run_sd=False`` leaves it out instead. (The parametric bootstrap already moves every point
independently by its test se, so nothing is assumed there.) ``band(n, runs=k)`` adds the deviation of the mean
of k new runs at n (measured or assumed sd) to the curve's band: the band a back-test compares with the runs
it measured.

Values are clipped to [0, ceiling]; failed refits are skipped; intervals are 95% percentile intervals over the
refits, deterministic for a seed. ``CurveFit.band`` (``runs=0``) is a band for the fitted curve, the metric's
expected value at n. Undefined quantities are None in ``to_json`` (NaN in arrays). Too few distinct n raise
ValueError; ``Forecast.insufficient`` builds the matching "insufficient_points" forecast.

Out of scope: running the training jobs that produce the points, choosing training sizes, plotting, and
other curve families (exponential, logistic); the power law is an extrapolation and grows shaky far beyond
the largest measured n.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from ..formats import pct

__all__ = ["CurvePoint", "CurveFit", "Forecast", "fit_learning_curve", "forecast_examples", "mean_statistic",
           "BatchStatistic", "JOINT", "PARAMETRIC"]

_MODEL = "inverse_power_law"
_C_MAX = 3.0
_C_MIN = 1e-3
_SE_FLOOR = 1e-4
_RESID_SE_FLOOR = 0.005
_C_GRID = np.geomspace(_C_MIN, _C_MAX, 48)
_GOLDEN_STEPS = 30
_ROWS_PER_CHUNK = 1 << 22  # test-example indices drawn at once by the joint bootstrap
JOINT = "joint test-example bootstrap"
PARAMETRIC = "parametric bootstrap, points independent"

# rows of test-example indices (r, n_test) -> the metric on each row (r,)
BatchStatistic = Callable[[np.ndarray], np.ndarray]


def mean_statistic(scores: Sequence[float] | np.ndarray) -> BatchStatistic:
    """The mean of per-example ``scores`` (0/1 correctness: accuracy, exact match) over each row of indices."""
    arr = np.asarray(scores, dtype=float).reshape(-1)

    def stat(rows: np.ndarray) -> np.ndarray:
        return arr[np.atleast_2d(rows)].mean(axis=1)

    return stat


def _none_if_nan(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


@dataclass(frozen=True)
class CurvePoint:
    n: int
    value: float
    low: float | None = None
    high: float | None = None
    n_test: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"n": int(self.n), "value": _none_if_nan(self.value), "low": _none_if_nan(self.low),
                "high": _none_if_nan(self.high), "n_test": None if self.n_test is None else int(self.n_test)}


@dataclass(frozen=True)
class CurveFit:
    model: str
    params: dict[str, float]
    params_ci: dict[str, tuple[float, float]]
    points: tuple[CurvePoint, ...]
    residual_rmse: float
    n_boot: int
    ceiling: float = 1.0
    boot_params: np.ndarray = field(default_factory=lambda: np.empty((0, 3)), repr=False, compare=False)
    uncertainty: str = PARAMETRIC
    run_sd: float | None = None  # pooled between-run sd at repeated sizes; None: not measured
    run_sd_dof: int = 0
    run_draws: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False, compare=False)
    run_sd_assumed: bool = False  # one run a size (joint bootstrap): each run's sd taken as its test se
    n_test: int | None = None  # the points' common test size (an assumed run's sd at n is the binomial se there)

    def predict(self, n: Any) -> np.ndarray:
        return _curve(np.asarray(n, dtype=float), self.params["a"], self.params["b"], self.params["c"])

    def band(self, n: Any, alpha: float = 0.05, *, runs: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The (1 - alpha) band of the curve at ``n``; ``runs=k``: of the mean of k new training runs at ``n``
        (the curve plus their between-run deviation, measured or assumed; none when neither)."""
        x = np.asarray(n, dtype=float)
        if len(self.boot_params) == 0:
            nan = np.full(x.shape, np.nan)
            return nan, nan.copy()
        a, b, c = (self.boot_params[:, i].reshape((-1,) + (1,) * x.ndim) for i in range(3))
        preds = _curve(x[None, ...], a, b, c)
        if runs > 0 and len(self.run_draws) == len(preds):
            if self.run_sd is not None:
                sd: Any = self.run_sd
            elif self.run_sd_assumed and self.n_test:
                p = np.clip(preds, 0.5 / self.n_test, 1 - 0.5 / self.n_test)
                sd = np.sqrt(p * (1 - p) / self.n_test)
            elif self.run_sd_assumed:
                sd = float(np.median([_point_se(pt) for pt in self.points]))
            else:
                sd = 0.0
            noise = sd / math.sqrt(runs) * self.run_draws.reshape((-1,) + (1,) * x.ndim)
            preds = np.clip(preds + noise, 0.0, self.ceiling)
        return np.quantile(preds, alpha / 2, axis=0), np.quantile(preds, 1 - alpha / 2, axis=0)

    @property
    def uncertainty_note(self) -> str:
        """What the band carries, in words."""
        what = {JOINT: "test sampling noise, resampled jointly over the test examples every point shares, and the "
                       "fit's instability",
                PARAMETRIC: "each point's own sampling noise, drawn independently for every point (points scored "
                            "on shared test examples make this band too narrow), and the fit's instability"}[
            self.uncertainty]
        if self.run_sd is not None:
            runs = (f"; training-run variation (seed, subset) measured from repeated sizes: sd "
                    f"{pct(self.run_sd, digits=2)} points ({self.run_sd_dof} degrees of freedom)")
        elif self.run_sd_assumed:
            runs = ("; training-run variation (seed, subset) is assumed, not measured: one run a size, each taken "
                    "to vary by its test standard error")
        else:
            runs = "; training-run variation (seed, subset) is not included: one run per size does not measure it"
        return f"The 95% band carries {what}{runs}."

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "params": {k: _none_if_nan(v) for k, v in self.params.items()},
                "params_ci": {k: [_none_if_nan(lo), _none_if_nan(hi)] for k, (lo, hi) in self.params_ci.items()},
                "points": [p.to_json() for p in self.points], "residual_rmse": _none_if_nan(self.residual_rmse),
                "n_boot": int(self.n_boot), "ceiling": float(self.ceiling), "uncertainty": self.uncertainty,
                "run_sd": _none_if_nan(self.run_sd), "run_sd_dof": int(self.run_sd_dof),
                "run_sd_assumed": self.run_sd_assumed,
                "uncertainty_note": self.uncertainty_note}


@dataclass(frozen=True)
class Forecast:
    target: float
    status: str
    n_needed: float | None
    n_low: float | None
    n_high: float | None
    p_reachable: float | None
    message: str

    @classmethod
    def insufficient(cls, target: float, reason: str = "") -> Forecast:
        """The forecast to report when there are too few distinct training sizes to fit a curve."""
        msg = reason or "At least 3 distinct training sizes are needed to forecast a learning curve."
        return cls(float(target), "insufficient_points", None, None, None, None, msg)

    def to_json(self) -> dict[str, Any]:
        return {"target": float(self.target), "status": self.status, "n_needed": _none_if_nan(self.n_needed),
                "n_low": _none_if_nan(self.n_low), "n_high": _none_if_nan(self.n_high),
                "p_reachable": _none_if_nan(self.p_reachable), "message": self.message}


def _curve(n: np.ndarray, a: Any, b: Any, c: Any) -> np.ndarray:
    return a - b * np.power(n, -c)


def _jac(u: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    pw = np.power(u, -c)
    return np.column_stack([np.ones_like(u), -pw, b * pw * np.log(u)])


def _ls_ab(x: np.ndarray, y: np.ndarray, w: np.ndarray, ceiling: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row, weighted least squares of y ~ a + B x with 0 <= a <= ceiling and B >= 0: (a, B, sse).

    ``x`` and ``y`` are (rows, points). The objective is a convex quadratic, so its constrained minimum is the
    unconstrained one when that is feasible, else the best of the minima along the three edges.
    """
    s0, s1, s2 = w.sum(), (w * x).sum(1), (w * x * x).sum(1)
    t0, t1 = (w * y).sum(1), (w * x * y).sum(1)
    det = s0 * s2 - s1 * s1
    with np.errstate(divide="ignore", invalid="ignore"):
        a_u = (s2 * t0 - s1 * t1) / det
        b_u = (s0 * t1 - s1 * t0) / det
        ok = (det > 1e-12 * s0 * s2) & np.isfinite(a_u) & np.isfinite(b_u) & (a_u >= 0) & (a_u <= ceiling) & (b_u >= 0)
        s2_safe = np.where(s2 > 0, s2, np.inf)
        cands = [(np.where(ok, a_u, 0.0), np.where(ok, b_u, 0.0)),
                 (np.zeros_like(t1), np.maximum(t1 / s2_safe, 0.0)),
                 (np.full_like(t1, ceiling), np.maximum((t1 - ceiling * s1) / s2_safe, 0.0)),
                 (np.clip(t0 / s0, 0.0, ceiling), np.zeros_like(t1))]
    best_a, best_b, best = cands[0][0], cands[0][1], np.full(len(y), np.inf)
    for j, (a, b) in enumerate(cands):
        sse = (w * (y - a[:, None] - b[:, None] * x) ** 2).sum(1)
        if j == 0:
            sse = np.where(ok, sse, np.inf)
        better = sse < best
        best_a, best_b, best = np.where(better, a, best_a), np.where(better, b, best_b), np.where(better, sse, best)
    return best_a, best_b, best


def _fit_rows(u: np.ndarray, ys: np.ndarray, w: np.ndarray, ceiling: float) -> np.ndarray:
    """Least-squares fits of y = a - B * u**-c for every row of ``ys`` at once: (rows, 3) of (a, B, c).

    A profile over c: a grid in log c, then a golden-section search between the best grid value's neighbours.
    """
    log_grid = np.log(_C_GRID)
    rows = len(ys)

    def profile(log_c: np.ndarray, y: np.ndarray = ys) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = -np.power(u[None, :], -np.exp(log_c)[:, None])
        return _ls_ab(x, y, w, ceiling)

    # the whole grid in one call: row r at grid value g is row g * rows + r
    sse_grid = profile(np.repeat(log_grid, rows), np.tile(ys, (len(log_grid), 1)))[2].reshape(len(log_grid), rows).T
    k = np.argmin(sse_grid, axis=1)
    lo, hi = log_grid[np.maximum(k - 1, 0)], log_grid[np.minimum(k + 1, len(log_grid) - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    m1, m2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    f1, f2 = profile(m1)[2], profile(m2)[2]
    for _ in range(_GOLDEN_STEPS):  # golden section: one new evaluation per step
        left = f1 <= f2
        lo, hi = np.where(left, lo, m1), np.where(left, m2, hi)
        new = np.where(left, hi - ratio * (hi - lo), lo + ratio * (hi - lo))
        f_new = profile(new)[2]
        m1, m2, f1, f2 = (np.where(left, new, m2), np.where(left, m1, new),
                          np.where(left, f_new, f2), np.where(left, f1, f_new))
    log_c = (lo + hi) / 2
    a, b, sse = profile(log_c)
    on_grid = sse_grid[np.arange(rows), k] < sse  # keep the grid's best when the search did worse
    if on_grid.any():
        a_g, b_g, _ = profile(log_grid[k])
        a, b, log_c = np.where(on_grid, a_g, a), np.where(on_grid, b_g, b), np.where(on_grid, log_grid[k], log_c)
    return np.column_stack([a, b, np.exp(log_c)])


def _fit_once(u: np.ndarray, y: np.ndarray, sigma: np.ndarray | None, ceiling: float) -> tuple[float, float, float]:
    """The point estimate: the profile fit of :func:`_fit_rows`, polished by curve_fit when that fits better."""
    w = np.ones_like(y) if sigma is None else sigma**-2.0
    start = tuple(float(v) for v in _fit_rows(u, y[None, :], w, ceiling)[0])
    sse0 = float(np.sum(w * (y - _curve(u, *start)) ** 2))
    try:
        with warnings.catch_warnings():  # the covariance (unused) is undefined with exactly 3 points
            warnings.simplefilter("ignore", OptimizeWarning)
            p, _ = curve_fit(_curve, u, y, p0=np.clip(start, [0.0, 0.0, _C_MIN], [ceiling, np.inf, _C_MAX]),
                             sigma=sigma, jac=_jac, method="trf", maxfev=2000,
                             bounds=([0.0, 0.0, _C_MIN], [ceiling, np.inf, _C_MAX]))
    except (RuntimeError, ValueError):
        return start  # type: ignore[return-value]
    ok = np.all(np.isfinite(p)) and float(np.sum(w * (y - _curve(u, *p)) ** 2)) < sse0
    return (float(p[0]), float(p[1]), float(p[2])) if ok else start  # type: ignore[return-value]


def _run_sd(n: np.ndarray, y: np.ndarray) -> tuple[float | None, int]:
    """Pooled within-size sd of points that repeat a training size (separate runs), and its degrees of freedom."""
    ss, dof = 0.0, 0
    for size in np.unique(n):
        group = y[n == size]
        if len(group) > 1:
            ss += float(np.sum((group - group.mean()) ** 2))
            dof += len(group) - 1
    return (math.sqrt(ss / dof), dof) if dof else (None, 0)


def _point_se(p: CurvePoint) -> float:
    """A point's test standard error: binomial from ``n_test``, else from its 95% CI; NaN when neither is known."""
    if p.n_test is not None and p.n_test > 0:
        q = min(max(p.value, 0.5 / p.n_test), 1 - 0.5 / p.n_test)
        return math.sqrt(q * (1 - q) / p.n_test)
    if p.low is not None and p.high is not None and p.high > p.low:
        return (p.high - p.low) / (2 * 1.959964)
    return math.nan


def _joint_replicates(stats: Sequence[BatchStatistic], n_test: int, n_boot: int,
                      rng: np.random.Generator) -> np.ndarray:
    """(n_boot, points): every point rescored on the same resampled test examples, replicate by replicate."""
    per_chunk = max(1, _ROWS_PER_CHUNK // max(n_test, 1))
    blocks = []
    for start in range(0, n_boot, per_chunk):
        rows = rng.integers(0, n_test, size=(min(per_chunk, n_boot - start), n_test))
        blocks.append(np.column_stack([np.asarray(stat(rows), dtype=float).reshape(len(rows)) for stat in stats]))
    return np.concatenate(blocks) if blocks else np.empty((0, len(stats)))


def fit_learning_curve(points: Sequence[CurvePoint], *, seed: int = 0, n_boot: int = 300, ceiling: float = 1.0,
                       test_stats: Sequence[BatchStatistic] | None = None, assume_run_sd: bool = True) -> CurveFit:
    """Fit value(n) = a - b * n**(-c) to ``points`` with a bootstrap band (see module doc).

    ``test_stats``: one statistic per point (in the order of ``points``), all over the same test examples
    (every point's ``n_test``, which must agree); then the test examples are resampled jointly, and with one
    run a size each run is assumed to vary by its test se unless ``assume_run_sd`` is False.
    """
    if test_stats is not None and len(test_stats) != len(points):
        raise ValueError(f"test_stats needs one statistic per point: got {len(test_stats)} for {len(points)} points")
    order = sorted(range(len(points)), key=lambda i: points[i].n)
    pts = tuple(points[i] for i in order)
    stats = None if test_stats is None else [test_stats[i] for i in order]
    if not (math.isfinite(ceiling) and ceiling > 0):
        raise ValueError(f"ceiling must be a positive number, got {ceiling!r}")
    if any(p.n <= 0 or not math.isfinite(p.value) for p in pts):
        raise ValueError("every learning-curve point needs a positive training size n and a finite value")
    if len({p.n for p in pts}) < 3:
        raise ValueError(f"need at least 3 distinct training sizes to fit a learning curve, got {len({p.n for p in pts})}")
    n_shared = 0
    if stats is not None:
        sizes = {p.n_test for p in pts}
        if len(sizes) != 1 or not isinstance(next(iter(sizes)), int) or next(iter(sizes)) <= 0:
            raise ValueError("a joint test-example bootstrap needs every point scored on the same test examples "
                             f"(one positive n_test); got n_test {sorted(map(str, sizes))}")
        n_shared = int(next(iter(sizes)))
        everything = np.arange(n_shared)[None, :]
        for p, stat in zip(pts, stats):
            full = float(np.asarray(stat(everything), dtype=float).reshape(-1)[0])
            if not abs(full - p.value) <= 1e-6:
                raise ValueError(f"the test statistic of the point at n = {p.n} gives {full!r} on its test examples, "
                                 f"not its value {p.value!r}")
    n = np.array([p.n for p in pts], dtype=float)
    y = np.array([p.value for p in pts], dtype=float)
    n_ref = float(np.exp(np.mean(np.log(n))))  # rescale n for conditioning: b = B * n_ref**c
    u = n / n_ref
    se = np.array([_point_se(p) for p in pts])
    binom = np.array([p.n_test is not None and p.n_test > 0 for p in pts])
    p_sim = np.array([min(max(p.value, 0.5 / p.n_test), 1 - 0.5 / p.n_test) if b else 0.0 for p, b in zip(pts, binom)])
    known = np.isfinite(se)
    sigma = None
    if known.any():
        se[~known] = np.median(se[known])
        sigma = np.maximum(se, _SE_FLOOR)
    a, bb, c = _fit_once(u, y, sigma, ceiling)
    resid = y - _curve(u, a, bb, c)
    rmse = float(np.sqrt(np.mean(resid**2)))
    run_sd, run_dof = _run_sd(n, y)
    if sigma is None:
        dof = max(len(y) - 3, 1)
        sim_se = np.full(len(y), max(float(np.sqrt(np.sum(resid**2) / dof)), _RESID_SE_FLOOR))
    else:
        sim_se = sigma
    rng = np.random.default_rng(seed)
    reps = max(int(n_boot), 0)
    if stats is not None:
        ys = _joint_replicates(stats, n_shared, reps, rng)
    else:
        ys = y + sim_se * rng.standard_normal((reps, len(y)))
        if binom.any():
            n_tests = np.array([p.n_test for p, b in zip(pts, binom) if b], dtype=np.int64)
            ys[:, binom] = rng.binomial(n_tests, p_sim[binom], size=(reps, int(binom.sum()))) / n_tests
    assumed = stats is not None and run_sd is None and assume_run_sd
    if run_sd or assumed:
        ys = ys + (sim_se if assumed else run_sd) * rng.standard_normal(ys.shape)
    ys = np.clip(ys, 0.0, ceiling)
    w = np.ones_like(y) if sigma is None else sigma**-2.0
    fitted = _fit_rows(u, ys, w, ceiling) if reps else np.empty((0, 3))
    keep = np.all(np.isfinite(fitted), axis=1)
    boot_arr = np.column_stack([fitted[keep, 0], fitted[keep, 1] * n_ref ** fitted[keep, 2], fitted[keep, 2]])
    boot_arr = boot_arr[np.all(np.isfinite(boot_arr), axis=1)]
    run_draws = rng.standard_normal(len(boot_arr)) if run_sd or assumed else np.empty(0)
    tests = {p.n_test for p in pts}
    n_test = next(iter(tests)) if len(tests) == 1 and next(iter(tests)) else None
    names = ("a", "b", "c")
    if len(boot_arr):
        q = np.quantile(boot_arr, [0.025, 0.975], axis=0)
        ci = {k: (float(q[0, i]), float(q[1, i])) for i, k in enumerate(names)}
    else:
        ci = {k: (math.nan, math.nan) for k in names}
    params = {"a": a, "b": bb * n_ref**c, "c": c}
    kind = JOINT if stats is not None else PARAMETRIC
    return CurveFit(_MODEL, params, ci, pts, rmse, len(boot_arr), float(ceiling), boot_arr, kind, run_sd, run_dof,
                    run_draws, assumed, n_test)


def _fmt_pct(x: float) -> str:
    return pct(x, unit="%", whole_from=10)


def _fmt_n(x: float) -> str:
    """Round to two significant figures (whole numbers below 100), with thousands separators."""
    x = max(float(x), 0.0)
    if x < 100:
        return f"{round(x):,}"
    return f"{int(round(x, 1 - int(math.floor(math.log10(x))))):,}"


def _invert(a: Any, b: Any, c: Any, target: float) -> Any:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.power(b / (a - target), 1.0 / c)


def forecast_examples(fit: CurveFit, target: float, *, max_n: float = 1e7, metric: str = "accuracy") -> Forecast:
    """Forecast the labelled examples needed for ``fit`` to reach ``target`` (see ``Forecast.status``)."""
    if not math.isfinite(target):
        raise ValueError(f"target must be a finite number, got {target!r}")
    target = float(target)
    boots = fit.boot_params
    p_reach = float(np.mean(boots[:, 0] > target)) if len(boots) else None
    goal = f"{_fmt_pct(target)} {metric}".strip()
    met = [p for p in fit.points if p.value >= target]
    if met:
        first = min(met, key=lambda p: p.n)
        msg = (f"The target {goal} is already met: {_fmt_pct(first.value)} was measured with "
               f"{_fmt_n(first.n)} labelled examples.")
        return Forecast(target, "reached", float(first.n), None, None, p_reach, msg)
    a, b, c = fit.params["a"], fit.params["b"], fit.params["c"]
    lo_a, hi_a = fit.params_ci["a"]
    ceil_ci = f" [{_fmt_pct(lo_a)}, {_fmt_pct(hi_a)}]" if math.isfinite(lo_a) and math.isfinite(hi_a) else ""
    n_point = float(_invert(a, b, c, target)) if a > target else math.inf
    if not n_point <= max_n:
        why = (f"the fitted ceiling is {_fmt_pct(a)}{ceil_ci}" if a <= target else
               f"it would need more than {_fmt_n(max_n)} labelled examples (fitted ceiling {_fmt_pct(a)}{ceil_ci})")
        return Forecast(target, "out_of_reach", None, None, None, p_reach,
                        f"The target {goal} looks out of reach for this model: {why}.")
    n_point = max(n_point, 1.0)
    n_low = n_high = None
    interval = ""
    if len(boots):
        ns = np.where(boots[:, 0] > target, _invert(boots[:, 0], boots[:, 1], boots[:, 2], target), np.inf)
        ns = np.where(np.isfinite(ns) & (ns <= max_n), np.maximum(ns, 1.0), 1e300)
        q_lo, q_hi = (float(v) for v in np.quantile(ns, [0.025, 0.975]))
        n_low = q_lo if q_lo <= max_n else None
        n_high = q_hi if q_hi <= max_n else None
        share = _fmt_pct(1 - float(np.mean(ns <= max_n)))
        unbounded = f"{share} of bootstrap fits do not reach it within {_fmt_n(max_n)} examples"
        if n_high is not None:
            interval = f" (95% interval {_fmt_n(n_low)}-{_fmt_n(n_high)})"
        elif n_low is not None:
            interval = f" (95% interval from {_fmt_n(n_low)}; the upper end is unbounded, as {unbounded})"
        else:
            interval = f" (the 95% interval is unbounded, as {unbounded})"
    msg = f"About {_fmt_n(n_point)} labelled examples{interval} are forecast to reach {goal}."
    return Forecast(target, "forecast", n_point, n_low, n_high, p_reach, msg)
