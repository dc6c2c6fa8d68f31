"""``report.md``: the verdict, the ranked options, the forecasts, the edge cases and the record.

The same content as ``report.html`` without the figures, for reading in a terminal, a pull
request or a notebook. Pure. Data text goes through :func:`~tunewise.report.markup.md_escape`.
"""

from __future__ import annotations

from ..decision import Decision
from ..formats import models_words
from ..results import RunResults
from .markup import md_escape, shift_headings
from .sections import answer_notes, curve_texts, data_lines, ladder_text, latency_notes, option_rows, other_rungs

__all__ = ["report_markdown"]


def _verdict(decision: Decision) -> list[str]:
    head = f"**Ship {md_escape(decision.winner)}**" if decision.winner else "**No option to ship**"
    runner = f" Runner-up: {md_escape(decision.runner_up)}." if decision.runner_up else ""
    return ["## Verdict", "", f"{head}: {md_escape(decision.status)}.{runner}", "",
            f"**Next step.** {md_escape(decision.next_step)}", "", "Why:", "",
            *[f"- {md_escape(r)}" for r in decision.reasons], ""]


def _options(results: RunResults, decision: Decision) -> list[str]:
    metric = decision.options[0].metric if decision.options else "quality"
    lines = ["## Options, ranked", "",
             f"| # | rung | kind | {metric} % [95% CI] | cost / 1k requests | latency ms p50 / p95 | one-off "
             "| meets target | meets constraints |", "|---|---|---|---|---|---|---|---|---|"]
    for r in option_rows(decision):
        name = md_escape(r.name) + (" (winner)" if r.winner else "") + (" (Pareto)" if r.pareto else "")
        lines.append(f"| {r.rank} | {name} | {r.kind} | {r.quality} | {r.per_1k} | {r.latency} | {r.one_off} "
                     f"| {r.target} | {md_escape(r.constraints)} |")
    others = other_rungs(results, decision)
    if others:
        lines += ["", "Not ranked: " + "; ".join(f"{md_escape(n)} ({s}: {md_escape(w)})" for n, s, w in others) + "."]
    notes = [*latency_notes(results, decision), *answer_notes(results)]
    lines += [line for note in notes for line in ("", md_escape(note))]
    return lines + [""]


def _forecasts(results: RunResults) -> list[str]:
    texts = curve_texts(results)
    if not texts:
        return ["## Learning-curve forecasts", "", "No learning curve in this run.", ""]
    lines = ["## Learning-curve forecasts", ""]
    for t in texts:
        lines += [f"### {md_escape(t.rung)} ({md_escape(t.of)})", "", *[f"- {md_escape(line)}" for line in t.lines], ""]
    return lines


def _ladder(results: RunResults) -> list[str]:
    text = ladder_text(results.ladder)
    if text is None:
        return []
    lines = ["## How the ladder was climbed", "", md_escape(text.budget), ""]
    lines += [f"{i}. **{verb}{' ' + md_escape(rung) if rung else ''}**: {md_escape(reason)}."
              for i, (verb, rung, reason) in enumerate(text.steps, 1)]
    return lines + ([""] + [md_escape(text.saved)] if text.saved else []) + [""]


def report_markdown(results: RunResults, decision: Decision, *, edge_cases_md: str,
                    repro: list[tuple[str, str]]) -> str:
    task = results.task or {}
    lines = [f"# tunewise report: {md_escape(task.get('name') or 'task')} (run `{results.run_id}`)", "",
             f"Kind {task.get('kind')}, {models_words(task)}, created {results.created_at}.", "",
             *_verdict(decision), *_options(results, decision), *_ladder(results), *_forecasts(results),
             "## Data checks", "", *[f"- {md_escape(line)}" for line in data_lines(results)], "",
             shift_headings(edge_cases_md, 1), "",
             "## Reproducibility", "", *[f"- {k}: {md_escape(v)}" for k, v in repro], ""]
    return "\n".join(lines)
