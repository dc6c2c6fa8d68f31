"""The request log: every served answer in ``<store>/serve/requests.sqlite``, secrets redacted.

``tunewise monitor`` reads this file, so its schema is a contract: change it only by adding. Columns added
after the first release are listed in :data:`ADDED_COLUMNS`; opening an older log appends them (``ALTER TABLE
... ADD COLUMN``, existing rows keep their values and read NULL in the new columns), so old and new logs have
the same columns in the same order.

One row per answer (``arm`` is ``a`` or ``b`` as the split routed it, ``direct`` when the client named the
version itself, or ``shadow``; a shadow answer gets its own id and the primary's timestamp). ``feedback`` holds
every label and score clients send for a response id later, one row each, never updated: ``client`` is the
:func:`~tunewise.serving.app.key_id` of the key that sent it (NULL without client keys), ``ts`` when.
``redactions`` counts the credentials masked in a row (see ``redact.py``; NULL in rows written before the
count existed), so a masked input is never mistaken for what the user sent.
WAL mode, one connection shared under a lock (writes are short; readers never block them).

Out of scope: judging drift from it (``tunewise monitor``), the counters of ``GET /metrics`` (``telemetry.py``).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from .redact import redact_count

__all__ = ["LoggedRequest", "RequestLog", "SCHEMA", "ADDED_COLUMNS", "REQUEST_LOG", "request_log_path",
           "upgrade_schema"]

#: where the request log lives, relative to the store directory
REQUEST_LOG = Path("serve") / "requests.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests(id TEXT PRIMARY KEY, ts REAL NOT NULL, alias TEXT, version TEXT NOT NULL,
    arm TEXT NOT NULL /* 'a' | 'b' | 'direct' | 'shadow' */, user TEXT, input TEXT NOT NULL, output TEXT, confidence REAL,
    latency_s REAL, prompt_tokens INTEGER, completion_tokens INTEGER, status INTEGER NOT NULL, error TEXT,
    redactions INTEGER);
CREATE TABLE IF NOT EXISTS feedback(response_id TEXT NOT NULL, ts REAL NOT NULL, label TEXT, score REAL,
    redactions INTEGER, client TEXT);
CREATE INDEX IF NOT EXISTS requests_ts ON requests(ts);
CREATE INDEX IF NOT EXISTS feedback_response ON feedback(response_id);
"""

#: (table, column, declaration) added after the first release, in the order they end the tables in SCHEMA
ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("requests", "redactions", "INTEGER"),
    ("feedback", "redactions", "INTEGER"),
    ("feedback", "client", "TEXT"),
)


def upgrade_schema(conn: sqlite3.Connection) -> None:
    """Create the tables, and append to an older log's tables the columns it lacks (never drops or rewrites)."""
    conn.executescript(SCHEMA)
    for table, column, declaration in ADDED_COLUMNS:
        if column not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")


def request_log_path(store_dir: Path | str) -> Path:
    return Path(store_dir) / REQUEST_LOG


@dataclass(frozen=True)
class LoggedRequest:
    """One row of ``requests``; ``output`` is the answer text (JSON text for structured outputs)."""

    id: str
    ts: float
    alias: str | None
    version: str
    arm: str
    user: str | None
    input: str
    output: str | None
    confidence: float | None
    latency_s: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    status: int
    error: str | None = None
    redactions: int | None = None  # credentials masked in input, output, user and error (set by RequestLog.write)


_COLUMNS = [f.name for f in fields(LoggedRequest)]


class RequestLog:
    """Append-only writer (and a small reader) for the request log."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        with self._lock:
            upgrade_schema(self._conn)

    def write(self, row: LoggedRequest) -> None:
        """Insert ``row`` with credentials in its input, output, user and error masked, and their count."""
        clean, masked = [], 0
        for name, value in zip(_COLUMNS, astuple(row)):
            if name in ("input", "output", "user", "error"):
                value, n = redact_count(value)
                masked += n
            clean.append(masked if name == "redactions" else value)
        with self._lock:
            self._conn.execute(f"INSERT INTO requests ({', '.join(_COLUMNS)}) VALUES "
                               f"({', '.join('?' * len(_COLUMNS))})", clean)

    def add_feedback(self, response_id: str, *, label: str | None, score: float | None,
                     client: str | None = None) -> bool:
        """Append feedback from ``client`` (a key id, None when anonymous); False (nothing written) when no
        response has this id. Earlier feedback on the same response is kept."""
        with self._lock:
            if self._conn.execute("SELECT 1 FROM requests WHERE id = ?", (response_id,)).fetchone() is None:
                return False
            label, masked = redact_count(label)
            self._conn.execute("INSERT INTO feedback (response_id, ts, label, score, redactions, client) "
                               "VALUES (?, ?, ?, ?, ?, ?)", (response_id, time.time(), label, score, masked, client))
        return True

    def rows(self) -> list[LoggedRequest]:
        """Every request, oldest first."""
        with self._lock:
            found = self._conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM requests ORDER BY ts, rowid").fetchall()
        return [LoggedRequest(*r) for r in found]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
