"""What the server does, without HTTP: route a request, answer it on a version, log and count it.

:class:`Service` owns the run store, the router, the loaded deployments, the request log and the
telemetry. ``answer`` resolves the version once (so an alias moving mid-request changes nothing for
it), waits for the version's worker, writes the log row and returns an :class:`Answer`; a shadow
answer, when the split asks for one, runs after the primary's and is only logged. Admin changes
load the target version *before* moving an alias, so the switch itself is a dictionary swap and
no request waits for a model to load or fails.

Failures become :class:`ServiceError` (an HTTP status and one sentence); the app renders them in
OpenAI's error shape. Out of scope: the wire format (``openai_format.py``) and HTTP (``app.py``).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool

from ..errors import StoreError, TunewiseError
from ..store import Store
from ..versions import Version, promote, resolve, rollback, rollback_target
from .deployments import Deployments, Loader
from .requestlog import LoggedRequest, RequestLog, request_log_path
from .router import Router, Split, UnknownModel
from .telemetry import Telemetry

__all__ = ["Answer", "Service", "ServiceError"]


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
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param


def _output_text(prediction: Any) -> str:
    """The answer as text: a label or free text as is, structured output as JSON text."""
    if prediction.output is None:
        return prediction.raw or ""
    if isinstance(prediction.output, str):
        return prediction.output
    return json.dumps(prediction.output, ensure_ascii=False, sort_keys=True)


class Service:
    def __init__(self, store_dir: Path | str, *, split: Split | None = None, loader: Loader | None = None,
                 max_batch: int | None = None, log_path: Path | str | None = None) -> None:
        self.store = Store(store_dir)
        self.router = Router(self.store, split=split)
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
        try:
            deployment = self.deployments.peek(version) or await run_in_threadpool(self.deployments.get, version)
            prediction = await asyncio.wrap_future(deployment.submit(text))
        except Exception as exc:
            loading = isinstance(exc, TunewiseError)
            status, message = (503, f"Version {version} cannot be loaded: {exc}") if loading else (
                500, f"Version {version} failed to answer ({exc.__class__.__name__}).")
            await self._record(LoggedRequest(rid, ts, alias, version, arm, user, text, None, None,
                                             time.perf_counter() - start, None, None, status, str(exc) or message))
            raise ServiceError(status, message, type="server_error",
                               code="model_unavailable" if loading else None) from None
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

    def feedback(self, response_id: str, *, label: str | None, score: float | None) -> None:
        if label is None and score is None:
            raise ServiceError(400, "Feedback needs a label or a score.", param="label")
        if not self.log.add_feedback(response_id, label=label, score=score):
            raise ServiceError(404, f"No response has the id '{response_id}'.", code="response_not_found",
                               param="response_id")
        self.telemetry.feedback()

    # ---------------------------------------------------------------- admin

    def _resolve(self, name: str) -> Version:
        try:
            return resolve(self.store, name)
        except StoreError as exc:
            raise ServiceError(404, str(exc), code="model_not_found", param="version") from None

    async def _preload(self, version: Version) -> None:
        try:
            await run_in_threadpool(self.deployments.get, version.id)
        except TunewiseError as exc:
            raise ServiceError(503, f"Version {version.id} cannot be loaded: {exc}", type="server_error",
                               code="model_unavailable") from None

    async def promote(self, version: str, alias: str) -> Version:
        """Load ``version``, then point ``alias`` at it (in the store, so it survives a restart)."""
        target = self._resolve(version)
        await self._preload(target)
        try:
            promoted = promote(self.store, target.id, alias)
        except StoreError as exc:
            raise ServiceError(400, str(exc), param="alias") from None
        self.router.refresh()
        return promoted

    async def rollback(self, alias: str) -> Version:
        """Load the alias's previous version, then point the alias back at it."""
        try:
            target = rollback_target(self.store, alias)
        except StoreError as exc:
            raise ServiceError(409 if alias in self.store.aliases() else 404, str(exc), param="alias") from None
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
                except TunewiseError:
                    pass

    async def close(self) -> None:
        for task in list(self._shadows):
            task.cancel()
        await run_in_threadpool(self.deployments.close)
        self.log.close()
        self.store.close()
