"""The decision: which candidate to ship, why, and what to do next, from a run's results and the spec.

Each finished rung becomes an :class:`Option` with its quality (the target metric, else the
primary one, with its 95% CI), cost per 1,000 requests and one-off cost (``costs.py``), latency
and whether it meets the target and the constraints. "With confidence": the option's lower bound,
adjusted for picking among the run's m rungs (and t target metrics), reaches the target - Bonferroni,
each bound at one-sided level 2.5% / (m t), :func:`~tunewise.evaluation.stats.confident_bound`, the
same bound the ladder policy stops on. m counts every rung of the run whatever became of it, plus the
rungs the policy's stop left unrun (the ladder the walk could have stopped at), so the claim holds
however the rungs were chosen. "Point estimate only": the value reaches the target but that bound does
not. Options are ranked in tiers:

0. meets the target with confidence and the constraints -> cheapest first;
1. meets it on the point estimate only and the constraints -> cheapest first;
2. misses the target (or none is set) but meets the constraints -> best quality first;
3. violates a constraint -> best quality first (never the winner).

"Cheapest" orders by cost per 1,000 requests, then one-off cost, then p95 latency, then name
(unpriced counts as infinitely dear). When ``constraints.requests_per_month`` is known, the total
over :data:`HORIZON_MONTHS` (one-off + months x monthly cost) comes first, so a training run that
never pays back at the stated volume does not win on its per-request price alone. Costs within
:data:`COST_TIE` of the cheapest option of the first tier are a tie, broken by quality: a cent of
one-off training must not hand the win to a weaker option on the same instance. The winner is
the first option of tiers 0-2, the runner-up the next one. The Pareto frontier is taken over
(quality up, cost per 1,000 down, p95 latency down).

Pure and deterministic: no I/O, no model. It reads the typed records of ``results.py``
(:class:`~tunewise.results.RunResults`); ``results.json`` becomes one with ``RunResults.from_json``.
Computed once per run and handed to whoever shows it. Out of scope: rendering (the report, which never
decides) and the prices themselves (``costs.Prices``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .costs import (
    Amount,
    Prices,
    break_even_volume,
    labelling_cost,
    monthly_cost,
    prompt_token_savings,
    request_cost,
    retraining_monthly_cost,
    time_to_deploy,
    training_cost,
)
from .evaluation.evaluator import serving_latency
from .evaluation.records import MetricValue
from .evaluation.stats import confidence_words, confident_bound
from .formats import pct
from .ladder.policy import family_kind, rung_family
from .results import Comparison, RungResult, RunResults
from .task import TARGET_METRICS, Constraints, TaskSpec

__all__ = ["Option", "Decision", "decide", "rung_kind", "HORIZON_MONTHS"]

WITH_CONFIDENCE, POINT_ONLY, NOT_MET, NO_TARGET = "with confidence", "point estimate only", "no", "no target set"
HORIZON_MONTHS = 12  # payback horizon for the break-even volume
_INF = math.inf
#: strategies whose candidates answer without an LLM call although they are not ``no_llm`` rungs
ANSWERS_WITHOUT_LLM = frozenset({"encoder_ft", "distill"})


@dataclass(frozen=True)
class Option:
    """One finished rung seen as something to deploy (latencies in ms, money in USD)."""

    name: str
    strategy: str
    kind: str  # no_llm | prompt | tuned
    metric: str
    quality: float
    low: float
    high: float
    n: int
    per_1k_usd: float | None
    cost_basis: str
    one_off_usd: float | None
    one_off_basis: str
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    deploy_hours: float
    monthly_usd: float | None  # at constraints.requests_per_month, retraining included
    horizon_usd: float | None  # one_off_usd + HORIZON_MONTHS * monthly_usd
    meets_target: str  # with confidence | point estimate only | no | no target set
    confident_low: float | None  # the metric's lower bound adjusted for the candidates compared (target set)
    meets_constraints: bool
    constraint_checks: tuple[str, ...]  # one sentence per checked constraint, passed or not
    violations: tuple[str, ...]


@dataclass(frozen=True)
class Decision:
    winner: str | None
    status: str
    runner_up: str | None
    comparison: dict[str, Any] | None  # winner (a) vs runner-up (b), oriented so diff = a - b
    options: tuple[Option, ...]  # in rank order
    pareto: tuple[str, ...]
    break_even: dict[str, Any] | None
    next_step: str
    reasons: tuple[str, ...]
    # each distilled student against its teacher: quality, the paired comparison, the payback volume
    distillation: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)  # every float in it is finite or None


def _usd(x: float | None) -> str:
    if x is None:
        return "an unknown amount"
    if x == 0 or x >= 0.1:
        return f"${x:,.2f}"
    return f"${x:.{1 - math.floor(math.log10(x))}f}".rstrip("0")


def _ms(x: float | None) -> str:
    return "unmeasured" if x is None else f"{x:,.0f} ms"


def _num(x: Any, default: float | None = None) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else default


def rung_kind(rung: RungResult) -> str:
    """``no_llm`` (knn, probe, a probe curve), ``tuned`` (finetune, a fine-tuning curve) or ``prompt`` (any
    other rung): the ladder policy's classification (:func:`~tunewise.ladder.policy.rung_family`, then
    :func:`~tunewise.ladder.policy.family_kind`) of the rung's strategy and its config."""
    return family_kind(rung_family(rung.strategy, rung.config or {}))


