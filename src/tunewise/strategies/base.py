"""Strategies prepare candidates; candidates answer examples.

Prompting and (later) fine-tuning are two ways to *prepare a candidate* for the same task. A
strategy is a function ``prepare(rung, ctx) -> Candidate``; a :class:`Candidate` answers a batch
of examples with :class:`~tunewise.evaluation.records.Prediction` records. The evaluator only
sees candidates, so every rung is scored the same way.

Reference implementation: :class:`tunewise.strategies.baselines.EmbeddingKNN` (small, no LLM).
Out of scope: metrics (``evaluation/``), the order of rungs and their lifecycle (``ladder/``).
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
    from ..evaluation.records import Prediction
    from ..task import RungSpec, TaskSpec

__all__ = ["Candidate", "PrepareContext", "Strategy", "register", "get_strategy", "STRATEGIES"]


@dataclass
class PrepareContext:
    """What a strategy may use to prepare a candidate. Demonstrations come only from ``splits.train``."""

    spec: "TaskSpec"
    splits: "Splits"
    backend: "Backend | None" = None  # the task's model behind the call cache (None for rungs without an LLM)
    embed: "Callable[[Sequence[str]], Any] | None" = None  # cached embedding function (texts -> array)
    seed: int = 0
    # for strategies that train and evaluate on their own (fine-tuning, learning curves):
    artifacts: Path | None = None  # where trained artifacts live (content-keyed subdirectories)
    wrap_backend: "Callable[[Backend], Backend] | None" = None  # puts a new backend behind the call cache
    # evaluate(candidate, label) -> (primary MetricValue on the test split, predictions)
    evaluate: "Callable[[Candidate, str], tuple[Any, Any]] | None" = None
    report: "Callable[[str, int, int], None] | None" = None  # labelled progress (label, done, total)
    # False: reuse trained artifacts only, a missing one is an error (rebuilding a version to serve it)
    may_train: bool = True
    task: "TaskSpec | None" = None  # the whole task when it weighs several models (``spec`` is the rung's model's)
    provenance: dict[str, Any] = field(default_factory=dict)  # recorded in trained artifacts (a distilled teacher)


class Candidate(ABC):
    """A prepared way to answer the task; every member the ladder, the evaluator and the server use.

    ``config`` records everything that made it (strategy, parameters, demonstrations, model);
    ``uses_llm`` says whether ``predict`` needs the run's backend; ``extras`` holds evidence beyond
    the scores (a training record, a learning curve), copied into the rung's result. Subclasses
    are dataclasses that declare these as fields; the capabilities below have defaults.
    """

    rung: str
    config: dict[str, Any]
    uses_llm: bool
    extras: dict[str, Any]

    @abstractmethod
    def predict(self, examples: Sequence["Example"], *, backend: "Backend | None") -> list["Prediction"]:
        """Answer each example; results are in input order."""

    @property
    def own_backend(self) -> "Backend | None":
        """The backend the candidate answers with when it brings its own (a trained artifact); None: the run's."""
        return None

    @property
    def stability_draws(self) -> int:
        """How many times the ladder re-draws (and, separately, re-orders) the candidate's fixed demonstrations
        to measure how much its score moves; 0: not applicable."""
        return 0

    def close(self) -> None:
        """Release what the candidate holds (its own backend's model and threads); the default holds nothing."""


Strategy = Callable[["RungSpec", PrepareContext], Candidate]
STRATEGIES: dict[str, Strategy] = {}


def register(name: str) -> Callable[[Strategy], Strategy]:
    def deco(fn: Strategy) -> Strategy:
        STRATEGIES[name] = fn
        return fn

    return deco


def get_strategy(name: str) -> Strategy:
    # importing the modules fills the registry; they are cheap (torch is imported lazily)
    from . import baselines, distill, encoder_ft, finetuning, optimize, prompting  # noqa: F401

    try:
        return STRATEGIES[name]
    except KeyError:
        known = ", ".join(sorted(STRATEGIES))
        raise TaskSpecError(f"unknown strategy '{name}' (known: {known}).") from None
