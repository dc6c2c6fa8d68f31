"""The report's content as formatted values, shared by the HTML page and the Markdown file.

The ranked options table, the rungs that produced no option, the learning-curve forecasts, the
data checks and the reproducibility record: each a function from the run's typed results
(:class:`~tunewise.results.RunResults`, and the decision) to plain strings. Escaping is the renderer's job: nothing here is HTML or Markdown.

Out of scope: choosing the winner (``decision.py``) and layout (``html.py``, ``markdown.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import __version__
from ..costs import Prices
from ..decision import Decision, Option
from ..formats import backend_words, hub_sources, models_words, pct
from ..results import LadderRecord, RunResults
from ..task import TaskSpec

__all__ = ["OptionRow", "option_rows", "other_rungs", "latency_notes", "answer_notes", "CurveText", "curve_texts", "data_lines",
           "reproducibility", "status_tone", "usd", "ms", "quality", "LadderText", "ladder_text"]


def usd(x: float | None, *, floor: float | None = None) -> str:
    """$1,234.50, $0.12, $0.0034 (two significant digits below ten cents), ``< $0.01`` below ``floor``, or
    ``unpriced``."""
    if x is None:
        return "unpriced"
    if floor is not None and 0 < x < floor:
        return f"< ${floor:g}"
    if x == 0 or x >= 0.1:
        return f"${x:,.2f}"
    return f"${x:.{1 - math.floor(math.log10(x))}f}"


def ms(x: float | None) -> str:
    return "–" if x is None else f"{x:,.0f}"


def quality(o: Option) -> str:
    return f"{pct(o.quality)} [{pct(o.low)}, {pct(o.high)}]"


def status_tone(status: str) -> str:
    """ok | warn | bad | info: how the verdict's status should look."""
    return {"target met with confidence": "ok", "target met on the point estimate only": "warn",
            "no target set": "info"}.get(status, "bad")


@dataclass(frozen=True)
class OptionRow:
    rank: int
    name: str
    kind: str
    quality: str
    per_1k: str
    latency: str  # p50 / p95 ms
    one_off: str
    target: str
    constraints: str  # "yes" or the violations
    meets_constraints: bool
    winner: bool
    pareto: bool
    cost_basis: str
    one_off_basis: str


_KIND = {"no_llm": "no LLM", "prompt": "prompting", "tuned": "fine-tuned"}


def option_rows(decision: Decision) -> list[OptionRow]:
    return [OptionRow(
        rank=i, name=o.name, kind=_KIND.get(o.kind, o.kind), quality=quality(o), per_1k=usd(o.per_1k_usd),
        latency=f"{ms(o.latency_p50_ms)} / {ms(o.latency_p95_ms)}", one_off=usd(o.one_off_usd, floor=0.01),
        target=o.meets_target, constraints="yes" if o.meets_constraints else "; ".join(o.violations),
        meets_constraints=o.meets_constraints, winner=o.name == decision.winner, pareto=o.name in decision.pareto,
        cost_basis=o.cost_basis, one_off_basis=o.one_off_basis) for i, o in enumerate(decision.options, 1)]


def other_rungs(results: RunResults, decision: Decision) -> list[tuple[str, str, str]]:
    """(name, status, why) for every rung that is not an option: failed, skipped, or unscored."""
    ranked = {o.name for o in decision.options}
    return [(r.name, r.status, r.error or r.reason or "no score on the metric")
            for r in results.rungs if r.name not in ranked]


@dataclass(frozen=True)
class CurveText:
    rung: str
    of: str
    lines: tuple[str, ...]


