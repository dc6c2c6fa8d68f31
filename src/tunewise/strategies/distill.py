"""``distill``: a prompted teacher labels a pool of inputs, a small student learns from its labels.

The long-run cost advice of prompting-vs-tuning practice: let the best prompted model label data, then train a
cheap model on those labels and serve that. The rung ``distill@<model>`` prompts ``<model>`` with the ``teacher``
rung (default ``few_shot_retrieved``) over the pool (train's inputs with their labels hidden, so what
distillation would give is measured against gold), keeps the teacher's parsed labels (optionally only those at or
above ``min_confidence``), and trains the ``student`` (``encoder_ft``, default, or ``probe``) on them. The student
is the candidate: scored on the same test split as every rung, served without the LLM.

Every teacher call goes through the run's call cache, so an interrupted distillation resumes without relabelling,
and the student's artifact is content-keyed by the labels it learned from. The result records the teacher, the
pool, how many labels were kept and why others were not, the teacher's agreement with the hidden gold labels, and
what labelling cost (model seconds and tokens), beside the student's own training record.

Out of scope: the teacher's and student's own strategies (``prompting.py``, ``encoder_ft.py``, ``baselines.py``).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from ..errors import TaskSpecError
from .base import Candidate, PrepareContext, get_strategy, register

__all__ = ["prepare_distill", "STUDENTS"]

#: students the teacher's labels can train (classification)
STUDENTS = ("encoder_ft", "probe")


def _rung(name: str, spec: Any) -> Any:
    from ..ladder.catalogue import BUILTIN_RUNGS

    custom = {r.name: r for r in (spec.rungs or []) if not isinstance(r, str)}
    found = custom.get(name) or BUILTIN_RUNGS.get(name)
    if found is None:
        raise TaskSpecError(f"unknown rung '{name}' in a distill rung's teacher or student.")
    return found


@register("distill")
def prepare_distill(rung: Any, ctx: PrepareContext) -> Candidate:
    """Label the pool with the teacher (through the call cache), train the student on those labels."""
    from ..evaluation.evaluator import evaluate, usage_summary

    spec = ctx.spec
    if spec.kind != "classification":
        raise TaskSpecError(f"rung '{rung.name}': distill trains a classifier student; {spec.kind} tasks are not "
                            "supported yet.")
    params = dict(rung.params)
    unknown = sorted(set(params) - {"teacher", "student", "student_params", "min_confidence", "pool"})
    if unknown:
        raise TaskSpecError(f"rung '{rung.name}': unknown distill parameter(s) {', '.join(unknown)} (known: teacher, "
                            "student, student_params, min_confidence, pool).")
    if params.get("pool", "train") != "train":
        raise TaskSpecError(f"rung '{rung.name}': pool must be 'train' (train's inputs with their labels hidden).")
    student_name = params.get("student", "encoder_ft")
    if student_name not in STUDENTS:
        raise TaskSpecError(f"rung '{rung.name}': student must be one of {', '.join(STUDENTS)}, not '{student_name}'.")
    teacher_rung = _rung(params.get("teacher", "few_shot_retrieved"), spec)
    if teacher_rung.strategy != "prompt":
        raise TaskSpecError(f"rung '{rung.name}': the teacher must be a prompt rung, not '{teacher_rung.name}'.")
    if ctx.backend is None:
        raise TaskSpecError(f"rung '{rung.name}': the teacher needs the rung's model.")
    teacher = get_strategy("prompt")(teacher_rung.model_copy(update={"model": rung.model}), ctx)
    if getattr(teacher, "retriever", None) is not None:  # retrieved demonstrations: never the input's own label
        from .prompting import _retriever

        teacher.retriever = _retriever(ctx, teacher.settings.k, leave_one_out=True)

    pool = list(ctx.splits.train)
    hidden = [dataclasses.replace(e, target=None) for e in pool]  # the teacher never sees a gold label
    start = time.perf_counter()
    report = None if ctx.report is None else (lambda done, total: ctx.report(f"{rung.name}: labelling", done, total))
    try:
        labelled = evaluate(teacher, hidden, backend=ctx.backend, progress=report).predictions
    finally:
        teacher.close()
    labelling_s = time.perf_counter() - start
    labels = set(ctx.splits.labels or ())
    threshold = params.get("min_confidence")
    kept, unparsed, unsure = [], 0, 0
    for example, pred in zip(pool, labelled):
        if pred.output is None or (labels and pred.output not in labels):
            unparsed += 1
        elif threshold is not None and (pred.confidence is None or pred.confidence < float(threshold)):
            unsure += 1
        else:
            kept.append(dataclasses.replace(example, target=pred.output))
    if not kept:
        raise TaskSpecError(f"rung '{rung.name}': the teacher gave no usable label to any of {len(pool)} inputs.")
    agree = sum(p.output == e.target for e, p in zip(pool, labelled))
    student_ctx = dataclasses.replace(ctx, splits=dataclasses.replace(ctx.splits, train=tuple(kept)))
    student_rung = _rung(student_name, spec).model_copy(update={
        "name": f"{rung.name}:{student_name}", "model": None, "params": dict(params.get("student_params") or {})})
    student = get_strategy(student_rung.strategy)(student_rung, student_ctx)
    usage = usage_summary(labelled, wall_s=labelling_s)
    labelling = {
        "teacher": f"{teacher_rung.name}@{rung.model}" if rung.model else teacher_rung.name,
        "teacher_model": getattr(ctx.backend, "name", None), "pool": "train inputs, labels hidden",
        "pool_size": len(pool), "kept": len(kept), "unparsed": unparsed, "below_confidence": unsure,
        "min_confidence": threshold, "teacher_agreement_with_gold": agree / len(pool),
        "teacher_model_seconds": usage["model_seconds"], "teacher_prompt_tokens": usage["prompt_tokens"],
        "teacher_completion_tokens": usage["completion_tokens"], "labelling_wall_s": labelling_s,
    }
    student.config = {"strategy": "distill", "teacher": labelling["teacher"], "student": student_name,
                      "student_config": student.config, "labelling": labelling}
    student.extras = {**student.extras, "distillation": labelling}
    student.rung = rung.name
    return student
