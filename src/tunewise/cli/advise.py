"""``tunewise advise``: the decision matrix before any experiment; no model needed.

Flags are generated from :data:`tunewise.advise.FACTOR_CHOICES`; a factor not given is asked
interactively when stdin is a terminal (``--no-input`` never asks), and otherwise left unknown.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from ..advise import FACTOR_CHOICES, FACTOR_HELP, Factors, advise
from ._common import user_errors

_LEANS = {"prompt": "prompt", "fine-tune": "tune", "data": "data", "neutral": "-"}


def _option(name: str, kind: Any) -> Any:
    flag = "--" + name.replace("_", "-")
    if isinstance(kind, tuple):
        return click.option(flag, name, type=click.Choice(kind), help=FACTOR_HELP[name])
    if kind is bool:
        return click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=FACTOR_HELP[name])
    return click.option(flag, name, type=click.IntRange(min=0), help=FACTOR_HELP[name])


def _ask(name: str, kind: Any) -> Any:
    question = FACTOR_HELP[name] + " (Enter to skip)"
    if isinstance(kind, tuple):
        answer = click.prompt(question, type=click.Choice([*kind, ""]), default="", show_default=False)
    elif kind is bool:
        answer = click.prompt(question, type=click.Choice(["y", "n", ""]), default="", show_default=False)
        return {"y": True, "n": False}.get(answer)
    else:
        answer = click.prompt(question, default="", show_default=False)
        if answer and not str(answer).isdigit():
            raise click.BadParameter(f"{name} must be a whole number", param_hint=name)
        return int(answer) if answer else None
    return answer or None


def _command(fn: Any) -> Any:
    for name, kind in reversed(FACTOR_CHOICES.items()):
        fn = _option(name, kind)(fn)
    return fn


@click.command("advise")
@_command
@click.option("--no-input", is_flag=True, help="Never ask; unknown factors stay unknown.")
def advise_cmd(no_input: bool, **given: Any) -> None:
    """Prompt engineering, fine-tuning, or collect data first? One reason per factor."""
    interactive = not no_input and sys.stdin.isatty()
    values = {}
    for name, kind in FACTOR_CHOICES.items():
        value = given.get(name)
        values[name] = _ask(name, kind) if value is None and interactive else value
    with user_errors():
        result = advise(Factors(**values))
    click.echo(f"Verdict: {result.verdict}")
    click.echo(result.summary)
    for r in result.reasons:
        click.echo(f"  [{_LEANS.get(r.leans, r.leans):>6}] {r.factor} = {r.value}: {r.sentence}")
