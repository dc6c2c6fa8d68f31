"""The report's figures, each rendered by matplotlib to an inline SVG string (no files, no network).

* :func:`pareto_svg`: quality (95% CI bars) against cost per 1,000 requests (log scale), the
  Pareto frontier and the winner highlighted, the target as a line;
* :func:`curves_svg`: every learning-curve rung on one chart (fine-tuning and probe), measured
  points with CIs, the fitted inverse power law with its 95% bootstrap band
  (:func:`tunewise.training.curves.fit_learning_curve` refitted on the stored points with the run's
  seed and the stored bootstrap size, which reproduces the stored fit), the forecast and the target;
* :func:`per_label_svg`: per-label F1 of one rung (the top and bottom labels when there are many);
* :func:`latency_svg`: per-request latency in ms per rung (points, box p25-p75, median, p5-p95).

Each returns an ``<svg>`` element with ``id="plot-<name>"``, ``role="img"`` and a ``<title>``, its
internal ids prefixed so several figures can share one HTML page, and no metadata or namespace
URLs; or None when there is nothing to draw. The figures never touch pyplot's global state.
User text (rung and label names) is drawn as text, never as mathtext.

Out of scope: the page around the figures (``html.py``).
"""

from __future__ import annotations

import html
import io
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter

from ..decision import Decision, rung_kind
from ..results import RungResult, RunResults
from ..training.curves import CurvePoint, fit_learning_curve

__all__ = ["pareto_svg", "curves_svg", "per_label_svg", "latency_svg", "KIND_COLORS", "KIND_NAMES"]

KIND_COLORS = {"no_llm": "#0f766e", "prompt": "#2563eb", "tuned": "#c2410c"}
KIND_NAMES = {"no_llm": "no LLM", "prompt": "prompting", "tuned": "fine-tuned"}
TARGET_COLOR, INK, MUTED = "#b91c1c", "#111827", "#6b7280"
_STYLE = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "axes.edgecolor": "#9ca3af",
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.color": "#e5e7eb",
    "grid.linewidth": 0.8, "legend.fontsize": 8, "legend.frameon": False, "xtick.color": "#374151",
    "ytick.color": "#374151", "svg.fonttype": "none", "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Helvetica", "Arial", "Liberation Sans"],
}


def _text(s: Any) -> str:
    """User text as literal matplotlib text: a ``$`` would otherwise start mathtext."""
    return str(s).replace("$", r"\$")


def _svg(fig: Figure, name: str, title: str) -> str:
    """Serialise ``fig`` and make it safe to inline: id, title, scoped ids and style, no metadata."""
    buf = io.StringIO()
    with matplotlib.rc_context({**_STYLE, "svg.hashsalt": name}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None}, bbox_inches="tight",
                    facecolor="white")
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.S)
    pid = f"plot-{name}"
    ids = set(re.findall(r'\sid="([^"]+)"', svg))
    for old in sorted(ids, key=len, reverse=True):
        svg = re.sub(rf'(\sid="|url\(#|href="#){re.escape(old)}(?=[")])', rf"\g<1>{pid}-{old}", svg)
    svg = svg.replace("*{", f"#{pid} *{{")
    head = re.match(r"<svg\b[^>]*>", svg)
    assert head is not None
    view = re.search(r'viewBox="([^"]+)"', head.group(0))
    root = (f'<svg id="{pid}" class="plot" role="img" aria-labelledby="{pid}-title" '
            f'viewBox="{view.group(1) if view else "0 0 460 345"}" preserveAspectRatio="xMidYMid meet">'
            f'<title id="{pid}-title">{html.escape(title)}</title>')
    return root + svg[head.end():].strip()


def _figure(width: float, height: float) -> Figure:
    with matplotlib.rc_context(_STYLE):
        return Figure(figsize=(width, height), dpi=100)


# ---------------------------------------------------------------- Pareto

