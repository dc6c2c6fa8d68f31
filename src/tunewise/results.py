"""The records a run produces: one :class:`RungResult` per rung, gathered in :class:`RunResults`.

These are plain data (JSON round-trip), written to ``results.json`` and kept in the run store,
so the decision, the report and the server can all be recomputed from them without a model.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .evaluation.records import MetricValue, Prediction

__all__ = ["RungResult", "RunResults", "write_json"]


@dataclass(frozen=True)
class RungResult:
    name: str
    strategy: str
    status: str  # finished | failed | skipped
    config: dict[str, Any] = field(default_factory=dict)
    config_hash: str = ""
    metrics: dict[str, MetricValue] = field(default_factory=dict)
    primary_metric: str = ""
    usage: dict[str, Any] = field(default_factory=dict)
    per_label: dict[str, Any] | None = None
    confusions: list[dict[str, Any]] | None = None
    parse: dict[str, Any] | None = None
    prepare_s: float = 0.0
    predictions: tuple[Prediction, ...] = ()
    error: str | None = None
    reason: str | None = None
    # strategy-specific evidence beyond the scores: training record, learning curve and forecast
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def primary(self) -> MetricValue | None:
        return self.metrics.get(self.primary_metric)

    def to_json(self, *, with_predictions: bool = True) -> dict[str, Any]:
        d = asdict(self)
        d["metrics"] = {k: v.to_json() for k, v in self.metrics.items()}
        d["predictions"] = [p.to_json() for p in self.predictions] if with_predictions else []
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "RungResult":
        d = dict(d)
        d["metrics"] = {k: MetricValue(**v) for k, v in d.get("metrics", {}).items()}
        d["predictions"] = tuple(Prediction.from_json(p) for p in d.get("predictions", []))
        return cls(**d)


@dataclass(frozen=True)
class RunResults:
    run_id: str
    task: dict[str, Any]
    data: dict[str, Any]  # hash, split sizes and origins, labels
    checks: dict[str, Any]
    rungs: tuple[RungResult, ...]
    comparisons: list[dict[str, Any]]
    environment: dict[str, Any]
    created_at: str
    seed: int
    status: str = "finished"
    # the ladder policy's walk: {"mode": "policy" | "fixed", "actions": [...], "budget": ..., "early_rejection": ...}
    ladder: dict[str, Any] = field(default_factory=dict)

    def to_json(self, *, with_predictions: bool = True) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "status": self.status, "created_at": self.created_at, "seed": self.seed,
            "task": self.task, "data": self.data, "checks": self.checks,
            "rungs": [r.to_json(with_predictions=with_predictions) for r in self.rungs],
            "comparisons": self.comparisons, "environment": self.environment, "ladder": self.ladder,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "RunResults":
        return cls(run_id=d["run_id"], task=d["task"], data=d["data"], checks=d["checks"],
                   rungs=tuple(RungResult.from_json(r) for r in d.get("rungs", [])),
                   comparisons=d.get("comparisons", []), environment=d.get("environment", {}),
                   created_at=d.get("created_at", ""), seed=d.get("seed", 0), status=d.get("status", "finished"),
                   ladder=d.get("ladder") or {})


def _clean(obj: Any) -> Any:
    """JSON has no NaN: write null instead."""
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json(path: Path, payload: Any) -> Path:
    """Write atomically (temp file then rename), so a kill never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_clean(payload), indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    tmp.replace(path)
    return path
