"""Reading JSONL, CSV and Parquet into examples, with one-sentence errors naming file, line and field.

Out of scope: splitting (``splits.py``) and checks (``checks.py``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ..errors import DataError
from .examples import Example

if TYPE_CHECKING:
    from ..task import TaskSpec

JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_FIELD_LIMIT = 2**31 - 1  # csv's default (131,072 characters) would refuse long but valid cells


# --------------------------------------------------------------------------- messages


def shown(text: str, limit: int | None = 60) -> str:
    """A user's text inside a one-line message: control characters escaped (``\\n``), cut to ``limit`` characters."""
    head = text if limit is None else text[: limit + 1]
    escaped = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in head)
    if limit is None or (len(escaped) <= limit and len(text) <= limit):
        return escaped
    return escaped[: limit - 1] + "…"


class RepeatedKey(ValueError):
    """A JSON object names the same key twice (``json.loads`` would silently keep the last value)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise RepeatedKey(key)
        obj[key] = value
    return obj


def loads_json(text: str) -> Any:
    """``json.loads`` that refuses repeated keys; raises :class:`RepeatedKey`, ``ValueError`` or ``RecursionError``."""
    return json.loads(text, object_pairs_hook=_unique_keys)


_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def lone_surrogate(text: str) -> str | None:
    """The first lone surrogate in ``text`` (as JSON's or YAML's "\\ud800" escape makes), or None."""
    found = _SURROGATE.search(text)
    return found.group() if found else None


def surrogate_at(value: Any) -> tuple[str, str] | None:
    """``(where, character)`` of the first lone surrogate in a parsed JSON value, keys included; iterative.

    JSON may spell half of a UTF-16 pair (``"\\ud800"``) and Python keeps it, but it is not a character:
    it cannot be hashed as UTF-8, saved, tokenised or shown.
    """
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            found = lone_surrogate(item)
            if found:
                return where, found
        elif isinstance(item, dict):
            for key, inner in reversed(list(item.items())):
                here = f"{where}.{key}" if where else str(key)
                found = lone_surrogate(key) if isinstance(key, str) else None
                if found:
                    return here, found
                stack.append((here, inner))
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", inner) for i, inner in reversed(list(enumerate(item))))
    return None


def _surrogate_error(path: Path, line: int, field: str, char: str) -> DataError:
    return DataError(
        f"{_at(path, line)} field '{shown(field)}' holds {ascii(char)[1:-1]}, half of a UTF-16 surrogate pair, "
        "which is not a character; fix its escape."
    )


def json_problem(exc: BaseException) -> str:
    """Why text is not JSON we can read, in a few words (for ``... is not valid JSON (<why>)``)."""
    if isinstance(exc, RepeatedKey):
        return f"it repeats the key '{shown(exc.key)}' in one object"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, json.JSONDecodeError):
        return exc.msg
    if "digits" in str(exc):  # int('9' * 5000): CPython's limit on integer text
        return f"a number with more than {sys.get_int_max_str_digits()} digits"
    return shown(str(exc))


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
    except ValueError:  # "embedded null byte": no file can have this name
        raise DataError(f"{shown(str(path), None)}: cannot read the file (its name holds a NUL character).") from None


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
            record = loads_json(line)
        except RepeatedKey as exc:
            raise DataError(
                f"{path}: line {number} repeats the key '{shown(exc.key)}' in one object; keep one of its values."
            ) from None
        except (ValueError, RecursionError) as exc:
            array = number == 1 and line.lstrip().startswith("[") and isinstance(exc, json.JSONDecodeError)
            hint = "the file looks like one JSON array; write one object per line" if array else json_problem(exc)
            raise DataError(f"{path}: line {number} is not valid JSON ({hint}).") from None
        if not isinstance(record, dict):
            raise DataError(
                f"{path}: line {number} is {_type_name(record)} in JSON, not an object with named fields."
            )
        if "\\u" in line and _SURROGATE_ESCAPE.search(line):  # cheap test first: most lines have no escapes
            found = surrogate_at(record)
            if found is not None:
                raise _surrogate_error(path, number, *found)
        records.append((number, record))
    return records


def _csv_records(path: Path, text: str) -> list[tuple[int, dict]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    records, end_of_previous = [], 0
    default_limit = csv.field_size_limit(CSV_FIELD_LIMIT)  # process-wide: put back below
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
        raise DataError(f"{path}: line {reader.line_num} is not valid CSV ({shown(str(exc))}).") from None
    finally:
        csv.field_size_limit(default_limit)
    return records


def _csv_header(path: Path, row: list[str], line: int) -> list[str]:
    header = [name.strip() for name in row]
    repeated = [name for name, n in Counter(header).items() if n > 1]
    if repeated:
        raise DataError(f"{path}: line {line} (the header) names column '{shown(repeated[0])}' more than once.")
    return header


def _parquet_records(path: Path, raw: bytes) -> list[tuple[int, dict]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(pa.BufferReader(raw)).names  # read_table itself fails on repeated names
        repeated = [name for name, n in Counter(names).items() if n > 1]
        if repeated:
            raise DataError(f"{path}: the file names column '{shown(repeated[0])}' more than once.")
        rows = pq.read_table(pa.BufferReader(raw)).to_pylist()
    except (pa.ArrowException, OSError, ValueError, TypeError, IndexError, OverflowError) as exc:
        # whatever pyarrow raises on these bytes is about the file (corrupt, or types Python cannot hold)
        raise DataError(
            f"{path}: cannot read the file as Parquet ({exc.__class__.__name__}: {shown(str(exc))})."
        ) from None
    return [(index + 1, row) for index, row in enumerate(rows)]


def _type_name(value: Any) -> str:
    """'a list', 'an object', 'null', 'binary data' ...: for messages (Parquet brings more than JSON's types)."""
    import datetime
    import decimal

    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (bytes, bytearray)):
        return "binary data"
    if isinstance(value, decimal.Decimal):
        return "a decimal"
    if isinstance(value, (datetime.date, datetime.time)):
        return "a date/time"
    if isinstance(value, datetime.timedelta):
        return "a duration"
    if isinstance(value, (list, tuple)):
        return "a list"
    return {dict: "an object"}.get(type(value), f"a {type(value).__name__}")


