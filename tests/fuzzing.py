"""Hypothesis strategies and properties for bad input: task files and data files (JSONL, CSV, Parquet).

Every property feeds what a user could hand tunewise (wrong types, missing fields, huge lines, invalid
UTF-8, repeated keys, empty files, corrupt bytes, odd paths) through the public entry points and asserts:

* nothing but a :class:`~tunewise.errors.TunewiseError` escapes (no traceback reaches the user);
* its message is one printable sentence that names the file (or, for in-memory data, ``data.<split>``);
* what loads keeps every row: train + carved dev hold exactly the train file's rows, and no input text is
  in both.

Shared by ``tests/test_fuzz_inputs.py`` (a few dozen examples each, in the suite) and
``benchmarks/fuzz_inputs.py`` (thousands, results committed). ``PROPERTIES`` names them for both.
"""

from __future__ import annotations

import io
import json
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

import yaml
from hypothesis import strategies as st

from tunewise.errors import TunewiseError

# --------------------------------------------------------------------------- the contract on messages

_QUOTED = re.compile(r"'[^']*'|\([^()]*\)|\"[^\"]*\"")


def check_message(exc: BaseException, *names: str) -> None:
    """The error is tunewise's own and its message is one printable sentence naming one of ``names``."""
    if not isinstance(exc, TunewiseError):
        raise AssertionError(f"{type(exc).__name__} escaped: {exc!r}") from exc
    msg = str(exc)
    assert msg.isprintable(), f"not one printable line: {msg!r}"
    assert msg.endswith("."), f"not a sentence: {msg!r}"
    assert len(msg) <= 700, f"{len(msg)} characters: {msg[:200]!r}"
    assert any(name in msg for name in names), f"names none of {names}: {msg!r}"
    bare = _QUOTED.sub("", msg)  # quoted user text may hold anything; what tunewise wrote is one sentence
    assert not re.search(r"[.!?]\s+[A-Z]", bare), f"more than one sentence: {msg!r}"


# --------------------------------------------------------------------------- values and records

FIELDS = ["text", "label", "fields", "question", "answer"]
#: strings users' files hold: ordinary text, separators, quotes, line breaks, control and non-BMP characters
texts = st.one_of(
    st.sampled_from(["", " ", "a", "hello world", "x,y", 'say "hi"', "line\nbreak", "tab\tbed", "\r\n", "{", "[1]",
                     "null", "NaN", "café", "\u2028", "\x00", "🙂", "label", "\ud800", "x\udfff"]),
    st.text(max_size=20),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=12),
)
keys = st.one_of(st.sampled_from(FIELDS + [""]), texts)
numbers = st.one_of(st.integers(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True))
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=3)), max_leaves=8)


@st.composite
def records(draw: Any) -> dict[str, Any]:
    """A record that is often nearly right: the usual fields with plausible values, some wrong or missing."""
    record: dict[str, Any] = {}
    for name in FIELDS:
        if draw(st.integers(0, 3)) == 0:
            continue  # missing field
        plausible = {"fields": st.dictionaries(st.sampled_from(["n", "city", ""]), scalars, max_size=2)}.get(
            name, st.one_of(st.sampled_from(["a", "b", "c"]), texts))
        record[name] = draw(st.one_of(plausible, plausible, json_values))
    extra = draw(st.dictionaries(keys, json_values, max_size=2))
    return {**record, **extra}


# --------------------------------------------------------------------------- raw lines and bytes

#: JSONL lines that are not one JSON object with distinct keys, or that stretch the reader
bad_json_lines = st.one_of(
    st.sampled_from([
        "[", "{", "}", "{\"text\": }", "{'text': 'a'}", "[1, 2]", "\"text\"", "42", "null", "true",
        "{\"text\": \"a\", \"text\": \"b\"}", "{\"text\": \"a\", \"label\": \"x\", \"label\": \"y\"}",
        "{\"text\": NaN, \"label\": \"a\"}", "{\"text\": Infinity, \"label\": -Infinity}",
        "{\"text\": \"\\ud800\", \"label\": \"a\"}", "{\"text\": \"a\", \"label\": \"\\udfff\"}",
        "{\"text\": \"a\", \"fields\": {\"n\": 1, \"n\": 2}}", "{\"text\": 1e999, \"label\": \"a\"}",
        "[{\"text\": \"a\", \"label\": \"b\"}]", "\ufeff{\"text\": \"a\", \"label\": \"b\"}", "{\"\": 1}",
    ]),
    st.integers(4299, 4400).map(lambda n: '{"text": ' + "7" * n + ', "label": "a"}'),
    st.integers(900, 3000).map(lambda n: '{"text": ' + "[" * n + "]" * n + ', "label": "a"}'),
    st.integers(900, 3000).map(lambda n: '{"fields": ' + '{"a": ' * n + "1" + "}" * n + ', "text": "t"}'),
    st.integers(100_000, 300_000).map(lambda n: json.dumps({"text": "w" * n, "label": "a"})),
    texts,
)


