"""The ``tunewise`` command: a thin skin over the library (parse, call, print).

One module per command group; nothing else in the package imports this one.
"""

from __future__ import annotations

import click

from .. import __version__
from .advise import advise_cmd
from .init import init_cmd
from .monitor import monitor_cmd
from .report import report_cmd
from .run import run_cmd
from .runs import runs_group
from .serve import serve_cmd
from .train import train_cmd
from .versions import versions_group

__all__ = ["main", "cli"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tunewise")
def cli() -> None:
    """Should we prompt-engineer or fine-tune? Measure it on one frozen split."""


cli.add_command(run_cmd)
cli.add_command(train_cmd)
cli.add_command(init_cmd)
cli.add_command(advise_cmd)
cli.add_command(runs_group)
cli.add_command(report_cmd)
cli.add_command(monitor_cmd)
cli.add_command(versions_group)
cli.add_command(serve_cmd)


def main() -> None:
    cli()
