"""The request log: every served answer in ``<store>/serve/requests.sqlite``, secrets redacted.

``tunewise monitor`` reads this file, so its schema is a contract: change it only by adding.
One row per answer (``arm`` is ``a``, ``b`` or ``shadow``; a shadow answer gets its own id and the
primary's timestamp); ``feedback`` holds labels and scores clients send for a response id later.
WAL mode, one connection shared under a lock (writes are short; readers never block them).

Out of scope: judging drift from it (``tunewise monitor``), the counters of ``GET /metrics`` (``telemetry.py``).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import astuple, dataclass, fields
from pathlib import Path

from .redact import redact

__all__ = ["LoggedRequest", "RequestLog", "SCHEMA", "REQUEST_LOG", "request_log_path"]

#: where the request log lives, relative to the store directory
REQUEST_LOG = Path("serve") / "requests.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests(id TEXT PRIMARY KEY, ts REAL NOT NULL, alias TEXT, version TEXT NOT NULL,
    arm TEXT NOT NULL /* 'a' | 'b' | 'shadow' */, user TEXT, input TEXT NOT NULL, output TEXT, confidence REAL,
    latency_s REAL, prompt_tokens INTEGER, completion_tokens INTEGER, status INTEGER NOT NULL, error TEXT);
CREATE TABLE IF NOT EXISTS feedback(response_id TEXT NOT NULL, ts REAL NOT NULL, label TEXT, score REAL);
CREATE INDEX IF NOT EXISTS requests_ts ON requests(ts);
CREATE INDEX IF NOT EXISTS feedback_response ON feedback(response_id);
"""


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
        self._conn.executescript(SCHEMA)

    def write(self, row: LoggedRequest) -> None:
        """Insert ``row`` with its input, output, user and error redacted."""
        clean = [redact(v) if name in ("input", "output", "user", "error") else v
                 for name, v in zip(_COLUMNS, astuple(row))]
        with self._lock:
            self._conn.execute(f"INSERT INTO requests ({', '.join(_COLUMNS)}) VALUES "
                               f"({', '.join('?' * len(_COLUMNS))})", clean)

    def add_feedback(self, response_id: str, *, label: str | None, score: float | None) -> bool:
        """Record feedback; False (nothing written) when no response has this id."""
        with self._lock:
            if self._conn.execute("SELECT 1 FROM requests WHERE id = ?", (response_id,)).fetchone() is None:
                return False
            self._conn.execute("INSERT INTO feedback (response_id, ts, label, score) VALUES (?, ?, ?, ?)",
                               (response_id, time.time(), redact(label), score))
        return True

    def rows(self) -> list[LoggedRequest]:
        """Every request, oldest first."""
        with self._lock:
            found = self._conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM requests ORDER BY ts, rowid").fetchall()
        return [LoggedRequest(*r) for r in found]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
