"""``tunewise monitor TASK``: is the deployed candidate still seeing, and doing, what it was evaluated on?

Prints one row per check and a verdict. When a check fires and ``--export-labels`` is given, it also
writes the feedback-labelled requests as the test split of a derived task and prints the command that
re-runs the decision on them; without the flag it only says how many labels there are (feedback labels
come from clients, so they never become a test split unasked). Exit status 0 either way (3 with
``--fail-on-drift`` when something fired, for cron).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from ..task import load_task
from ._common import user_errors

DRIFT_EXIT = 3


def _p(check: dict) -> str:
    p = check["p_adjusted"] if check["p_adjusted"] is not None else check["p_value"]
    return "" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")


def _print(payload: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    w, ref, verdict = payload["window"], payload["reference"], payload["verdict"]
    versions = ", ".join(f"{v}: {n}" for v, n in w["versions"].items()) or "none"
    console.print(f"[bold]{payload['task']}[/]: {w['requests']} requests"
                  + (f" since {w['start']}" if w["start"] else "") + f" (versions {versions}), "
                  f"{w['feedback']} with feedback, {w['shadow']} shadow answers; log {payload['log']}")
    basis = f"rung {ref['rung']} of run {ref['run_id']} ({ref['rung_basis']})" if ref["rung"] else ref["note"]
    console.print(f"reference: the test split ({ref['test_inputs']} inputs); {basis}")
    table = Table(show_lines=False)
    for column in ("check", "now vs evaluation", "p (Holm)", "result"):
        table.add_column(column, overflow="fold")
    for c in verdict["checks"]:
        result = "[dim]not run[/]" if c["skipped"] else ("[bold red]SHIFTED[/]" if c["drifted"] else "[green]ok[/]")
        table.add_row(c["title"], c["skipped"] or c["finding"], _p(c), result)
    console.print(table)
    for arm in payload["arms"]:
        console.print(f"A/B: {arm['explanation']}")
    colour = {"drift": "bold red", "ok": "bold green"}.get(verdict["status"], "bold yellow")
    console.print(f"[{colour}]{verdict['headline']}[/]")


def _print_export(export: dict) -> None:
    click.echo(export["note"])
    if export["labelled"]:
        click.echo(f"labelled requests: {export['labelled']}")
    if export["new_labels_file"]:
        click.echo(f"requests with new labels: {export['new_labels_file']}")
    if export["command"]:
        click.echo("re-run the decision on the fresh labelled data:")
        click.echo(f"  {export['command']}")


@click.command("monitor")
@click.argument("task", type=click.Path(path_type=Path))
@click.option("--since", default="7d", show_default=True,
              help="Window: requests of the last DURATION (7d, 24h, 30m, 90s); 'all' for the whole log.")
@click.option("--last", type=int, help="Only the last N requests (with --since: the last N within it).")
@click.option("--rung", help="Rung of the newest run whose evaluation is the reference "
                             "(default: the decision's winner, else the best finished rung).")
@click.option("--store", type=click.Path(path_type=Path), help="Run-store directory (default: the task's).")
@click.option("--log", "log_path", type=click.Path(path_type=Path),
              help="Request log (default: STORE/serve/requests.sqlite).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--fail-on-drift", is_flag=True, help=f"Exit {DRIFT_EXIT} when drift or degradation is detected.")
@click.option("--export-labels", is_flag=True,
              help="When something shifted, write the feedback-labelled requests as the test split of a task that "
                   "re-runs the decision (off by default: feedback labels come from clients).")
@click.option("--label-client", "label_clients", multiple=True, metavar="KEY_ID",
              help="With --export-labels: use only labels sent with this client key id (repeatable; ids as "
                   "`tunewise serve` prints them).")
def monitor_cmd(task: Path, since: str, last: int | None, rung: str | None, store: Path | None,
                log_path: Path | None, as_json: bool, fail_on_drift: bool, export_labels: bool,
                label_clients: tuple[str, ...]) -> None:
    """Compare TASK's recent served traffic with its evaluation: input drift (sentence embeddings, length,
    vocabulary), prediction shift, falling confidence, accuracy on feedback labels, and the A/B arms.

    When something shifted and --export-labels is given, it writes the feedback-labelled requests to
    STORE/monitor/ and prints the command that re-runs the decision on them; when nothing did, it says so.
    """
    from ..monitoring.export import export_labelled, labelled_requests
    from ..monitoring.monitor import monitor

    if label_clients and not export_labels:
        raise click.UsageError("--label-client only applies with --export-labels.")
    clients = set(label_clients) or None
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # the embedder's weight-loading bar is noise here
    with user_errors():
        spec = load_task(task)
        if store is not None:
            spec = spec.model_copy(update={"store": store.resolve()})
        report = monitor(spec, since=None if since.strip().lower() == "all" else since, last=last, rung=rung,
                         log=log_path)
        export = (export_labelled(spec, report.traffic, labels=report.reference.labels, clients=clients)
                  if report.drifted and export_labels else None)
    hint = None
    if report.drifted and not export_labels and (n := labelled_requests(report.traffic)):
        hint = (f"{n} request{' carries a feedback label' if n == 1 else 's carry feedback labels'}; pass "
                "--export-labels to write them as the test split of a task that re-runs the decision.")
    payload = {**report.to_json(), "export": None if export is None else export.to_json(), "export_hint": hint}
    if as_json:
        click.echo(json.dumps(payload, indent=2, ensure_ascii=False))
    else:
        _print(payload)
        if export is not None:
            _print_export(payload["export"])
        elif hint:
            click.echo(hint)
    if fail_on_drift and report.drifted:
        sys.exit(DRIFT_EXIT)
