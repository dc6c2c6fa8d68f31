"""Any OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama, llama.cpp server, LM Studio), over httpx.

``load_backend("openai:<model>", base_url=..., ...)`` POSTs each request to
``{base_url}/chat/completions``, at most ``max_concurrency`` at a time (a thread pool sharing one
``httpx.Client``), and answers in request order. ``base_url`` defaults to ``$OPENAI_BASE_URL``,
else ``https://api.openai.com/v1``.

Retries: HTTP 408, 429 and 5xx, timeouts, connection errors and unreadable replies are tried again,
up to ``max_retries`` times, after the server's ``retry-after-ms`` / ``Retry-After`` when it gives
one (up to 60 s), else after an exponential backoff with jitter (``backoff_s * 2**attempt``, capped
at ``max_backoff_s``, the wait drawn from its upper half). Other 4xx replies (a bad key, an unknown
model) fail at once with one sentence naming the endpoint and model.

Accounting: tokens from the reply's ``usage`` (``prompt_tokens_details.cached_tokens`` when
present; estimated, and counted in ``info["usage_estimated"]``, when a server sends none); latency
is the wall time of the attempt that answered. ``calls``, ``retries`` and ``spent_usd`` are
attributes and are mirrored in ``info``. The money cap (``budget_usd``) is ``budget.py``.

Secrets: the API key comes from the environment variable ``api_key_env`` (default
``OPENAI_API_KEY``; without one no Authorization header is sent, as local servers need none) or from
``api_key_file``. It only ever goes into the Authorization header: never into ``info``,
``fingerprint()``, errors or logs. The endpoint is shown without user info or query string.

Constrained generation: a request with ``choices`` is sent with a strict JSON schema
(``{"label": <one of the choices>}``) as ``response_format`` and the label is returned. When an
endpoint rejects ``response_format`` (HTTP 400 naming it), the backend remembers that and sends such
requests as plain generation; the text comes back for the caller to map to a choice. A request with a
``json_schema`` (extraction) is sent with that schema as a non-strict ``json_schema`` response format
(strict mode only accepts a subset of JSON Schema), and the JSON text comes back as it is.

Reasoning models (OpenAI's o1, o3, o4 and gpt-5 families, by name) take ``max_completion_tokens`` instead of
``max_tokens`` and only their default temperature: such a request is sent with ``max_completion_tokens`` =
``max_new_tokens`` + ``reasoning_tokens`` (their hidden thinking counts against that limit; default
:data:`DEFAULT_REASONING_TOKENS`) and no temperature. Any other model whose endpoint answers HTTP 400 that
``max_tokens`` (or ``temperature``) is unsupported is retried once the same way, and the backend remembers it.
Reasoning tokens (``usage.completion_tokens_details.reasoning_tokens``) are billed as completion tokens: OpenAI
counts them inside ``completion_tokens``; a server that reports more of them than completion tokens has left them
out, and they are added. The money cap's worst case includes the thinking allowance.

Out of scope: scoring by log-probabilities (``can_score`` is False: chat endpoints return top-k
log-probabilities of generated tokens, which cannot score arbitrary labels), streaming, and the
official ``openai`` client (not needed).
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import httpx

from ..costs import Prices, default_prices, load_prices
from ..errors import BackendError, ModelNotFoundError
from .base import Backend, Generation, GenerationRequest
from .budget import MoneyCap, Purse

__all__ = ["OpenAIBackend", "DEFAULT_BASE_URL", "DEFAULT_KEY_ENV", "DEFAULT_REASONING_TOKENS", "is_reasoning_model"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
_MAX_RETRY_AFTER_S = 60.0
_FORMAT_WORDS = ("response_format", "json_schema")
#: completion tokens a reasoning model may spend thinking, on top of each request's max_new_tokens
DEFAULT_REASONING_TOKENS = 2048
#: OpenAI's reasoning families (o1, o3-mini, o4-mini-2025-04-16, gpt-5, gpt-5-nano ...), after any "provider/"
_REASONING_NAME = re.compile(r"(?:^|/)(?:o[1-9]|gpt-5)(?:$|[-.:])")
#: request parameters an endpoint may refuse that a request can do without: what is sent instead
_ADAPTABLE = ("max_tokens", "temperature")
log = logging.getLogger(__name__)


def is_reasoning_model(model: str) -> bool:
    """OpenAI's o-series and gpt-5 families, which take max_completion_tokens and only the default temperature."""
    return bool(_REASONING_NAME.search(model.lower()))


