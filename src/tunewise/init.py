"""Infer a starter ``task.yaml`` from a data file (what ``tunewise init`` writes).

:func:`infer_task` looks at the records and guesses the input field, the output field and the
task kind; :func:`infer_task_yaml` turns that guess into a commented ``task.yaml`` that names
every key of :class:`~tunewise.task.TaskSpec`, so the file doubles as its own documentation.
Paths in the YAML are relative to the data file's directory, where ``task.yaml`` is written.

Out of scope: writing the file and asking the user questions (the CLI), validating the spec
(``task.py``) and loading the splits (``data.py``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .data import read_records
from .data.reading import CSV_SUFFIXES, JSON_SUFFIXES, PARQUET_SUFFIXES, shown
from .errors import DataError
from .task import TARGET_METRICS

__all__ = ["FieldProfile", "Inference", "infer_task", "infer_task_yaml", "find_sibling"]

OUTPUT_NAMES = ("label", "labels", "category", "intent", "class", "output", "target", "answer", "y")
MAX_CLASSES = 200
MAX_CLASS_RATIO = 0.5
DEFAULT_MODEL = "local:smollm2-135m"
DATA_SUFFIXES = JSON_SUFFIXES + CSV_SUFFIXES + PARQUET_SUFFIXES


@dataclass(frozen=True)
class FieldProfile:
    """What one field's values look like across the records."""

    name: str
    present: int
    strings: int
    mean_length: float
    distinct: int
    objects: int  # dicts, or strings holding a JSON object (CSV cells)


@dataclass(frozen=True)
class Inference:
    """The guess: which field is the input, which is the output, and what kind of task it is."""

    input_field: str
    output_field: str
    kind: str
    rows: int
    distinct_outputs: int
    fields: tuple[FieldProfile, ...]
    object_keys: tuple[str, ...] = ()


def _is_json_object(value: Any) -> bool:
    if isinstance(value, dict):
        return True
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            return isinstance(json.loads(value), dict)
        except (ValueError, RecursionError):  # not JSON, a 5,000-digit number, or nested too deeply
            return False
    return False


def _profile(name: str, values: list[Any]) -> FieldProfile:
    strings = [v for v in values if isinstance(v, str)]
    return FieldProfile(
        name=name,
        present=len(values),
        strings=len(strings),
        mean_length=sum(map(len, strings)) / len(strings) if strings else 0.0,
        distinct=len({json.dumps(v, sort_keys=True, default=str) for v in values}),
        objects=sum(1 for v in values[:200] if _is_json_object(v)),
    )


def _choose_output(profiles: dict[str, FieldProfile], input_guess: str | None) -> str | None:
    by_lower = {name.lower(): name for name in profiles}
    for wanted in OUTPUT_NAMES:
        if wanted in by_lower:
            return by_lower[wanted]
    objects = [p for p in profiles.values() if p.objects and p.objects == min(p.present, 200)]
    if objects:
        return objects[0].name
    scalars = [p for p in profiles.values() if p.name != input_guess and p.objects == 0]
    return min(scalars, key=lambda p: (p.distinct, p.name)).name if scalars else None


def _choose_input(profiles: dict[str, FieldProfile], exclude: str | None) -> str | None:
    texts = [p for p in profiles.values() if p.name != exclude and p.strings and not p.objects]
    return max(texts, key=lambda p: (p.mean_length, p.name)).name if texts else None


def infer_task(records: list[tuple[int, dict]], *, source: Path) -> Inference:
    """Guess input field, output field and kind from records (pure apart from error wording)."""
    values: dict[str, list[Any]] = {}
    for _, record in records:
        for key, value in record.items():
            if value is not None and key != "":  # a task file cannot name a field ""
                values.setdefault(key, []).append(value)
    profiles = {name: _profile(name, vals) for name, vals in values.items()}
    output = _choose_output(profiles, _choose_input(profiles, None))
    input_field = _choose_input(profiles, output)
    if output is None or input_field is None:
        raise DataError(
            f"{source}: cannot tell input from output: the records need a text field and a separate output field "
            f"(found {', '.join(repr(shown(n, 30)) for n in list(profiles)[:8]) or 'no fields'})."
        )
    out = profiles[output]
    kind = _kind(out, rows=len(records))
    keys = _object_keys(values[output]) if kind == "extraction" else ()
    return Inference(input_field, output, kind, len(records), out.distinct, tuple(profiles.values()), keys)


