"""``tunewise report RUN``: regenerate the report of a recorded run from its ``results.json`` (no model runs).

``results.json`` becomes typed :class:`~tunewise.results.RunResults`, the decision is made once from them
(:func:`~tunewise.decision.decide`) and handed to the report, which presents it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..costs import Prices, load_prices
from ..data import load_splits
from ..errors import StoreError, TunewiseError
from ..store import RunRecord, Store
from ..task import TaskSpec, parse_task
from ._common import user_errors

if TYPE_CHECKING:
    from ..results import RunResults


def _results_path(record: RunRecord, store: Path) -> Path:
    """The recorded path; a relative one recorded from another directory is found in the store's runs/ folder."""
    if not record.results_path:
        raise StoreError(f"Run {record.id} has no results yet (status {record.status}); finish it with `tunewise run`.")
    recorded, in_store = Path(record.results_path), store / "runs" / record.id / "results.json"
    return in_store if not recorded.exists() and in_store.exists() else recorded


def _results(path: Path, record: RunRecord) -> RunResults:
    from ..results import RunResults

    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StoreError(f"{path}: the results file of run {record.id} is gone; run the task again.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"{path}: cannot read the results of run {record.id} ({exc.__class__.__name__}).") from None
    try:
        return RunResults.from_json(payload)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"{path}: the results of run {record.id} are not a results.json this version of tunewise "
                         f"reads ({exc.__class__.__name__}: {exc}).") from None


def _spec(record: RunRecord, store: Path) -> TaskSpec | dict[str, Any]:
    """The stored spec, with paths resolved beside the task file (else beside the store); the raw dict if invalid."""
    base = Path(record.task_path).parent if record.task_path else store.resolve().parent
    try:
        return parse_task(dict(record.spec), source=f"run {record.id}", base_dir=base)
    except TunewiseError:
        return dict(record.spec)


def _test_examples(spec: TaskSpec | dict[str, Any], record: RunRecord) -> tuple[Any, str | None]:
    """The test examples, or None and the sentence that says why the inputs are not quoted."""
    if not isinstance(spec, TaskSpec):
        return None, "The stored task spec no longer validates, so the test inputs were not loaded and are not quoted."
    try:
        splits = load_splits(spec)
    except (TunewiseError, OSError) as exc:
        return None, f"The test data could not be read ({exc}), so no inputs are quoted and flips are not scored."
    if splits.data_hash != record.data_hash:
        return None, (f"The data files changed since this run (data hash {splits.data_hash}, the run used "
                      f"{record.data_hash}), so no inputs are quoted and flips are not scored.")
    return splits.test, None


def _prices(results: RunResults, path: Path | None) -> Prices:
    """``--prices`` over the defaults; else the table the run recorded (its decision is recomputed as it was)."""
    recorded = (results.environment or {}).get("prices")
    if path is not None or not recorded:
        return load_prices(path)
    try:
        return Prices.model_validate(recorded)
    except ValueError:
        raise StoreError("the price table recorded in results.json is invalid; pass --prices FILE.") from None


@click.command("report")
@click.argument("run")
@click.option("--store", type=click.Path(path_type=Path), default=Path(".tunewise"), show_default=True,
              help="Run-store directory.")
@click.option("--prices", "prices_path", type=click.Path(path_type=Path),
              help="YAML/JSON price file merged over the default price table (default: the table the run used).")
@click.option("--out", type=click.Path(path_type=Path), help="Directory for the report (default: beside results.json).")
@click.option("--open", "open_", is_flag=True, help="Open report.html in the default browser.")
def report_cmd(run: str, store: Path, prices_path: Path | None, out: Path | None, open_: bool) -> None:
    """Write report.html, report.md, decision.json and edge_cases.md for RUN (an id or unique prefix).

    Everything is recomputed from the stored results.json and task spec; no model is run.
    """
    from ..decision import decide
    from ..report import render_report  # matplotlib: only when a report is made

    with user_errors():
        if not (store / "tunewise.db").exists():
            raise StoreError(f"No run store in {store} (give --store DIR).")
        with Store(store) as st:
            record = st.find_run(run)
        results_path = _results_path(record, store)
        results = _results(results_path, record)
        spec = _spec(record, store)
        examples, note = _test_examples(spec, record)
        prices = _prices(results, prices_path)
        decision = decide(results, spec, prices)
        paths = render_report(results, decision, spec=spec, test_examples=examples, prices=prices,
                              out_dir=out or results_path.parent, data_note=note)
    if note:
        click.echo(f"note: {note}", err=True)
    for label, path in (("html", paths.html), ("markdown", paths.markdown), ("decision", paths.json),
                        ("edge cases", paths.edge_cases)):
        click.echo(f"{label}: {path}")
    if open_:
        click.launch(str(paths.html))
