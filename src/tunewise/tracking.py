"""Log a finished run to MLflow: its parameters, every rung's metrics with their intervals, the decision, and
its files (``results.json``, ``summary.md``, the report, the winner's trained adapter).

One MLflow run per tunewise run, the rungs flattened into its keys (``accuracy.knn``, ``accuracy.knn.lower``,
``accuracy.knn.upper``, ``latency_p50_ms.knn``...): MLflow's run table then compares rungs within a run and
the same rung across runs of a task (one row per run), which nested runs per rung would split over many rows.
A rung name is made an MLflow key by replacing each character MLflow refuses (``@``, ``(``, ``>``...) with
``_``; the tag ``rung.<key>`` keeps the name as it was.

``run_params`` and ``run_metrics`` are pure (results and decision in, strings and floats out);
``log_to_mlflow`` does the I/O through an explicit ``MlflowClient`` (no process-wide MLflow state) and never
raises: a failure comes back as a warning sentence, as the run's results are already on disk.

Out of scope: serving or registering models in MLflow (the winner is a tunewise version, see
``versions.py``), and live logging while rungs run.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import TaskSpecError

if TYPE_CHECKING:
    from .decision import Decision
    from .results import RunResults
    from .task import TaskSpec

__all__ = ["MlflowTarget", "TrackingRecord", "mlflow_target", "run_params", "run_metrics", "rung_keys",
           "log_to_mlflow", "INSTALL_HINT"]

INSTALL_HINT = "pip install 'tunewise[tracking]'"
# MLflow's limits (mlflow/utils/validation.py): 6,000 characters a parameter value, 100 params/tags a batch
_PARAM_LIMIT = 6000
_BATCH = 100
_UNSAFE = re.compile(r"[^\w.\-]+")  # what MLflow refuses in a key (and '/', ':' and ' ', kept out on purpose)
_TRUNCATED = "... (truncated; the full value is in results.json)"


@dataclass(frozen=True)
class MlflowTarget:
    """Where to log: ``uri`` None means MLflow's own choice (``MLFLOW_TRACKING_URI``, else its default)."""

    uri: str | None
    experiment: str


@dataclass(frozen=True)
class TrackingRecord:
    """What logging did: the MLflow run id and where, or the warning sentence of why it could not."""

    uri: str | None
    experiment: str
    run_id: str | None = None
    warning: str | None = None


def mlflow_target(spec: "TaskSpec", uri: str | bool | None = None) -> MlflowTarget | None:
    """The MLflow target of a run: ``uri`` (``--mlflow``) over the task's ``tracking.mlflow``; ``True`` asks
    for MLflow at ``MLFLOW_TRACKING_URI``. Raises a one-sentence error when mlflow is not installed, so a run
    that asks for tracking fails before it computes anything."""
    section = spec.tracking
    wanted = uri if uri not in (None, False, "") else (section.mlflow if section is not None else None)
    if wanted in (None, False, ""):
        return None
    try:
        import mlflow  # noqa: F401 - only checked here; used by log_to_mlflow
    except ModuleNotFoundError as exc:
        raise TaskSpecError(f"MLflow tracking was asked for (tracking.mlflow or --mlflow) but mlflow is not "
                            f"installed; run `{INSTALL_HINT}`.") from exc
    experiment = (section.experiment if section is not None else None) or spec.name
    return MlflowTarget(uri=None if wanted is True else str(wanted), experiment=experiment)


def rung_keys(names: Iterable[str]) -> dict[str, str]:
    """Each rung name -> an MLflow-safe key: characters other than letters, digits, ``_``, ``-`` and ``.``
    become ``_``; a key that two names would share gets a ``_2``, ``_3``... suffix."""
    keys: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        base = _UNSAFE.sub("_", name).strip("_.") or "rung"
        key, n = base, 1
        while key in used:
            n += 1
            key = f"{base}_{n}"
        keys[name] = key
        used.add(key)
    return keys


def _value(v: Any) -> str:
    text = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
    return text if len(text) <= _PARAM_LIMIT else text[: _PARAM_LIMIT - len(_TRUNCATED)] + _TRUNCATED


