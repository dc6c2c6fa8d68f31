"""tunewise: should we prompt-engineer or fine-tune? Measured on one frozen split.

The Python API (the CLI is a thin skin over it)::

    from tunewise import build_task, run_task

    task = build_task(train=rows, test=test_rows, target={"accuracy": 0.9})  # lists of dicts or DataFrames
    outcome = run_task(task, rungs=["knn", "probe", "few_shot_retrieved"])
    outcome.decision.winner, outcome.decision.next_step      # the decision, typed
    outcome.results.rungs                                     # every rung's scores with 95% intervals

``load_task("task.yaml")`` reads a task file instead; ``decide`` recomputes a decision from stored results
(say with other prices). Names are imported on first use, so ``import tunewise`` stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "TaskSpec": "tunewise.task", "load_task": "tunewise.task", "build_task": "tunewise.task",
    "run_task": "tunewise.run", "RunOutcome": "tunewise.run", "quick_spec": "tunewise.run",
    "RunResults": "tunewise.results", "RungResult": "tunewise.results", "Comparison": "tunewise.results",
    "LadderRecord": "tunewise.results",
    "MetricValue": "tunewise.evaluation.records", "Prediction": "tunewise.evaluation.records",
    "Decision": "tunewise.decision", "Option": "tunewise.decision", "decide": "tunewise.decision",
    "Prices": "tunewise.costs", "load_prices": "tunewise.costs",
    "TunewiseError": "tunewise.errors", "TaskSpecError": "tunewise.errors", "DataError": "tunewise.errors",
    "BackendError": "tunewise.errors",
}

__all__ = [
    "__version__", "TaskSpec", "load_task", "build_task", "run_task", "RunOutcome", "quick_spec", "RunResults",
    "RungResult", "Comparison", "LadderRecord", "MetricValue", "Prediction", "Decision", "Option", "decide",
    "Prices", "load_prices", "TunewiseError", "TaskSpecError", "DataError", "BackendError",
]

if TYPE_CHECKING:
    from .costs import Prices, load_prices
    from .decision import Decision, Option, decide
    from .errors import BackendError, DataError, TaskSpecError, TunewiseError
    from .evaluation.records import MetricValue, Prediction
    from .results import Comparison, LadderRecord, RungResult, RunResults
    from .run import RunOutcome, quick_spec, run_task
    from .task import TaskSpec, build_task, load_task


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tunewise' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
