"""Versions: content-hashed ids, aliases with one-step rollback, and rebuilding a candidate without training."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from tunewise.cli import cli
from tunewise.data import load_splits
from tunewise.errors import StoreError
from tunewise.run import run_task
from tunewise.store import Store
from tunewise.task import load_task
from tunewise.versions import (
    create_version,
    list_versions,
    load_candidate,
    promote,
    resolve,
    rollback,
    task_spec,
    version_id,
)

from .test_run import write_task

RUNGS = ["knn", "zero_shot", "few_shot_random"]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A finished run of three deployable rungs on the fake backend (about a second)."""
    tmp = tmp_path_factory.mktemp("versions")
    task = write_task(tmp)
    outcome = run_task(load_task(task), rungs=RUNGS, task_path=task, report=False)
    return tmp, outcome


@pytest.fixture
def store(recorded, tmp_path):
    """A private copy of the run store, so tests can move aliases freely."""
    src, _ = recorded
    shutil.copytree(src / ".tunewise", tmp_path / "store")
    with Store(tmp_path / "store") as st:
        yield st


def test_the_same_rung_result_makes_the_same_version(store, recorded):
    run_id = recorded[1].results.run_id
    first = create_version(store, run_id, "zero_shot")
    again = create_version(store, run_id[:6], "zero_shot")
    assert first.id == again.id == version_id(first.manifest) and len(first.id) == 12
    assert first.created_at == again.created_at  # recorded once
    assert version_id({**first.manifest, "seed": 1}) != first.id  # the id is the content
    m = first.manifest
    assert m["rung"] == {"name": "zero_shot", "strategy": "prompt", "params": m["rung"]["params"]}
    assert m["candidate"]["strategy"] == "prompt" and m["model"] == "fake:random" and m["artifact"] is None
    assert m["data_hash"] and m["seed"] == 0 and m["versions"]["tunewise"]
    assert {"value", "low", "high", "n"} <= set(m["metric"]) and m["metric"]["name"] == "accuracy"
    assert m["task"]["path"].endswith("task.yaml") and m["task"]["spec"]["name"] == "toy"
    knn = create_version(store, run_id, "knn")
    assert knn.manifest["model"] is None and knn.manifest["embedder"] == "hashing"
    # the run registered its winner (knn) already: creating it again finds the same version
    assert resolve(store, "candidate").id == knn.id and {v.id for v in list_versions(store)} == {knn.id, first.id}


def test_only_finished_deployable_rungs_become_versions(store, recorded):
    run_id = recorded[1].results.run_id
    with pytest.raises(StoreError, match="has no rung 'lora'"):
        create_version(store, run_id, "lora")
    store.start_rung(run_id, "curve", config={"name": "curve", "strategy": "learning_curve", "params": {}})
    with pytest.raises(StoreError, match="is running"):
        create_version(store, run_id, "curve")
    store.finish_rung(run_id, "curve", {"strategy": "learning_curve", "config": {}})
    with pytest.raises(StoreError, match="cannot be deployed"):
        create_version(store, run_id, "curve")


def test_promote_and_rollback_walk_the_alias_history(store, recorded):
    run_id = recorded[1].results.run_id
    a, b, c = (create_version(store, run_id, r) for r in RUNGS)
    promote(store, a.id, "production")
    promote(store, b.id[:6], "production")  # a unique prefix
    promote(store, b.id, "production")  # already there: no history entry
    promote(store, "production", "candidate")  # an alias names its version
    promote(store, c.id, "production")
    assert resolve(store, "production").id == c.id and resolve(store, "candidate").id == b.id
    assert rollback(store, "production").id == b.id
    assert rollback(store, "production").id == a.id
    with pytest.raises(StoreError, match="no earlier version"):
        rollback(store, "production")
    assert resolve(store, "production").id == a.id
    assert [action for _, action, _ in store.alias_history("production")] == ["promote"] * 3 + ["rollback"] * 2
    promote(store, c.id, "production")  # after rollbacks, a promotion pushes again
    assert rollback(store, "production").id == a.id


def test_unknown_names_and_bad_aliases_are_one_sentence_errors(store, recorded):
    v = create_version(store, recorded[1].results.run_id, "knn")
    with pytest.raises(StoreError, match="No version or alias 'nope'"):
        resolve(store, "nope")
    with pytest.raises(StoreError, match="No alias 'nope'"):
        rollback(store, "nope")
    for bad in ("", "has space", "0123456789ab", "-x"):
        with pytest.raises(StoreError, match="not a valid name"):
            promote(store, v.id, bad)


