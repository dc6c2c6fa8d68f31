"""``summary.md``: a short Markdown account of a run, rendered from :class:`RunResults` (pure).

The full report (HTML with plots, the decision, edge cases) is a separate concern; this summary
is what a reviewer reads first: the rung table with confidence intervals, paired comparisons,
data checks and what produced the numbers.
"""

from __future__ import annotations

import math
from typing import Any

from .costs import Prices
from .formats import hub_sources, models_words, pct
from .results import RungResult, RunResults

__all__ = ["summary_markdown", "format_metric"]


def format_metric(m: Any) -> str:
    """``87.3 [83.1, 91.0]`` (percent, 95% CI)."""
    if m is None:
        return "–"
    return f"{pct(m.value)} [{pct(m.low)}, {pct(m.high)}]"


def _num(x: Any, fmt: str = "{:.0f}") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def _rung_row(r: RungResult, secondary: str | None) -> str:
    if r.status != "finished":
        return f"| {r.name} | {r.strategy} | {r.status}: {r.error or r.reason or ''} | | | | | |"
    u = r.usage
    tokens = f"{_num(u['prompt_tokens']['mean'])} / {_num(u['prompt_tokens']['p95'])}"
    completion = _num(u["completion_tokens"]["mean"], "{:.1f}")
    latency = f"{_num(u['latency_s']['p50'], '{:.3f}')} / {_num(u['latency_s']['p95'], '{:.3f}')}"
    sec = format_metric(r.metrics.get(secondary)) if secondary else ""
    return (f"| {r.name} | {r.strategy} | {format_metric(r.primary)} | {sec} | {tokens} | {completion} | {latency} "
            f"| {_num(u.get('examples_per_s'), '{:.2f}')} |")