def latency_notes(results: RunResults, decision: Decision) -> list[str]:
    """Why a ranked option's latency can read 0 ms: requests it answered without calling the model."""
    ranked = {o.name for o in decision.options}
    notes = []
    for r in results.rungs:
        usage = r.usage or {}
        skipped, n = usage.get("without_model_call"), usage.get("requests")
        if r.name not in ranked or not skipped or not n:
            continue
        called = usage.get("called_request_latency_s") or {}
        tail = (f"; the {n - skipped} that called it: p50 {ms(1000 * called['p50'])} ms, p95 "
                f"{ms(1000 * called['p95'])} ms" if n > skipped and math.isfinite(called.get("p50", math.nan)) else "")
        notes.append(f"{r.name}: {skipped} of {n} requests ({100 * skipped / n:.0f}%) were answered without a "
                     f"model call (one candidate label left, e.g. every retrieved demonstration had the same "
                     f"label), at 0 ms{tail}.")
    return notes


def answer_notes(results: RunResults) -> list[str]:
    """Rungs whose answers were mostly cut off at the token budget or unparseable: their score measures that,
    not the model (said whenever it is true of more than half of a rung's answers)."""
    notes = []
    for r in results.rungs:
        n = len(r.predictions)
        if not n:
            continue
        truncated = int((r.usage or {}).get("truncated") or 0)
        unparsed = int((r.parse or {}).get("unparsed") or 0)
        budget = r.config.get("max_new_tokens")
        if 2 * truncated > n:
            notes.append(f"{r.name}: {truncated} of {n} answers were cut off at the {budget}-token answer budget "
                         "(finish reason 'length'); raise max_new_tokens for the rung before trusting its score.")
        if 2 * unparsed > n:
            notes.append(f"{r.name}: {unparsed} of {n} answers could not be parsed into an answer.")
    return notes


def curve_texts(results: RunResults) -> list[CurveText]:
    """The forecast, fit and back-test sentences of every learning-curve rung."""
    out = []
    for r in results.rungs:
        curve = (r.extras or {}).get("curve") if r.status == "finished" else None
        if not curve:
            continue
        lines = []
        f = curve.get("forecast") or {}
        if f.get("message"):
            lines.append(f"Forecast: {f['message']}")
        fit = curve.get("fit") or {}
        a, ci = (fit.get("params") or {}).get("a"), (fit.get("params_ci") or {}).get("a") or [None, None]
        if a is not None:
            lines.append(f"Fitted ceiling {pct(a)}% [{pct(ci[0])}, {pct(ci[1])}] ({curve.get('model') or 'fit'}).")
        back = curve.get("backtest")
        if back:
            band = back.get("forecast_band") or [None, None]
            measured = back.get("measured_ci") or [None, None]
            lines.append(f"Back-test: fitted on n = {back.get('fitted_on')}, the curve forecast "
                         f"{pct(back.get('forecast'))}% [{pct(band[0])}, {pct(band[1])}] at n = {back.get('n')}; "
                         f"measured {pct(back.get('measured'))}% [{pct(measured[0])}, {pct(measured[1])}].")
        lines += [f"Warning: {w}" for w in curve.get("warnings") or []]
        out.append(CurveText(r.name, str(curve.get("of") or "finetune"), tuple(lines)))
    return out


def data_lines(results: RunResults) -> list[str]:
    c, d = results.checks or {}, results.data or {}
    sizes = d.get("sizes") or {}
    lines = [f"Data hash {d.get('hash', '?')}; train {sizes.get('train', '?')}, dev {sizes.get('dev', '?')}, "
             f"test {sizes.get('test', '?')} examples."]
    lines += [f"{name} split: {d[key]}." for name, key in (("Dev", "dev_origin"), ("Test", "test_origin"))
              if d.get(key)]
    lines += [f"Data {role}: {where}." for role, where in hub_sources(d)]
    if c.get("volume_assessment"):
        lines.append(f"Volume: {c['volume_assessment']}")
    lines.append(f"Leakage train/test: {c.get('leakage_exact', 0)} exact, {c.get('leakage_near', 0)} near-duplicate.")
    dups = c.get("exact_duplicates") or {}
    if dups:
        lines.append("Exact duplicates: " + ", ".join(f"{k} {v}" for k, v in dups.items()) + ".")
    if c.get("imbalance_ratio") is not None:
        lines.append(f"Labels: min {c.get('min_per_label')} training examples per label, imbalance ratio "
                     f"{c['imbalance_ratio']:.1f}.")
    lines += [f"Warning: {w}" for w in c.get("warnings") or []]
    for leak in (c.get("leakage_examples") or [])[:3]:
        lines.append(f"Leak: test \"{' '.join(str(leak.get('test')).split())}\" ~ train "
                     f"\"{' '.join(str(leak.get('train')).split())}\" (similarity {leak.get('similarity', 1.0):.2f}).")
    return lines


