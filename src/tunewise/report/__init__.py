"""The report: ``report.html`` (self-contained, with plots), ``report.md``, ``decision.json`` and
``edge_cases.md``, rendered from a run's results and its decision without running any model.

:func:`render_report` takes the typed :class:`~tunewise.results.RunResults` and the
:class:`~tunewise.decision.Decision` made from them, computes the figures (``plots.py``), the edge
cases (``edge_cases.py``) and both documents, all pure, then writes the four files. Only the final
writes touch the disk; ``decision.json`` is the only dict, made at that JSON boundary.

Out of scope: deciding (the caller runs :func:`tunewise.decision.decide` once and hands the result
over; the report presents it), running rungs, printing (the CLI's ``tunewise report``) and opening a
browser.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..costs import Prices, default_prices
from ..decision import Decision
from ..results import RunResults, write_json
from ..task import TaskSpec
from .edge_cases import best_rung, edge_cases_markdown
from .html import Figures, render_html
from .markdown import report_markdown
from .plots import curves_svg, latency_svg, pareto_svg, per_label_svg
from .sections import reproducibility

__all__ = ["ReportPaths", "render_report", "build_figures", "decision_payload"]


@dataclass(frozen=True)
class ReportPaths:
    html: Path
    markdown: Path
    json: Path
    edge_cases: Path


def _target(decision: Decision, spec: TaskSpec | Mapping[str, Any]) -> float | None:
    target = spec.target if isinstance(spec, TaskSpec) else (spec.get("target") or {})
    metric = decision.options[0].metric if decision.options else next(iter(target), None)
    value = target.get(metric) if metric else None
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def build_figures(results: RunResults, decision: Decision, *, target: float | None) -> Figures:
    best = best_rung(decision)
    rungs = {r.name: r for r in results.rungs}
    return Figures(
        pareto=pareto_svg(decision, target=target),
        curves=curves_svg(results),
        per_label=per_label_svg(rungs[best.name]) if best is not None else None,
        latency=latency_svg(results, order=[o.name for o in decision.options]),
    )


def decision_payload(results: RunResults, decision: Decision, prices: Prices) -> dict[str, Any]:
    """``Decision.to_json()`` plus what it was computed from (run, task, data hash, price table)."""
    task = results.task or {}
    return {**decision.to_json(), "context": {
        "run_id": results.run_id, "created_at": results.created_at,
        "task": {k: task.get(k) for k in ("name", "kind", "model", "target", "constraints")},
        "data_hash": (results.data or {}).get("hash"), "seed": results.seed,
        "prices": {"as_of": prices.as_of, "table": prices.table, "overrides": list(prices.overrides),
                   "device_source": prices.device_source,
                   "device_hour_usd": dict(prices.device_hour)}}}


def render_report(results: RunResults, decision: Decision, *, spec: TaskSpec | Mapping[str, Any],
                  test_examples: Sequence[Any] | None, prices: Prices | None = None, out_dir: Path | str,
                  data_note: str | None = None) -> ReportPaths:
    """Write ``report.html``, ``report.md``, ``decision.json`` and ``edge_cases.md`` into ``out_dir``.

    ``decision`` is :func:`~tunewise.decision.decide` of these results, made by the caller with the same
    ``prices`` (:func:`~tunewise.costs.default_prices` when None), which ``decision.json`` and the reproducibility record name.
    ``test_examples`` (the test split's :class:`~tunewise.data.Example` objects) lets the edge cases
    quote inputs and score flips; None renders without them and says so (``data_note`` says why).
    """
    prices = prices or default_prices()
    edge = edge_cases_markdown(results, test_examples, decision, data_note=data_note)
    repro = reproducibility(results, spec, prices)
    figures = build_figures(results, decision, target=_target(decision, spec))
    page = render_html(results, decision, figures=figures, edge_cases_md=edge, repro=repro)
    text = report_markdown(results, decision, edge_cases_md=edge, repro=repro)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths(out / "report.html", out / "report.md", out / "decision.json", out / "edge_cases.md")
    paths.html.write_text(page, encoding="utf-8")
    paths.markdown.write_text(text, encoding="utf-8")
    paths.edge_cases.write_text(edge, encoding="utf-8")
    write_json(paths.json, decision_payload(results, decision, prices))
    return paths
