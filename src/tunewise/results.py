"""The records a run produces: one :class:`RungResult` per rung, the paired :class:`Comparison` of each
finished rung with the best one, and the :class:`LadderRecord` of how the ladder was climbed, gathered in
:class:`RunResults`.

These are typed, frozen data with an exact JSON round-trip (``to_json`` / ``from_json``): the decision and
the report take them as they are; only ``results.json`` and the run store hold the dicts, so the decision,
the report and the server can all be recomputed from them without a model.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .evaluation.records import MetricValue, Prediction
from .ladder.policy import Action, PolicyConfig

__all__ = ["RungResult", "Comparison", "LadderBudget", "EarlyRejection", "LadderRecord", "RunResults", "write_json"]


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
    # the model id the rung ran on when the task weighs several models (None: the task's one model, or no LLM)
    model: str | None = None

    @property
    def primary(self) -> MetricValue | None:
        return self.metrics.get(self.primary_metric)

    def to_json(self, *, with_predictions: bool = True) -> dict[str, Any]:
        d = asdict(self)
        if d["model"] is None:  # one-model results keep their shape
            del d["model"]
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
class Comparison:
    """Rung ``a`` against rung ``b`` on the same test examples: the difference ``a - b`` with its paired
    bootstrap interval, McNemar's discordant counts and exact p-value, and the verdict in words
    (:func:`~tunewise.evaluation.stats.compare_paired`)."""

    a: str
    b: str
    n: int
    accuracy_a: float
    accuracy_b: float
    diff: float
    low: float
    high: float
    b01: int
    b10: int
    p_value: float
    alpha: float
    verdict: str  # "A better" | "B better" | "not significantly different"
    decided_by: str
    explanation: str
    test: str = "McNemar exact"  # the p-value's test: "McNemar exact", or "Wilcoxon signed-rank" for scores

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Comparison":
        return cls(**d)


@dataclass(frozen=True)
class LadderBudget:
    """The walk's budgets and what it measured spending (seconds and dollars over every rung acted on)."""

    hours: float | None
    usd: float | None
    tuning_hours_default: float | None  # the tuning rungs' default budget, when ``hours`` is not set
    spent_s: float
    spent_usd: float
    pricing: str  # how seconds and tokens became money


@dataclass(frozen=True)
class EarlyRejection:
    """The rungs early rejection dropped and the model calls and seconds that saved."""

    rungs: tuple[str, ...] = ()
    saved_calls: float = 0.0
    saved_s: float = 0.0


@dataclass(frozen=True)
class LadderRecord:
    """How the rungs were chosen: ``fixed`` (named rungs, in order) or ``policy`` (every step with its reason)."""

    mode: str = "fixed"
    target: dict[str, float] | None = None
    budget: LadderBudget | None = None
    config: PolicyConfig | None = None
    actions: tuple[Action, ...] = ()
    early_rejection: EarlyRejection | None = None

    @property
    def stop(self) -> Action | None:
        """The step that ended the walk (None for a fixed list)."""
        return self.actions[-1] if self.actions and self.actions[-1].kind == "stop" else None

    def to_json(self) -> dict[str, Any]:
        if self.mode != "policy":
            return {"mode": self.mode}
        config = self.config or PolicyConfig()
        return {
            "mode": self.mode, "target": self.target, "budget": asdict(self.budget) if self.budget else None,
            "config": {"patience": config.patience, "fractions": list(config.fractions), "delta": config.delta,
                       "min_subset": config.min_subset},
            "actions": [a.to_json() for a in self.actions],
            "early_rejection": {**asdict(self.early_rejection or EarlyRejection()),
                                "rungs": list((self.early_rejection or EarlyRejection()).rungs)},
        }

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> "LadderRecord":
        d = d or {}
        if d.get("mode") != "policy":
            return cls(mode=d.get("mode") or "fixed")
        config, early = d.get("config") or {}, d.get("early_rejection") or {}
        return cls(
            mode="policy", target=d.get("target"),
            budget=LadderBudget(**d["budget"]) if d.get("budget") else None,
            config=PolicyConfig(**{**config, "fractions": tuple(config.get("fractions") or PolicyConfig.fractions)}),
            actions=tuple(Action.from_json(a) for a in d.get("actions") or []),
            early_rejection=EarlyRejection(rungs=tuple(early.get("rungs") or ()),
                                           saved_calls=float(early.get("saved_calls") or 0.0),
                                           saved_s=float(early.get("saved_s") or 0.0)),
        )


@dataclass(frozen=True)
class RunResults:
    run_id: str
    task: dict[str, Any]
    data: dict[str, Any]  # hash, split sizes and origins, labels
    checks: dict[str, Any]
    rungs: tuple[RungResult, ...]
    comparisons: tuple[Comparison, ...]
    environment: dict[str, Any]
    created_at: str
    seed: int
    status: str = "finished"
    ladder: LadderRecord = field(default_factory=LadderRecord)

    def rung(self, name: str) -> RungResult | None:
        return next((r for r in self.rungs if r.name == name), None)

    def to_json(self, *, with_predictions: bool = True) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "status": self.status, "created_at": self.created_at, "seed": self.seed,
            "task": self.task, "data": self.data, "checks": self.checks,
            "rungs": [r.to_json(with_predictions=with_predictions) for r in self.rungs],
            "comparisons": [c.to_json() for c in self.comparisons], "environment": self.environment,
            "ladder": self.ladder.to_json(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "RunResults":
        return cls(run_id=d["run_id"], task=d["task"], data=d["data"], checks=d["checks"],
                   rungs=tuple(RungResult.from_json(r) for r in d.get("rungs", [])),
                   comparisons=tuple(Comparison.from_json(c) for c in d.get("comparisons") or []),
                   environment=d.get("environment", {}), created_at=d.get("created_at", ""), seed=d.get("seed", 0),
                   status=d.get("status", "finished"), ladder=LadderRecord.from_json(d.get("ladder")))


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
