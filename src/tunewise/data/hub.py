"""Hugging Face datasets as data: ``hf://`` references in ``data.train`` / ``dev`` / ``test`` / ``unlabelled``.

Syntax (``split`` is required; a slice such as ``train[:1000]`` works where ``load_dataset`` takes one):

- ``hf://owner/name?split=train`` and ``hf://owner/name/config?split=test``: a dataset on the Hub, read from the
  local Hugging Face datasets cache (``$HF_DATASETS_CACHE``) by ``datasets.load_dataset``;
- ``hf://./dir?split=train`` (relative to the task file), ``hf:///abs/dir?split=train`` or ``hf://~/dir?...``:
  a local directory, either written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (read by
  ``load_from_disk``) or a folder of data files ``load_dataset`` reads (``&config=name`` picks a config).

The call runs with the Hub offline (``datasets``' and ``huggingface_hub``'s offline switches set for its
duration): tunewise never downloads. Rows come back as ``(row number, record)`` pairs and then take the same
path as a JSONL file's records; a ``ClassLabel`` column is read as its label names (-1, "no label", as null).
The bytes hashed for the data hash are the rows' canonical JSON, so any change to the rows changes it.

Out of scope: building examples from the records (``reading.py``) and splitting (``splits.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

from ..errors import DataError
from .reading import shown

__all__ = ["HF_SCHEME", "HubData", "HubRows", "parse_hub_ref", "read_hub_rows"]

HF_SCHEME = "hf://"
_QUERY_KEYS = ("split", "config")
_SAVED_MARKERS = ("dataset_dict.json", "state.json")  # what save_to_disk writes


@dataclass(frozen=True)
class HubData:
    """A parsed ``hf://`` reference: a Hub id (``owner/name``) or a local directory as written, a split, a config."""

    name: str
    split: str
    config: str | None = None
    local: bool = False

    def __str__(self) -> str:
        if self.local:
            return f"{HF_SCHEME}{self.name}?split={self.split}" + (f"&config={self.config}" if self.config else "")
        return f"{HF_SCHEME}{self.name}{'/' + self.config if self.config else ''}?split={self.split}"

    def directory(self, base_dir: Path) -> Path:
        """The local directory, relative paths taken from the task file's directory."""
        path = Path(self.name).expanduser()
        return path if path.is_absolute() else base_dir / path

    def absolute(self, base_dir: Path) -> "HubData":
        """The same reference with a local directory made absolute (a Hub id is unchanged)."""
        if not self.local:
            return self
        return HubData(str(self.directory(base_dir).resolve()), self.split, self.config, local=True)


@dataclass(frozen=True)
class HubRows:
    """What one reference loaded: its records, the bytes hashed for the data hash, and where they came from."""

    records: list[tuple[int, dict]]
    blob: bytes
    provenance: str


def parse_hub_ref(text: str) -> HubData:
    """``hf://...`` -> :class:`HubData`; raises ``ValueError`` with what is wrong (the task's validator wraps it)."""
    parts = urlsplit(text)
    rest = text[len(HF_SCHEME):].split("?", 1)[0]
    if parts.fragment:
        raise ValueError(f"'{shown(text)}' has a '#' part, which an hf:// reference does not take")
    try:
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise ValueError(f"'{shown(text)}' has a query that is not key=value pairs") from None
    unknown = [key for key in query if key not in _QUERY_KEYS]
    repeated = [key for key, values in query.items() if len(values) > 1]
    if unknown or repeated:
        what = f"an unknown key '{shown(unknown[0])}'" if unknown else f"'{repeated[0]}' twice"
        raise ValueError(f"'{shown(text)}' names {what} (an hf:// reference takes split= and config=)")
    split, config = (query.get(key, [None])[0] for key in _QUERY_KEYS)
    if not split:
        raise ValueError(f"'{shown(text)}' names no split; add ?split=train (or test, validation, ...)")
    if rest.startswith(("/", ".", "~")):
        return HubData(rest, split, config or None, local=True)
    segments = rest.split("/")
    if not rest or not all(segments) or len(segments) > 3:
        raise ValueError(f"'{shown(text)}' is neither owner/name[/config] on the Hub nor a local directory "
                         "(hf://./dir, hf:///abs/dir)")
    if len(segments) == 3 and config:
        raise ValueError(f"'{shown(text)}' names its config twice (in the path and in config=)")
    name, path_config = "/".join(segments[:2]), (segments[2] if len(segments) == 3 else None)
    return HubData(name, split, path_config or config or None)


