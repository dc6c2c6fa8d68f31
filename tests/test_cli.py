"""The CLI is a thin skin: every command has help, errors are one line, and the commands work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tunewise.cli import cli

from .test_run import write_task

COMMANDS = [["run"], ["train"], ["init"], ["advise"], ["runs"], ["runs", "list"], ["runs", "show"], ["report"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command):
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output
    assert len(result.output.splitlines()) > 3


def test_run_prints_paths_and_runs_lists_it(tmp_path):
    task = write_task(tmp_path)
    result = CliRunner().invoke(cli, ["run", str(task), "--rungs", "knn,zero_shot", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "results: " in result.output and "summary: " in result.output
    results_path = result.output.split("results: ")[1].split()[0]
    assert json.loads(open(results_path).read())["rungs"][0]["name"] == "knn"
    store = str(tmp_path / ".tunewise")
    listed = CliRunner().invoke(cli, ["runs", "list", "--store", store])
    assert "toy" in listed.output and "2/2 rungs" in listed.output
    run_id = listed.output.split()[0]
    shown = CliRunner().invoke(cli, ["runs", "show", run_id[:5], "--store", store])
    assert shown.exit_code == 0 and "zero_shot" in shown.output and "accuracy" in shown.output


def test_missing_task_file_is_one_line_error(tmp_path):
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "nope.yaml" in result.output


def test_runs_show_unknown_run(tmp_path):
    write_task(tmp_path)
    CliRunner().invoke(cli, ["run", str(tmp_path / "task.yaml"), "--rungs", "knn", "--quiet"])
    result = CliRunner().invoke(cli, ["runs", "show", "zzz", "--store", str(tmp_path / ".tunewise")])
    assert result.exit_code == 2 and "zzz" in result.output


def test_init_writes_a_task_that_runs(tmp_path):
    write_task(tmp_path)
    result = CliRunner().invoke(cli, ["init", str(tmp_path / "train.jsonl"), "-o", str(tmp_path / "new.yaml")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "new.yaml").read_text()
    assert "kind: classification" in text and "#" in text
    again = CliRunner().invoke(cli, ["init", str(tmp_path / "train.jsonl"), "-o", str(tmp_path / "new.yaml")])
    assert again.exit_code != 0 and "--force" in again.output


@pytest.mark.parametrize(
    ("flags", "verdict"),
    [
        (["--labelled-examples", "20", "--budget", "low", "--time-to-deploy", "days"], "start with prompt engineering"),
        (["--labelled-examples", "50000", "--accuracy-need", "critical", "--domain-jargon",
          "--requests-per-month", "5000000", "--strict-output-format"], "fine-tune"),
        (["--labelled-examples", "10", "--accuracy-need", "critical", "--domain-jargon", "--strict-output-format",
          "--latency-sensitive"], "collect data first"),
    ],
)
def test_advise_verdicts_with_one_reason_per_factor(flags, verdict):
    result = CliRunner().invoke(cli, ["advise", "--no-input", *flags])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == f"Verdict: {verdict}"
    factors = {f for f in flags if f.startswith("--")}
    reasons = [line for line in result.output.splitlines() if line.startswith("  [")]
    assert len(reasons) == len(factors)


def test_progress_without_a_terminal_prints_quarters(capsys):
    from tunewise.cli.progress import ProgressBars

    with ProgressBars(enabled=True, live=False) as bars:
        for done in range(1, 9):
            bars("zero_shot", done, 8)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == [f"zero_shot: {n}/8" for n in (2, 4, 6, 8)]


def test_run_takes_a_price_file_and_report_reuses_it(tmp_path):
    task = write_task(tmp_path)
    prices = tmp_path / "prices.yaml"
    prices.write_text("device_hour: {cpu: 7.5}\n")
    result = CliRunner().invoke(cli, ["run", str(task), "--rungs", "knn,zero_shot", "--quiet", "--prices", str(prices)])
    assert result.exit_code == 0, result.output
    assert "decision: " in result.output and "next step: " in result.output
    results_path = Path(result.output.split("results: ")[1].split()[0])
    assert json.loads(results_path.read_text())["environment"]["prices"]["device_hour"]["cpu"] == 7.5
    first = json.loads((results_path.parent / "decision.json").read_text())
    assert first["context"]["prices"]["device_hour_usd"]["cpu"] == 7.5
    (results_path.parent / "decision.json").unlink()
    again = CliRunner().invoke(cli, ["report", json.loads(results_path.read_text())["run_id"][:6],
                                     "--store", str(tmp_path / ".tunewise")])
    assert again.exit_code == 0, again.output
    assert json.loads((results_path.parent / "decision.json").read_text()) == first  # same table, same decision
    bad = tmp_path / "bad.yaml"
    bad.write_text("device_hour: {cpu: -1}\n")
    failed = CliRunner().invoke(cli, ["run", str(task), "--quiet", "--prices", str(bad)])
    assert failed.exit_code != 0 and "bad.yaml" in failed.output and "device_hour.cpu" in failed.output
