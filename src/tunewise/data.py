"""Loading examples, freezing splits, and checking the data.

Three steps, each a public function:

- :func:`read_records` turns one JSONL, CSV or Parquet file into ``(line, record)`` pairs, with
  one-sentence errors that name the file and line.
- :func:`load_splits` builds :class:`Example` objects for train / dev / test from a task spec,
  carves a stratified dev set when none is given, applies ``test_limit``, and hashes the data.
  Every random choice is a hash of (data hash, seed, example id), so splits depend only on the
  data and the seed, never on row order or process state.
- :func:`check_data` is pure: duplicates, train/test leakage (exact and near), label inventory,
  imbalance and a data-volume assessment, returned as :class:`DataChecks`.

Out of scope: the task file itself (``task.py``), rendering prompts from examples (strategies),
and what to do about the warnings (``advise.py`` and the report).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from .errors import DataError

if TYPE_CHECKING:
    from .task import TaskSpec

__all__ = [
    "Example",
    "Splits",
    "DataChecks",
    "read_records",
    "load_splits",
    "check_data",
    "normalize_text",
    "volume_assessment",
]

JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".pq")

FEW_PER_LABEL = 5
HEAVY_IMBALANCE = 10.0
PROMPTING_BELOW = 100
FINETUNING_ABOVE = 1_000


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

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Splits:
    """The frozen train / dev / test examples and how they were made.

    ``dev_origin`` and ``test_origin`` are ``"file"`` when the split came from its own file,
    otherwise a sentence saying how it was carved or subsampled. Carved dev examples keep the
    ``train-`` ids they had in the train file.
    """

    train: tuple[Example, ...]
    dev: tuple[Example, ...]
    test: tuple[Example, ...]
    labels: tuple[str, ...] | None
    data_hash: str
    dev_origin: str
    test_origin: str = "file"


# --------------------------------------------------------------------------- reading files


def read_records(path: Path, *, role: str) -> list[tuple[int, dict]]:
    """Read a JSONL, CSV or Parquet file into ``(line number, record)`` pairs.

    Line numbers are what an editor shows (CSV header = line 1; Parquet: row index + 1).
    Raises :class:`DataError` with one sentence naming the file and line.
    """
    path = Path(path)
    return _parse_records(path, _read_bytes(path, role=role))


def _read_bytes(path: Path, *, role: str) -> bytes:
    suffix = path.suffix.lower()
    if suffix not in JSON_SUFFIXES + CSV_SUFFIXES + PARQUET_SUFFIXES:
        raise DataError(
            f"{path}: unknown file type '{path.suffix or '(none)'}' (use .jsonl, .csv or .parquet)."
        )
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (the task's data.{role}).") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.__class__.__name__}).") from None


def _parse_records(path: Path, raw: bytes) -> list[tuple[int, dict]]:
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        records = _parquet_records(path, raw)
    elif suffix in CSV_SUFFIXES:
        records = _csv_records(path, _decode(path, raw))
    else:
        records = _jsonl_records(path, _decode(path, raw))
    if not records:
        raise DataError(f"{path}: the file is empty (no records to load).")
    return records


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")  # -sig: tolerate the BOM some spreadsheet tools write
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}: line {line} is not UTF-8 text (byte 0x{raw[exc.start]:02x}); re-save the file as UTF-8."
        ) from None


def _jsonl_records(path: Path, text: str) -> list[tuple[int, dict]]:
    records = []
    # split on "\n" only: str.splitlines() would also break on U+2028 inside JSON strings
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            array = number == 1 and line.lstrip().startswith("[")
            hint = "the file looks like one JSON array; write one object per line" if array else exc.msg
            raise DataError(f"{path}: line {number} is not valid JSON ({hint}).") from None
        if not isinstance(record, dict):
            raise DataError(
                f"{path}: line {number} is {_type_name(record)} in JSON, not an object with named fields."
            )
        records.append((number, record))
    return records


def _csv_records(path: Path, text: str) -> list[tuple[int, dict]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    records, end_of_previous = [], 0
    try:
        for row in reader:
            start, end_of_previous = end_of_previous + 1, reader.line_num
            if not row:
                continue
            if header is None:
                header = _csv_header(path, row, start)
            elif len(row) != len(header):
                raise DataError(
                    f"{path}: line {start} has {len(row)} columns but the header has {len(header)}."
                )
            else:
                records.append((start, dict(zip(header, row))))
    except csv.Error as exc:
        raise DataError(f"{path}: line {reader.line_num} is not valid CSV ({exc}).") from None
    return records


def _csv_header(path: Path, row: list[str], line: int) -> list[str]:
    header = [name.strip() for name in row]
    repeated = [name for name, n in Counter(header).items() if n > 1]
    if repeated:
        raise DataError(f"{path}: line {line} (the header) names column '{repeated[0]}' more than once.")
    return header


def _parquet_records(path: Path, raw: bytes) -> list[tuple[int, dict]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(pa.BufferReader(raw)).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: cannot read the file as Parquet ({exc.__class__.__name__}).") from None
    return [(index + 1, row) for index, row in enumerate(rows)]


def _type_name(value: Any) -> str:
    """'a list', 'an object', 'null' ...: for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return {list: "a list", dict: "an object"}.get(type(value), f"a {type(value).__name__}")