_LABEL_PT = 7.5
# (dx, dy) in points from the marker, and the alignment that puts the text on that side of it
_SPOTS = ((6, 3, "left", "bottom"), (6, -3, "left", "top"), (-6, 3, "right", "bottom"), (-6, -3, "right", "top"),
          (6, 13, "left", "bottom"), (6, -13, "left", "top"), (-6, 13, "right", "bottom"), (-6, -13, "right", "top"),
          (0, 24, "center", "bottom"), (0, -24, "center", "top"))


def _box(px: float, py: float, spot: tuple[int, int, str, str], text: str, scale: float) -> tuple[float, ...]:
    """Approximate pixel box of a label placed at ``spot`` from the marker at (px, py)."""
    dx, dy, ha, va = spot
    w, h = 0.58 * _LABEL_PT * len(text) * scale, 1.25 * _LABEL_PT * scale
    x0 = px + dx * scale - {"left": 0, "center": w / 2, "right": w}[ha]
    y0 = py + dy * scale - {"bottom": 0, "top": h}[va]
    return x0, y0, x0 + w, y0 + h


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def _label_points(ax: Any, points: Sequence[tuple[str, float, float]]) -> None:
    """Name every marker, choosing for each the side where its label overlaps the fewest others (greedy)."""
    scale = ax.figure.dpi / 72
    pixels = [ax.transData.transform((x, y)) for _, x, y in points]
    markers = [(px - 5, py - 5, px + 5, py + 5) for px, py in pixels]
    placed: list[tuple[float, ...]] = []
    order = sorted(range(len(points)), key=lambda i: (-pixels[i][1], pixels[i][0]))
    for i in order:
        name = _text(points[i][0])
        px, py = pixels[i]
        boxes = [_box(px, py, spot, name, scale) for spot in _SPOTS]
        cost = [sum(_overlap(b, o) for o in placed) + sum(_overlap(b, m) for j, m in enumerate(markers) if j != i)
                for b in boxes]
        k = min(range(len(_SPOTS)), key=lambda j: (cost[j], j))
        placed.append(boxes[k])
        dx, dy, ha, va = _SPOTS[k]
        ax.annotate(name, (points[i][1], points[i][2]), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                    fontsize=_LABEL_PT, color="#374151", zorder=6)


def pareto_svg(decision: Decision, *, target: float | None = None) -> str | None:
    """Quality vs cost per 1,000 requests for every priced option (None when none is priced)."""
    priced = [o for o in decision.options if o.per_1k_usd is not None]
    if not priced:
        return None
    positive = [o.per_1k_usd for o in priced if o.per_1k_usd > 0]
    floor = min(positive) / 10 if positive else 1e-6
    x = {o.name: max(o.per_1k_usd, floor) for o in priced}
    fig = _figure(7.4, 4.3)
    with matplotlib.rc_context(_STYLE):
        ax = fig.add_subplot()
        for kind in ("no_llm", "prompt", "tuned"):
            group = [o for o in priced if o.kind == kind]
            if group:
                err = [[100 * max(o.quality - o.low, 0) for o in group],
                       [100 * max(o.high - o.quality, 0) for o in group]]
                ax.errorbar([x[o.name] for o in group], [100 * o.quality for o in group], yerr=err, fmt="o", ms=6,
                            capsize=3, color=KIND_COLORS[kind], label=KIND_NAMES[kind], zorder=3)
        front = sorted((o for o in priced if o.name in decision.pareto), key=lambda o: x[o.name])
        if front:
            ax.plot([x[o.name] for o in front], [100 * o.quality for o in front], color=INK, lw=1, zorder=2,
                    label="Pareto frontier")
            ax.scatter([x[o.name] for o in front], [100 * o.quality for o in front], s=170, facecolors="none",
                       edgecolors=INK, linewidths=1.2, zorder=4)
        _break_even_line(ax, decision, x)
        win = next((o for o in priced if o.name == decision.winner), None)
        if win is not None:
            ax.scatter([x[win.name]], [100 * win.quality], marker="*", s=260, color="#f59e0b", edgecolors=INK,
                       linewidths=0.8, zorder=5, label=f"winner: {_text(win.name)}")
        lows = [100 * o.low for o in priced] + ([100 * target] if target is not None else [])
        highs = [100 * o.high for o in priced] + ([100 * target] if target is not None else [])
        if target is not None:
            ax.axhline(100 * target, color=TARGET_COLOR, ls="--", lw=1, zorder=1, label=f"target {100 * target:g}%")
        ax.set_ylim(max(0.0, min(lows) - 4), min(100.0, max(highs) + 4))
        ax.set_xscale("log")
        lo, hi = min(x.values()), max(x.values())
        ax.set_xlim(lo / 2.5, hi * 2.5)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"${v:,.4g}"))
        ax.set_xlabel("cost per 1,000 requests, USD (log scale)")
        ax.set_ylabel(f"{_text(priced[0].metric)} %, 95% CI")
        _label_points(ax, [(o.name, x[o.name], 100 * o.quality) for o in priced])
        ax.legend(loc="best", frameon=True, facecolor="white", edgecolor="none", framealpha=0.9)
    return _svg(fig, "pareto", f"Quality against cost per 1,000 requests for {len(priced)} options; the Pareto "
                f"frontier is {', '.join(decision.pareto) or 'empty'}"
                + (f"; the winner is {decision.winner}" if decision.winner else "")
                + (f"; {_break_even_words(decision.break_even)}" if decision.break_even else "") + ".")