@dataclass(frozen=True)
class _Spec:
    kind: str
    target: dict[str, float]
    constraints: Constraints
    model: str


def _spec(spec: TaskSpec | Mapping[str, Any]) -> _Spec:
    if isinstance(spec, TaskSpec):
        return _Spec(spec.kind, dict(spec.target), spec.constraints, spec.model)
    return _Spec(spec.get("kind", "classification"), dict(spec.get("target") or {}),
                 Constraints.model_validate(spec.get("constraints") or {}),
                 spec.get("model") or TaskSpec.model_fields["model"].default)


def _candidates(results: RunResults) -> int:
    """The rungs a run picks among: all of its rungs, and those the policy's stop left unrun."""
    stop = results.ladder.stop if results.ladder is not None else None
    return max(1, len(results.rungs) + (len(stop.skipped) if stop is not None else 0))


def _target_check(metrics: Mapping[str, MetricValue], target: Mapping[str, float], m: int) -> tuple[str, float | None]:
    """(with confidence | point estimate only | no | no target set, the first target metric's adjusted bound)."""
    if not target:
        return NO_TARGET, None
    got = [(metrics.get(k), t) for k, t in target.items()]
    bounds = [confident_bound(g, m, metrics=len(target)) if g is not None else math.nan for g, _ in got]
    first = _num(bounds[0])
    if all(_num(b, -_INF) >= t for b, (_, t) in zip(bounds, got)):
        return WITH_CONFIDENCE, first
    return (POINT_ONLY if all(_num(g.value if g else None, -_INF) >= t for g, t in got) else NOT_MET), first


def _constraints(c: Constraints, p95: float | None, one_off: float | None, hours: float | None,
                 deploy_h: float) -> list[tuple[bool, str]]:
    """(passed, sentence) per constraint set; an unmeasured value fails (training hours: only when recorded)."""
    rows = [(c.max_latency_ms, p95, f"p95 latency {_ms(p95)}", "max_latency_ms"),
            (c.budget_usd, one_off, f"one-off cost {_usd(one_off)}", "budget_usd"),
            (c.budget_hours if hours is not None else None, hours, f"training {hours or 0:.2f} device-hours",
             "budget_hours"),
            (c.deadline_days and 24 * c.deadline_days, deploy_h, f"time to deploy {deploy_h:.1f} h", "deadline_days")]
    out = []
    for limit, value, said, key in rows:
        if limit is not None:
            ok = value is not None and value <= limit
            shown = c.deadline_days if key == "deadline_days" else limit
            out.append((ok, f"{said} {'<=' if ok else 'exceeds'} {key} {shown:g}"))
    return out


