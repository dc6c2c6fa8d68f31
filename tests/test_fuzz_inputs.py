"""Property-based fuzzing of task files and data files: no traceback, every error one sentence naming the file.

The strategies and properties live in ``tests/fuzzing.py``; here each runs a few dozen examples so the
file stays fast (``benchmarks/fuzz_inputs.py`` runs thousands and commits what it tried and found).
Every defect these found has its own regression test in test_data.py, test_task.py or test_init.py.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from tests.fuzzing import PROPERTIES, check_message
from tunewise.errors import DataError

EXAMPLES = {"read_records": 100, "data_files": 80, "task_files": 120, "init": 60, "build_task": 60}


@pytest.mark.parametrize("name", sorted(PROPERTIES))
def test_bad_input_gives_one_sentence_never_a_traceback(name):
    strategy, check = PROPERTIES[name]

    @settings(max_examples=EXAMPLES[name], deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(strategy)
    def run(drawn):
        check(drawn)

    run()


def test_the_message_check_can_fail():
    check_message(DataError("/tmp/x.jsonl: line 2 has no field 'text'."), "/tmp/x.jsonl")
    for bad in (DataError("/tmp/x.jsonl: line 2\nis bad."), DataError("/tmp/x.jsonl: two. Sentences here."),
                DataError("/tmp/x.jsonl: no full stop"), DataError("names no file."), ValueError("/tmp/x.jsonl: a.")):
        with pytest.raises(AssertionError):
            check_message(bad, "/tmp/x.jsonl")


def test_a_traceback_fails_the_property(monkeypatch):
    import tunewise.data
    from tests.fuzzing import read_property

    assert read_property(".jsonl", b"").startswith("DataError: ")

    def broken(path, *, role):
        raise KeyError(role)

    monkeypatch.setattr(tunewise.data, "read_records", broken)
    with pytest.raises(AssertionError, match="KeyError escaped"):
        read_property(".jsonl", b'{"text": "a"}\n')
