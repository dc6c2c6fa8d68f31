"""``tunewise init DATAFILE``: write a starter task.yaml inferred from the data."""

from __future__ import annotations

from pathlib import Path

import click

from ..init import infer_task_yaml
from ._common import user_errors


@click.command("init")
@click.argument("datafile", type=click.Path(path_type=Path))
@click.option("--test", "test_file", type=click.Path(path_type=Path), help="Test file (default: a sibling test.*).")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Where to write (default: task.yaml beside DATAFILE).")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init_cmd(datafile: Path, test_file: Path | None, output: Path | None, force: bool) -> None:
    """Infer fields, task kind and labels from DATAFILE and write a commented task.yaml."""
    with user_errors():
        text = infer_task_yaml(datafile, test_file=test_file)
    target = output or datafile.parent / "task.yaml"
    if target.exists() and not force:
        raise click.ClickException(f"{target} exists; pass --force to overwrite it.")
    target.write_text(text, encoding="utf-8")
    click.echo(f"wrote {target}")
