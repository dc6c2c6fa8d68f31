"""What every rung of one run shares: the spec, the frozen splits, the run store, prices and progress, and
(built on first use) the task's model behind the call cache and the cached embeddings.

Out of scope: which rung runs next (``walk.py``, ``policy.py``) and scoring one rung (``attempt.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from ..embeddings import EmbeddingCache
from ..errors import TunewiseError
from ..evaluation.scoring import PRIMARY_METRIC, per_example_correct, score_predictions

if TYPE_CHECKING:
    from ..backends.base import Backend
    from ..backends.cached import CachedBackend
    from ..costs import Prices
    from ..data import Example, Splits
    from ..evaluation.records import Prediction
    from ..store import Store
    from ..task import TaskSpec

__all__ = ["Progress", "RunContext"]

# progress(label, done, total): the CLI draws bars; the library never prints
Progress = Callable[[str, int, int], None]


@dataclass
class RunContext:
    """One run's shared state. ``backend``: a caller's backend to use instead of loading the task's model."""

    spec: "TaskSpec"
    splits: "Splits"
    store: "Store"
    run_id: str
    prices: "Prices"
    progress: Progress | None = None
    backend: "Backend | None" = None
    embed: EmbeddingCache = field(init=False)
    _model: "CachedBackend | None" = field(default=None, init=False, repr=False)
    _model_error: TunewiseError | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.embed = EmbeddingCache(self.store, self.spec.embedder, self.progress)

    @property
    def model(self) -> "CachedBackend":
        """The task's model behind the call cache, built on first use (a baseline-only run never loads one);
        a failure to build it is remembered, so every LLM rung fails with the same sentence."""
        if self._model_error is not None:
            raise self._model_error
        if self._model is None:
            from ..backends import build_backend

            try:
                self._model = build_backend(self.spec, self.store, backend=self.backend, prices=self.prices)
            except TunewiseError as exc:
                self._model_error = exc
                raise
        return self._model

    @property
    def model_info(self) -> dict[str, Any]:
        """What the model backend says about itself (device, dtype...), when one was built."""
        return dict(self._model.info or {}) if self._model is not None else {}

    def close(self) -> None:
        """Close the model backend if this run built it (threads, connections); never a caller's."""
        if self._model is not None and self.backend is None:
            self._model.close()

    @property
    def test(self) -> "tuple[Example, ...]":
        return self.splits.test

    @property
    def metric(self) -> str:
        return PRIMARY_METRIC[self.spec.kind]

    @property
    def match(self) -> str:
        return self.spec.generation.match if self.spec.generation else "normalized"

    def report(self, label: str) -> Callable[[int, int], None] | None:
        """A ``(done, total)`` progress callback under ``label``, or None without progress."""
        if self.progress is None:
            return None
        progress = self.progress
        return lambda done, total: progress(label, done, total)

    @cached_property
    def schema(self) -> dict[str, Any] | None:
        """The extraction task's JSON Schema, read once per run (None for other kinds)."""
        from ..strategies.prompting import _schema

        return _schema(self.spec)

    def score(self, predictions: "Sequence[Prediction]") -> dict[str, Any]:
        """Metrics with intervals (and per-label scores, confusions, parse counts) on the test split."""
        return score_predictions(self.spec.kind, [e.target for e in self.test], predictions,
                                 labels=self.splits.labels or (), schema=self.schema, match=self.match,
                                 seed=self.spec.seed)

    def correct(self, predictions: "Sequence[Prediction]", examples: "Sequence[Example] | None" = None) -> np.ndarray:
        """Per-example correctness (the vector paired tests and early rejection use)."""
        examples = self.test if examples is None else examples
        return per_example_correct(self.spec.kind, [e.target for e in examples], [p.output for p in predictions],
                                   match=self.match)
