"""The fine-tuning rungs: LoRA, QLoRA and full fine-tuning, and learning curves over them.

Strategy ``finetune`` trains on (a nested subset of) the training split and returns a
:class:`TunedCandidate`: the trained artifact behind a backend, answering through a
:class:`~tunewise.strategies.prompting.PromptProgram` with a *compact* prompt (the task's
instructions and the input; no label list, no demonstrations: the weights carry them). Training
renders every example with that same program and the same chat template, so the model is
trained on exactly the prompt it is evaluated with; the evaluator, statistics and call cache
are the ones every other rung uses. ``head: classifier`` trains a classification head (one
forward per input, real probabilities) instead of the LM head.

Strategy ``learning_curve`` trains ``finetune`` (or fits the embedding ``probe``) on nested
subsets (for classification ``sizes`` per label, otherwise ``fractions`` of train), ``seeds`` times
each (the task's seed, then the next ones: default 3 for the probe, 1 for fine-tuning; more than one
measures the training-run variation, seed and subset draw),
scores each run on the test split, fits an inverse power law and forecasts the number of labelled
examples the target needs. Every point is scored on the same test examples, so the band comes from
a bootstrap that resamples those examples jointly over the points (each point's per-example scores:
correctness, or field counts for extraction) and refits, plus the between-run spread where seeds
measure it (with one run a size, each run is assumed to vary by its test se, and the curve says so;
``tunewise.training.curves``). It also back-tests the fit: the curve fitted without the largest size
forecasts what the runs at that size measure, with the curve's band plus those runs' own variation.
Artifacts
are keyed by content (base model, settings, examples, prompt, seed), so a curve point and a
``lora`` rung with the same configuration share one training run.

Budgets: :func:`training_work` counts what a rung will train in tokens (``training.timing``) for the
ladder, which fits the rung to what is left (``limit`` + ``fit_reason``, or ``max_points`` for a curve) and
gives it a ``time_budget_minutes``. Under that allowance the training's first steps are a timed trial: when
it re-estimates the run past the allowance, ``finetune`` trains the largest nested subset that fits the
rest (or is skipped below 32 examples / 2 per label), and a curve stops before that size. Either way the
result says so (``extras["training"]["fitted_to_budget"]``, ``extras["curve"]["dropped"]``), and a curve
states its forecast for all of train (``at_full_train``), which a fitted rung of the same run takes as its
whole-set forecast (:func:`forecast_whole_set`).

Out of scope: the training loop (``tunewise.training``), metrics, the ladder's escalation policy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..backends.base import Backend
from ..errors import RungSkipped, StoreError, TaskSpecError
from ..evaluation.records import Prediction
from ..prompts import PromptTemplate, answer_text
from ..training.settings import TuneSettings, settings_from_params
from ..training.subsets import describe_subset, nested_order, subset_hash, training_subset
from .base import Candidate, PrepareContext, register
from .prompting import PromptProgram, PromptSettings

__all__ = ["TunedCandidate", "tuned_program", "prepare_finetune", "prepare_learning_curve", "train_rung_artifact",
           "training_work", "TrainingWork", "forecast_whole_set", "TUNED_INSTRUCTIONS"]

TUNED_INSTRUCTIONS = {
    "classification": "Classify the input. Reply with the label only.",
    "extraction": "Extract the information from the input as a JSON object. Reply with the JSON only.",
    "generation": "Respond to the input.",
}
TUNED_TEMPLATE = PromptTemplate(system="{{ instructions }}")
FORMAT_VERSION = 1  # bump when the training format changes: old artifacts are then not reused


@dataclass
class TunedCandidate(Candidate):
    """A trained artifact answering through its own (cached) backend and the compact prompt."""

    rung: str
    config: dict[str, Any]
    program: PromptProgram
    backend: Backend
    extras: dict[str, Any] = field(default_factory=dict)
    uses_llm: bool = True

    def predict(self, examples: Sequence[Any], *, backend: Backend | None = None) -> list[Prediction]:
        return self.program.predict(examples, backend=self.backend)

    @property
    def own_backend(self) -> Backend:
        return self.backend

    def close(self) -> None:
        self.backend.close()


def tuned_program(spec: Any, labels: Sequence[str], rung_name: str) -> PromptProgram:
    """The compact prompt a tuned model is trained on and evaluated with."""
    classification = spec.kind == "classification"
    settings = PromptSettings(mode="score" if classification else "generate",
                              max_new_tokens=32 if classification else 128)
    variables = {"instructions": spec.instructions or TUNED_INSTRUCTIONS[spec.kind], "labels": list(labels)}
    schema = None
    if spec.kind == "extraction":
        from .prompting import _schema

        schema = _schema(spec)
    return PromptProgram(rung=rung_name, config={}, template=TUNED_TEMPLATE, variables=variables, settings=settings,
                         kind=spec.kind, labels=list(labels), schema=schema)


def _check_runnable(rung_name: str, s: TuneSettings, spec: Any) -> None:
    kind = spec.model.partition(":")[0]
    if kind not in ("local", "hf"):
        raise TaskSpecError(f"rung '{rung_name}': fine-tuning needs a transformers model (local: or hf:), "
                            f"not {spec.model!r}.")
    if s.head == "classifier" and spec.kind != "classification":
        raise TaskSpecError(f"rung '{rung_name}': the classifier head only applies to classification tasks.")
    if s.method == "qlora":
        import importlib.util

        import torch

        if not torch.cuda.is_available():
            raise RungSkipped(f"rung '{rung_name}': QLoRA needs a CUDA GPU for 4-bit bitsandbytes "
                              "and this machine has none.")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise RungSkipped(f"rung '{rung_name}': QLoRA needs bitsandbytes; `pip install bitsandbytes` to run it.")


def _artifact_key(spec: Any, s: TuneSettings, program: PromptProgram, train: Sequence[Any], dev: Sequence[Any],
                  seed: int) -> str:
    from ..backends.model_cache import resolve_model

    ident = {"format": FORMAT_VERSION, "base": resolve_model(spec.model).fingerprint, "settings": s.identity(),
             "train": subset_hash(train), "dev": subset_hash(dev), "seed": seed,
             "template": program.template.to_json(), "instructions": program.variables["instructions"],
             "labels": program.labels if s.head == "classifier" else None}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def _make_backend(spec: Any, artifact: Any, s: TuneSettings) -> Backend:
    if s.head == "classifier":
        from ..backends.classifier import ClassifierBackend

        return ClassifierBackend(spec.model, adapter=artifact.path, max_length=s.max_length)
    from ..backends.local import LocalBackend

    if artifact.kind == "model":
        return LocalBackend(f"hf:{artifact.path}")
    return LocalBackend(spec.model, adapter=artifact.path)


@dataclass(frozen=True)
class _RungTraining:
    """A rung's training job and what its candidate needs to be described."""

    job: Any  # TrainingJob
    program: PromptProgram
    subset: Sequence[Any]
    dev: Sequence[Any]
    key: str