def _break_even_words(be: Mapping[str, Any]) -> str:
    volume = be.get("requests_per_month")
    if volume is None:
        return f"{be['tuned']} never pays back against {be['prompt']}"
    return f"{be['tuned']} pays back against {be['prompt']} above {volume:,.0f} requests a month"


def _break_even_line(ax: Any, decision: Decision, x: Mapping[str, float]) -> None:
    """A dotted line from the prompting option to the tuned one the break-even compares, labelled with the
    monthly volume above which tuning costs less over the horizon (costs on the axis are at the task's volume)."""
    be = decision.break_even
    quality = {o.name: 100 * o.quality for o in decision.options}
    if not be or be.get("prompt") not in x or be.get("tuned") not in x:
        return
    a, b = be["prompt"], be["tuned"]
    ax.plot([x[a], x[b]], [quality[a], quality[b]], color="#7c3aed", ls=":", lw=1.4, zorder=2,
            label=_text(_break_even_words(be)))


# ---------------------------------------------------------------- learning curves


_N_BOOT = 300  # the bootstrap size fit_learning_curve uses by default (and the curve rungs store)


def _curve_points(curve: Mapping[str, Any]) -> list[CurvePoint]:
    out = []
    for p in curve.get("points") or []:
        t = p.get("test") or {}
        if p.get("n") and t.get("value") is not None:
            out.append(CurvePoint(n=int(p["n"]), value=float(t["value"]), low=t.get("low"), high=t.get("high"),
                                  n_test=t.get("n")))
    return sorted(out, key=lambda p: p.n)


def curve_rungs(results: RunResults) -> list[tuple[RungResult, Mapping[str, Any]]]:
    """(rung, curve) for every finished rung with a stored learning curve that has points."""
    out = []
    for r in results.rungs:
        curve = (r.extras or {}).get("curve") if r.status == "finished" else None
        if curve and _curve_points(curve):
            out.append((r, curve))
    return out


def _two_digits(n: float) -> str:
    """1,234 -> "1,200": the precision the forecast message uses."""
    return f"{round(n, 1 - int(math.floor(math.log10(n)))):,.0f}" if n >= 100 else f"{n:,.0f}"


def _x_max(curves: Sequence[tuple[RungResult, Mapping[str, Any]]]) -> float:
    largest = max(p.n for _, c in curves for p in _curve_points(c))
    needed = [f.get("n_high") or f.get("n_needed") for _, c in curves
              if (f := c.get("forecast") or {}).get("status") == "forecast" and f.get("n_needed")]
    return min(max([largest * 3.0] + [1.3 * float(n) for n in needed if n]), largest * 100.0)


