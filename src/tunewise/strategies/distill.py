"""``distill``: a prompted teacher labels a pool of inputs, a small student learns from its labels.

The long-run cost advice of prompting-vs-tuning practice: let the best prompted model label data, then train a
cheap model on those labels and serve that. The rung ``distill@<model>`` prompts ``<model>`` with the ``teacher``
rung (default ``few_shot_retrieved``) over a pool of inputs and trains the ``student`` on the answers it keeps:

* ``pool``: ``unlabelled`` (``data.unlabelled``, the default when the task has one) or ``train`` (train's inputs
  with their labels hidden, to measure what distillation would give against gold). ``pool_limit`` labels a
  hashed random sample of that many pool inputs (seeded, stable for the pool).
* ``gold`` (default true with an unlabelled pool): train's gold examples join the teacher's labels; a pool input
  that is also a train input keeps its gold label and is not sent to the teacher.
* Pool inputs identical to a dev or test input are never labelled or learnt from (the student is scored on
  test and stopped early on dev): they are counted, not silently used.
* ``min_confidence``: keep only teacher labels at or above this probability (classification).
* ``student``: ``encoder_ft`` (default) or ``probe`` for classification; ``lora`` (or any ``finetune`` rung) on
  ``student_model`` (default the rung's model when tunewise can train it, else the task's first model it can)
  for extraction and generation, where answers that fail to parse or to match the task's JSON Schema are
  dropped and counted. ``student_params`` are the student rung's parameters.

Every teacher call goes through the run's call cache, so an interrupted distillation resumes without relabelling,
and the student's artifact is content-keyed by the labels it learned from; its provenance names the teacher rung,
model and model version. The result records the teacher, the pool, how many labels were kept and why others were
not, the teacher's agreement with gold where gold exists, and what labelling cost (model seconds and tokens; the
decision prices them as a one-off cost with the student's training).

Out of scope: the teacher's and student's own strategies (``prompting.py``, ``encoder_ft.py``, ``baselines.py``,
``finetuning.py``); choosing the teacher in the ladder (``ladder/policy.py``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Sequence
from typing import Any

from ..errors import TaskSpecError
from .base import Candidate, PrepareContext, get_strategy, register

__all__ = ["prepare_distill", "STUDENTS", "DISTILL_PARAMS", "pool_plan"]

#: students the teacher's labels can train, by task kind
STUDENTS = {"classification": ("encoder_ft", "probe"), "extraction": ("lora",), "generation": ("lora",)}
DISTILL_PARAMS = ("teacher", "student", "student_params", "student_model", "min_confidence", "pool", "pool_limit",
                  "gold")


def _rung(name: str, spec: Any) -> Any:
    from ..ladder.catalogue import BUILTIN_RUNGS

    custom = {r.name: r for r in (spec.rungs or []) if not isinstance(r, str)}
    found = custom.get(name) or BUILTIN_RUNGS.get(name)
    if found is None:
        raise TaskSpecError(f"unknown rung '{name}' in a distill rung's teacher or student.")
    return found


def _options(rung: Any, spec: Any, has_pool: bool) -> dict[str, Any]:
    params = dict(rung.params)
    unknown = sorted(set(params) - set(DISTILL_PARAMS))
    if unknown:
        raise TaskSpecError(f"rung '{rung.name}': unknown distill parameter(s) {', '.join(unknown)} (known: "
                            f"{', '.join(DISTILL_PARAMS)}).")
    pool = params.get("pool") or ("unlabelled" if has_pool else "train")
    if pool not in ("unlabelled", "train"):
        raise TaskSpecError(f"rung '{rung.name}': pool must be 'unlabelled' (data.unlabelled) or 'train' (train's "
                            f"inputs with their labels hidden), not '{pool}'.")
    if pool == "unlabelled" and not has_pool:
        raise TaskSpecError(f"rung '{rung.name}': pool 'unlabelled' needs data.unlabelled (a file of inputs).")
    gold = bool(params.get("gold", pool == "unlabelled"))
    if gold and pool == "train":
        raise TaskSpecError(f"rung '{rung.name}': gold labels cannot join a train pool (they label the same inputs "
                            "the teacher labels); use pool 'unlabelled' to mix them.")
    student = params.get("student") or STUDENTS[spec.kind][0]
    limit = params.get("pool_limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise TaskSpecError(f"rung '{rung.name}': pool_limit must be a positive whole number, not {limit!r}.")
    return {"pool": pool, "gold": gold, "student": student, "limit": limit,
            "threshold": params.get("min_confidence"), "student_params": dict(params.get("student_params") or {}),
            "student_model": params.get("student_model"), "teacher": params.get("teacher", "few_shot_retrieved")}


def pool_plan(splits: Any, *, pool: str, gold: bool, limit: int | None, seed: int) -> tuple[list[Any], dict[str, int]]:
    """The pool inputs the teacher labels (targets hidden), and what was left out and why (counts)."""
    held_out = {e.text for e in (*splits.dev, *splits.test)}
    source = splits.unlabelled if pool == "unlabelled" else splits.train
    known = {e.text for e in splits.train} if gold else set()
    inputs = [e for e in source if e.text not in held_out and e.text not in known]
    counts = {"pool_size": len(source), "in_dev_or_test": sum(e.text in held_out for e in source),
              "has_gold": sum(e.text in known and e.text not in held_out for e in source)}
    if limit is not None and limit < len(inputs):
        rank = {e.id: hashlib.sha256(f"{seed}:{e.id}".encode()).hexdigest() for e in inputs}
        keep = set(sorted(rank, key=rank.get)[:limit])
        counts["not_sampled"] = len(inputs) - limit
        inputs = [e for e in inputs if e.id in keep]
    return [dataclasses.replace(e, target=None) for e in inputs], counts


def _student_model(rung: Any, ctx: PrepareContext, wanted: str | None) -> Any:
    """The spec the LoRA student trains on: ``student_model`` by name, else the rung's model when trainable, else
    the task's first trainable model."""
    from ..ladder.catalogue import trainable

    task = ctx.task or ctx.spec
    if wanted is not None:
        return task.for_model(wanted)
    models = task.model_specs
    mine = [m for m in models if m.key == rung.model] if rung.model else models[:1]
    found = next((m for m in [*mine, *models] if trainable(m)), None)
    if found is None:
        raise TaskSpecError(f"rung '{rung.name}': no model of the task can be fine-tuned here for a LoRA student; "
                            "name one with student_model.")
    return task.for_model(found.key if task.models else None)


