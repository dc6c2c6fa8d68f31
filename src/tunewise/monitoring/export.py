"""Closing the loop: the feedback-labelled requests as task data, and a task file that re-runs the decision on them.

``export_labelled`` writes ``<store>/monitor/labelled-<stamp>.jsonl`` (the task's own input and
output field names, plus a ``tunewise_request`` object saying where each row came from) and
``<store>/monitor/task-<stamp>.yaml``: the original task with every path made absolute, the same
store (cached model calls and embeddings are reused), no ``test_limit``, and ``data.test`` set to
the labelled file. ``tunewise run`` on it re-makes the decision.

Why the fresh rows become the *test* split and not training data: the decision compares candidates
on a frozen held-out split that stands for the traffic they will serve. Once traffic drifts, the
old split no longer stands for it; scoring every rung (prepared from the same training data as
before) on what users send now re-makes the decision on today's distribution, and shows whether a
prompt still suffices or tuning now pays. Adding the rows to train instead would keep scoring on the
stale split and could not show the winner changing. Once the re-run says what to do, the labelled
rows can join train for the next model.

Rows whose label the task has never seen (a new intent) cannot be scored fairly by candidates that
never saw the label, and the data checks reject them in a test split; they go to
``new-labels-<stamp>.jsonl`` and the note says to add examples of them to train.

Feedback labels come from clients, so what becomes a test split is chosen with care and said: a label
counts only when the clients that labelled a request agree (each client's latest label; with ``clients``,
only labels sent with those key ids); a request whose clients disagree is left out, and so is a label
whose text had a credential masked (it is no longer what the client sent). Each exported row's
``tunewise_request`` lists the labels it rests on with their client and time, and how many credentials
were masked in its input. The note counts everything left out.

Out of scope: deciding whether to export (the CLI does only with ``--export-labels``, when a check fires)
and the checks.
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from ..data.hub import HubData
from ..task import TaskSpec
from .traffic import Request, Traffic, agreed_label

__all__ = ["Export", "export_labelled", "derived_task", "labelled_requests"]


@dataclass(frozen=True)
class Export:
    """What was written: the labelled rows, rows with unknown labels, the derived task and the command to run."""

    labelled: Path | None
    rows: int
    task: Path | None
    command: str | None
    new_labels_file: Path | None
    new_labels: tuple[str, ...]
    note: str

    def to_json(self) -> dict[str, Any]:
        return {"labelled": None if self.labelled is None else str(self.labelled), "rows": self.rows,
                "task": None if self.task is None else str(self.task), "command": self.command,
                "new_labels_file": None if self.new_labels_file is None else str(self.new_labels_file),
                "new_labels": list(self.new_labels), "note": self.note}


def _inputs(request: Request, fields: Sequence[str]) -> dict[str, Any] | None:
    """The task's input fields: the logged text for one field; a JSON object holding every field for several."""
    if len(fields) == 1:
        return {fields[0]: request.input}
    try:
        value = json.loads(request.input)
    except ValueError:
        return None
    return {f: value[f] for f in fields} if isinstance(value, dict) and all(f in value for f in fields) else None


def _target(label: str, kind: str) -> Any:
    if kind == "extraction":
        try:
            return json.loads(label)
        except ValueError:
            return label
    return label


@dataclass(frozen=True)
class _Labelled:
    """The requests whose label may be exported, and what was left out and why."""

    usable: tuple[tuple[Request, str], ...]  # (request, the agreed label)
    conflicts: int
    masked_labels: int


def _usable(traffic: Traffic, clients: Collection[str] | None) -> _Labelled:
    usable, conflicts, masked = [], 0, 0
    for request in traffic.requests:
        chosen, conflict = agreed_label(request.feedback, clients)
        if conflict:
            conflicts += 1
        elif chosen is not None and chosen.redactions:
            masked += 1
        elif chosen is not None:
            usable.append((request, str(chosen.label)))
    return _Labelled(tuple(usable), conflicts, masked)


def labelled_requests(traffic: Traffic, clients: Collection[str] | None = None) -> int:
    """How many requests carry a label that :func:`export_labelled` would use."""
    return len(_usable(traffic, clients).usable)


def _record(request: Request, label: str, spec: TaskSpec, clients: Collection[str] | None) -> dict[str, Any] | None:
    inputs = _inputs(request, spec.data.input_fields)
    if inputs is None:
        return None
    labels = [{"label": f.label, "client": f.client, "ts": f.ts} for f in request.feedback
              if f.label is not None and (clients is None or f.client in clients)]
    origin = {"id": request.id, "ts": request.ts, "version": request.version, "arm": request.arm,
              "served": request.output, "labels": labels, "input_redactions": request.redactions}
    return {**inputs, spec.data.output: _target(label, spec.kind), "tunewise_request": origin}


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)
    return path


def _where(spec: TaskSpec, source: Path | HubData) -> str:
    return str(source.absolute(spec.base_dir) if isinstance(source, HubData) else spec.resolve(source))


