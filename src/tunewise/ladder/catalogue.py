"""The rungs tunewise knows and the order it climbs them: cheapest first.

Each built-in rung is a named configuration of a strategy. The default ladder for a task kind
runs the LLM-free baselines first (the probe for classification only), then the prompt rungs from zero-shot to
chain-of-thought, then ``optimized`` (an instruction and demonstrations searched on dev), so a wall is declared only
after prompting at its best was measured or skipped on its own estimate. Users can name rungs (``--rungs``), list them in ``task.yaml``, or define their
own ``{name, strategy, params}`` entries.

With no ``--rungs`` and no ``rungs:`` in the task, ``run_task`` walks :func:`policy_ladder` (the
default ladder plus the tuning rungs) with the escalation policy of ``policy.py`` (stop when the
target is met with confidence, escalate to fine-tuning when prompting plateaus, budgets); a named
list is run as given, without the policy.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import TaskSpecError
from ..task import ModelSpec, RungSpec, TaskSpec

__all__ = ["BUILTIN_RUNGS", "DEFAULT_LADDER", "TUNING_RUNGS", "LLM_FREE_STRATEGIES", "TRAINABLE_KINDS", "resolve_rungs",
           "needs_llm", "trainable", "policy_ladder", "uses_policy"]


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
        # an instruction and bootstrapped demonstrations searched on dev within a call budget (strategies/optimize.py)
        RungSpec(name="optimized", strategy="optimize", params={"k": 4, "candidates": 4, "max_calls": 400}),
        # fine-tuning (see strategies/finetuning.py); parameters are TuneSettings fields
        RungSpec(name="lora", strategy="finetune", params={"method": "lora"}),
        RungSpec(name="qlora", strategy="finetune", params={"method": "qlora"}),
        RungSpec(name="full", strategy="finetune", params={"method": "full"}),
        RungSpec(name="lora_classifier", strategy="finetune", params={"method": "lora", "head": "classifier"}),
        RungSpec(name="learning_curve", strategy="learning_curve", params={"of": "finetune"}),
        # a small task model: the sentence encoder fine-tuned with a classification head (strategies/encoder_ft.py)
        RungSpec(name="encoder_ft", strategy="encoder_ft"),
        # a prompted teacher labels a pool (data.unlabelled, else train's inputs with labels hidden) and a student
        # learns its answers: encoder_ft for classification, lora for extraction and generation (strategies/distill.py)
        RungSpec(name="distill", strategy="distill", params={"teacher": "few_shot_retrieved"}),
        RungSpec(name="probe_curve", strategy="learning_curve", params={"of": "probe", "include_all": True}),
    )
}
#: rungs (and strategies) that only make sense for classification
CLASSIFICATION_ONLY = frozenset({"probe", "lora_classifier", "probe_curve", "encoder_ft"})

DEFAULT_LADDER: dict[str, tuple[str, ...]] = {
    "classification": ("knn", "probe", "zero_shot", "zero_shot_generate", "role", "few_shot_random",
                       "few_shot_balanced", "few_shot_retrieved", "cot", "optimized"),
    "extraction": ("knn", "zero_shot", "role", "few_shot_random", "few_shot_retrieved", "cot", "optimized"),
    "generation": ("knn", "zero_shot", "role", "few_shot_random", "few_shot_retrieved", "cot", "optimized"),
}

#: appended to the default ladder when the policy walks it (learning_curve only when the task has a target;
#: encoder_ft, the cheapest strong fine-tune for classification, first)
TUNING_RUNGS = ("encoder_ft", "lora", "learning_curve")

LLM_FREE_STRATEGIES = frozenset({"knn", "probe", "encoder_ft"})
#: strategies that build their own model backend (a trained artifact) instead of using the run's
OWN_BACKEND_STRATEGIES = frozenset({"finetune", "learning_curve"})


def needs_llm(rung: RungSpec) -> bool:
    """Whether the rung needs the run's (base model) backend."""
    return rung.strategy not in LLM_FREE_STRATEGIES | OWN_BACKEND_STRATEGIES


#: model kinds tunewise can train (fine-tuning needs a transformers model)
TRAINABLE_KINDS = frozenset({"local", "hf"})


def trainable(model: ModelSpec) -> bool:
    """Whether tuning rungs run on ``model``: a transformers model the task does not mark ``tune: false``."""
    return model.tune and model.id.partition(":")[0] in TRAINABLE_KINDS


