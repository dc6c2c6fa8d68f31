"""Tests for data.py: reading files, building splits, and the data checks."""

from __future__ import annotations

import csv
import json
import math
import random
from collections import Counter
from pathlib import Path

import pytest

from tunewise.data import (
    DataChecks,
    Example,
    Splits,
    check_data,
    load_splits,
    normalize_text,
    read_records,
    volume_assessment,
)
from tunewise.errors import DataError
from tunewise.task import parse_task

# --------------------------------------------------------------------------- helpers


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def spec_for(base: Path, *, kind: str = "classification", seed: int = 0, **data):
    data = {"train": "train.jsonl", "test": "test.jsonl", **data}
    return parse_task({"kind": kind, "seed": seed, "data": data}, base_dir=base)


def labelled(n_per_label: dict[str, int], *, prefix: str = "") -> list[dict]:
    return [
        {"text": f"{prefix}{label} example number {i}", "label": label}
        for label, n in n_per_label.items()
        for i in range(n)
    ]


@pytest.fixture
def simple(tmp_path: Path) -> Path:
    write_jsonl(tmp_path / "train.jsonl", labelled({"a": 20, "b": 10, "c": 1}))
    write_jsonl(tmp_path / "test.jsonl", labelled({"a": 6, "b": 3}, prefix="test "))
    return tmp_path


def ex(i: int, text: str, target: str = "x") -> Example:
    return Example(id=f"e{i}", text=text, target=target)


def splits_of(train, test, dev=(), labels=None) -> Splits:
    return Splits(tuple(train), tuple(dev), tuple(test), labels, "h", "file")


# --------------------------------------------------------------------------- read_records


def test_read_records_line_numbers_skip_blank_lines(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": "b"}\n', encoding="utf-8")
    assert read_records(path, role="train") == [(1, {"text": "a"}), (3, {"text": "b"})]


def test_missing_file_names_file_and_role(tmp_path):
    with pytest.raises(DataError, match=r"train\.jsonl: file not found \(the task's data\.train\)"):
        read_records(tmp_path / "train.jsonl", role="train")


def test_unreadable_file(tmp_path):
    (tmp_path / "train.jsonl").mkdir()  # a directory cannot be read as a file, even as root
    with pytest.raises(DataError, match=r"train\.jsonl: cannot read the file \(IsADirectoryError\)"):
        read_records(tmp_path / "train.jsonl", role="train")


def test_not_utf8_names_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"train\.jsonl: line 2 is not UTF-8 text \(byte 0xe9\)"):
        read_records(path, role="train")


