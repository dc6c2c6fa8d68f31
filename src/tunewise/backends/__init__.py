"""Model backends, named by ``kind:name`` strings, and the registry that builds them.

``load_backend(spec, **options)`` dispatches on the part before the first ``:``:

* ``fake:...`` - :class:`tunewise.backends.fake.FakeBackend` (dry runs, tests);
* ``local:...`` and ``hf:...`` - :class:`tunewise.backends.local.LocalBackend` (transformers);
* ``openai:...`` - :class:`tunewise.backends.openai.OpenAIBackend` (any OpenAI-compatible endpoint, httpx);
* ``vllm:...`` - :class:`tunewise.backends.vllm.VLLMBackend` (vLLM's offline engine on a CUDA GPU; the extra).

Built-in kinds are imported lazily, so naming the fake backend never imports torch.

Third-party backends use the ``tunewise.backends`` entry-point group: the entry point's name is
the kind and its object a callable ``(spec, **options) -> Backend`` (typically the class), e.g.
in the plugin's ``pyproject.toml``::

    [project.entry-points."tunewise.backends"]
    mybackend = "my_package.backend:MyBackend"

after which ``load_backend("mybackend:some-model")`` calls ``MyBackend("mybackend:some-model")``.
Entry points are only read for kinds that are not built in (built-ins cannot be shadowed).

``build_backend(spec, store)`` is what a run, a version and the server use: the task's model (with the
endpoint settings of its ``backend:`` section) behind the run store's call cache.

Out of scope: the call cache itself (``cached.py``) and the interface (``base.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BackendError, ModelNotFoundError
from .base import Backend

if TYPE_CHECKING:
    from ..costs import Prices
    from ..store import Store
    from ..task import TaskSpec
    from .budget import Purse
    from .cached import CachedBackend

__all__ = ["BACKEND_KINDS", "ENTRY_POINT_GROUP", "load_backend", "build_backend", "backend_options"]

ENTRY_POINT_GROUP = "tunewise.backends"

# kind -> an example spec (shown in errors and help).
BACKEND_KINDS: dict[str, str] = {
    "local": "local:smollm2-135m",
    "hf": "hf:<model id or path>",
    "openai": "openai:<model>",
    "vllm": "vllm:<hub id or path>",
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


def _load_vllm(spec: str, **options: Any) -> Backend:
    from .vllm import VLLMBackend  # imports vllm itself only when built: a missing vllm is a one-sentence error

    return VLLMBackend(spec, **options)


_BUILTIN: dict[str, Callable[..., Backend]] = {
    "fake": _load_fake,
    "local": _load_local,
    "hf": _load_local,
    "openai": _load_openai,
    "vllm": _load_vllm,
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


def backend_options(spec: "TaskSpec", prices: "Prices | None" = None) -> dict[str, Any]:
    """Constructor options of an ``openai:`` model: the task's ``backend`` section, paths resolved against the
    task file, the money cap defaulting to ``constraints.budget_usd`` and prices to the run's table."""
    if not spec.model.startswith("openai:"):
        return {}  # a --model override to another kind: the endpoint settings do not apply
    section = spec.backend
    options = {k: v for k, v in section.model_dump(exclude_unset=True).items() if v is not None} if section else {}
    if section is None or "budget_usd" not in section.model_fields_set:  # an explicit null: no cap
        options["budget_usd"] = spec.constraints.budget_usd
    if "api_key_file" in options:
        options["api_key_file"] = spec.resolve(options["api_key_file"])
    if isinstance(options.get("prices"), Path):
        options["prices"] = spec.resolve(options["prices"])
    elif "prices" not in options and prices is not None:
        options["prices"] = prices
    return options


def build_backend(spec: "TaskSpec", store: "Store", *, backend: Backend | None = None,
                  prices: "Prices | None" = None, purse: "Purse | None" = None) -> "CachedBackend":
    """The task's model (or ``backend``, already built) behind the run store's call cache; ``purse``: a money
    budget an ``openai:`` model shares with the run's other models."""
    from .cached import CachedBackend

    options = backend_options(spec, prices)
    if purse is not None and spec.model.startswith("openai:"):
        options["purse"] = purse
    inner = backend if backend is not None else load_backend(spec.model, **options)
    return CachedBackend(inner, store)
