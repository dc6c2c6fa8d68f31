"""``tunewise serve TASK_OR_STORE``: the versions of a run store behind an OpenAI-compatible API (uvicorn)."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import StoreError, TaskSpecError
from ..task import load_task
from ._common import user_errors


def store_dir(target: Path) -> Path:
    """A task file's store, a store directory, or a directory holding ``.tunewise/``."""
    if target.is_file():
        return load_task(target).store_dir
    for candidate in (target, target / ".tunewise"):
        if (candidate / "tunewise.db").is_file():
            return candidate
    raise StoreError(f"No run store in {target} (give a task file or a run-store directory).")


def _split(split: str | None, shadow: str | None, primary: str):
    from ..serving import Split

    if split is None and shadow is None:
        return None
    alias_b, fraction = shadow, 1.0
    if split is not None:
        alias_b, sep, value = split.partition("=")
        try:
            fraction = float(value) if sep else -1.0
        except ValueError:
            fraction = -1.0
        if not 0.0 <= fraction <= 1.0 or not alias_b:
            raise TaskSpecError(f"--split {split!r} must be ALIAS=FRACTION with a fraction between 0 and 1.")
        if shadow is not None and shadow != alias_b:
            raise TaskSpecError("--split and --shadow must name the same alias (the shadow gets the split's users).")
    return Split(alias_a=primary, alias_b=alias_b, fraction_b=fraction, shadow=shadow is not None)


@click.command("serve")
@click.argument("target", metavar="TASK_OR_STORE", type=click.Path(path_type=Path, exists=True))
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
@click.option("--alias", "primary", default="production", show_default=True,
              help="The alias the split applies to (clients ask for it as the model).")
@click.option("--split", help="Send a fraction of users to another alias, sticky per user: e.g. candidate=0.1.")
@click.option("--shadow", help="Also answer with this alias and log it, but return the primary's answer.")
@click.option("--admin-token-file", type=click.Path(path_type=Path),
              help="File holding the admin bearer token (default: $TUNEWISE_ADMIN_TOKEN; none: admin disabled).")
@click.option("--max-batch", type=int, help="Most queued requests one model call answers (default: the backend's).")
@click.option("--api-key", "api_key", multiple=True,
              help="A client key /v1 requires as 'Authorization: Bearer KEY' (repeat for several; default: "
                   "$TUNEWISE_API_KEY, comma-separated; none: /v1 is open and feedback anonymous).")
@click.option("--api-key-file", multiple=True, type=click.Path(path_type=Path),
              help="File of client keys, one a line (keeps them out of the process list).")
@click.option("--max-body-bytes", type=click.IntRange(min=1), default=1_048_576, show_default=True,
              help="Largest request body accepted (413 above).")
@click.option("--max-messages", type=click.IntRange(min=1), default=100, show_default=True,
              help="Most messages in one chat request (400 above).")
@click.option("--max-input-chars", type=click.IntRange(min=1), default=20_000, show_default=True,
              help="Longest input (the last user message) in characters (400 above).")
@click.option("--allow-direct/--no-direct", default=True, show_default=True,
              help="Let clients choose the version by its id (or, during a split, by the B alias): such requests "
                   "bypass the split and are logged as arm 'direct'; --no-direct refuses them (403).")
def serve_cmd(target: Path, host: str, port: int, primary: str, split: str | None, shadow: str | None,
              admin_token_file: Path | None, max_batch: int | None, api_key: tuple[str, ...],
              api_key_file: tuple[Path, ...], max_body_bytes: int, max_messages: int, max_input_chars: int,
              allow_direct: bool) -> None:
    """Serve the versions in TASK_OR_STORE: /v1/chat/completions, /v1/models, /v1/feedback, /admin/*, /metrics.

    Clients ask for an alias (e.g. production) or a version id as the model; requests are logged
    (credentials masked and counted) to <store>/serve/requests.sqlite for `tunewise monitor`.
    """
    import logging

    import uvicorn

    from ..serving import create_app
    from ..serving.app import Limits, admin_token, key_id, load_api_keys

    with user_errors():
        directory = store_dir(target)
        token = admin_token(admin_token_file)
        keys = load_api_keys(api_key, api_key_file)
        limits = Limits(max_body_bytes=max_body_bytes, max_messages=max_messages, max_input_chars=max_input_chars)
        app = create_app(directory, admin_token=token, split=_split(split, shadow, primary), max_batch=max_batch,
                         api_keys=keys, limits=limits, allow_direct=allow_direct)
    handler = logging.StreamHandler()  # failures' details (clients get only a request id)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("tunewise.serve").addHandler(handler)
    if token is None:
        click.echo("note: no admin token (set TUNEWISE_ADMIN_TOKEN or --admin-token-file): admin endpoints are off",
                   err=True)
    if keys:
        click.echo(f"client keys: {len(keys)} ({', '.join(key_id(k) for k in keys)}); /v1 requires one", err=True)
    else:
        click.echo("note: no client keys (--api-key, --api-key-file or TUNEWISE_API_KEY): /v1 and /v1/feedback "
                   "accept anyone", err=True)
    click.echo(f"serving {directory} on http://{host}:{port}/v1", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