def _training_job(rung_name: str, ctx: PrepareContext, s: TuneSettings, *,
                  s_per_token: float | None = None) -> _RungTraining:
    """The content-keyed :class:`TrainingJob` for ``s`` on this context's splits (nothing trained yet);
    ``s_per_token``: the rate a timed trial measured (then it runs no trial of its own, see ``training.timing``)."""
    from ..training.trainer import TrainingJob

    spec = ctx.spec
    _check_runnable(rung_name, s, spec)
    labels = list(ctx.splits.labels or ())
    subset = training_subset(ctx.splits.train, per_label=s.per_label, fraction=s.fraction, limit=s.limit,
                             seed=ctx.seed)
    dev = training_subset(ctx.splits.dev, limit=s.dev_limit, seed=ctx.seed)
    if not subset:
        raise TaskSpecError(f"rung '{rung_name}': the training split is empty.")
    program = tuned_program(spec, labels, rung_name)
    key = _artifact_key(spec, s, program, subset, dev, ctx.seed)
    if ctx.artifacts is None:
        raise TaskSpecError(f"rung '{rung_name}': no artifact directory is available for training.")

    def pairs(examples: Sequence[Any]) -> list[tuple[Any, str]]:
        return [(program.prompt_for(e.text, ()), answer_text(e.target)) for e in examples]

    provenance = {"task": spec.name, "kind": spec.kind, "data_hash": ctx.splits.data_hash,
                  "train_subset": describe_subset(subset), "dev_subset": describe_subset(dev),
                  "prompt": {"template": program.template.to_json(), "instructions": program.variables["instructions"],
                             "chat_template": "the base tokenizer's"},
                  "labels": labels or None, "artifact_key": key, **ctx.provenance}
    job = TrainingJob(base_model=spec.model, settings=s, train=pairs(subset), dev=pairs(dev),
                      out_dir=ctx.artifacts / key, seed=ctx.seed, labels=labels if spec.kind == "classification"
                      else (), provenance=provenance, s_per_token=s_per_token)
    return _RungTraining(job=job, program=program, subset=subset, dev=dev, key=key)


def _train(rung_name: str, ctx: PrepareContext, planned: _RungTraining, label: str | None) -> Any:
    from ..training.trainer import read_artifact, train

    if not ctx.may_train:
        found = read_artifact(planned.job.out_dir)
        if found is None:
            raise StoreError(f"rung '{rung_name}': its trained artifact {planned.job.out_dir} is missing and "
                             "serving never trains; run the task again to train it.")
        return found
    report = None
    if ctx.report is not None:
        title = f"{label or rung_name}: training"

        def report(done: int, total: int) -> None:
            ctx.report(title, done, total)
    return train(planned.job, progress=report)