def _kind(output: FieldProfile, *, rows: int) -> str:
    if output.objects:
        return "extraction"
    if output.distinct <= MAX_CLASS_RATIO * rows and output.distinct <= MAX_CLASSES:
        return "classification"
    return "generation"


def _object_keys(values: list[Any]) -> tuple[str, ...]:
    keys: dict[str, None] = {}
    for value in values[:200]:
        obj = value if isinstance(value, dict) else json.loads(value) if _is_json_object(value) else {}
        keys.update(dict.fromkeys(obj))
    return tuple(keys)


# --------------------------------------------------------------------------- sibling files


def _tokens(stem: str) -> set[str]:
    return set(re.split(r"[^a-z0-9]+", stem.lower()))


def find_sibling(datafile: Path, words: tuple[str, ...]) -> Path | None:
    """A data file beside ``datafile`` named for one of ``words`` (``test.jsonl``, ``my_test.csv``...).

    Preference: the stem is exactly a word, then a word is a ``_``/``-``/``.``-separated token,
    then a word appears anywhere in the stem; ties go to the same suffix as ``datafile``, then by name.
    """
    candidates = [
        p for p in datafile.parent.iterdir()
        if p.is_file() and p.suffix.lower() in DATA_SUFFIXES and p.resolve() != datafile.resolve()
    ]

    def tier(p: Path) -> int | None:
        stem = p.stem.lower()
        if stem in words:
            return 0
        if _tokens(stem) & set(words):
            return 1
        return 2 if any(w in stem for w in words if len(w) > 2) else None

    ranked = sorted(
        (tier(p), p.suffix.lower() != datafile.suffix.lower(), p.name, p) for p in candidates if tier(p) is not None
    )
    return ranked[0][3] if ranked else None


def _labels_file(datafile: Path, train_labels: set[str]) -> Path | None:
    """A sibling labels.json/.yaml holding a plain list that covers every train label."""
    for name in ("labels.json", "labels.yaml", "labels.yml"):
        path = datafile.parent / name
        if not path.is_file():
            continue
        try:
            listed = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        if isinstance(listed, list) and train_labels <= {str(x) for x in listed}:
            return path
    return None


# --------------------------------------------------------------------------- YAML text