# --------------------------------------------------------------------------- building examples


def _field_value(path: Path, line: int, record: dict, name: str) -> Any:
    if name not in record:
        keys = list(record)
        shown = ", ".join(f"'{k}'" for k in keys[:8]) + (", …" if len(keys) > 8 else "")
        raise DataError(f"{path}: line {line} has no field '{name}' (its fields are {shown or 'none'}).")
    value = record[name]
    if value is None:
        raise DataError(f"{path}: line {line} field '{name}' is null (it needs a value).")
    return value


def _wrong_type(path: Path, line: int, name: str, value: Any, wanted: str) -> DataError:
    return DataError(f"{path}: line {line} field '{name}' is {_type_name(value)}, but {wanted}.")


def _render_input(path: Path, line: int, record: dict, fields: Sequence[str]) -> tuple[str, dict]:
    inputs = {}
    for name in fields:
        value = _field_value(path, line, record, name)
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise _wrong_type(path, line, name, value, "input fields must be text or numbers")
        inputs[name] = value
    if len(fields) == 1:
        return str(inputs[fields[0]]), inputs
    return "\n".join(f"{name}: {value}" for name, value in inputs.items()), inputs


def _target(path: Path, line: int, record: dict, name: str, kind: str) -> Any:
    value = _field_value(path, line, record, name)
    if kind == "extraction":
        return _extraction_target(path, line, name, value)
    if isinstance(value, bool):
        value = "true" if value else "false"  # as JSON and CSV spell it
    if not isinstance(value, (str, int, float)):
        wanted = {"classification": "classification labels must be text or numbers"}.get(
            kind, "generation targets must be text"
        )
        raise _wrong_type(path, line, name, value, wanted)
    value = str(value)
    if kind == "classification" and not value.strip():
        raise DataError(f"{path}: line {line} field '{name}' is empty (every example needs a label).")
    return value


def _extraction_target(path: Path, line: int, name: str, value: Any) -> dict:
    if isinstance(value, str):
        try:
            value = json.loads(value)  # CSV cells hold the object as JSON text
        except json.JSONDecodeError:
            raise DataError(
                f"{path}: line {line} field '{name}' is a string that is not valid JSON, "
                "but extraction targets must be JSON objects."
            ) from None
    if not isinstance(value, dict):
        raise _wrong_type(path, line, name, value, "extraction targets must be JSON objects")
    return value


def _content_key(text: str, target: Any) -> str:
    return text + "\x00" + json.dumps(target, sort_keys=True, ensure_ascii=False)


