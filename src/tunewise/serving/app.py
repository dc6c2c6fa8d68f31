"""The HTTP app: ``create_app(store_dir, ...)`` -> a FastAPI application (run it with uvicorn).

Endpoints (the first three are what the official ``openai`` client calls):

- ``POST /v1/chat/completions``: ``model`` is an alias (``production``) or a version id; the last
  user message is the task input; the reply is a ``chat.completion`` (or, with ``stream: true``,
  its chunks as server-sent events, sent once the answer is ready);
- ``GET /v1/models`` and ``GET /v1/models/{id}``: aliases and versions;
- ``POST /v1/feedback`` ``{response_id, label?, score?}``: 404 for an unknown response id; each label is
  kept (never overwritten) with the id of the client key that sent it;
- ``POST /admin/promote {version, alias}``, ``/admin/rollback {alias}``,
  ``/admin/split {alias_a, alias_b, fraction_b, shadow}``: ``Authorization: Bearer <token>``
  required (401 otherwise; with no token configured they are disabled);
- ``GET /metrics`` (Prometheus text) and ``GET /health``.

Client keys (``api_keys``, like ``vllm serve --api-key``): when any is configured, every ``/v1``
endpoint, feedback included, needs ``Authorization: Bearer <key>`` (401 otherwise); a key is known in
the log only by :func:`key_id`, never by itself. Without keys ``/v1`` is open and feedback is anonymous.

:class:`Limits` caps the body size (413), the number of messages and the input's length (400) before
anything reaches a model. Every error is OpenAI's ``{"error": {"message", "type", "param", "code"}}`` with
its HTTP status; a failure on the server's side says only that it happened and its request id (also in
the ``X-Request-Id`` header), while the detail goes to the ``tunewise.serve`` logger and the request log.
Out of scope: what a request does (``service.py``); starting uvicorn (the ``serve`` command).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from ..errors import TaskSpecError
from .deployments import Loader
from .openai_format import ChatRequest, FeedbackRequest, completion, error_body, model_entry, sse_chunks, user_text
from .router import Split
from .service import Service, ServiceError
from .telemetry import CONTENT_TYPE

__all__ = ["create_app", "admin_token", "load_api_keys", "key_id", "Limits", "ADMIN_TOKEN_ENV", "API_KEY_ENV"]

ADMIN_TOKEN_ENV = "TUNEWISE_ADMIN_TOKEN"
API_KEY_ENV = "TUNEWISE_API_KEY"


@dataclass(frozen=True)
class Limits:
    """What one request may carry: body bytes (413 above), messages and input characters (400 above).

    The input limit bounds what one request costs a version's worker, so one huge input cannot stall
    every client queued behind it; the body limit bounds what the server reads at all.
    """

    max_body_bytes: int = 1_048_576
    max_messages: int = 100
    max_input_chars: int = 20_000

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_messages", "max_input_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")


def admin_token(file: Path | None = None) -> str | None:
    """The admin token: the first line of ``file`` when given, else ``$TUNEWISE_ADMIN_TOKEN``; None if neither."""
    if file is not None:
        try:
            token = file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise TaskSpecError(f"{file}: cannot read the admin token file ({exc.__class__.__name__}).") from None
        if not token:
            raise TaskSpecError(f"{file}: the admin token file is empty.")
        return token
    return os.environ.get(ADMIN_TOKEN_ENV) or None


def load_api_keys(keys: Sequence[str] = (), files: Sequence[Path] = ()) -> list[str]:
    """Client keys: ``keys`` and the keys in ``files`` (one a line, ``#`` comments); when neither is
    given, ``$TUNEWISE_API_KEY`` (comma-separated for several); [] when there are none (``/v1`` open)."""
    found = [k.strip() for k in keys]
    for file in files:
        try:
            lines = Path(file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise TaskSpecError(f"{file}: cannot read the API key file ({exc.__class__.__name__}).") from None
        in_file = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
        if not in_file:
            raise TaskSpecError(f"{file}: the API key file holds no API key (one a line).")
        found += in_file
    if not keys and not files:
        found = [k.strip() for k in os.environ.get(API_KEY_ENV, "").split(",") if k.strip()]
    for key in found:
        if not key or any(ch.isspace() for ch in key):
            raise TaskSpecError("API keys cannot contain spaces or be empty (a client sends one as "
                                "'Authorization: Bearer <key>').")
    return list(dict.fromkeys(found))


def key_id(key: str) -> str:
    """How the log names a client: ``key-`` and the first 12 hex digits of the key's SHA-256, never the key.

    An operator finds a key's id with ``printf %s "$KEY" | sha256sum | cut -c1-12``."""
    return "key-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


class BodyLimit:
    """ASGI middleware: refuse a request body over ``max_bytes`` with 413, reading no more of it than that.

    A declared ``Content-Length`` over the limit is refused at once; a body without one (chunked) is read
    up to the limit and refused when it goes past. A body within the limit is handed on unchanged.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def _refuse(self, send: Any) -> None:
        body = json.dumps(error_body(f"The request body is larger than this server accepts ({self.max_bytes:,} bytes).",
                                     code="request_too_large")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await self._refuse(send)
            if not message.get("more_body"):
                break
        pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay() -> Any:
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)


class PromoteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str
    alias: str


class RollbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    alias: str


class SplitBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    alias_a: str = "production"
    alias_b: str | None = None
    fraction_b: float = Field(default=0.0, ge=0.0, le=1.0)
    shadow: bool = False


def _error(status: int, message: str, *, request_id: str | None = None, **kw: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if request_id:
        headers["X-Request-Id"] = request_id
    return JSONResponse(error_body(message, **kw), status_code=status, headers=headers or None)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return _error(exc.status, exc.message, type=exc.type, code=exc.code, param=exc.param,
                      request_id=exc.request_id)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
        return _error(400, f"Invalid request: {param or 'body'}: {first.get('msg')}.", param=param)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return _error(exc.status_code, str(exc.detail), type=kind)


def _admin_guard(token: str | None):
    def require_admin(request: Request) -> None:
        if token is None:
            raise ServiceError(401, f"Admin endpoints are disabled: start the server with {ADMIN_TOKEN_ENV} set.",
                               type="authentication_error", code="admin_disabled")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise ServiceError(401, "A valid admin bearer token is required.", type="authentication_error",
                               code="invalid_admin_token")

    return require_admin


def _client_guard(keys: Sequence[str]):
    """A dependency that admits a request bearing one of ``keys`` (any request when there are none) and
    leaves its :func:`key_id` (None without keys) in ``request.state.client``."""
    known = [(k.encode("utf-8"), key_id(k)) for k in keys]

    def require_key(request: Request) -> None:
        request.state.client = None
        if not known:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        given_bytes = given.strip().encode("utf-8")
        matched = [kid for key, kid in known if hmac.compare_digest(given_bytes, key)]  # compare with every key
        if scheme.lower() != "bearer" or not matched:
            raise ServiceError(401, "A valid API key is required: send Authorization: Bearer <key>.",
                               type="authentication_error", code="invalid_api_key")
        request.state.client = matched[0]

    return require_key


def _add_v1_routes(app: FastAPI, service: Service, limits: Limits, keys: Sequence[str]) -> None:
    guard = [Depends(_client_guard(keys))]

    @app.post("/v1/chat/completions", dependencies=guard)
    async def chat_completions(body: ChatRequest, request: Request) -> Any:
        if len(body.messages) > limits.max_messages:
            raise ServiceError(400, f"The request has {len(body.messages):,} messages; this server accepts at most "
                                    f"{limits.max_messages:,}.", param="messages", code="too_many_messages")
        text = user_text(body.messages)
        if text is None:
            raise ServiceError(400, "The messages contain no user message with text.", param="messages")
        if len(text) > limits.max_input_chars:
            raise ServiceError(400, f"The input is {len(text):,} characters long; this server accepts at most "
                                    f"{limits.max_input_chars:,}.", param="messages", code="input_too_long")
        answer = await service.answer(body.model, text, body.user or request.headers.get("x-user"))
        headers = {"X-Tunewise-Version": answer.version, "X-Tunewise-Arm": answer.arm}
        if body.stream:
            usage = bool((body.stream_options or {}).get("include_usage"))
            return StreamingResponse(sse_chunks(answer, include_usage=usage), media_type="text/event-stream",
                                     headers=headers)
        return JSONResponse(completion(answer), headers=headers)

    @app.get("/v1/models", dependencies=guard)
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": _models(service)}

    @app.get("/v1/models/{model_id}", dependencies=guard)
    async def get_model(model_id: str) -> dict[str, Any]:
        for entry in _models(service):
            if entry["id"] == model_id:
                return entry
        raise ServiceError(404, f"The model '{model_id}' does not exist.", code="model_not_found", param="model")

    @app.post("/v1/feedback", dependencies=guard)
    async def feedback(body: FeedbackRequest, request: Request) -> dict[str, Any]:
        client = request.state.client
        service.feedback(body.response_id, label=body.label, score=body.score, client=client)
        return {"object": "feedback", "response_id": body.response_id, "recorded": True, "client": client}


def _models(service: Service) -> list[dict[str, Any]]:
    """The models a client may ask for: aliases first (owned by the version they name), then every version
    (none when the server does not let clients choose the version)."""
    from datetime import datetime

    from ..versions import list_versions

    versions = list_versions(service.store)
    created = {v.id: int(datetime.fromisoformat(v.created_at).timestamp()) for v in versions}
    out = [model_entry(alias, created=created.get(vid, 0), owned_by=f"tunewise:{vid}")
           for alias, vid in sorted(service.router.refresh().items()) if service.router.may_ask_for(alias)]
    if not service.router.allow_direct:
        return out
    return out + [model_entry(v.id, created=created[v.id], owned_by="tunewise") for v in versions]


def _add_admin_routes(app: FastAPI, service: Service, token: str | None) -> None:
    admin = [Depends(_admin_guard(token))]

    @app.post("/admin/promote", dependencies=admin)
    async def admin_promote(body: PromoteBody) -> dict[str, Any]:
        version = await service.promote(body.version, body.alias)
        return {"alias": body.alias, "version": version.id}

    @app.post("/admin/rollback", dependencies=admin)
    async def admin_rollback(body: RollbackBody) -> dict[str, Any]:
        version = await service.rollback(body.alias)
        return {"alias": body.alias, "version": version.id}

    @app.post("/admin/split", dependencies=admin)
    async def admin_split(body: SplitBody) -> dict[str, Any]:
        split = Split(**body.model_dump()) if body.alias_b else None
        await service.set_split(split)
        return {"split": body.model_dump() if split else None}


def create_app(store_dir: Path | str, *, admin_token: str | None = None, split: Split | None = None,
               loader: Loader | None = None, max_batch: int | None = None,
               log_path: Path | str | None = None, api_keys: Sequence[str] = (), limits: Limits | None = None,
               allow_direct: bool = True) -> FastAPI:
    """The server for the versions in ``store_dir``; see the module docstring for the endpoints.

    ``admin_token``: the bearer token the admin endpoints require (None disables them);
    ``split``: the A/B split (or shadow) to start with; ``loader``: how a version becomes
    ``(candidate, backend)`` (default :func:`tunewise.versions.load_candidate`, never training);
    ``max_batch``: most requests one model call answers; ``log_path``: the request log
    (default ``<store_dir>/serve/requests.sqlite``); ``api_keys``: client keys ``/v1`` requires (none:
    open); ``limits``: request size limits (default :class:`Limits`); ``allow_direct``: whether a client
    may choose the version itself, by a version id or, during a split, by naming the split's B alias
    (such requests bypass the split and are logged as arm ``direct``; False answers them 403).
    Aliases named by the split are loaded at startup.
    """
    limits = limits or Limits()
    service = Service(store_dir, split=split, loader=loader, max_batch=max_batch, log_path=log_path,
                      allow_direct=allow_direct)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        await service.warm([split.alias_a, split.alias_b] if split else ["production"])
        yield
        await service.close()

    app = FastAPI(title="tunewise serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    _install_error_handlers(app)
    _add_v1_routes(app, service, limits, api_keys)
    _add_admin_routes(app, service, admin_token)

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(service.telemetry.render(service.router.aliases), media_type=CONTENT_TYPE)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "aliases": service.router.aliases}

    return app
