"""OpenAI's chat-completions wire format: the input we read, the bodies and stream chunks we write.

Enough of the format for the official ``openai`` client to work unchanged: ``chat.completion``
objects with ``usage``, ``chat.completion.chunk`` server-sent events ending in ``[DONE]``, the
``list`` of models, and errors as ``{"error": {"message", "type", "param", "code"}}``.
Extra fields are accepted and ignored (temperature and the like: a deployed candidate decodes as
it was measured). The ``tunewise`` key of a completion says which version and arm answered.

Out of scope: routing and answering (``service.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ChatMessage", "ChatRequest", "FeedbackRequest", "user_text", "error_body", "completion", "sse_chunks",
           "model_entry"]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    user: str | None = None
    stream_options: dict[str, Any] | None = None


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    response_id: str
    label: str | None = None
    score: float | None = None


def user_text(messages: list[ChatMessage]) -> str | None:
    """The last user message's text (text parts of a multi-part message joined by newlines)."""
    for message in reversed(messages):
        if message.role != "user":
            continue
        if isinstance(message.content, str):
            return message.content
        parts = [p.get("text", "") for p in message.content or [] if p.get("type") == "text"]
        return "\n".join(parts) if parts else None
    return None


def error_body(message: str, *, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion(answer: Any) -> dict[str, Any]:
    """A ``chat.completion`` for a :class:`~tunewise.serving.service.Answer`."""
    return {
        "id": answer.id, "object": "chat.completion", "created": answer.created, "model": answer.version,
        "system_fingerprint": f"tunewise-{answer.version}",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": _usage(answer.prompt_tokens, answer.completion_tokens),
        "tunewise": {"version": answer.version, "alias": answer.alias, "arm": answer.arm,
                     "confidence": answer.confidence},
    }


def sse_chunks(answer: Any, *, include_usage: bool = False) -> Iterator[str]:
    """The answer as ``chat.completion.chunk`` events: role, content, finish, [usage], ``[DONE]``."""
    base = {"id": answer.id, "object": "chat.completion.chunk", "created": answer.created, "model": answer.version,
            "system_fingerprint": f"tunewise-{answer.version}"}
    deltas = [({"role": "assistant", "content": ""}, None), ({"content": answer.text}, None), ({}, "stop")]
    for delta, finish in deltas:
        chunk = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if include_usage:
            chunk["usage"] = None
        yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
    if include_usage:
        chunk = {**base, "choices": [], "usage": _usage(answer.prompt_tokens, answer.completion_tokens)}
        yield f"data: {json.dumps(chunk)}\n\n"
    yield "data: [DONE]\n\n"


def model_entry(model_id: str, *, created: int, owned_by: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owned_by}
