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

Out of scope: the training loop (``tunewise.training``), metrics, the ladder's escalation policy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..backends.base import Backend
from ..errors import RungSkipped, StoreError, TaskSpecError
from ..evaluation.records import Prediction
from ..prompts import PromptTemplate, answer_text
from ..training.settings import TuneSettings, settings_from_params
from ..training.subsets import describe_subset, subset_hash, training_subset
from .base import Candidate, PrepareContext, register
from .prompting import PromptProgram, PromptSettings

__all__ = ["TunedCandidate", "tuned_program", "prepare_finetune", "prepare_learning_curve", "train_rung_artifact",
           "training_work", "TUNED_INSTRUCTIONS"]

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


def _training_job(rung_name: str, ctx: PrepareContext, s: TuneSettings) -> _RungTraining:
    """The content-keyed :class:`TrainingJob` for ``s`` on this context's splits (nothing trained yet)."""
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
                  "labels": labels or None, "artifact_key": key}
    job = TrainingJob(base_model=spec.model, settings=s, train=pairs(subset), dev=pairs(dev),
                      out_dir=ctx.artifacts / key, seed=ctx.seed, labels=labels if spec.kind == "classification"
                      else (), provenance=provenance)
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


def build_tuned(rung_name: str, ctx: PrepareContext, s: TuneSettings, *, label: str | None = None) -> TunedCandidate:
    """Train (or reuse) the artifact for ``s`` and wrap it as a candidate."""
    spec = ctx.spec
    planned = _training_job(rung_name, ctx, s)
    program, subset, dev, key = planned.program, planned.subset, planned.dev, planned.key
    artifact = _train(rung_name, ctx, planned, label)
    backend = _make_backend(spec, artifact, s)
    if ctx.wrap_backend is not None:
        backend = ctx.wrap_backend(backend)
    program.config = {"strategy": "prompt", "template": program.template.to_json(),
                      "instructions": program.variables["instructions"], "mode": program.settings.mode}
    config = {"strategy": "finetune", **s.identity(), "model": spec.model, "artifact": str(artifact.path),
              "artifact_kind": artifact.kind, "artifact_key": key, "artifact_reused": artifact.reused,
              "train_subset": describe_subset(subset), "dev_subset": describe_subset(dev),
              "prompt": program.config, "seed": ctx.seed, "training": artifact.training}
    return TunedCandidate(rung=rung_name, config=config, program=program, backend=backend,
                          extras={"training": artifact.training})


@register("finetune")
def prepare_finetune(rung: Any, ctx: PrepareContext) -> TunedCandidate:
    s = settings_from_params(rung.name, rung.params)
    return build_tuned(rung.name, ctx, s)


def training_work(rung: Any, spec: Any, train: Sequence[Any]) -> tuple[float, int]:
    """What a ``finetune`` or ``learning_curve`` rung will cost before it runs: (examples x epochs over every
    training it does, test-split evaluations). Raises the rung's :class:`~tunewise.errors.TunewiseError` when it
    cannot run here (an ``openai:`` model, a classifier head on generation, QLoRA without a GPU)."""
    if rung.strategy == "learning_curve":
        base = settings_from_params(rung.name, rung.params, drop=_CURVE_KEYS)
        steps = _curve_steps(rung.name, dict(rung.params), spec.kind == "classification")
        settings = [base.model_copy(update=step) for step in steps]
    else:
        settings = [settings_from_params(rung.name, rung.params)]
    _check_runnable(rung.name, settings[0], spec)
    work = 0.0
    for s in settings:
        n = len(training_subset(train, per_label=s.per_label, fraction=s.fraction, limit=s.limit, seed=spec.seed))
        epochs = s.epochs_for(n)
        if s.max_steps:
            epochs = min(epochs, s.max_steps * s.batch_size * s.grad_accum / max(1, n))
        work += n * epochs
    return work, len(settings)


# --- learning curves ------------------------------------------------------------------------

_CURVE_KEYS = ("of", "sizes", "fractions", "include_all", "seeds")
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
    points, rows, stats, last = [], [], [], None
    for step in steps:
        for seed in seeds:  # the task's seed last: the rung's candidate is its run at the largest size
            run_ctx = ctx if seed == ctx.seed else dataclasses.replace(ctx, seed=seed)
            label = f"{rung.name} @ {_step_label(step)}" + (f", seed {seed}" if len(seeds) > 1 else "")
            if last is not None:
                last.close()
            if of == "finetune":
                s = base.model_copy(update=step)
                candidate = build_tuned(rung.name, run_ctx, s, label=label)
                n = candidate.config["train_subset"]["examples"]
                training = candidate.config["training"]
                fit_metrics = {"train_loss": training.get("final_train_loss"),
                               "dev_loss": training.get("best_dev_loss"), "minutes": training.get("wall_s", 0) / 60,
                               "tokens_per_s": training.get("tokens_per_s"), "warnings": training.get("warnings", [])}
            else:
                candidate, n, fit_metrics = _probe_point(rung, run_ctx, step)
            metric, predictions = ctx.evaluate(candidate, label)
            points.append(CurvePoint(n=n, value=metric.value, low=metric.low, high=metric.high, n_test=metric.n))
            stats.append(_test_statistic(ctx, metric.value, predictions))
            rows.append({"subset": step, "n": n, "seed": seed, "test": metric.to_json(), **fit_metrics})
            last = candidate
    assert last is not None
    curve = _curve_summary(points, rows, ctx, of, stats)
    last.rung = rung.name
    last.config = {**last.config, "strategy": "learning_curve", "of": of, "seeds": seeds, "points": rows}
    last.extras = {**last.extras, "curve": curve}
    return last


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


def _curve_steps(rung_name: str, params: dict[str, Any], classification: bool) -> list[dict[str, Any]]:
    """One subset setting per training run of the curve (each size once per seed): what it will train."""
    runs = len(_curve_seeds(rung_name, params, 0))
    return [step for step in _curve_sizes(rung_name, params, classification) for _ in range(runs)]


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
    from ..evaluation.scoring import PRIMARY_METRIC
    from ..training.curves import fit_learning_curve, forecast_examples

    metric = PRIMARY_METRIC[ctx.spec.kind]
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
    out["backtest"] = backtest(points, joint, seed=ctx.seed)
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
