"""``tunewise runs list|show``: what the run store holds."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..store import Store
from ._common import user_errors

_STORE = click.option("--store", type=click.Path(path_type=Path), default=Path(".tunewise"), show_default=True,
                      help="Run-store directory.")


@click.group("runs")
def runs_group() -> None:
    """List and inspect recorded runs."""


@runs_group.command("list")
@_STORE
def list_cmd(store: Path) -> None:
    """One line per run: id, task, status, rungs finished, last update."""
    if not (store / "tunewise.db").exists():
        click.echo(f"no runs in {store}")
        return
    with user_errors(), Store(store) as st:
        for run in st.list_runs():
            rungs = st.list_rungs(run.id)
            done = sum(r.status == "finished" for r in rungs)
            click.echo(f"{run.id}  {run.task_name:<20} {run.status:<11} {done}/{len(rungs)} rungs  {run.updated_at}")


@runs_group.command("show")
@click.argument("run")
@_STORE
@click.option("--json", "as_json", is_flag=True, help="Print the stored rung records as JSON.")
def show_cmd(run: str, store: Path, as_json: bool) -> None:
    """Show RUN (an id or unique prefix): its rungs with their primary metric and status."""
    with user_errors(), Store(store) as st:
        record = st.find_run(run)
        rungs = st.list_rungs(record.id)
    if as_json:
        click.echo(json.dumps({"run": record.__dict__, "rungs": [
            {k: v for k, v in r.__dict__.items() if k != "result"} for r in rungs]}, indent=2, default=str))
        return
    click.echo(f"run {record.id}  task {record.task_name}  status {record.status}  data {record.data_hash}")
    if record.results_path:
        click.echo(f"results: {record.results_path}")
    for r in rungs:
        click.echo(f"  {r.name:<22} {r.status:<9} {_metric(r.result) or r.error or r.reason or ''}")


def _metric(result: dict | None) -> str:
    if not result or not result.get("primary_metric"):
        return ""
    m = result["metrics"].get(result["primary_metric"]) or {}
    if m.get("value") is None:
        return ""
    return f"{result['primary_metric']} {100 * m['value']:.1f}% [{100 * m['low']:.1f}, {100 * m['high']:.1f}]"
