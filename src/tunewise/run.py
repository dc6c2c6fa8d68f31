"""``run_task``: load the task, freeze the split, climb the rungs, record everything.

``train_only``: the same splits and artifact directory, one ``finetune`` rung's training and
nothing else (no evaluation, no run store), for ``tunewise train`` under ``accelerate launch``.

Flow: spec -> splits + data checks -> run store (same task and data -> same run id) -> for each
rung: reuse a finished result, or prepare a candidate and evaluate it on the frozen test split
-> paired comparisons -> ``results.json`` and ``summary.md``. Every model call goes through the
call cache and every finished rung is stored, so an interrupted run resumes where it stopped.

A user error inside one rung (a bad template, say) fails that rung with its sentence and the
others still run; nothing already computed is lost. Only the CLI prints.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .data import Splits, check_data, load_splits
from .errors import RungSkipped, TaskSpecError, TunewiseError
from .evaluation.runner import evaluate, usage_summary
from .evaluation.scoring import (
    PRIMARY_METRIC,
    compare_rungs,
    per_example_correct,
    score_predictions,
)
from .ladder import needs_llm, resolve_rungs
from .results import RungResult, RunResults, write_json
from .store import Store, environment_info, run_id_for
from .strategies.base import PrepareContext, get_strategy
from .summary import summary_markdown
from .task import RungSpec, TaskSpec

__all__ = ["RunOutcome", "run_task", "train_only", "Progress"]

# progress(label, done, total): the CLI draws bars; the library never prints
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class RunOutcome:
    results: RunResults
    results_path: Path
    summary_path: Path
    reused: tuple[str, ...]  # rungs whose stored results were reused
    report_path: Path | None = None  # report.html (with report.md, decision.json, edge_cases.md beside it)


class EmbeddingCache:
    """Embeddings memoised per text and persisted per request in the store (the train set once).

    It also remembers what each embedding cost when it was computed (``seconds``), so a
    candidate served from the cache still reports the true cost of embedding its inputs.
    """

    def __init__(self, store: Store, name: str, progress: Progress | None = None) -> None:
        self.store, self.name, self.progress = store, name, progress
        self._embedder: Any = None
        self._memo: dict[str, np.ndarray] = {}
        self._cost: dict[str, float] = {}

    def _embed(self, texts: list[str]) -> np.ndarray:
        if self._embedder is None:
            from .embeddings import load_embedder

            self._embedder = load_embedder(self.name)
        report = (lambda done, total: self.progress(f"embedding ({self.name})", done, total)) if self.progress else None
        return self._embedder.embed(texts, progress=report)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if missing:
            key = "emb:" + self.name + ":" + hashlib.sha256("\x00".join(missing).encode()).hexdigest()
            blob = self.store.get_blob(key)
            if blob is None:
                start = time.perf_counter()
                vectors = self._embed(missing)
                seconds = time.perf_counter() - start
                self.store.put_array(key, vectors, meta={"embedder": self.name, "texts": len(missing),
                                                         "seconds": seconds})
            else:  # one read: the blob holds both the vectors and what computing them cost
                vectors, seconds = blob.array(), blob.meta.get("seconds", 0.0)
            self._memo.update(zip(missing, vectors))
            self._cost.update(dict.fromkeys(missing, seconds / len(missing)))
        return np.stack([self._memo[t] for t in texts]) if texts else np.zeros((0, 1), dtype=np.float32)

    def seconds(self, texts: Sequence[str]) -> float:
        """Measured seconds it took to embed these texts (batched compute shared per text)."""
        return sum(self._cost.get(t, 0.0) for t in texts)


def _with_limit(spec: TaskSpec, limit: int | None) -> TaskSpec:
    if not limit:
        return spec
    return spec.model_copy(update={"data": spec.data.model_copy(update={"test_limit": limit})})


def _build_backend(spec: TaskSpec, store: Store, backend: Any) -> Any:
    from .backends import load_backend
    from .backends.cached import CachedBackend

    inner = backend if backend is not None else load_backend(spec.model)
    return CachedBackend(inner, store)


def _data_info(splits: Splits) -> dict[str, Any]:
    return {
        "hash": splits.data_hash,
        "sizes": {"train": len(splits.train), "dev": len(splits.dev), "test": len(splits.test)},
        "dev_origin": splits.dev_origin,
        "test_origin": splits.test_origin,
        "labels": list(splits.labels) if splits.labels else None,
    }


class _Runner:
    """One run's state: the spec, splits, store and (lazily) backend and embeddings."""

    def __init__(self, spec: TaskSpec, splits: Splits, store: Store, run_id: str, *, backend: Any,
                 progress: Progress | None) -> None:
        self.spec, self.splits, self.store, self.run_id = spec, splits, store, run_id
        self.progress = progress
        self._backend_arg = backend
        self._backend: Any = None
        self._backend_error: TunewiseError | None = None
        self.embed = EmbeddingCache(store, spec.embedder, progress)

    @property
    def backend(self) -> Any:
        """Built on first use (baseline-only runs never load a model); a failure is remembered."""
        if self._backend_error is not None:
            raise self._backend_error
        if self._backend is None:
            try:
                self._backend = _build_backend(self.spec, self.store, self._backend_arg)
            except TunewiseError as exc:
                self._backend_error = exc
                raise
        return self._backend

    def _schema(self) -> Any:
        from .strategies.prompting import _schema

        return _schema(self.spec)

    def _score(self, predictions: Sequence[Any]) -> dict[str, Any]:
        golds = [e.target for e in self.splits.test]
        match = self.spec.generation.match if self.spec.generation else "normalized"
        return score_predictions(self.spec.kind, golds, predictions, labels=self.splits.labels or (),
                                 schema=self._schema(), match=match, seed=self.spec.seed)

    def _evaluate_for_strategy(self, candidate: Any, label: str) -> tuple[Any, tuple[Any, ...]]:
        """What a strategy uses to score an intermediate candidate (a learning-curve point) on test."""
        report = (lambda done, total: self.progress(f"{label}: test", done, total)) if self.progress else None
        ev = evaluate(candidate, self.splits.test, backend=None, progress=report)
        return self._score(ev.predictions)["metrics"][PRIMARY_METRIC[self.spec.kind]], ev.predictions

    def run_rung(self, rung: RungSpec) -> RungResult:
        from .backends.cached import CachedBackend

        backend = self.backend if needs_llm(rung) else None
        ctx = PrepareContext(spec=self.spec, splits=self.splits, backend=backend, embed=self.embed,
                             seed=self.spec.seed, progress=None, artifacts=self.spec.store_dir / "artifacts",
                             wrap_backend=lambda inner: CachedBackend(inner, self.store),
                             evaluate=self._evaluate_for_strategy, report=self.progress)
        self.store.start_rung(self.run_id, rung.name, config=rung.model_dump(), config_hash=rung.config_hash())
        start = time.perf_counter()
        candidate = get_strategy(rung.strategy)(rung, ctx)
        prepare_s = time.perf_counter() - start
        report = (lambda done, total: self.progress(rung.name, done, total)) if self.progress else None
        try:
            ev = evaluate(candidate, self.splits.test, backend=backend, progress=report)
        finally:
            if hasattr(candidate, "close"):
                candidate.close()
        scored = self._score(ev.predictions)
        return RungResult(
            name=rung.name, strategy=rung.strategy, status="finished", config=candidate.config,
            config_hash=rung.config_hash(), metrics=scored["metrics"], primary_metric=PRIMARY_METRIC[self.spec.kind],
            usage=usage_summary(ev.predictions, wall_s=ev.wall_s), per_label=scored.get("per_label"),
            confusions=scored.get("confusions"), parse=scored.get("parse"), prepare_s=prepare_s,
            predictions=ev.predictions, extras=dict(getattr(candidate, "extras", {}) or {}),
        )