def _build_examples(
    path: Path, records: list[tuple[int, dict]], *, role: str, spec: "TaskSpec"
) -> tuple[Example, ...]:
    seen: Counter[str] = Counter()
    examples = []
    for line, record in records:
        text, inputs = _render_input(path, line, record, spec.data.input_fields)
        target = _target(path, line, record, spec.data.output, spec.kind)
        digest = hashlib.sha1(_content_key(text, target).encode()).hexdigest()[:12]
        seen[digest] += 1
        # exact duplicates get -2, -3 ...: identical content, so the numbering cannot depend on order
        suffix = f"-{seen[digest]}" if seen[digest] > 1 else ""
        examples.append(Example(f"{role}-{digest}{suffix}", text, target, inputs, f"{path}:{line}"))
    return tuple(examples)


# --------------------------------------------------------------------------- labels


def _where(example: Example) -> str:
    path, _, line = example.source.rpartition(":")
    return f"{path}: line {line}"


def _listed_labels(spec: "TaskSpec") -> tuple[str, ...] | None:
    labels = spec.data.labels
    if labels is None:
        return None
    if isinstance(labels, Path):
        labels = _read_label_file(spec.resolve(labels))
        where = str(spec.resolve(spec.data.labels))
    else:
        where = "the task's data.labels"
    labels = [str(label) for label in labels]
    repeated = [label for label, n in Counter(labels).items() if n > 1]
    if not labels or repeated:
        problem = "is empty" if not labels else f"lists '{repeated[0]}' more than once"
        raise DataError(f"{where}: the label list {problem}.")
    return tuple(labels)


def _read_label_file(path: Path) -> list:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (the task's data.labels).") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the label file ({exc.__class__.__name__}).") from None
    try:
        labels = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError):
        language = "JSON" if path.suffix.lower() == ".json" else "YAML"
        raise DataError(f"{path}: the label file is not valid {language}.") from None
    plain = isinstance(labels, list) and all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in labels)
    if not plain:
        found = _type_name(labels)
        raise DataError(f"{path}: the label file must hold a plain list of label strings, found {found}.")
    return labels


def _check_labels(splits: dict[str, tuple[Example, ...]], listed: tuple[str, ...] | None) -> None:
    if listed is not None:
        allowed = set(listed)
        for examples in splits.values():
            for ex in examples:
                if ex.target not in allowed:
                    raise DataError(
                        f"{_where(ex)}: label '{ex.target}' is not among the {len(listed)} labels in data.labels; "
                        "fix the label or add it to data.labels."
                    )
    in_train = sorted({ex.target for ex in splits["train"]})
    for role in ("dev", "test"):
        for ex in splits.get(role, ()):
            if ex.target not in in_train:
                some = ", ".join(f"'{label}'" for label in in_train[:3]) + (", …" if len(in_train) > 3 else "")
                raise DataError(
                    f"{_where(ex)}: label '{ex.target}' never appears in train ({len(in_train)} train labels: "
                    f"{some}); add training examples or fix the label."
                )


# --------------------------------------------------------------------------- splits


def _rank(data_hash: str, seed: int, example_id: str) -> str:
    return hashlib.sha256(f"{data_hash}:{seed}:{example_id}".encode()).hexdigest()


def _by_label(examples: Iterable[Example]) -> dict[str, list[Example]]:
    groups: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        groups[ex.target].append(ex)
    return groups


def _carve_dev(
    train: tuple[Example, ...], *, stratify: bool, fraction: float, data_hash: str, seed: int
) -> set[str]:
    """Ids moved from train to dev: the best-ranked ceil(fraction * n) of each label (or of all)."""
    groups = _by_label(train) if stratify else {"": list(train)}
    chosen: set[str] = set()
    for members in groups.values():
        # keep at least one example of each group in train (a label with one example stays there)
        take = min(math.ceil(fraction * len(members)), len(members) - 1)
        ranked = sorted(members, key=lambda ex: _rank(data_hash, seed, ex.id))
        chosen.update(ex.id for ex in ranked[:take])
    return chosen


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


