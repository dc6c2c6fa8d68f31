"""What the commands share: turning a user error into one line on stderr and an exit code."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import click

from ..errors import TunewiseError


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """A :class:`TunewiseError` becomes ``error: <its one sentence>`` and exit status 2."""
    try:
        yield
    except TunewiseError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