def _not_json(value: Any) -> tuple[str, str] | None:
    """``(where, what)`` of the first value JSON cannot hold (a timestamp, NaN, binary...), or None; iterative."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, dict):
            for key, inner in reversed(list(item.items())):
                if not isinstance(key, str):
                    return where or "(top level)", f"a key that is {_type_name(key)}"
                stack.append((f"{where}.{key}" if where else key, inner))
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", inner) for i, inner in reversed(list(enumerate(item))))
        elif isinstance(item, float) and not math.isfinite(item):
            return where or "(top level)", "a number that is not finite"
        elif item is not None and not isinstance(item, (str, int, float, bool)):
            return where or "(top level)", _type_name(item)
    return None


# --------------------------------------------------------------------------- building examples


def _at(source: Path | str, line: int | str) -> str:
    """``train.jsonl: line 3`` for a file, ``hf://owner/name?split=train: row 3`` for a dataset's row."""
    return f"{source}: {'row' if str(source).startswith('hf://') else 'line'} {line}"


def _field_value(path: Path, line: int, record: dict, name: str) -> Any:
    if name not in record:
        keys = list(record)
        fields = ", ".join(f"'{shown(str(k), 30)}'" for k in keys[:8]) + (", …" if len(keys) > 8 else "")
        raise DataError(f"{_at(path, line)} has no field '{shown(name)}' (its fields are {fields or 'none'}).")
    value = record[name]
    if value is None:
        raise DataError(f"{_at(path, line)} field '{shown(name)}' is null (it needs a value).")
    if isinstance(value, float) and not math.isfinite(value):  # JSON's NaN / Infinity, Parquet's NaN
        raise DataError(f"{_at(path, line)} field '{shown(name)}' is not a finite number ({value}); it needs a value.")
    return value


