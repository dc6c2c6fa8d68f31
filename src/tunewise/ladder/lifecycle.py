"""A rung's life in the run store, in one place: reused (finished before, same configuration), or started and
then finished, skipped (with the reason) or failed (with the user's one-sentence error).

Only :class:`~tunewise.errors.TunewiseError` (what a user can cause: a bad template, a model that cannot
load) fails a rung and lets the others run; anything else is a bug and propagates. An interruption leaves
the rung ``running`` in the store, and the next run starts it again (its model calls are cached).

Out of scope: scoring the rung (``attempt.py``) and choosing it (``walk.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import RungSkipped, TunewiseError
from ..results import RungResult
from ..store import Store
from ..task import RungSpec

__all__ = ["Lifecycle"]


@dataclass(frozen=True)
class Lifecycle:
    store: Store
    run_id: str

    def reuse(self, rung: RungSpec) -> RungResult | None:
        """The rung's stored result when it finished before with the same configuration."""
        record = self.store.rung_result(self.run_id, rung.name, config_hash=rung.config_hash())
        return RungResult.from_json(record.result) if record is not None and record.result else None

    def skip(self, rung: RungSpec, reason: str) -> RungResult:
        """Record a rung that is not run at all (the policy's skip, or left out by an escalation or a stop)."""
        self._start(rung)
        self.store.skip_rung(self.run_id, rung.name, reason)
        return RungResult(name=rung.name, strategy=rung.strategy, status="skipped", config=rung.to_json(),
                          config_hash=rung.config_hash(), reason=reason)

    def run(self, rung: RungSpec, attempt: Callable[[], RungResult]) -> RungResult:
        """Start the rung, call ``attempt`` and record how it ended."""
        self._start(rung)
        try:
            result = attempt()
        except RungSkipped as exc:  # it cannot run here (e.g. QLoRA without a GPU): not a failure
            self.store.skip_rung(self.run_id, rung.name, str(exc))
            return RungResult(name=rung.name, strategy=rung.strategy, status="skipped", config=rung.to_json(),
                              config_hash=rung.config_hash(), reason=str(exc))
        except TunewiseError as exc:
            self.store.fail_rung(self.run_id, rung.name, str(exc))
            return RungResult(name=rung.name, strategy=rung.strategy, status="failed", config=rung.to_json(),
                              config_hash=rung.config_hash(), error=str(exc))
        if result.status == "finished":
            self.store.finish_rung(self.run_id, rung.name, result.to_json())
        else:
            self.store.skip_rung(self.run_id, rung.name, result.reason or "skipped")
        return result

    def _start(self, rung: RungSpec) -> None:
        self.store.start_rung(self.run_id, rung.name, config=rung.to_json(), config_hash=rung.config_hash())