def test_utf8_bom_is_tolerated(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes("\ufefftext,label\nhi,a\n".encode("utf-8"))
    assert read_records(path, role="train") == [(2, {"text": "hi", "label": "a"})]


def test_bad_json_line_names_line_and_reason(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b"}\n{"text": "c" "label": 1}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.jsonl: line 3 is not valid JSON \(Expecting ',' delimiter\)\.$"):
        read_records(path, role="train")


def test_json_array_file_gets_a_hint(tmp_path):
    path = tmp_path / "train.json"
    path.write_text('[{"text": "a"},\n{"text": "b"}]\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"line 1 is not valid JSON \(the file looks like one JSON array"):
        read_records(path, role="train")


def test_json_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "a"}\n["a", "b"]\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.jsonl: line 2 is a list in JSON, not an object"):
        read_records(path, role="train")


def test_csv_row_with_wrong_column_count(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text('text,label\n"hello, world",a\nbad,row,extra\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.csv: line 3 has 3 columns but the header has 2"):
        read_records(path, role="train")


def test_csv_line_numbers_follow_multiline_cells(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text('text,label\n"two\nlines",a\none line,b\n', encoding="utf-8")
    assert read_records(path, role="train") == [
        (2, {"text": "two\nlines", "label": "a"}),
        (4, {"text": "one line", "label": "b"}),
    ]


def test_csv_repeated_header_column(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,text\na,b\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.csv: line 1 \(the header\) names column 'text' more than once"):
        read_records(path, role="train")


def test_unknown_suffix(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("hello\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.txt: unknown file type '\.txt' \(use \.jsonl, \.csv or \.parquet\)"):
        read_records(path, role="train")


@pytest.mark.parametrize(
    ("name", "content"), [("train.jsonl", "\n  \n"), ("train.csv", "text,label\n"), ("train.jsonl", "")]
)
def test_empty_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=rf"{name}: the file is empty"):
        read_records(path, role="train")


def test_unreadable_parquet(tmp_path):
    path = tmp_path / "train.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"train\.parquet: cannot read the file as Parquet"):
        read_records(path, role="train")


# --------------------------------------------------------------------------- building examples


def test_jsonl_csv_and_parquet_load_the_same_examples(tmp_path):
    train = labelled({"a": 5, "b": 5})
    test = labelled({"a": 2, "b": 2}, prefix="t ")
    results = []
    for suffix, writer in ((".jsonl", write_jsonl), (".csv", write_csv), (".parquet", write_parquet)):
        folder = tmp_path / suffix.strip(".")
        folder.mkdir()
        writer(folder / f"train{suffix}", train)
        writer(folder / f"test{suffix}", test)
        splits = load_splits(spec_for(folder, train=f"train{suffix}", test=f"test{suffix}"))
        # the dev carve follows the data hash, which differs between formats: compare the union
        seen = sorted((e.id, e.text, e.target) for e in splits.train + splits.dev)
        results.append((seen, [(e.id, e.text, e.target) for e in splits.test]))
        assert splits.test[1].source == f"{folder / f'test{suffix}'}:{2 if suffix != '.csv' else 3}"
    assert results[0] == results[1] == results[2]


def test_multi_field_input_is_rendered_as_field_lines(tmp_path):
    rows = [{"question": f"q{i}", "context": f"c{i}", "n": i, "label": "yes" if i % 2 else "no"} for i in range(6)]
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "test.jsonl", rows[:2])
    splits = load_splits(spec_for(tmp_path, input=["question", "context", "n"]))
    first = splits.test[0]
    assert first.text == "question: q0\ncontext: c0\nn: 0"
    assert first.inputs == {"question": "q0", "context": "c0", "n": 0}
    assert first.target == "no"


def test_numeric_and_boolean_labels_become_strings(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": f"t{i}", "label": v} for i, v in enumerate([1, 2, True, False] * 2)])
    write_jsonl(tmp_path / "test.jsonl", [{"text": "x", "label": 1}, {"text": "y", "label": True}])
    splits = load_splits(spec_for(tmp_path))
    assert [e.target for e in splits.test] == ["1", "true"]
    assert splits.labels == ("1", "2", "false", "true")


def test_ids_are_content_hashes_with_duplicate_suffixes(tmp_path):
    rows = labelled({"a": 4, "b": 4}) + [{"text": "a example number 0", "label": "a"}]
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "test.jsonl", labelled({"a": 1}, prefix="t"))
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    write_jsonl(shuffled / "train.jsonl", random.Random(1).sample(rows, len(rows)))
    write_jsonl(shuffled / "test.jsonl", labelled({"a": 1}, prefix="t"))
    ids = {e.id for s in (load_splits(spec_for(tmp_path)),) for e in s.train + s.dev}
    ids_shuffled = {e.id for s in (load_splits(spec_for(shuffled)),) for e in s.train + s.dev}
    assert ids == ids_shuffled
    assert len(ids) == len(rows)
    assert sum(i.endswith("-2") for i in ids) == 1
    assert all(i.startswith("train-") for i in ids)


def test_missing_input_field_names_file_line_field_and_keys(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", labelled({"a": 3}) + [{"sentence": "x", "label": "a"}])
    write_jsonl(tmp_path / "test.jsonl", labelled({"a": 1}))
    with pytest.raises(DataError, match=r"train\.jsonl: line 4 has no field 'text' \(its fields are 'sentence', 'label'\)"):
        load_splits(spec_for(tmp_path))


def test_missing_output_field(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", labelled({"a": 3}))
    write_jsonl(tmp_path / "test.jsonl", [{"text": "x", "label": "a"}, {"text": "y", "intent": "a"}])
    with pytest.raises(DataError, match=r"test\.jsonl: line 2 has no field 'label'"):
        load_splits(spec_for(tmp_path))


def test_null_field(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", labelled({"a": 3}) + [{"text": None, "label": "a"}])
    write_jsonl(tmp_path / "test.jsonl", labelled({"a": 1}))
    with pytest.raises(DataError, match=r"train\.jsonl: line 4 field 'text' is null"):
        load_splits(spec_for(tmp_path))


def test_input_field_of_wrong_type(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": ["a", "b"], "label": "a"}])
    write_jsonl(tmp_path / "test.jsonl", labelled({"a": 1}))
    with pytest.raises(DataError, match=r"train\.jsonl: line 1 field 'text' is a list, but input fields must be text"):
        load_splits(spec_for(tmp_path))


def test_classification_label_of_wrong_type(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", labelled({"a": 3}) + [{"text": "x", "label": {"name": "a"}}])
    write_jsonl(tmp_path / "test.jsonl", labelled({"a": 1}))
    with pytest.raises(DataError, match=r"train\.jsonl: line 4 field 'label' is an object, but classification labels"):
        load_splits(spec_for(tmp_path))


def test_extraction_targets_are_dicts_and_csv_json_is_parsed(tmp_path):
    rows = [{"text": f"Invoice {i}", "fields": json.dumps({"number": i})} for i in range(5)]
    write_csv(tmp_path / "train.csv", rows)
    write_jsonl(tmp_path / "test.jsonl", [{"text": "Invoice 9", "fields": {"number": 9}}])
    splits = load_splits(spec_for(tmp_path, kind="extraction", train="train.csv", output="fields"))
    assert splits.test[0].target == {"number": 9}
    assert {e.target["number"] for e in splits.train + splits.dev} == set(range(5))
    assert splits.labels is None


def test_extraction_target_of_wrong_type(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "fields": {"x": 1}}, {"text": "b", "fields": "not json"}])
    write_jsonl(tmp_path / "test.jsonl", [{"text": "c", "fields": {"x": 1}}])
    with pytest.raises(DataError, match=r"train\.jsonl: line 2 field 'fields' is a string that is not valid JSON"):
        load_splits(spec_for(tmp_path, kind="extraction", output="fields"))
    write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "fields": [1, 2]}])
    with pytest.raises(DataError, match=r"line 1 field 'fields' is a list, but extraction targets must be JSON objects"):
        load_splits(spec_for(tmp_path, kind="extraction", output="fields"))


def test_test_label_never_seen_in_train(simple):
    write_jsonl(simple / "test.jsonl", labelled({"a": 2}) + [{"text": "odd", "label": "foo"}])
    expected = (
        r"test\.jsonl: line 3: label 'foo' never appears in train \(3 train labels: 'a', 'b', 'c'\); "
        r"add training examples or fix the label\.$"
    )
    with pytest.raises(DataError, match=expected):
        load_splits(spec_for(simple))


def test_dev_file_label_never_seen_in_train(simple):
    write_jsonl(simple / "dev.jsonl", [{"text": "odd", "label": "zzz"}])
    with pytest.raises(DataError, match=r"dev\.jsonl: line 1: label 'zzz' never appears in train"):
        load_splits(spec_for(simple, dev="dev.jsonl"))


def test_label_outside_listed_labels(simple):
    with pytest.raises(DataError, match=r"train\.jsonl: line 31: label 'c' is not among the 2 labels in data\.labels"):
        load_splits(spec_for(simple, labels=["a", "b"]))


def test_listed_labels_keep_their_order_and_may_come_from_a_file(simple):
    (simple / "labels.json").write_text(json.dumps(["c", "b", "a"]), encoding="utf-8")
    assert load_splits(spec_for(simple, labels="labels.json")).labels == ("c", "b", "a")
    (simple / "labels.yaml").write_text("- b\n- c\n- a\n", encoding="utf-8")
    assert load_splits(spec_for(simple, labels="labels.yaml")).labels == ("b", "c", "a")
    assert load_splits(spec_for(simple)).labels == ("a", "b", "c")


def test_label_file_holding_an_object_is_an_error(simple):
    (simple / "labels.json").write_text(json.dumps({"labels": ["a", "b", "c"]}), encoding="utf-8")
    with pytest.raises(DataError, match=r"labels\.json: the label file must hold a plain list of .*, found an object"):
        load_splits(spec_for(simple, labels="labels.json"))


def test_missing_label_file(simple):
    with pytest.raises(DataError, match=r"labels\.json: file not found \(the task's data\.labels\)"):
        load_splits(spec_for(simple, labels="labels.json"))


def test_empty_dev_split_is_an_error(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", labelled({"a": 1, "b": 1}))
    write_jsonl(tmp_path / "test.jsonl", labelled({"a": 1}))
    with pytest.raises(DataError, match=r"train\.jsonl: cannot carve a dev set because every label has a single"):
        load_splits(spec_for(tmp_path))


# --------------------------------------------------------------------------- splits


def test_dev_is_carved_stratified_and_deterministic(simple):
    first, again = load_splits(spec_for(simple)), load_splits(spec_for(simple))
    assert first == again
    dev_counts = Counter(e.target for e in first.dev)
    assert dev_counts == {"a": 2, "b": 1}  # ceil(10% of 20), ceil(10% of 10); the single 'c' stays in train
    assert Counter(e.target for e in first.train) == {"a": 18, "b": 9, "c": 1}
    assert first.dev_origin == "carved from train: 10% stratified by label, seed 0, 3 examples"
    # both keep the file's order
    order = [json.loads(line)["text"] for line in (simple / "train.jsonl").read_text().splitlines()]
    assert [e.text for e in first.train] == [t for t in order if t in {e.text for e in first.train}]


def test_dev_carving_changes_with_the_seed_and_with_the_data(simple):
    dev_ids = lambda s: {e.id for e in s.dev}  # noqa: E731
    by_seed = [dev_ids(load_splits(spec_for(simple, seed=seed))) for seed in range(4)]
    assert len({frozenset(d) for d in by_seed}) > 1
    assert all(len(d) == 3 for d in by_seed)
    original = load_splits(spec_for(simple))
    with (simple / "train.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps({"text": "one more", "label": "c"}) + "\n")
    grown = load_splits(spec_for(simple))
    assert grown.data_hash != original.data_hash


def test_dev_fraction_and_non_classification_carving(tmp_path):
    rows = [{"text": f"question {i}", "answer": f"answer {i}"} for i in range(40)]
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "test.jsonl", rows[:3])
    splits = load_splits(spec_for(tmp_path, kind="generation", output="answer", dev_fraction=0.25))
    assert (len(splits.train), len(splits.dev)) == (30, 10)
    assert splits.dev_origin == "carved from train: 25% hashed random sample, seed 0, 10 examples"
    assert splits.labels is None


def test_dev_file_is_used_as_given(simple):
    write_jsonl(simple / "dev.jsonl", labelled({"a": 2, "b": 2}, prefix="dev "))
    splits = load_splits(spec_for(simple, dev="dev.jsonl"))
    assert (len(splits.train), len(splits.dev), splits.dev_origin) == (31, 4, "file")
    assert all(e.id.startswith("dev-") for e in splits.dev)


def test_test_limit_is_a_stratified_subset_in_file_order(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", labelled({"a": 5, "b": 5, "c": 5}))
    test_rows = labelled({"a": 50, "b": 30, "c": 20}, prefix="t ")
    write_jsonl(tmp_path / "test.jsonl", random.Random(0).sample(test_rows, len(test_rows)))
    splits = load_splits(spec_for(tmp_path, test_limit=15))
    counts = Counter(e.target for e in splits.test)
    assert sum(counts.values()) == 15
    assert 7 <= counts["a"] <= 8 and 4 <= counts["b"] <= 5 and counts["c"] == 3  # floor/ceil of 7.5, 4.5, 3
    lines = [int(e.source.rsplit(":", 1)[1]) for e in splits.test]
    assert lines == sorted(lines)
    assert splits.test_origin == "stratified subset of 15 of 100 test examples, seed 0"
    assert load_splits(spec_for(tmp_path, test_limit=15)).test == splits.test
    other_seeds = {tuple(e.id for e in load_splits(spec_for(tmp_path, test_limit=15, seed=s)).test) for s in range(1, 4)}
    assert other_seeds - {tuple(e.id for e in splits.test)}


def test_test_limit_at_or_above_size_keeps_the_file(simple):
    splits = load_splits(spec_for(simple, test_limit=9))
    assert (len(splits.test), splits.test_origin) == (9, "file")


def test_data_hash_is_stable_and_covers_fields(simple):
    a = load_splits(spec_for(simple)).data_hash
    assert len(a) == 16 and a == load_splits(spec_for(simple)).data_hash
    rows = [dict(r, text2=r["text"]) for r in labelled({"a": 20, "b": 10, "c": 1})]
    write_jsonl(simple / "train.jsonl", rows)
    write_jsonl(simple / "test.jsonl", [dict(r, text2=r["text"]) for r in labelled({"a": 6, "b": 3}, prefix="test ")])
    assert load_splits(spec_for(simple)).data_hash != load_splits(spec_for(simple, input="text2")).data_hash


# --------------------------------------------------------------------------- duplicates and the dev carve


def _repeated_rows(kind: str) -> list[dict]:
    """40 distinct texts, each written 1 to 4 times; classification adds texts that carry two labels."""
    rng = random.Random(3)
    rows = []
    for i in range(40):
        label = "abc"[i % 3]
        row = {"text": f"message {i} about {label}", "label": label} if kind == "classification" else \
            {"text": f"question {i}", "label": f"answer {i}"}
        rows += [row] * rng.randint(1, 4)
    if kind == "classification":
        rows += [{"text": f"ambiguous {i}", "label": label} for i in range(4) for label in ("a", "b")]
    return random.Random(5).sample(rows, len(rows))


@pytest.mark.parametrize("kind", ["classification", "generation"])
def test_repeated_texts_never_straddle_train_and_dev_and_no_row_is_dropped(tmp_path, kind):
    rows = _repeated_rows(kind)
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "test.jsonl", [{"text": "held out", "label": rows[0]["label"]}])
    for seed in range(8):
        splits = load_splits(spec_for(tmp_path, kind=kind, seed=seed, dev_fraction=0.2))
        train_texts, dev_texts = {e.text for e in splits.train}, {e.text for e in splits.dev}
        assert splits.dev and not train_texts & dev_texts, f"seed {seed}: {sorted(train_texts & dev_texts)[:3]}"
        # every row is still there, once: the carve moves whole groups, it never drops or merges rows
        kept = Counter((e.text, e.target) for e in splits.train + splits.dev)
        assert kept == Counter((r["text"], r["label"]) for r in rows)
        if kind == "classification":  # a label is never carved out of train entirely
            assert {e.target for e in splits.dev} <= {e.target for e in splits.train}


def test_grouped_carve_is_stratified_near_the_fraction_and_stable(tmp_path):
    from tunewise.data.splits import _carve_dev

    rows = _repeated_rows("classification")
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "test.jsonl", [{"text": "held out", "label": "a"}])
    splits = load_splits(spec_for(tmp_path, dev_fraction=0.2))
    assert load_splits(spec_for(tmp_path, dev_fraction=0.2)) == splits
    per_label = Counter(r["label"] for r in rows)
    for label, n in per_label.items():
        in_dev = sum(e.target == label for e in splits.dev)
        assert 1 <= in_dev <= math.ceil(0.2 * n), (label, in_dev, n)
    assert "repeated texts" in splits.dev_origin and "kept whole in train or dev" in splits.dev_origin
    # for a given data hash and seed the carve does not depend on the order of the rows
    train = splits.train + splits.dev
    carve = lambda examples: _carve_dev(examples, stratify=True, fraction=0.2, data_hash="h", seed=0)  # noqa: E731
    assert carve(train) == carve(tuple(reversed(train))) == carve(tuple(random.Random(1).sample(train, len(train))))


def test_a_train_file_of_repeats_only_still_gets_a_dev_group(tmp_path):
    rows = [{"text": f"say {w}", "label": w} for w in ["alpha", "beta", "gamma", "delta"] * 4]
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "test.jsonl", rows[:2])
    splits = load_splits(spec_for(tmp_path, kind="generation"))
    assert len(splits.dev) == 4 and len({e.text for e in splits.dev}) == 1
    assert not {e.text for e in splits.train} & {e.text for e in splits.dev}
    assert len(splits.train) == 12


def test_a_text_repeated_with_one_label_everywhere_stays_in_train(tmp_path):
    rows = [{"text": "only ever this", "label": "a"}] * 5 + labelled({"b": 10})
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "test.jsonl", labelled({"a": 1, "b": 1}))
    splits = load_splits(spec_for(tmp_path))
    assert Counter(e.target for e in splits.train)["a"] == 5 and "a" not in {e.target for e in splits.dev}
    assert splits.dev_origin.endswith("; 1 repeated text (5 rows) kept whole in train or dev")


# --------------------------------------------------------------------------- check_data


def test_normalize_text():
    assert normalize_text("  Is there an AUTO top-up\toption?? ") == "is there an auto top up option"


def test_counts_duplicates_and_conflicting_labels():
    train = [ex(0, "same", "a"), ex(1, "same", "a"), ex(2, "clash", "a"), ex(3, "clash", "b"), ex(4, "other", "b")]
    test = [ex(5, "something else entirely", "a")]
    checks = check_data(splits_of(train, test, labels=("a", "b")), kind="classification")
    assert checks.counts == {"train": 5, "dev": 0, "test": 1}
    assert checks.exact_duplicates == {"train": 2, "dev": 0, "test": 0}
    assert checks.conflicting_duplicates["train"] == 1
    assert any("train has 1 text(s) that appear more than once with different targets" in w for w in checks.warnings)


def test_repeated_texts_are_reported_with_where_they_are(tmp_path):
    rows = [{"text": "say alpha", "label": "alpha"}] * 3 + [{"text": "say beta", "label": "beta"}] * 2
    rows += [{"text": f"say {i}", "label": str(i)} for i in range(15)] + [{"text": "say beta", "label": "other"}]
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "dev.jsonl", [{"text": "say alpha", "label": "alpha"}, {"text": "say 3", "label": "3"}])
    write_jsonl(tmp_path / "test.jsonl", [{"text": "fresh", "label": "x"}] * 2 + [{"text": "say 4", "label": "4"}])
    splits = load_splits(spec_for(tmp_path, kind="generation", dev="dev.jsonl"))
    checks = check_data(splits, kind="generation")
    assert checks.duplicate_groups == {"train": 2, "dev": 0, "test": 1}
    assert checks.duplicate_rows == {"train": 6, "dev": 0, "test": 2}
    assert checks.cross_split_duplicates == {"train/dev": 2, "train/test": 1, "dev/test": 0}
    first = checks.duplicate_examples[0]
    assert first["text"] == "say alpha" and first["rows"] == {"train": 3, "dev": 1}
    assert first["where"][:3] == [f"{tmp_path / 'train.jsonl'}:{line}" for line in (1, 2, 3)]
    beta = next(d for d in checks.duplicate_examples if d["text"] == "say beta")
    assert beta["targets"] == 2
    warnings = " | ".join(checks.warnings)
    assert "train has 2 input texts that occur more than once (6 rows, e.g. 'say alpha' at train.jsonl lines 1, 2, 3)" \
        in warnings
    assert "2 input texts occur in both train and dev (e.g. 'say alpha' at dev.jsonl line 1)" in warnings
    assert all("\n" not in w and w.endswith(".") for w in checks.warnings)
    json.dumps(checks.to_json())


def test_repeated_texts_split_by_the_carve_are_reported_as_none(tmp_path):
    rows = _repeated_rows("generation")
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "test.jsonl", [{"text": "held out", "label": "x"}])
    checks = check_data(load_splits(spec_for(tmp_path, kind="generation", dev_fraction=0.3)), kind="generation")
    assert checks.cross_split_duplicates["train/dev"] == 0
    assert checks.duplicate_rows["train"] + checks.duplicate_rows["dev"] == \
        sum(n for n in Counter(r["text"] for r in rows).values() if n > 1)


