"""The climb: rungs in order, either as a fixed list or walked with the policy.

:func:`climb` returns a :class:`Climb`: every rung's result in the order acted on, the rungs whose stored
results were reused, and the :class:`~tunewise.results.LadderRecord` of the walk. With the policy, each step
asks :func:`~tunewise.ladder.policy.next_action` what to do (run, skip, escalate, stop) from what the rungs so
far measured; a rung's run may end in an early rejection, which the record keeps as a ``reject`` step.

Out of scope: the policy's rules (``policy.py``), scoring a rung (``attempt.py``) and its store records
(``lifecycle.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from ..evaluation.evaluator import serving_latency
from ..evaluation.scoring import compare_rungs
from ..results import Comparison, EarlyRejection, LadderBudget, LadderRecord, RungResult
from ..task import RungSpec, TaskSpec
from .attempt import attempt
from .context import RunContext
from .lifecycle import Lifecycle
from .planning import budget as budget_of
from .planning import deadline, observe, plan, pricings
from .policy import Action, Budget, Observed, PolicyConfig, Pricing, next_action, spent

__all__ = ["Climb", "climb", "compare_to_best"]


@dataclass(frozen=True)
class Climb:
    results: tuple[RungResult, ...]
    reused: tuple[str, ...]  # rungs whose stored results were reused
    ladder: LadderRecord
    comparisons: tuple[Comparison, ...]  # every finished rung against the best one; a distilled student vs its teacher


def climb(run: RunContext, rungs: Sequence[RungSpec], *, policy: bool,
          config: PolicyConfig = PolicyConfig()) -> Climb:
    """Score ``rungs``: with the ``policy``, or every one of them in order."""
    life = Lifecycle(run.store, run.run_id)
    results, reused, ladder = _walk(run, life, rungs, config) if policy else _fixed(run, life, rungs)
    return Climb(results, reused, ladder, compare_to_best(run, results))


def compare_to_best(run: RunContext, results: Sequence[RungResult]) -> tuple[Comparison, ...]:
    """Every finished rung against the best one, and each distilled student against its teacher, paired on the
    same test examples."""
    done = [r for r in results if r.status == "finished" and r.primary is not None]
    if len(done) < 2:
        return ()
    best = max(done, key=lambda r: r.primary.value)
    vec = {r.name: run.correct(r.predictions) for r in done}  # the task's match rule, as the metric and the policy
    pairs = [(best.name, r.name) for r in done if r.name != best.name]
    for r in done:  # a distilled student against its teacher, whichever is the best
        teacher = ((r.extras or {}).get("distillation") or {}).get("teacher")
        if teacher in vec and {r.name, teacher} not in [set(p) for p in pairs]:
            pairs.append((r.name, teacher))
    return tuple(Comparison(a=a, b=b, **compare_rungs(vec[a], vec[b], seed=run.spec.seed)) for a, b in pairs)


_Steps = tuple[tuple[RungResult, ...], tuple[str, ...], LadderRecord]


def _fixed(run: RunContext, life: Lifecycle, rungs: Sequence[RungSpec]) -> _Steps:
    """Every named rung, in order, no policy: reuse a finished result, else run it."""
    results: list[RungResult] = []
    reused: list[str] = []
    for rung in rungs:
        stored = _reuse(run, life, rung)
        if stored is not None:
            reused.append(rung.name)
        results.append(stored or life.run(rung, lambda rung=rung: attempt(run, rung)))
    return tuple(results), tuple(reused), LadderRecord(mode="fixed")


def _walk(run: RunContext, life: Lifecycle, rungs: Sequence[RungSpec], config: PolicyConfig) -> _Steps:
    """Climb the ladder with the policy, one :class:`Action` at a time."""
    spec = run.spec
    by_name = {r.name: r for r in rungs}
    planned = [plan(r, spec, run.splits.train, dev=run.splits.dev or (), pool=run.splits.unlabelled) for r in rungs]
    plan_of = {p.name: p for p in planned}
    budget, price = budget_of(spec), pricings(spec, run.prices)
    target = spec.target.get(run.metric)
    observed: dict[str, Observed] = {}
    results: list[RungResult] = []
    reused: list[str] = []
    actions: list[Action] = []

    def settle(result: RungResult) -> None:
        results.append(result)
        correct = run.correct(result.predictions) if result.status == "finished" and result.primary else None
        rung = by_name[result.name]
        observed[result.name] = observe(result, plan_of[result.name].family, pricing=price[rung.model],
                                        model=run.spec_for(rung).model, prices=run.prices, correct=correct,
                                        key=rung.model)

    while True:
        action = next_action(planned, observed, target=target, metric=run.metric, budget=budget,
                             n_test=len(run.test), pricing=price, config=config, seed=spec.seed)
        actions.append(action)
        if action.kind == "stop":
            break
        if action.kind == "escalate":
            for name in action.skipped:
                settle(life.skip(by_name[name], f"skipped: {action.reason}"))
            continue
        rung = by_name[action.rung]
        if action.params:  # fitted to the budget (a time allowance, a subset of train): another config_hash
            params = dict(action.params)
            model = params.pop("teacher_model", rung.model)  # distill: runs on its chosen teacher's model
            rung = rung.model_copy(update={"params": {**rung.params, **params}, "model": model})
        if action.kind == "skip":
            settle(life.skip(rung, action.reason))
            continue
        stored = _reuse(run, life, rung)
        if stored is not None:
            settle(stored)
            reused.append(rung.name)
            continue
        # early rejection measures against the best rung that could be shipped: one over the latency limit
        # cannot be the answer, so a rung unable to beat it may still be the best that can
        shippable = {r.name for r in results if _serves_in_time(r, spec.constraints.max_latency_ms)}
        finished = [o for o in observed.values() if o.status == "finished" and o.low is not None and o.name in shippable]
        best = max(finished, key=lambda o: o.value) if finished else None
        result = life.run(rung, lambda: attempt(
            run, rung, screen=action.screen, best=(best.name, best.low) if best else None,
            deadline_s=deadline(plan_of[rung.name], observed, budget, price[rung.model]), delta=config.look_delta))
        if result.status == "skipped":  # rejected early, stopped by the deadline, or it cannot run here
            rejection = result.extras.get("early_rejection")
            actions.append(Action.from_json(rejection) if rejection else Action("skip", rung.name, result.reason or ""))
        settle(result)
    from ..strategies.finetuning import forecast_whole_set  # a budget-fitted tuning rung's whole-set forecast

    results = forecast_whole_set(results)
    return tuple(results), tuple(reused), _record(actions, observed, target=target, metric=run.metric,
                                                  budget=budget, pricing_basis=_basis(spec, price), config=config)


def _basis(spec: TaskSpec, price: dict[str | None, Pricing]) -> str:
    """How seconds and tokens became money: the one model's basis, or each model's."""
    if not spec.several_models:
        return price[None].basis
    return "; ".join(f"{m.key}: {price[m.key].basis}" for m in spec.model_specs)


def _reuse(run: RunContext, life: Lifecycle, rung: RungSpec) -> RungResult | None:
    """A rung finished before, its stored predictions scored again with the current metrics and intervals (a
    result stored by an older tunewise may carry intervals it no longer trusts); the model calls are reused."""
    stored = life.reuse(rung)
    if stored is None or not stored.predictions:
        return stored
    scored = run.score(stored.predictions)
    return replace(stored, metrics=scored["metrics"], per_label=scored.get("per_label"),
                   confusions=scored.get("confusions"), parse=scored.get("parse"))


def _serves_in_time(result: RungResult, max_latency_ms: float | None) -> bool:
    """Whether the rung's single-request p95 latency meets the task's limit (as the decision judges it)."""
    if max_latency_ms is None:
        return True
    p95 = serving_latency(result.usage or {}).get("p95")
    return p95 is not None and 1000 * p95 <= max_latency_ms


def _record(actions: Sequence[Action], observed: dict[str, Observed], *, target: float | None, metric: str,
            budget: Budget, pricing_basis: str, config: PolicyConfig) -> LadderRecord:
    rejected = [a for a in actions if a.kind == "reject"]
    spent_s, spent_usd = spent(observed)
    return LadderRecord(
        mode="policy", target={metric: target} if target is not None else None,
        budget=LadderBudget(hours=budget.hours, usd=budget.usd,
                            tuning_hours_default=None if budget.hours is not None else budget.tuning_hours_default,
                            spent_s=spent_s, spent_usd=spent_usd, pricing=pricing_basis),
        config=config, actions=tuple(actions),
        early_rejection=EarlyRejection(rungs=tuple(a.rung for a in rejected),
                                       saved_calls=sum(a.saved_calls or 0.0 for a in rejected),
                                       saved_s=sum(a.saved_s or 0.0 for a in rejected)))
