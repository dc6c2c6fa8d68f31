"""MLflow tracking of a finished run, against a local file store read back with ``MlflowClient``."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import pytest
from click.testing import CliRunner

from tunewise.cli import cli
from tunewise.errors import TaskSpecError
from tunewise.run import run_task
from tunewise.task import load_task
from tunewise.tracking import MlflowTarget, log_to_mlflow, run_metrics, run_params, rung_keys

from .test_run import write_task

mlflow = pytest.importorskip("mlflow")


@pytest.fixture
def store_uri(tmp_path, monkeypatch):
    # MLflow 3 keeps its file store only on request (it points users to a database); the file store is the
    # cheap real thing here, as mlflow-skinny has no SQLAlchemy
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return (tmp_path / "mlruns").as_uri()


def _only_run(uri: str, experiment: str):
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def test_run_is_logged_with_params_metrics_intervals_decision_and_files(tmp_path, store_uri):
    task = write_task(tmp_path, extra=f"tracking: {{mlflow: '{store_uri}', experiment: toys}}\n")
    outcome = run_task(load_task(task), rungs=["knn", "zero_shot"])
    assert outcome.tracking is not None and outcome.tracking.warning is None
    client, run = _only_run(store_uri, "toys")
    assert run.info.run_id == outcome.tracking.run_id and run.info.status == "FINISHED"
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    results = outcome.results
    assert params["task"] == "toy" and params["kind"] == "classification" and params["seed"] == "0"
    assert params["data_hash"] == results.data["hash"] and params["models"] == "fake:random"
    assert params["zero_shot.strategy"] == "prompt" and params["zero_shot.mode"] == "score"
    assert params["knn.k"] == "1"
    for rung in results.rungs:
        acc = rung.metrics["accuracy"]
        assert metrics[f"accuracy.{rung.name}"] == pytest.approx(acc.value)
        assert metrics[f"accuracy.{rung.name}.lower"] == pytest.approx(acc.low)
        assert metrics[f"accuracy.{rung.name}.upper"] == pytest.approx(acc.high)
        assert acc.low <= acc.value <= acc.high
        assert f"macro_f1.{rung.name}.upper" in metrics and f"examples_per_s.{rung.name}" in metrics
    option = {o.name: o for o in outcome.decision.options}["zero_shot"]
    assert metrics["latency_p50_ms.zero_shot"] == pytest.approx(option.latency_p50_ms)
    assert tags["decision.winner"] == outcome.decision.winner and tags["decision.status"] == outcome.decision.status
    artifacts = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"results.json", "summary.md", "report.html", "decision.json"} <= artifacts
    logged = json.loads(open(client.download_artifacts(run.info.run_id, "results.json", str(tmp_path))).read())
    assert logged["run_id"] == results.run_id


def test_cli_flag_logs_and_tracking_leaves_the_run_id_alone(tmp_path, store_uri):
    task = write_task(tmp_path)
    plain = run_task(load_task(task), rungs=["knn"], report=False)
    result = CliRunner().invoke(cli, ["run", str(task), "--rungs", "knn", "--quiet", "--mlflow", store_uri])
    assert result.exit_code == 0, result.output
    client, run = _only_run(store_uri, "toy")  # the experiment defaults to the task's name
    assert f"mlflow:  run {run.info.run_id}" in result.output
    assert run.data.params["run_id"] == plain.results.run_id  # same run: the knn rung was reused, not recomputed


def test_flag_alone_uses_the_environment_uri(tmp_path, store_uri, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store_uri)
    result = CliRunner().invoke(cli, ["run", str(write_task(tmp_path)), "--rungs", "knn", "--quiet", "--mlflow"])
    assert result.exit_code == 0, result.output
    _, run = _only_run(store_uri, "toy")
    assert run.data.metrics["accuracy.knn"] >= 0


def test_a_logging_failure_is_a_warning_and_loses_nothing(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the store would go")
    outcome = run_task(load_task(write_task(tmp_path)), rungs=["knn"], report=False, mlflow=blocker.as_uri())
    assert outcome.results_path.is_file() and outcome.results.rungs[0].status == "finished"
    assert outcome.tracking.run_id is None
    assert outcome.tracking.warning.startswith(f"Could not log the run to MLflow at {blocker.as_uri()}")
    assert "the results are saved" in outcome.tracking.warning


def test_missing_mlflow_fails_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ModuleNotFoundError
    task = write_task(tmp_path, extra="tracking: {mlflow: true}\n")
    with pytest.raises(TaskSpecError, match=r"mlflow is not installed; run `pip install 'tunewise\[tracking\]'`"):
        run_task(load_task(task), rungs=["knn"])
    assert not (tmp_path / ".tunewise").exists()


def test_tracking_does_not_change_the_task_fingerprint(tmp_path):
    plain = load_task(write_task(tmp_path))
    tracked = load_task(write_task(tmp_path, extra="tracking: {mlflow: 'http://localhost:5000'}\n"))
    assert tracked.tracking.mlflow == "http://localhost:5000" and plain.fingerprint() == tracked.fingerprint()


def test_rung_names_become_distinct_mlflow_keys():
    keys = rung_keys(["few_shot@smollm2", "distill(teacher=cot@gpt)->lora@smollm2", "few_shot_smollm2", "knn"])
    assert keys == {"few_shot@smollm2": "few_shot_smollm2", "distill(teacher=cot@gpt)->lora@smollm2":
                    "distill_teacher_cot_gpt_-_lora_smollm2", "few_shot_smollm2": "few_shot_smollm2_2", "knn": "knn"}


def test_winner_adapter_is_logged(tmp_path, store_uri):
    outcome = run_task(load_task(write_task(tmp_path)), rungs=["knn", "zero_shot"], report=False)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    winner = outcome.results.rung(outcome.decision.winner)
    tuned = replace(winner, config={**winner.config, "artifact": str(adapter)})
    results = replace(outcome.results, rungs=tuple(tuned if r is winner else r for r in outcome.results.rungs))
    record = log_to_mlflow(MlflowTarget(uri=store_uri, experiment="adapters"), results, outcome.decision)
    assert record.warning is None
    client = mlflow.tracking.MlflowClient(tracking_uri=store_uri)
    assert {f.path for f in client.list_artifacts(record.run_id, "adapter")} == {
        "adapter/adapter_config.json", "adapter/adapter_model.safetensors"}


def test_params_and_metrics_fit_mlflow_limits(tmp_path):
    outcome = run_task(load_task(write_task(tmp_path)), policy=False, report=False)  # every default rung
    params, metrics = run_params(outcome.results), run_metrics(outcome.results, outcome.decision)
    assert all(len(v) <= 6000 for v in params.values()) and all(len(k) <= 250 for k in [*params, *metrics])
    finished = [r for r in outcome.results.rungs if r.status == "finished"]
    assert len([k for k in metrics if k.startswith("accuracy.") and k.endswith(".lower")]) == len(finished)
