"""``tunewise versions list|show|create|promote|rollback``: deployable versions and their aliases."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import StoreError
from ..store import Store
from ..versions import aliases_of, create_version, list_versions, promote, resolve, rollback
from ._common import user_errors

_STORE = click.option("--store", type=click.Path(path_type=Path), default=Path(".tunewise"), show_default=True,
                      help="Run-store directory.")


def _open(store: Path) -> Store:
    if not (store / "tunewise.db").exists():
        raise StoreError(f"No run store in {store} (give --store DIR).")
    return Store(store)


@click.group("versions")
def versions_group() -> None:
    """Turn finished rungs into deployable versions; move aliases (production, candidate) between them."""


@versions_group.command("list")
@_STORE
def list_cmd(store: Path) -> None:
    """One line per version, newest first: id, aliases, rung, strategy, model and metric with its CI."""
    with user_errors(), _open(store) as st:
        found, named = list_versions(st), aliases_of(st)
    if not found:
        click.echo(f"no versions in {store}; make one with `tunewise versions create RUN RUNG`")
    for v in found:
        tags = ",".join(sorted(named.get(v.id, []))) or "-"
        click.echo(f"{v.id}  {tags:<22} {v.describe()}  run {v.run_id}  {v.created_at}")


@versions_group.command("show")
@click.argument("version")
@_STORE
def show_cmd(version: str, store: Path) -> None:
    """Print the manifest of VERSION (an id, unique prefix or alias) as JSON."""
    with user_errors(), _open(store) as st:
        v = resolve(st, version)
    click.echo(json.dumps({"id": v.id, "created_at": v.created_at, "manifest": v.manifest}, indent=2, default=str))


@versions_group.command("create")
@click.argument("run")
@click.argument("rung")
@click.option("--alias", help="Also point this alias at the new version.")
@_STORE
def create_cmd(run: str, rung: str, alias: str | None, store: Path) -> None:
    """Record RUNG of RUN (an id or unique prefix) as a version; the same rung result gives the same id."""
    with user_errors(), _open(store) as st:
        v = create_version(st, run, rung)
        if alias:
            promote(st, v.id, alias)
    click.echo(f"{v.id}  {v.describe()}" + (f"  -> {alias}" if alias else ""))


@versions_group.command("promote")
@click.argument("version")
@click.option("--alias", required=True, help="The alias to point at VERSION, e.g. production.")
@_STORE
def promote_cmd(version: str, alias: str, store: Path) -> None:
    """Point ALIAS at VERSION (an id, unique prefix or another alias); a running server follows within a second."""
    with user_errors(), _open(store) as st:
        v = promote(st, version, alias)
    click.echo(f"{alias} -> {v.id}  {v.describe()}")


@versions_group.command("rollback")
@click.argument("alias")
@_STORE
def rollback_cmd(alias: str, store: Path) -> None:
    """Point ALIAS back at the version it named before its last promotion."""
    with user_errors(), _open(store) as st:
        v = rollback(st, alias)
    click.echo(f"{alias} -> {v.id}  {v.describe()}")
