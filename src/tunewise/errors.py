"""Exceptions users can cause, each rendered as one clear sentence.

Every error a user can trigger (a bad file, a missing field, an unknown label, a wrong model name,
an unreachable endpoint) is a :class:`TunewiseError`. Its ``str()`` is the one sentence the CLI
prints; it names the file, line or field involved. Programming errors stay ordinary exceptions.
"""

from __future__ import annotations

__all__ = [
    "TunewiseError",
    "TaskSpecError",
    "DataError",
    "BackendError",
    "ModelNotFoundError",
    "StoreError",
    "ExportError",
    "RungSkipped",
]


class TunewiseError(Exception):
    """Base class: an error the user can fix; the message is one sentence."""


class TaskSpecError(TunewiseError):
    """The task file is missing, unreadable, or does not validate."""


class DataError(TunewiseError):
    """A data file is missing, unreadable, malformed, or inconsistent with the task."""


class BackendError(TunewiseError):
    """A model backend cannot be built or a call to it failed in a way the user can fix."""


class ModelNotFoundError(BackendError):
    """A model identifier does not name anything that can be loaded."""


class StoreError(TunewiseError):
    """The run store is unreadable or a run/rung named by the user does not exist."""


class ExportError(TunewiseError):
    """A version cannot be exported in the format asked for (the sentence says why and what to use instead)."""


class RungSkipped(TunewiseError):
    """A rung cannot run here (e.g. QLoRA without CUDA); recorded as skipped with this reason, never silently."""
