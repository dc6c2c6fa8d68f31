"""task.yaml validation: every mistake is one sentence naming the key and the file."""

from __future__ import annotations

import pytest

from tunewise.errors import TaskSpecError
from tunewise.task import load_task

BASE = "name: t\nkind: classification\ndata:\n  train: train.jsonl\n  test: test.jsonl\n"


def _load(tmp_path, text):
    path = tmp_path / "task.yaml"
    path.write_text(text)
    return load_task(path)


def test_minimal_task_gets_defaults(tmp_path):
    spec = _load(tmp_path, BASE)
    assert spec.model == "local:smollm2-135m" and spec.seed == 0
    assert spec.resolve(spec.data.train) == tmp_path / "train.jsonl"
    assert spec.store_dir == tmp_path / ".tunewise"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("modle: hf:x\n", "unknown key 'modle'"),
        ("constraints:\n  max_latency: 3\n", "unknown key 'constraints.max_latency'"),
        ("target:\n  accuracy: 90\n", "between 0 and 1"),
        ("target:\n  field_f1: 0.9\n", "does not apply to classification"),
        ("seed: many\n", "key 'seed'"),
        ("kind: regression\n", "key 'kind'"),
    ],
)
def test_mistakes_name_the_key_and_the_file(tmp_path, extra, message):
    text = BASE.replace("kind: classification\n", "") + extra if extra.startswith("kind") else BASE + extra
    with pytest.raises(TaskSpecError, match=message) as info:
        _load(tmp_path, text)
    assert "task.yaml" in str(info.value) and "\n" not in str(info.value)


def test_missing_data_section_and_bad_yaml(tmp_path):
    with pytest.raises(TaskSpecError, match="missing required key 'data'"):
        _load(tmp_path, "name: t\n")
    with pytest.raises(TaskSpecError, match=r"line \d+ is not valid YAML"):
        _load(tmp_path, "name: t\ndata: [\n")
    with pytest.raises(TaskSpecError, match="not found"):
        load_task(tmp_path / "absent.yaml")


def test_fingerprint_ignores_store_location(tmp_path):
    a = _load(tmp_path, BASE)
    b = _load(tmp_path, BASE + "store: elsewhere\n")
    c = _load(tmp_path, BASE + "seed: 1\n")
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


@pytest.mark.parametrize("example", ["banking77", "snips_slots", "fin_sentiment"])
def test_bundled_examples_validate(example):
    from pathlib import Path

    spec = load_task(Path(__file__).parents[1] / "examples" / example / "task.yaml")
    assert spec.resolve(spec.data.train).exists() and spec.resolve(spec.data.test).exists()
