"""What the server does, without HTTP: route a request, answer it on a version, log and count it.

:class:`Service` owns the run store, the router, the loaded deployments, the request log and the
telemetry. ``answer`` resolves the version once (so an alias moving mid-request changes nothing for
it), waits for the version's worker, writes the log row and returns an :class:`Answer`; a shadow
answer, when the split asks for one, runs after the primary's and is only logged. Admin changes
load the target version *before* moving an alias, so the switch itself is a dictionary swap and
no request waits for a model to load or fails.

Failures become :class:`ServiceError` (an HTTP status and one sentence); the app renders them in
OpenAI's error shape. A failure on the server's side (a version that cannot load, a model call that
raises) tells the client only that it happened and its request id: exception text can hold artifact
paths and other internals, so it goes to the ``tunewise.serve`` logger (with the traceback) and to the
request log's ``error`` column, under the same id. Messages to clients never name store paths.
Out of scope: the wire format (``openai_format.py``) and HTTP (``app.py``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool

from ..errors import StoreError
from ..store import Store
from ..versions import Version, promote, resolve, rollback, rollback_target
from .deployments import Deployments, Loader
from .requestlog import LoggedRequest, RequestLog, request_log_path
from .router import DirectRefused, Router, Split, UnknownModel
from .telemetry import Telemetry

__all__ = ["Answer", "Service", "ServiceError"]

logger = logging.getLogger("tunewise.serve")


@dataclass(frozen=True)
class Answer:
    id: str
    created: int
    version: str
    alias: str | None
    arm: str
    text: str
    confidence: float | None
    prompt_tokens: int
    completion_tokens: int
    latency_s: float


class ServiceError(Exception):
    """An HTTP status, one sentence, and OpenAI's error ``type`` / ``code`` / ``param``."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, request_id: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param
        self.request_id = request_id


def _server_failure(status: int, request_id: str, *, code: str) -> ServiceError:
    """What a client learns of a failure on the server's side: that it happened, and where to look."""
    what = "The model is unavailable right now" if status == 503 else "The model failed to answer"
    return ServiceError(status, f"{what} (request {request_id}); the server log has the details.",
                        type="server_error", code=code, request_id=request_id)


def _output_text(prediction: Any) -> str:
    """The answer as text: a label or free text as is, structured output as JSON text."""
    if prediction.output is None:
        return prediction.raw or ""
    if isinstance(prediction.output, str):
        return prediction.output
    return json.dumps(prediction.output, ensure_ascii=False, sort_keys=True)


