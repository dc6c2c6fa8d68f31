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
from ..evaluation.scoring import per_example_correct, score_predictions

if TYPE_CHECKING:
    from ..backends.base import Backend
    from ..backends.budget import Purse
    from ..backends.cached import CachedBackend
    from ..costs import Prices
    from ..data import Example, Splits
    from ..evaluation.records import Prediction
    from ..store import Store
    from ..task import RungSpec, TaskSpec

__all__ = ["Progress", "RunContext"]

# progress(label, done, total): the CLI draws bars; the library never prints
Progress = Callable[[str, int, int], None]


@dataclass
class RunContext:
    """One run's shared state. ``backend``: a caller's backend to use instead of loading the task's (first) model."""

    spec: "TaskSpec"
    splits: "Splits"
    store: "Store"
    run_id: str
    prices: "Prices"
    progress: Progress | None = None
    backend: "Backend | None" = None
    embed: EmbeddingCache = field(init=False)
    _models: "dict[str, CachedBackend]" = field(default_factory=dict, init=False, repr=False)
    _model_errors: dict[str, TunewiseError] = field(default_factory=dict, init=False, repr=False)
    purse: "Purse | None" = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.embed = EmbeddingCache(self.store, self.spec.embedder, self.progress)
        budget = self.spec.constraints.budget_usd
        if self.spec.several_models and budget is not None:  # one money cap over every API model of the run
            from ..backends.budget import Purse

            self.purse = Purse(budget)

    def spec_for(self, rung: "RungSpec") -> "TaskSpec":
        """The task as the rung's model sees it (:meth:`~tunewise.task.TaskSpec.for_model`)."""
        return self.spec.for_model(rung.model)

    def model_id(self, rung: "RungSpec") -> str | None:
        """The id of the model a rung runs on, when the task weighs several (results name it); else None."""
        return self.spec.model_named(rung.model).id if rung.model is not None else None

    def model_for(self, key: str | None) -> "CachedBackend":
        """The model named ``key`` (None: the first) behind the call cache, built on first use (a baseline-only
        run never loads one); a failure to build it is remembered, so each of its rungs fails with one sentence."""
        model = self.spec.model_named(key)
        if model.key in self._model_errors:
            raise self._model_errors[model.key]
        if model.key not in self._models:
            from ..backends import build_backend

            first = model.key == self.spec.model_specs[0].key
            try:
                self._models[model.key] = build_backend(self.spec.for_model(model.key), self.store,
                                                        backend=self.backend if first else None, prices=self.prices,
                                                        purse=self.purse)
            except TunewiseError as exc:
                self._model_errors[model.key] = exc
                raise
        return self._models[model.key]

    @property
    def model(self) -> "CachedBackend":
        """The task's (first) model behind the call cache."""
        return self.model_for(None)

    @property
    def model_info(self) -> dict[str, Any]:
        """What the model backends say about themselves (device, dtype...), for those that were built: one
        model's info as it is, several keyed by model name."""
        infos = {key: dict(m.info or {}) for key, m in self._models.items()}
        if not self.spec.several_models:
            return next(iter(infos.values()), {})
        return infos

    def close(self) -> None:
        """Close the model backends this run built (threads, connections); never a caller's."""
        first = self.spec.model_specs[0].key
        for key, model in self._models.items():
            if key != first or self.backend is None:
                model.close()

    @property
    def test(self) -> "tuple[Example, ...]":
        return self.splits.test

    @property
    def metric(self) -> str:
        return self.spec.primary_metric

    @property
    def generation_metric(self) -> str | None:
        return self.spec.generation.metric if self.spec.generation else None

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
                                 seed=self.spec.seed, generation_metric=self.generation_metric, embed=self.embed,
                                 inputs=[e.text for e in self.test], judge=self.judge)

    def correct(self, predictions: "Sequence[Prediction]", examples: "Sequence[Example] | None" = None) -> np.ndarray:
        """Per-example correctness (the vector paired tests and early rejection use)."""
        examples = self.test if examples is None else examples
        return per_example_correct(self.spec.kind, [e.target for e in examples], [p.output for p in predictions],
                                   match=self.match, generation_metric=self.generation_metric, embed=self.embed,
                                   inputs=[e.text for e in examples], judge=self.judge)

    @cached_property
    def judge(self) -> Any:
        """The task's LLM judge behind the call cache (``generation.metric: judge``), else None."""
        g = self.spec.generation
        if g is None or g.judge is None:
            return None
        from ..backends import build_backend
        from ..evaluation.judge import Judge

        judged = self.spec.model_copy(update={"model": g.judge.model, "backend": g.judge.backend, "models": None})
        return Judge(build_backend(judged, self.store, prices=self.prices), g.judge.rubric, g.judge.scale,
                     model=g.judge.model)

    def judge_checks(self) -> dict[str, Any] | None:
        """The judge measured on the task's human grades (agreement, position and length bias), when both exist."""
        g = self.spec.generation
        if self.judge is None or g is None or g.judge is None:
            return None
        if g.judge.human is None:
            return {"model": g.judge.model, "warning": "no human grades (generation.judge.human): the judge's "
                    "agreement with people and its biases are not measured"}
        from ..data.reading import read_records
        from ..errors import DataError
        from ..evaluation.judge import judge_checks

        path = self.spec.resolve(g.judge.human)
        rows = []
        for line, record in read_records(path, role="generation.judge.human"):
            missing = [k for k in ("input", "answer", "score") if k not in record]
            score = record.get("score")
            if missing or isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= g.judge.scale:
                why = f"has no {', '.join(missing)}" if missing else f"score {score!r} is not a whole grade 1..{g.judge.scale}"
                raise DataError(f"{path}: line {line} {why} (a human grade needs input, answer and score).")
            rows.append(record)
        return judge_checks(self.judge, rows, seed=self.spec.seed)