@st.composite
def plausible_rows(draw: Any) -> list[dict[str, Any]]:
    """Rows a user would write (input texts drawn from a small pool, so some repeat), one of them maybe broken."""
    pool = draw(st.lists(texts, min_size=1, max_size=6))
    rows = [{"text": draw(st.sampled_from(pool)), "question": draw(st.sampled_from(pool)),
             "label": draw(st.sampled_from(["a", "b", "c"])), "answer": draw(st.sampled_from(["yes", "no", "maybe"])),
             "fields": {"n": draw(st.integers(0, 3))}} for _ in range(draw(st.integers(2, 25)))]
    if draw(st.integers(0, 2)) == 0:
        rows[draw(st.integers(0, len(rows) - 1))] = draw(records())
    return rows


row_lists = st.one_of(plausible_rows(), plausible_rows(), plausible_rows(), st.lists(records(), max_size=8))


@st.composite
def jsonl_bytes(draw: Any) -> bytes:
    ascii_only = draw(st.booleans())
    lines = [json.dumps(row, ensure_ascii=ascii_only) for row in draw(row_lists)]
    for _ in range(draw(st.integers(1, 2)) if draw(st.integers(0, 2)) == 0 else 0):
        lines.insert(draw(st.integers(0, len(lines))), draw(st.one_of(bad_json_lines, st.just(""))))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    raw = newline.join(lines).encode("utf-8", "surrogatepass")
    return draw(mutated(raw))


def _cell(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@st.composite
def csv_bytes(draw: Any) -> bytes:
    import csv

    if draw(st.integers(0, 3)):  # rows of fields, written as a user's tool would
        rows = draw(row_lists)
        header = list(dict.fromkeys(k for row in rows for k in row)) or ["text"]
        body = [[_cell(row.get(k, "")) for k in header] for row in rows]
    else:  # cells of any width
        header = draw(st.lists(st.one_of(st.sampled_from(FIELDS), keys), min_size=0, max_size=5))
        body = draw(st.lists(st.lists(st.one_of(texts, numbers.map(str), st.just('{"n": 1}'),
                                                st.integers(131_000, 140_000).map(lambda n: "c" * n)), max_size=6),
                             max_size=6))
    out = io.StringIO()
    writer = csv.writer(out, quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL])))
    if header or draw(st.booleans()):
        writer.writerow(header)
    writer.writerows(body)
    text = out.getvalue()
    if draw(st.integers(0, 3)) == 0:
        text += draw(st.sampled_from(['"unterminated,quote\n', "a,\"b\"c\n", "\x00,\x00\n", ",,,\n", "\n\n"]))
    raw = text.encode("utf-8", "surrogatepass")
    return draw(mutated(raw))


@st.composite
def parquet_bytes(draw: Any) -> bytes:
    """A Parquet file from rows (mixed types make arrow refuse: then one typed column), maybe corrupted."""
    import datetime
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = draw(row_lists)
    sink = io.BytesIO()
    try:
        pq.write_table(pa.Table.from_pylist(rows), sink)  # arrow refuses mixed types and empty structs
        written = draw(st.integers(0, 2)) > 0
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        written = False
    if not written:
        n = draw(st.integers(0, 4))
        column = draw(st.sampled_from([
            pa.array([b"bytes"] * n), pa.array([decimal.Decimal("1.5")] * n),
            pa.array([datetime.datetime(2024, 1, 1)] * n), pa.array([datetime.date(2024, 1, 1)] * n),
            pa.array([[1, 2]] * n), pa.array([{"at": datetime.datetime(2024, 1, 1)}] * n),
            pa.array([[("k", 1)]] * n, type=pa.map_(pa.string(), pa.int64())), pa.array([float("nan")] * n),
            pa.array(["a"] * n).dictionary_encode(), pa.array([None] * n), pa.array([2**62] * n),
            pa.array([datetime.timedelta(seconds=3)] * n),
        ]))
        other = pa.array([f"row {i}" for i in range(n)])
        names = draw(st.sampled_from([["text", "label"], ["label", "text"], ["fields", "text"], ["text", "text"]]))
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_arrays([other, column], names=names), sink)
    return draw(mutated(sink.getvalue(), rate=4))