def _rung_table(results: RunResults) -> list[str]:
    from .evaluation.scoring import PRIMARY_METRIC

    finished = [r for r in results.rungs if r.status == "finished"]
    primary = finished[0].primary_metric if finished else PRIMARY_METRIC.get(results.task.get("kind"), "metric")
    secondary = next((k for k in (finished[0].metrics if finished else {}) if k != primary), None)
    n = finished[0].primary.n if finished and finished[0].primary else results.data.get("sizes", {}).get("test", 0)
    scored = f"{primary} and {secondary}" if secondary else primary
    lines = [
        f"## Rungs (test n = {n}; {scored} in %, 95% CI)", "",
        f"| rung | strategy | {primary} | {secondary or ''} | prompt tokens/req (mean / p95) | completion tokens/req "
        "| latency s (p50 / p95) | examples/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    from .report.sections import answer_notes

    notes = [f"**{note}**" for note in answer_notes(results)]
    return lines + [_rung_row(r, secondary) for r in results.rungs] + [""] + [x for n in notes for x in (n, "")]


def _paired_tests(results: RunResults) -> str:
    """The paired tests the run's comparisons used, in words (per-example scores: Wilcoxon in McNemar's place)."""
    words = {"McNemar exact": "exact McNemar on per-example correctness",
             "Wilcoxon signed-rank": "the Wilcoxon signed-rank test on per-example scores"}
    return " / ".join(words.get(t, t) for t in _tests(results) or ["McNemar exact"])


def _tests(results: RunResults) -> list[str]:
    """The paired tests of the run's comparisons, each once, in order (one test a run: one metric)."""
    return list(dict.fromkeys(c.test for c in results.comparisons))


def _comparisons(results: RunResults) -> list[str]:
    if not results.comparisons:
        return []
    lines = ["## Paired comparisons against the best rung (same test examples)", "",
             f"| best | other | difference, points [95% CI] | {' / '.join(_tests(results))} p | verdict |",
             "|---|---|---|---|---|"]
    for c in results.comparisons:
        lines.append(f"| {c.a} | {c.b} | {100 * c.diff:+.1f} [{100 * c.low:+.1f}, {100 * c.high:+.1f}] "
                     f"| {c.p_value:.3g} | {c.verdict} |")
    return lines + [""]


def _checks(results: RunResults) -> list[str]:
    c, d = results.checks, results.data
    lines = ["## Data", "",
             f"- Data hash `{d['hash']}`; train {d['sizes']['train']}, dev {d['sizes']['dev']}, "
             f"test {d['sizes']['test']} examples.",
             f"- Dev split: {d['dev_origin']}.", f"- Test split: {d['test_origin']}.",
             *(f"- Data {role}: {where}." for role, where in hub_sources(d)),
             f"- Volume: {c.get('volume_assessment', '')}",
             f"- Leakage train/test: {c.get('leakage_exact', 0)} exact, {c.get('leakage_near', 0)} near-duplicate.",
             f"- Exact duplicates: {c.get('exact_duplicates', {})}."]
    if c.get("imbalance_ratio") is not None:
        lines.append(f"- Labels: min {c.get('min_per_label')} training examples per label, "
                     f"imbalance ratio {c['imbalance_ratio']:.1f}.")
    lines += [f"- Warning: {w}" for w in c.get("warnings", [])]
    for leak in (c.get("leakage_examples") or [])[:3]:
        lines.append(f"  - test \"{leak.get('test')}\" ~ train \"{leak.get('train')}\" "
                     f"(similarity {leak.get('similarity', 1.0):.2f})")
    return lines + [""]


def _best_details(results: RunResults) -> list[str]:
    finished = [r for r in results.rungs if r.status == "finished" and r.primary is not None]
    if not finished:
        return []
    best = max(finished, key=lambda r: r.primary.value)
    lines = [f"## Best rung: {best.name}", ""]
    if best.confusions:
        lines += ["Most frequent confusions (gold -> predicted):", ""]
        lines += [f"- {c['gold']} -> {c['predicted']}: {c['count']}" for c in best.confusions[:5]]
        lines.append("")
    return lines


def _training(results: RunResults) -> list[str]:
    rows = [(r, r.extras.get("training")) for r in results.rungs if r.status == "finished" and r.extras.get("training")]
    if not rows:
        return []
    lines = ["## Training (fine-tuning rungs)", "",
             "| rung | method / head | examples | steps (epochs) | minutes | tokens/s | device | cost USD | stopped "
             "| lr |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r, t in rows:
        def said(key: str) -> Any:  # a field a rung's training record does not hold reads as a dash, not "None"
            return "–" if t.get(key) is None else t[key]

        lines.append(
            f"| {r.name} | {said('method')} / {said('head')} | {said('examples')} | {said('steps')} "
            f"({_num(t.get('epochs'), '{:.2f}')}) | {_num((t.get('wall_s') or 0) / 60, '{:.1f}')} "
            f"| {_num(t.get('tokens_per_s'), '{:.0f}')} | {said('device')} x{t.get('world_size', 1)} "
            f"| {_num(t.get('cost_usd'), '{:.4f}')} | {said('stopped')} | {said('learning_rate')} |")
    lines.append("")
    lines.append("Minutes: wall time of the training run including loading and dev evaluations; tokens/s: real "
                 "(non-padding) training tokens per second of training; cost: device-hours x the price per "
                 "device-hour recorded in the result. An artifact trained earlier with the same configuration is "
                 "reused and keeps its original figures.")
    warnings = [f"- {r.name}: {w}" for r, t in rows for w in t.get("warnings", [])]
    return lines + ([""] + warnings if warnings else []) + _budget_notes(rows) + [""]


def _budget_notes(rows: list) -> list[str]:
    """What the budget did to a training: a subset the ladder (or the timed trial) fitted, a run stopped early."""
    notes = []
    for r, t in rows:
        fitted = t.get("fitted_to_budget")
        if fitted:
            forecast = (fitted.get("whole_set_forecast") or {}).get("message") or "The whole-set result is not forecast."
            notes.append(f"- {r.name} was trained on {fitted.get('examples'):,} of {fitted.get('of'):,} training "
                         f"examples to fit the budget ({fitted.get('by')}): {fitted.get('reason')}. {forecast}")
        stopped = t.get("stopped_for_budget")
        if stopped:
            notes.append(f"- {r.name}: {stopped.get('reason')}; the best checkpoint so far was kept and scored.")
    return [""] + notes if notes else []


def _curves(results: RunResults) -> list[str]:
    lines: list[str] = []
    for r in results.rungs:
        curve = r.extras.get("curve") if r.status == "finished" else None
        if not curve:
            continue
        lines += [f"## Learning curve: {r.name} ({curve['of']})", "",
                  f"| training examples | test {curve['metric']} % [95% CI] | train | dev |", "|---|---|---|---|"]
        for p in curve["points"]:
            t = p["test"]
            train = p.get("train_loss") if p.get("train_loss") is not None else p.get("train_accuracy")
            dev = p.get("dev_loss") if p.get("dev_loss") is not None else p.get("dev_accuracy")
            lines.append(f"| {p['n']} | {pct(t['value'])} [{pct(t['low'])}, {pct(t['high'])}] "
                         f"| {_num(train, '{:.3f}')} | {_num(dev, '{:.3f}')} |")
        lines.append("")
        fit = curve.get("fit")
        if fit:
            params, ci = fit["params"], fit["params_ci"]
            lines.append(f"Fit ({curve['model']}): ceiling a = {pct(params['a'])}% "
                         f"[{pct(ci['a'][0])}, {pct(ci['a'][1])}], b = {params['b']:.3g}, c = {params['c']:.3g}.")
        forecast = curve.get("forecast")
        if forecast:
            lines.append(f"Forecast: {forecast['message']}")
        back = curve.get("backtest")
        if back:
            lines.append(f"Back-test: fitted on n = {back['fitted_on']}, the curve forecast {pct(back['forecast'])}% "
                         f"[{pct(back['forecast_band'][0])}, {pct(back['forecast_band'][1])}] at n = {back['n']}; "
                         f"measured {pct(back['measured'])}% [{pct(back['measured_ci'][0])}, "
                         f"{pct(back['measured_ci'][1])}].")
        lines += [f"- Warning: {w}" for w in curve.get("warnings", [])]
        lines.append("")
    return lines


def _ladder(results: RunResults) -> list[str]:
    """The policy's walk: one line per action, with its reason, and what early rejection saved."""
    from .report.sections import ladder_text

    text = ladder_text(results.ladder)
    if text is None:
        return []
    lines = ["## Ladder", "", text.budget, ""]
    lines += [f"- **{verb}{' ' + rung if rung else ''}**: {reason}." for verb, rung, reason in text.steps]
    if text.saved:
        lines += ["", text.saved]
    return lines + [""]


def _judge(results: RunResults) -> list[str]:
    """The LLM judge measured on the user's human grades (``generation.metric: judge``)."""
    j = (results.checks or {}).get("judge")
    if not j:
        return []
    lines = ["## LLM judge", "", f"Judge `{j.get('model')}`, grades 1..{j.get('scale', '?')}."]
    if j.get("warning"):
        return [*lines, "", f"**{j['warning']}.**", ""]

    def known(x: Any) -> bool:
        return isinstance(x, (int, float)) and x == x

    def num(x: Any) -> str:
        return f"{x:+.2f}" if known(x) else "n/a (no spread)"

    def ci(pair: Any) -> str:
        return f"[{pair[0]:+.2f}, {pair[1]:+.2f}]" if pair and all(known(x) for x in pair) else ""

    a, p, n = j["agreement"], j["position_bias"], j["length_bias"]
    lines += ["", f"- Agreement with {j['examples']} human grades: quadratic-weighted Cohen's kappa "
              f"{a['weighted_kappa']:.2f} {ci(a['interval'])}, exact agreement {100 * a['exact_agreement']:.0f}%.",
              f"- Position bias: answer shown first changes the grade by {p['mean_grade_change']:+.2f} on average "
              f"{ci(p['interval'])}; {100 * p['share_changed']:.0f}% of grades changed.",
              f"- Length bias: Spearman of grade and answer length {num(n['judge_spearman'])} "
              f"{ci(n['judge_interval'])} for the judge, {num(n['human_spearman'])} {ci(n['human_interval'])} for "
              "the people.", ""]
    if j.get("unreadable_grades"):
        lines.insert(-1, f"- {j['unreadable_grades']} grade(s) could not be read and were left out.")
    return lines


def summary_markdown(results: RunResults) -> str:
    task = results.task
    target = ", ".join(f"{k} >= {v}" for k, v in (task.get("target") or {}).items()) or "none set"
    env = results.environment
    versions = ", ".join(f"{k} {v}" for k, v in (env.get("versions") or {}).items() if v)
    lines = [
        f"# tunewise run `{results.run_id}`: {task.get('name')}", "",
        f"Kind **{task.get('kind')}**, {models_words(task)}, target {target}, seed {results.seed}, "
        f"status {results.status}.", "",
        *_rung_table(results), *_ladder(results), *_comparisons(results), *_training(results), *_curves(results),
        *_best_details(results), *_checks(results), *_judge(results),
        "## What produced these numbers", "",
        "Every rung was scored on the same frozen test split. Intervals (95%): exact Clopper-Pearson for means of "
        "0/1 scores (accuracy, exact match, JSON validity), BCa bootstrap over test examples (2,000 resamples) for "
        "macro-F1, field scores and a generation metric's mean; 'with confidence' uses the lower bound adjusted for "
        f"the rungs compared (Bonferroni). Paired tests: {_paired_tests(results)} and a paired bootstrap of the "
        "difference. Latency is model time per request as measured when the call was made.", "",
        f"Environment: Python {env.get('python')}, {env.get('platform')}, {env.get('cpu_count')} CPUs; {versions}.",
        "", *_prices(env),
    ]
    return "\n".join(lines)


def _prices(env: dict[str, Any]) -> list[str]:
    """Where the run's prices came from and their date (nothing for a run that recorded no price table)."""
    try:
        return [f"Prices: {Prices.model_validate(env['prices']).sources_words()}.", ""]
    except (KeyError, TypeError, ValueError):
        return []
