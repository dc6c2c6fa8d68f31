"""``tunewise serve``: deployed versions behind an OpenAI-compatible HTTP API.

- ``app.py``: the FastAPI factory :func:`create_app` and its endpoints (chat completions, models,
  feedback, metrics, admin), in OpenAI's request, response and error shapes;
- ``service.py``: what a request does, without HTTP: route, answer, log, observe;
- ``router.py``: alias routing, the A/B split sticky per user, shadow mode;
- ``deployments.py``: loaded versions, one worker thread each (model calls are serialised);
- ``requestlog.py`` (SQLite, read by ``tunewise monitor``), ``redact.py``, ``telemetry.py`` (the
  Prometheus counters of ``GET /metrics``).

``create_app`` and ``Split`` are imported on first use, so reading the request log (``tunewise
monitor``) does not load FastAPI.

Out of scope: making versions (``versions.py``) and judging drift (``tunewise monitor``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app
    from .router import Split

__all__ = ["create_app", "Split"]

_LAZY = {"create_app": ".app", "Split": ".router"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value
