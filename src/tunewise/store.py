"""The run store: one SQLite file that remembers runs, rungs, model calls, blobs and artifacts.

Everything a run learns is written here as soon as it is known (each write commits on its own),
so a run killed with ``kill -9`` loses at most the model call in flight and resumes from the rest:
finished rungs are read back instead of recomputed, and every model call is replayed from the
``calls`` table by :class:`tunewise.backends.cached.CachedBackend`.

The schema grows by append-only migrations (the habit of simonw/llm): ``MIGRATIONS`` is an
ordered list of named steps, ``_migrations`` records the ones applied, and opening a store applies
the missing ones in order, each in its own transaction. Never edit or reorder a released
migration; append a new one.

Concurrency: WAL mode and a busy timeout make one writer process plus any number of readers safe.

Out of scope: what a rung computes (``ladder/``), how call keys are made (``backends/cached.py``)
and report files (``report/``); this module only stores and returns them.
"""

from __future__ import annotations

import io
import json
import os
import platform
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from .errors import StoreError

__all__ = [
    "DB_FILENAME",
    "MIGRATIONS",
    "RunStatus",
    "RungStatus",
    "RunRecord",
    "RungRecord",
    "Blob",
    "ArtifactRecord",
    "VersionRecord",
    "Store",
    "migrate",
    "applied_migrations",
    "run_id_for",
    "environment_info",
]

DB_FILENAME = "tunewise.db"
BUSY_TIMEOUT_MS = 10_000

RunStatus = Literal["running", "finished", "failed", "interrupted"]
RungStatus = Literal["running", "finished", "failed", "skipped"]
_RUN_STATUSES = ("running", "finished", "failed", "interrupted")


# --------------------------------------------------------------------------- migrations
# Append-only. Each entry is (unique name, SQL script or function(connection)).

Migration = tuple[str, str | Callable[[sqlite3.Connection], None]]

MIGRATIONS: list[Migration] = [
    (
        "m001_runs",
        """
        CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            task_name TEXT NOT NULL,
            task_path TEXT,
            spec_json TEXT NOT NULL,
            spec_hash TEXT NOT NULL,
            data_hash TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            status TEXT NOT NULL,
            environment_json TEXT NOT NULL DEFAULT '{}',
            results_path TEXT
        );
        """,
    ),
    (
        "m002_rungs",
        """
        CREATE TABLE rungs (
            run_id TEXT NOT NULL REFERENCES runs(id),
            name TEXT NOT NULL,
            config_hash TEXT,
            config_json TEXT NOT NULL DEFAULT '{}',
            status TEXT NOT NULL,
            result_json TEXT,
            error TEXT,
            reason TEXT,
            started_at TEXT,
            finished_at TEXT,
            PRIMARY KEY (run_id, name)
        );
        """,
    ),
    (
        "m003_calls",
        """
        CREATE TABLE calls (
            key TEXT PRIMARY KEY,
            backend TEXT NOT NULL,
            kind TEXT NOT NULL,
            request_json TEXT NOT NULL,
            response_json TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX calls_backend ON calls(backend);
        """,
    ),
    (
        "m004_blobs",
        """
        CREATE TABLE blobs (
            key TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            data BLOB NOT NULL,
            meta_json TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL
        );
        """,
    ),
    (
        "m005_artifacts",
        """
        CREATE TABLE artifacts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL REFERENCES runs(id),
            rung TEXT,
            kind TEXT NOT NULL,
            path TEXT NOT NULL,
            meta_json TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL
        );
        CREATE INDEX artifacts_run ON artifacts(run_id);
        """,
    ),
    (
        # deployable versions (see versions.py): a content-hashed manifest each; aliases point at
        # them and every move of an alias is appended to alias_history, which is what rollback replays
        "m006_versions",
        """
        CREATE TABLE versions (
            id TEXT PRIMARY KEY,
            created_at TEXT NOT NULL,
            manifest_json TEXT NOT NULL
        );
        CREATE TABLE aliases (
            alias TEXT PRIMARY KEY,
            version TEXT NOT NULL REFERENCES versions(id),
            updated_at TEXT NOT NULL
        );
        CREATE TABLE alias_history (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            alias TEXT NOT NULL,
            version TEXT NOT NULL REFERENCES versions(id),
            action TEXT NOT NULL,
            ts TEXT NOT NULL
        );
        CREATE INDEX alias_history_alias ON alias_history(alias, id);
        """,
    ),
]


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT on an autocommit connection (rolls back on any exception)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def applied_migrations(conn: sqlite3.Connection) -> list[str]:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    return [row[0] for row in conn.execute("SELECT name FROM _migrations ORDER BY rowid")]


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> list[str]:
    """Apply the migrations not yet recorded, in order; returns the names applied now."""
    done = set(applied_migrations(conn))
    applied = []
    for name, step in migrations:
        if name in done:
            continue
        with _transaction(conn):
            if callable(step):
                step(conn)
            else:
                # executescript would COMMIT our transaction; run statements one by one instead.
                for statement in _split_sql(step):
                    conn.execute(statement)
            conn.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", (name, _now()))
        applied.append(name)
    return applied


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class RunRecord:
    id: str
    task_name: str
    task_path: str | None
    spec: dict[str, Any]
    spec_hash: str
    data_hash: str
    created_at: str
    updated_at: str
    status: str
    environment: dict[str, Any]
    results_path: str | None


