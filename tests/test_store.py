"""The SQLite run store: migrations, run and rung lifecycle, lookups, blobs and persistence."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from tunewise.errors import StoreError
from tunewise.store import (
    DB_FILENAME,
    MIGRATIONS,
    Store,
    applied_migrations,
    environment_info,
    migrate,
    run_id_for,
)

SPEC = {"name": "intents", "kind": "classification"}


def start(store: Store, *, spec_hash: str = "aaaaaaaa1111", data_hash: str = "bbbbbbbb2222", **kw):
    return store.start_run(task_name="intents", spec=SPEC, spec_hash=spec_hash, data_hash=data_hash,
                           task_path="task.yaml", environment={"python": "3.11"}, **kw)


# ---------------------------------------------------------------- migrations


def test_migration_names_are_unique():
    names = [name for name, _ in MIGRATIONS]
    assert len(names) == len(set(names))


def test_new_store_applies_every_migration_and_uses_wal(tmp_path):
    with Store(tmp_path / "nested" / "store") as store:
        assert store.path == tmp_path / "nested" / "store" / DB_FILENAME
        assert store.path.is_file()
    conn = sqlite3.connect(tmp_path / "nested" / "store" / DB_FILENAME)
    assert applied_migrations(conn) == [name for name, _ in MIGRATIONS]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_old_database_is_upgraded_in_place_without_losing_rows(tmp_path):
    path = tmp_path / DB_FILENAME
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, MIGRATIONS[:2]) == [MIGRATIONS[0][0], MIGRATIONS[1][0]]  # an "old version"
    conn.execute(
        "INSERT INTO runs VALUES ('old-run', 't', NULL, '{}', 's', 'd', 'then', 'then', 'finished', '{}', NULL)"
    )
    conn.execute(
        "INSERT INTO rungs (run_id, name, status, result_json) VALUES (?, ?, ?, ?)",
        ("old-run", "zero_shot", "finished", '{"acc": 0.5}'),
    )
    conn.close()

    with Store(tmp_path) as store:
        assert store.get_run("old-run").status == "finished"
        assert store.rung_result("old-run", "zero_shot").result == {"acc": 0.5}
        store.put_call("k", "fake:random", "generate", {"a": 1}, {"text": "x"})  # a table from a later migration
        assert store.count_calls() == 1


def test_applying_migrations_twice_is_a_no_op(tmp_path):
    Store(tmp_path).close()
    conn = sqlite3.connect(tmp_path / DB_FILENAME, isolation_level=None)
    assert migrate(conn) == []
    assert applied_migrations(conn) == [name for name, _ in MIGRATIONS]
    conn.close()


def test_a_failing_migration_is_rolled_back(tmp_path):
    def broken(conn):
        conn.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("boom")

    conn = sqlite3.connect(tmp_path / DB_FILENAME, isolation_level=None)
    with pytest.raises(RuntimeError):
        migrate(conn, [*MIGRATIONS, ("m999_broken", broken)])
    assert "m999_broken" not in applied_migrations(conn)
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "half_done" not in tables and "artifacts" in tables
    conn.close()


def test_unreadable_database_is_a_store_error(tmp_path):
    (tmp_path / DB_FILENAME).write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=DB_FILENAME):
        Store(tmp_path)


# ---------------------------------------------------------------- runs


def test_run_id_is_deterministic_and_short():
    assert run_id_for("0123456789abcdef", "fedcba9876543210") == "01234567-fedcba98"
    assert run_id_for("0123456789abcdef", "fedcba9876543210") == run_id_for("0123456789abcdef", "fedcba9876543210")
    # Only the first 8 characters of each hash are used.
    assert run_id_for("0123456789abcdef", "fedcba9876543211") == run_id_for("01234567", "fedcba98")
    assert run_id_for("1123456789abcdef", "fedcba9876543210") != run_id_for("0123456789abcdef", "fedcba9876543210")


def test_run_lifecycle_and_resume_keeps_created_at(tmp_path):
    with Store(tmp_path) as store:
        run = start(store)
        assert run.id == run_id_for("aaaaaaaa1111", "bbbbbbbb2222")
        assert (run.status, run.spec, run.task_path) == ("running", SPEC, "task.yaml")
        assert run.environment == {"python": "3.11"}
        store.finish_run(run.id, "interrupted")
        again = start(store)  # same task + data: the same run, resumed
        assert again.id == run.id and again.created_at == run.created_at and again.status == "running"
        store.finish_run(run.id, "finished", tmp_path / "report")
        done = store.get_run(run.id)
        assert done.status == "finished" and done.results_path == str(tmp_path / "report")
        assert [r.id for r in store.list_runs()] == [run.id]


def test_finish_run_rejects_unknown_status_and_unknown_run(tmp_path):
    with Store(tmp_path) as store:
        run = start(store)
        with pytest.raises(ValueError):
            store.finish_run(run.id, "done")  # type: ignore[arg-type]
        with pytest.raises(StoreError):
            store.finish_run("nope", "failed")


def test_start_run_records_environment_by_default(tmp_path):
    with Store(tmp_path) as store:
        run = store.start_run(task_name="t", spec={}, spec_hash="s" * 8, data_hash="d" * 8)
        assert run.environment["python"] and "numpy" in run.environment["versions"]


def test_list_runs_newest_first(tmp_path):
    with Store(tmp_path) as store:
        first = start(store, spec_hash="11111111")
        second = start(store, spec_hash="22222222")
        assert [r.id for r in store.list_runs()] == [second.id, first.id]


def test_find_run_by_exact_id_or_unique_prefix(tmp_path):
    with Store(tmp_path) as store:
        a = start(store, spec_hash="abc11111")
        b = start(store, spec_hash="abc22222")
        assert store.find_run(a.id).id == a.id
        assert store.find_run("abc2").id == b.id
        with pytest.raises(StoreError, match="several runs") as several:
            store.find_run("abc")
        assert a.id in str(several.value) and b.id in str(several.value)
        with pytest.raises(StoreError, match="No run"):
            store.find_run("zzz")
        with pytest.raises(StoreError, match="No run"):
            store.find_run("abc%")  # LIKE wildcards are literal


# ---------------------------------------------------------------- rungs


def test_rung_lifecycle(tmp_path):
    with Store(tmp_path) as store:
        run = start(store)
        rung = store.start_rung(run.id, "zero_shot", config={"k": 0}, config_hash="cfg1")
        assert (rung.status, rung.config, rung.started_at is not None) == ("running", {"k": 0}, True)
        assert store.rung_result(run.id, "zero_shot") is None  # running is not a result
        store.finish_rung(run.id, "zero_shot", {"accuracy": 0.7})
        done = store.rung_result(run.id, "zero_shot")
        assert done.status == "finished" and done.result == {"accuracy": 0.7} and done.finished_at
        assert store.rung_result(run.id, "zero_shot", config_hash="cfg1") == done
        assert store.rung_result(run.id, "zero_shot", config_hash="cfg2") is None

        store.start_rung(run.id, "few_shot", config={"k": 8})
        store.fail_rung(run.id, "few_shot", "BackendError: boom")
        store.skip_rung(run.id, "lora", "no GPU and the budget is 5 minutes")  # never started
        rungs = {r.name: r for r in store.list_rungs(run.id)}
        assert [r.name for r in store.list_rungs(run.id)] == ["zero_shot", "few_shot", "lora"]
        assert (rungs["few_shot"].status, rungs["few_shot"].error) == ("failed", "BackendError: boom")
        assert rungs["few_shot"].config == {"k": 8}
        assert (rungs["lora"].status, rungs["lora"].reason) == ("skipped", "no GPU and the budget is 5 minutes")


def test_restarting_a_rung_clears_its_old_outcome(tmp_path):
    with Store(tmp_path) as store:
        run = start(store)
        store.start_rung(run.id, "cot")
        store.fail_rung(run.id, "cot", "killed")
        again = store.start_rung(run.id, "cot", config={"retry": True})
        assert (again.status, again.error, again.result, again.finished_at) == ("running", None, None, None)


# ---------------------------------------------------------------- calls, blobs, artifacts


def test_calls_round_trip_and_count(tmp_path):
    with Store(tmp_path) as store:
        assert store.get_call("k1") is None
        store.put_call("k1", "fake:a", "generate", {"prompt": "p"}, {"text": "t", "latency_s": 0.5})
        store.put_call("k2", "fake:b", "score", {"prompt": "p"}, {"logprobs": [-1.0]})
        assert store.get_call("k1") == {"text": "t", "latency_s": 0.5}
        assert (store.count_calls(), store.count_calls("fake:a"), store.count_calls("other")) == (2, 1, 0)


def test_blobs_and_arrays(tmp_path):
    with Store(tmp_path) as store:
        store.put_blob("b", b"\x00\x01raw", kind="bytes", meta={"n": 2})
        blob = store.get_blob("b")
        assert (blob.data, blob.kind, blob.meta) == (b"\x00\x01raw", "bytes", {"n": 2})
        matrix = np.arange(12, dtype=np.float32).reshape(3, 4)
        store.put_array("emb", matrix, meta={"model": "minilm"})
        loaded = store.get_array("emb")
        assert loaded.dtype == np.float32 and np.array_equal(loaded, matrix)
        assert store.get_blob("missing") is None and store.get_array("missing") is None


def test_artifacts(tmp_path):
    with Store(tmp_path) as store:
        run = start(store)
        first = store.add_artifact(run.id, kind="report", path=tmp_path / "report.html")
        store.add_artifact(run.id, kind="adapter", path="adapters/lora", rung="lora", meta={"r": 16})
        arts = store.list_artifacts(run.id)
        assert [a.kind for a in arts] == ["report", "adapter"] and arts[0].id == first
        assert [a.meta for a in store.list_artifacts(run.id, rung="lora")] == [{"r": 16}]


def test_every_record_method_reads_only_what_the_record_holds(tmp_path):
    """A record's methods work on the record a store returns (an artifact is a path, not bytes)."""
    with Store(tmp_path) as store:
        run = start(store)
        store.start_rung(run.id, "knn", config={})
        store.put_array("emb", np.ones(2))
        store.add_artifact(run.id, kind="adapter", path="adapters/lora", rung="lora")
        records = [store.get_run(run.id), store.list_rungs(run.id)[0], store.get_blob("emb"),
                   store.list_artifacts(run.id)[0], store.put_version("v1", {"rung": "knn"})]
    for record in records:
        for name in dir(record):
            method = getattr(type(record), name, None)
            if name.startswith("_") or not callable(method):
                continue
            getattr(record, name)()  # an AttributeError here is a method about fields the record lacks