def _option(rung: RungResult, s: _Spec, env_device: str, prices: Prices, device: str | None,
            retrain_days: float | None, compared: int) -> Option | None:
    metric = next(iter(s.target), None) or rung.primary_metric or TARGET_METRICS[s.kind][0]
    metrics = rung.metrics or {}
    m = metrics.get(metric)
    quality = _num(m.value) if m is not None else None
    if rung.status != "finished" or m is None or quality is None:
        return None
    kind, usage = rung_kind(rung), rung.usage or {}
    training = (rung.extras or {}).get("training") or {}
    dev = (device or (kind == "tuned" and training.get("device")) or (kind != "no_llm" and env_device) or "cpu")
    # a fine-tuned encoder or a distilled student answers without the task's (maybe API) model: device time
    on_device = kind == "no_llm" or rung.strategy in ANSWERS_WITHOUT_LLM
    cost = request_cost(usage, None if on_device else rung.model or s.model, prices, device=dev.split(":")[0],
                        requests_per_month=s.constraints.requests_per_month, utilisation=s.constraints.utilisation)
    if training:  # a fine-tuning curve records its last (deployable) point's training, not the whole curve's
        one_off = training_cost(training, prices)
    else:
        prep, price = _num(rung.prepare_s, 0.0), prices.device_hour.get(dev.split(":")[0], 0.0)
        one_off = Amount(prep / 3600 * price, f"measured {prep:.1f} s preparation x ${price:g}/{dev} device-hour")
    labelling = (rung.extras or {}).get("distillation")
    if labelling:  # a distilled student: the teacher's labelling is one-off cost too
        paid = labelling_cost(labelling, prices)
        one_off = Amount(None if one_off.value is None or paid.value is None else one_off.value + paid.value,
                         f"{one_off.basis}; {paid.basis}")
    # the latency one user waits: requests measured one per call (no-LLM baselines score 256 inputs per call
    # and LLM rungs batch theirs; neither batch's time says what serving one request takes)
    lat = serving_latency(usage)
    p50, p95 = (None if _num(lat.get(q)) is None else 1000 * lat[q] for q in ("p50", "p95"))
    deploy = time_to_deploy(kind, training_wall_s=_num(training.get("wall_s"), 0.0)).value
    checks = _constraints(s.constraints, p95, one_off.value, _num(training.get("device_hours")), deploy)
    rpm, fixed = s.constraints.requests_per_month, 0.0
    if kind == "tuned" and retrain_days and one_off.value is not None:
        fixed = retraining_monthly_cost(one_off.value, retrain_days)
    monthly = None if rpm is None or cost.per_request_usd is None else monthly_cost(cost.per_request_usd, rpm, fixed)
    horizon = None if monthly is None or one_off.value is None else one_off.value + HORIZON_MONTHS * monthly
    meets, bound = _target_check(metrics, s.target, compared)
    return Option(
        name=rung.name, strategy=rung.strategy or "", kind=kind, metric=metric, quality=quality,
        low=_num(m.low, quality), high=_num(m.high, quality), n=int(m.n or 0),
        per_1k_usd=cost.per_1k_usd, cost_basis=cost.basis, one_off_usd=one_off.value, one_off_basis=one_off.basis,
        latency_p50_ms=p50, latency_p95_ms=p95, deploy_hours=deploy, monthly_usd=monthly, horizon_usd=horizon,
        meets_target=meets, confident_low=bound, meets_constraints=all(ok for ok, _ in checks),
        constraint_checks=tuple(text for _, text in checks), violations=tuple(text for ok, text in checks if not ok))


def _inf(x: float | None) -> float:
    return _INF if x is None else x


#: relative difference under which two options' costs are the same for the ranking (and a cent, absolute)
COST_TIE = 0.01


def _cost(o: Option) -> tuple[float, float]:
    return (_inf(o.horizon_usd), 0.0) if o.horizon_usd is not None else (_inf(o.per_1k_usd), _inf(o.one_off_usd))


def _same_cost(a: Option, b: Option) -> bool:
    return all(x == y or abs(x - y) <= max(0.01, COST_TIE * min(x, y)) for x, y in zip(_cost(a), _cost(b)))


def _ties_by_quality(ranked: list[Option]) -> list[Option]:
    """The ranking with the first tier's options that cost the same as its cheapest (:data:`COST_TIE`) ordered by
    quality, best first; tiers 2 and 3 are already ordered by quality."""
    if not ranked or _rank_key(ranked[0])[0] >= 2:
        return ranked
    tier = _rank_key(ranked[0])[0]
    tied = [o for o in ranked if _rank_key(o)[0] == tier and _same_cost(o, ranked[0])]
    rest = [o for o in ranked if o not in tied]
    return sorted(tied, key=lambda o: (-o.quality, _rank_key(o))) + rest