def _keep(spec: Any, labels: set[str], threshold: Any, pred: Any) -> str | None:
    """None to keep the teacher's answer, else why it is dropped."""
    if pred.output is None or (labels and pred.output not in labels):
        return "unparsed"
    if spec.kind == "extraction" and pred.error:  # parsed, but not what the task's JSON Schema allows
        return "schema_failures"
    if threshold is not None and (pred.confidence is None or pred.confidence < float(threshold)):
        return "below_confidence"
    return None


@register("distill")
def prepare_distill(rung: Any, ctx: PrepareContext) -> Candidate:
    """Label the pool with the teacher (through the call cache), train the student on those labels."""
    from ..evaluation.evaluator import evaluate

    spec = ctx.spec
    opts = _options(rung, spec, bool(ctx.splits.unlabelled))
    if opts["student"] not in STUDENTS[spec.kind]:
        raise TaskSpecError(f"rung '{rung.name}': a {spec.kind} task's student must be one of "
                            f"{', '.join(STUDENTS[spec.kind])}, not '{opts['student']}'.")
    base, at, key = opts["teacher"].partition("@")
    if at and key != rung.model:
        raise TaskSpecError(f"rung '{rung.name}': its teacher '{opts['teacher']}' is on model '{key}', but the rung "
                            f"runs on '{rung.model}'; name it {rung.name.partition('@')[0]}@{key}.")
    teacher_rung = _rung(base, spec)
    if teacher_rung.strategy != "prompt":
        raise TaskSpecError(f"rung '{rung.name}': the teacher must be a prompt rung, not '{teacher_rung.name}'.")
    if ctx.backend is None:
        raise TaskSpecError(f"rung '{rung.name}': the teacher needs the rung's model.")
    teacher = get_strategy("prompt")(teacher_rung.model_copy(update={"model": rung.model}), ctx)
    if getattr(teacher, "retriever", None) is not None and opts["pool"] == "train":
        from .prompting import _retriever  # demonstrations from train: never the input's own label

        teacher.retriever = _retriever(ctx, teacher.settings.k, leave_one_out=True)

    hidden, counts = pool_plan(ctx.splits, pool=opts["pool"], gold=opts["gold"], limit=opts["limit"], seed=ctx.seed)
    if not hidden:
        raise TaskSpecError(f"rung '{rung.name}': no pool input is left to label ({counts}).")
    start = time.perf_counter()
    report = None if ctx.report is None else (lambda done, total: ctx.report(f"{rung.name}: labelling", done, total))
    try:
        labelled = evaluate(teacher, hidden, backend=ctx.backend, progress=report).predictions
    finally:
        teacher.close()
    labelling_s = time.perf_counter() - start

    labels = set(ctx.splits.labels or ())
    dropped = {"unparsed": 0, "schema_failures": 0, "below_confidence": 0}
    kept = []
    for example, pred in zip(hidden, labelled):
        why = _keep(spec, labels, opts["threshold"], pred)
        if why is None:
            kept.append(dataclasses.replace(example, target=pred.output))
        else:
            dropped[why] += 1
    if not kept:
        raise TaskSpecError(f"rung '{rung.name}': the teacher gave no usable answer to any of {len(hidden)} inputs "
                            f"({', '.join(f'{k} {v}' for k, v in dropped.items() if v)}).")
    gold = list(ctx.splits.train) if opts["gold"] else []
    agreement = None
    if opts["pool"] == "train":
        truth = {e.id: e.target for e in ctx.splits.train}
        agreement = sum(p.output == truth[e.id] for e, p in zip(hidden, labelled)) / len(hidden)

    labelling = _labelling(rung, ctx, teacher_rung.name, opts, counts, hidden, labelled, dropped, kept, gold,
                           agreement, labelling_s)
    student = _train_student(rung, ctx, opts, kept, gold, labelling)
    student.config = {"strategy": "distill", "teacher": labelling["teacher"], "student": opts["student"],
                      "student_config": student.config, "labelling": labelling}
    if opts["student"] == "encoder_ft":  # the saved student a version serves
        student.config["artifact"] = student.config["student_config"]["artifact"]
    student.extras = {**student.extras, "distillation": labelling}
    student.rung = rung.name
    return student