def _tunes(rung: RungSpec) -> bool:
    return rung.strategy in OWN_BACKEND_STRATEGIES and rung.params.get("of") != "probe"


def _on_models(spec: TaskSpec, rung: RungSpec, key: str | None) -> list[RungSpec]:
    """``rung`` on the model named ``key``, or on every model it applies to; named ``rung@model`` when the task
    weighs several models (one model: the rung as it is, so one-model runs keep their names)."""
    base = rung.name.partition("@")[0]
    uses_model = needs_llm(rung) or _tunes(rung)
    if key is not None:
        if not uses_model:
            raise TaskSpecError(f"rung '{base}' uses no language model, so it takes no '@{key}'.")
        spec.model_named(key)  # an unknown name is an error that lists the task's models
    if not spec.several_models or not uses_model:
        return [rung.model_copy(update={"name": base, "model": None})]
    models = [spec.model_named(key)] if key is not None else [
        m for m in spec.model_specs if not _tunes(rung) or trainable(m)]
    return [rung.model_copy(update={"name": f"{base}@{m.key}", "model": m.key}) for m in models]


def resolve_rungs(spec: TaskSpec, names: Sequence[str] | None = None) -> list[RungSpec]:
    """Rungs to run: ``names`` (e.g. from ``--rungs``), else the task's ``rungs``, else the default ladder.

    With several models, a rung that uses a language model runs on each of them, as ``rung@model`` (tuning
    rungs on each model tunewise can train), models in the order the task lists them; ``rung@model`` names one.
    """
    custom = {r.name: r for r in (spec.rungs or []) if isinstance(r, RungSpec)}
    wanted = list(names) if names else [r if isinstance(r, str) else r.name for r in (spec.rungs or [])]
    wanted = wanted or list(DEFAULT_LADDER[spec.kind])
    rungs: list[RungSpec] = []
    for name in wanted:
        base, at, key = name.partition("@")
        rung = custom.get(name) or custom.get(base) or BUILTIN_RUNGS.get(base)
        if rung is None:
            known = ", ".join([*BUILTIN_RUNGS, *custom])
            raise TaskSpecError(f"unknown rung '{name}' (known: {known}).")
        if spec.kind != "classification" and (rung.strategy in CLASSIFICATION_ONLY or base in CLASSIFICATION_ONLY):
            raise TaskSpecError(f"rung '{base}' only applies to classification tasks, not {spec.kind}.")
        if rung.strategy == "distill" and not at:  # teacher: rung@model names the model the teacher is prompted on
            key = str(rung.params.get("teacher") or "").partition("@")[2]
            at = "@" if key else ""
        rungs.extend(_on_models(spec, rung, (key if at else None) or rung.model))
    if len({r.name for r in rungs}) != len(rungs):
        raise TaskSpecError("each rung may appear only once in a run.")
    return rungs


def uses_policy(spec: TaskSpec, names: Sequence[str] | None = None) -> bool:
    """The policy walks the ladder unless the rungs are named (``--rungs`` or ``rungs:`` in the task)."""
    return not names and not spec.rungs


def policy_ladder(spec: TaskSpec) -> list[RungSpec]:
    """The default ladder for the task kind, cheapest first, then the tuning rungs: ``encoder_ft`` (classification),
    ``distill`` when the task has an unlabelled pool (classification), ``lora`` and ``learning_curve`` (with a
    target)."""
    tuning = [n for n in TUNING_RUNGS if (n != "learning_curve" or spec.target)
              and (n not in CLASSIFICATION_ONLY or spec.kind == "classification")]
    rungs = resolve_rungs(spec, [*DEFAULT_LADDER[spec.kind], *tuning])
    if spec.data.unlabelled is not None and spec.kind == "classification":
        # one distill rung after the fine-tuned encoder: the walk picks its teacher (the best prompt rung, on
        # whichever model) and runs it only when that teacher beats the cheaper candidates (ladder/policy.py)
        at = next((i + 1 for i, r in enumerate(rungs) if r.strategy == "encoder_ft"), len(rungs))
        rungs.insert(at, RungSpec(name="distill", strategy="distill",
                                  params={"student": "encoder_ft", "pool": "unlabelled", "gold": True}))
    return rungs