def _rank_key(o: Option) -> tuple[Any, ...]:
    tier = {WITH_CONFIDENCE: 0, POINT_ONLY: 1}.get(o.meets_target, 2) if o.meets_constraints else 3
    cheap = (_inf(o.horizon_usd), _inf(o.per_1k_usd), _inf(o.one_off_usd), _inf(o.latency_p95_ms), o.name)
    return (tier, *cheap) if tier < 2 else (tier, -o.quality, *cheap)


def _pareto(options: Sequence[Option]) -> tuple[str, ...]:
    def point(o: Option) -> tuple[float, float, float]:
        return o.quality, -_inf(o.per_1k_usd), -_inf(o.latency_p95_ms)

    def dominates(a: Option, b: Option) -> bool:
        return point(a) != point(b) and all(x >= y for x, y in zip(point(a), point(b)))

    front = [o for o in options if not any(dominates(p, o) for p in options)]
    return tuple(o.name for o in sorted(front, key=lambda o: (_inf(o.per_1k_usd), -o.quality, o.name)))


def _comparison(comparisons: Sequence[Comparison], a: str, b: str) -> tuple[dict[str, Any] | None, str]:
    """The stored comparison of ``a`` and ``b``, turned round when needed so that diff = a - b, and a sentence."""
    for c in comparisons:
        if {c.a, c.b} == {a, b} and None not in (_num(c.diff), _num(c.low), _num(c.high)):
            flip = c.a != a
            verdict = {"A better": f"{c.a} better", "B better": f"{c.b} better"}.get(c.verdict, "")
            diff, low, high = (-c.diff, -c.high, -c.low) if flip else (c.diff, c.low, c.high)
            out = {"a": a, "b": b, "diff": diff + 0.0, "low": low + 0.0, "high": high + 0.0,  # + 0.0: no "-0.0"
                   "p_value": _num(c.p_value),
                   "verdict": verdict or "not significantly different"}
            p = "" if out["p_value"] is None else f", {c.test.split()[0]} p = {out['p_value']:.3g}"
            return out, (f"{a} vs {b}: {out['verdict']} ({100 * out['diff']:+.1f} points [{100 * out['low']:+.1f}, "
                         f"{100 * out['high']:+.1f}]{p}).")
    return None, f"No paired comparison of {a} and {b} in the results (comparisons are against the best rung only)."


def _quality(o: Option) -> str:
    return f"{pct(o.quality)}% [{pct(o.low)}, {pct(o.high)}]"


def _goal(target: Mapping[str, float]) -> str:
    return " and ".join(f"{100 * v:g}% {k}" for k, v in target.items())


def _break_even(ranked: Sequence[Option], rungs: Mapping[str, RungResult], rpm: int | None,
                retrain_days: float | None) -> tuple[dict[str, Any] | None, list[str]]:
    prompt = next((o for o in ranked if o.kind == "prompt" and o.per_1k_usd is not None), None)
    tuned = next((o for o in ranked if o.kind == "tuned" and o.per_1k_usd is not None and o.one_off_usd is not None),
                 None)
    if prompt is None or tuned is None:
        return None, []
    fixed = retraining_monthly_cost(tuned.one_off_usd, retrain_days) if retrain_days else 0.0
    volume = break_even_volume(prompt.per_1k_usd / 1000, tuned.per_1k_usd / 1000, tuned.one_off_usd,
                               horizon_months=HORIZON_MONTHS, tuned_monthly_fixed=fixed)
    savings = prompt_token_savings(rungs[prompt.name].usage, rungs[tuned.name].usage)
    out = {"prompt": prompt.name, "tuned": tuned.name, "requests_per_month": volume, "horizon_months": HORIZON_MONTHS,
           "prompt_per_1k_usd": prompt.per_1k_usd, "tuned_per_1k_usd": tuned.per_1k_usd,
           "tuned_one_off_usd": tuned.one_off_usd, "tuned_monthly_fixed_usd": fixed,
           "token_savings": asdict(savings) if savings else None}
    costs = (f"{_usd(prompt.per_1k_usd)} vs {_usd(tuned.per_1k_usd)} per 1,000 requests, "
             f"{_usd(tuned.one_off_usd)} one-off" + (f", {_usd(fixed)} a month retraining" if fixed else ""))
    if volume is None:
        text = f"{tuned.name} never pays back against {prompt.name}: it is not cheaper per request ({costs})."
    else:
        text = (f"{tuned.name} costs less than {prompt.name} over {HORIZON_MONTHS} months above {volume:,.0f} "
                f"requests a month ({costs}).")
        if rpm is not None:
            text = text[:-1] + f"; at {rpm:,} requests a month {'tuning' if rpm > volume else 'prompting'} is cheaper."
    lines = [text]
    if savings and savings.share is not None:
        lines.append(f"{tuned.name} uses {savings.saved:,.0f} fewer prompt tokens per request than {prompt.name} "
                     f"({savings.after:,.0f} vs {savings.before:,.0f}, {100 * savings.share:.0f}% saved).")
    return out, lines