def _labelling(rung: Any, ctx: PrepareContext, teacher: str, opts: dict[str, Any], counts: dict[str, int],
               hidden: Sequence[Any], labelled: Sequence[Any], dropped: dict[str, int], kept: Sequence[Any],
               gold: Sequence[Any], agreement: float | None, labelling_s: float) -> dict[str, Any]:
    from ..backends.devices import hosting_device
    from ..evaluation.evaluator import usage_summary

    usage = usage_summary(labelled, wall_s=labelling_s)
    model_id = ctx.spec.model
    return {
        "teacher": f"{teacher}@{rung.model}" if rung.model else teacher,
        "teacher_rung": teacher, "teacher_model_id": model_id,
        "teacher_model_version": ctx.backend.fingerprint() if ctx.backend is not None else None,
        "teacher_device": hosting_device(model_id),
        "pool": {"unlabelled": "data.unlabelled", "train": "train inputs, labels hidden"}[opts["pool"]],
        "pool_hash": ctx.splits.pool_hash if opts["pool"] == "unlabelled" else ctx.splits.data_hash,
        **counts, "labelled": len(hidden), "kept": len(kept), **dropped, "min_confidence": opts["threshold"],
        "gold_examples": len(gold), "student_examples": len(kept) + len(gold),
        "teacher_agreement_with_gold": agreement,
        "teacher_model_seconds": usage["model_seconds"],
        "teacher_prompt_tokens": sum(p.prompt_tokens for p in labelled),
        "teacher_completion_tokens": sum(p.completion_tokens for p in labelled),
        "teacher_cached_tokens": sum(p.cached_tokens for p in labelled),
        "labelling_wall_s": labelling_s,
    }


def _train_student(rung: Any, ctx: PrepareContext, opts: dict[str, Any], kept: Sequence[Any], gold: Sequence[Any],
                   labelling: dict[str, Any]) -> Candidate:
    provenance = {"distilled_from": {k: labelling[k] for k in (
        "teacher", "teacher_model_id", "teacher_model_version", "pool", "pool_hash", "kept", "gold_examples")}}
    train = (*gold, *kept)
    splits = dataclasses.replace(ctx.splits, train=train)
    base = _rung(opts["student"], ctx.spec)
    params = {**base.params, **opts["student_params"]}
    if base.strategy == "finetune":
        spec = _student_model(rung, ctx, opts["student_model"])
        student_rung = base.model_copy(update={"name": f"{rung.name}:{opts['student']}", "model": None,
                                               "params": params})
        student_ctx = dataclasses.replace(ctx, spec=spec, splits=splits, provenance={**ctx.provenance, **provenance})
        labelling["student_model_id"] = spec.model
    else:
        student_rung = base.model_copy(update={"name": f"{rung.name}:{opts['student']}", "model": None,
                                               "params": params})
        student_ctx = dataclasses.replace(ctx, splits=splits, provenance={**ctx.provenance, **provenance})
    return get_strategy(student_rung.strategy)(student_rung, student_ctx)
