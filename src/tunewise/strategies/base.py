"""Strategies prepare candidates; candidates answer examples.

Prompting and (later) fine-tuning are two ways to *prepare a candidate* for the same task. A
strategy is a function ``prepare(rung, ctx) -> Candidate``; a :class:`Candidate` answers a batch
of examples with :class:`~tunewise.evaluation.records.Prediction` records. The evaluator only
sees candidates, so every rung is scored the same way.

Reference implementation: :class:`tunewise.strategies.baselines.EmbeddingKNN` (small, no LLM).
Out of scope: metrics (``evaluation/``), the order of rungs (``ladder.py``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import TaskSpecError

if TYPE_CHECKING:
    from ..backends.base import Backend
    from ..data import Example, Splits
    from ..embeddings import Embedder
    from ..evaluation.records import Prediction
    from ..task import RungSpec, TaskSpec

__all__ = ["Candidate", "PrepareContext", "Strategy", "register", "get_strategy", "STRATEGIES"]

ProgressFn = Callable[[int, int], None]


@dataclass
class PrepareContext:
    """What a strategy may use to prepare a candidate. Demonstrations come only from ``splits.train``."""

    spec: "TaskSpec"
    splits: "Splits"
    backend: "Backend | None" = None
    embedder: "Callable[[], Embedder] | None" = None  # lazy: building it loads a model
    embed: "Callable[[Sequence[str]], Any] | None" = None  # cached embedding function (texts -> array)
    seed: int = 0
    progress: ProgressFn | None = None
    notes: list[str] = field(default_factory=list)
    # for strategies that train and evaluate on their own (fine-tuning, learning curves):
    artifacts: Path | None = None  # where trained artifacts live (content-keyed subdirectories)
    wrap_backend: "Callable[[Backend], Backend] | None" = None  # puts a new backend behind the call cache
    # evaluate(candidate, label) -> (primary MetricValue on the test split, predictions)
    evaluate: "Callable[[Candidate, str], tuple[Any, Any]] | None" = None
    report: "Callable[[str, int, int], None] | None" = None  # labelled progress (label, done, total)
    # False: reuse trained artifacts only, a missing one is an error (rebuilding a version to serve it)
    may_train: bool = True


class Candidate(ABC):
    """A prepared way to answer the task.

    ``config`` records everything that made it (strategy, parameters, demonstrations, model);
    ``uses_llm`` says whether ``predict`` needs the backend.
    """

    rung: str
    config: dict[str, Any]
    uses_llm: bool

    @abstractmethod
    def predict(self, examples: Sequence["Example"], *, backend: "Backend | None") -> list["Prediction"]:
        """Answer each example; results are in input order."""


Strategy = Callable[["RungSpec", PrepareContext], Candidate]
STRATEGIES: dict[str, Strategy] = {}


def register(name: str) -> Callable[[Strategy], Strategy]:
    def deco(fn: Strategy) -> Strategy:
        STRATEGIES[name] = fn
        return fn

    return deco


def get_strategy(name: str) -> Strategy:
    # importing the modules fills the registry; they are cheap (torch is imported lazily)
    from . import baselines, finetuning, prompting  # noqa: F401

    try:
        return STRATEGIES[name]
    except KeyError:
        known = ", ".join(sorted(STRATEGIES))
        raise TaskSpecError(f"unknown strategy '{name}' (known: {known}).") from None