@st.composite
def mutated(draw: Any, raw: bytes, rate: int = 5) -> bytes:
    """``raw`` as written, or with bytes flipped, cut short, invalid UTF-8 or a BOM added (1 in ``rate``)."""
    if draw(st.integers(0, rate - 1)) != 0 or not raw:
        return raw
    how = draw(st.sampled_from(["flip", "cut", "utf8", "bom", "empty"]))
    if how == "flip":
        data = bytearray(raw)
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    if how == "cut":
        return raw[: draw(st.integers(0, len(raw)))]
    if how == "utf8":
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xe9t\xe9"])) + raw[at:]
    if how == "bom":
        return b"\xef\xbb\xbf" + raw
    return b""


SUFFIX_BYTES = {".jsonl": jsonl_bytes, ".csv": csv_bytes, ".parquet": parquet_bytes}


@st.composite
def data_files(draw: Any) -> tuple[str, bytes]:
    suffix = draw(st.sampled_from(sorted(SUFFIX_BYTES)))
    return suffix, draw(SUFFIX_BYTES[suffix]())


# --------------------------------------------------------------------------- task files

_ANY_YAML = st.recursive(
    st.one_of(scalars.filter(lambda v: not isinstance(v, int) or abs(v) < 2**63), st.dates()),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=3)), max_leaves=6)
PATHS = st.sampled_from(["train.jsonl", "test.jsonl", "train.csv", "absent.jsonl", "labels.yaml", "labels.json",
                         "data", "~/x.jsonl", "~no_such_user_x/t.jsonl", "tr\x00ain.jsonl", "", ".", "/dev/null",
                         "train.txt", "t" * 300 + ".jsonl"])
#: (key path, values to try): every key of task.yaml with values of the right and the wrong kind
TASK_KEYS: list[tuple[tuple[str, ...], Any]] = [
    (("name",), st.one_of(texts, _ANY_YAML)),
    (("kind",), st.one_of(st.sampled_from(["classification", "extraction", "generation", "regression"]), _ANY_YAML)),
    (("data", "train"), st.one_of(PATHS, _ANY_YAML)),
    (("data", "test"), st.one_of(PATHS, _ANY_YAML)),
    (("data", "dev"), st.one_of(PATHS, st.none(), _ANY_YAML)),
    (("data", "input"), st.one_of(st.sampled_from(["text", "question", ""]),
                                  st.lists(st.sampled_from(["text", "question", "label", ""]), max_size=3),
                                  _ANY_YAML)),
    (("data", "output"), st.one_of(st.sampled_from(["label", "answer", "fields", ""]), _ANY_YAML)),
    (("data", "labels"), st.one_of(st.lists(st.sampled_from(["a", "b", "c", ""]), max_size=4), PATHS, _ANY_YAML)),
    (("data", "test_limit"), st.one_of(st.integers(-2, 5), _ANY_YAML)),
    (("data", "dev_fraction"), st.one_of(st.floats(allow_nan=True), _ANY_YAML)),
    (("target",), st.one_of(st.dictionaries(st.sampled_from(["accuracy", "macro_f1", "field_f1", "exact_match", ""]),
                                            st.floats(allow_nan=True), max_size=2), _ANY_YAML)),
    (("constraints",), st.one_of(st.dictionaries(
        st.sampled_from(["max_latency_ms", "budget_usd", "budget_hours", "requests_per_month", "deadline_days", "x"]),
        numbers, max_size=3), _ANY_YAML)),
    (("model",), st.one_of(st.sampled_from(["local:smollm2-135m", "openai:gpt-x", "fake:random", ""]), _ANY_YAML)),
    (("backend",), st.one_of(st.dictionaries(st.sampled_from(["base_url", "api_key_file", "max_retries", "prices"]),
                                             st.one_of(PATHS, numbers), max_size=2), _ANY_YAML)),
    (("seed",), st.one_of(numbers, _ANY_YAML)),
    (("extraction",), st.one_of(st.fixed_dictionaries({"schema": st.one_of(PATHS, _ANY_YAML)}), _ANY_YAML)),
    (("generation",), st.one_of(st.fixed_dictionaries({"match": st.sampled_from(["exact", "fuzzy"])}), _ANY_YAML)),
    (("rungs",), st.one_of(st.lists(st.one_of(st.sampled_from(["zero_shot", "knn"]), st.fixed_dictionaries(
        {"name": texts, "strategy": texts, "params": _ANY_YAML})), max_size=2), _ANY_YAML)),
    (("store",), st.one_of(PATHS, _ANY_YAML)),
    (("instructions",), st.one_of(texts, _ANY_YAML)),
    (("unknown_key",), _ANY_YAML),
]


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        if not isinstance(tree.get(key), dict):
            tree[key] = {}
        tree = tree[key]
    tree[path[-1]] = value