# --------------------------------------------------------------------------- loading


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """``datasets`` and ``huggingface_hub`` offline for the duration (both read their switch at import)."""
    import datasets
    import huggingface_hub.constants as hub_constants

    saved = (datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE,
             {k: os.environ.get(k) for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")})
    datasets.config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    os.environ.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved[0], saved[1]
        for key, value in saved[2].items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def read_hub_rows(ref: HubData, *, base_dir: Path, role: str) -> HubRows:
    """Load the split offline and return its rows; every failure is one :class:`DataError` sentence."""
    try:
        import datasets
    except ImportError:
        raise DataError(f"{ref}: reading hf:// data needs the datasets package (pip install datasets).") from None
    with _offline():
        dataset = _load_local(ref, base_dir, role) if ref.local else _load_hub(ref, role)
    records = _records(dataset)
    if not records:
        raise DataError(f"{ref}: the split is empty (no records to load).")
    blob = b"".join(json.dumps(r, sort_keys=True, ensure_ascii=False, default=_plain).encode() + b"\n"
                    for _, r in records)
    source = ref.absolute(base_dir) if ref.local else ref
    provenance = f"{source} ({len(records)} rows, datasets fingerprint {dataset._fingerprint}, {datasets.__version__})"
    return HubRows(records, blob, provenance)


def _load_hub(ref: HubData, role: str) -> Any:
    import datasets

    try:
        whole = datasets.load_dataset(ref.name, ref.config)
    except (ConnectionError, FileNotFoundError, ValueError) as exc:
        if isinstance(exc, ValueError) and "find cache" not in str(exc):  # not "Couldn't find cache for <config>"
            raise DataError(f"{ref}: cannot load the dataset from the local cache ({_why(exc)}).") from None
        config = f" (config {ref.config})" if ref.config else ""
        raise DataError(
            f"{ref}: the dataset {ref.name}{config} is not in the local Hugging Face cache "
            f"({datasets.config.HF_DATASETS_CACHE}) and tunewise never downloads (the task's data.{role}); "
            f"load it once where the network is allowed (datasets.load_dataset('{ref.name}'"
            f"{', ' + repr(ref.config) if ref.config else ''})) or name a local directory (hf://./dir?split=...)."
        ) from None
    return _split(whole, ref, ref.name)


def _load_local(ref: HubData, base_dir: Path, role: str) -> Any:
    import datasets

    path = ref.directory(base_dir)
    if not path.is_dir():
        raise DataError(f"{ref}: {path} is not a directory (the task's data.{role}); hf:// with a path names a "
                        "directory written by save_to_disk or a folder of data files.")
    saved = any((path / marker).is_file() for marker in _SAVED_MARKERS)
    try:
        if saved:
            return _from_disk(datasets.load_from_disk(str(path)), ref)
        return _split(datasets.load_dataset(str(path), ref.config), ref, str(path))
    except DataError:
        raise
    except (ValueError, OSError, RuntimeError) as exc:  # no data files, an unknown config, an unreadable file
        raise DataError(f"{ref}: cannot load {path} as a dataset ({_why(exc)}).") from None


def _split(whole: Any, ref: HubData, name: str) -> Any:
    """The named split of a DatasetDict; a slice (``train[:100]``) goes back to ``load_dataset``'s own slicing."""
    import datasets

    base = ref.split.split("[", 1)[0]
    if base not in whole:
        raise DataError(f"{ref}: the dataset has no split '{shown(base)}' (its splits: {', '.join(whole)}).")
    if base == ref.split:
        return whole[base]
    try:
        return datasets.load_dataset(name, ref.config, split=ref.split)
    except ValueError as exc:
        raise DataError(f"{ref}: the split slice '{shown(ref.split)}' is not one datasets reads ({_why(exc)}).") \
            from None


def _from_disk(saved: Any, ref: HubData) -> Any:
    """A save_to_disk directory: a DatasetDict's split, or a single Dataset whose recorded split (or none) matches."""
    import datasets

    if "[" in ref.split:
        raise DataError(f"{ref}: a save_to_disk directory takes a plain split name, not a slice.")
    if ref.config:
        raise DataError(f"{ref}: a save_to_disk directory has no configs; remove config=.")
    if isinstance(saved, datasets.DatasetDict):
        return _split(saved, ref, "")
    recorded = saved.split and str(saved.split)
    if recorded and recorded != ref.split:
        raise DataError(f"{ref}: the saved dataset holds the split '{shown(recorded)}', not '{shown(ref.split)}'.")
    return saved


def _records(dataset: Any) -> list[tuple[int, dict]]:
    """``(row number from 1, record)``; ClassLabel columns as label names (-1, datasets' "no label", as None)."""
    import datasets

    labels = {name: feature for name, feature in dataset.features.items()
              if isinstance(feature, datasets.ClassLabel)}
    rows = dataset.to_list()
    for row in rows:
        for name, feature in labels.items():
            value = row.get(name)
            if isinstance(value, int):
                row[name] = feature.int2str(value) if 0 <= value < feature.num_classes else None
    return list(enumerate(rows, start=1))


def _plain(value: Any) -> Any:
    """Canonical JSON for what datasets holds beyond JSON's types (bytes, dates, images ...), for hashing only."""
    if isinstance(value, (bytes, bytearray)):
        return {"bytes_sha256": hashlib.sha256(value).hexdigest()}
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return repr(value)


def _why(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {shown(' '.join(str(exc).split()), 200)}"
