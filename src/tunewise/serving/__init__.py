"""``tunewise serve``: deployed versions behind an OpenAI-compatible HTTP API.

- ``app.py``: the FastAPI factory :func:`create_app` and its endpoints (chat completions, models,
  feedback, metrics, admin), in OpenAI's request, response and error shapes;
- ``service.py``: what a request does, without HTTP: route, answer, log, observe;
- ``router.py``: alias routing, the A/B split sticky per user, shadow mode;
- ``deployments.py``: loaded versions, one worker thread each (model calls are serialised);
- ``requestlog.py`` (SQLite, read by ``tunewise monitor``), ``redact.py``, ``metrics.py`` (Prometheus text).

Out of scope: making versions (``versions.py``) and judging drift (``tunewise monitor``).
"""

from __future__ import annotations

from .app import create_app
from .router import Split

__all__ = ["create_app", "Split"]