def load_splits(spec: "TaskSpec") -> Splits:
    """Load, validate and freeze train / dev / test for a task (see the module docstring)."""
    given = {"train": spec.data.train, "dev": spec.data.dev, "test": spec.data.test}
    paths = {role: spec.resolve(path) for role, path in given.items() if path is not None}
    blobs = {role: _read_bytes(path, role=role) for role, path in paths.items()}
    data_hash = _data_hash(blobs, spec)
    loaded = {
        role: _build_examples(paths[role], _parse_records(paths[role], blob), role=role, spec=spec)
        for role, blob in blobs.items()
    }
    classification = spec.kind == "classification"
    listed = _listed_labels(spec) if classification else None
    if classification:
        _check_labels(loaded, listed)
    train, dev, dev_origin = _dev_split(loaded, spec=spec, data_hash=data_hash, paths=paths)
    test, test_origin = _test_split(loaded["test"], spec=spec, data_hash=data_hash)
    labels = (listed or tuple(sorted({ex.target for ex in train}))) if classification else None
    return Splits(train, dev, test, labels, data_hash, dev_origin, test_origin)


def _dev_split(loaded: dict, *, spec: "TaskSpec", data_hash: str, paths: dict[str, Path]) -> tuple:
    train = loaded["train"]
    if "dev" in loaded:
        return train, loaded["dev"], "file"
    stratify = spec.kind == "classification"
    fraction = spec.data.dev_fraction
    chosen = _carve_dev(train, stratify=stratify, fraction=fraction, data_hash=data_hash, seed=spec.seed)
    if not chosen:
        why = "every label has a single training example" if stratify else "train holds a single example"
        raise DataError(
            f"{paths['train']}: cannot carve a dev set because {why}; add training examples or give data.dev."
        )
    how = "stratified by label" if stratify else "hashed random sample"
    origin = f"carved from train: {fraction:.0%} {how}, seed {spec.seed}, {len(chosen)} examples"
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


# --------------------------------------------------------------------------- checks (pure)

_PUNCTUATION = re.compile(r"[^\w\s]|_")
_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Lowercase, strip punctuation, collapse whitespace: the key for exact leakage."""
    return _SPACES.sub(" ", _PUNCTUATION.sub(" ", text.lower())).strip()


def _trigrams(norm: str) -> set[str]:
    padded = f" {norm} "
    return {padded[i : i + 3] for i in range(len(padded) - 2)}


def _trigram_columns(
    texts: list[str], vocab: dict[str, int], *, grow: bool
) -> tuple[list[list[int]], list[int]]:
    """Each text's trigram columns (only those in ``vocab`` unless ``grow``) and its trigram-set size."""
    columns, sizes = [], []
    for text in texts:
        grams = _trigrams(text)
        sizes.append(len(grams))
        if grow:
            columns.append([vocab.setdefault(g, len(vocab)) for g in grams])
        else:
            columns.append([vocab[g] for g in grams if g in vocab])
    return columns, sizes


def _binary_matrix(columns: list[list[int]], width: int) -> Any:
    import numpy as np
    from scipy import sparse

    indptr = np.cumsum([0] + [len(c) for c in columns])
    indices = np.fromiter((c for row in columns for c in row), dtype=np.int64, count=int(indptr[-1]))
    return sparse.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr), shape=(len(columns), width))


def _prefix(columns: list[int], size: int, df: Any, threshold: float) -> list[int]:
    """The query's rarest trigrams that any match at ``threshold`` must share at least one of.

    J(x, y) >= t implies |x & y| >= t|x|, so at most |x| - ceil(t|x|) trigrams of x are missing
    from y: any |x| - ceil(t|x|) + 1 of them include a shared one (prefix filtering). Trigrams
    absent from the corpus fill the first slots; when they alone exceed that, nothing can match.
    """
    keep = size - math.ceil(threshold * size - 1e-9) + 1 - (size - len(columns))
    return sorted(columns, key=lambda c: (df[c], c))[:keep] if keep > 0 else []


