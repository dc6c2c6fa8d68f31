"""Tests for init.py: the inferred task.yaml loads, and its guesses match the data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from tunewise.data import load_splits
from tunewise.errors import DataError
from tunewise.init import find_sibling, infer_task_yaml
from tunewise.task import TaskSpec, load_task

INTENTS = ["card_arrival", "exchange_rate", "lost_card"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def intent_rows(n: int, *, prefix: str = "") -> list[dict]:
    return [
        {"id": i, "text": f"{prefix}customer message number {i} about {INTENTS[i % 3]}", "intent": INTENTS[i % 3]}
        for i in range(n)
    ]


def round_trip(datafile: Path, **kwargs) -> tuple[str, TaskSpec]:
    text = infer_task_yaml(datafile, **kwargs)
    task_path = datafile.parent / "task.yaml"
    task_path.write_text(text, encoding="utf-8")
    return text, load_task(task_path)


def test_classification_round_trip(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", intent_rows(30))
    write_jsonl(tmp_path / "test.jsonl", intent_rows(9, prefix="test "))
    text, spec = round_trip(tmp_path / "train.jsonl")
    assert spec.kind == "classification"
    assert (spec.data.input, spec.data.output) == ("text", "intent")
    assert (spec.data.train, spec.data.test, spec.data.dev) == (Path("train.jsonl"), Path("test.jsonl"), None)
    assert spec.model == "local:smollm2-135m" and spec.seed == 0
    assert text.startswith("# tunewise task, inferred by `tunewise init` from train.jsonl: 30 rows; test file: 9 rows.")
    assert "output 'intent' (3 distinct values) -> kind classification" in text
    splits = load_splits(spec)
    assert splits.labels == tuple(sorted(INTENTS))
    # the commented target example must itself be a valid target for the kind
    target_line = next(line for line in text.splitlines() if line.startswith("target:"))
    example = target_line.split("e.g. ", 1)[1].split(";")[0]
    assert load_task_text(text.replace("target: {}", f"target: {example}"), tmp_path).target == {"accuracy": 0.9}


def load_task_text(text: str, folder: Path) -> TaskSpec:
    (folder / "edited.yaml").write_text(text, encoding="utf-8")
    return load_task(folder / "edited.yaml")


def test_every_task_key_is_written_with_a_comment(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", intent_rows(30))
    text = infer_task_yaml(tmp_path / "train.jsonl")
    raw = yaml.safe_load(text)
    expected_top = {"name", "kind", "data", "target", "constraints", "model", "seed", "instructions", "rungs", "store"}
    assert set(raw) == expected_top
    assert set(raw["data"]) == {"train", "test", "dev", "dev_fraction", "input", "output", "labels", "test_limit"}
    assert set(raw["constraints"]) == set(TaskSpec.model_fields["constraints"].annotation.model_fields)
    lines = text.splitlines()
    for previous, line in zip([""] + lines, lines):
        if line.strip() and not line.lstrip().startswith("#"):
            assert " # " in line or previous.lstrip().startswith("# "), line


def test_extraction_round_trip(tmp_path):
    rows = [
        {"document": f"Invoice {i} from ACME Ltd, total {i * 10} EUR.", "fields": {"number": i, "total": i * 10}}
        for i in range(12)
    ]
    write_jsonl(tmp_path / "docs.jsonl", rows)
    write_jsonl(tmp_path / "docs_test.jsonl", rows[:3])
    text, spec = round_trip(tmp_path / "docs.jsonl")
    assert spec.kind == "extraction" and spec.extraction is not None
    assert (spec.data.input, spec.data.output, spec.data.test) == ("document", "fields", Path("docs_test.jsonl"))
    assert "keys number, total" in spec.instructions
    assert load_splits(spec).test[0].target == {"number": 0, "total": 0}


def test_extraction_from_csv_json_cells(tmp_path):
    path = tmp_path / "train.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "target"])
        for i in range(6):
            writer.writerow([f"Order {i} shipped to Paris", json.dumps({"order": i, "city": "Paris"})])
    _, spec = round_trip(path, test_file=path)
    assert (spec.kind, spec.data.output) == ("extraction", "target")


def test_generation_round_trip_without_a_named_output(tmp_path):
    rows = [{"prompt": f"Summarise long paragraph {i} about topic {i}.", "response": f"Topic {i}."} for i in range(20)]
    write_jsonl(tmp_path / "qa.jsonl", rows)
    write_jsonl(tmp_path / "holdout_test.jsonl", rows[:4])
    text, spec = round_trip(tmp_path / "qa.jsonl")
    assert (spec.kind, spec.data.input, spec.data.output) == ("generation", "prompt", "response")
    assert spec.generation is not None and spec.generation.match == "normalized"
    assert spec.data.test == Path("holdout_test.jsonl")
    assert spec.name == "qa"
    assert len(load_splits(spec).test) == 4


def test_fewest_distinct_field_is_the_output_when_none_is_named(tmp_path):
    rows = [{"utterance": f"a long utterance {i}", "topic": "xy"[i % 2], "speaker": f"s{i % 7}"} for i in range(28)]
    write_jsonl(tmp_path / "train.jsonl", rows)
    _, spec = round_trip(tmp_path / "train.jsonl")
    assert (spec.data.input, spec.data.output, spec.kind) == ("utterance", "topic", "classification")


def test_missing_test_file_gets_a_placeholder_that_still_loads(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,label\n" + "".join(f"message {i},{INTENTS[i % 3]}\n" for i in range(12)), encoding="utf-8")
    text, spec = round_trip(path)
    assert "no test file found" in text.splitlines()[0]
    assert "TODO: no test file found" in text
    assert spec.data.test == Path("test.csv")


def test_explicit_test_file_is_relative_to_the_data(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "held").mkdir()
    write_jsonl(tmp_path / "data" / "train.jsonl", intent_rows(12))
    write_jsonl(tmp_path / "held" / "final.jsonl", intent_rows(3))
    _, spec = round_trip(tmp_path / "data" / "train.jsonl", test_file=tmp_path / "held" / "final.jsonl")
    assert spec.data.test == Path("../held/final.jsonl")
    assert len(load_splits(spec).test) == 3


def test_dev_and_label_files_beside_the_data_are_used(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", intent_rows(30))
    write_jsonl(tmp_path / "test.jsonl", intent_rows(6))
    write_jsonl(tmp_path / "dev.jsonl", intent_rows(6, prefix="dev "))
    (tmp_path / "labels.json").write_text(json.dumps(INTENTS + ["unused"]), encoding="utf-8")
    _, spec = round_trip(tmp_path / "train.jsonl")
    assert (spec.data.dev, spec.data.labels) == (Path("dev.jsonl"), Path("labels.json"))
    assert load_splits(spec).labels == tuple(INTENTS + ["unused"])


def test_label_file_missing_a_train_label_is_not_used(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", intent_rows(30))
    (tmp_path / "labels.json").write_text(json.dumps(INTENTS[:2]), encoding="utf-8")
    _, spec = round_trip(tmp_path / "train.jsonl")
    assert spec.data.labels is None


def test_find_sibling_prefers_exact_names_and_same_suffix(tmp_path):
    for name in ("train.csv", "my_test.jsonl", "test.jsonl", "test.csv", "latest_notes.txt"):
        (tmp_path / name).write_text("x", encoding="utf-8")
    assert find_sibling(tmp_path / "train.csv", ("test",)) == tmp_path / "test.csv"
    (tmp_path / "test.csv").unlink()
    assert find_sibling(tmp_path / "train.csv", ("test",)) == tmp_path / "test.jsonl"
    (tmp_path / "test.jsonl").unlink()
    assert find_sibling(tmp_path / "train.csv", ("test",)) == tmp_path / "my_test.jsonl"
    assert find_sibling(tmp_path / "train.csv", ("dev",)) is None


def test_a_single_field_cannot_be_split_into_input_and_output(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": f"t{i}"} for i in range(5)])
    with pytest.raises(DataError, match=r"train\.jsonl: cannot tell input from output.*found 'text'"):
        infer_task_yaml(tmp_path / "train.jsonl")


def test_unreadable_data_is_reported_as_a_data_error(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        infer_task_yaml(tmp_path / "train.jsonl")


# --------------------------------------------------------------------------- bad input found by fuzzing
# (tests/test_fuzz_inputs.py): the written task.yaml must load and name what was inferred, or init says why


def test_field_names_with_line_breaks_stay_inside_the_comments(tmp_path):
    name = "te\nxt: 1\nmodel: 'fake:evil'\n#"
    rows = [{name: f"customer message number {i}", "label": "ab"[i % 2]} for i in range(12)]
    write_jsonl(tmp_path / "train.jsonl", rows)
    _, spec = round_trip(tmp_path / "train.jsonl")
    assert (spec.data.input, spec.data.output, spec.model) == (name, "label", "local:smollm2-135m")


def test_a_field_with_an_empty_name_is_not_guessed(tmp_path):
    # a task file cannot name a field "" (pandas' to_csv writes its index as one)
    rows = [{"": f"an unnamed and much longer column, row {i}", "text": f"message {i}", "label": "ab"[i % 2]}
            for i in range(12)]
    write_jsonl(tmp_path / "train.jsonl", rows)
    _, spec = round_trip(tmp_path / "train.jsonl")
    assert (spec.data.input, spec.data.output) == ("text", "label")


def test_json_looking_cells_python_cannot_parse_are_not_objects(tmp_path):
    huge = '"{""n"": ' + "9" * 5000 + '}"'
    deep = '"{""n"": ' + "[" * 5000 + '}"'
    (tmp_path / "train.csv").write_text("text,answer\n" + "".join(
        f"message {i},{huge if i % 2 else deep}\n" for i in range(6)), encoding="utf-8")
    _, spec = round_trip(tmp_path / "train.csv")
    assert spec.kind != "extraction"


def test_object_keys_that_are_not_text_do_not_break_the_written_task(tmp_path):
    # found by benchmarks/fuzz_inputs.py (seed 7): a CSV cell '{"\ud800": null}' put a lone surrogate into the
    # instructions, and the task init wrote did not load; now it loads and the data error names the cell
    (tmp_path / "train.csv").write_text('text,label\na,"{""\\ud800"": null}"\nb,"{""k\\nx"": 1}"\n', encoding="utf-8")
    text, spec = round_trip(tmp_path / "train.csv", test_file=tmp_path / "train.csv")
    assert spec.kind == "extraction" and "keys \\ud800, k\\nx." in spec.instructions
    with pytest.raises(DataError, match=r"train\.csv: line 2 field 'label\.\\ud800' holds \\ud800"):
        load_splits(spec)