def derived_task(spec: TaskSpec, *, test: Path, name: str) -> dict[str, Any]:
    """The task as a mapping with absolute paths, the same store, ``data.test`` = ``test`` and no ``test_limit``."""
    raw = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    data = dict(raw["data"])
    for key in ("train", "dev", "labels"):
        value = getattr(spec.data, key)
        if isinstance(value, Path):
            data[key] = str(spec.resolve(value).resolve())
        elif isinstance(value, HubData):
            data[key] = str(value.absolute(spec.base_dir))
    data["test"] = str(test.resolve())
    data.pop("test_limit", None)
    raw.update(name=name, data=data, store=str(spec.store_dir.resolve()))
    if spec.extraction is not None and isinstance(spec.extraction.json_schema, Path):
        raw["extraction"] = {"schema": str(spec.resolve(spec.extraction.json_schema).resolve())}
    return raw


def _width_note(rows: int) -> str:
    if rows >= 100:
        return ""
    half = 100 * 1.96 * math.sqrt(0.25 / max(rows, 1))
    return f" With {rows} rows the new test split's 95% intervals are up to about ±{half:.0f} points wide."


def export_labelled(spec: TaskSpec, traffic: Traffic, *, labels: Sequence[str] | None = None,
                    clients: Collection[str] | None = None, out_dir: Path | None = None,
                    stamp: str | None = None) -> Export:
    """Write the feedback-labelled served requests and the derived task (see the module docstring).

    ``labels``: the labels candidates know (classification); rows with other labels go apart.
    ``clients``: use only labels sent with these key ids (None: every client's, anonymous ones included).
    """
    out_dir = out_dir or spec.store_dir / "monitor"
    stamp = stamp or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    found = _usable(traffic, clients)
    records = [rec for rec in (_record(r, label, spec, clients) for r, label in found.usable) if rec is not None]
    skipped = len(found.usable) - len(records)
    known = set(labels) if labels is not None and spec.kind == "classification" else None
    keep = [r for r in records if known is None or r[spec.data.output] in known]
    new = [r for r in records if known is not None and r[spec.data.output] not in known]
    new_labels = tuple(sorted({str(r[spec.data.output]) for r in new}))
    new_file = _write_jsonl(out_dir / f"new-labels-{stamp}.jsonl", new) if new else None
    notes = [f"{skipped} labelled requests were left out: their logged input does not hold the task's input fields "
             f"({', '.join(spec.data.input_fields)})."] if skipped else []
    if clients is not None:
        notes.append(f"Used only labels from {', '.join(sorted(clients))} (--label-client).")
    if found.conflicts:
        notes.append(_count(found.conflicts, "request has conflicting labels from different clients and was left "
                            "out.", "requests have conflicting labels from different clients and were left out."))
    if found.masked_labels:
        notes.append(_count(found.masked_labels, "label had a credential masked (it is not what the client sent) and "
                            "was left out.", "labels had a credential masked (they are not what the clients sent) "
                            "and were left out."))
    if new:
        notes.append(f"{len(new)} labelled requests carry labels the task has never seen ({', '.join(new_labels[:5])}"
                     f"{', ...' if len(new_labels) > 5 else ''}): a new intent; add examples of them to train "
                     f"({_where(spec, spec.data.train)}) and to the label list, then run the task again.")
    if not keep:
        notes.insert(0, "No feedback-labelled request to re-run the decision on; label a random sample of recent "
                        "requests (POST /v1/feedback) and monitor again.")
        return Export(None, 0, None, None, new_file, new_labels, " ".join(notes))
    masked_inputs = sum(bool(r["tunewise_request"]["input_redactions"]) for r in keep)
    if masked_inputs:
        notes.append(_count(masked_inputs, "exported input had a credential masked ([REDACTED]); it is exported as "
                            "logged.", "exported inputs had credentials masked ([REDACTED]); they are exported as "
                            "logged."))
    labelled = _write_jsonl(out_dir / f"labelled-{stamp}.jsonl", keep)
    task = out_dir / f"task-{stamp}.yaml"
    header = (f"# Written by `tunewise monitor` at {stamp}: task {spec.name} with its test split replaced by\n"
              f"# {len(keep)} feedback-labelled requests ({labelled.name}). `tunewise run` on this file re-makes\n"
              "# the decision on today's traffic (same training data, same store: cached calls are reused).\n")
    task.write_text(header + yaml.safe_dump(derived_task(spec, test=labelled, name=f"{spec.name}-monitor-{stamp}"),
                                            sort_keys=False, allow_unicode=True), encoding="utf-8")
    notes.insert(0, f"{len(keep)} feedback-labelled requests are the test split of {task.name}.{_width_note(len(keep))}")
    return Export(labelled, len(keep), task, f"tunewise run {shlex.quote(str(task))}", new_file, new_labels,
                  " ".join(notes))
