"""Reading the serving request log into :class:`Traffic`: a time window of answered requests with feedback.

``tunewise serve`` writes ``<store>/serve/requests.sqlite``: the tables ``requests`` (one row per
answer) and ``feedback``, defined once, by their writer, in :data:`tunewise.serving.requestlog.SCHEMA`.

Only answered requests (status 200) count. Rows of arm ``shadow`` were answered by a candidate
but not returned to the user: they are kept apart, for comparing arms on the same inputs.

Feedback (``feedback.response_id`` joins ``requests.id``): every row is kept on the request, oldest first,
with the client that sent it (a key id, None when anonymous) and when. The request's ``label`` is the one
its clients agree on: each client's latest label counts (a client may correct itself), and when clients
disagree the request has no label and ``label_conflict`` is set, rather than the latest sender winning.
Its ``score`` is the mean of each client's latest score. The log is opened read-only, so a running server
is never blocked; logs written before a column existed read NULL for it.

Out of scope: the checks (``drift.py``) and what the reference is (``monitor.py``).
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from ..errors import TunewiseError
from ..serving.requestlog import REQUEST_LOG

__all__ = ["MonitorError", "Feedback", "Request", "Traffic", "REQUEST_LOG", "agreed_label", "parse_duration",
           "read_traffic"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_COLUMNS = "id, ts, version, arm, user, input, output, confidence, latency_s"  # of serving.requestlog.LoggedRequest
_ADDED = ("redactions",)  # read when the log has them (serving.requestlog.ADDED_COLUMNS)


class MonitorError(TunewiseError):
    """The request log is missing or unreadable, or a monitoring option is malformed."""


@dataclass(frozen=True)
class Feedback:
    """One feedback row: what a client said about a response, and when."""

    ts: float
    label: str | None
    score: float | None
    client: str | None  # the key id of the sender; None without client keys (anonymous)
    redactions: int | None = None  # credentials masked in the label (None: logged before the count existed)


def _latest_by_client(feedback: tuple[Feedback, ...], field: str) -> dict[str | None, Feedback]:
    latest: dict[str | None, Feedback] = {}
    for f in sorted(feedback, key=lambda f: f.ts):
        if getattr(f, field) is not None:
            latest[f.client] = f
    return latest


def agreed_label(feedback: tuple[Feedback, ...], clients: Collection[str | None] | None = None
                 ) -> tuple[Feedback | None, bool]:
    """The feedback row whose label the clients agree on (each client's latest label; only ``clients`` when
    given) and whether they disagree: ``(None, True)`` on a conflict, ``(None, False)`` with no label."""
    latest = _latest_by_client(tuple(f for f in feedback if clients is None or f.client in clients), "label")
    if not latest:
        return None, False
    if len({f.label for f in latest.values()}) > 1:
        return None, True
    return max(latest.values(), key=lambda f: f.ts), False


@dataclass(frozen=True)
class Request:
    """One answered request and the feedback given on it (``label``/``score`` None when none; see the module
    docstring for how several clients' feedback combines)."""

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
    feedback: tuple[Feedback, ...] = ()
    label_conflict: bool = False
    redactions: int | None = None  # credentials masked in the logged input and output


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


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def _optional(have: set[str], names: tuple[str, ...]) -> str:
    """``, name`` for each column the log has, ``, NULL AS name`` for each it predates."""
    return "".join(f", {n}" if n in have else f", NULL AS {n}" for n in names)


def _feedback(conn: sqlite3.Connection) -> dict[str, tuple[Feedback, ...]]:
    """Every feedback row per response id, oldest first."""
    out: dict[str, list[Feedback]] = {}
    have = _columns(conn, "feedback")
    if not have:  # a log written before any feedback table existed
        return {}
    rows = conn.execute(f"SELECT response_id, ts, label, score{_optional(have, ('client', 'redactions'))} "
                        "FROM feedback ORDER BY ts, rowid").fetchall()
    for rid, ts, label, score, client, redactions in rows:
        out.setdefault(rid, []).append(Feedback(ts=float(ts), label=label, score=score, client=client,
                                                redactions=redactions))
    return {rid: tuple(rows) for rid, rows in out.items()}


def _request(row: sqlite3.Row, feedback: dict[str, tuple[Feedback, ...]]) -> Request:
    mine = feedback.get(row["id"], ())
    labelled, conflict = agreed_label(mine)
    scores = [f.score for f in _latest_by_client(mine, "score").values()]
    return Request(id=row["id"], ts=float(row["ts"]), version=str(row["version"]), arm=str(row["arm"]),
                   user=row["user"], input=str(row["input"]), output=row["output"], confidence=row["confidence"],
                   latency_s=row["latency_s"], label=None if labelled is None else labelled.label,
                   score=sum(scores) / len(scores) if scores else None, feedback=mine, label_conflict=conflict,
                   redactions=row["redactions"])


def read_traffic(path: Path, *, since_s: float | None = None, last: int | None = None,
                 now: float | None = None) -> Traffic:
    """Answered requests of the last ``since_s`` seconds and/or the last ``last`` of them (both: the tighter)."""
    if last is not None and last < 1:
        raise MonitorError(f"--last must be a positive number of requests, got {last}.")
    since = None if since_s is None else (time.time() if now is None else now) - since_s
    conn = _connect(path)
    try:
        feedback = _feedback(conn)
        columns = _COLUMNS + _optional(_columns(conn, "requests"), _ADDED)
        where, params = "status = 200" + (" AND ts >= ?" if since is not None else ""), [] if since is None else [since]
        served = conn.execute(f"SELECT {columns} FROM requests WHERE {where} AND arm != 'shadow' "
                              "ORDER BY ts DESC, rowid DESC" + (" LIMIT ?" if last else ""),
                              params + ([last] if last else [])).fetchall()
        start = min((float(r["ts"]) for r in served), default=since)
        shadow = conn.execute(f"SELECT {columns} FROM requests WHERE status = 200 AND arm = 'shadow'"
                              + (" AND ts >= ?" if start is not None else "") + " ORDER BY ts, rowid",
                              [] if start is None else [start]).fetchall()
    except sqlite3.Error as exc:
        raise MonitorError(f"{path}: cannot read the request log ({exc}).") from None
    finally:
        conn.close()
    return Traffic(requests=tuple(_request(r, feedback) for r in reversed(served)),
                   shadow=tuple(_request(r, feedback) for r in shadow), since=since, path=path)