def _near_matches(queries: list[str], corpus: list[str], threshold: float) -> list[tuple[int, int, float]]:
    """(query index, corpus index, Jaccard) of each query's best corpus match at or above threshold.

    Jaccard over character-trigram sets. Candidates come from prefix filtering (pairs sharing one
    of the query's rarest trigrams, found with one sparse product); only they are scored exactly,
    so the cost follows rare shared trigrams rather than all query x corpus pairs.
    """
    import numpy as np

    if not queries or not corpus or threshold <= 0:
        return []
    vocab: dict[str, int] = {}
    corpus_cols, corpus_sizes = _trigram_columns(corpus, vocab, grow=True)
    query_cols, query_sizes = _trigram_columns(queries, vocab, grow=False)
    corpus_m = _binary_matrix(corpus_cols, len(vocab))
    query_m = _binary_matrix(query_cols, len(vocab))
    df = np.asarray(corpus_m.sum(axis=0)).ravel()
    prefixes = [_prefix(c, n, df, threshold) for c, n in zip(query_cols, query_sizes)]
    pairs = (_binary_matrix(prefixes, len(vocab)) @ corpus_m.T).tocoo()
    query_n, corpus_n = np.asarray(query_sizes, dtype=np.float64), np.asarray(corpus_sizes, dtype=np.float64)
    # J >= t needs t|x| <= |y| <= |x|/t: drop candidates whose sizes already rule it out
    qn, cn = query_n[pairs.row], corpus_n[pairs.col]
    fits = (cn >= threshold * qn - 1e-9) & (qn >= threshold * cn - 1e-9)
    all_rows, all_cols = pairs.row[fits], pairs.col[fits]
    best: dict[int, tuple[float, int]] = {}
    for start in range(0, len(all_rows), 50_000):  # bounded memory for the row-wise products
        rows, cols = all_rows[start : start + 50_000], all_cols[start : start + 50_000]
        inter = np.asarray(query_m[rows].multiply(corpus_m[cols]).sum(axis=1)).ravel()
        jaccard = inter / (query_n[rows] + corpus_n[cols] - inter)
        hits = np.nonzero(jaccard >= threshold)[0]
        for r, c, j in zip(rows[hits].tolist(), cols[hits].tolist(), jaccard[hits].tolist()):
            current = best.get(r)
            if current is None or (j, -c) > (current[0], -current[1]):  # ties: the earliest corpus text
                best[r] = (j, c)
    return [(r, c, j) for r, (j, c) in sorted(best.items())]