def test_exact_and_near_leakage_are_found_and_quoted():
    base = "please tell me how long it takes for my new card to arrive in the post"
    train = [ex(0, base), ex(1, "What is the exchange rate for euros today?"), ex(2, "unrelated words here")]
    test = [
        ex(3, "what is the EXCHANGE rate, for euros today"),  # exact after normalising
        ex(4, base.replace("post", "posts")),  # near duplicate
        ex(5, "how do I close my account"),  # clean
    ]
    checks = check_data(splits_of(train, test), kind="generation")
    assert (checks.leakage_exact, checks.leakage_near) == (1, 1)
    quotes = checks.leakage_examples
    assert quotes[0] == {"test": test[0].text, "train": train[1].text, "similarity": 1.0}
    assert quotes[1]["train"] == base and 0.9 <= quotes[1]["similarity"] < 1.0
    assert any("2 of 3 test examples also occur in train/dev (1 exact" in w for w in checks.warnings)


def test_near_threshold_is_respected_and_dev_counts_as_seen():
    train = [ex(0, "the quick brown fox jumps over the lazy dog")]
    dev = [ex(1, "completely different sentence about banking")]
    test = [ex(2, "the quick brown fox jumped over a lazy dog"), ex(3, "completely different sentence about banking!")]
    strict = check_data(splits_of(train, test, dev=dev), kind="generation", near_threshold=0.95)
    loose = check_data(splits_of(train, test, dev=dev), kind="generation", near_threshold=0.5)
    assert (strict.leakage_exact, strict.leakage_near) == (1, 0)
    assert (loose.leakage_exact, loose.leakage_near) == (1, 1)


