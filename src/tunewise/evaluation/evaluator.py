"""Run a candidate over the frozen test split in chunks, with progress, timing and usage.

The candidate does the model calls (through the cached backend, so an interrupted evaluation
resumes without repeating a finished call); this module only feeds it chunks, times it and
summarises tokens and latency. Throughput is computed from the per-request model time recorded
with each call, so it stays truthful when calls are replayed from the cache after a resume.

Out of scope: metrics (``scoring.py``), which rungs to run (``ladder/``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .records import Prediction
from .stats import summarize

__all__ = ["Evaluation", "evaluate", "usage_summary", "serving_latency"]

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Evaluation:
    predictions: tuple[Prediction, ...]
    wall_s: float  # wall time of this evaluation in this process (cache replays are fast)


def evaluate(
    candidate: Any,
    examples: Sequence[Any],
    *,
    backend: Any = None,
    chunk_size: int = 16,
    progress: Progress | None = None,
) -> Evaluation:
    """Predict every example; chunks keep progress moving and bound what a kill can lose."""
    size = chunk_size if candidate.uses_llm else max(chunk_size, 256)
    start = time.perf_counter()
    preds: list[Prediction] = []
    for i in range(0, len(examples), size):
        chunk = examples[i: i + size]
        out = candidate.predict(chunk, backend=backend if candidate.uses_llm else None)
        if len(out) != len(chunk):
            raise RuntimeError(f"candidate {candidate.rung} returned {len(out)} predictions for {len(chunk)} examples")
        preds.extend(out)
        if progress:
            progress(len(preds), len(examples))
    return Evaluation(predictions=tuple(preds), wall_s=time.perf_counter() - start)


def usage_summary(predictions: Sequence[Prediction], *, wall_s: float) -> dict[str, Any]:
    """Tokens and latency per request (mean, p50, p95, max) and examples per second."""
    per_request = [p.latency_s / max(1, p.batch_size) for p in predictions]  # model time per request
    model_s = sum(per_request)
    n = len(predictions)
    called = [t for t, p in zip(per_request, predictions) if p.model_call]
    skipped = {} if len(called) == n else {  # e.g. every retrieved demonstration had the same label
        "without_model_call": n - len(called),
        "called_request_latency_s": summarize(called),
    }
    return {
        "requests": n,
        "prompt_tokens": summarize([p.prompt_tokens for p in predictions]),
        "completion_tokens": summarize([p.completion_tokens for p in predictions]),
        "cached_prompt_tokens": summarize([p.cached_tokens for p in predictions]),
        "latency_s": summarize([p.latency_s for p in predictions]),
        "request_latency_s": summarize(per_request),
        "model_seconds": model_s,
        "examples_per_s": n / model_s if model_s > 0 else None,
        "wall_s": wall_s,
        "basis": "latency: wall time of the model call that served the request, as measured when it was made "
        "(a batched call's requests all wait for it); request latency: that time divided by the requests the call "
        "served, the latency of serving one request at a time (approximately); examples/s = requests / model "
        "time, where a batched call's time is shared evenly by its requests",
        "errors": sum(p.error is not None for p in predictions),
        "truncated": sum(p.truncated for p in predictions),  # answers cut off at their token budget
        **skipped,
    }


def serving_latency(usage: dict[str, Any]) -> dict[str, float]:
    """The latency one user waits (p50, p95, seconds): requests measured one per call when the rung has them
    (``single_request_latency_s``), else a batched call's time shared by its requests, else the call's time."""
    return usage.get("single_request_latency_s") or usage.get("request_latency_s") or usage.get("latency_s") or {}