def test_everything_persists_into_a_new_store_instance(tmp_path):
    with Store(tmp_path) as store:
        run = start(store)
        store.finish_rung(run.id, "zero_shot", {"accuracy": 0.25})
        store.put_call("k", "fake:random", "score", {"q": 1}, {"logprobs": [-2.0]})
        store.put_array("a", np.ones(3))
    with Store(tmp_path) as reopened:
        assert reopened.get_run(run.id) == run
        assert reopened.rung_result(run.id, "zero_shot").result == {"accuracy": 0.25}
        assert reopened.get_call("k") == {"logprobs": [-2.0]}
        assert np.array_equal(reopened.get_array("a"), np.ones(3))


def test_a_second_process_reads_what_the_first_wrote(tmp_path):
    with Store(tmp_path) as store:
        run = start(store)
        store.finish_rung(run.id, "zero_shot", {"accuracy": 0.5})
        code = (
            "import sys; from tunewise.store import Store; s = Store(sys.argv[1]);"
            f"print(s.rung_result({run.id!r}, 'zero_shot').result['accuracy'])"
        )
        # The writer is still open: a reader in another process must not block or see stale data.
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0.5"


# ---------------------------------------------------------------- environment


def test_environment_info_does_not_import_torch():
    code = (
        "import sys; from tunewise.store import environment_info; info = environment_info();"
        "assert 'torch' not in sys.modules; print(info['versions']['tunewise'], info['cuda_available'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0.1.0", "None"]


def test_environment_info_fields():
    info = environment_info()
    assert {"python", "platform", "cpu_count", "versions", "cuda_available"} <= set(info)
    assert set(info["versions"]) >= {"tunewise", "torch", "transformers", "peft", "numpy"}