@pytest.mark.parametrize("rung", RUNGS)
def test_load_candidate_reproduces_the_runs_predictions(store, recorded, rung):
    outcome = recorded[1]
    version = create_version(store, outcome.results.run_id, rung)
    candidate, backend = load_candidate(version, store)
    test = load_splits(task_spec(version, store)).test[:6]
    recorded_outputs = [p.output for p in next(r for r in outcome.results.rungs if r.name == rung).predictions[:6]]
    assert [p.output for p in candidate.predict(test, backend=backend)] == recorded_outputs
    candidate, backend = load_candidate(version, store, serving=True)  # uncached backend: same answers
    assert [p.output for p in candidate.predict(test, backend=backend)] == recorded_outputs


def test_changed_data_refuses_to_rebuild(recorded, tmp_path):
    src, outcome = recorded
    shutil.copytree(src, tmp_path / "task")
    with Store(tmp_path / "task" / ".tunewise") as st:
        version = create_version(st, outcome.results.run_id, "knn")
        task = {**version.manifest["task"], "path": str(tmp_path / "task" / "task.yaml")}
        manifest = {**version.manifest, "task": task}
        moved = type(version)(id=version.id, created_at=version.created_at, manifest=manifest)
        with (tmp_path / "task" / "train.jsonl").open("a") as f:
            f.write(json.dumps({"text": "a brand new example", "label": "top_up"}) + "\n")
        with pytest.raises(StoreError, match="data of task toy changed"):
            load_candidate(moved, st)


def test_versions_cli_create_list_promote_rollback(store, recorded):
    run_id = recorded[1].results.run_id
    root, runner = str(store.directory), CliRunner()
    made = runner.invoke(cli, ["versions", "create", run_id, "knn", "--alias", "production", "--store", root])
    assert made.exit_code == 0, made.output
    knn = made.output.split()[0]
    other = runner.invoke(cli, ["versions", "create", run_id, "zero_shot", "--store", root]).output.split()[0]
    assert runner.invoke(cli, ["versions", "promote", other, "--alias", "production", "--store", root]).exit_code == 0
    listed = runner.invoke(cli, ["versions", "list", "--store", root]).output
    assert f"{other}  production" in listed and "accuracy" in listed and knn in listed
    back = runner.invoke(cli, ["versions", "rollback", "production", "--store", root])
    assert back.exit_code == 0 and back.output.startswith(f"production -> {knn}")
    again = runner.invoke(cli, ["versions", "rollback", "production", "--store", root])
    assert again.exit_code == 2
    assert again.output.strip() == "error: Alias 'production' has no earlier version to roll back to."
    shown = runner.invoke(cli, ["versions", "show", "production", "--store", root])
    assert json.loads(shown.output)["id"] == knn


def test_run_registers_the_winner_as_candidate(tmp_path):
    task = write_task(tmp_path)
    outcome = run_task(load_task(task), rungs=["knn", "zero_shot"], report=False)
    with Store(tmp_path / ".tunewise") as st:
        assert outcome.version and resolve(st, "candidate").id == outcome.version
        assert resolve(st, "candidate").rung == "knn"  # the hashing kNN is perfect on this toy task


@pytest.mark.slow
def test_a_tuned_version_is_rebuilt_from_its_artifact_and_never_trained(tiny_llama_dir, tmp_path):
    from .test_finetuning import tiny_task

    params = "{max_steps: 2, batch_size: 8, r: 2, alpha: 4, dropout: 0.0, evals_per_epoch: 1}"
    task = tiny_task(tmp_path, tiny_llama_dir, f"  - {{name: lora_small, strategy: finetune, params: {params}}}\n",
                     n_train=24, n_test=8)
    outcome = run_task(load_task(task), report=False)
    with Store(tmp_path / ".tunewise") as st:
        version = create_version(st, outcome.results.run_id, "lora_small")
        artifact = version.manifest["artifact"]
        assert artifact["kind"] == "adapter" and len(artifact["fingerprint"]) == 12
        candidate, _ = load_candidate(version, st, serving=True)
        test = load_splits(task_spec(version, st)).test[:4]
        recorded_outputs = [p.output for p in outcome.results.rungs[0].predictions[:4]]
        assert [p.output for p in candidate.predict(test, backend=None)] == recorded_outputs
        candidate.close()
        shutil.rmtree(tmp_path / ".tunewise" / "artifacts")
        with pytest.raises(StoreError, match="is missing and serving never trains"):
            load_candidate(version, st)
        assert not (tmp_path / ".tunewise" / "artifacts").exists()  # nothing was trained or even started


@pytest.mark.parametrize("command", [["versions"], ["versions", "list"], ["versions", "show"], ["versions", "create"],
                                     ["versions", "promote"], ["versions", "rollback"], ["serve"]], ids=" ".join)
def test_every_new_command_has_help(command):
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output and len(result.output.splitlines()) > 3
