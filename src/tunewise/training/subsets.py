"""Which training examples a tuning run sees: nested, seeded, stratified subsets.

``training_subset(train, per_label=10, seed=0)`` takes the first 10 examples of each label in a
per-label order fixed by the seed; ``fraction``/``limit`` take a prefix of one seeded order of
the whole split. Because every size is a prefix of the same order, the subsets are *nested*:
the 10-per-label set is contained in the 20-per-label set, so a learning curve measures what
more data adds and not which examples were drawn.

Out of scope: the train/dev/test split itself (``tunewise.data``).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

__all__ = ["training_subset", "nested_order", "subset_hash", "describe_subset"]


def _order(examples: Sequence[Any], seed: int) -> list[Any]:
    """A seeded order of ``examples``, stable for the same ids (independent of input order)."""
    keyed = sorted(examples, key=lambda e: hashlib.sha256(f"{seed}\0{e.id}".encode()).hexdigest())
    return keyed


def training_subset(
    train: Sequence[Any],
    *,
    per_label: int | None = None,
    fraction: float | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> list[Any]:
    """The nested subset of ``train`` a rung trains on (all of it when nothing is set).

    ``per_label`` applies to classification (string targets); labels with fewer examples give
    all they have. ``limit`` caps the result after the other rules, keeping label balance by
    taking examples round-robin over labels in the per-label order.
    """
    ordered = _by_rule(train, per_label=per_label, fraction=fraction, seed=seed)
    if limit is not None and len(ordered) > limit:
        ordered = _round_robin(ordered)[:limit]
    random.Random(seed).shuffle(ordered)
    return ordered


def nested_order(train: Sequence[Any], *, per_label: int | None = None, fraction: float | None = None,
                 seed: int = 0) -> list[Any]:
    """The subset ``per_label``/``fraction`` select, in the order ``limit`` takes them: its first ``n`` are the
    examples of ``training_subset(..., limit=n)`` (round-robin over labels, so every prefix is stratified)."""
    return _round_robin(_by_rule(train, per_label=per_label, fraction=fraction, seed=seed))


def _by_rule(train: Sequence[Any], *, per_label: int | None, fraction: float | None, seed: int) -> list[Any]:
    ordered = _order(train, seed)
    if per_label is not None and ordered and isinstance(ordered[0].target, str):
        by_label: dict[str, list[Any]] = defaultdict(list)
        for ex in ordered:
            by_label[ex.target].append(ex)
        chosen = {e.id for group in by_label.values() for e in group[:per_label]}
        ordered = [e for e in ordered if e.id in chosen]
    elif fraction is not None:
        ordered = ordered[: max(1, round(fraction * len(ordered)))]
    return ordered


def _round_robin(ordered: list[Any]) -> list[Any]:
    if not ordered or not isinstance(ordered[0].target, str):
        return ordered
    by_label: dict[str, list[Any]] = defaultdict(list)
    for ex in ordered:
        by_label[ex.target].append(ex)
    out: list[Any] = []
    depth = 0
    while len(out) < len(ordered):
        for group in by_label.values():
            if depth < len(group):
                out.append(group[depth])
        depth += 1
    return out


def subset_hash(examples: Sequence[Any]) -> str:
    """Content hash of a set of examples (ids, texts, targets; order-independent)."""
    rows = sorted(json.dumps([e.id, e.text, e.target], sort_keys=True, default=str) for e in examples)
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


def describe_subset(examples: Sequence[Any]) -> dict[str, Any]:
    counts: dict[str, int] = defaultdict(int)
    for e in examples:
        if isinstance(e.target, str):
            counts[e.target] += 1
    out: dict[str, Any] = {"examples": len(examples), "hash": subset_hash(examples)}
    if counts:
        out.update(labels=len(counts), min_per_label=min(counts.values()), max_per_label=max(counts.values()))
    return out
