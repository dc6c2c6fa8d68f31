"""``report.html``: one self-contained page (inline CSS and SVG, no script, no external URL).

Top to bottom: the verdict (winner, status, key numbers, next step, reasons), the ranked options
table, how the ladder was climbed (the policy's steps and what early rejection saved), the Pareto plot, learning curves with their forecasts, per-label results, latency, data
checks, the edge cases and a reproducibility record. Every piece of data text is HTML-escaped
(inputs are users' data); a Content-Security-Policy forbids scripts and any network access, so the
page works offline and stays inert even if something slipped through.

Pure: strings in, a string out. Out of scope: computing anything (``decision.py``, ``plots.py``,
``edge_cases.py``) and writing the file (``__init__.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from html import escape
from typing import Any

from ..decision import Decision
from ..formats import models_words, pct
from ..results import RunResults
from .edge_cases import best_rung
from .markup import markdown_to_html, shift_headings
from .sections import (
    answer_notes,
    curve_texts,
    data_lines,
    ladder_text,
    latency_notes,
    ms,
    option_rows,
    other_rungs,
    status_tone,
    usd,
)

__all__ = ["Figures", "render_html"]


@dataclass(frozen=True)
class Figures:
    """Inline SVG strings (None: nothing to draw)."""

    pareto: str | None = None
    curves: str | None = None
    per_label: str | None = None
    latency: str | None = None


_CSS = """
:root{--ink:#111827;--muted:#6b7280;--line:#e5e7eb;--bg:#f5f7fa;--card:#fff;--ok:#15803d;--warn:#b45309;
--bad:#b91c1c;--info:#1d4ed8;--accent:#2563eb}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--ink);
font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1100px;margin:0 auto;padding:28px 22px 64px}
header .eyebrow{margin:0;color:var(--accent);font-weight:600;font-size:.78rem;letter-spacing:.08em;
text-transform:uppercase}
h1{font-size:1.65rem;line-height:1.25;margin:4px 0 6px}
h2{font-size:1.2rem;margin:0 0 12px}
h3{font-size:1rem;margin:18px 0 8px}
h4{font-size:.95rem;margin:14px 0 6px}
.sub{color:var(--muted);font-size:.9rem;margin:0}
section{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:20px 24px;margin:18px 0;
box-shadow:0 1px 2px rgba(17,24,39,.04)}
.verdict{border-left:6px solid var(--tone)}
.verdict.ok{--tone:var(--ok)}.verdict.warn{--tone:var(--warn)}.verdict.bad{--tone:var(--bad)}
.verdict.info{--tone:var(--info)}
.verdict .line{display:flex;flex-wrap:wrap;align-items:baseline;gap:10px 14px}
.verdict .lead{color:var(--muted);font-size:.95rem}
.verdict .winner{font-size:2rem;font-weight:700;letter-spacing:-.01em;word-break:break-word}
.badge{display:inline-block;padding:3px 11px;border-radius:999px;font-size:.8rem;font-weight:600}
.badge.ok{background:#dcfce7;color:#166534}.badge.warn{background:#fef3c7;color:#92400e}
.badge.bad{background:#fee2e2;color:#991b1b}.badge.info{background:#dbeafe;color:#1e40af}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(180px,1fr));gap:12px;margin:16px 0}
.tile{background:var(--bg);border:1px solid var(--line);border-radius:10px;padding:10px 14px}
.tile .k{color:var(--muted);font-size:.74rem;text-transform:uppercase;letter-spacing:.05em}
.tile .v{font-size:1.15rem;font-weight:650;font-variant-numeric:tabular-nums}
.tile .s{color:var(--muted);font-size:.8rem}
.next{background:#eff6ff;border:1px solid #dbeafe;border-radius:10px;padding:12px 16px;margin:12px 0;font-size:1.02rem}
.reasons{margin:6px 0 0;padding-left:20px}.reasons li{margin:3px 0}
nav.toc{display:flex;flex-wrap:wrap;gap:6px 8px;margin:4px 0 0;font-size:.88rem}
nav.toc a{color:var(--accent);text-decoration:none;background:var(--card);border:1px solid var(--line);
border-radius:999px;padding:3px 12px}
nav.toc a:hover{border-color:var(--accent)}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.87rem;font-variant-numeric:tabular-nums}
th,td{padding:7px 9px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{background:#f3f4f6;font-weight:600}
td.why{min-width:220px}
td.num{text-align:right;white-space:nowrap}
tr.win td{background:#fffbeb}
.yes{color:var(--ok);font-weight:600}.viol{color:var(--bad);font-size:.82rem}.no{color:var(--bad);font-weight:600}
.partial{color:var(--warn);font-weight:600}
.tag{display:inline-block;font-size:.72rem;font-weight:600;border-radius:6px;padding:0 6px;margin-left:4px;
background:#f3f4f6;color:#374151}
.tag.win{background:#fde68a;color:#78350f}
.plot{display:block;width:100%;height:auto;max-width:860px;margin:6px auto}
.caption{color:var(--muted);font-size:.86rem;margin:8px 0 0}
.note{color:var(--muted)}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.86em;background:#f3f4f6;
padding:1px 5px;border-radius:4px;word-break:break-all}
.md blockquote{border-left:4px solid #fcd34d;background:#fffbeb;margin:10px 0;padding:8px 14px}
.md ul{padding-left:20px}.md li{margin:4px 0}
.md table{margin:6px 0 14px}
details summary{cursor:pointer;color:var(--accent)}
dl.repro{display:grid;grid-template-columns:max-content 1fr;gap:6px 18px;margin:0;font-size:.9rem}
dl.repro dt{color:var(--muted)}dl.repro dd{margin:0;word-break:break-word}
footer{color:var(--muted);font-size:.82rem;text-align:center;margin-top:28px}
@media (max-width:640px){main{padding:16px 10px 40px}section{padding:14px}.verdict .winner{font-size:1.5rem}
dl.repro{grid-template-columns:1fr}}
@media print{body{background:#fff}section{box-shadow:none;break-inside:avoid}nav.toc{display:none}}
"""

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"


def _tiles(decision: Decision) -> str:
    win = best_rung(decision)
    if win is None:
        return ""
    tiles = [(win.metric, f"{pct(win.quality)}%", f"95% CI [{pct(win.low)}, {pct(win.high)}], n = {win.n:,}"),
             ("cost per 1,000 requests", usd(win.per_1k_usd), ""),
             ("latency p50 / p95", f"{ms(win.latency_p50_ms)} / {ms(win.latency_p95_ms)} ms", ""),
             ("one-off cost", usd(win.one_off_usd, floor=0.01), "")]
    if win.monthly_usd is not None:
        tiles.append(("per month at stated volume", usd(win.monthly_usd), ""))
    return '<div class="tiles">' + "".join(
        f'<div class="tile"><div class="k">{escape(k)}</div><div class="v">{escape(v)}</div>'
        + (f'<div class="s">{escape(small)}</div>' if small else "") + "</div>" for k, v, small in tiles) + "</div>"


def _verdict(decision: Decision) -> str:
    tone = status_tone(decision.status)
    best = best_rung(decision)
    head = (f'<span class="lead">Ship</span> <span class="winner">{escape(decision.winner)}</span>'
            if decision.winner else '<span class="winner">No option to ship</span>')
    runner = (f'<span class="lead">runner-up {escape(decision.runner_up)}</span>' if decision.runner_up else
              f'<span class="lead">best quality: {escape(best.name)} (shown below)</span>'
              if best is not None and not decision.winner else "")
    reasons = "".join(f"<li>{escape(r)}</li>" for r in decision.reasons)
    return (f'<section class="verdict {tone}" id="verdict" aria-labelledby="verdict-h">'
            f'<h2 id="verdict-h">Verdict</h2>'
            f'<div class="line">{head} <span class="badge {tone}">{escape(decision.status)}</span> {runner}</div>'
            f"{_tiles(decision)}"
            f'<p class="next"><strong>Next step.</strong> {escape(decision.next_step)}</p>'
            f'<h3>Why</h3><ul class="reasons">{reasons}</ul></section>')


def _target_cell(text: str) -> str:
    cls = {"with confidence": "yes", "point estimate only": "partial", "no": "no"}.get(text, "")
    return f'<span class="{cls}">{escape(text)}</span>' if cls else escape(text)


def _options(results: RunResults, decision: Decision) -> str:
    rows = []
    for r in option_rows(decision):
        tags = ('<span class="tag win">winner</span>' if r.winner else "") + (
            '<span class="tag">Pareto</span>' if r.pareto else "")
        cons = ('<span class="yes">yes</span>' if r.meets_constraints
                else f'<span class="viol">{escape(r.constraints)}</span>')
        rows.append(
            f'<tr class="{"win" if r.winner else ""}"><td class="num">{r.rank}</td><td><strong>{escape(r.name)}'
            f"</strong>{tags}</td><td>{escape(r.kind)}</td><td class=\"num\">{escape(r.quality)}</td>"
            f'<td class="num" title="{escape(r.cost_basis)}">{escape(r.per_1k)}</td>'
            f'<td class="num">{escape(r.latency)}</td>'
            f'<td class="num" title="{escape(r.one_off_basis)}">{escape(r.one_off)}</td>'
            f'<td>{_target_cell(r.target)}</td><td class="why">{cons}</td></tr>')
    metric = decision.options[0].metric if decision.options else "quality"
    table = ('<div class="scroll"><table><thead><tr><th>#</th><th>rung</th><th>kind</th>'
             f"<th>{escape(metric)} % [95% CI]</th><th>cost / 1k requests</th><th>latency ms p50 / p95</th>"
             "<th>one-off cost</th><th>meets target</th><th>meets constraints</th></tr></thead><tbody>"
             + "".join(rows) + "</tbody></table></div>")
    others = other_rungs(results, decision)
    extra = ("<p class=\"caption\">Not ranked: " + "; ".join(
        f"{escape(n)} ({escape(s)}: {escape(w)})" for n, s, w in others) + ".</p>") if others else ""
    extra += "".join(f'<p class="caption">{escape(note)}</p>' for note in latency_notes(results, decision))
    extra += "".join(f'<p class="caption warn">{escape(note)}</p>' for note in answer_notes(results))
    bases = "".join(f"<li><strong>{escape(r.name)}</strong>: {escape(r.cost_basis)}; one-off: {escape(r.one_off_basis)}"
                    "</li>" for r in option_rows(decision))
    return ('<section id="options"><h2>Options, ranked</h2>'
            + (table if rows else '<p class="note">No rung finished with a score.</p>') + extra
            + '<p class="caption">Rank: meets the target with confidence, then on the point estimate, then best '
              "quality; cheapest first within a tier. Costs come from measured usage times the price table.</p>"
            + (f"<details><summary>How each cost was computed</summary><ul>{bases}</ul></details>" if bases else "")
            + "</section>")


def _figure_section(anchor: str, title: str, svg: str | None, caption: str, empty: str) -> str:
    body = svg if svg else f'<p class="note">{escape(empty)}</p>'
    cap = f'<p class="caption">{escape(caption)}</p>' if svg and caption else ""
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>{body}{cap}</section>'


def _curves(results: RunResults, svg: str | None) -> str:
    texts = curve_texts(results)
    if not texts and not svg:
        return _figure_section("curves", "Learning curves", None, "", "No learning curve in this run; add the "
                               "learning_curve rung to forecast how many labelled examples the target needs.")
    parts = "".join(f"<h3>{escape(t.rung)} <span class=\"tag\">{escape(t.of)}</span></h3><ul>"
                    + "".join(f"<li>{escape(line)}</li>" for line in t.lines) + "</ul>" for t in texts)
    cap = ('<p class="caption">Points: measured test score with its 95% CI. Line and band: the fitted inverse '
           "power law and its 95% parametric-bootstrap band; dotted line: the forecast number of examples. "
           "Beyond the largest measured size the curve is an extrapolation.</p>")
    return f'<section id="curves"><h2>Learning curves</h2>{svg or ""}{cap if svg else ""}{parts}</section>'


def _ladder(results: RunResults) -> str:
    text = ladder_text(results.ladder)
    if text is None:
        return ('<section id="ladder"><h2>How the ladder was climbed</h2><p class="note">The rungs were named, so '
                "they ran as a fixed list without the ladder policy.</p></section>")
    steps = "".join(f"<li><strong>{escape(verb)}{' ' + escape(rung) if rung else ''}</strong>: {escape(reason)}.</li>"
                    for verb, rung, reason in text.steps)
    saved = f"<p>{escape(text.saved)}</p>" if text.saved else ""
    return (f'<section id="ladder"><h2>How the ladder was climbed</h2><p>{escape(text.budget)}</p>'
            f"<ol>{steps}</ol>{saved}</section>")


def _data(results: RunResults) -> str:
    items = "".join(f"<li>{escape(line)}</li>" for line in data_lines(results))
    return f'<section id="data"><h2>Data checks</h2><ul>{items}</ul></section>'


def _repro(rows: list[tuple[str, str]]) -> str:
    items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in rows)
    return f'<section id="reproducibility"><h2>Reproducibility</h2><dl class="repro">{items}</dl></section>'


_TOC = (("options", "Options"), ("ladder", "Ladder"), ("pareto", "Cost vs quality"), ("curves", "Learning curves"),
        ("per-label", "Per label"), ("latency", "Latency"), ("data", "Data"), ("edge-cases", "Edge cases"),
        ("reproducibility", "Reproducibility"))


def _models_html(task: Mapping[str, Any]) -> str:
    """``model <code>id</code>``, or ``models <code>a</code>, <code>b</code>``, from :func:`models_words`."""
    words = escape(models_words(task))
    parts = words.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def render_html(results: RunResults, decision: Decision, *, figures: Figures, edge_cases_md: str,
                repro: list[tuple[str, str]]) -> str:
    """The whole page (see the module docstring)."""
    task = results.task or {}
    name = str(task.get("name") or "task")
    run_id = str(results.run_id or "")
    n = decision.options[0].n if decision.options else (results.data or {}).get("sizes", {}).get("test")
    unpriced = [o.name for o in decision.options if o.per_1k_usd is None]
    best = best_rung(decision)
    body = [
        '<header><p class="eyebrow">tunewise report</p>'
        f"<h1>{escape(name)}: prompt-engineer or fine-tune?</h1>"
        f'<p class="sub">run <code>{escape(run_id)}</code> · {escape(str(task.get("kind") or ""))} · '
        f'{_models_html(task)} · {escape(str(n))} test examples · '
        f'{escape(str(results.created_at or ""))}</p></header>',
        _verdict(decision),
        '<nav class="toc" aria-label="Sections">' + "".join(f'<a href="#{a}">{escape(t)}</a>' for a, t in _TOC)
        + "</nav>",
        _options(results, decision),
        _ladder(results),
        _figure_section("pareto", "Cost against quality", figures.pareto,
                        "Each option's quality with its 95% CI against its cost per 1,000 requests. Circled: the "
                        "Pareto frontier over quality, cost and p95 latency (a frontier point can look dominated "
                        "here when it is faster). Dashed: the target."
                        + (f" Not shown (unpriced): {', '.join(unpriced)}." if unpriced else ""),
                        "No option could be priced, so there is no cost-quality plot."),
        _curves(results, figures.curves),
        _figure_section("per-label", f"Per-label results{f': {best.name}' if best else ''}", figures.per_label,
                        "F1 per label on the test split; n is the number of test examples with that label.",
                        "No per-label scores in this run (they exist for classification only)."),
        _figure_section("latency", "Latency", figures.latency,
                        "Wall time of the model call that served each request, as measured when it was made (a "
                        "batched call's requests all wait for it). Each dot is one test request.",
                        "No per-request latencies were recorded."),
        _data(results),
        f'<section id="edge-cases" class="md">{markdown_to_html(shift_headings(edge_cases_md, 1))}</section>',
        _repro(repro),
        "<footer>Generated by tunewise from results.json. Self-contained: no scripts, no external resources."
        "</footer>",
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
            f"<title>{escape(name)}: tunewise report {escape(run_id)}</title>\n<style>{_CSS}</style>\n</head>\n"
            "<body>\n<main>\n" + "\n".join(body) + "\n</main>\n</body>\n</html>\n")
