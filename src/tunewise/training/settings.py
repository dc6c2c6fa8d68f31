"""What a tuning rung is configured by: method, LoRA shape, optimiser, data subset, budget.

:class:`TuneSettings` is built from a rung's ``params`` (``task.yaml`` or the built-in ladder)
and validated with pydantic, so a typo names the rung and the key. Defaults are chosen for
small data on a CPU and were measured on BANKING77 with SmolLM2-135M:
LoRA r=16 on all linear layers at lr 1e-3, batch 16, a 10% warm-up, 3 epochs below 1,000
examples, 2 below 3,000 and 1 above, early stopping on the dev loss.

Out of scope: running the training (``trainer.py``), choosing which examples (``subsets.py``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import TaskSpecError

__all__ = ["TuneSettings", "DEFAULT_DEVICE_HOUR_USD", "settings_from_params"]

#: price of one device-hour when the rung does not set ``device_hour_usd`` (a 2-vCPU cloud VM;
#: one data-centre GPU); recorded in every result with where it came from
DEFAULT_DEVICE_HOUR_USD = {"cpu": 0.10, "cuda": 2.50}

_DEFAULT_LR = {"lora": 1e-3, "qlora": 1e-3, "full": 5e-5}


class TuneSettings(BaseModel):
    """One tuning configuration. Everything here is part of the trained artifact's identity
    except the fields in ``NOT_IDENTITY`` (budget, price, progress cadence)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["lora", "qlora", "full"] = "lora"
    head: Literal["lm", "classifier"] = "lm"
    # LoRA shape
    r: int = Field(16, ge=1)
    alpha: float = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"
    # optimisation
    learning_rate: float | None = Field(None, gt=0)
    lr_sweep: list[float] | None = None
    sweep_steps: int = Field(30, ge=1)
    epochs: float | None = Field(None, gt=0)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(16, ge=1)
    grad_accum: int = Field(1, ge=1)
    warmup: float = Field(0.1, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    scheduler: str = "linear"
    max_length: int = Field(256, ge=8)
    padding_free: bool | None = None  # default: on for the LM head (no padding tokens computed)
    gradient_checkpointing: bool = False
    answer_only_head: bool = True  # LM head on answer positions only (same loss, less compute; see trainer.py)
    # early stopping on the dev split
    early_stopping_patience: int | None = Field(3, ge=1)
    evals_per_epoch: int = Field(2, ge=1)
    dev_limit: int = Field(256, ge=1)
    # which training examples (nested subsets: a smaller one is contained in a larger one)
    per_label: int | None = Field(None, ge=1)
    fraction: float | None = Field(None, gt=0, le=1)
    limit: int | None = Field(None, ge=1)
    # not part of the artifact's identity
    save_every: int | None = Field(None, ge=1)  # steps between checkpoints (default: about 10 per run)
    device_hour_usd: float | None = Field(None, ge=0)
    time_budget_minutes: float | None = Field(None, gt=0)  # training stops past it (``timing.StepClock``)
    fit_reason: str | None = None  # set by the ladder when it fitted the rung to its budget: why, with the numbers

    NOT_IDENTITY: ClassVar[tuple[str, ...]] = ("save_every", "device_hour_usd", "time_budget_minutes", "fit_reason")

    @model_validator(mode="after")
    def _one_subset_rule(self) -> "TuneSettings":
        if sum(x is not None for x in (self.per_label, self.fraction)) > 1:
            raise ValueError("use per_label or fraction, not both")
        if self.head == "classifier" and self.method == "full":
            raise ValueError("the classifier head is trained with LoRA or QLoRA, not full fine-tuning")
        return self

    @property
    def lr(self) -> float:
        return self.learning_rate or _DEFAULT_LR[self.method]

    def epochs_for(self, n_examples: int) -> float:
        """Explicit epochs, else 3 below 1,000 examples, 2 below 3,000, else 1."""
        if self.epochs is not None:
            return self.epochs
        return 3.0 if n_examples < 1000 else 2.0 if n_examples < 3000 else 1.0

    def use_padding_free(self) -> bool:
        return self.head == "lm" if self.padding_free is None else self.padding_free

    def identity(self) -> dict[str, Any]:
        d = self.model_dump(mode="json", exclude=set(self.NOT_IDENTITY))
        d["learning_rate"] = self.lr
        return d

    def identity_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]


def settings_from_params(rung_name: str, params: dict[str, Any], *, drop: tuple[str, ...] = ()) -> TuneSettings:
    """Validate a rung's params; errors name the rung and the key."""
    try:
        return TuneSettings(**{k: v for k, v in params.items() if k not in drop})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "params"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown parameter for a tuning rung"
        raise TaskSpecError(f"rung '{rung_name}': {where}: {msg}.") from None