def run_params(results: "RunResults") -> dict[str, str]:
    """The run's parameters: task, data, models, budgets, seed, and each rung's strategy, model and config."""
    task = results.task
    constraints = task.get("constraints") or {}
    models = [m if isinstance(m, str) else m.get("id") for m in task.get("models") or []] or [task.get("model")]
    params: dict[str, Any] = {
        "task": task.get("name"), "kind": task.get("kind"), "data_hash": results.data.get("hash"),
        "models": ",".join(str(m) for m in models), "seed": results.seed, "run_id": results.run_id,
        "budget_hours": constraints.get("budget_hours"), "budget_usd": constraints.get("budget_usd"),
        "target": task.get("target") or {}, "ladder": results.ladder.mode,
        **{f"split.{k}": v for k, v in (results.data.get("sizes") or {}).items()},
    }
    keys = rung_keys(r.name for r in results.rungs)
    for rung in results.rungs:
        key = keys[rung.name]
        params[f"{key}.strategy"] = rung.strategy
        if rung.model is not None:
            params[f"{key}.model"] = rung.model
        for name, value in (rung.config or {}).items():
            if name != "strategy":
                params[f"{key}.{_UNSAFE.sub('_', str(name))}"] = value
    return {k: _value(v) for k, v in params.items() if v is not None}


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def run_metrics(results: "RunResults", decision: "Decision") -> dict[str, float]:
    """Every finished rung's metrics with their 95% interval bounds, its throughput and tokens, and the
    decision's cost and latency of each option (keys ``<metric>.<rung>``; non-finite values are left out)."""
    keys = rung_keys(r.name for r in results.rungs)
    out: dict[str, float | None] = {}
    for rung in results.rungs:
        if rung.status != "finished":
            continue
        key = keys[rung.name]
        for name, m in rung.metrics.items():
            out[f"{name}.{key}"], out[f"{name}.{key}.lower"], out[f"{name}.{key}.upper"] = m.value, m.low, m.high
        usage = rung.usage or {}
        out[f"examples_per_s.{key}"] = usage.get("examples_per_s")
        for tokens in ("prompt_tokens", "completion_tokens"):
            out[f"{tokens}_mean.{key}"] = (usage.get(tokens) or {}).get("mean")
    for option in decision.options:
        key = keys.get(option.name)
        if key is None:
            continue
        for field in ("per_1k_usd", "one_off_usd", "monthly_usd", "latency_p50_ms", "latency_p95_ms"):
            out[f"{'cost_' if field.endswith('usd') else ''}{field}.{key}"] = getattr(option, field)
    return {k: v for k, v in ((k, _finite(v)) for k, v in out.items()) if v is not None}


def _tags(results: "RunResults", decision: "Decision") -> dict[str, str]:
    keys = rung_keys(r.name for r in results.rungs)
    tags = {"tunewise.run_id": results.run_id, "tunewise.status": results.status,
            "decision.status": decision.status, "decision.winner": decision.winner or "none",
            "decision.next_step": decision.next_step,
            **{f"rung.{keys[r.name]}": r.name for r in results.rungs},
            **{f"rung_status.{keys[r.name]}": r.status for r in results.rungs}}
    if decision.runner_up:
        tags["decision.runner_up"] = decision.runner_up
    return {k: _value(v) for k, v in tags.items()}


def winner_adapter(results: "RunResults", decision: "Decision") -> Path | None:
    """The winner's trained artifact directory (adapter, tuned encoder), when it has one on disk."""
    rung = results.rung(decision.winner) if decision.winner else None
    artifact = (rung.config or {}).get("artifact") if rung else None
    path = Path(artifact) if isinstance(artifact, str) else None
    return path if path is not None and path.is_dir() else None


def log_to_mlflow(target: MlflowTarget, results: "RunResults", decision: "Decision", *,
                  files: Iterable[Path | None] = ()) -> TrackingRecord:
    """Log one finished run as one MLflow run; ``files`` (results.json, summary.md, report.html...) and the
    winner's adapter directory become artifacts. Never raises: a failure is the record's ``warning``."""
    record = TrackingRecord(uri=target.uri, experiment=target.experiment)
    run_id = None
    try:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=target.uri)
        experiment = client.get_experiment_by_name(target.experiment)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(target.experiment)
        run_id = client.create_run(experiment_id, run_name=f"{results.task.get('name')}-{results.run_id}").info.run_id
        now = int(time.time() * 1000)
        params = [Param(k, v) for k, v in run_params(results).items()]
        tags = [RunTag(k, v) for k, v in _tags(results, decision).items()]
        metrics = [Metric(k, v, now, 0) for k, v in run_metrics(results, decision).items()]
        for start in range(0, max(len(params), len(tags), len(metrics)), _BATCH):
            client.log_batch(run_id, metrics=metrics[start:start + _BATCH], params=params[start:start + _BATCH],
                             tags=tags[start:start + _BATCH])
        for path in files:
            if path is not None and Path(path).is_file():
                client.log_artifact(run_id, str(path))
        adapter = winner_adapter(results, decision)
        if adapter is not None:
            client.log_artifacts(run_id, str(adapter), artifact_path="adapter")
        client.set_terminated(run_id, "FINISHED" if results.status == "finished" else "FAILED")
    except Exception as exc:  # noqa: BLE001 - tracking must never lose the run; the sentence says what failed
        where = target.uri or "MLFLOW_TRACKING_URI"
        detail = " ".join(str(exc).split())[:300]
        partial = f" (MLflow run {run_id} may be incomplete)" if run_id else ""
        return TrackingRecord(uri=target.uri, experiment=target.experiment, run_id=run_id, warning=(
            f"Could not log the run to MLflow at {where}{partial}: {type(exc).__name__}: {detail}; the results "
            "are saved, and `tunewise run` again with --mlflow logs them without recomputing."))
    return TrackingRecord(uri=record.uri, experiment=record.experiment, run_id=run_id)