def _distillation(ranked: Sequence[Option], rungs: Mapping[str, RungResult],
                  comparisons: Sequence[Comparison]) -> tuple[dict[str, Any], ...]:
    """Each distilled student against its teacher (both scored on the same test split): quality, the paired
    comparison, how often they give the same answer, and the monthly volume above which the student's one-off
    cost (labelling + training) is paid back by its cheaper requests over :data:`HORIZON_MONTHS` months."""
    by_name = {o.name: o for o in ranked}
    out = []
    for student in ranked:
        labelling = (rungs[student.name].extras or {}).get("distillation") or {}
        teacher = by_name.get(str(labelling.get("teacher")))
        if not labelling or teacher is None:
            continue
        comparison, said = _comparison(comparisons, student.name, teacher.name)
        agree = _agreement(rungs[student.name], rungs[teacher.name])
        volume = None
        if None not in (teacher.per_1k_usd, student.per_1k_usd, student.one_off_usd):
            volume = break_even_volume(teacher.per_1k_usd / 1000, student.per_1k_usd / 1000, student.one_off_usd,
                                       horizon_months=HORIZON_MONTHS)
        costs = (f"{_usd(teacher.per_1k_usd)} vs {_usd(student.per_1k_usd)} per 1,000 requests, "
                 f"{_usd(student.one_off_usd)} one-off for labelling and training")
        pays = (f"it never pays for itself on price ({costs})" if volume is None else
                f"it pays for itself over {HORIZON_MONTHS} months above {volume:,.0f} requests a month ({costs})")
        text = (f"{student.name} (distilled from {teacher.name}): {_quality(student)} vs its teacher's "
                f"{_quality(teacher)}" + ("" if agree is None else f"; they give the same answer on "
                                          f"{100 * agree:.1f}% of the test examples") + f"; {pays}. {said}")
        out.append({"student": student.name, "teacher": teacher.name, "student_quality": student.quality,
                    "teacher_quality": teacher.quality, "comparison": comparison, "agreement": agree,
                    "requests_per_month": volume, "horizon_months": HORIZON_MONTHS,
                    "teacher_per_1k_usd": teacher.per_1k_usd, "student_per_1k_usd": student.per_1k_usd,
                    "one_off_usd": student.one_off_usd, "labelled": labelling.get("labelled"),
                    "kept": labelling.get("kept"), "said": text})
    return tuple(out)


def _agreement(a: RungResult, b: RungResult) -> float | None:
    """How often two rungs gave the same answer, over the test examples both answered (None: no predictions)."""
    theirs = {p.example_id: p.output for p in b.predictions}
    both = [(p.output, theirs[p.example_id]) for p in a.predictions if p.example_id in theirs]
    return sum(x == y for x, y in both) / len(both) if both else None


def _forecast(rungs: Sequence[RungResult]) -> tuple[Mapping[str, Any], int] | None:
    """The most useful curve forecast: the smallest data need, else out of reach, else too few points."""
    found = []
    for r in rungs:
        curve = (r.extras or {}).get("curve") if r.status == "finished" else None
        if curve and curve.get("forecast"):
            f = curve["forecast"]
            order = {"forecast": 0, "out_of_reach": 1, "insufficient_points": 2}.get(f.get("status"), 3)
            largest = max((int(p.get("n") or 0) for p in curve.get("points") or []), default=0)
            found.append((order, _num(f.get("n_needed"), 0.0), r.name or "", f, largest))
    return min(found, key=lambda x: x[:3])[3:] if found else None