def reproducibility(results: RunResults, spec: TaskSpec | Mapping[str, Any],
                    prices: Prices) -> list[tuple[str, str]]:
    """(what, value) pairs: everything needed to know what made these numbers."""
    task = results.task or {}
    env = results.environment or {}
    run_id = str(results.run_id or "")
    rungs = results.rungs
    spec_hash = (spec.fingerprint() if isinstance(spec, TaskSpec)
                 else f"{run_id.split('-')[0]} (prefix, from the run id)")
    seeds = sorted({str(s) for r in rungs if (s := (r.config or {}).get("seed")) is not None})
    versions = ", ".join(f"{k} {v}" for k, v in (env.get("versions") or {}).items() if v)
    backend = backend_words(env.get("backend") or {})
    hashes = ", ".join(f"{r.name} {r.config_hash}" for r in rungs if r.config_hash)
    rows = [("run id", run_id), ("created", str(results.created_at or "?")),
            ("status", str(results.status or "?")),
            ("task", f"{task.get('name')} ({task.get('kind')}), {models_words(task).replace('`', '')}"),
            ("task spec hash", spec_hash), ("data hash", str((results.data or {}).get("hash") or "?")),
            ("seeds", f"run {results.seed}" + (f"; rungs {', '.join(seeds)}" if seeds else "")),
            ("rung config hashes", hashes or "–"),
            ("environment", f"Python {env.get('python')}, {env.get('platform')}, {env.get('cpu_count')} CPUs"),
            ("package versions", versions or "–")]
    if backend:
        rows.append(("backend", backend))
    rows += [("prices", prices.sources_words()),
             ("report", f"tunewise {__version__}; the decision is recomputed from results.json by "
                        "tunewise.decision.decide, no model is run")]
    return rows


_VERB = {"run": "ran", "stop": "stopped", "escalate": "escalated", "skip": "skipped", "reject": "rejected early",
         "note": "note"}


@dataclass(frozen=True)
class LadderText:
    budget: str
    steps: tuple[tuple[str, str, str], ...]  # (verb, rung or "", reason)
    saved: str | None


def ladder_text(ladder: LadderRecord | None) -> LadderText | None:
    """The policy's walk in words (None for a fixed list of rungs): budget, one step per action, early-rejection savings."""
    if ladder is None or ladder.mode != "policy":
        return None
    budget = ladder.budget
    limits = []
    if budget is not None and budget.hours is not None:
        limits.append(f"budget_hours {budget.hours:g}")
    if budget is not None and budget.usd is not None:
        limits.append(f"budget_usd {budget.usd:g}")
    if budget is not None and budget.tuning_hours_default is not None:
        limits.append(f"tuning rungs {budget.tuning_hours_default:g} h by default")
    spent_s, spent_usd = (budget.spent_s, budget.spent_usd) if budget is not None else (None, None)
    head = (f"Budget: {', '.join(limits) or 'none'}; measured "
            f"{'–' if spent_s is None else f'{spent_s:.0f}'} s, {'–' if spent_usd is None else f'${spent_usd:.4f}'}.")
    steps = tuple((_VERB.get(a.kind, str(a.kind)), str(a.rung or "") if a.kind != "stop" else "",
                   str(a.reason or "").rstrip(".")) for a in ladder.actions)
    saved = ladder.early_rejection
    text = None
    if saved is not None and saved.rungs:
        text = (f"Early rejection dropped {', '.join(saved.rungs)}, saving about {saved.saved_calls:,.0f} "
                f"model calls and {saved.saved_s:,.1f} s of model time against scoring them on the whole "
                "test split.")
    return LadderText(head, steps, text)