@st.composite
def task_mappings(draw: Any) -> Any:
    """A task: a valid base with some keys set to right or wrong values, some removed, or not a mapping at all."""
    if draw(st.integers(0, 15)) == 0:
        return draw(_ANY_YAML)
    task: dict[str, Any] = {"name": "fuzz", "kind": "classification",
                            "data": {"train": "train.jsonl", "test": "test.jsonl"}}
    for index in draw(st.lists(st.integers(0, len(TASK_KEYS) - 1), max_size=4)):
        path, values = TASK_KEYS[index]
        _set(task, path, draw(values))
    for path in draw(st.lists(st.sampled_from([("data",), ("data", "train"), ("data", "test"), ("kind",)]),
                              max_size=1)):
        node = task
        for key in path[:-1]:
            node = node.get(key) if isinstance(node.get(key), dict) else {}
        node.pop(path[-1], None)
    return task


_YAML_TEXT_EDITS = ["\t", ":", "- ", "  ", "\n", "{", "[", "&a", "*a", "!!python/object:os.system", "'", '"', "\x00",
                    "\x07", "\ufeff", "#", "? ", "<<: ", "\u2028", "%YAML 1.1\n", "---\n"]


@st.composite
def task_texts(draw: Any) -> bytes:
    """task.yaml bytes: a dumped mapping, maybe with a line repeated, text inserted or cut, or invalid UTF-8."""
    text = yaml.safe_dump(draw(task_mappings()), allow_unicode=True, sort_keys=False)
    edits = draw(st.lists(st.sampled_from(["repeat", "insert", "cut"]), min_size=1, max_size=2)) \
        if draw(st.integers(0, 2)) == 0 else []
    for edit in edits:
        lines = text.split("\n")
        at = draw(st.integers(0, max(0, len(lines) - 1)))
        if edit == "repeat":
            lines.insert(at, lines[at])
            text = "\n".join(lines)
        elif edit == "insert":
            pos = draw(st.integers(0, len(text)))
            text = text[:pos] + draw(st.one_of(st.sampled_from(_YAML_TEXT_EDITS), texts)) + text[pos:]
        else:
            text = text[: draw(st.integers(0, len(text)))]
    if draw(st.integers(0, 9)) == 0:
        text = draw(st.sampled_from(["a: " + "[" * 1000, "a: " + "{b: " * 300 + "1" + "}" * 300,
                                     "data: &d {train: train.jsonl, test: test.jsonl, extra: *d}\n",
                                     "", "\n", "---\n---\n", "- a\n- b\n", "name: x\nname: y\n"]))
    return draw(mutated(text.encode("utf-8", "surrogatepass"), rate=8))


# --------------------------------------------------------------------------- the properties