@dataclass(frozen=True)
class RungRecord:
    run_id: str
    name: str
    config_hash: str | None
    config: dict[str, Any]
    status: str
    result: dict[str, Any] | None
    error: str | None
    reason: str | None
    started_at: str | None
    finished_at: str | None


@dataclass(frozen=True)
class Blob:
    key: str
    kind: str
    data: bytes
    meta: dict[str, Any]
    created_at: str

    def array(self) -> Any:
        """The numpy array a blob of kind ``ndarray`` holds (see :meth:`Store.put_array`)."""
        import numpy as np  # lazy: the store itself needs no numpy

        return np.load(io.BytesIO(self.data), allow_pickle=False)


@dataclass(frozen=True)
class ArtifactRecord:
    """A file a run produced (a report, an adapter): the store keeps its ``path``, not its bytes (see :class:`Blob`)."""

    id: int
    run_id: str
    rung: str | None
    kind: str
    path: str
    meta: dict[str, Any]
    created_at: str


@dataclass(frozen=True)
class VersionRecord:
    id: str
    created_at: str
    manifest: dict[str, Any]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _run_from_row(row: sqlite3.Row) -> RunRecord:
    return RunRecord(
        id=row["id"],
        task_name=row["task_name"],
        task_path=row["task_path"],
        spec=_loads(row["spec_json"]),
        spec_hash=row["spec_hash"],
        data_hash=row["data_hash"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        status=row["status"],
        environment=_loads(row["environment_json"]) or {},
        results_path=row["results_path"],
    )


def _rung_from_row(row: sqlite3.Row) -> RungRecord:
    return RungRecord(
        run_id=row["run_id"],
        name=row["name"],
        config_hash=row["config_hash"],
        config=_loads(row["config_json"]) or {},
        status=row["status"],
        result=_loads(row["result_json"]),
        error=row["error"],
        reason=row["reason"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


def run_id_for(spec_hash: str, data_hash: str) -> str:
    """Same task spec + same data -> same run id, which is what makes ``run`` resumable."""
    return f"{spec_hash[:8]}-{data_hash[:8]}"


# --------------------------------------------------------------------------- the store


class Store:
    """The SQLite run store in ``directory/tunewise.db`` (created, and migrated, on open)."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.path = self.directory / DB_FILENAME
        self._lock = threading.Lock()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._conn = self._connect()
            migrate(self._conn)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"Cannot open the run store {self.path}: {exc}.") from exc

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: autocommit, so every write commits at once; multi-statement
        # writes use _transaction. check_same_thread=False + our lock: backends may call from threads.
        conn = sqlite3.connect(
            self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False
        )
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL survives a killed process (only a power cut may lose the last commits).
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._conn.execute(sql, params)

    def _one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        with self._lock:
            return self._conn.execute(sql, params).fetchone()

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    # ---------------------------------------------------------------- runs

    def start_run(
        self,
        *,
        task_name: str,
        spec: Mapping[str, Any],
        spec_hash: str,
        data_hash: str,
        task_path: Path | str | None = None,
        environment: Mapping[str, Any] | None = None,
        run_id: str | None = None,
    ) -> RunRecord:
        """Create the run, or mark an existing one (a resume) as running again."""
        run_id = run_id or run_id_for(spec_hash, data_hash)
        now = _now()
        env = _dumps(dict(environment if environment is not None else environment_info()))
        self._execute(
            """
            INSERT INTO runs (id, task_name, task_path, spec_json, spec_hash, data_hash,
                              created_at, updated_at, status, environment_json, results_path)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, NULL)
            ON CONFLICT(id) DO UPDATE SET
                task_name = excluded.task_name, task_path = excluded.task_path,
                spec_json = excluded.spec_json, updated_at = excluded.updated_at,
                status = 'running', environment_json = excluded.environment_json
            """,
            (run_id, task_name, None if task_path is None else str(task_path), _dumps(dict(spec)),
             spec_hash, data_hash, now, now, env),
        )
        record = self.get_run(run_id)
        assert record is not None
        return record

    def get_run(self, run_id: str) -> RunRecord | None:
        row = self._one("SELECT * FROM runs WHERE id = ?", (run_id,))
        return None if row is None else _run_from_row(row)

    def list_runs(self) -> list[RunRecord]:
        """Newest first."""
        rows = self._all("SELECT * FROM runs ORDER BY created_at DESC, id")
        return [_run_from_row(row) for row in rows]

    def find_run(self, prefix: str) -> RunRecord:
        """The run whose id is ``prefix`` or, failing that, the only one starting with it."""
        exact = self.get_run(prefix)
        if exact is not None:
            return exact
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self._all(
            "SELECT * FROM runs WHERE id LIKE ? ESCAPE '\\' ORDER BY id LIMIT 6", (escaped + "%",)
        )
        if not rows:
            raise StoreError(f"No run in {self.path} has an id starting with {prefix!r}.")
        if len(rows) > 1:
            shown = ", ".join(row["id"] for row in rows[:5]) + (", ..." if len(rows) > 5 else "")
            raise StoreError(
                f"Run id prefix {prefix!r} matches several runs in {self.path} ({shown}); give more characters."
            )
        return _run_from_row(rows[0])

    def finish_run(self, run_id: str, status: RunStatus, results_path: Path | str | None = None) -> None:
        if status not in _RUN_STATUSES:
            raise ValueError(f"run status must be one of {_RUN_STATUSES}, not {status!r}")
        cursor = self._execute(
            "UPDATE runs SET status = ?, results_path = COALESCE(?, results_path), updated_at = ? WHERE id = ?",
            (status, None if results_path is None else str(results_path), _now(), run_id),
        )
        if cursor.rowcount == 0:
            raise StoreError(f"No run {run_id!r} in {self.path}.")

    # ---------------------------------------------------------------- rungs

    def start_rung(
        self, run_id: str, name: str, *, config: Mapping[str, Any] | None = None, config_hash: str | None = None
    ) -> RungRecord:
        """Mark a rung running (again): any earlier result, error or reason is cleared."""
        self._execute(
            """
            INSERT INTO rungs (run_id, name, config_hash, config_json, status, started_at)
            VALUES (?, ?, ?, ?, 'running', ?)
            ON CONFLICT(run_id, name) DO UPDATE SET
                config_hash = excluded.config_hash, config_json = excluded.config_json,
                status = 'running', result_json = NULL, error = NULL, reason = NULL,
                started_at = excluded.started_at, finished_at = NULL
            """,
            (run_id, name, config_hash, _dumps(dict(config or {})), _now()),
        )
        record = self.get_rung(run_id, name)
        assert record is not None
        return record

    def _end_rung(self, run_id: str, name: str, *, status: str, column: str, value: str) -> None:
        # Upsert so skip (and fail before start) need no start_rung; column is one of ours, not user input.
        now = _now()
        self._execute(
            f"""
            INSERT INTO rungs (run_id, name, status, {column}, started_at, finished_at)
            VALUES (?, ?, ?, ?, ?, ?)
            ON CONFLICT(run_id, name) DO UPDATE SET
                status = excluded.status, {column} = excluded.{column}, finished_at = excluded.finished_at
            """,
            (run_id, name, status, value, now, now),
        )

    def finish_rung(self, run_id: str, name: str, result: Mapping[str, Any]) -> None:
        self._end_rung(run_id, name, status="finished", column="result_json", value=_dumps(dict(result)))

    def fail_rung(self, run_id: str, name: str, error: str) -> None:
        self._end_rung(run_id, name, status="failed", column="error", value=error)

    def skip_rung(self, run_id: str, name: str, reason: str) -> None:
        self._end_rung(run_id, name, status="skipped", column="reason", value=reason)

    def get_rung(self, run_id: str, name: str) -> RungRecord | None:
        """The rung in whatever state it is in."""
        row = self._one("SELECT * FROM rungs WHERE run_id = ? AND name = ?", (run_id, name))
        return None if row is None else _rung_from_row(row)

    def rung_result(self, run_id: str, name: str, *, config_hash: str | None = None) -> RungRecord | None:
        """The rung if it finished (and, when given, with this config hash): a result to reuse on resume."""
        record = self.get_rung(run_id, name)
        if record is None or record.status != "finished":
            return None
        if config_hash is not None and record.config_hash != config_hash:
            return None
        return record

    def list_rungs(self, run_id: str) -> list[RungRecord]:
        """In the order they were first started."""
        rows = self._all("SELECT * FROM rungs WHERE run_id = ? ORDER BY rowid", (run_id,))
        return [_rung_from_row(row) for row in rows]

    # ---------------------------------------------------------------- call cache

    def get_call(self, key: str) -> dict[str, Any] | None:
        """The stored response of the call with this key, or None."""
        row = self._one("SELECT response_json FROM calls WHERE key = ?", (key,))
        return None if row is None else json.loads(row["response_json"])

    def put_call(
        self, key: str, backend: str, kind: str, request: Mapping[str, Any], response: Mapping[str, Any]
    ) -> None:
        self._execute(
            "INSERT OR REPLACE INTO calls (key, backend, kind, request_json, response_json, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (key, backend, kind, _dumps(dict(request)), _dumps(dict(response)), _now()),
        )

    def count_calls(self, backend: str | None = None) -> int:
        if backend is None:
            row = self._one("SELECT COUNT(*) FROM calls")
        else:
            row = self._one("SELECT COUNT(*) FROM calls WHERE backend = ?", (backend,))
        assert row is not None
        return int(row[0])

    # ---------------------------------------------------------------- blobs

    def put_blob(self, key: str, data: bytes, *, kind: str, meta: Mapping[str, Any] | None = None) -> None:
        self._execute(
            "INSERT OR REPLACE INTO blobs (key, kind, data, meta_json, created_at) VALUES (?, ?, ?, ?, ?)",
            (key, kind, sqlite3.Binary(data), _dumps(dict(meta or {})), _now()),
        )

    def get_blob(self, key: str) -> Blob | None:
        row = self._one("SELECT * FROM blobs WHERE key = ?", (key,))
        if row is None:
            return None
        return Blob(row["key"], row["kind"], bytes(row["data"]), _loads(row["meta_json"]) or {}, row["created_at"])

    def put_array(self, key: str, array: Any, *, meta: Mapping[str, Any] | None = None) -> None:
        """Store a numpy array (e.g. an embedding matrix) as ``np.save`` bytes."""
        import numpy as np  # lazy: the store itself needs no numpy

        buffer = io.BytesIO()
        np.save(buffer, np.asarray(array), allow_pickle=False)
        self.put_blob(key, buffer.getvalue(), kind="ndarray", meta=meta)

    def get_array(self, key: str) -> Any | None:
        blob = self.get_blob(key)
        return None if blob is None else blob.array()

    # ---------------------------------------------------------------- artifacts

    def add_artifact(
        self,
        run_id: str,
        *,
        kind: str,
        path: Path | str,
        rung: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> int:
        cursor = self._execute(
            "INSERT INTO artifacts (run_id, rung, kind, path, meta_json, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (run_id, rung, kind, str(path), _dumps(dict(meta or {})), _now()),
        )
        return int(cursor.lastrowid or 0)

    def list_artifacts(self, run_id: str, *, rung: str | None = None) -> list[ArtifactRecord]:
        sql, params = "SELECT * FROM artifacts WHERE run_id = ?", [run_id]
        if rung is not None:
            sql, params = sql + " AND rung = ?", [run_id, rung]
        rows = self._all(sql + " ORDER BY id", params)
        return [
            ArtifactRecord(r["id"], r["run_id"], r["rung"], r["kind"], r["path"], _loads(r["meta_json"]) or {},
                           r["created_at"])
            for r in rows
        ]


    # ---------------------------------------------------------------- versions and aliases

    def put_version(self, version_id: str, manifest: Mapping[str, Any]) -> VersionRecord:
        """Record a version; one that exists already is kept as it was (ids are content hashes)."""
        self._execute("INSERT OR IGNORE INTO versions (id, created_at, manifest_json) VALUES (?, ?, ?)",
                      (version_id, _now(), _dumps(dict(manifest))))
        record = self.get_version(version_id)
        assert record is not None
        return record

    def get_version(self, version_id: str) -> VersionRecord | None:
        row = self._one("SELECT * FROM versions WHERE id = ?", (version_id,))
        return None if row is None else VersionRecord(row["id"], row["created_at"], _loads(row["manifest_json"]))

    def version_ids(self, prefix: str = "") -> list[str]:
        """Ids starting with ``prefix``, newest first."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self._all("SELECT id FROM versions WHERE id LIKE ? ESCAPE '\\' ORDER BY created_at DESC, id",
                         (escaped + "%",))
        return [row["id"] for row in rows]

    def set_alias(self, alias: str, version_id: str, *, action: str) -> None:
        """Point ``alias`` at a version and append the move (``promote`` | ``rollback``) to its history."""
        now = _now()
        with self._lock, _transaction(self._conn):
            self._conn.execute(
                "INSERT INTO aliases (alias, version, updated_at) VALUES (?, ?, ?) ON CONFLICT(alias) DO UPDATE"
                " SET version = excluded.version, updated_at = excluded.updated_at", (alias, version_id, now))
            self._conn.execute("INSERT INTO alias_history (alias, version, action, ts) VALUES (?, ?, ?, ?)",
                               (alias, version_id, action, now))

    def aliases(self) -> dict[str, str]:
        """alias -> version id."""
        return {row["alias"]: row["version"] for row in self._all("SELECT alias, version FROM aliases ORDER BY alias")}

    def alias_history(self, alias: str) -> list[tuple[str, str, str]]:
        """``(version id, action, timestamp)`` for every move of ``alias``, oldest first."""
        rows = self._all("SELECT version, action, ts FROM alias_history WHERE alias = ? ORDER BY id", (alias,))
        return [(row["version"], row["action"], row["ts"]) for row in rows]


# --------------------------------------------------------------------------- environment

_VERSIONED = ("tunewise", "torch", "transformers", "peft", "trl", "numpy")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment_info() -> dict[str, Any]:
    """What made a run: interpreter, platform, CPUs and package versions (never imports torch)."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "versions": {name: _version(name) for name in _VERSIONED},
        "cuda_available": None,  # unknown unless torch is already loaded
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            info["cuda_available"] = bool(torch.cuda.is_available())
        except Exception:  # a broken CUDA setup must not stop a run from being recorded
            info["cuda_available"] = False
    return info
