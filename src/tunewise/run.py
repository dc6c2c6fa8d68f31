"""``run_task``: the pipeline of a run, readable on one screen.

spec -> frozen splits and data checks -> the run store (same task and data -> same run id) -> the climb
(``ladder/``: every rung scored on the same test split, reusing finished ones) -> ``results.json`` and
``summary.md`` -> the decision, computed once -> the report -> the winner registered as a version -> the run
logged to MLflow when the task or the caller asks for it (``tracking.py``).

Every model call goes through the call cache and every finished rung is stored, so an interrupted run
resumes where it stopped. A user error inside one rung fails that rung with its sentence and the others
still run; nothing already computed is lost. Only the CLI prints.

``train_only``: the same splits and artifact directory, one ``finetune`` rung's training and nothing else
(no evaluation, no run store), for ``tunewise train`` under ``accelerate launch``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .data import Splits, check_data, load_splits
from .errors import TaskSpecError, TunewiseError
from .ladder.catalogue import policy_ladder, resolve_rungs, uses_policy
from .ladder.context import Progress, RunContext
from .results import RunResults, write_json
from .store import Store, environment_info, run_id_for
from .summary import summary_markdown
from .task import TaskSpec

if TYPE_CHECKING:
    from .backends.base import Backend
    from .costs import Prices
    from .decision import Decision
    from .ladder.walk import Climb
    from .tracking import TrackingRecord

__all__ = ["RunOutcome", "run_task", "train_only", "quick_spec", "Progress", "QUICK_TEST_LIMIT", "QUICK_BUDGET_HOURS"]


@dataclass(frozen=True)
class RunOutcome:
    """What a run produced: the results, the decision made from them, and where everything was written."""

    results: RunResults
    decision: "Decision"
    results_path: Path
    summary_path: Path
    reused: tuple[str, ...]  # rungs whose stored results were reused
    report_path: Path | None = None  # report.html (with report.md, decision.json, edge_cases.md beside it)
    version: str | None = None  # the decision's winner as a deployable version, alias ``candidate``
    tracking: "TrackingRecord | None" = None  # the MLflow run it was logged to, or why it could not be


def _with_limit(spec: TaskSpec, limit: int | None) -> TaskSpec:
    if not limit:
        return spec
    return spec.model_copy(update={"data": spec.data.model_copy(update={"test_limit": limit})})


#: ``quick`` mode: a stratified test subset of at most this many examples ...
QUICK_TEST_LIMIT = 100
#: ... and at most this wall-time budget for the whole ladder (rungs that cannot fit are skipped and say so)
QUICK_BUDGET_HOURS = 4 / 60


def quick_spec(spec: TaskSpec) -> TaskSpec:
    """The spec of a quick run: a smaller frozen test subset and a few minutes of budget; a separate run id."""
    limit = min(spec.data.test_limit or QUICK_TEST_LIMIT, QUICK_TEST_LIMIT)
    hours = min(spec.constraints.budget_hours or QUICK_BUDGET_HOURS, QUICK_BUDGET_HOURS)
    return _with_limit(spec, limit).model_copy(update={
        "constraints": spec.constraints.model_copy(update={"budget_hours": hours})})


def _task_prices(spec: TaskSpec, prices: "Prices") -> "Prices":
    """The price table with the token prices the task file gives its models (``models[].prices``)."""
    from .costs import with_api_prices

    given = {m.id: m.prices.model_dump() for m in spec.model_specs if m.prices is not None}
    return with_api_prices(prices, given, "the task file's models.prices")


def _data_info(splits: Splits) -> dict[str, Any]:
    return {
        "hash": splits.data_hash,
        "sizes": {"train": len(splits.train), "dev": len(splits.dev), "test": len(splits.test)},
        "dev_origin": splits.dev_origin,
        "test_origin": splits.test_origin,
        "labels": list(splits.labels) if splits.labels else None,
        # hf:// references with their row counts and fingerprints (a file is named by the task and hashed)
        **({"sources": dict(splits.sources)} if any(s.startswith("hf://") for s in splits.sources.values()) else {}),
    }


def run_task(
    spec: TaskSpec,
    *,
    rungs: Sequence[str] | None = None,
    limit: int | None = None,
    backend: "Backend | None" = None,
    progress: Progress | None = None,
    task_path: Path | None = None,
    report: bool = True,
    policy: bool | None = None,
    prices: "Prices | None" = None,
    quick: bool = False,
    mlflow: str | bool | None = None,
) -> RunOutcome:
    """Run (or resume) the task; returns the results, the decision and where they were written.

    With no ``rungs`` and no ``rungs:`` in the task, the ladder policy (``ladder/policy.py``) walks the
    default ladder plus the tuning rungs within the task's budgets; named rungs run as a fixed list.
    ``policy`` forces either way (True: walk the named rungs with the policy; False: run them all); ``quick`` walks
    named rungs with the policy too, so its budget holds.
    ``backend``: a backend to use instead of loading the task's model (the caller closes it).
    ``prices``: a :class:`~tunewise.costs.Prices` table (default: :func:`~tunewise.costs.default_prices`); it prices the
    budget, the decision and the report, and is recorded in ``results.json`` so that
    ``tunewise report`` recomputes the same decision.
    ``quick``: :func:`quick_spec` (at most :data:`QUICK_TEST_LIMIT` test examples, a
    :data:`QUICK_BUDGET_HOURS` budget): a first answer in minutes, with wider intervals.
    ``mlflow``: a tracking URI (True: ``MLFLOW_TRACKING_URI``) to log the finished run to, over the task's
    ``tracking.mlflow``; a logging failure is ``outcome.tracking.warning`` and loses nothing.
    """
    from .costs import default_prices
    from .decision import decide
    from .ladder.walk import climb
    from .tracking import log_to_mlflow, mlflow_target

    spec = quick_spec(_with_limit(spec, limit)) if quick else _with_limit(spec, limit)
    tracking = mlflow_target(spec, mlflow)  # mlflow missing fails here, before anything runs
    splits = load_splits(spec)
    checks = check_data(splits, kind=spec.kind)
    walk_default = uses_policy(spec, rungs) and policy is not False
    rung_specs = policy_ladder(spec) if walk_default else resolve_rungs(spec, rungs)
    store = Store(spec.store_dir)
    run_id = run_id_for(spec.fingerprint(), splits.data_hash)
    store.start_run(task_name=spec.name, spec=spec.model_dump(mode="json"), spec_hash=spec.fingerprint(),
                    data_hash=splits.data_hash, task_path=task_path, run_id=run_id)
    run = RunContext(spec, splits, store, run_id, _task_prices(spec, prices or default_prices()), progress=progress,
                     backend=backend)
    # the LLM judge measured on the user's human grades before any rung (a bad grade file fails here, costing nothing)
    judged = run.judge_checks()
    try:
        # a quick run keeps its few minutes even over named rungs: walked with the policy, whose budgets hold
        walk = (uses_policy(spec, rungs) or quick) if policy is None else policy
        climbed = climb(run, rung_specs, policy=walk)
    except KeyboardInterrupt:
        store.finish_run(run_id, "interrupted")
        raise
    results = _results(run, climbed, {**checks.to_json(), **({"judge": judged} if judged else {})})
    out_dir = spec.store_dir / "runs" / run_id
    results_path = write_json(out_dir / "results.json", results.to_json())
    summary_path = out_dir / "summary.md"
    summary_path.write_text(summary_markdown(results), encoding="utf-8")
    decision = decide(results, spec, run.prices)
    report_path = _report(results, decision, spec, splits, run.prices, out_dir) if report else None
    store.finish_run(run_id, "finished" if results.status == "finished" else "failed", results_path)
    version = _register(store, run_id, decision)
    store.close()
    run.close()
    files = (results_path, summary_path, report_path, report_path.with_name("decision.json") if report_path else None)
    tracked = log_to_mlflow(tracking, results, decision, files=files) if tracking is not None else None
    return RunOutcome(results=results, decision=decision, results_path=results_path, summary_path=summary_path,
                      reused=climbed.reused, report_path=report_path, version=version, tracking=tracked)


def _results(run: RunContext, climbed: "Climb", checks: dict[str, Any]) -> RunResults:
    return RunResults(
        run_id=run.run_id, task=run.spec.model_dump(mode="json"), data=_data_info(run.splits), checks=checks,
        rungs=climbed.results, comparisons=climbed.comparisons,
        environment={**environment_info(), "backend": run.model_info,
                     "prices": run.prices.restricted(_priced_models(run, climbed)).model_dump(mode="json")},
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), seed=run.spec.seed, ladder=climbed.ladder,
        status="finished" if all(r.status in ("finished", "skipped") for r in climbed.results) else "partial",
    )


def _priced_models(run: RunContext, climbed: "Climb") -> set[str]:
    """Every model a decision may price by tokens: the task's, each rung's, each distillation's teacher."""
    models = {m.id for m in run.spec.model_specs} | {r.model for r in climbed.results if r.model}
    teachers = {((r.extras or {}).get("distillation") or {}).get("teacher_model_id") for r in climbed.results}
    return models | {t for t in teachers if t}


