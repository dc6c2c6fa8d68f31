"""The data types: an :class:`Example`, the frozen :class:`Splits`, and :class:`DataChecks`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class Example:
    """One labelled example.

    ``id`` is stable across runs (derived from the split and content, not from row order);
    ``text`` is the rendered input (the single input field's value, or ``"field: value"`` lines
    when several input fields are used); ``target`` is a label string (classification), a dict
    (extraction) or a string (generation); ``source`` is ``"path:line"`` for error messages.
    """

    id: str
    text: str
    target: Any
    inputs: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""


@dataclass(frozen=True)
class DataChecks:
    """What the data looks like, recorded with every run (JSON-serialisable via ``to_json``).

    ``leakage_*`` compare test against train + dev (everything a candidate may learn from);
    ``leakage_examples`` holds up to five ``{"test", "train", "similarity"}`` quotes.

    Repeated input texts (exact, whatever their targets): ``exact_duplicates`` counts the extra rows per
    split, ``duplicate_groups`` the texts that occur more than once in a split and ``duplicate_rows`` the
    rows they hold; ``cross_split_duplicates`` counts texts found in two splits (``"train/dev"``,
    ``"train/test"``, ``"dev/test"``); ``duplicate_examples`` holds up to five
    ``{"text", "rows" (per split), "targets" (distinct), "where" (up to five "path:line")}``. Rows are
    never merged or dropped: these only say where they are.
    """

    counts: dict[str, int]
    exact_duplicates: dict[str, int]
    leakage_exact: int
    leakage_near: int
    leakage_examples: list[dict[str, Any]]
    label_counts: dict[str, dict[str, int]] | None
    imbalance_ratio: float | None
    min_per_label: int | None
    volume_assessment: str
    warnings: list[str]
    conflicting_duplicates: dict[str, int] = field(default_factory=dict)
    near_threshold: float = 0.9
    duplicate_groups: dict[str, int] = field(default_factory=dict)
    duplicate_rows: dict[str, int] = field(default_factory=dict)
    cross_split_duplicates: dict[str, int] = field(default_factory=dict)
    duplicate_examples: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Splits:
    """The frozen train / dev / test examples and how they were made.

    ``dev_origin`` and ``test_origin`` are ``"file"`` when the split came from its own file,
    otherwise a sentence saying how it was carved or subsampled. Carved dev examples keep the
    ``train-`` ids they had in the train file. ``unlabelled`` holds ``data.unlabelled``'s inputs (targets None),
    the pool a distill rung's teacher labels, hashed on its own (``pool_hash``) so that adding a pool changes
    neither the data hash nor the frozen splits. ``sources`` says where each role's rows came from (a file's path,
    or an ``hf://`` reference with its row count and ``datasets`` fingerprint).
    """

    train: tuple[Example, ...]
    dev: tuple[Example, ...]
    test: tuple[Example, ...]
    labels: tuple[str, ...] | None
    data_hash: str
    dev_origin: str
    test_origin: str = "file"
    unlabelled: tuple[Example, ...] = ()
    pool_hash: str | None = None
    sources: Mapping[str, str] = field(default_factory=dict)
