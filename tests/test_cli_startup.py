"""``tunewise --help`` starts fast: it imports no command module and none of the heavy libraries behind them."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from tunewise.cli import COMMANDS, cli

HEAVY = ("scipy", "torch", "transformers", "sklearn", "pandas", "matplotlib", "sentence_transformers",
         "tunewise.run", "tunewise.ladder")


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


def test_help_imports_no_command_and_no_heavy_library():
    modules = _modules_after(
        "from tunewise.cli import cli\n"
        "try:\n    cli(['--help'], prog_name='tunewise')\nexcept SystemExit:\n    pass"
    )
    assert "tunewise.cli" in modules
    assert _heavy(modules) == []
    assert sorted(m for m in modules if m.startswith("tunewise.cli.")) == []


def test_statistics_import_scipy_only_when_used():
    modules = _modules_after("import tunewise.evaluation.stats")
    assert not any(m == "scipy" or m.startswith("scipy.") for m in modules)


def test_help_lists_every_command_with_its_own_short_help():
    listing = CliRunner().invoke(cli, ["--help"]).output
    ctx = click.Context(cli)
    for name, entry in COMMANDS.items():
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name
        assert command.get_short_help_str(limit=10**6) == entry.summary, name  # keep COMMANDS in step
        assert f"  {name} " in listing


def test_listing_is_the_same_before_and_after_commands_load():
    code = (
        "from tunewise.cli import cli, COMMANDS\n"
        "import click, io, contextlib\n"
        "def listing():\n"
        "    buf = io.StringIO()\n"
        "    with contextlib.redirect_stdout(buf):\n"
        "        try:\n            cli(['--help'], prog_name='tunewise')\n"
        "        except SystemExit:\n            pass\n"
        "    return buf.getvalue()\n"
        "before = listing()\n"
        "ctx = click.Context(cli)\n"
        "[cli.get_command(ctx, n) for n in COMMANDS]\n"
        "assert listing() == before, (before, listing())\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_loads_on_demand(name):
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


def test_unknown_command_is_an_error():
    result = CliRunner().invoke(cli, ["nope"])
    assert result.exit_code == 2 and "No such command 'nope'" in result.output