def _wrong_type(path: Path, line: int, name: str, value: Any, wanted: str) -> DataError:
    return DataError(f"{_at(path, line)} field '{shown(name)}' is {_type_name(value)}, but {wanted}.")


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
        raise DataError(f"{_at(path, line)} field '{shown(name)}' is empty (every example needs a label).")
    return value


def _extraction_target(path: Path, line: int, name: str, value: Any) -> dict:
    if isinstance(value, str):
        try:
            value = loads_json(value)  # CSV cells hold the object as JSON text
        except (ValueError, RecursionError) as exc:
            raise DataError(
                f"{_at(path, line)} field '{shown(name)}' is a string that is not valid JSON "
                f"({json_problem(exc)}), but extraction targets must be JSON objects."
            ) from None
    if not isinstance(value, dict):
        raise _wrong_type(path, line, name, value, "extraction targets must be JSON objects")
    found = surrogate_at(value)
    if found is not None:
        raise _surrogate_error(path, line, f"{name}.{found[0]}" if found[0] else name, found[1])
    problem = _not_json(value)
    if problem is not None:
        where, what = problem
        raise DataError(
            f"{_at(path, line)} field '{shown(name)}' holds {what} at '{shown(where)}', but extraction targets "
            "must hold only JSON values (text, finite numbers, true/false, null, lists and objects)."
        )
    return value


def _content_key(text: str, target: Any) -> str:
    return text + "\x00" + json.dumps(target, sort_keys=True, ensure_ascii=False)


def _build_examples(
    path: Path | str, records: list[tuple[int, dict]], *, role: str, spec: "TaskSpec", labelled: bool = True
) -> tuple[Example, ...]:
    """Examples with stable ids; ``labelled=False``: inputs only (target None, the output field is not read), an
    id from the text alone (``data.unlabelled``'s pool)."""
    seen: Counter[str] = Counter()
    examples = []
    for line, record in records:
        text, inputs = _render_input(path, line, record, spec.data.input_fields)
        target = _target(path, line, record, spec.data.output, spec.kind) if labelled else None
        digest = hashlib.sha1((_content_key(text, target) if labelled else text).encode()).hexdigest()[:12]
        seen[digest] += 1
        # exact duplicates get -2, -3 ...: identical content, so the numbering cannot depend on order
        suffix = f"-{seen[digest]}" if seen[digest] > 1 else ""
        examples.append(Example(f"{role}-{digest}{suffix}", text, target, inputs, f"{path}:{line}"))
    return tuple(examples)


# --------------------------------------------------------------------------- labels


def _where(example: Example) -> str:
    path, _, line = example.source.rpartition(":")
    return _at(path, line)


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
        problem = "is empty" if not labels else f"lists '{shown(repeated[0])}' more than once"
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
    except (ValueError, RecursionError, yaml.YAMLError):  # ValueError: JSON's errors and 5,000-digit numbers
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
                        f"{_where(ex)}: label '{shown(ex.target)}' is not among the {len(listed)} labels in "
                        "data.labels; fix the label or add it to data.labels."
                    )
    in_train = sorted({ex.target for ex in splits["train"]})
    for role in ("dev", "test"):
        for ex in splits.get(role, ()):
            if ex.target not in in_train:
                some = ", ".join(f"'{shown(label, 30)}'" for label in in_train[:3]) + (", …" if len(in_train) > 3 else "")
                raise DataError(
                    f"{_where(ex)}: label '{shown(ex.target)}' never appears in train ({len(in_train)} train labels: "
                    f"{some}); add training examples or fix the label."
                )
