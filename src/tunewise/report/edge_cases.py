"""The edge-case document: where the best candidate fails, and where prompting and tuning disagree.

Four sections, in Markdown, all from the run's typed results (:class:`~tunewise.results.RunResults`), the
test examples and the decision:

1. the worst labels of the best rung (the winner, else the best quality) and its most confused
   pairs, each with one quoted input;
2. flips between the best prompt rung and the best tuned rung on the same test examples (prompt
   right -> tuned wrong, and wrong -> right), counted by gold label and by input length, with
   quoted examples;
3. instability of prompt rungs: the variants a rung with ``stability: n`` scored (re-drawn and
   re-ordered demonstrations on one test subset, measured by ``ladder/attempt.py``), and rungs whose
   configurations differ only in their seed, with the spread of their scores and quoted inputs
   on which the variants disagree.

Pure: no I/O. Inputs are users' data, so every quoted text goes through :func:`md_escape` and is
truncated. Out of scope: rendering (``html.py``) and any new statistics (the paired tests live in
``evaluation.stats`` and the decision).
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..decision import Decision, Option
from ..evaluation.scoring import per_example_correct
from ..formats import pct
from ..results import RungResult, RunResults
from .markup import md_escape

__all__ = ["edge_cases_markdown", "best_rung", "length_bucket", "LENGTH_BUCKETS", "repeated_prompt_groups"]

#: input-length buckets in whitespace-separated words (a rough token count): (label, low, high)
LENGTH_BUCKETS: tuple[tuple[str, int, float], ...] = (
    ("1-5 words", 0, 5), ("6-10 words", 6, 10), ("11-20 words", 11, 20), ("21-40 words", 21, 40),
    ("41+ words", 41, float("inf")))
QUOTE_CHARS = 160  # quoted inputs are cut to this many characters
_MAX_QUOTES = 5
_MAX_ROWS = 12
# config keys that may differ between repeats of one prompt rung (the seed draws the demonstrations)
_REPEAT_KEYS = frozenset({"seed", "order_seed", "stability", "demonstrations", "calibration"})


def length_bucket(text: str) -> str:
    words = len(text.split())
    return next(label for label, low, high in LENGTH_BUCKETS if low <= words <= high)


def _shown(output: Any) -> str:
    if output is None:
        return "(unparsed)"
    text = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False, sort_keys=True)
    return md_escape(text, limit=60) or "(empty)"


def _quote(text: str) -> str:
    return f"\"{md_escape(text, limit=QUOTE_CHARS)}\""


def best_rung(decision: Decision, *, kind: str | None = None) -> Option | None:
    """The winner; without one, the best-quality option (of ``kind`` when given: prompt, tuned, no_llm)."""
    options = [o for o in decision.options if kind is None or o.kind == kind]
    if kind is None and decision.winner is not None:
        return next(o for o in options if o.name == decision.winner)
    return max(options, key=lambda o: (o.quality, -decision.options.index(o)), default=None)


@dataclass(frozen=True)
class _Data:
    kind: str
    match: str
    examples: Mapping[str, Any]  # example id -> Example (text, target); empty when not loaded
    note: str | None


# ---------------------------------------------------------------- 1. worst labels and confusions


def _worst_labels(rung: RungResult) -> list[str]:
    per_label = rung.per_label or {}
    rows = sorted(((name, s) for name, s in per_label.items() if (s.get("support") or 0) > 0),
                  key=lambda x: (x[1].get("f1") or 0.0, -(x[1].get("support") or 0), x[0]))
    if not rows:
        return ["No per-label scores in this run (they exist for classification only).", ""]
    lines = [f"Lowest F1 of {len(rows)} labels with test examples:", "",
             "| label | F1 % | precision % | recall % | test examples |", "|---|---|---|---|---|"]
    for name, s in rows[:8]:
        lines.append(f"| {md_escape(name)} | {pct(s.get('f1'))} | {pct(s.get('precision'))} "
                     f"| {pct(s.get('recall'))} | {s.get('support')} |")
    return lines + [""]


def _confusions(rung: RungResult, data: _Data) -> list[str]:
    pairs = (rung.confusions or [])[:8]
    if not pairs:
        return ["No confusions recorded for this rung.", ""]
    counts = {(c["gold"], c["predicted"]): c["count"] for c in rung.confusions or []}
    preds = rung.predictions
    lines = ["Most frequent confusions (gold -> predicted), with one test input each:", ""]
    for c in pairs:
        back = counts.get((c["predicted"], c["gold"]))
        line = (f"- **{md_escape(c['gold'])}** -> **{md_escape(c['predicted'])}**: {c['count']}"
                + (f" (and {back} the other way)" if back else ""))
        example = next((data.examples[p.example_id] for p in preds if p.output == c["predicted"]
                        and p.example_id in data.examples
                        and data.examples[p.example_id].target == c["gold"]), None)
        lines.append(line + (f": {_quote(example.text)}" if example is not None else ""))
    return lines + [""]


# ---------------------------------------------------------------- 2. flips between prompting and tuning


@dataclass(frozen=True)
class _Flip:
    example: Any
    prompt_output: Any
    other_output: Any
    prompt_right: bool
    other_right: bool


def _paired(prompt: RungResult, other: RungResult, data: _Data) -> list[_Flip]:
    a = {p.example_id: p.output for p in prompt.predictions}
    b = {p.example_id: p.output for p in other.predictions}
    ids = [i for i in data.examples if i in a and i in b]  # test order
    if not ids:
        return []
    golds = [data.examples[i].target for i in ids]
    right_a = per_example_correct(data.kind, golds, [a[i] for i in ids], match=data.match)
    right_b = per_example_correct(data.kind, golds, [b[i] for i in ids], match=data.match)
    return [_Flip(data.examples[i], a[i], b[i], bool(ra), bool(rb)) for i, ra, rb in zip(ids, right_a, right_b)]


def _flip_table(title: str, pairs: list[_Flip], key: Any, order: Sequence[str] | None) -> list[str]:
    tally: dict[str, Counter] = {}
    for f in pairs:
        tally.setdefault(key(f), Counter())[(f.prompt_right, f.other_right)] += 1
    rows = list(order) if order is not None else sorted(
        tally, key=lambda k: (-(tally[k][(True, False)] + tally[k][(False, True)]), k))
    rows = [r for r in rows if r in tally and (order is not None or tally[r][(True, False)] + tally[r][(False, True)])]
    lines = [f"By {title}:", "", f"| {title} | examples | both right | P right, T wrong | P wrong, T right "
             "| both wrong |", "|---|---|---|---|---|---|"]
    for r in rows[:_MAX_ROWS]:
        t = tally[r]
        lines.append(f"| {md_escape(r)} | {sum(t.values())} | {t[(True, True)]} | {t[(True, False)]} "
                     f"| {t[(False, True)]} | {t[(False, False)]} |")
    if len(rows) > _MAX_ROWS:
        lines.append(f"| ({len(rows) - _MAX_ROWS} more) | | | | | |")
    if not rows:
        lines.append("| (no flips) | | | | | |")
    return lines + [""]


def _flip_quotes(pairs: list[_Flip], prompt_right: bool, names: tuple[str, str]) -> list[str]:
    p, o = names
    chosen = [f for f in pairs if f.prompt_right == prompt_right and f.other_right != prompt_right]
    head = f"{p} right -> {o} wrong" if prompt_right else f"{p} wrong -> {o} right"
    if not chosen:
        return [f"{head}: none.", ""]
    lines = [f"{head} ({len(chosen)}; up to {_MAX_QUOTES} shown):", ""]
    for f in chosen[:_MAX_QUOTES]:
        lines.append(f"- {_quote(f.example.text)}: gold {_shown(f.example.target)}; {p} said "
                     f"{_shown(f.prompt_output)}, {o} said {_shown(f.other_output)}")
    return lines + [""]


def _flips(rungs: Mapping[str, RungResult], decision: Decision, data: _Data) -> list[str]:
    lines = ["## Prompting vs tuning: where they disagree", ""]
    prompt, other = best_rung(decision, kind="prompt"), best_rung(decision, kind="tuned")
    if prompt is not None and other is None:
        other = best_rung(decision, kind="no_llm")
        if other is not None:
            lines += [f"No fine-tuned rung finished; the best prompt rung is compared with the best rung without "
                      f"an LLM, {md_escape(other.name)}, instead.", ""]
    if prompt is None or other is None:
        return lines + ["This needs a finished prompt rung and a finished tuned rung; this run does not have both.", ""]
    names = (md_escape(prompt.name), md_escape(other.name))
    a, b = rungs[prompt.name], rungs[other.name]
    if not data.examples:
        outs = {p.example_id: p.output for p in b.predictions}
        differ = sum(1 for p in a.predictions if p.example_id in outs and p.output != outs[p.example_id])
        return lines + [f"{names[0]} and {names[1]} give different answers on {differ} test examples; without the "
                        "test inputs and their gold answers they cannot be scored as right or wrong.", ""]
    pairs = _paired(a, b, data)
    if not pairs:
        return lines + ["The predictions do not match the loaded test examples (no shared example ids).", ""]
    c = Counter((f.prompt_right, f.other_right) for f in pairs)
    role = "tuned rung" if other.kind == "tuned" else "rung without an LLM"
    lines += [f"Best prompt rung **{names[0]}** (P, {pct(prompt.quality)}% {prompt.metric}) against best {role} "
              f"**{names[1]}** (T, {pct(other.quality)}%), on the same {len(pairs)} test examples: both right "
              f"{c[(True, True)]}, P right -> T wrong {c[(True, False)]}, P wrong -> T right {c[(False, True)]}, "
              f"both wrong {c[(False, False)]}.", ""]
    if data.kind == "classification":
        lines += _flip_table("gold label", pairs, lambda f: str(f.example.target), None)
    else:
        lines += [f"Counts by label do not apply to {data.kind} tasks.", ""]
    lines += _flip_table("input length", pairs, lambda f: length_bucket(f.example.text),
                         [b[0] for b in LENGTH_BUCKETS])
    return lines + _flip_quotes(pairs, True, names) + _flip_quotes(pairs, False, names)


# ---------------------------------------------------------------- 3. prompt instability


def repeated_prompt_groups(rungs: Sequence[RungResult]) -> list[list[RungResult]]:
    """Finished prompt rungs whose configurations differ only in seed / demonstrations, two or more per group."""
    groups: dict[str, list[RungResult]] = {}
    for r in rungs:
        config = r.config or {}
        if r.status != "finished" or r.strategy != "prompt":
            continue
        key = json.dumps({k: v for k, v in config.items() if k not in _REPEAT_KEYS}, sort_keys=True, default=str)
        groups.setdefault(key, []).append(r)
    distinct = [g for g in groups.values() if len(g) >= 2 and len({
        json.dumps([(r.config or {}).get("seed"), (r.config or {}).get("demonstrations")],
                   sort_keys=True, default=str) for r in g}) >= 2]
    return distinct


def _same_answers(group: Sequence[RungResult]) -> float | None:
    maps = [{p.example_id: json.dumps(p.output, sort_keys=True) for p in r.predictions} for r in group]
    ids = set.intersection(*(set(m) for m in maps)) if maps else set()
    if not ids:
        return None
    return sum(len({m[i] for m in maps}) == 1 for i in ids) / len(ids)


def _measured_stability(rungs: Sequence[RungResult], data: _Data) -> list[str]:
    """Rungs that measured their own stability (``stability: n``): re-drawn and re-ordered demonstrations."""
    measured = [r for r in rungs if (r.extras or {}).get("stability")]
    if not measured:
        return []
    lines = ["| rung | status | subset | as scored % | re-drawn % | re-ordered % | spread, points | SD, points "
             "| 95% CI half-width on the subset, points | same answer on |", "|---|---|---|---|---|---|---|---|---|---|"]
    quotes: list[str] = []
    for r in measured:
        st = r.extras["stability"]
        rows = st.get("variants") or []
        n = int(st.get("subset") or 0)
        base = next((v for v in rows if v.get("variant") == "as scored"), None)
        drawn = [v for v in rows if v.get("variant") == "re-drawn"]
        ordered = [v for v in rows if v.get("variant") == "re-ordered"]
        mean = float(np.mean([v["value"] for v in rows])) if rows else 0.0
        half = 1.96 * (mean * (1 - mean) / n) ** 0.5 if n else 0.0
        lines.append(
            f"| {md_escape(r.name)} | {md_escape(r.status)} | {n} | {pct(base and base['value'])} "
            f"| {', '.join(pct(v['value']) for v in drawn) or '–'} | {', '.join(pct(v['value']) for v in ordered) or '–'} "
            f"| {100 * float(st.get('spread') or 0):.1f} | {100 * float(st.get('sd') or 0):.1f} | {100 * half:.1f} "
            f"| {100 * float(st.get('same_answer') or 0):.0f}% of examples |")
        ids = st.get("example_ids") or []
        outs = [v.get("outputs") or [] for v in rows]
        shown = 0
        for j, ex_id in enumerate(ids):
            answers = [o[j] if j < len(o) else None for o in outs]
            example = data.examples.get(ex_id)
            if len({json.dumps(a, sort_keys=True, default=str) for a in answers}) == 1 or example is None:
                continue
            said = "; ".join(f"{md_escape(v['variant'])} (seed {v.get('seed')}"
                             f"{'' if v.get('order_seed') is None else ', order ' + str(v['order_seed'])}): "
                             f"{_shown(a)}" for v, a in zip(rows, answers))
            quotes.append(f"- {md_escape(r.name)}: {_quote(example.text)}, gold {_shown(example.target)} -> "
                          f"{said}")
            shown += 1
            if shown >= 3:
                break
    lines += ["", "Re-drawn: other demonstrations (and their order) drawn with another seed; re-ordered: the same "
              "demonstrations shuffled. Every variant is scored on the same stratified test subset (where early "
              "rejection stopped, else a quarter of the test split)."]
    if quotes:
        lines += ["", "Inputs on which the variants disagree:", "", *quotes]
    return lines + [""]


def _instability(rungs: Sequence[RungResult], metric: str, data: _Data) -> list[str]:
    lines = ["## Prompt instability (demonstration order and seed)", ""]
    measured = _measured_stability(rungs, data)
    groups = repeated_prompt_groups(rungs)
    if not groups and not measured:
        return lines + ["No prompt rung measured its stability in this run (the few-shot rungs did not run, or "
                        "ran without `stability`): to measure how much the score moves with the demonstrations "
                        "drawn and their order, run a few-shot rung with `stability: 2` (the built-in "
                        "`few_shot_random` does), or copies of it that differ only in `seed` / `order_seed`.", ""]
    lines += measured
    if not groups:
        return lines
    lines += [f"| rungs | k / selection / mode | seeds | {metric} % (min-max) | spread, points | SD, points "
              "| widest 95% CI half-width, points | same answer on |", "|---|---|---|---|---|---|---|---|"]
    for g in groups:
        cfg = g[0].config or {}
        vals = [(r.metrics or {}).get(metric) for r in g]
        vs = [v.value for v in vals if v is not None and v.value is not None]
        if len(vs) < 2:
            continue
        half = max(((v.high or 0) - (v.low or 0)) / 2 if v is not None else 0.0 for v in vals)
        same = _same_answers(g)
        lines.append(f"| {', '.join(md_escape(r.name) for r in g)} | {cfg.get('k')} / "
                     f"{md_escape(cfg.get('selection'))} / {md_escape(cfg.get('mode'))} "
                     f"| {', '.join(str((r.config or {}).get('seed')) for r in g)} "
                     f"| {pct(min(vs))}-{pct(max(vs))} | {100 * (max(vs) - min(vs)):.1f} "
                     f"| {100 * statistics.stdev(vs):.1f} | {100 * half:.1f} "
                     f"| {'–' if same is None else f'{100 * same:.0f}% of examples'} |")
    return lines + ["", "A spread comparable to the CI half-width means the ranking of prompt variants within that "
                    "margin is partly luck of the draw.", ""]


# ---------------------------------------------------------------- the document


def _data(results: RunResults, test_examples: Sequence[Any] | None, note: str | None) -> _Data:
    task = results.task or {}
    match = ((task.get("generation") or {}).get("match")) or "normalized"
    examples = {e.id: e for e in test_examples or ()}
    if test_examples is None and note is None:
        note = "The test inputs were not available, so no inputs are quoted and flips are not scored."
    return _Data(str(task.get("kind") or "classification"), match if task.get("kind") == "generation" else "exact",
                 examples, note)


def edge_cases_markdown(results: RunResults, test_examples: Sequence[Any] | None, decision: Decision, *,
                        data_note: str | None = None) -> str:
    """The edge-case document (Markdown) for a run's results and its decision; ``test_examples`` None: no quotes."""
    data = _data(results, test_examples, data_note)
    rungs = {r.name: r for r in results.rungs}
    best = best_rung(decision)
    task = (results.task or {}).get("name") or "task"
    lines = [f"# Edge cases: {md_escape(task)}", ""]
    if data.note:
        lines += [f"> {md_escape(data.note)}", ""]
    if best is None:
        return "\n".join(lines + ["No rung finished, so there are no edge cases to show.", ""])
    why = "the winner" if best.name == decision.winner else "the best quality; no winner was chosen"
    lines += [f"## Where {md_escape(best.name)} fails", "",
              f"{md_escape(best.name)} is {why}: {best.metric} {pct(best.quality)}% "
              f"[{pct(best.low)}, {pct(best.high)}] on {best.n} test examples.", ""]
    lines += _worst_labels(rungs[best.name]) + _confusions(rungs[best.name], data)
    lines += _flips(rungs, decision, data)
    lines += _instability(list(rungs.values()), best.metric, data)
    return "\n".join(lines)
