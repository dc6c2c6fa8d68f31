"""The call cache: any backend, with every answer remembered in the run store.

``CachedBackend(inner, store)`` is itself a :class:`~tunewise.backends.base.Backend`. A request's
key is the sha256 of ``{"backend": inner.fingerprint(), "kind": ..., "request": ...}`` (sorted
JSON), so a different model, adapter or setting never shares answers. Hits are served from the
store exactly as first measured (latency included: cost and speed figures of a resumed run are
those of the original calls); the misses go to the inner backend in one call, in request order,
and each answer is stored as soon as the call returns. Duplicate requests in one batch are
computed once.

Out of scope: which calls are worth caching (all are) and store housekeeping (``store.py``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

from ..store import Store
from .base import Backend, ChoiceScores, Generation, GenerationRequest, ScoreRequest

__all__ = ["CachedBackend", "call_key"]


def call_key(fingerprint: str, kind: str, request: GenerationRequest | ScoreRequest) -> str:
    blob = json.dumps({"backend": fingerprint, "kind": kind, "request": request.to_json()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class CachedBackend(Backend):
    """``inner`` behind the ``calls`` table of ``store``; ``hits`` + ``misses`` = requests seen."""

    def __init__(self, inner: Backend, store: Store) -> None:
        super().__init__(inner.name)
        self.inner, self.store = inner, store
        self.can_score = inner.can_score
        self.max_batch_size = inner.max_batch_size
        self.info = inner.info  # shared, so what the inner backend learns later shows through
        self.hits = 0
        self.misses = 0

    def fingerprint(self) -> str:
        return self.inner.fingerprint()

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def close(self) -> None:
        self.inner.close()

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        return self._serve("generate", requests, self.inner.generate, Generation.from_json)

    def score(self, requests: Sequence[ScoreRequest]) -> list[ChoiceScores]:
        if not self.inner.can_score:
            return self.inner.score(requests)  # raises the inner backend's own error
        return self._serve("score", requests, self.inner.score, ChoiceScores.from_json)

    def _serve(
        self,
        kind: str,
        requests: Sequence[Any],
        call_inner: Callable[[list[Any]], list[Any]],
        from_json: Callable[[dict[str, Any]], Any],
    ) -> list[Any]:
        fingerprint = self.inner.fingerprint()
        keys = [call_key(fingerprint, kind, r) for r in requests]
        found: dict[str, Any] = {}
        missing: dict[str, Any] = {}  # key -> first request with it, in request order
        for key, request in zip(keys, requests):
            if key in found or key in missing:
                continue
            stored = self.store.get_call(key)
            if stored is not None:
                found[key] = from_json(stored)
            else:
                missing[key] = request
        if missing:
            found.update(self._compute(kind, missing, call_inner))
        self.misses += len(missing)
        self.hits += len(requests) - len(missing)
        return [found[key] for key in keys]

    def _compute(
        self, kind: str, missing: dict[str, Any], call_inner: Callable[[list[Any]], list[Any]]
    ) -> dict[str, Any]:
        items = list(missing.items())
        step = max(1, self.inner.max_batch_size)
        done: dict[str, Any] = {}
        for i in range(0, len(items), step):  # store after each inner call: a kill loses one call at most
            batch = items[i: i + step]
            results = call_inner([request for _, request in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{self.inner.name} answered {len(results)} of {len(batch)} {kind} requests")
            for (key, request), result in zip(batch, results):
                self.store.put_call(key, self.inner.name, kind, request.to_json(), result.to_json())
                done[key] = result
        return done