def curves_svg(results: RunResults, *, seed: int | None = None) -> str | None:
    """Every curve rung's measured points, fitted curve, 95% band and forecast on one chart."""
    curves = curve_rungs(results)
    if not curves:
        return None
    seed = int(results.seed or 0) if seed is None else seed
    xmax = _x_max(curves)
    palette = {"finetune": KIND_COLORS["tuned"], "probe": KIND_COLORS["no_llm"]}
    extra = iter(["#7c3aed", "#db2777", "#4b5563", "#0891b2"])
    used: set[str] = set()
    fig = _figure(7.4, 4.3)
    target = None
    with matplotlib.rc_context(_STYLE):
        ax = fig.add_subplot()
        for rung, curve in curves:
            of = curve.get("of") or "finetune"
            color = palette.get(of) if palette.get(of) not in used else next(extra, INK)
            used.add(color)
            pts = _curve_points(curve)
            ns = np.array([p.n for p in pts], dtype=float)
            vals = np.array([100 * p.value for p in pts])
            err = [[max(0.0, v - 100 * (p.low if p.low is not None else p.value)) for v, p in zip(vals, pts)],
                   [max(0.0, 100 * (p.high if p.high is not None else p.value) - v) for v, p in zip(vals, pts)]]
            what = "LoRA fine-tuning" if of == "finetune" else "embedding probe" if of == "probe" else of
            ax.errorbar(ns, vals, yerr=err, fmt="o", ms=5, capsize=3, color=color, zorder=3,
                        label=f"{_text(rung.name)} ({what}), measured")
            stored = int((curve.get("fit") or {}).get("n_boot") or _N_BOOT)
            try:  # same points, seed and bootstrap size as the stored fit: the same curve and band
                fit = fit_learning_curve(pts, seed=seed, n_boot=min(stored, _N_BOOT))
            except ValueError:
                continue
            grid = np.geomspace(ns.min(), xmax, 160)
            low, high = fit.band(grid)
            ax.plot(grid, 100 * fit.predict(grid), color=color, lw=1.5, zorder=2,
                    label=f"{_text(rung.name)}: fit, 95% band")
            if np.all(np.isfinite(low)):
                ax.fill_between(grid, 100 * low, 100 * high, color=color, alpha=0.15, lw=0, zorder=1)
            f = curve.get("forecast") or {}
            if f.get("status") == "forecast" and f.get("n_needed"):
                ax.axvline(float(f["n_needed"]), color=color, ls=":", lw=1.2, zorder=1)
                ax.annotate(f"forecast {_two_digits(float(f['n_needed']))}", (float(f["n_needed"]), 0.99),
                            xycoords=("data", "axes fraction"), xytext=(3, 0), textcoords="offset points",
                            va="top", fontsize=7.5, color=color)
            target = curve.get("target") if curve.get("target") is not None else target
        if target is not None:
            ax.axhline(100 * target, color=TARGET_COLOR, ls="--", lw=1, label=f"target {100 * target:g}%")
        ax.set_xscale("log")
        ax.set_xlim(None, xmax)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.set_xlabel("labelled training examples (log scale)")
        ax.set_ylabel(f"test {_text(curves[0][1].get('metric') or 'metric')} %")
        ax.legend(loc="lower right", frameon=True, facecolor="white", edgecolor="none", framealpha=0.9)
    return _svg(fig, "curves", "Learning curves: test score against labelled training examples for "
                + ", ".join(r.name for r, _ in curves) + ", with fitted curves, 95% bands and the target.")


# ---------------------------------------------------------------- per label


