"""Model backends, named by ``kind:name`` strings, and the registry that builds them.

``load_backend(spec, **options)`` dispatches on the part before the first ``:``:

* ``fake:...`` - :class:`tunewise.backends.fake.FakeBackend` (dry runs, tests);
* ``local:...`` and ``hf:...`` - :class:`tunewise.backends.local.LocalBackend` (transformers);
* ``openai:...`` - :class:`tunewise.backends.openai.OpenAIBackend` (any OpenAI-compatible endpoint, httpx).

Built-in kinds are imported lazily, so naming the fake backend never imports torch.

Third-party backends use the ``tunewise.backends`` entry-point group: the entry point's name is
the kind and its object a callable ``(spec, **options) -> Backend`` (typically the class), e.g.
in the plugin's ``pyproject.toml``::

    [project.entry-points."tunewise.backends"]
    mybackend = "my_package.backend:MyBackend"

after which ``load_backend("mybackend:some-model")`` calls ``MyBackend("mybackend:some-model")``.
Entry points are only read for kinds that are not built in (built-ins cannot be shadowed).

Out of scope: caching (``cached.py``) and the interface itself (``base.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from typing import Any

from ..errors import BackendError, ModelNotFoundError
from .base import Backend

__all__ = ["BACKEND_KINDS", "ENTRY_POINT_GROUP", "load_backend"]

ENTRY_POINT_GROUP = "tunewise.backends"

# kind -> an example spec (shown in errors and help).
BACKEND_KINDS: dict[str, str] = {
    "local": "local:smollm2-135m",
    "hf": "hf:<model id or path>",
    "openai": "openai:<model>",
    "fake": "fake:random",
}

_TORCH_PACKAGES = {"torch", "transformers", "peft", "safetensors", "gguf", "accelerate"}


def _load_fake(spec: str, **options: Any) -> Backend:
    from .fake import FakeBackend

    return FakeBackend(spec, **options)


def _load_local(spec: str, **options: Any) -> Backend:
    try:
        from .local import LocalBackend
    except ModuleNotFoundError as exc:
        if exc.name not in _TORCH_PACKAGES:
            raise
        raise BackendError(
            f"The {spec!r} backend needs {exc.name}, which is not installed; run `pip install tunewise`"
            " with torch installed first (see the README)."
        ) from exc
    return LocalBackend(spec, **options)


def _load_openai(spec: str, **options: Any) -> Backend:
    try:
        from .openai import OpenAIBackend
    except ModuleNotFoundError as exc:
        if exc.name != "httpx":
            raise
        raise BackendError(f"The {spec!r} backend needs httpx, which is not installed; run `pip install httpx`.") from exc
    return OpenAIBackend(spec, **options)


_BUILTIN: dict[str, Callable[..., Backend]] = {
    "fake": _load_fake,
    "local": _load_local,
    "hf": _load_local,
    "openai": _load_openai,
}


def _plugin_loader(kind: str) -> Callable[..., Backend] | None:
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name == kind:
            try:
                return entry.load()
            except ImportError as exc:
                raise BackendError(f"The {kind!r} backend plugin ({entry.value}) failed to import: {exc}.") from exc
    return None


def _unknown(spec: str) -> ModelNotFoundError:
    plugins = [e.name for e in metadata.entry_points(group=ENTRY_POINT_GROUP) if e.name not in BACKEND_KINDS]
    examples = ", ".join(list(BACKEND_KINDS.values()) + [f"{name}:..." for name in plugins])
    hint = f" (did you mean {BACKEND_KINDS[spec]!r}?)" if spec in BACKEND_KINDS else ""
    return ModelNotFoundError(f"Unknown model {spec!r}{hint}; a model is kind:name, one of {examples}.")


def load_backend(spec: str, **options: Any) -> Backend:
    """Build the backend named by ``spec`` (``kind:name``); ``options`` go to its constructor."""
    kind, sep, _ = spec.partition(":")
    if not sep or not kind:
        raise _unknown(spec)
    loader = _BUILTIN.get(kind) or _plugin_loader(kind)
    if loader is None:
        raise _unknown(spec)
    return loader(spec, **options)
