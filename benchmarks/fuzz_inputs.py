"""Fuzz tunewise's inputs with Hypothesis: task files and data files (JSONL, CSV, Parquet), thousands of each.

The properties and strategies are ``tests/fuzzing.py``'s (the suite runs a few dozen of each in
``tests/test_fuzz_inputs.py``): wrong types, missing fields, huge lines and cells, invalid UTF-8, repeated
keys, empty and cut-short files, corrupt Parquet, odd paths, in-memory records of any Python type. A
property fails when anything but a tunewise error escapes, when a message is not one printable sentence
naming the file (or ``data.<split>``), when ``tunewise init`` writes a task that does not load, or when a
loaded task drops a row or puts one input text in both train and the carved dev set.

The result records, per property, the inputs tried, what happened to them (loaded, or which tunewise
error) with the most frequent message shapes, and every failure with Hypothesis's falsifying example.
Defects found while building this (each fixed, with its regression test) are listed in ``FIXED``.

Run: ``python benchmarks/fuzz_inputs.py`` (2,000 inputs per property, about 5 minutes on 2 busy cores);
``--quick`` for 200. Writes ``benchmarks/results/fuzz_inputs.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import re
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cpu_info, versions, write_result  # noqa: E402
from hypothesis import HealthCheck, given, seed, settings  # noqa: E402
from tests.fuzzing import PROPERTIES  # noqa: E402

#: defects found while this was built, each fixed with its regression test before this run: (how it was found,
#: defect, test). "probe": a hand-written input of one of the issue's categories, tried while the strategies were
#: written; "hypothesis": a falsifying example of these properties; "message shapes": the shapes this script
#: counts showed a message that was accurate but unhelpful.
FIXED = [
    ("probe", "JSONL: a number over Python's 4,300-digit limit raised ValueError",
     "test_data.py::test_json_number_too_long_for_python_names_the_line"),
    ("probe", "JSONL: JSON nested ~1,000 deep raised RecursionError",
     "test_data.py::test_json_nested_too_deeply_names_the_line"),
    ("probe", "JSONL: an object repeating a key silently kept the last value",
     "test_data.py::test_json_object_repeating_a_key_is_an_error_not_the_last_value"),
    ("probe", "CSV: a cell over 131,072 characters was refused as invalid CSV",
     "test_data.py::test_csv_cells_larger_than_the_csv_module_default_are_read"),
    ("probe", "CSV: an extraction cell holding a 5,000-digit number raised ValueError",
     "test_data.py::test_extraction_target_json_text_with_a_huge_number_names_the_field"),
    ("probe", "Parquet: an extraction target holding a timestamp raised TypeError",
     "test_data.py::test_parquet_extraction_target_holding_a_timestamp_names_the_field"),
    ("probe", "NaN / Infinity in a field became the text 'nan' / 'inf'",
     "test_data.py::test_non_finite_numbers_are_not_turned_into_text"),
    ("probe", "a data path holding a NUL character raised ValueError",
     "test_data.py::test_path_holding_a_nul_character_is_a_data_error"),
    ("probe", "messages quoting a field name or label with a line break ran over several lines",
     "test_data.py::test_user_text_in_messages_is_escaped_and_shortened"),
    ("probe", "a label file nested too deeply raised RecursionError",
     "test_data.py::test_label_file_nested_too_deeply"),
    ("probe", "task.yaml nested too deeply raised RecursionError",
     "test_task.py::test_yaml_nested_too_deeply_is_a_task_error"),
    ("probe", "task.yaml giving a key twice silently kept the last value",
     "test_task.py::test_a_key_given_twice_is_an_error_not_the_last_value"),
    ("probe", "task.yaml: unknown keys and target metrics with line breaks gave multi-line messages",
     "test_task.py::test_keys_and_values_with_control_characters_stay_on_one_line"),
    ("probe", "task.yaml: a key that is not text was named by its Python repr",
     "test_task.py::test_keys_that_are_not_text_are_named_as_written"),
    ("probe", "task.yaml: data.input [] rendered every input as '', [text, text] rendered it once",
     "test_task.py::test_input_must_name_distinct_fields"),
    ("probe", "task.yaml: a NUL in a path raised ValueError, an unknown ~user RuntimeError",
     "test_task.py::test_paths_that_cannot_name_a_file_are_task_errors"),
    ("probe", "task.yaml: seed -1 or >= 2**32 loaded, then would fail in numpy / scikit-learn mid-run",
     "test_task.py::test_seed_must_fit_the_random_generators"),
    ("probe", "task.yaml: rung params nested 300 deep loaded, then fingerprinting raised PydanticSerializationError",
     "test_task.py::test_a_value_nested_past_what_can_be_recorded_is_a_task_error"),
    ("probe", "task.yaml: union errors named pydantic's branch ('rungs.0.str') instead of the key",
     "test_task.py::test_a_union_error_names_the_deepest_key_not_a_type"),
    ("probe", "task.yaml: an alias referring to itself, or expanding to 10**7 values, was accepted",
     "test_task.py::test_yaml_aliases_that_refer_to_themselves_or_explode_are_task_errors"),
    ("probe", "init: a field name with a line break ended the header comment and wrote keys into task.yaml",
     "test_init.py::test_field_names_with_line_breaks_stay_inside_the_comments"),
    ("probe", "init: a field named '' was guessed, giving a task that cannot load",
     "test_init.py::test_a_field_with_an_empty_name_is_not_guessed"),
    ("probe", "init: JSON-looking cells with 5,000-digit numbers or deep nesting raised ValueError / RecursionError",
     "test_init.py::test_json_looking_cells_python_cannot_parse_are_not_objects"),
    ("hypothesis", "a lone surrogate escape (\\ud800) in JSONL or a CSV extraction cell raised UnicodeEncodeError",
     "test_data.py::test_a_lone_surrogate_escape_names_the_line_and_field"),
    ("hypothesis", "build_task with a lone surrogate in an in-memory record raised UnicodeEncodeError",
     "test_task.py::test_build_task_with_a_lone_surrogate_names_the_record"),
    ("hypothesis", "task.yaml: a lone surrogate escape (\"\\uD800\") loaded, then fingerprinting raised "
     "PydanticSerializationError (found by the first 2,000-input run of this script)",
     "test_task.py::test_a_lone_surrogate_escape_in_the_yaml_names_the_key"),
    ("hypothesis", "init: a CSV extraction cell with a lone-surrogate key put it into the instructions, and the "
     "task init wrote did not load (found by a 2,000-input run with --seed 7)",
     "test_init.py::test_object_keys_that_are_not_text_do_not_break_the_written_task"),
    ("hypothesis", "data-check warnings quoting a label with a control character were not one line",
     "test_data.py::test_check_warnings_quote_labels_and_texts_on_one_line"),
    ("message shapes", "a control character in task.yaml said ': is not valid YAML' with no line",
     "test_task.py::test_yaml_errors_say_what_is_wrong_and_where"),
    ("message shapes", "a Parquet file naming a column twice quoted pyarrow's FieldRef error",
     "test_data.py::test_parquet_naming_a_column_twice_says_so"),
    ("message shapes", "build_task said 'record 2 is a bytes'",
     "test_task.py::test_build_task_names_what_a_record_is_in_words"),
]

_SHAPE = [(re.compile(r"/tmp/[^\s:']+"), "<file>"), (re.compile(r"'[^']*'"), "'…'"), (re.compile(r"\d+"), "N")]


def shape(message: str) -> str:
    """A message with its file, quoted values and numbers blanked: to count kinds of errors, not instances."""
    for pattern, repl in _SHAPE:
        message = pattern.sub(repl, message)
    return message[:160]


def fuzz(name: str, examples: int, base_seed: int) -> dict:
    strategy, check = PROPERTIES[name]
    outcomes: Counter[str] = Counter()
    shapes: Counter[str] = Counter()
    tried = 0

    @seed(base_seed)
    @settings(max_examples=examples, deadline=None, database=None, report_multiple_bugs=True,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(drawn):
        nonlocal tried
        tried += 1
        outcome, _, message = check(drawn).partition(": ")
        outcomes[outcome] += 1
        if message:
            shapes[shape(message)] += 1

    failures = []
    start = time.perf_counter()
    try:
        run()
    except BaseException as exc:  # noqa: BLE001 - a failing property is the result, not a crash
        if isinstance(exc, KeyboardInterrupt):
            raise
        group = getattr(exc, "exceptions", None) or [exc]
        for err in group:
            origin = err.__cause__ or err  # check_message re-raises what escaped as an AssertionError
            frame = traceback.extract_tb(origin.__traceback__)[-1] if origin.__traceback__ else None
            failures.append({"error": f"{type(err).__name__}: {str(err)[:400]}",
                             "example": " ".join(getattr(err, "__notes__", []))[:2000],
                             "where": f"{frame.filename}:{frame.lineno} in {frame.name}" if frame else None})
    wall = time.perf_counter() - start
    print(f"  {name:<13} {tried:>6} inputs  {wall:6.1f} s  {len(failures)} failure(s)  "
          + ", ".join(f"{k} {v}" for k, v in outcomes.most_common()), flush=True)
    return {"inputs": tried, "wall_s": round(wall, 1), "outcomes": dict(outcomes.most_common()),
            "distinct_message_shapes": len(shapes), "message_shapes": dict(shapes.most_common(25)),
            "failures": failures}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=2000, help="inputs per property (default 2000)")
    p.add_argument("--quick", action="store_true", help="200 inputs per property")
    p.add_argument("--only", default="", help="comma-separated properties, from: " + ", ".join(PROPERTIES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="fuzz_inputs")
    args = p.parse_args(argv)
    examples = min(args.examples, 200) if args.quick else args.examples
    names = [n for n in args.only.split(",") if n] or list(PROPERTIES)
    print(f"fuzzing {', '.join(names)}: {examples} inputs each, seed {args.seed}", flush=True)
    start = time.perf_counter()
    results = {name: fuzz(name, examples, args.seed) for name in names}
    inputs = sum(r["inputs"] for r in results.values())
    failures = sum(len(r["failures"]) for r in results.values())
    data = {"benchmark": "fuzz_inputs",
            "config": {"examples_per_property": examples, "seed": args.seed, "properties": names},
            "environment": {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                            "cpu": cpu_info(), "versions": {**versions(), "hypothesis": _version("hypothesis"),
                                                            "pyarrow": _version("pyarrow"), "pyyaml": _version("pyyaml"),
                                                            "pydantic": _version("pydantic")},
                            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])},
            "totals": {"inputs": inputs, "failures": failures, "wall_s": round(time.perf_counter() - start, 1)},
            "properties": results,
            "fixed_while_building": [{"found_by": how, "defect": d, "regression_test": t} for how, d, t in FIXED]}
    path = write_result(args.out, data)
    print(f"{inputs} inputs, {failures} failure(s), {len(FIXED)} defects fixed while building; wrote {path}")
    return 1 if failures else 0


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