def test_no_leakage_no_warning():
    checks = check_data(splits_of([ex(0, "alpha beta gamma")], [ex(1, "delta epsilon zeta")]), kind="generation")
    assert (checks.leakage_exact, checks.leakage_near, checks.leakage_examples, checks.warnings) == (0, 0, [], [])
    assert checks.label_counts is None and checks.imbalance_ratio is None


@pytest.mark.parametrize(
    ("n", "phrase"),
    [(0, "favours prompting"), (99, "favours prompting"), (100, "grey zone"), (1000, "grey zone"),
     (1001, "favours fine-tuning")],
)
def test_volume_assessment_thresholds(n, phrase):
    sentence = volume_assessment(n)
    assert phrase in sentence and f"{n:,} labelled examples" in sentence
    assert sentence.count(". ") == 0 and sentence.endswith(".")


def test_label_statistics_and_warnings():
    train = [ex(i, f"a {i}", "a") for i in range(60)] + [ex(100 + i, f"b {i}", "b") for i in range(3)]
    train += [ex(200 + i, f"c {i}", "c") for i in range(10)]
    test = [ex(300, "a x", "a"), ex(301, "b x", "b")]
    dev = [ex(400, "dev a", "a")]
    checks = check_data(splits_of(train, test, dev=dev, labels=("a", "b", "c", "d")), kind="classification")
    assert checks.label_counts["train"] == {"a": 60, "b": 3, "c": 10, "d": 0}
    assert checks.label_counts["test"] == {"a": 1, "b": 1, "c": 0, "d": 0}
    assert checks.imbalance_ratio == 20.0
    assert checks.min_per_label == 0
    assert "74 labelled examples" in checks.volume_assessment
    assert any("2 label(s) have fewer than 5 training examples: 'd' (0), 'b' (3)" in w for w in checks.warnings)
    assert any("heavily imbalanced ('a' 60 vs 'b' 3, ratio 20)" in w for w in checks.warnings)
    json.dumps(checks.to_json())
    assert isinstance(checks, DataChecks)


