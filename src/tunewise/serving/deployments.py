"""Loaded versions: each behind one worker thread that batches whatever requests are waiting.

Model calls are not thread-safe, so a :class:`Deployment` owns its candidate and backend and
only its worker thread calls ``predict``. The worker takes every request queued at that moment
(up to ``max_batch``) and answers them in one call, so a busy server batches without adding delay
to a quiet one. :class:`Deployments` loads each version once (never training, see
:func:`tunewise.versions.load_candidate`) and keeps it loaded; a request that started on a version
finishes on it even if an alias moves meanwhile.

Out of scope: which version a request goes to (``router.py``).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from ..data import Example
from ..store import Store
from ..versions import Version, load_candidate, resolve

__all__ = ["Deployment", "Deployments"]

Loader = Callable[[Version, Store], tuple[Any, Any]]


class Deployment:
    """One version's candidate answering on its own thread."""

    def __init__(self, version: Version, candidate: Any, backend: Any, *, max_batch: int | None = None) -> None:
        self.version, self.candidate, self.backend = version, candidate, backend
        default = getattr(backend, "max_batch_size", 8) if candidate.uses_llm else 64
        self.max_batch = max(1, max_batch or default)
        self._queue: queue.SimpleQueue[tuple[str, Future] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=f"tunewise-serve-{version.id}", daemon=True)
        self._thread.start()

    def submit(self, text: str) -> Future:
        """A future of the :class:`~tunewise.evaluation.records.Prediction` for ``text``."""
        future: Future = Future()
        self._queue.put((text, future))
        return future

    def _take(self) -> list[tuple[str, Future]] | None:
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # finish this batch, then stop
                break
            batch.append(item)
        return batch

    def _work(self) -> None:
        while (taken := self._take()) is not None:
            # a request whose client went away was cancelled: skip it; the rest can no longer be cancelled
            batch = [(text, future) for text, future in taken if future.set_running_or_notify_cancel()]
            examples = [Example(id=f"request-{i}", text=text, target=None) for i, (text, _) in enumerate(batch)]
            try:
                predictions = self.candidate.predict(examples, backend=self.backend) if batch else []
                if len(predictions) != len(batch):
                    raise RuntimeError(f"version {self.version.id} answered {len(predictions)} of {len(batch)}")
            except BaseException as exc:  # every waiting request gets the error; the worker lives on
                for _, future in batch:
                    future.set_exception(exc)
                continue
            for (_, future), prediction in zip(batch, predictions):
                future.set_result(prediction)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)
        if hasattr(self.candidate, "close"):
            self.candidate.close()


class Deployments:
    """Version id -> :class:`Deployment`, each loaded once, on first use or when preloaded."""

    def __init__(self, store: Store, *, loader: Loader | None = None, max_batch: int | None = None) -> None:
        self.store, self.max_batch = store, max_batch
        self._loader = loader or (lambda version, st: load_candidate(version, st, serving=True))
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self._loaded: dict[str, Deployment] = {}

    def peek(self, version_id: str) -> Deployment | None:
        return self._loaded.get(version_id)

    def get(self, version_id: str) -> Deployment:
        """The loaded version, loading it now if needed (others keep answering meanwhile)."""
        found = self._loaded.get(version_id)
        if found is not None:
            return found
        with self._lock:
            lock = self._loading.setdefault(version_id, threading.Lock())
        with lock:  # one load per version; a second caller waits for it
            found = self._loaded.get(version_id)
            if found is None:
                version = resolve(self.store, version_id)
                candidate, backend = self._loader(version, self.store)
                found = Deployment(version, candidate, backend, max_batch=self.max_batch)
                self._loaded[version_id] = found
        return found

    def close(self) -> None:
        for deployment in list(self._loaded.values()):
            deployment.close()
        self._loaded.clear()
