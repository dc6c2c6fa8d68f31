"""The rungs tunewise knows and the order it climbs them: cheapest first.

Each built-in rung is a named configuration of a strategy. The default ladder for a task kind
runs the LLM-free baselines first (classification only), then the prompt rungs from zero-shot to
chain-of-thought. Users can name rungs (``--rungs``), list them in ``task.yaml``, or define their
own ``{name, strategy, params}`` entries.

With no ``--rungs`` and no ``rungs:`` in the task, ``run_task`` walks :func:`policy_ladder` (the
default ladder plus the tuning rungs) with the escalation policy of ``policy.py`` (stop when the
target is met with confidence, escalate to fine-tuning when prompting plateaus, budgets); a named
list is run as given, without the policy.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import TaskSpecError
from ..task import RungSpec, TaskSpec

__all__ = ["BUILTIN_RUNGS", "DEFAULT_LADDER", "TUNING_RUNGS", "LLM_FREE_STRATEGIES", "resolve_rungs", "needs_llm",
           "policy_ladder", "uses_policy"]


def _prompt(name: str, **params: object) -> RungSpec:
    return RungSpec(name=name, strategy="prompt", params=params)


BUILTIN_RUNGS: dict[str, RungSpec] = {
    r.name: r
    for r in (
        RungSpec(name="knn", strategy="knn", params={"k": 1}),
        RungSpec(name="probe", strategy="probe"),
        _prompt("zero_shot", mode="score", calibrate=True),
        _prompt("zero_shot_generate", mode="generate"),
        _prompt("role", mode="score", calibrate=True, role="expert"),
        _prompt("few_shot_random", mode="score", k=8, selection="random", stability=2),
        _prompt("few_shot_balanced", mode="score", k=8, selection="balanced"),
        _prompt("few_shot_retrieved", mode="score", k=8, selection="retrieved", choices="demos"),
        _prompt("cot", mode="cot"),
        # fine-tuning (see strategies/finetuning.py); parameters are TuneSettings fields
        RungSpec(name="lora", strategy="finetune", params={"method": "lora"}),
        RungSpec(name="qlora", strategy="finetune", params={"method": "qlora"}),
        RungSpec(name="full", strategy="finetune", params={"method": "full"}),
        RungSpec(name="lora_classifier", strategy="finetune", params={"method": "lora", "head": "classifier"}),
        RungSpec(name="learning_curve", strategy="learning_curve", params={"of": "finetune"}),
        RungSpec(name="probe_curve", strategy="learning_curve", params={"of": "probe", "include_all": True}),
    )
}
#: rungs that only make sense for classification
CLASSIFICATION_ONLY = frozenset({"knn", "probe", "lora_classifier", "probe_curve"})

DEFAULT_LADDER: dict[str, tuple[str, ...]] = {
    "classification": ("knn", "probe", "zero_shot", "zero_shot_generate", "role", "few_shot_random",
                       "few_shot_balanced", "few_shot_retrieved", "cot"),
    "extraction": ("zero_shot", "role", "few_shot_random", "few_shot_retrieved", "cot"),
    "generation": ("zero_shot", "role", "few_shot_random", "few_shot_retrieved", "cot"),
}

#: appended to the default ladder when the policy walks it (learning_curve only when the task has a target)
TUNING_RUNGS = ("lora", "learning_curve")

LLM_FREE_STRATEGIES = frozenset({"knn", "probe"})
#: strategies that build their own model backend (a trained artifact) instead of using the run's
OWN_BACKEND_STRATEGIES = frozenset({"finetune", "learning_curve"})


def needs_llm(rung: RungSpec) -> bool:
    """Whether the rung needs the run's (base model) backend."""
    return rung.strategy not in LLM_FREE_STRATEGIES | OWN_BACKEND_STRATEGIES


def resolve_rungs(spec: TaskSpec, names: Sequence[str] | None = None) -> list[RungSpec]:
    """Rungs to run: ``names`` (e.g. from ``--rungs``), else the task's ``rungs``, else the default ladder."""
    custom = {r.name: r for r in (spec.rungs or []) if isinstance(r, RungSpec)}
    wanted = list(names) if names else [r if isinstance(r, str) else r.name for r in (spec.rungs or [])]
    wanted = wanted or list(DEFAULT_LADDER[spec.kind])
    rungs: list[RungSpec] = []
    for name in wanted:
        rung = custom.get(name) or BUILTIN_RUNGS.get(name)
        if rung is None:
            known = ", ".join([*BUILTIN_RUNGS, *custom])
            raise TaskSpecError(f"unknown rung '{name}' (known: {known}).")
        if spec.kind != "classification" and (rung.strategy in LLM_FREE_STRATEGIES or name in CLASSIFICATION_ONLY):
            raise TaskSpecError(f"rung '{name}' only applies to classification tasks, not {spec.kind}.")
        rungs.append(rung)
    if len({r.name for r in rungs}) != len(rungs):
        raise TaskSpecError("each rung may appear only once in a run.")
    return rungs


def uses_policy(spec: TaskSpec, names: Sequence[str] | None = None) -> bool:
    """The policy walks the ladder unless the rungs are named (``--rungs`` or ``rungs:`` in the task)."""
    return not names and not spec.rungs


def policy_ladder(spec: TaskSpec) -> list[RungSpec]:
    """The default ladder for the task kind, cheapest first, then ``lora`` (and ``learning_curve`` with a target)."""
    tuning = [n for n in TUNING_RUNGS if n != "learning_curve" or spec.target]
    return resolve_rungs(spec, [*DEFAULT_LADDER[spec.kind], *tuning])
