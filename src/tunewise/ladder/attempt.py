"""One rung, scored: prepare its candidate, screen it on nested test subsets when asked (early rejection),
evaluate it on the frozen test split within a deadline, and measure how stable a fixed-demonstration prompt
is. Returns a :class:`~tunewise.results.RungResult` (``finished``, or ``skipped`` with the reason).

Every model call goes through the call cache, so the full evaluation after a screen, a stability variant,
and a rerun after an interruption reuse the calls already made. Errors are the lifecycle's business
(``lifecycle.py``): a user error raised here fails this rung only.

Out of scope: which rung to run (``walk.py``), the store's rung records (``lifecycle.py``), metrics.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..evaluation.evaluator import evaluate, usage_summary
from ..results import RungResult
from ..strategies.base import Candidate, PrepareContext, get_strategy
from ..task import RungSpec
from .catalogue import needs_llm
from .context import RunContext
from .policy import Action, screen_subset, stratified_order

__all__ = ["attempt", "past_deadline", "single_requests"]


class _OutOfBudget(Exception):
    def __init__(self, done: int, total: int, projected_s: float) -> None:
        super().__init__(f"{done}/{total}")
        self.done, self.total, self.projected_s = done, total, projected_s


def _prepare_context(run: RunContext, rung: RungSpec, backend: Any) -> PrepareContext:
    from ..backends.cached import CachedBackend

    def evaluate_point(candidate: Candidate, label: str) -> tuple[Any, tuple[Any, ...]]:
        """How a strategy scores an intermediate candidate (a learning-curve point) on the test split."""
        ev = evaluate(candidate, run.test, backend=None, progress=run.report(f"{label}: test"))
        return run.score(ev.predictions)["metrics"][run.metric], ev.predictions

    return PrepareContext(spec=run.spec_for(rung), splits=run.splits, backend=backend, embed=run.embed,
                          seed=run.spec.seed,
                          artifacts=run.spec.store_dir / "artifacts",
                          wrap_backend=lambda inner: CachedBackend(inner, run.store),
                          evaluate=evaluate_point, report=run.progress, task=run.spec)


def attempt(run: RunContext, rung: RungSpec, *, screen: Sequence[int] = (), best: tuple[str, float] | None = None,
            deadline_s: float | None = None, delta: float = 0.01) -> RungResult:
    """Prepare and score one rung on the test split.

    ``screen`` (subset sizes) and ``best`` (name, CI low of the best finished rung): score nested
    stratified subsets first and return a ``skipped`` result with ``extras["early_rejection"]``
    when the rung cannot win. ``deadline_s``: seconds the evaluation may take before it stops
    (a ``skipped`` result; every call made is in the call cache).
    """
    backend = run.model_for(rung.model) if needs_llm(rung) else None
    ctx = _prepare_context(run, rung, backend)
    start = time.perf_counter()
    candidate = get_strategy(rung.strategy)(rung, ctx)
    prepare_s = time.perf_counter() - start

    evaluating = start  # when the test evaluation began (after preparing and any screen); set below

    def report(done: int, total: int) -> None:
        if run.progress:
            run.progress(rung.name, done, total)
        elapsed, fixed = time.perf_counter() - start, evaluating - start
        if deadline_s is not None and past_deadline(elapsed, done, total, deadline_s, fixed_s=fixed):
            raise _OutOfBudget(done, total, projected(elapsed, done, total, fixed_s=fixed))

    def skipped(reason: str, **fields: Any) -> RungResult:
        return RungResult(name=rung.name, strategy=rung.strategy, status="skipped", config=candidate.config,
                          config_hash=rung.config_hash(), reason=reason, model=run.model_id(rung), **fields)

    try:
        if screen and best is not None:
            rejected = _screen(run, rung, candidate, backend, screen, best, delta)
            if rejected is not None:
                preds, action = rejected
                extras: dict[str, Any] = {"early_rejection": action.to_json()}
                stability = _stability(run, rung, ctx, candidate, backend, preds)
                if stability:
                    extras["stability"] = stability
                return skipped(action.reason, prepare_s=prepare_s, extras=extras,
                               usage=usage_summary(preds, wall_s=time.perf_counter() - start - prepare_s))
        evaluating = time.perf_counter()
        ev = evaluate(candidate, run.test, backend=backend, progress=report)
        single: dict[str, Any] = {}
        if any(p.batch_size > 1 for p in ev.predictions):
            left = None if deadline_s is None else deadline_s - (time.perf_counter() - start)
            allowance = SINGLE_REQUEST_SECONDS if left is None else min(SINGLE_REQUEST_SECONDS, max(0.0, left))
            single = single_requests(list(run.splits.dev or run.splits.train), candidate, backend,
                                     allowance_s=allowance)
    except _OutOfBudget as out:
        # the examples scored so far, replayed from the call cache: what they cost tells the policy this model's pace
        elapsed = time.perf_counter() - start
        partial = evaluate(candidate, run.test[:out.done], backend=backend).predictions
        return skipped(f"stopped to stay within budget after {out.done} of {out.total} test examples: at the pace so "
                       f"far the rung would take about {out.projected_s:.0f} s, more than the {deadline_s:.0f} s "
                       "left; the calls made are cached for a later run with more budget",
                       prepare_s=evaluating - start, usage=usage_summary(partial, wall_s=elapsed - (evaluating - start)))
    finally:
        candidate.close()
    scored = run.score(ev.predictions)
    extras = dict(candidate.extras)
    stability = _stability(run, rung, ctx, candidate, backend, ev.predictions)
    if stability:
        extras["stability"] = stability
    return RungResult(
        name=rung.name, strategy=rung.strategy, status="finished", config=candidate.config,
        config_hash=rung.config_hash(), metrics=scored["metrics"], primary_metric=run.metric,
        usage={**usage_summary(ev.predictions, wall_s=ev.wall_s), **single}, per_label=scored.get("per_label"),
        confusions=scored.get("confusions"), parse=scored.get("parse"), prepare_s=prepare_s,
        predictions=ev.predictions, extras=extras, model=run.model_id(rung),
    )


#: requests served one at a time to measure the latency a single user sees ...
SINGLE_REQUESTS = 16
#: ... within this many seconds (fewer when the rung's deadline is closer), and at least this many requests
SINGLE_REQUEST_SECONDS = 30.0
MIN_SINGLE_REQUESTS = 3
#: an evaluation past its deadline still finishes when the rest is projected to take at most this share more
FINISH_TOLERANCE = 0.1


def past_deadline(elapsed: float, done: int, total: int, deadline_s: float, *, fixed_s: float = 0.0) -> bool:
    """Whether an evaluation ``done`` of ``total`` examples in, ``elapsed`` seconds after the rung started (``fixed_s``
    of them before the evaluation: preparing, training), should stop: when the whole evaluation, projected at the pace
    so far, ends more than :data:`FINISH_TOLERANCE` past the deadline. It cannot finish in the budget, so every
    further call would be spent for nothing (a slow model is found out after its first chunk, not at the deadline);
    and one a few examples short of the end finishes instead of throwing the result away."""
    if done >= total or done <= 0:
        return False
    return projected(elapsed, done, total, fixed_s=fixed_s) > deadline_s * (1 + FINISH_TOLERANCE)


def projected(elapsed: float, done: int, total: int, *, fixed_s: float = 0.0) -> float:
    """Seconds the rung takes when the rest of its evaluation keeps the pace of its first ``done`` examples."""
    return fixed_s + (elapsed - fixed_s) / done * total


def single_requests(examples: Sequence[Any], candidate: Candidate, backend: Any, *,
                    allowance_s: float = SINGLE_REQUEST_SECONDS) -> dict[str, Any]:
    """Latency of serving one request at a time, measured when the evaluation batched requests (a batched call's
    time shared by its requests understates what one user waits): the first of ``examples`` (the dev split, never
    the test split, whose calls are cached) answered one per call, up to :data:`SINGLE_REQUESTS` and while within
    ``allowance_s`` (at least :data:`MIN_SINGLE_REQUESTS`). The sample's wall time is recorded: the budget counts it.
    An evaluation whose every request was its own call (an API model) already measured this, and makes no extra
    calls."""
    from ..evaluation.stats import summarize

    start, latencies = time.perf_counter(), []
    for e in list(examples)[:SINGLE_REQUESTS]:
        if len(latencies) >= MIN_SINGLE_REQUESTS and time.perf_counter() - start >= allowance_s:
            break
        latencies.append(evaluate(candidate, [e], backend=backend).predictions[0].latency_s)
    if not latencies:
        return {}
    stopped = "" if len(latencies) == min(SINGLE_REQUESTS, len(examples)) else (
        f", stopped at its {allowance_s:.0f} s allowance")
    return {"single_request_latency_s": summarize(latencies),
            "single_request_n": len(latencies), "single_request_wall_s": time.perf_counter() - start,
            "single_request_basis": f"{len(latencies)} dev examples answered one per call{stopped} (wall time of the "
                                    "call; a call replayed from the call cache keeps the time measured when it was "
                                    "made)"}


def _screen_order(run: RunContext) -> list[int]:
    """The test split in the stratified order early rejection scores it (nested subsets are prefixes)."""
    strata = [e.target if run.spec.kind == "classification" else "" for e in run.test]
    return stratified_order([e.id for e in run.test], strata, seed=run.spec.seed)


def _screen(run: RunContext, rung: RungSpec, candidate: Candidate, backend: Any, sizes: Sequence[int],
            best: tuple[str, float], delta: float) -> tuple[tuple[Any, ...], Action] | None:
    """Successive halving: score growing nested stratified subsets; the rejection, or None to score fully.

    Every call goes through the call cache, so the full evaluation that follows reuses these.
    """
    test, order = run.test, _screen_order(run)
    preds: list[Any] = []
    calls = 0
    for size in sizes:
        chunk = [test[i] for i in order[len(preds):size]]
        before = (backend.hits + backend.misses) if backend is not None else 0
        done = len(preds)
        report = ((lambda d, t, done=done, size=size: run.progress(f"{rung.name}: screen", done + d, size))
                  if run.progress else None)
        preds.extend(evaluate(candidate, chunk, backend=backend, progress=report).predictions)
        calls += ((backend.hits + backend.misses) if backend is not None else 0) - before
        subset = [test[i] for i in order[:size]]
        seconds = sum(p.latency_s / max(1, p.batch_size) for p in preds)
        action = screen_subset(rung.name, [bool(c) for c in run.correct(preds, subset)], best_name=best[0],
                               best_low=best[1], n_test=len(test), calls=calls, seconds=seconds, delta=delta,
                               metric=run.metric)
        if action is not None:
            return tuple(preds), action
    return None


def _stability(run: RunContext, rung: RungSpec, ctx: PrepareContext, candidate: Candidate, backend: Any,
               predictions: Sequence[Any]) -> dict[str, Any] | None:
    """How much a fixed-demonstration prompt rung's score moves with the demonstrations drawn and their order.

    For ``stability: n`` (a prompt parameter), the rung is re-prepared ``n`` times with other draw
    seeds (new demonstrations, new order) and ``n`` times with the same demonstrations shuffled,
    and each variant is scored on the same stratified test subset: the one early rejection
    stopped at, else a quarter of the test split (at least 60 examples). Every call is cached.
    """
    n = candidate.stability_draws
    if n <= 0:
        return None
    test = run.test
    size = len(predictions) if len(predictions) < len(test) else min(len(test), max(60, len(test) // 4))
    subset = [test[i] for i in _screen_order(run)[:size]]
    by_id = {p.example_id: p for p in predictions}
    base_seed = candidate.config.get("seed", run.spec.seed)
    variants = [("as scored", base_seed, None, [by_id[e.id] for e in subset])]
    params = {k: v for k, v in rung.params.items() if k not in ("seed", "order_seed", "stability")}
    for i in range(1, n + 1):
        for kind, extra in (("re-drawn", {"seed": base_seed + i}),
                            ("re-ordered", {"seed": base_seed, "order_seed": base_seed + i})):
            variant = rung.model_copy(update={"name": f"{rung.name}~{kind}{i}", "params": {**params, **extra}})
            other = get_strategy(rung.strategy)(variant, ctx)
            preds = evaluate(other, subset, backend=backend,
                             progress=run.report(f"{rung.name}: stability {kind} {i}")).predictions
            variants.append((kind, extra["seed"], extra.get("order_seed"), list(preds)))
    rows = []
    for kind, seed, order_seed, preds in variants:
        correct = run.correct(preds, subset)
        rows.append({"variant": kind, "seed": seed, "order_seed": order_seed,
                     "value": float(np.mean(correct)), "correct": int(np.sum(correct)),
                     "outputs": [p.output for p in preds]})
    values = [r["value"] for r in rows]
    outputs = [r["outputs"] for r in rows]
    same = float(np.mean([len({str(o[j]) for o in outputs}) == 1 for j in range(size)]))
    return {"subset": size, "example_ids": [e.id for e in subset], "metric": run.metric,
            "variants": rows, "spread": max(values) - min(values),
            "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, "same_answer": same}