def train_rung_artifact(rung: Any, ctx: PrepareContext) -> Any:
    """Train (or reuse) a ``finetune`` rung's artifact only: no backend, no evaluation.

    The artifact directory is the one :func:`prepare_finetune` uses for the same rung, task and
    data (content-keyed), so a later run of the rung finds and reuses it. Under ``accelerate
    launch`` every process calls this; only rank 0 writes the artifact.
    """
    if rung.strategy != "finetune":
        raise TaskSpecError(f"rung '{rung.name}' uses strategy '{rung.strategy}'; only 'finetune' rungs can be "
                            "trained on their own.")
    s = settings_from_params(rung.name, rung.params)
    return _train(rung.name, ctx, _training_job(rung.name, ctx, s), None)


def build_tuned(rung_name: str, ctx: PrepareContext, s: TuneSettings, *, label: str | None = None,
                shrink: bool = True) -> TunedCandidate:
    """Train (or reuse) the artifact for ``s`` and wrap it as a candidate. When the timed trial finds that the
    training does not fit its ``time_budget_minutes``, it trains the largest nested subset that does (``shrink``;
    else the :class:`~tunewise.training.trainer.TrialOverBudget` propagates)."""
    from ..training.trainer import TrialOverBudget

    spec = ctx.spec
    planned = _training_job(rung_name, ctx, s)
    fitted = _fitted_by_ladder(ctx, s, planned)
    try:
        artifact = _train(rung_name, ctx, planned, label)
    except TrialOverBudget as over:
        if not shrink:
            raise
        planned, fitted = _shrink_after_trial(rung_name, ctx, s, planned, over)
        artifact = _train(rung_name, ctx, planned, label)
    program, subset, dev, key = planned.program, planned.subset, planned.dev, planned.key
    training = {**artifact.training, **({"fitted_to_budget": fitted} if fitted else {})}
    backend = _make_backend(spec, artifact, s)
    if ctx.wrap_backend is not None:
        backend = ctx.wrap_backend(backend)
    program.config = {"strategy": "prompt", "template": program.template.to_json(),
                      "instructions": program.variables["instructions"], "mode": program.settings.mode}
    config = {"strategy": "finetune", **s.identity(), "model": spec.model, "artifact": str(artifact.path),
              "artifact_kind": artifact.kind, "artifact_key": key, "artifact_reused": artifact.reused,
              "train_subset": describe_subset(subset), "dev_subset": describe_subset(dev),
              "prompt": program.config, "seed": ctx.seed, "training": training}
    return TunedCandidate(rung=rung_name, config=config, program=program, backend=backend,
                          extras={"training": training})


#: what a result trained on a budget-fitted subset says until a learning curve forecasts the whole set
NOT_FORECAST = {"status": "not_forecast", "message": "The whole-set result is not forecast: no learning curve ran."}


def _whole(ctx: PrepareContext, s: TuneSettings) -> int:
    """Training examples the rung's own subset rules select (a limit the ladder set for the budget left out)."""
    limit = None if s.fit_reason else s.limit
    return len(training_subset(ctx.splits.train, per_label=s.per_label, fraction=s.fraction, limit=limit,
                               seed=ctx.seed))


def _fitted_by_ladder(ctx: PrepareContext, s: TuneSettings, planned: _RungTraining) -> dict[str, Any] | None:
    """The record of a subset the ladder fitted to its budget (``fit_reason`` set), else None."""
    if not s.fit_reason:
        return None
    return {"examples": len(planned.subset), "of": _whole(ctx, s), "by": "the ladder's estimate",
            "reason": s.fit_reason, "whole_set_forecast": dict(NOT_FORECAST)}