def _bound_words(o: Option, s: _Spec, m: int) -> str:
    return confidence_words(math.nan if o.confident_low is None else o.confident_low, m, metrics=len(s.target))


def _next_step(win: Option | None, ranked: Sequence[Option], s: _Spec, rungs: Sequence[RungResult], m: int) -> str:
    if not ranked:
        return "No rung finished; fix the failures recorded in results.json and run again."
    if win is None:
        best = ranked[0]
        return (f"No option meets the constraints (best quality, {best.name}: {'; '.join(best.violations)}); "
                "relax the constraints or try a smaller, faster model.")
    money = f"at {_usd(win.per_1k_usd)} per 1,000 requests" + (
        f", {_usd(win.one_off_usd)} one-off" if (win.one_off_usd or 0) >= 0.01 else "") + (
        f", about {_usd(win.monthly_usd)} a month at {s.constraints.requests_per_month:,} requests"
        if win.monthly_usd is not None else "")
    goal = _goal(s.target)
    if win.meets_target == WITH_CONFIDENCE:
        return f"Use {win.name}: {_quality(win)} meets the {goal} target with confidence ({_bound_words(win, s, m)}), " \
               f"{money}."
    if win.meets_target == POINT_ONLY:
        return (f"Use {win.name} provisionally: {_quality(win)} meets the {goal} target on the point estimate only "
                f"({money}); add test examples to narrow the interval before relying on it.")
    if win.meets_target == NO_TARGET:
        return f"Use {win.name}, the best {win.metric} of the options that meet the constraints: {_quality(win)}, {money}."
    head = f"The {goal} target is not met (best: {win.name} at {_quality(win)})."
    found = _forecast(rungs)
    if found and found[0].get("status") == "forecast" and found[0].get("n_needed") is not None:
        more = max(0, math.ceil(found[0]["n_needed"] - found[1]))
        return f"{head} Collect about {more:,} more labelled examples (forecast: {found[0].get('message', '')})"
    if found and found[0].get("status") == "out_of_reach":
        return f"{head} The target looks out of reach for this model ({found[0].get('message', '')}); " \
               "try a larger base model."
    if not any(o.kind == "tuned" for o in ranked):
        if s.kind == "classification":
            return (f"{head} Try LoRA fine-tuning (rung lora) or fine-tuning the sentence encoder (rung encoder_ft) "
                    "on the curated training set.")
        return f"{head} Try LoRA fine-tuning (rung lora) on the curated training set."
    return f"{head} Run a learning curve (rung learning_curve) to forecast how many labelled examples would reach it."


def _payback(win: Option | None, break_even: Mapping[str, Any] | None) -> str:
    """The break-even volume, said from the winner's side, when the winner is one of the pair."""
    volume = (break_even or {}).get("requests_per_month")
    if win is None or volume is None or win.name not in (break_even["prompt"], break_even["tuned"]):
        return ""
    if win.name == break_even["tuned"]:
        return f" It pays back against {break_even['prompt']} above {volume:,.0f} requests a month."
    return f" Fine-tuning ({break_even['tuned']}) would pay back above {volume:,.0f} requests a month."


def _status(win: Option | None, ranked: Sequence[Option]) -> str:
    if not ranked:
        return "no finished rung"
    if win is None:
        return "no option meets the constraints"
    return {WITH_CONFIDENCE: "target met with confidence", POINT_ONLY: "target met on the point estimate only",
            NO_TARGET: "no target set"}.get(win.meets_target, "target not met")