def test_near_duplicate_search_matches_brute_force():
    from tunewise.data.checks import _near_matches, _trigrams

    rng = random.Random(7)
    words = "card top up pin rate fee cash app transfer euro account blocked".split()
    corpus = [" ".join(rng.choices(words, k=rng.randint(3, 9))) for _ in range(150)]
    queries = [" ".join(t.split()[:-1]) if i % 2 else t + " fee" for i, t in enumerate(rng.sample(corpus, 40))]
    queries += [" ".join(rng.choices(words, k=5)) for _ in range(40)]
    for threshold in (0.6, 0.8, 0.9):
        expected = {}
        for qi, q in enumerate(queries):
            scores = [len(_trigrams(q) & _trigrams(c)) / len(_trigrams(q) | _trigrams(c)) for c in corpus]
            best = max(scores)
            if best >= threshold:
                expected[qi] = (scores.index(best), round(best, 6))
        found = {q: (c, round(j, 6)) for q, c, j in _near_matches(queries, corpus, threshold)}
        assert found == expected
        assert expected  # the data must exercise the search at every threshold


# --------------------------------------------------------------------------- bad input found by fuzzing
# (tests/test_fuzz_inputs.py): each was a traceback, a silent change of the data or a message over many lines


def _one_sentence(message: str) -> None:
    assert message.endswith(".") and message.isprintable() and len(message) < 400, message


