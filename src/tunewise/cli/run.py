"""``tunewise run TASK``: score the ladder's rungs on the frozen split and say where the results are."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ..costs import load_prices
from ..run import RunOutcome, run_task
from ..task import load_task
from ._common import user_errors
from .progress import ProgressBars


def _quiet_libraries() -> None:
    """transformers draws its own weight-loading bars on stderr; ours are the ones that matter.

    The variable is read when huggingface_hub is first imported, which happens later, lazily.
    """
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _verdict(outcome: RunOutcome) -> None:
    """Why the ladder stopped, what early rejection saved, the decision and its next step."""
    ladder = outcome.results.ladder
    if ladder.stop is not None:
        click.echo(f"ladder: {ladder.stop.reason}")
    saved = ladder.early_rejection
    if saved is not None and saved.rungs:
        click.echo(f"early rejection: {', '.join(saved.rungs)}; saved about {saved.saved_calls:,.0f} "
                   f"model calls, {saved.saved_s / 60:.1f} min")
    decision = outcome.decision
    click.echo(f"decision: {decision.winner or 'no candidate meets the target and constraints'} ({decision.status})")
    if decision.next_step:
        click.echo(f"next step: {decision.next_step}")


@click.command("run")
@click.argument("task", type=click.Path(path_type=Path))
@click.option("--rungs", help="Comma-separated rung names to run instead of the default ladder.")
@click.option("--limit", type=int, help="Score a stratified subset of N test examples (quick runs).")
@click.option("--model", help="Override the task's model, e.g. local:smollm2-135m, hf:/path/to/model, fake:random; "
              "several, comma-separated, are weighed in one decision (rung@model).")
@click.option("--store", type=click.Path(path_type=Path), help="Run-store directory (default: .tunewise/ beside TASK).")
@click.option("--prices", "prices_path", type=click.Path(path_type=Path),
              help="YAML/JSON price file (or a LiteLLM model price JSON) merged over the default price table (API "
              "token and device-hour prices).")
@click.option("--quick", is_flag=True, help="A first answer in minutes: at most 100 stratified test examples and "
              "a 4-minute budget (wider intervals; rungs that cannot fit are skipped and say so).")
@click.option("--mlflow", "mlflow_uri", is_flag=False, flag_value="env", default=None, metavar="[URI]",
              help="Log the finished run to MLflow at URI (alone: MLFLOW_TRACKING_URI); needs tunewise[tracking].")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def run_cmd(task: Path, rungs: str | None, limit: int | None, model: str | None, store: Path | None,
            prices_path: Path | None, quick: bool, mlflow_uri: str | None, quiet: bool) -> None:
    """Run (or resume) TASK: baselines and prompt rungs, each with 95% CIs, tokens and latency."""
    with user_errors():
        spec = load_task(task)
        prices = load_prices(prices_path)  # a bad price file fails before any model runs
        if model:
            spec = spec.with_models([m.strip() for m in model.split(",") if m.strip()])
        spec = spec.model_copy(update={"store": store.resolve()}) if store else spec
        names = [r.strip() for r in rungs.split(",") if r.strip()] if rungs else None
        _quiet_libraries()
        with ProgressBars(enabled=not quiet) as bars:
            outcome = run_task(spec, rungs=names, limit=limit, progress=bars, task_path=task.resolve(),
                               prices=prices, quick=quick, mlflow=True if mlflow_uri == "env" else mlflow_uri)
    problems: dict[str, list[str]] = {}
    width = max([22, *(len(r.name) for r in outcome.results.rungs)])  # rung@model names are longer
    for r in outcome.results.rungs:
        if r.status == "finished" and r.primary is not None:
            m = r.primary
            click.echo(f"{r.name:<{width}} {r.primary_metric} {100 * m.value:5.1f}% [{100 * m.low:.1f}, {100 * m.high:.1f}]"
                       f"{'  (reused)' if r.name in outcome.reused else ''}")
        else:
            problems.setdefault(f"{r.status}: {r.error or r.reason}", []).append(r.name)
    for problem, names in problems.items():  # one line per distinct error, not one per rung
        click.echo(f"{', '.join(names)} {problem}", err=True)
    _verdict(outcome)
    click.echo(f"results: {outcome.results_path}")
    click.echo(f"summary: {outcome.summary_path}")
    if outcome.report_path:
        click.echo(f"report:  {outcome.report_path}")
    if outcome.version:
        click.echo(f"version: {outcome.version} (alias candidate; deploy it with "
                   "`tunewise versions promote candidate --alias production`)")
    tracked = outcome.tracking
    if tracked is not None and tracked.warning:
        click.echo(f"warning: {tracked.warning}", err=True)
    elif tracked is not None:
        click.echo(f"mlflow:  run {tracked.run_id} in experiment {tracked.experiment!r} "
                   f"({tracked.uri or 'MLFLOW_TRACKING_URI'})")
    if outcome.results.status != "finished":
        sys.exit(1)
