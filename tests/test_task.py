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


# --------------------------------------------------------------------------- bad task files found by fuzzing
# (tests/test_fuzz_inputs.py): each was a traceback, a silently ignored value or a message over several lines


def _one_sentence(message: str) -> None:
    assert message.endswith(".") and message.isprintable() and len(message) < 400, message


def test_yaml_nested_too_deeply_is_a_task_error(tmp_path):
    with pytest.raises(TaskSpecError, match=r"task\.yaml: the YAML is nested too deeply to read") as info:
        _load(tmp_path, BASE + "name: " + "[" * 1000 + "\n")
    _one_sentence(str(info.value))


def test_a_key_given_twice_is_an_error_not_the_last_value(tmp_path):
    with pytest.raises(TaskSpecError, match=r"task\.yaml: line 7 repeats the key 'seed'") as info:
        _load(tmp_path, BASE + "seed: 1\nseed: 2\n")
    _one_sentence(str(info.value))
    with pytest.raises(TaskSpecError, match=r"task\.yaml: line 6 repeats the key 'train'"):
        _load(tmp_path, BASE + "  train: other.jsonl\n")
    # YAML merge keys may still override what they merge
    spec = _load(tmp_path, "data:\n  <<: {train: a.jsonl, test: b.jsonl}\n  test: c.jsonl\n")
    assert str(spec.data.test) == "c.jsonl"


def test_keys_and_values_with_control_characters_stay_on_one_line(tmp_path):
    with pytest.raises(TaskSpecError, match=r"unknown key 'a\\nb' \(check its spelling\)") as info:
        _load(tmp_path, BASE + '"a\\nb": 1\n')
    _one_sentence(str(info.value))
    with pytest.raises(TaskSpecError, match=r"task\.yaml: target metric 'a\\nb' does not apply to classification") as info:
        _load(tmp_path, BASE + 'target: {"a\\nb": 0.5}\n')
    _one_sentence(str(info.value))


def test_keys_that_are_not_text_are_named_as_written(tmp_path):
    with pytest.raises(TaskSpecError, match=r"task\.yaml: key '2020-01-01' is not text \(keys must be names\)") as info:
        _load(tmp_path, BASE + "2020-01-01: 1\n")
    _one_sentence(str(info.value))


@pytest.mark.parametrize(("value", "message"), [("[]", "names no field"), ("[text, text]", "names 'text' twice"),
                                                ("''", "names no field")])
def test_input_must_name_distinct_fields(tmp_path, value, message):
    with pytest.raises(TaskSpecError, match=rf"key 'data\.input': {message}") as info:
        _load(tmp_path, BASE + f"  input: {value}\n")
    _one_sentence(str(info.value))


def test_paths_that_cannot_name_a_file_are_task_errors(tmp_path):
    with pytest.raises(TaskSpecError, match=r"key 'data\.train': the path holds a NUL character") as info:
        _load(tmp_path, BASE.replace("train.jsonl", '"tr\\0ain.jsonl"'))
    _one_sentence(str(info.value))
    with pytest.raises(TaskSpecError, match=r"key 'data\.test': '~' names no user on this machine") as info:
        _load(tmp_path, BASE.replace("test.jsonl", "~no_such_user_here/test.jsonl"))
    _one_sentence(str(info.value))


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_seed_must_fit_the_random_generators(tmp_path, seed):
    # numpy's default_rng and scikit-learn's random_state take 0 <= seed < 2**32: a run would fail halfway
    with pytest.raises(TaskSpecError, match=r"key 'seed': Input should be (greater|less) than"):
        _load(tmp_path, BASE + f"seed: {seed}\n")


def test_a_value_nested_past_what_can_be_recorded_is_a_task_error(tmp_path):
    params = "{a: " * 300 + "1" + "}" * 300
    with pytest.raises(TaskSpecError, match=r"key 'rungs\.0\.params\.a\.a…' is nested more than 50 levels deep") as info:
        _load(tmp_path, BASE + f"rungs: [{{name: x, strategy: y, params: {params}}}]\n")
    _one_sentence(str(info.value))


def test_a_union_error_names_the_deepest_key_not_a_type(tmp_path):
    with pytest.raises(TaskSpecError, match=r"task\.yaml: key 'rungs\.0\.params\.1' is not text") as info:
        _load(tmp_path, BASE + "rungs: [{name: x, strategy: y, params: {1: 2}}]\n")
    _one_sentence(str(info.value))
    with pytest.raises(TaskSpecError, match=r"key 'data\.input\.1': Input should be a valid string"):
        _load(tmp_path, BASE + "  input: [text, 3]\n")


def test_yaml_aliases_that_refer_to_themselves_or_explode_are_task_errors(tmp_path):
    with pytest.raises(TaskSpecError, match=r"key 'rungs\.0\.params\.a\.a…' is nested more than 50 levels deep"):
        _load(tmp_path, BASE + "rungs: [{name: x, strategy: y, params: &p {a: *p}}]\n")
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 7)]  # 10**7 values from 7 lines
    text = BASE + "rungs:\n  - name: x\n    strategy: y\n    params:\n" + "".join(f"      {line}\n" for line in lines)
    with pytest.raises(TaskSpecError, match=r"task\.yaml: expands to more than 200,000 values") as info:
        _load(tmp_path, text)
    _one_sentence(str(info.value))


def test_build_task_with_a_lone_surrogate_names_the_record(tmp_path):
    from tunewise.task import build_task

    with pytest.raises(TaskSpecError, match=r"data\.test: record 2 holds text that is not valid Unicode") as info:
        build_task(train=[{"text": "a", "label": "x"}], test=[{"text": "b", "label": "x"}, {"text": "\ud800"}],
                   store=tmp_path)
    _one_sentence(str(info.value))


def test_yaml_errors_say_what_is_wrong_and_where(tmp_path):
    with pytest.raises(TaskSpecError, match=r"task\.yaml: line 6 holds the character \\x07, which YAML does not allow\.$"):
        _load(tmp_path, BASE + "name: a\x07b\n")
    with pytest.raises(TaskSpecError, match=r"task\.yaml: line 6 is not valid YAML \(but found another document\)\.$"):
        _load(tmp_path, BASE + "---\nname: b\n")


def test_build_task_names_what_a_record_is_in_words(tmp_path):
    from tunewise.task import build_task

    with pytest.raises(TaskSpecError, match=r"data\.train: record 2 is binary data, not a mapping of fields\.$"):
        build_task(train=[{"text": "a", "label": "x"}, b"raw"], test=[{"text": "b", "label": "x"}], store=tmp_path)
    with pytest.raises(TaskSpecError, match=r"data\.train: record 1 holds a value JSON cannot represent \(a set\)\.$"):
        build_task(train=[{"text": {1, 2}, "label": "x"}], test=[{"text": "b", "label": "x"}], store=tmp_path)


def test_a_lone_surrogate_escape_in_the_yaml_names_the_key(tmp_path):
    # found by benchmarks/fuzz_inputs.py: YAML's "\uD800" loaded, then fingerprinting the task raised
    with pytest.raises(TaskSpecError, match=r"task\.yaml: key 'instructions' holds \\ud800, half of a UTF-16 "
                                            r"surrogate pair, which is not a character\.$") as info:
        _load(tmp_path, BASE + 'instructions: "Say \\uD800"\n')
    _one_sentence(str(info.value))
    with pytest.raises(TaskSpecError, match=r"key 'rungs\.0\.params\.\\udfff' holds \\udfff"):
        _load(tmp_path, BASE + 'rungs: [{name: x, strategy: y, params: {"\\uDFFF": 1}}]\n')
