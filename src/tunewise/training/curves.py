"""Learning curves: fit metric-vs-training-size points and forecast how many labelled examples a target needs.

A learning curve is a higher-is-better metric (a proportion such as test accuracy, or any metric bounded
by 1) measured after training on n labelled examples, for several n. We fit the inverse power law

    value(n) = a - b * n**(-c),     0 <= a <= ceiling,  b >= 0,  0 < c <= 3,

where ``a`` is the asymptote (the ceiling this model/recipe approaches with unlimited data), and invert it,
n = (b / (a - target))**(1/c) when a > target, to forecast the examples a target needs.

Conventions: the fit is weighted by each point's standard error when known (binomial sqrt(p(1-p)/n_test)
from ``n_test``, else (high - low) / 3.92 from its 95% CI; points with neither borrow the median se),
unweighted when no point has one. Uncertainty comes from a parametric bootstrap: each replicate redraws every
point from its own sampling distribution (binomial with ``n_test``, else normal with the CI-derived se, else
normal with the residual se, floored at 0.005), clips it to [0, ceiling] and refits; failed refits are
skipped. Intervals are 95% percentile intervals over the refits, and results are deterministic for a seed.
``CurveFit.band`` is a band for the fitted curve, not for a new noisy measurement. Undefined quantities are
None in ``to_json`` (NaN in arrays). Too few distinct n raise ValueError; ``Forecast.insufficient`` builds
the matching "insufficient_points" forecast.

Out of scope: running the training jobs that produce the points, choosing training sizes, plotting, and
other curve families (exponential, logistic); the power law is an extrapolation and grows shaky far beyond
the largest measured n.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from ..formats import pct

__all__ = ["CurvePoint", "CurveFit", "Forecast", "fit_learning_curve", "forecast_examples"]

_MODEL = "inverse_power_law"
_C_MAX = 3.0
_C_MIN = 1e-3
_SE_FLOOR = 1e-4
_RESID_SE_FLOOR = 0.005
_C_GRID = np.geomspace(0.05, _C_MAX, 16)


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

    def predict(self, n: Any) -> np.ndarray:
        return _curve(np.asarray(n, dtype=float), self.params["a"], self.params["b"], self.params["c"])

    def band(self, n: Any, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(n, dtype=float)
        if len(self.boot_params) == 0:
            nan = np.full(x.shape, np.nan)
            return nan, nan.copy()
        a, b, c = (self.boot_params[:, i].reshape((-1,) + (1,) * x.ndim) for i in range(3))
        preds = _curve(x[None, ...], a, b, c)
        return np.quantile(preds, alpha / 2, axis=0), np.quantile(preds, 1 - alpha / 2, axis=0)

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "params": {k: _none_if_nan(v) for k, v in self.params.items()},
                "params_ci": {k: [_none_if_nan(lo), _none_if_nan(hi)] for k, (lo, hi) in self.params_ci.items()},
                "points": [p.to_json() for p in self.points], "residual_rmse": _none_if_nan(self.residual_rmse),
                "n_boot": int(self.n_boot), "ceiling": float(self.ceiling)}


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


def _fit_once(u: np.ndarray, y: np.ndarray, sigma: np.ndarray | None, ceiling: float) -> tuple[float, float, float]:
    """Fit y = a - B * u**-c on rescaled sizes u: a grid over c (linear in a, B) to start, then curve_fit."""
    w2 = np.ones_like(y) if sigma is None else sigma**-2.0
    x = -np.power(u[None, :], -_C_GRID[:, None])  # (grid, points); y ~ a + B * x
    s0, s1, s2 = w2.sum(), (w2 * x).sum(1), (w2 * x * x).sum(1)
    t0, t1 = (w2 * y).sum(), (w2 * x * y).sum(1)
    det = np.where(np.abs(s0 * s2 - s1 * s1) > 1e-300, s0 * s2 - s1 * s1, np.inf)
    a0 = np.clip((s2 * t0 - s1 * t1) / det, 0.0, ceiling)
    b0 = np.maximum((s0 * t1 - s1 * t0) / det, 0.0)
    sse = (w2 * (y - a0[:, None] - b0[:, None] * x) ** 2).sum(1)
    k = int(np.argmin(sse))
    start = (float(a0[k]), float(b0[k]), float(_C_GRID[k]))
    try:
        with warnings.catch_warnings():  # the covariance (unused) is undefined with exactly 3 points
            warnings.simplefilter("ignore", OptimizeWarning)
            p, _ = curve_fit(_curve, u, y, p0=start, sigma=sigma, jac=_jac, method="trf", maxfev=2000,
                             bounds=([0.0, 0.0, _C_MIN], [ceiling, np.inf, _C_MAX]))
    except (RuntimeError, ValueError):
        return start
    ok = np.all(np.isfinite(p)) and float(np.sum(w2 * (y - _curve(u, *p)) ** 2)) <= float(sse[k])
    return (float(p[0]), float(p[1]), float(p[2])) if ok else start


def fit_learning_curve(points: Sequence[CurvePoint], *, seed: int = 0, n_boot: int = 300,
                       ceiling: float = 1.0) -> CurveFit:
    """Fit value(n) = a - b * n**(-c) to ``points`` with a parametric-bootstrap uncertainty (see module doc)."""
    pts = tuple(sorted(points, key=lambda p: p.n))
    if not (math.isfinite(ceiling) and ceiling > 0):
        raise ValueError(f"ceiling must be a positive number, got {ceiling!r}")
    if any(p.n <= 0 or not math.isfinite(p.value) for p in pts):
        raise ValueError("every learning-curve point needs a positive training size n and a finite value")
    if len({p.n for p in pts}) < 3:
        raise ValueError(f"need at least 3 distinct training sizes to fit a learning curve, got {len({p.n for p in pts})}")
    n = np.array([p.n for p in pts], dtype=float)
    y = np.array([p.value for p in pts], dtype=float)
    n_ref = float(np.exp(np.mean(np.log(n))))  # rescale n for conditioning: b = B * n_ref**c
    u = n / n_ref
    se = np.full(len(pts), np.nan)
    binom = np.array([p.n_test is not None and p.n_test > 0 for p in pts])
    p_sim = np.zeros(len(pts))
    for i, p in enumerate(pts):
        if binom[i]:
            p_sim[i] = min(max(p.value, 0.5 / p.n_test), 1 - 0.5 / p.n_test)
            se[i] = math.sqrt(p_sim[i] * (1 - p_sim[i]) / p.n_test)
        elif p.low is not None and p.high is not None and p.high > p.low:
            se[i] = (p.high - p.low) / (2 * 1.959964)
    known = np.isfinite(se)
    sigma = None
    if known.any():
        se[~known] = np.median(se[known])
        sigma = np.maximum(se, _SE_FLOOR)
    a, bb, c = _fit_once(u, y, sigma, ceiling)
    resid = y - _curve(u, a, bb, c)
    rmse = float(np.sqrt(np.mean(resid**2)))
    if sigma is None:
        dof = max(len(y) - 3, 1)
        sim_se = np.full(len(y), max(float(np.sqrt(np.sum(resid**2) / dof)), _RESID_SE_FLOOR))
    else:
        sim_se = sigma
    rng = np.random.default_rng(seed)
    boots = []
    n_tests = np.array([p.n_test if b else 1 for p, b in zip(pts, binom)], dtype=np.int64)
    for _ in range(max(int(n_boot), 0)):
        y_b = y + sim_se * rng.standard_normal(len(y))
        if binom.any():
            y_b[binom] = rng.binomial(n_tests[binom], p_sim[binom]) / n_tests[binom]
        y_b = np.clip(y_b, 0.0, ceiling)
        try:
            a_b, B_b, c_b = _fit_once(u, y_b, sigma, ceiling)
        except (RuntimeError, ValueError, np.linalg.LinAlgError):
            continue
        if all(math.isfinite(v) for v in (a_b, B_b, c_b)):
            boots.append((a_b, B_b * n_ref**c_b, c_b))
    boot_arr = np.array(boots, dtype=float).reshape(-1, 3)
    names = ("a", "b", "c")
    if len(boot_arr):
        q = np.quantile(boot_arr, [0.025, 0.975], axis=0)
        ci = {k: (float(q[0, i]), float(q[1, i])) for i, k in enumerate(names)}
    else:
        ci = {k: (math.nan, math.nan) for k in names}
    params = {"a": a, "b": bb * n_ref**c, "c": c}
    return CurveFit(_MODEL, params, ci, pts, rmse, len(boot_arr), float(ceiling), boot_arr)


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
