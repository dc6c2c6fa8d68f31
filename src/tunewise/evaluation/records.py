"""Per-example predictions and metric values: the data that flows out of every candidate."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Prediction", "MetricValue"]


@dataclass(frozen=True)
class Prediction:
    """What a candidate answered for one example, with what it cost.

    ``output`` is the parsed answer (a label, a dict, a string) or None when the raw answer could
    not be parsed; ``raw`` is what the model produced; ``confidence`` is a probability in [0, 1]
    when the candidate has one.
    """

    example_id: str
    output: Any
    raw: str = ""
    confidence: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    latency_s: float = 0.0  # wall time of the model call(s) that served this example
    batch_size: int = 1  # examples served together by that call (model time per example = latency / batch)
    error: str | None = None
    parse_rule: str | None = None  # how free text became ``output`` (exact, fuzzy, ...), when parsed
    model_call: bool = True  # False: answered without calling the model (e.g. a single candidate label)
    truncated: bool = False  # the answer was cut off at its token budget (finish reason "length")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Prediction":
        return cls(**d)


@dataclass(frozen=True)
class MetricValue:
    """A metric with its 95% confidence interval and what produced the interval."""

    value: float
    low: float
    high: float
    n: int
    method: str = "percentile bootstrap, 95%"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