def _shrink_after_trial(rung_name: str, ctx: PrepareContext, s: TuneSettings, planned: _RungTraining,
                        over: Any) -> tuple[_RungTraining, dict[str, Any]]:
    """The largest nested subset that fits what the trial left of ``time_budget_minutes`` at the rate it measured
    (its own trial skipped: the overrun limit still guards it); :class:`RungSkipped` below the minimum."""
    from ..training.timing import describe_rate, fit_sizes, largest_fitting, minimum_examples

    trial, n_now = over.trial, len(planned.subset)
    left = over.budget_s - float(trial.get("elapsed_s") or 0.0)  # measured by the trial: the same on a rerun
    order = nested_order(ctx.splits.train, per_label=s.per_label, fraction=s.fraction, seed=ctx.seed)[:n_now]
    lengths, _ = _token_lengths(ctx.spec, s, list(ctx.splits.train) + list(ctx.splits.dev or ()))
    labels = len({e.target for e in order}) if ctx.spec.kind == "classification" else 0
    minimum = minimum_examples(labels)
    sizes = fit_sizes([lengths[e.id] for e in order], s, minimum=minimum,
                      dev_tokens=sum(lengths.get(e.id, 0) for e in planned.dev))
    found = largest_fitting([x for x in sizes if x[0] < n_now], trial["s_per_token"], left)
    if found is None:
        raise RungSkipped(f"rung '{rung_name}' skipped to stay within budget: {over}; even the smallest subset it "
                          f"may train on ({minimum} examples: at least 32, and 2 per label) would not fit the "
                          f"{max(0.0, left):.0f} s left")
    n, estimate = found
    fitted_s = s.model_copy(update={"limit": n, "time_budget_minutes": max(left, 1.0) / 60})
    whole = _whole(ctx, s)
    reason = (f"{over}; trained instead on the largest nested stratified subset that fits the {left:.0f} s left "
              f"at {describe_rate(trial['s_per_token'])}: {n:,} of {whole:,} examples, estimated {estimate:.0f} s")
    fitted = {"examples": n, "of": whole, "by": "the timed trial", "reason": reason,
              "whole_set_forecast": dict(NOT_FORECAST), **({"ladder_reason": s.fit_reason} if s.fit_reason else {})}
    return _training_job(rung_name, ctx, fitted_s, s_per_token=trial["s_per_token"]), fitted


@register("finetune")
def prepare_finetune(rung: Any, ctx: PrepareContext) -> TunedCandidate:
    s = settings_from_params(rung.name, rung.params)
    return build_tuned(rung.name, ctx, s)


@dataclass(frozen=True)
class TrainingWork:
    """What a tuning rung will train, counted before it runs (the ladder's estimate and fitting)."""

    tokens: float  # work tokens over every training the rung does (``training.timing.work_tokens``)
    example_epochs: float  # examples x epochs over every training
    evaluations: int  # test-split evaluations
    examples: int  # training examples of its (largest) training, as configured
    fit_sizes: tuple[tuple[int, float], ...] = ()  # finetune: (examples, work tokens) of the subsets it may shrink to
    points: tuple[tuple[float, int], ...] = ()  # learning curve: (work tokens, evaluations) of each size, smallest first
    basis: str = ""  # how the tokens were counted


def training_work(rung: Any, spec: Any, train: Sequence[Any], dev: Sequence[Any] = ()) -> TrainingWork:
    """What a ``finetune`` or ``learning_curve`` rung will train before it runs, in tokens (the prompts and answers
    the trainer will see, with the model's tokenizer) and examples x epochs. Raises the rung's
    :class:`~tunewise.errors.TunewiseError` when it cannot run here (an ``openai:`` model, a classifier head on
    generation, QLoRA without a GPU)."""
    from ..training.timing import fit_sizes, minimum_examples, work_tokens

    curve = rung.strategy == "learning_curve"
    params = dict(rung.params)
    if curve:
        base = settings_from_params(rung.name, params, drop=_CURVE_KEYS)
        sizes = _curve_sizes(rung.name, params, spec.kind == "classification")
        runs = len(_curve_seeds(rung.name, params, 0))
        settings = [base.model_copy(update=step) for step in sizes]
    else:
        settings, runs = [settings_from_params(rung.name, params)], 1
    _check_runnable(rung.name, settings[0], spec)
    lengths, basis = _token_lengths(spec, settings[0], list(train) + list(dev))
    dev_tokens = sum(lengths[e.id] for e in training_subset(dev, limit=settings[0].dev_limit, seed=spec.seed))
    points, example_epochs = [], 0.0
    for s in settings:
        subset = training_subset(train, per_label=s.per_label, fraction=s.fraction, limit=s.limit, seed=spec.seed)
        tokens = work_tokens(sum(lengths[e.id] for e in subset), len(subset), s, dev_tokens=dev_tokens)
        points.append((runs * tokens, runs))
        example_epochs += runs * work_tokens(len(subset), len(subset), s)  # one "token" an example
    s = settings[-1]
    n = len(training_subset(train, per_label=s.per_label, fraction=s.fraction, limit=s.limit, seed=spec.seed))
    sizes: tuple[tuple[int, float], ...] = ()
    if not curve:
        order = nested_order(train, per_label=s.per_label, fraction=s.fraction, seed=spec.seed)[:n]
        labels = len({e.target for e in order}) if spec.kind == "classification" else 0
        sizes = fit_sizes([lengths[e.id] for e in order], s, minimum=minimum_examples(labels), dev_tokens=dev_tokens)
    return TrainingWork(tokens=sum(w for w, _ in points), example_epochs=example_epochs,
                        evaluations=sum(k for _, k in points), examples=n, fit_sizes=sizes,
                        points=tuple(points) if curve else (), basis=basis)