class _Retry(Exception):
    """An attempt that failed in a way another attempt may not (``billed``: it may still cost money)."""

    def __init__(self, reason: str, *, after: float | None = None, billed: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.after, self.billed = reason, after, billed


class _FormatRejected(Exception):
    """The endpoint does not take ``response_format``."""


class _Unsupported(Exception):
    """The endpoint refuses a parameter in :data:`_ADAPTABLE` (HTTP 400); ``refusal`` is the sentence if that
    cannot be helped."""

    def __init__(self, param: str, refusal: str) -> None:
        super().__init__(refusal)
        self.param, self.refusal = param, refusal


class _Secret:
    """Holds the API key; its repr never shows it."""

    def __init__(self, value: str | None) -> None:
        self._value = value

    def reveal(self) -> str | None:
        return self._value

    def __repr__(self) -> str:
        return "<secret>" if self._value else "<none>"


class OpenAIBackend(Backend):
    """``openai:<model>`` behind an OpenAI-compatible ``/chat/completions``; see the module docstring."""

    def __init__(
        self,
        name: str = "openai:gpt-4o-mini",
        *,
        base_url: str | None = None,
        api_key_env: str | None = None,
        api_key_file: str | Path | None = None,
        max_concurrency: int = 4,
        max_retries: int = 6,
        timeout_s: float = 120.0,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        budget_usd: float | None = None,
        prices: Prices | Mapping[str, Any] | str | Path | None = None,
        purse: Purse | None = None,
        reasoning_tokens: int = DEFAULT_REASONING_TOKENS,
    ) -> None:
        model = name.split(":", 1)[1] if ":" in name else ""
        if not model:
            raise ModelNotFoundError(f"The model {name!r} names no model; write openai:<model>, e.g. openai:gpt-4o-mini.")
        super().__init__(name)
        if max_concurrency < 1 or max_retries < 0 or timeout_s <= 0 or reasoning_tokens < 0:
            raise BackendError(f"The {name} backend needs max_concurrency >= 1, max_retries >= 0, timeout_s > 0 and "
                               "reasoning_tokens >= 0.")
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.endpoint = _public_url(self.base_url)
        self.max_concurrency, self.max_retries, self.timeout_s = max_concurrency, max_retries, timeout_s
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.max_batch_size = max_concurrency  # one batch in flight at once: a failure loses at most that
        key, self.key_source = _read_key(api_key_env, api_key_file)
        self._key = _Secret(key)
        self.cap = MoneyCap(what=f"{name} at {self.endpoint}", budget_usd=budget_usd,
                            price=_prices(prices).api_price(name), purse=purse)
        self.calls = self.retries = 0
        self.prompt_tokens = self.completion_tokens = self.cached_tokens = self.usage_estimated = 0
        self.plain_only = False  # the endpoint rejected response_format: constrained requests go as plain ones
        self.reasoning_tokens = reasoning_tokens
        self.reasoning_tokens_used = 0
        # learnt from the model's name, or from the endpoint refusing max_tokens / temperature (then kept)
        self.completion_limit = "max_tokens"
        self.send_temperature = True
        self._lock = threading.Lock()
        self._jitter = random.Random()
        if is_reasoning_model(model):
            self._adapt("max_tokens")
            self._adapt("temperature")
        self._client = httpx.Client(
            base_url=self.base_url, timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
            headers={"Authorization": f"Bearer {key}"} if key else {})
        self._pool: ThreadPoolExecutor | None = None
        self._update_info()

    @property
    def spent_usd(self) -> float:
        return self.cap.spent_usd

    def fingerprint(self) -> str:
        # a reasoning model's answers depend on how long it may think
        thinking = f"+thinking{self.reasoning_tokens}" if is_reasoning_model(self.model) else ""
        return f"openai:{self.model}@{self.endpoint}{thinking}"

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._client.close()

    # ---------------------------------------------------------------- the Backend interface

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        requests = list(requests)
        reserved = self.cap.admit(requests)  # refuses the whole batch before anything is sent
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="tunewise-openai")
        futures = [self._pool.submit(self._answer, r, w) for r, w in zip(requests, reserved)]
        try:
            return [f.result() for f in futures]
        except BaseException as exc:
            for future, w in zip(futures, reserved):
                if future.cancel():
                    self.cap.release(w)
            if not isinstance(exc, KeyboardInterrupt):
                wait(futures)  # calls in flight finish and are booked before the error goes up
            raise

    # ---------------------------------------------------------------- one request

    def _answer(self, request: GenerationRequest, reserved: float) -> Generation:
        answered = False
        try:
            constrained = bool(request.choices or request.json_schema is not None) and not self.plain_only
            body, latency, constrained = self._send(request, reserved, constrained=constrained)
            generation = self._generation(body, request, latency, constrained=constrained)
            self.cap.charge(reserved, prompt_tokens=generation.prompt_tokens, cached_tokens=generation.cached_tokens,
                            completion_tokens=generation.completion_tokens)
            answered = True
            return generation
        finally:
            if not answered:
                self.cap.release(reserved)
            self._update_info()

    def _send(self, request: GenerationRequest, reserved: float, *,
              constrained: bool) -> tuple[dict[str, Any], float, bool]:
        """The reply, its latency and whether it was constrained, after adapting once to each refused parameter."""
        for _ in range(len(_ADAPTABLE) + 2):  # one retry per adaptation, one for response_format
            payload = _payload(self.model, request, constrained=constrained, limit=self.completion_limit,
                               temperature=self.send_temperature,
                               extra_tokens=self.reasoning_tokens if self.completion_limit != "max_tokens" else 0)
            try:
                return (*self._post(payload, reserved), constrained)
            except _FormatRejected:
                log.warning("%s rejects response_format; constrained requests go as plain generation", self.endpoint)
                self.plain_only, constrained = True, False
            except _Unsupported as exc:
                if not self._adapt(exc.param):
                    raise BackendError(exc.refusal) from None
                log.warning("%s refuses %s for %s; sent as a reasoning model's request from now on", self.endpoint,
                            exc.param, self.model)
        raise BackendError(f"The endpoint {self.endpoint} refused every form of a request for model {self.model!r}.")

    def _adapt(self, param: str) -> bool:
        """Stop sending ``param`` the refused way; False when it was already adapted (nothing left to try)."""
        with self._lock:
            if param == "max_tokens" and self.completion_limit == "max_tokens":
                self.completion_limit = "max_completion_tokens"
                self.cap.extra_completion_tokens = self.reasoning_tokens
                return True
            if param == "temperature" and self.send_temperature:
                self.send_temperature = False
                return True
        return False

    def _post(self, payload: dict[str, Any], reserved: float) -> tuple[dict[str, Any], float]:
        """The reply's JSON and the latency of the attempt that answered, after retries."""
        last: _Retry | None = None
        for attempt in range(self.max_retries + 1):
            if last is not None:
                delay = self._delay(attempt - 1, last.after)
                log.info("%s at %s: %s; retry %d of %d in %.2f s", self.name, self.endpoint, last.reason, attempt,
                         self.max_retries, delay)
                with self._lock:
                    self.retries += 1
                time.sleep(delay)
                self.cap.check()
            started = time.perf_counter()
            try:
                return self._attempt(payload), time.perf_counter() - started
            except _Retry as exc:
                last = exc
                if exc.billed:
                    self.cap.book_unconfirmed(reserved)
        raise BackendError(f"The endpoint {self.endpoint} did not answer for model {self.model!r} after "
                           f"{self.max_retries + 1} attempts (last: {last.reason if last else '?'}).")

    def _attempt(self, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            response = self._client.post("/chat/completions", json=payload)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise _Retry(f"cannot connect: {type(exc).__name__}") from None
        except httpx.TimeoutException:
            raise _Retry(f"no reply within {self.timeout_s:g} s", billed=True) from None
        except httpx.TransportError as exc:
            raise _Retry(f"connection lost: {type(exc).__name__}", billed=True) from None
        status = response.status_code
        if status == 200:
            return _reply(response)
        if status in (408, 429) or status >= 500:
            raise _Retry(f"HTTP {status}", after=_retry_after(response.headers))
        if status == 400 and "response_format" in payload and any(w in response.text for w in _FORMAT_WORDS):
            raise _FormatRejected()
        refused = _refused_param(response) if status == 400 else None
        if refused in payload:
            raise _Unsupported(refused, self._refusal(status, response))
        raise BackendError(self._refusal(status, response))

    def _refusal(self, status: int, response: httpx.Response) -> str:
        where = f"The endpoint {self.endpoint}"
        if status == 401:
            return (f"{where} refused the API key (from {self.key_source}) for model {self.model!r} with HTTP 401; "
                    "check that the key is set and valid.")
        if status == 403:
            return f"{where} refused access to model {self.model!r} with HTTP 403; check the key's permissions."
        if status == 404:
            return (f"{where} answered HTTP 404 for model {self.model!r}; check the model name and that base_url "
                    "ends with the API root (e.g. /v1).")
        message = _error_message(response).replace(self._key.reveal() or "\x00", "<key>")
        return f"{where} rejected a request for model {self.model!r} with HTTP {status}: {message}."

    def _delay(self, attempt: int, after: float | None) -> float:
        if after is not None and 0 <= after <= _MAX_RETRY_AFTER_S:
            return after
        cap = min(self.max_backoff_s, self.backoff_s * 2**attempt)
        return cap / 2 + self._jitter.uniform(0, cap / 2)

    def _generation(self, body: dict[str, Any], request: GenerationRequest, latency: float, *,
                    constrained: bool) -> Generation:
        choice = body["choices"][0]
        text = choice["message"].get("content") or ""
        if constrained and request.choices:
            text = _label(text)
        usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
        prompt, completion = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
        cached = _count((usage.get("prompt_tokens_details") or {}).get("cached_tokens"))
        reasoning = _count((usage.get("completion_tokens_details") or {}).get("reasoning_tokens")) or 0
        if completion is not None and reasoning > completion:  # reported apart from completion tokens: add them
            completion += reasoning
        estimated = prompt is None or completion is None
        if prompt is None:
            prompt = sum(self.count_tokens(m.content) for m in request.prompt)
        if completion is None:
            completion = self.count_tokens(text) if text else 0
        with self._lock:
            self.calls += 1
            self.prompt_tokens += prompt
            self.completion_tokens += completion
            self.cached_tokens += cached or 0
            self.reasoning_tokens_used += reasoning
            self.usage_estimated += estimated
        return Generation(text=text, prompt_tokens=prompt, completion_tokens=completion, latency_s=latency,
                          cached_tokens=cached or 0,
                          finish_reason="length" if choice.get("finish_reason") == "length" else "stop")

    def _update_info(self) -> None:
        price = self.cap.price
        self.info.update({
            "kind": "openai", "model": self.model, "base_url": self.endpoint, "api_key_source": self.key_source,
            "max_concurrency": self.max_concurrency, "max_retries": self.max_retries, "timeout_s": self.timeout_s,
            "budget_usd": self.cap.budget_usd,
            "run_budget_usd": self.cap.purse.budget_usd if self.cap.purse is not None else None,
            "price": None if price is None else {"key": price[0], **price[1].model_dump()},
            "spent_usd": self.cap.spent_usd if price is not None else None,
            "unconfirmed_usd": self.cap.unconfirmed_usd if price is not None else None,
            "calls": self.calls, "retries": self.retries, "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens, "cached_tokens": self.cached_tokens,
            "usage_estimated": self.usage_estimated,
            "constrained_generation": "plain generation (the endpoint rejects response_format)" if self.plain_only
            else "json_schema response_format",
            "reasoning_tokens": self.reasoning_tokens_used,
        })
        adapted = ([f"max_completion_tokens = max_new_tokens + {self.reasoning_tokens} thinking tokens"]
                   if self.completion_limit != "max_tokens" else []) + \
            ([] if self.send_temperature else ["the model's default temperature"])
        if adapted:
            self.info["reasoning_model"] = ", ".join(adapted)


# -------------------------------------------------------------------- pure helpers


def _payload(model: str, request: GenerationRequest, *, constrained: bool, limit: str = "max_tokens",
             temperature: bool = True, extra_tokens: int = 0) -> dict[str, Any]:
    """The request body; ``limit``: the name of the token limit, ``extra_tokens`` added to it (a reasoning model's
    thinking), ``temperature`` False: the model's default."""
    payload: dict[str, Any] = {
        "model": model,
        "messages": [{"role": m.role, "content": m.content} for m in request.prompt],
        limit: request.max_new_tokens + extra_tokens,
        "seed": request.seed,
    }
    if temperature:
        payload["temperature"] = request.temperature
    if request.stop:
        payload["stop"] = list(request.stop)
    if constrained and request.json_schema is not None:
        payload["response_format"] = {"type": "json_schema",
                                      "json_schema": {"name": "answer", "strict": False, "schema": request.json_schema}}
    elif constrained:
        schema = {"type": "object", "properties": {"label": {"type": "string", "enum": list(dict.fromkeys(
            request.choices))}}, "required": ["label"], "additionalProperties": False}
        payload["response_format"] = {"type": "json_schema",
                                      "json_schema": {"name": "answer", "strict": True, "schema": schema}}
    return payload


def _reply(response: httpx.Response) -> dict[str, Any]:
    """A 200 reply's JSON with one choice holding a message, else a retry (it may have been billed)."""
    try:
        body = response.json()
        message = body["choices"][0]["message"]
        if not isinstance(message, dict) or not isinstance(message.get("content") or "", str):
            raise TypeError("message")
    except (ValueError, KeyError, IndexError, TypeError):
        raise _Retry("unreadable reply (not a chat completion)", billed=True) from None
    return body


def _label(text: str) -> str:
    """``{"label": "x"}`` -> ``x``; anything else is returned as it came."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value["label"] if isinstance(value, dict) and isinstance(value.get("label"), str) else text


def _count(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else None


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date); None when absent."""
    try:
        if headers.get("retry-after-ms"):
            return float(headers["retry-after-ms"]) / 1000
        value = headers.get("retry-after")
        if not value:
            return None
        try:
            return float(value)
        except ValueError:
            return email.utils.parsedate_to_datetime(value).timestamp() - time.time()
    except (ValueError, TypeError):
        return None


def _refused_param(response: httpx.Response) -> str | None:
    """The parameter of :data:`_ADAPTABLE` an HTTP 400 says is unsupported (OpenAI: ``error.param`` and
    "Unsupported parameter: 'max_tokens' ..."), else None."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return None
    if not isinstance(error, dict):
        return None
    message, named = str(error.get("message") or ""), error.get("param")
    if "support" not in message.lower() and not str(error.get("code") or "").startswith("unsupported"):
        return None
    for param in _ADAPTABLE:
        if named == param or f"'{param}'" in message or f"`{param}`" in message:
            return param
    return None


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error")
        message = error.get("message") if isinstance(error, dict) else error
    except (ValueError, AttributeError):
        message = None
    text = str(message or response.text or response.reason_phrase).strip().replace("\n", " ")
    return (text[:200] + "...") if len(text) > 200 else text.rstrip(".")


def _public_url(url: str) -> str:
    """The URL without user info, query or fragment (they may carry credentials)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise BackendError(f"The base_url {url.split('?')[0]!r} is not a valid URL.") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise BackendError(f"The base_url {parsed.copy_with(query=None, fragment=None, username=None, password=None)}"
                           " must be an http:// or https:// URL.")
    return str(parsed.copy_with(username=None, password=None, query=None, fragment=None))


def _read_key(env: str | None, file: str | Path | None) -> tuple[str | None, str]:
    """-> (API key or None, where it came from, in words without the key)."""
    if file is not None:
        path = Path(file).expanduser()
        try:
            key = path.read_text(encoding="utf-8").strip()
        except OSError:
            raise BackendError(f"The API key file {path} cannot be read.") from None
        if not key:
            raise BackendError(f"The API key file {path} is empty.")
        return key, f"file {path}"
    name = env or DEFAULT_KEY_ENV
    key = os.environ.get(name, "").strip()
    if not key and env is not None:
        raise BackendError(f"The environment variable {name} named by api_key_env is not set.")
    return (key or None), (f"environment variable {name}" if key else "nowhere (no API key is sent)")


def _prices(prices: Prices | Mapping[str, Any] | str | Path | None) -> Prices:
    if prices is None:
        return default_prices()
    if isinstance(prices, Prices):
        return prices
    if isinstance(prices, Mapping):
        return load_prices(overrides=prices)
    return load_prices(prices)