def test_json_number_too_long_for_python_names_the_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": ' + "1" * 5000 + ', "label": "x"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.jsonl: line 2 is not valid JSON \(a number with more than 4300 digits\)"):
        read_records(path, role="train")


def test_json_nested_too_deeply_names_the_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": ' + "[" * 100_000 + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.jsonl: line 1 is not valid JSON \(nested too deeply\)"):
        read_records(path, role="train")


def test_json_object_repeating_a_key_is_an_error_not_the_last_value(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "x", "label": "y"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.jsonl: line 2 repeats the key 'label' in one object"):
        read_records(path, role="train")
    path.write_text('{"text": "a", "fields": {"n": 1, "n": 2}}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"line 1 repeats the key 'n' in one object"):
        read_records(path, role="train")


def test_csv_cells_larger_than_the_csv_module_default_are_read(tmp_path):
    path = tmp_path / "train.csv"
    long_text = "word " * 60_000  # 300,000 characters: over csv's 131,072 default field limit
    path.write_text(f"text,label\n{long_text},a\nshort,b\n", encoding="utf-8")
    assert read_records(path, role="train") == [(2, {"text": long_text, "label": "a"}), (3, {"text": "short", "label": "b"})]
    import csv as csv_module

    assert csv_module.field_size_limit() == 131_072  # left as it was


def test_extraction_target_json_text_with_a_huge_number_names_the_field(tmp_path):
    (tmp_path / "train.csv").write_text('text,fields\na,"{""n"": ' + "9" * 5000 + '}"\n', encoding="utf-8")
    write_jsonl(tmp_path / "test.jsonl", [{"text": "c", "fields": {"n": 1}}])
    with pytest.raises(DataError, match=r"train\.csv: line 2 field 'fields' is a string that is not valid JSON"):
        load_splits(spec_for(tmp_path, kind="extraction", train="train.csv", output="fields"))


def test_parquet_extraction_target_holding_a_timestamp_names_the_field(tmp_path):
    import datetime

    write_parquet(tmp_path / "train.parquet", [{"text": f"t{i}", "fields": {"at": datetime.datetime(2024, 1, i + 1)}}
                                                for i in range(3)])
    write_jsonl(tmp_path / "test.jsonl", [{"text": "c", "fields": {"at": "2024-01-01"}}])
    with pytest.raises(DataError, match=r"train\.parquet: line 1 field 'fields' holds a date/time at 'at', but extraction "
                                        r"targets must hold only JSON values"):
        load_splits(spec_for(tmp_path, kind="extraction", train="train.parquet", output="fields"))


def test_parquet_value_types_are_named_in_words(tmp_path):
    write_parquet(tmp_path / "train.parquet", [{"text": b"raw bytes", "label": "a"}])
    write_jsonl(tmp_path / "test.jsonl", [{"text": "c", "label": "a"}])
    with pytest.raises(DataError, match=r"line 1 field 'text' is binary data, but input fields must be text or numbers"):
        load_splits(spec_for(tmp_path, train="train.parquet"))


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_not_turned_into_text(tmp_path, value):
    (tmp_path / "train.jsonl").write_text(f'{{"text": "a", "label": "x"}}\n{{"text": {value}, "label": "x"}}\n')
    write_jsonl(tmp_path / "test.jsonl", [{"text": "c", "label": "x"}])
    with pytest.raises(DataError, match=r"train\.jsonl: line 2 field 'text' is not a finite number"):
        load_splits(spec_for(tmp_path))


def test_path_holding_a_nul_character_is_a_data_error(tmp_path):
    from tunewise.data.reading import read_records as read

    with pytest.raises(DataError, match=r"cannot read the file \(its name holds a NUL character\)") as info:
        read(tmp_path / "tr\x00ain.jsonl", role="train")
    _one_sentence(str(info.value))


def test_user_text_in_messages_is_escaped_and_shortened(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"te\nxt": "x", "label": "a"}])
    write_jsonl(tmp_path / "test.jsonl", [{"text": "c", "label": "a"}])
    with pytest.raises(DataError, match=r"line 1 has no field 'text' \(its fields are 'te\\nxt', 'label'\)") as info:
        load_splits(spec_for(tmp_path))
    _one_sentence(str(info.value))
    write_jsonl(tmp_path / "train.jsonl", [{"text": f"t{i}", "label": "a\n" + "b" * 1000} for i in range(3)])
    with pytest.raises(DataError, match=r"label 'a' never appears in train \(1 train labels: 'a\\nbbbb") as info:
        load_splits(spec_for(tmp_path))
    _one_sentence(str(info.value))
    (tmp_path / "train.csv").write_text("x" * 5000 + "," + "x" * 5000 + "\n1,2\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"names column 'xxx.*…' more than once") as info:
        read_records(tmp_path / "train.csv", role="train")
    _one_sentence(str(info.value))


def test_label_file_nested_too_deeply(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", labelled({"a": 3}))
    write_jsonl(tmp_path / "test.jsonl", labelled({"a": 1}))
    (tmp_path / "labels.yaml").write_text("- " + "[" * 5000 + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"labels\.yaml: the label file is not valid YAML"):
        load_splits(spec_for(tmp_path, labels="labels.yaml"))
    (tmp_path / "labels.json").write_text("[" * 100_000, encoding="utf-8")
    with pytest.raises(DataError, match=r"labels\.json: the label file is not valid JSON"):
        load_splits(spec_for(tmp_path, labels="labels.json"))


def test_check_warnings_quote_labels_and_texts_on_one_line():
    train = [ex(0, "a\x1bb", "\x1b"), ex(1, "tab\there", "ok"), ex(2, "tab\there", "ok")] + \
        [ex(10 + i, f"text {i}", "ok") for i in range(60)]
    checks = check_data(splits_of(train, [ex(99, "other", "ok")], labels=("\x1b", "ok")), kind="classification")
    assert checks.warnings and all(w.isprintable() for w in checks.warnings), checks.warnings
    assert any("'\\x1b' (1)" in w for w in checks.warnings)
    assert any("'tab\\there'" in w for w in checks.warnings)


def test_a_lone_surrogate_escape_names_the_line_and_field(tmp_path):
    # JSON may spell half of a UTF-16 pair ("\ud800"); Python keeps it, and hashing or saving it raised
    (tmp_path / "train.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b\\ud800", "label": "x"}\n')
    write_jsonl(tmp_path / "test.jsonl", [{"text": "c", "label": "x"}])
    with pytest.raises(DataError, match=r"train\.jsonl: line 2 field 'text' holds \\ud800, half of a UTF-16 "
                                        r"surrogate pair, which is not a character") as info:
        load_splits(spec_for(tmp_path))
    _one_sentence(str(info.value))
    (tmp_path / "train.jsonl").write_text('{"text": "a", "fields": {"city": ["\\udfff"]}}\n')
    with pytest.raises(DataError, match=r"line 1 field 'fields\.city\[0\]' holds \\udfff"):
        read_records(tmp_path / "train.jsonl", role="train")


def test_a_lone_surrogate_in_an_extraction_cell_names_the_field(tmp_path):
    (tmp_path / "train.csv").write_text('text,fields\na,"{""n"": ""\\ud800""}"\n', encoding="utf-8")
    write_jsonl(tmp_path / "test.jsonl", [{"text": "c", "fields": {"n": 1}}])
    with pytest.raises(DataError, match=r"train\.csv: line 2 field 'fields\.n' holds \\ud800, half of a UTF-16 surrogate"):
        load_splits(spec_for(tmp_path, kind="extraction", train="train.csv", output="fields"))


def test_parquet_naming_a_column_twice_says_so(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_arrays([pa.array(["a"]), pa.array(["b"])], names=["text", "text"]),
                   tmp_path / "train.parquet")
    with pytest.raises(DataError, match=r"train\.parquet: the file names column 'text' more than once\.$"):
        read_records(tmp_path / "train.parquet", role="train")