def _scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10**9).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def _relative(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()


def _entry(key: str, value: Any, comment: str, indent: int = 0) -> str:
    left = f"{' ' * indent}{key}: {_scalar(value)}"
    if len(left) >= 40:  # long values get their comment on the line above
        return f"{' ' * indent}# {comment}\n{left}"
    return f"{left:<40} # {comment}"


def _instructions(inf: Inference) -> str:
    if inf.kind == "classification":
        return f"Read the {inf.input_field} and answer with the one {inf.output_field} that fits it best."
    if inf.kind == "extraction":
        # escaped: a key may hold a line break, or a lone surrogate a task file cannot store
        keys = ", ".join(shown(key, None) for key in inf.object_keys) or "fields shown in the examples"
        return f"Read the {inf.input_field} and answer with a JSON object with the keys {keys}."
    return f"Read the {inf.input_field} and write the {inf.output_field}."


def _header(datafile: Path, inf: Inference, test_rows: int | None) -> list[str]:
    """Comment lines; names from the data are escaped (``shown``) so a line break in one cannot end the comment."""
    profiles = {p.name: p for p in inf.fields}
    test_note = f"; test file: {test_rows:,} rows" if test_rows is not None else "; no test file found"
    mean_length = profiles[inf.input_field].mean_length
    seen = ", ".join(shown(name, 40) for name in list(profiles)[:20]) + (", …" if len(profiles) > 20 else "")
    return [
        f"# tunewise task, inferred by `tunewise init` from {shown(datafile.name, None)}: {inf.rows:,} rows"
        f"{test_note}.",
        f"# Input '{shown(inf.input_field)}' (longest text field, {mean_length:.0f} characters on average);"
        f" output '{shown(inf.output_field)}' ({inf.distinct_outputs:,} distinct values) -> kind {inf.kind}.",
        f"# Fields seen: {seen}. Check every guess below; paths are relative to this file.",
        "",
    ]


def _data_section(inf: Inference, paths: dict[str, str | None], labels: str | None) -> list[str]:
    test_comment = "held-out split every rung is scored on" if paths["test"] else \
        "TODO: no test file found beside the data; point this at your held-out examples"
    return [
        f"{'data:':<40} # where the examples are and which fields hold input and output",
        _entry("train", paths["train"], "examples candidates may learn from (.jsonl, .csv or .parquet)", 2),
        _entry("test", paths["test"] or f"test{paths['suffix']}", test_comment, 2),
        _entry("dev", paths["dev"], "optional dev file for choosing prompts; null: carve one from train", 2),
        _entry("dev_fraction", 0.1, "share of train carved as dev (stratified by label) when dev is null", 2),
        _entry("input", inf.input_field, "input field, or a list of fields rendered as 'field: value' lines", 2),
        _entry("output", inf.output_field, "field holding the expected answer", 2),
        _entry("labels", labels, "classification labels: a list, a JSON/YAML list file, or null = from train", 2),
        _entry("test_limit", None, "score a stratified subset of this many test examples (e.g. 300 on CPU)", 2),
    ]


def _kind_section(inf: Inference) -> list[str]:
    if inf.kind == "extraction":
        return [
            f"{'extraction:':<40} # how extracted JSON is checked",
            _entry("schema", None, "JSON Schema for the output (inline or a path); null: only parse JSON", 2),
        ]
    if inf.kind == "generation":
        return [
            f"{'generation:':<40} # how generated text is scored",
            _entry("match", "normalized", "how answers are compared: exact, normalized or contains", 2),
            _entry("metric", None, "or a custom metric as module:function", 2),
        ]
    return []


def _target_line(kind: str) -> str:
    metrics = TARGET_METRICS.get(kind, ())
    example = f", e.g. {{{metrics[0]}: 0.9}}; metrics: {', '.join(metrics)}" if metrics else ""
    return f"{'target: {}':<40} # quality you need, 0-1 per metric{example}"


def _rest(inf: Inference) -> list[str]:
    return [
        _target_line(inf.kind),
        "constraints:                             # limits the answer must respect; null = no limit",
        _entry("max_latency_ms", None, "slowest acceptable answer, milliseconds", 2),
        _entry("budget_usd", None, "money you will spend on finding out", 2),
        _entry("budget_hours", None, "compute hours you will spend on finding out", 2),
        _entry("requests_per_month", None, "expected traffic, for the break-even between prompting and fine-tuning", 2),
        _entry("deadline_days", None, "days until it has to ship", 2),
        _entry("utilisation", None, "self-hosted: share of a device's hours your traffic pays for (0-1); "
               "null = a dedicated always-on instance", 2),
        _entry("model", DEFAULT_MODEL, "backend:name, e.g. hf:<id or path>, openai:<model>, fake:<script>"),
        _entry("seed", 0, "fixes the dev carve, test subset, demos and training"),
        _entry("instructions", _instructions(inf), "one or two sentences describing the task to the model"),
        _entry("rungs", None, "rungs to run (built-in names or full specs); null: the default ladder"),
        _entry("store", None, "run-store directory; null: .tunewise/ beside this file"),
    ]


def infer_task_yaml(datafile: Path, *, test_file: Path | None = None) -> str:
    """The text of a commented starter ``task.yaml`` for ``datafile`` (to be written beside it)."""
    datafile = Path(datafile)
    records = read_records(datafile, role="train")
    inf = infer_task(records, source=datafile)
    test_file = Path(test_file) if test_file is not None else find_sibling(datafile, ("test",))
    dev_file = find_sibling(datafile, ("dev", "valid", "validation", "val"))
    test_rows = len(read_records(test_file, role="test")) if test_file is not None else None
    base = datafile.parent
    paths = {
        "train": datafile.name,
        "test": _relative(test_file, base) if test_file is not None else None,
        "dev": _relative(dev_file, base) if dev_file is not None and dev_file != test_file else None,
        "suffix": datafile.suffix,
    }
    labels = None
    if inf.kind == "classification":
        seen = {str(r.get(inf.output_field)) for _, r in records}
        found = _labels_file(datafile, seen)
        labels = _relative(found, base) if found is not None else None
    name = shown(base.resolve().name if datafile.stem.lower() in ("train", "data") else datafile.stem, None)
    lines = _header(datafile, inf, test_rows) + [
        _entry("name", name or "task", "a name for reports"),
        _entry("kind", inf.kind, "classification, extraction or generation"),
        *_data_section(inf, paths, labels),
        *_kind_section(inf),
        *_rest(inf),
    ]
    return "\n".join(lines) + "\n"