def _valid_files(folder: Path) -> None:
    rows = [{"text": f"message {i}", "question": f"q {i}", "label": "abc"[i % 3], "answer": f"answer {i % 4}",
             "fields": {"n": i % 4}} for i in range(12)]
    rows += rows[:3]  # repeated rows, as users' files have
    blob = "".join(json.dumps(r) + "\n" for r in rows)
    (folder / "train.jsonl").write_text(blob, encoding="utf-8")
    (folder / "test.jsonl").write_text(blob, encoding="utf-8")
    (folder / "train.csv").write_text("text,label\n" + "".join(f"row {i},{'ab'[i % 2]}\n" for i in range(8)))
    (folder / "labels.yaml").write_text("- a\n- b\n- c\n", encoding="utf-8")
    (folder / "labels.json").write_text('{"labels": ["a"]}', encoding="utf-8")
    (folder / "data").mkdir()


def _kept_every_row(spec: Any, splits: Any) -> None:
    """Train + carved dev hold exactly the train file's rows, and no input text is on both sides."""
    from tunewise.data import read_records

    if spec.data.dev is not None:
        return
    rows = read_records(spec.resolve(spec.data.train), role="train")
    assert len(splits.train) + len(splits.dev) == len(rows), "a row was dropped or added"
    assert not {e.text for e in splits.train} & {e.text for e in splits.dev}, "a text is in both train and dev"


def _load_everything(spec: Any, names: tuple[str, ...]) -> str:
    """Everything ``tunewise run`` does with the files before a model is called; tunewise errors are fine."""
    from tunewise.data import check_data, load_splits

    given = (spec.data.train, spec.data.test, spec.data.dev, spec.data.labels)
    files = tuple(str(spec.resolve(path)) for path in given if isinstance(path, Path))  # may lie outside the folder
    try:
        splits = load_splits(spec)
    except Exception as exc:  # noqa: BLE001 - the property: only TunewiseError, well worded
        check_message(exc, *names, *files, "data.labels")
        return f"{type(exc).__name__}: {exc}"
    _kept_every_row(spec, splits)
    checks = check_data(splits, kind=spec.kind)
    json.dumps(checks.to_json())
    for warning in checks.warnings:
        assert warning.isprintable() and warning.endswith("."), warning
    return "loaded"


def data_file_property(kind: str, suffix: str, train: bytes, test: bytes | None, fields: tuple[str, str],
                       extra: dict[str, Any]) -> str:
    """A task over generated train (and test) files loads, or fails with one sentence naming the file."""
    from tunewise.task import parse_task

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / f"train{suffix}").write_bytes(train)
        (folder / f"test{suffix}").write_bytes(train if test is None else test)
        data = {"train": f"train{suffix}", "test": f"test{suffix}", "input": fields[0], "output": fields[1], **extra}
        try:
            spec = parse_task({"kind": kind, "data": data}, source=str(folder / "task.yaml"), base_dir=folder)
        except Exception as exc:  # noqa: BLE001
            check_message(exc, str(folder))
            return f"{type(exc).__name__}: {exc}"
        return _load_everything(spec, (str(folder),))


def read_property(suffix: str, raw: bytes) -> str:
    """``read_records`` on any bytes: records, or one sentence naming the file."""
    from tunewise.data import read_records

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"train{suffix}"
        path.write_bytes(raw)
        try:
            records = read_records(path, role="train")
        except Exception as exc:  # noqa: BLE001
            check_message(exc, str(path))
            return f"{type(exc).__name__}: {exc}"
        assert records and all(isinstance(r, dict) and isinstance(n, int) for n, r in records)
        numbers = [n for n, _ in records]
        assert numbers == sorted(set(numbers)), "line numbers must increase"
        return "loaded"


def task_file_property(raw: bytes) -> str:
    """``load_task`` on any bytes: a spec that can be recorded and whose data loads, or one sentence naming it."""
    from tunewise.task import load_task

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _valid_files(folder)
        path = folder / "task.yaml"
        path.write_bytes(raw)
        try:
            spec = load_task(path)
        except Exception as exc:  # noqa: BLE001
            check_message(exc, str(path))
            return f"{type(exc).__name__}: {exc}"
        spec.fingerprint()
        json.dumps(spec.model_dump(mode="json"))  # what the run store records
        for rung in spec.rungs or ():
            if not isinstance(rung, str):
                rung.config_hash()
        return _load_everything(spec, (str(folder),))


