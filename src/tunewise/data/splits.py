"""Freezing train / dev / test: the stratified dev carve, ``test_limit`` and the data hash.

Every random choice is a hash of (data hash, seed, example id), so splits depend only on the
data and the seed, never on row order or process state.

Repeated texts: rows whose rendered input text is identical form one group, whatever their targets,
and the dev carve moves whole groups, so no input is in both train and dev (a dev score on an input
the candidates learnt from measures recall; one text with two labels is reported by ``check_data``,
never resolved here). Every row is kept: nothing is merged or dropped.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from ..errors import DataError
from .examples import Example, Splits
from .hub import HubData, read_hub_rows
from .reading import (
    _build_examples,
    _check_labels,
    _listed_labels,
    _parse_records,
    _read_bytes,
)

if TYPE_CHECKING:
    from ..task import TaskSpec


# --------------------------------------------------------------------------- splits


def _rank(data_hash: str, seed: int, example_id: str) -> str:
    return hashlib.sha256(f"{data_hash}:{seed}:{example_id}".encode()).hexdigest()


def _by_label(examples: Iterable[Example]) -> dict[str, list[Example]]:
    groups: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        groups[ex.target].append(ex)
    return groups


def _groups(examples: Iterable[Example]) -> list[list[Example]]:
    """Examples with the same input text, in file order; each group ranked by its smallest (content-derived) id."""
    by_text: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        by_text[ex.text].append(ex)
    return list(by_text.values())


def _carve_dev(
    train: tuple[Example, ...], *, stratify: bool, fraction: float, data_hash: str, seed: int
) -> set[str]:
    """Ids moved from train to dev: whole groups of one input text, best-ranked first, within each label's quota.

    A label's quota is ceil(fraction * its rows), less one row that must stay in train (a label with one
    example stays there). Groups are walked in hash order and taken when they fit every quota they touch
    and leave each of their labels in train; for singletons this is the best-ranked quota of each label.
    A label that no group fits (all its groups are larger than its quota) gets its smallest group that
    leaves its labels in train, so each label with two or more texts is still represented in dev.
    """
    label = (lambda ex: ex.target) if stratify else (lambda ex: "")  # noqa: E731
    left = Counter(label(ex) for ex in train)  # rows of each label still in train
    quota = {name: min(math.ceil(fraction * n), n - 1) for name, n in left.items()}
    taken: Counter[str] = Counter()
    groups = sorted(_groups(train), key=lambda g: _rank(data_hash, seed, min(ex.id for ex in g)))
    counts = [Counter(label(ex) for ex in group) for group in groups]
    chosen: set[int] = set()

    def keeps_train(i: int) -> bool:
        return all(left[name] > n for name, n in counts[i].items())

    def take(i: int) -> None:
        chosen.add(i)
        taken.update(counts[i])
        left.subtract(counts[i])

    for i in range(len(groups)):
        if keeps_train(i) and all(taken[name] + n <= quota[name] for name, n in counts[i].items()):
            take(i)
    for name in sorted(quota):
        if quota[name] and not taken[name]:
            fits = [i for i in range(len(groups)) if i not in chosen and name in counts[i] and keeps_train(i)]
            if fits:
                take(min(fits, key=lambda i: (len(groups[i]), i)))
    return {ex.id for i in chosen for ex in groups[i]}


def _quotas(sizes: dict[str, int], limit: int, data_hash: str, seed: int) -> dict[str, int]:
    """Largest-remainder allocation: each label gets the floor or ceiling of its proportional share."""
    total = sum(sizes.values())
    shares = {label: limit * n / total for label, n in sizes.items()}
    quotas = {label: math.floor(share) for label, share in shares.items()}
    left = limit - sum(quotas.values())
    # ties between equal remainders are broken in hash order, not alphabetically
    order = sorted(sizes, key=lambda label: (quotas[label] - shares[label], _rank(data_hash, seed, label)))
    for label in order[:left]:
        quotas[label] += 1
    return quotas


def _limit_test(test: tuple[Example, ...], *, limit: int, stratify: bool, data_hash: str, seed: int) -> set[str]:
    groups = _by_label(test) if stratify else {"": list(test)}
    quotas = _quotas({label: len(m) for label, m in groups.items()}, limit, data_hash, seed)
    keep: set[str] = set()
    for label, members in groups.items():
        ranked = sorted(members, key=lambda ex: _rank(data_hash, seed, ex.id))
        keep.update(ex.id for ex in ranked[: quotas[label]])
    return keep


def _data_hash(blobs: dict[str, bytes], spec: "TaskSpec") -> str:
    h = hashlib.sha256()
    for role, blob in blobs.items():
        h.update(f"{role}:{len(blob)}:".encode())
        h.update(hashlib.sha256(blob).digest())
    h.update(json.dumps({"input": list(spec.data.input_fields), "output": spec.data.output}).encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class _Source:
    """One role's data as read: where (a path, or an hf:// reference's text), the bytes hashed, and the records
    (None for a file until it is parsed, after every file was read)."""

    where: Path | str
    blob: bytes
    records: list[tuple[int, dict]] | None
    provenance: str

    def parsed(self) -> list[tuple[int, dict]]:
        return self.records if self.records is not None else _parse_records(Path(self.where), self.blob)


def _read(spec: "TaskSpec", role: str, given: Path | HubData) -> _Source:
    """A file's bytes, or an hf:// dataset's rows with their canonical JSON as the bytes hashed."""
    if isinstance(given, HubData):
        rows = read_hub_rows(given, base_dir=spec.base_dir, role=role)
        return _Source(str(given), rows.blob, rows.records, rows.provenance)
    path = spec.resolve(given)
    assert path is not None
    return _Source(path, _read_bytes(path, role=role), None, str(path))


def load_splits(spec: "TaskSpec") -> Splits:
    """Load, validate and freeze train / dev / test for a task (see the module docstring)."""
    given = {"train": spec.data.train, "dev": spec.data.dev, "test": spec.data.test}
    sources = {role: _read(spec, role, value) for role, value in given.items() if value is not None}
    data_hash = _data_hash({role: source.blob for role, source in sources.items()}, spec)
    loaded = {
        role: _build_examples(source.where, source.parsed(), role=role, spec=spec)
        for role, source in sources.items()
    }
    classification = spec.kind == "classification"
    listed = _listed_labels(spec) if classification else None
    if classification:
        _check_labels(loaded, listed)
    train, dev, dev_origin = _dev_split(loaded, spec=spec, data_hash=data_hash, where=sources["train"].where)
    test, test_origin = _test_split(loaded["test"], spec=spec, data_hash=data_hash)
    labels = (listed or tuple(sorted({ex.target for ex in train}))) if classification else None
    pool, pool_hash, pool_source = _pool(spec)
    provenance = {role: source.provenance for role, source in sources.items()}
    if pool_source is not None:
        provenance["unlabelled"] = pool_source
    return Splits(train, dev, test, labels, data_hash, dev_origin, test_origin, pool, pool_hash, provenance)


def _pool(spec: "TaskSpec") -> tuple[tuple[Example, ...], str | None, str | None]:
    """``data.unlabelled``'s inputs (their output field, if any, is not read), the pool's own hash and its source."""
    if spec.data.unlabelled is None:
        return (), None, None
    source = _read(spec, "unlabelled", spec.data.unlabelled)
    pool = _build_examples(source.where, source.parsed(), role="pool", spec=spec, labelled=False)
    return pool, _data_hash({"unlabelled": source.blob}, spec), source.provenance


def _dev_split(loaded: dict, *, spec: "TaskSpec", data_hash: str, where: Path | str) -> tuple:
    train = loaded["train"]
    if "dev" in loaded:
        return train, loaded["dev"], "file"
    stratify = spec.kind == "classification"
    fraction = spec.data.dev_fraction
    chosen = _carve_dev(train, stratify=stratify, fraction=fraction, data_hash=data_hash, seed=spec.seed)
    if not chosen:
        why = "every label has a single training example" if stratify else "train holds a single example"
        raise DataError(
            f"{where}: cannot carve a dev set because {why}; add training examples or give data.dev."
        )
    how = "stratified by label" if stratify else "hashed random sample"
    origin = f"carved from train: {fraction:.0%} {how}, seed {spec.seed}, {len(chosen)} examples"
    repeated = [group for group in _groups(train) if len(group) > 1]
    if repeated:
        rows = sum(map(len, repeated))
        texts = f"{len(repeated)} repeated text{'s' if len(repeated) > 1 else ''}"
        origin += f"; {texts} ({rows} rows) kept whole in train or dev"
    return (
        tuple(ex for ex in train if ex.id not in chosen),
        tuple(ex for ex in train if ex.id in chosen),
        origin,
    )


def _test_split(test: tuple[Example, ...], *, spec: "TaskSpec", data_hash: str) -> tuple:
    limit = spec.data.test_limit
    if limit is None or limit >= len(test):
        return test, "file"
    stratify = spec.kind == "classification"
    keep = _limit_test(test, limit=limit, stratify=stratify, data_hash=data_hash, seed=spec.seed)
    how = "stratified subset" if stratify else "hashed random subset"
    return tuple(ex for ex in test if ex.id in keep), f"{how} of {limit} of {len(test)} test examples, seed {spec.seed}"
