"""Reading the serving request log into :class:`Traffic`: a time window of answered requests with feedback.

``tunewise serve`` writes ``<store>/serve/requests.sqlite``: the tables ``requests`` (one row per
answer) and ``feedback``, defined once, by their writer, in :data:`tunewise.serving.requestlog.SCHEMA`.

Only answered requests (status 200) count. Rows of arm ``shadow`` were answered by a candidate
but not returned to the user: they are kept apart, for comparing arms on the same inputs. A
request's feedback is its latest label and its latest score (``feedback.response_id`` joins
``requests.id``). The log is opened read-only, so a running server is never blocked.

Out of scope: the checks (``drift.py``) and what the reference is (``monitor.py``).
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import TunewiseError
from ..serving.requestlog import REQUEST_LOG

__all__ = ["MonitorError", "Request", "Traffic", "REQUEST_LOG", "parse_duration", "read_traffic"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_COLUMNS = "id, ts, version, arm, user, input, output, confidence, latency_s"  # of serving.requestlog.LoggedRequest


class MonitorError(TunewiseError):
    """The request log is missing or unreadable, or a monitoring option is malformed."""


@dataclass(frozen=True)
class Request:
    """One answered request and the feedback given on it (``label``/``score`` None when none)."""

    id: str
    ts: float
    version: str
    arm: str
    user: str | None
    input: str
    output: str | None
    confidence: float | None
    latency_s: float | None
    label: str | None = None
    score: float | None = None


@dataclass(frozen=True)
class Traffic:
    """The window: served requests (``a``/``b`` arms, oldest first) and the shadow answers in the same span."""

    requests: tuple[Request, ...]
    shadow: tuple[Request, ...]
    since: float | None  # window start (unix seconds) asked for, None for all
    path: Path

    @property
    def labelled(self) -> tuple[Request, ...]:
        return tuple(r for r in self.requests if r.label is not None)

    @property
    def first_ts(self) -> float | None:
        return self.requests[0].ts if self.requests else None


def parse_duration(text: str) -> float:
    """``"7d"``, ``"24h"``, ``"30m"``, ``"90s"``, ``"2w"`` (or a bare number of seconds) -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text.lower())
    if not match:
        raise MonitorError(f"--since '{text}' is not a duration; write it like 7d, 24h, 30m or 90s.")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def _connect(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise MonitorError(f"No request log at {path}; serve the task with `tunewise serve` first, or give --store.")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        conn.execute("SELECT 1 FROM requests LIMIT 1")
    except sqlite3.Error as exc:
        raise MonitorError(f"{path}: cannot read the request log ({exc}).") from None
    return conn


def _feedback(conn: sqlite3.Connection) -> dict[str, tuple[str | None, float | None]]:
    """Latest label and latest score per response id (either may come from an older row)."""
    out: dict[str, tuple[str | None, float | None]] = {}
    try:
        rows = conn.execute("SELECT response_id, label, score FROM feedback ORDER BY ts, rowid").fetchall()
    except sqlite3.OperationalError:  # a log written before any feedback table existed
        return out
    for rid, label, score in rows:
        old_label, old_score = out.get(rid, (None, None))
        out[rid] = (label if label is not None else old_label, score if score is not None else old_score)
    return out


def _request(row: sqlite3.Row, feedback: dict[str, tuple[str | None, float | None]]) -> Request:
    label, score = feedback.get(row["id"], (None, None))
    return Request(id=row["id"], ts=float(row["ts"]), version=str(row["version"]), arm=str(row["arm"]),
                   user=row["user"], input=str(row["input"]), output=row["output"], confidence=row["confidence"],
                   latency_s=row["latency_s"], label=label, score=score)


def read_traffic(path: Path, *, since_s: float | None = None, last: int | None = None,
                 now: float | None = None) -> Traffic:
    """Answered requests of the last ``since_s`` seconds and/or the last ``last`` of them (both: the tighter)."""
    if last is not None and last < 1:
        raise MonitorError(f"--last must be a positive number of requests, got {last}.")
    since = None if since_s is None else (time.time() if now is None else now) - since_s
    conn = _connect(path)
    try:
        feedback = _feedback(conn)
        where, params = "status = 200" + (" AND ts >= ?" if since is not None else ""), [] if since is None else [since]
        served = conn.execute(f"SELECT {_COLUMNS} FROM requests WHERE {where} AND arm != 'shadow' "
                              "ORDER BY ts DESC, rowid DESC" + (" LIMIT ?" if last else ""),
                              params + ([last] if last else [])).fetchall()
        start = min((float(r["ts"]) for r in served), default=since)
        shadow = conn.execute(f"SELECT {_COLUMNS} FROM requests WHERE status = 200 AND arm = 'shadow'"
                              + (" AND ts >= ?" if start is not None else "") + " ORDER BY ts, rowid",
                              [] if start is None else [start]).fetchall()
    except sqlite3.Error as exc:
        raise MonitorError(f"{path}: cannot read the request log ({exc}).") from None
    finally:
        conn.close()
    return Traffic(requests=tuple(_request(r, feedback) for r in reversed(served)),
                   shadow=tuple(_request(r, feedback) for r in shadow), since=since, path=path)