_LENGTHS: dict[tuple[Any, ...], dict[str, int]] = {}  # token counts per example id, one entry per model/prompt/data


def _token_lengths(spec: Any, s: TuneSettings, examples: Sequence[Any]) -> tuple[dict[str, int], str]:
    """Tokens the trainer computes for each example (by id) and how they were counted: with the model's tokenizer
    (cached per model, prompt and data), else approximated at 4 characters a token when it cannot be loaded."""
    from ..errors import TunewiseError
    from ..training.timing import token_lengths

    program = tuned_program(spec, (), "plan")
    instructions = program.variables["instructions"]
    key = (spec.model, spec.kind, instructions, s.head, s.max_length, subset_hash(examples))
    basis = f"tokens counted with {spec.model}'s tokenizer and the compact tuned prompt, capped at {s.max_length}"
    if key in _LENGTHS:
        return _LENGTHS[key], basis
    pairs = [(program.prompt_for(e.text, ()), answer_text(e.target)) for e in examples]
    try:
        counts = token_lengths(spec.model, s, pairs)
    except (OSError, ValueError, TunewiseError) as exc:
        chars = [len(instructions) + len(e.text) + len(answer_text(e.target)) for e in examples]
        approx = {e.id: min(s.max_length, c // 4 + 12) for e, c in zip(examples, chars)}
        return approx, f"tokens approximated at 4 characters a token ({spec.model}'s tokenizer did not load: {exc})"
    _LENGTHS.clear()  # one task's data at a time: the entry can be large
    _LENGTHS[key] = {e.id: c for e, c in zip(examples, counts)}
    return _LENGTHS[key], basis


# --- learning curves ------------------------------------------------------------------------

_CURVE_KEYS = ("of", "sizes", "fractions", "include_all", "seeds", "max_points", "time_budget_minutes", "fit_reason")
#: training runs per size when a curve does not say (``seeds``)
DEFAULT_CURVE_SEEDS = {"probe": 3, "finetune": 1}


@register("learning_curve")
def prepare_learning_curve(rung: Any, ctx: PrepareContext) -> Candidate:
    """Nested subsets x seeds -> test score of each run -> fitted curve, forecast and back-test (see module doc)."""
    from ..training.curves import CurvePoint

    params = dict(rung.params)
    of = params.get("of", "finetune")
    if of not in ("finetune", "probe"):
        raise TaskSpecError(f"rung '{rung.name}': 'of' must be 'finetune' or 'probe'.")
    if ctx.evaluate is None:
        raise TaskSpecError(f"rung '{rung.name}': learning curves need the evaluator.")
    classification = ctx.spec.kind == "classification"
    steps = _curve_sizes(rung.name, params, classification)
    seeds = _curve_seeds(rung.name, params, ctx.seed)
    base = settings_from_params(rung.name, params, drop=_CURVE_KEYS) if of == "finetune" else None
    budget = _CurveBudget(params, steps, classification)
    points, rows, stats, last = [], [], [], None
    for i, step in enumerate(steps):
        for seed in seeds:  # the task's seed last: the rung's candidate is its run at the largest size
            run_ctx = ctx if seed == ctx.seed else dataclasses.replace(ctx, seed=seed)
            label = f"{rung.name} @ {_step_label(step)}" + (f", seed {seed}" if len(seeds) > 1 else "")
            if of == "finetune":
                s = budget.settings(base.model_copy(update=step))
                candidate = budget.train(rung.name, run_ctx, s, label)
                if candidate is None:
                    break
                n = candidate.config["train_subset"]["examples"]
                training = candidate.config["training"]
                fit_metrics = {"train_loss": training.get("final_train_loss"),
                               "dev_loss": training.get("best_dev_loss"), "minutes": training.get("wall_s", 0) / 60,
                               "tokens_per_s": training.get("tokens_per_s"), "warnings": training.get("warnings", [])}
            else:
                candidate, n, fit_metrics = _probe_point(rung, run_ctx, step)
            if last is not None:
                last.close()
            metric, predictions = budget.evaluate(ctx, candidate, label)
            points.append(CurvePoint(n=n, value=metric.value, low=metric.low, high=metric.high, n_test=metric.n))
            stats.append(_test_statistic(ctx, metric.value, predictions))
            rows.append({"subset": step, "n": n, "seed": seed, "test": metric.to_json(), **fit_metrics})
            last = candidate
        if budget.stop is not None:
            budget.drop(steps[i:], budget.stop)
            break
    if last is None:
        raise RungSkipped(f"rung '{rung.name}': no point of the learning curve fits its budget: {budget.stop}")
    curve = _curve_summary(points, rows, ctx, of, stats)
    curve["dropped"] = budget.dropped
    last.rung = rung.name
    last.config = {**last.config, "strategy": "learning_curve", "of": of, "seeds": seeds, "points": rows}
    last.extras = {**last.extras, "curve": curve}
    return last


class _CurveBudget:
    """A fine-tuning curve's time allowance (``time_budget_minutes``, set by the ladder): each run trains under
    what is left of it (less the last evaluation's time), and a run whose timed trial does not fit ends the curve
    there; the sizes the ladder could not afford (``max_points``) and those not reached are ``dropped``."""

    def __init__(self, params: dict[str, Any], steps: list[dict[str, Any]], classification: bool) -> None:
        minutes = params.get("time_budget_minutes")
        self.budget_s = float(minutes) * 60 if minutes else None
        self.start, self.eval_s = time.perf_counter(), 0.0
        self.stop: str | None = None
        self.dropped: list[dict[str, Any]] = []
        every = _curve_sizes("", {k: v for k, v in params.items() if k != "max_points"}, classification)
        self.drop(every[len(steps):], params.get("fit_reason") or "left out by max_points")

    def drop(self, steps: Sequence[dict[str, Any]], reason: str) -> None:
        self.dropped[:0] = [{"subset": step, "label": _step_label(step), "reason": reason} for step in steps]

    def settings(self, s: TuneSettings) -> TuneSettings:
        if self.budget_s is None:
            return s
        left = self.budget_s - (time.perf_counter() - self.start) - self.eval_s
        return s.model_copy(update={"time_budget_minutes": max(left, 1.0) / 60})

    def train(self, rung_name: str, ctx: PrepareContext, s: TuneSettings, label: str) -> TunedCandidate | None:
        from ..training.trainer import TrialOverBudget

        if s.time_budget_minutes is not None and s.time_budget_minutes * 60 <= 1.0:
            self.stop = f"the curve's {self.budget_s:.0f} s allowance was spent"
            return None
        try:
            return build_tuned(rung_name, ctx, s, label=label, shrink=False)
        except TrialOverBudget as over:
            self.stop = str(over)
            return None

    def evaluate(self, ctx: PrepareContext, candidate: Candidate, label: str) -> tuple[Any, Any]:
        start = time.perf_counter()
        out = ctx.evaluate(candidate, label)
        self.eval_s = time.perf_counter() - start
        return out


def _curve_seeds(rung_name: str, params: dict[str, Any], seed: int) -> list[int]:
    """The training seeds of every size: ``seeds`` runs (default: 3 for the cheap probe, so its band carries the
    measured run-to-run variation; 1 for fine-tuning), the task's seed last (then seed + 1, seed + 2...)."""
    count = params.get("seeds", DEFAULT_CURVE_SEEDS.get(params.get("of", "finetune"), 1))
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise TaskSpecError(f"rung '{rung_name}': 'seeds' must be a whole number of training runs per size "
                            f"(1 or more), not {count!r}.")
    return [seed + i for i in range(1, count)] + [seed]


def _test_statistic(ctx: PrepareContext, value: float, predictions: Sequence[Prediction]) -> Any:
    """The run's primary metric over rows of test-example indices (for the joint bootstrap), or None when its
    per-example scores do not reproduce the metric (then the curve falls back to the parametric bootstrap)."""
    import numpy as np

    from ..evaluation.metrics import field_counts
    from ..evaluation.scoring import field_statistic, per_example_correct
    from ..training.curves import mean_statistic

    golds = [e.target for e in ctx.splits.test]
    outs = [p.output for p in predictions]
    if not golds or len(golds) != len(outs):
        return None
    if ctx.spec.kind == "extraction":
        counts = np.array([field_counts(g, o) for g, o in zip(golds, outs)], dtype=float).reshape(-1, 3)
        stat = field_statistic(counts, "f1")
    else:
        match = ctx.spec.generation.match if ctx.spec.generation else "normalized"
        stat = mean_statistic(per_example_correct(ctx.spec.kind, golds, outs, match=match))
    full = float(np.asarray(stat(np.arange(len(golds))[None, :])).reshape(-1)[0])
    return stat if abs(full - value) <= 1e-9 else None


def _curve_sizes(rung_name: str, params: dict[str, Any], classification: bool) -> list[dict[str, Any]]:
    """The curve's subset settings, smallest first (``sizes`` per label, or ``fractions``; ``include_all``)."""
    if classification and "fractions" not in params:
        sizes = [int(x) for x in params.get("sizes", [5, 10, 20, 40])]
        steps: list[dict[str, Any]] = [{"per_label": k, "fraction": None} for k in sorted(set(sizes))]
    else:
        fractions = [float(x) for x in params.get("fractions", [0.1, 0.25, 0.5])]
        steps = [{"fraction": f, "per_label": None} for f in sorted(set(fractions)) if 0 < f < 1]
    if params.get("include_all", False):
        steps.append({"per_label": None, "fraction": None})
    steps = steps[: params.get("max_points") or None]  # the smallest sizes: the ladder's budget dropped the rest
    if len(steps) < 3:
        raise TaskSpecError(f"rung '{rung_name}': a learning curve needs at least 3 subset sizes.")
    return steps


def _step_label(step: dict[str, Any]) -> str:
    if step.get("per_label"):
        return f"{step['per_label']}/label"
    if step.get("fraction"):
        return f"{step['fraction']:.0%} of train"
    return "all of train"


def _probe_point(rung: Any, ctx: PrepareContext, step: dict[str, Any]) -> tuple[Candidate, int, dict[str, Any]]:
    import numpy as np

    from ..task import RungSpec
    from .baselines import prepare_probe

    subset = training_subset(ctx.splits.train, per_label=step.get("per_label"), fraction=step.get("fraction"),
                             seed=ctx.seed)
    sub_ctx = dataclasses.replace(ctx, splits=dataclasses.replace(ctx.splits, train=tuple(subset)))
    params = {k: v for k, v in rung.params.items() if k == "C"}
    candidate = prepare_probe(RungSpec(name=rung.name, strategy="probe", params=params), sub_ctx)
    x = ctx.embed([e.text for e in subset])
    train_acc = float((candidate.model.predict(x) == np.array([e.target for e in subset])).mean())
    dev_acc = max(candidate.config["C_grid_dev_accuracy"].values()) if ctx.splits.dev else None
    return candidate, len(subset), {"train_accuracy": train_acc, "dev_accuracy": dev_acc}


def _curve_summary(points: list[Any], rows: list[dict[str, Any]], ctx: PrepareContext, of: str,
                   stats: Sequence[Any] | None = None) -> dict[str, Any]:
    from ..training.curves import fit_learning_curve, forecast_examples

    metric = ctx.spec.primary_metric
    target = ctx.spec.target.get(metric)
    joint = None if stats is None or any(st is None for st in stats) else list(stats)
    out: dict[str, Any] = {"of": of, "metric": metric, "target": target, "points": rows,
                           "model": "inverse power law: value(n) = a - b * n^(-c)", "warnings": _curve_warnings(rows, ctx)}
    if stats is not None and joint is None:
        out["warnings"].append("The per-example test scores of some point do not reproduce its metric, so the band "
                               "redraws each point independently (too narrow when points share test examples).")
    try:
        fit = fit_learning_curve(points, seed=ctx.seed, test_stats=joint)
    except ValueError as exc:
        out["fit"], out["forecast"] = None, {"status": "insufficient_points", "message": str(exc)}
        return out
    out["model"] += f", {fit.uncertainty}"
    out["uncertainty"] = fit.uncertainty_note
    if fit.run_sd_assumed:
        out["warnings"].append("One run a size does not measure training-run variation (seed, subset draw): the band "
                               "assumes each run varies by its test standard error; 'seeds: 2' or more measures it.")
    elif fit.run_sd is None:
        out["warnings"].append("The band leaves out training-run variation (seed, subset draw): one run a size does "
                               "not measure it; 'seeds: 2' or more in the curve's params puts it in.")
    out["fit"] = fit.to_json()
    out["forecast"] = forecast_examples(fit, target).to_json() if target is not None else None
    out["at_full_train"] = _at_full_train(fit, len(ctx.splits.train), max(p.n for p in points), metric)
    out["backtest"] = backtest(points, joint, seed=ctx.seed)
    return out


def _at_full_train(fit: Any, n: int, largest: int, metric: str) -> dict[str, Any]:
    """The curve's prediction of the metric when training on all ``n`` examples, with its band and the words."""
    from ..formats import pct

    value = float(fit.predict([n])[0])
    low, high = (float(x[0]) for x in fit.band([n], runs=1))
    how = f"measured up to {n:,}" if largest >= n else f"extrapolated from runs of at most {largest:,}"
    return {"n": n, "value": value, "band": [low, high], "largest_point": largest,
            "message": f"Forecast {metric} when training on all {n:,} examples: {pct(value, unit='%')} "
                       f"[{pct(low, unit='%')}, {pct(high, unit='%')}] (95% band for one run; the curve is {how} "
                       "examples)."}


def forecast_whole_set(results: Sequence[Any]) -> list[Any]:
    """Results with each budget-fitted tuning result's ``whole_set_forecast`` taken from a fine-tuning learning
    curve that finished on the same model and forecasts the same number of examples; otherwise it keeps saying
    that the whole-set result is not forecast."""
    curves = [r for r in results if r.status == "finished" and (r.extras.get("curve") or {}).get("of") == "finetune"]
    out = []
    for r in results:
        fitted = (r.extras.get("training") or {}).get("fitted_to_budget")
        found = [{**c.extras["curve"]["at_full_train"], "rung": c.name} for c in curves if fitted
                 and getattr(c, "model", None) == getattr(r, "model", None)
                 and (c.extras["curve"].get("at_full_train") or {}).get("n") == fitted["of"]]
        if found:
            training = {**r.extras["training"], "fitted_to_budget": {**fitted, "whole_set_forecast": found[-1]}}
            r = dataclasses.replace(r, extras={**r.extras, "training": training})
        out.append(r)
    return out


def backtest(points: Sequence[Any], stats: Sequence[Any] | None = None, *, seed: int = 0, n_boot: int = 300,
             band: str = "joint") -> dict[str, Any] | None:
    """Fit without the largest size and forecast what its runs measure. None when fewer than 3 smaller sizes remain.

    ``band``: ``joint`` (the rung's): the curve's band (test examples resampled jointly with ``stats``, run-to-run
    variation measured from repeated sizes or assumed) plus the held runs' own variation; ``joint_no_runs``: the
    same without run-to-run variation where it is not measured; ``parametric``: the band before, points redrawn
    independently, nothing added.
    """
    import numpy as np

    from ..training.curves import fit_learning_curve

    n_held = max(p.n for p in points)
    keep = [i for i, p in enumerate(points) if p.n != n_held]
    held = [i for i, p in enumerate(points) if p.n == n_held]
    if len({points[i].n for i in keep}) < 3:
        return None
    kept = [points[i] for i in keep]
    try:
        if band in ("joint", "joint_no_runs"):
            small = fit_learning_curve(kept, seed=seed, n_boot=n_boot, assume_run_sd=band == "joint",
                                       test_stats=None if stats is None else [stats[i] for i in keep])
        elif band == "parametric":
            small = fit_learning_curve(kept, seed=seed, n_boot=n_boot)
        else:
            raise TaskSpecError(f"unknown back-test band {band!r}")
    except ValueError:
        return None
    low, high = small.band([n_held], runs=0 if band == "parametric" else len(held))
    measured = float(np.mean([points[i].value for i in held]))
    if len(held) == 1:
        measured_ci = [points[held[0]].low, points[held[0]].high]
    elif stats is not None and points[held[0]].n_test:  # the mean of the runs, test examples resampled
        rows = np.random.default_rng(seed).integers(0, points[held[0]].n_test, size=(2000, points[held[0]].n_test))
        means = np.mean([np.asarray(stats[i](rows), dtype=float) for i in held], axis=0)
        measured_ci = [float(v) for v in np.quantile(means, [0.025, 0.975])]
    else:
        measured_ci = [None, None]
    return {"n": n_held, "measured": measured, "measured_ci": measured_ci, "runs": len(held),
            "measured_runs": [points[i].value for i in held], "forecast": float(small.predict([n_held])[0]),
            "forecast_band": [float(low[0]), float(high[0])], "band_uncertainty": small.uncertainty,
            "band_note": small.uncertainty_note, "run_sd": small.run_sd, "run_sd_assumed": small.run_sd_assumed,
            "covered": bool(low[0] <= measured <= high[0]), "fitted_on": sorted({points[i].n for i in keep})}


def _curve_warnings(rows: list[dict[str, Any]], ctx: PrepareContext) -> list[str]:
    """Dev getting worse while train improves between consecutive sizes; small-data warnings."""
    out = []
    for a, b in zip(rows, rows[1:]):
        if a.get("dev_loss") is not None and b.get("dev_loss") is not None and a.get("train_loss") is not None \
                and b.get("train_loss") is not None and b["dev_loss"] > a["dev_loss"] * 1.02 \
                and b["train_loss"] < a["train_loss"]:
            out.append(f"From {a['n']} to {b['n']} examples the dev loss rose ({a['dev_loss']:.3f} -> "
                       f"{b['dev_loss']:.3f}) while the training loss fell: overfitting.")
        if a.get("dev_accuracy") is not None and b.get("dev_accuracy") is not None \
                and b["dev_accuracy"] < a["dev_accuracy"] - 0.02 and b.get("train_accuracy", 0) > a.get(
                    "train_accuracy", 1):
            out.append(f"From {a['n']} to {b['n']} examples the dev accuracy fell while the training accuracy "
                       "rose: overfitting.")
    for row in rows:
        for w in row.get("warnings", []) or []:
            out.append(f"At {row['n']} examples: {w}")
    return out