def _reasons(win: Option | None, ranked: Sequence[Option], s: _Spec, m: int) -> list[str]:
    goal, out = _goal(s.target), []
    if win is not None:
        met = f"meets the {goal} target: {win.meets_target} ({_bound_words(win, s, m)})" if goal else "no target set"
        out.append(f"{win.name}: {win.metric} {_quality(win)} on {win.n:,} test examples; {met}.")
        out.append(f"{win.name} costs {_usd(win.per_1k_usd)} per 1,000 requests ({win.cost_basis}); one-off "
                   f"{_usd(win.one_off_usd)} ({win.one_off_basis}); latency p50 {_ms(win.latency_p50_ms)}, "
                   f"p95 {_ms(win.latency_p95_ms)}.")
    for o in ranked:
        if o is win:
            continue
        if o.violations:
            out.append(f"{o.name} is excluded: {'; '.join(o.violations)}.")
        elif win is not None and _inf(o.per_1k_usd) < _inf(win.per_1k_usd) and o.meets_target != win.meets_target:
            short = "meets the target only on the point estimate" if o.meets_target == POINT_ONLY else "misses the target"
            out.append(f"{o.name} is cheaper ({_usd(o.per_1k_usd)} per 1,000 requests) but {short}: {o.metric} "
                       f"{_quality(o)}.")
        if o.per_1k_usd is None:
            out.append(f"{o.name} could not be priced: {o.cost_basis}.")
    return out


def _not_scored(rungs: Sequence[RungResult]) -> list[str]:
    """What was not measured, and why: a team defending the choice is asked "did you try fine-tuning?"."""
    early, other = [], []
    for r in rungs:
        if r.status in ("finished", None):
            continue
        name, why = str(r.name), str(r.reason or r.error or r.status)
        if why.startswith("rejected early"):
            early.append(name)
        else:
            why = why[len(name) + 1:] if why.startswith(f"{name} ") else why  # "lora skipped to ..." -> "skipped to ..."
            other.append(f"{name} was not scored ({r.status}): {why.rstrip('.')}.")
    early_line = f"Rejected early on a small subset, since they could not win: {', '.join(early)}." if early else ""
    return [line for line in (early_line, *other) if line]


def _device_of(rung: RungResult, info: Mapping[str, Any]) -> str:
    """The device the rung's model ran on, from the run's backend info (one model's, or keyed by model name
    when the task weighs several); the cpu when it was not recorded."""
    key = rung.name.partition("@")[2]
    own = info.get(key) if key and isinstance(info.get(key), Mapping) else info
    return str(own.get("device") or "cpu")


def decide(results: RunResults, spec: TaskSpec | Mapping[str, Any], prices: Prices, *,
           device: str | None = None, retrain_every_days: float | None = None) -> Decision:
    """The winner, runner-up, Pareto frontier, break-even and next step for a run's results.

    ``device`` prices every self-hosted option on that device-hour (e.g. ``"a10g"``) instead of the
    one it ran on; ``retrain_every_days`` adds the retraining cost to tuned options' monthly costs.
    """
    s = _spec(spec)
    rungs = list(results.rungs)
    # the self-hosted device the run used; a results.json whose environment was masked or dropped: the cpu
    env = results.environment if isinstance(results.environment, Mapping) else {}
    info = env.get("backend") if isinstance(env.get("backend"), Mapping) else {}
    m = _candidates(results)
    built = (_option(r, s, _device_of(r, info), prices, device, retrain_every_days, m) for r in rungs)
    ranked = _ties_by_quality(sorted((o for o in built if o is not None), key=_rank_key))
    win = ranked[0] if ranked and ranked[0].meets_constraints else None
    second = ranked[1] if win is not None and len(ranked) > 1 else None
    comparison, said = _comparison(results.comparisons, win.name, second.name) if second else (None, "")
    by_name = {r.name: r for r in rungs}
    break_even, lines = _break_even(ranked, by_name, s.constraints.requests_per_month, retrain_every_days)
    pareto = _pareto(ranked)
    front = f"Pareto frontier (quality, cost per 1,000 requests, p95 latency): {', '.join(pareto)}." if pareto else ""
    distilled = _distillation(ranked, by_name, results.comparisons)
    reasons = [r for r in (*_reasons(win, ranked, s, m), said, *lines, *(d["said"] for d in distilled), front,
                           *_not_scored(rungs)) if r]
    return Decision(winner=win.name if win else None, status=_status(win, ranked),
                    runner_up=second.name if second else None, comparison=comparison, options=tuple(ranked),
                    pareto=pareto, break_even=break_even, distillation=distilled,
                    next_step=_next_step(win, ranked, s, rungs, m) + _payback(win, break_even), reasons=tuple(reasons))