class Service:
    def __init__(self, store_dir: Path | str, *, split: Split | None = None, loader: Loader | None = None,
                 max_batch: int | None = None, log_path: Path | str | None = None, allow_direct: bool = True) -> None:
        self.store = Store(store_dir)
        self.router = Router(self.store, split=split, allow_direct=allow_direct)
        self.deployments = Deployments(self.store, loader=loader, max_batch=max_batch)
        self.log = RequestLog(log_path or request_log_path(store_dir))
        self.telemetry = Telemetry()
        self._shadows: set[asyncio.Task] = set()

    # ---------------------------------------------------------------- answering

    async def answer(self, model: str, text: str, user: str | None) -> Answer:
        try:
            route = self.router.route(model, user)
        except UnknownModel as exc:
            self.telemetry.observe(version="-", arm="-", status=404)
            raise ServiceError(404, str(exc), code="model_not_found", param="model") from None
        except DirectRefused as exc:
            self.telemetry.observe(version="-", arm="-", status=403)
            raise ServiceError(403, str(exc), type="permission_error", code="direct_model_not_allowed",
                               param="model") from None
        ts = time.time()
        answer = await self._answer_on(route.version, route.alias, route.arm, text, user, ts)
        if route.shadow_version is not None:
            task = asyncio.create_task(self._shadow(route.shadow_version, route.shadow_alias, text, user, ts))
            self._shadows.add(task)
            task.add_done_callback(self._shadows.discard)
        return answer

    async def _shadow(self, version: str, alias: str | None, text: str, user: str | None, ts: float) -> None:
        try:
            await self._answer_on(version, alias, "shadow", text, user, ts)
        except ServiceError:
            pass  # logged and counted; the client already has the primary's answer

    async def _answer_on(self, version: str, alias: str | None, arm: str, text: str, user: str | None,
                         ts: float) -> Answer:
        rid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        start = time.perf_counter()
        loading = True
        try:
            deployment = self.deployments.peek(version) or await run_in_threadpool(self.deployments.get, version)
            loading = False
            prediction = await asyncio.wrap_future(deployment.submit(text))
        except Exception as exc:
            status = 503 if loading else 500
            detail = f"{exc.__class__.__name__}: {exc}"
            logger.error("request %s: version %s %s: %s", rid, version,
                         "cannot be loaded" if loading else "failed to answer", detail, exc_info=exc)
            await self._record(LoggedRequest(rid, ts, alias, version, arm, user, text, None, None,
                                             time.perf_counter() - start, None, None, status, detail))
            raise _server_failure(status, rid, code="model_unavailable" if loading else "model_error") from None
        answer = Answer(id=rid, created=int(ts), version=version, alias=alias, arm=arm,
                        text=_output_text(prediction), confidence=prediction.confidence,
                        prompt_tokens=int(prediction.prompt_tokens),
                        completion_tokens=int(prediction.completion_tokens),
                        latency_s=time.perf_counter() - start)
        await self._record(LoggedRequest(rid, ts, alias, version, arm, user, text, answer.text, answer.confidence,
                                         answer.latency_s, answer.prompt_tokens, answer.completion_tokens, 200,
                                         prediction.error))
        return answer

    async def _record(self, row: LoggedRequest) -> None:
        await run_in_threadpool(self.log.write, row)
        self.telemetry.observe(version=row.version, arm=row.arm, status=row.status, latency_s=row.latency_s,
                             prompt_tokens=row.prompt_tokens or 0, completion_tokens=row.completion_tokens or 0)

    def feedback(self, response_id: str, *, label: str | None, score: float | None,
                 client: str | None = None) -> None:
        """Record a label and/or score for an earlier answer, with the id of the client key that sent it."""
        if label is None and score is None:
            raise ServiceError(400, "Feedback needs a label or a score.", param="label")
        if not self.log.add_feedback(response_id, label=label, score=score, client=client):
            raise ServiceError(404, f"No response has the id '{response_id}'.", code="response_not_found",
                               param="response_id")
        self.telemetry.feedback()

    # ---------------------------------------------------------------- admin

    def _public(self, exc: Exception) -> str:
        """An error's sentence with the run store's location left out (clients never learn server paths)."""
        message = str(exc)
        places = {str(self.store.path), str(self.store.path.resolve()), str(self.store.directory),
                  str(self.store.directory.resolve())}
        for where in sorted(places, key=len, reverse=True):  # the database file before its directory
            message = message.replace(where, "this server's run store")
        return message

    def _resolve(self, name: str) -> Version:
        try:
            return resolve(self.store, name)
        except StoreError as exc:
            raise ServiceError(404, self._public(exc), code="model_not_found", param="version") from None

    async def _preload(self, version: Version) -> None:
        try:
            await run_in_threadpool(self.deployments.get, version.id)
        except Exception as exc:
            rid = f"req-{uuid.uuid4().hex[:24]}"
            logger.error("request %s: version %s cannot be loaded: %s: %s", rid, version.id,
                         exc.__class__.__name__, exc, exc_info=exc)
            raise _server_failure(503, rid, code="model_unavailable") from None

    async def promote(self, version: str, alias: str) -> Version:
        """Load ``version``, then point ``alias`` at it (in the store, so it survives a restart)."""
        target = self._resolve(version)
        await self._preload(target)
        try:
            promoted = promote(self.store, target.id, alias)
        except StoreError as exc:
            raise ServiceError(400, self._public(exc), param="alias") from None
        self.router.refresh()
        return promoted

    async def rollback(self, alias: str) -> Version:
        """Load the alias's previous version, then point the alias back at it."""
        try:
            target = rollback_target(self.store, alias)
        except StoreError as exc:
            raise ServiceError(409 if alias in self.store.aliases() else 404, self._public(exc),
                               param="alias") from None
        await self._preload(target)
        restored = rollback(self.store, alias)
        self.router.refresh()
        return restored

    async def set_split(self, split: Split | None) -> Split | None:
        """Route a fraction of ``alias_a``'s users to ``alias_b`` (or shadow it); None: no split."""
        if split is not None and split.alias_b is not None:
            aliases = self.router.refresh()
            for name in (split.alias_a, split.alias_b):
                if name not in aliases:
                    raise ServiceError(404, f"No alias '{name}' exists; promote a version to it first.",
                                       param="alias_a" if name == split.alias_a else "alias_b")
            await self._preload(self._resolve(aliases[split.alias_b]))
        self.router.split = split
        return split

    async def warm(self, aliases: list[str | None]) -> None:
        """Load the versions these aliases name now; one that cannot load answers 503 later, saying why."""
        current = self.router.refresh()
        for alias in aliases:
            if alias in current:
                try:
                    await run_in_threadpool(self.deployments.get, current[alias])
                except Exception as exc:  # noqa: BLE001 - logged; a request for it tries again and says 503
                    logger.warning("alias %s: version %s cannot be loaded yet: %s: %s", alias, current[alias],
                                   exc.__class__.__name__, exc)

    async def close(self) -> None:
        for task in list(self._shadows):
            task.cancel()
        await run_in_threadpool(self.deployments.close)
        self.log.close()
        self.store.close()