def _report(results: RunResults, decision: "Decision", spec: TaskSpec, splits: Splits, prices: "Prices",
            out_dir: Path) -> Path:
    """After results.json: a failure here loses nothing computed, ``tunewise report`` redoes it."""
    from .report import render_report

    return render_report(results, decision, spec=spec, test_examples=splits.test, out_dir=out_dir, prices=prices).html


def _register(store: Store, run_id: str, decision: "Decision") -> str | None:
    """The decision's winner becomes a version under the alias ``candidate`` (None: no deployable winner)."""
    from .versions import register_winner

    try:
        version = register_winner(store, run_id, decision.winner)
    except TunewiseError:  # e.g. its artifact was deleted meanwhile: the run's results stand without it
        return None
    return version.id if version else None


def train_only(spec: TaskSpec, rung_name: str, *, progress: Progress | None = None) -> Any:
    """Train (or reuse) one ``finetune`` rung's artifact: no evaluation, and the run store is never opened.

    The splits, seed and artifact directory are exactly :func:`run_task`'s, so a later ``run_task``
    of the rung reuses the artifact (``artifact_reused`` in its config). Safe to call from every
    process of an ``accelerate launch`` / ``torchrun`` job: only rank 0 writes the artifact.
    Returns the :class:`~tunewise.training.trainer.TrainedArtifact` (empty provenance on other ranks).
    """
    from .strategies.base import PrepareContext
    from .strategies.finetuning import train_rung_artifact

    found = resolve_rungs(spec, [rung_name])
    if len(found) != 1:  # a tuning rung of a task with several trainable models
        raise TaskSpecError(f"rung '{rung_name}' runs on several models; name one: {', '.join(r.name for r in found)}.")
    (rung,) = found
    if rung.strategy != "finetune":
        raise TaskSpecError(f"rung '{rung.name}' uses strategy '{rung.strategy}'; only 'finetune' rungs can be "
                            "trained on their own (run the others with `tunewise run`).")
    splits = load_splits(spec)
    ctx = PrepareContext(spec=spec.for_model(rung.model), splits=splits, seed=spec.seed,
                         artifacts=spec.store_dir / "artifacts", report=progress)
    return train_rung_artifact(rung, ctx)