def init_property(suffix: str, raw: bytes) -> str:
    """``tunewise init`` on any data file: a task.yaml that loads and names what was inferred, or one sentence."""
    from tunewise.data import read_records
    from tunewise.init import infer_task, infer_task_yaml
    from tunewise.task import load_task

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / f"train{suffix}"
        path.write_bytes(raw)
        try:
            text = infer_task_yaml(path)
        except Exception as exc:  # noqa: BLE001
            check_message(exc, str(path))
            return f"{type(exc).__name__}: {exc}"
        inference = infer_task(read_records(path, role="train"), source=path)
        (folder / "task.yaml").write_text(text, encoding="utf-8")
        spec = load_task(folder / "task.yaml")  # a TaskSpecError here is a bug in init: it wrote an invalid file
        assert (spec.data.input, spec.data.output, spec.kind) == (
            inference.input_field, inference.output_field, inference.kind)
        (folder / f"test{suffix}").write_bytes(raw)
        return _load_everything(spec, (str(folder),))


def build_task_property(kind: str, train: list[Any], test: list[Any]) -> str:
    """``build_task`` with in-memory records of any values: a task whose data loads, or one sentence."""
    from tunewise.task import build_task

    with tempfile.TemporaryDirectory() as tmp:
        try:
            spec = build_task(train=train, test=test, kind=kind, store=Path(tmp) / "store")
        except Exception as exc:  # noqa: BLE001
            check_message(exc, "data.train", "data.test")
            return f"{type(exc).__name__}: {exc}"
        return _load_everything(spec, (tmp,))


# non-JSON values a DataFrame or a list of dicts may hold
python_values = st.one_of(json_values, st.binary(max_size=4), st.dates(), st.sets(st.integers(), max_size=2),
                          st.tuples(st.integers()), st.complex_numbers(max_magnitude=3),
                          st.dictionaries(st.integers(), st.integers(), max_size=2))
in_memory_records = st.one_of(
    plausible_rows(),
    plausible_rows().flatmap(lambda rows: st.tuples(st.just(rows), st.integers(0, len(rows) - 1), python_values).map(
        lambda t: [*t[0][: t[1]], {**t[0][t[1]], "text": t[2]}, *t[0][t[1] + 1:]])),
    st.lists(st.one_of(records(), st.dictionaries(keys, python_values, max_size=3), python_values), max_size=6))

KINDS = st.sampled_from(["classification", "extraction", "generation"])
FIELD_CHOICES = st.sampled_from([("text", "label"), ("text", "fields"), ("question", "answer"), ("text", "text"),
                                 ("missing", "label")])
EXTRA_DATA = st.fixed_dictionaries({}, optional={
    "dev_fraction": st.sampled_from([0.05, 0.1, 0.3, 0.49]),
    "test_limit": st.integers(1, 5),
    "labels": st.lists(st.sampled_from(["a", "b", "c", "", "a\nb"]), max_size=4),
    "input": st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3, unique=True),
})



@st.composite
def data_file_inputs(draw: Any) -> dict[str, Any]:
    suffix, train = draw(data_files())
    test = None if draw(st.integers(0, 3)) else draw(SUFFIX_BYTES[suffix]())
    kind = draw(KINDS)
    usual = {"classification": ("text", "label"), "extraction": ("text", "fields"), "generation": ("question", "answer")}
    fields = usual[kind] if draw(st.integers(0, 3)) else draw(FIELD_CHOICES)
    extra = draw(EXTRA_DATA) if draw(st.booleans()) else {}
    return {"kind": kind, "suffix": suffix, "train": train, "test": test, "fields": fields, "extra": extra}


#: name -> (strategy, property): each property takes one drawn value and says what happened: "loaded", or
#: "<error class>: <message>" for the tunewise error it raised (anything else fails the property)
PROPERTIES: dict[str, tuple[Any, Callable[[Any], str]]] = {
    "read_records": (data_files(), lambda drawn: read_property(*drawn)),
    "data_files": (data_file_inputs(), lambda drawn: data_file_property(**drawn)),
    "task_files": (task_texts(), task_file_property),
    "init": (data_files(), lambda drawn: init_property(*drawn)),
    "build_task": (st.tuples(KINDS, in_memory_records, in_memory_records),
                   lambda drawn: build_task_property(*drawn)),
}