def _comparisons(kind: str, splits: Splits, rungs: Sequence[RungResult], seed: int) -> list[dict[str, Any]]:
    """Every finished rung against the best one, paired on the same test examples."""
    done = [r for r in rungs if r.status == "finished" and r.primary is not None]
    if len(done) < 2:
        return []
    best = max(done, key=lambda r: r.primary.value)
    golds = [e.target for e in splits.test]
    vec = {r.name: per_example_correct(kind, golds, [p.output for p in r.predictions]) for r in done}
    out = []
    for r in done:
        if r.name != best.name:
            out.append({"a": best.name, "b": r.name, **compare_rungs(vec[best.name], vec[r.name], seed=seed)})
    return out


def run_task(
    spec: TaskSpec,
    *,
    rungs: Sequence[str] | None = None,
    limit: int | None = None,
    backend: Any = None,
    progress: Progress | None = None,
    task_path: Path | None = None,
    report: bool = True,
) -> RunOutcome:
    """Run (or resume) the task; returns the results and where they were written."""
    spec = _with_limit(spec, limit)
    splits = load_splits(spec)
    checks = check_data(splits, kind=spec.kind)
    rung_specs = resolve_rungs(spec, rungs)
    store = Store(spec.store_dir)
    run_id = run_id_for(spec.fingerprint(), splits.data_hash)
    store.start_run(task_name=spec.name, spec=spec.model_dump(mode="json"), spec_hash=spec.fingerprint(),
                    data_hash=splits.data_hash, task_path=task_path, run_id=run_id)
    runner = _Runner(spec, splits, store, run_id, backend=backend, progress=progress)
    results: list[RungResult] = []
    reused: list[str] = []
    status = "finished"
    try:
        for rung in rung_specs:
            record = store.rung_result(run_id, rung.name, config_hash=rung.config_hash())
            if record is not None and record.result:
                results.append(RungResult.from_json(record.result))
                reused.append(rung.name)
                continue
            try:
                result = runner.run_rung(rung)
            except RungSkipped as exc:
                store.skip_rung(run_id, rung.name, str(exc))
                results.append(RungResult(name=rung.name, strategy=rung.strategy, status="skipped",
                                          config=rung.model_dump(), reason=str(exc)))
                continue
            except TunewiseError as exc:
                store.fail_rung(run_id, rung.name, str(exc))
                results.append(RungResult(name=rung.name, strategy=rung.strategy, status="failed",
                                          config=rung.model_dump(), error=str(exc)))
                continue
            store.finish_rung(run_id, rung.name, result.to_json())
            results.append(result)
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        if status == "interrupted":
            store.finish_run(run_id, "interrupted")
    out_dir = spec.store_dir / "runs" / run_id
    run_results = RunResults(
        run_id=run_id, task=spec.model_dump(mode="json"), data=_data_info(splits), checks=checks.to_json(),
        rungs=tuple(results), comparisons=_comparisons(spec.kind, splits, results, spec.seed),
        environment={**environment_info(), "backend": dict(getattr(runner._backend, "info", {}) or {})},
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), seed=spec.seed,
        status="finished" if all(r.status in ("finished", "skipped") for r in results) else "partial",
    )
    payload = run_results.to_json()
    results_path = write_json(out_dir / "results.json", payload)
    summary_path = out_dir / "summary.md"
    summary_path.write_text(summary_markdown(run_results), encoding="utf-8")
    if report:  # after results.json: a failure here loses nothing computed, `tunewise report` redoes it
        from .report import render_report

        report_path = render_report(payload, spec=spec, test_examples=splits.test, out_dir=out_dir).html
    store.finish_run(run_id, "finished" if run_results.status == "finished" else "failed", results_path)
    store.close()
    return RunOutcome(results=run_results, results_path=results_path, summary_path=summary_path,
                      reused=tuple(reused), report_path=report_path if report else None)


def train_only(spec: TaskSpec, rung_name: str, *, progress: Progress | None = None) -> Any:
    """Train (or reuse) one ``finetune`` rung's artifact: no evaluation, and the run store is never opened.

    The splits, seed and artifact directory are exactly :func:`run_task`'s, so a later ``run_task``
    of the rung reuses the artifact (``artifact_reused`` in its config). Safe to call from every
    process of an ``accelerate launch`` / ``torchrun`` job: only rank 0 writes the artifact.
    Returns the :class:`~tunewise.training.trainer.TrainedArtifact` (empty provenance on other ranks).
    """
    from .strategies.finetuning import train_rung_artifact

    (rung,) = resolve_rungs(spec, [rung_name])
    if rung.strategy != "finetune":
        raise TaskSpecError(f"rung '{rung.name}' uses strategy '{rung.strategy}'; only 'finetune' rungs can be "
                            "trained on their own (run the others with `tunewise run`).")
    splits = load_splits(spec)
    ctx = PrepareContext(spec=spec, splits=splits, seed=spec.seed, artifacts=spec.store_dir / "artifacts",
                         report=progress)
    return train_rung_artifact(rung, ctx)