def per_label_svg(rung: RungResult, *, limit: int = 12) -> str | None:
    """Per-label F1 of ``rung``, best first; with more than ``2 * limit`` labels the top and bottom ``limit``."""
    rows = sorted(((name, s) for name, s in (rung.per_label or {}).items() if (s.get("support") or 0) > 0),
                  key=lambda x: (-(x[1].get("f1") or 0.0), x[0]))
    if not rows:
        return None
    hidden = max(0, len(rows) - 2 * limit)
    shown = rows[:limit] + [None] + rows[-limit:] if hidden else rows
    metric = (rung.metrics or {}).get(rung.primary_metric or "accuracy")
    overall = metric.value if metric is not None else None
    fig = _figure(7.4, 0.9 + 0.22 * len(shown))
    with matplotlib.rc_context(_STYLE):
        ax = fig.add_subplot()
        ys = np.arange(len(shown))[::-1]
        for y, row in zip(ys, shown):
            if row is None:
                ax.text(50, y, f"... {hidden} labels not shown ...", ha="center", va="center", color=MUTED,
                        fontsize=8)
                continue
            f1 = 100 * (row[1].get("f1") or 0.0)
            low = overall is not None and f1 < 100 * overall
            ax.barh(y, f1, height=0.7, color="#f97316" if low else "#3b82f6")
            ax.text(min(f1, 100) + 1, y, f"{f1:.0f}", va="center", fontsize=7.5, color="#374151")
        ax.set_yticks(ys, [f"{_text(r[0])} (n={r[1].get('support')})" if r else "" for r in shown], fontsize=7.5)
        ax.set_xlim(0, 108)
        ax.set_ylim(-0.6, len(shown) - 0.4)
        ax.grid(axis="y", visible=False)
        ax.set_xlabel(f"F1 % on the test split (orange: below the rung's overall "
                      f"{_text(rung.primary_metric or 'score')})")
    what = f"top and bottom {limit} of {len(rows)}" if hidden else f"all {len(rows)}"
    return _svg(fig, "per-label", f"Per-label F1 of {rung.name}, {what} labels.")


# ---------------------------------------------------------------- latency


def latency_svg(results: RunResults, *, order: Sequence[str] | None = None) -> str | None:
    """Per-request latency (ms) of every finished rung with predictions: points, box and p5-p95 whiskers."""
    rungs = {r.name: r for r in results.rungs if r.status == "finished"}
    names = [n for n in (order or list(rungs)) if n in rungs]
    data = []
    for name in names:
        ms = [1000 * float(p.latency_s) for p in rungs[name].predictions
              if isinstance(p.latency_s, (int, float)) and math.isfinite(p.latency_s)]
        if ms:
            data.append((name, np.array(ms)))
    if not data:
        return None
    fig = _figure(7.4, 0.9 + 0.42 * len(data))
    rng = np.random.default_rng(0)
    every = np.concatenate([v for _, v in data])
    log = every[every > 0].size > 0 and every.max() / max(every[every > 0].min(), 1e-9) > 50
    with matplotlib.rc_context(_STYLE):
        ax = fig.add_subplot()
        for i, (name, v) in enumerate(data):
            y = len(data) - 1 - i
            color = KIND_COLORS[rung_kind(rungs[name])]
            shown = v if v.size <= 400 else rng.choice(v, 400, replace=False)
            plotted = np.maximum(shown, every[every > 0].min() if log else 0)
            ax.scatter(plotted, y + rng.uniform(-0.18, 0.18, shown.size), s=5, color=color, alpha=0.35, lw=0)
            p5, p25, p50, p75, p95 = np.percentile(v, [5, 25, 50, 75, 95])
            ax.hlines(y, p5, p95, color=INK, lw=1)
            ax.add_patch(Rectangle((p25, y - 0.25), max(p75 - p25, 1e-9), 0.5, facecolor="none", edgecolor=INK, lw=1.2))
            ax.vlines(p50, y - 0.25, y + 0.25, color=INK, lw=2)
            ax.text(p95, y + 0.3, f"p95 {p95:,.0f}", fontsize=7, color="#374151", ha="center")
        ax.set_yticks(range(len(data) - 1, -1, -1), [_text(n) for n, _ in data])
        ax.set_ylim(-0.7, len(data) - 0.2)
        ax.grid(axis="y", visible=False)
        if log:
            ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda val, _: f"{val:,.0f}" if val >= 1 else f"{val:.2g}"))
        ax.set_xlabel("latency per request, ms" + (" (log scale)" if log else "") +
                      "; box p25-p75, line median, whiskers p5-p95")
    return _svg(fig, "latency", "Latency per request in milliseconds for " + ", ".join(n for n, _ in data) + ".")
