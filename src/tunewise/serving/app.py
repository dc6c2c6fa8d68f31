"""The HTTP app: ``create_app(store_dir, ...)`` -> a FastAPI application (run it with uvicorn).

Endpoints (the first three are what the official ``openai`` client calls):

- ``POST /v1/chat/completions``: ``model`` is an alias (``production``) or a version id; the last
  user message is the task input; the reply is a ``chat.completion`` (or, with ``stream: true``,
  its chunks as server-sent events, sent once the answer is ready);
- ``GET /v1/models`` and ``GET /v1/models/{id}``: aliases and versions;
- ``POST /v1/feedback`` ``{response_id, label?, score?}``: 404 for an unknown response id;
- ``POST /admin/promote {version, alias}``, ``/admin/rollback {alias}``,
  ``/admin/split {alias_a, alias_b, fraction_b, shadow}``: ``Authorization: Bearer <token>``
  required (401 otherwise; with no token configured they are disabled);
- ``GET /metrics`` (Prometheus text) and ``GET /health``.

Every error is OpenAI's ``{"error": {"message", "type", "param", "code"}}`` with its HTTP status.
Out of scope: what a request does (``service.py``); starting uvicorn (the ``serve`` command).
"""

from __future__ import annotations

import hmac
import os
from contextlib import asynccontextmanager
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

__all__ = ["create_app", "admin_token", "ADMIN_TOKEN_ENV"]

ADMIN_TOKEN_ENV = "TUNEWISE_ADMIN_TOKEN"


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


def _error(status: int, message: str, **kw: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_body(message, **kw), status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return _error(exc.status, exc.message, type=exc.type, code=exc.code, param=exc.param)

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


def _add_v1_routes(app: FastAPI, service: Service) -> None:
    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request) -> Any:
        text = user_text(body.messages)
        if text is None:
            raise ServiceError(400, "The messages contain no user message with text.", param="messages")
        answer = await service.answer(body.model, text, body.user or request.headers.get("x-user"))
        headers = {"X-Tunewise-Version": answer.version, "X-Tunewise-Arm": answer.arm}
        if body.stream:
            usage = bool((body.stream_options or {}).get("include_usage"))
            return StreamingResponse(sse_chunks(answer, include_usage=usage), media_type="text/event-stream",
                                     headers=headers)
        return JSONResponse(completion(answer), headers=headers)

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": _models(service)}

    @app.get("/v1/models/{model_id}")
    async def get_model(model_id: str) -> dict[str, Any]:
        for entry in _models(service):
            if entry["id"] == model_id:
                return entry
        raise ServiceError(404, f"The model '{model_id}' does not exist.", code="model_not_found", param="model")

    @app.post("/v1/feedback")
    async def feedback(body: FeedbackRequest) -> dict[str, Any]:
        service.feedback(body.response_id, label=body.label, score=body.score)
        return {"object": "feedback", "response_id": body.response_id, "recorded": True}


def _models(service: Service) -> list[dict[str, Any]]:
    """Aliases first (owned by the version they name), then every version."""
    from datetime import datetime

    from ..versions import list_versions

    versions = list_versions(service.store)
    created = {v.id: int(datetime.fromisoformat(v.created_at).timestamp()) for v in versions}
    out = [model_entry(alias, created=created.get(vid, 0), owned_by=f"tunewise:{vid}")
           for alias, vid in sorted(service.router.refresh().items())]
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
               log_path: Path | str | None = None) -> FastAPI:
    """The server for the versions in ``store_dir``; see the module docstring for the endpoints.

    ``admin_token``: the bearer token the admin endpoints require (None disables them);
    ``split``: the A/B split (or shadow) to start with; ``loader``: how a version becomes
    ``(candidate, backend)`` (default :func:`tunewise.versions.load_candidate`, never training);
    ``max_batch``: most requests one model call answers; ``log_path``: the request log
    (default ``<store_dir>/serve/requests.sqlite``). Aliases named by the split are loaded at startup.
    """
    service = Service(store_dir, split=split, loader=loader, max_batch=max_batch, log_path=log_path)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        await service.warm([split.alias_a, split.alias_b] if split else ["production"])
        yield
        await service.close()

    app = FastAPI(title="tunewise serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service
    _install_error_handlers(app)
    _add_v1_routes(app, service)
    _add_admin_routes(app, service, admin_token)

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(service.telemetry.render(service.router.aliases), media_type=CONTENT_TYPE)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "aliases": service.router.aliases}

    return app
