"""The ``tunewise`` command: a thin skin over the library (parse, call, print).

One module per command group; nothing else in the package imports this one. A command's module
(and the library behind it: the orchestrator, scipy, torch) is imported only when that command
runs or shows its own help; ``tunewise --help`` lists the commands from :data:`COMMANDS`.
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

import click

from .. import __version__

__all__ = ["main", "cli", "COMMANDS"]


class _Entry(NamedTuple):
    module: str  # relative to this package
    attribute: str
    summary: str  # the command's short help, as ``tunewise --help`` shows it (a test keeps it in step)


COMMANDS: dict[str, _Entry] = {
    "run": _Entry(".run", "run_cmd",
                  "Run (or resume) TASK: baselines and prompt rungs, each with 95% CIs, tokens and latency."),
    "train": _Entry(".train", "train_cmd",
                    "Train (or reuse) the artifact of one fine-tuning rung of TASK, without evaluating it."),
    "init": _Entry(".init", "init_cmd",
                   "Infer fields, task kind and labels from DATAFILE and write a commented task.yaml."),
    "advise": _Entry(".advise", "advise_cmd",
                     "Prompt engineering, fine-tuning, or collect data first? One reason per factor."),
    "runs": _Entry(".runs", "runs_group", "List and inspect recorded runs."),
    "report": _Entry(".report", "report_cmd",
                     "Write report.html, report.md, decision.json and edge_cases.md for RUN (an id or unique prefix)."),
    "monitor": _Entry(".monitor", "monitor_cmd",
                      "Compare TASK's recent served traffic with its evaluation: input drift (sentence embeddings, "
                      "length, vocabulary), prediction shift, falling confidence, accuracy on feedback labels, "
                      "and the A/B arms."),
    "versions": _Entry(".versions", "versions_group",
                       "Turn finished rungs into deployable versions; move aliases (production, candidate) between "
                       "them."),
    "export": _Entry(".export", "export_cmd",
                     "Export VERSION (an id, unique prefix or alias) and print its files and the command that serves "
                     "them."),
    "serve": _Entry(".serve", "serve_cmd",
                    "Serve the versions in TASK_OR_STORE: /v1/chat/completions, /v1/models, /v1/feedback, /admin/*, "
                    "/metrics."),
}


class LazyGroup(click.Group):
    """A group whose commands in :data:`COMMANDS` are imported on first use, not when the CLI starts."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            entry = COMMANDS[cmd_name]
            command = getattr(importlib.import_module(entry.module, __name__), entry.attribute)
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The listing of :meth:`click.Group.format_commands`, from the summaries, without importing a command."""
        summaries = {name: entry.summary for name, entry in COMMANDS.items()}
        for name, command in self.commands.items():
            if not command.hidden:
                summaries[name] = command.get_short_help_str(limit=10**6)
        names = sorted(summaries)
        if not names:
            return
        limit = formatter.width - 6 - max(map(len, names))
        rows = [(name, click.Command(name, help=summaries[name]).get_short_help_str(limit)) for name in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tunewise")
def cli() -> None:
    """Should we prompt-engineer or fine-tune? Measure it on one frozen split."""


def main() -> None:
    cli()
