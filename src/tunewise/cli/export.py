"""``tunewise export VERSION --format peft|merged|gguf|ollama|prompt --out DIR``: a version for other servers."""

from __future__ import annotations

from pathlib import Path

import click

from ..export import FORMATS, export_version
from ..versions import resolve
from ._common import user_errors
from .versions import _STORE, _open


@click.command("export")
@click.argument("version")
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True,
              help="peft: the adapter for vLLM; merged: safetensors for transformers/vLLM; gguf: for llama.cpp; "
                   "ollama: GGUF + Modelfile; prompt: the scored prompt as files.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Directory to write into.")
@click.option("--name", help="The served model's name (default: TASK-VERSION).")
@click.option("--gguf-dtype", type=click.Choice(["f32", "f16"]), default="f32", show_default=True,
              help="Weight type of a gguf/ollama export.")
@_STORE
def export_cmd(version: str, fmt: str, out: Path, name: str | None, gguf_dtype: str, store: Path) -> None:
    """Export VERSION (an id, unique prefix or alias) and print its files and the command that serves them."""
    with user_errors(), _open(store) as st:
        result = export_version(resolve(st, version), st, fmt=fmt, out=out, name=name, gguf_dtype=gguf_dtype)
    click.echo(f"exported version {result.version} as {result.format} to {result.out}")
    for path in result.files:
        click.echo(f"  {path}")
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo(f"serve: {result.serve_command}" if result.serve_command else "serve: no server command (see the note)")