def _quote(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _leakage(
    train: Sequence[Example], test: Sequence[Example], threshold: float
) -> tuple[int, int, list[dict[str, Any]]]:
    seen = {}
    for ex in train:
        seen.setdefault(normalize_text(ex.text), ex)
    seen.pop("", None)  # texts that are all punctuation say nothing about leakage
    exact, rest = [], []
    for ex in test:
        norm = normalize_text(ex.text)
        (exact if norm in seen else rest).append((ex, norm))
    reference = list(seen)
    near = _near_matches([norm for _, norm in rest], reference, threshold)
    exact_quotes = [{"test": _quote(ex.text), "train": _quote(seen[n].text), "similarity": 1.0} for ex, n in exact]
    near_quotes = [
        {"test": _quote(rest[q][0].text), "train": _quote(seen[reference[c]].text), "similarity": round(j, 3)}
        for q, c, j in sorted(near, key=lambda hit: -hit[2])
    ]
    # show both kinds when both exist: three exact, then near ones, topped up with more exact
    quotes = exact_quotes[:3] + near_quotes[:5]
    quotes = (quotes + exact_quotes[3:])[:5]
    return len(exact), len(near), quotes


def _duplicates(examples: Sequence[Example]) -> tuple[int, int]:
    targets: dict[str, set[str]] = defaultdict(set)
    for ex in examples:
        targets[ex.text].add(json.dumps(ex.target, sort_keys=True))
    conflicting = sum(1 for t in targets.values() if len(t) > 1)
    return len(examples) - len(targets), conflicting


def volume_assessment(n: int) -> str:
    """One sentence placing the labelled volume against the prompting / fine-tuning thresholds."""
    if n < PROMPTING_BELOW:
        return (f"{n:,} labelled examples (train + dev) is under {PROMPTING_BELOW}: this volume favours prompting "
                "(few-shot), and fine-tuning is unlikely to pay off.")
    if n > FINETUNING_ABOVE:
        return (f"{n:,} labelled examples (train + dev) is over {FINETUNING_ABOVE:,}: this volume favours fine-tuning "
                "or a trained baseline, though prompting is still measured.")
    return (f"{n:,} labelled examples (train + dev) is in the grey zone between {PROMPTING_BELOW} and "
            f"{FINETUNING_ABOVE:,}, where prompting and fine-tuning should both be measured.")


def _label_stats(splits: Splits) -> tuple[dict[str, dict[str, int]], float | None, int | None]:
    order = list(splits.labels or sorted({ex.target for ex in splits.train}))
    counts = {}
    for role in ("train", "dev", "test"):
        c = Counter(ex.target for ex in getattr(splits, role))
        counts[role] = {label: c.get(label, 0) for label in order}
    train = counts["train"]
    nonzero = [n for n in train.values() if n > 0]
    ratio = round(max(nonzero) / min(nonzero), 2) if nonzero else None
    return counts, ratio, (min(train.values()) if train else None)


def _label_warnings(train_counts: dict[str, int], ratio: float | None) -> list[str]:
    warnings = []
    few = sorted((n, label) for label, n in train_counts.items() if n < FEW_PER_LABEL)
    if few:
        named = ", ".join(f"'{label}' ({n})" for n, label in few[:5]) + (", …" if len(few) > 5 else "")
        warnings.append(f"{len(few)} label(s) have fewer than {FEW_PER_LABEL} training examples: {named}.")
    if ratio is not None and ratio > HEAVY_IMBALANCE:
        most = max(train_counts, key=train_counts.get)
        least = min((label for label in train_counts if train_counts[label]), key=train_counts.get)
        warnings.append(
            f"Train labels are heavily imbalanced ('{most}' {train_counts[most]} vs '{least}' {train_counts[least]}, "
            f"ratio {ratio:g}); read macro-F1 alongside accuracy."
        )
    return warnings


def check_data(splits: Splits, *, kind: str, near_threshold: float = 0.9) -> DataChecks:
    """Describe the splits and warn about what would make the comparison misleading (pure)."""
    roles = {"train": splits.train, "dev": splits.dev, "test": splits.test}
    dupes = {role: _duplicates(examples) for role, examples in roles.items()}
    exact, near, quotes = _leakage(splits.train + splits.dev, splits.test, near_threshold)
    warnings = []
    label_counts = ratio = min_per_label = None
    if kind == "classification":
        label_counts, ratio, min_per_label = _label_stats(splits)
        warnings += _label_warnings(label_counts["train"], ratio)
    for role, (_, conflicting) in dupes.items():
        if conflicting:
            warnings.append(f"{role} has {conflicting} text(s) that appear more than once with different targets.")
    if exact or near:
        warnings.append(
            f"{exact + near} of {len(splits.test)} test examples also occur in train/dev ({exact} exact after "
            f"normalising, {near} near-duplicates with trigram Jaccard >= {near_threshold:g}); "
            "scores on them measure recall, not skill."
        )
    return DataChecks(
        counts={role: len(examples) for role, examples in roles.items()},
        exact_duplicates={role: d for role, (d, _) in dupes.items()},
        leakage_exact=exact,
        leakage_near=near,
        leakage_examples=quotes,
        label_counts=label_counts,
        imbalance_ratio=ratio,
        min_per_label=min_per_label,
        volume_assessment=volume_assessment(len(splits.train) + len(splits.dev)),
        warnings=warnings,
        conflicting_duplicates={role: c for role, (_, c) in dupes.items()},
        near_threshold=near_threshold,
    )
