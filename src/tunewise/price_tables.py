"""Maintained price tables: LiteLLM's model price file, read as a mapping :class:`~tunewise.costs.Prices` merges.

LiteLLM keeps prices for thousands of API models in ``model_prices_and_context_window.json``; its package ships a
copy (``litellm/model_prices_and_context_window_backup.json``). When the package is installed, tunewise reads that
file through the package metadata, without importing litellm (its import is slow and may fetch the file from the
network). A file in the same format may also be given as a price file (``--prices``, ``backend.prices``).

Mapping, per entry (USD per token -> USD per million tokens): ``input_cost_per_token`` -> ``input``,
``output_cost_per_token`` -> ``output``, ``cache_read_input_token_cost`` -> ``cached_input``, for the text
modes (``chat``, ``completion``, ``responses``; an entry without a mode counts as chat); ``embedding`` entries
give an embedding price. Entries lacking either token price, and every other mode (images, audio, rerank ...),
are left out.

The date: the LiteLLM file carries none and its wheel stores no file times, so the date shown is the file's
modification time on this machine (for an installed package, the day it was installed: its prices are at
least that old). ``TUNEWISE_PRICE_TABLE=builtin`` keeps the built-in table even when LiteLLM is installed.

Out of scope: merging and precedence (``costs.load_prices``) and cost formulas (``costs.py``).
"""

from __future__ import annotations

import datetime
import functools
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PriceTable", "LITELLM_FILE", "installed_litellm", "is_litellm_format", "litellm_table", "file_date"]

LITELLM_FILE = "litellm/model_prices_and_context_window_backup.json"
_TEXT_MODES = frozenset({"chat", "completion", "responses"})
_PER_MILLION = 1e6


@dataclass(frozen=True)
class PriceTable:
    """Token prices read from a maintained table, in :class:`~tunewise.costs.Prices`' units and key names."""

    api: dict[str, dict[str, Any]]
    embedding: dict[str, float]
    table: str  # what the table is, in words, with its date
    as_of: str  # the date of its prices, YYYY-MM-DD


def _per_million(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return None
    return float(f"{value * _PER_MILLION:.10g}")  # 1.5e-07 * 1e6 is 0.15000000000000002


def is_litellm_format(raw: Any) -> bool:
    """A mapping of model names to entries holding LiteLLM's ``*_cost_per_token`` keys (not tunewise's layout)."""
    if not isinstance(raw, Mapping) or not raw or {"api", "device_hour", "embedding"} & set(raw):
        return False
    return any(isinstance(v, Mapping) and ("input_cost_per_token" in v or "output_cost_per_token" in v)
               for v in raw.values())


def litellm_table(raw: Mapping[str, Any], *, table: str, as_of: str) -> PriceTable:
    """LiteLLM entries -> api and embedding prices (pure; the mapping is in the module docstring)."""
    api: dict[str, dict[str, Any]] = {}
    embedding: dict[str, float] = {}
    for name, entry in raw.items():
        if name == "sample_spec" or not isinstance(entry, Mapping):
            continue
        mode = entry.get("mode", "chat")
        prompt, completion = _per_million(entry.get("input_cost_per_token")), \
            _per_million(entry.get("output_cost_per_token"))
        if mode == "embedding" and prompt is not None:
            embedding[name] = prompt
        elif mode in _TEXT_MODES and prompt is not None and completion is not None:
            api[name] = {"input": prompt, "output": completion, "source": table,
                         "cached_input": _per_million(entry.get("cache_read_input_token_cost"))}
    return PriceTable(api, embedding, table, as_of)


def file_date(path: Path) -> str:
    """The file's modification day (UTC); before 1981 (a zip's fixed time kept by an installer): its folder's."""
    stamp = path.stat().st_mtime
    if stamp < 347155200:  # 1981-01-01: reproducible wheels date every file 1980-01-01
        stamp = path.parent.stat().st_mtime
    return datetime.datetime.fromtimestamp(stamp, tz=datetime.timezone.utc).date().isoformat()


def installed_litellm() -> PriceTable | None:
    """LiteLLM's shipped price table when the package is installed (and not switched off), else None."""
    if os.environ.get("TUNEWISE_PRICE_TABLE", "").strip().lower() == "builtin":
        return None
    try:
        from importlib.metadata import PackageNotFoundError, distribution

        dist = distribution("litellm")
    except PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(LITELLM_FILE)))
    try:
        return _read_installed(path, dist.version, path.stat().st_mtime_ns)
    except (OSError, ValueError):  # an install without the file or with a broken one: the built-in table
        return None


@functools.lru_cache(maxsize=4)
def _read_installed(path: Path, version: str, _mtime_ns: int) -> PriceTable | None:
    raw = json.loads(path.read_text(encoding="utf-8"))
    if not is_litellm_format(raw):
        return None
    day = file_date(path)
    return litellm_table(raw, table=f"LiteLLM {version}'s price file (dated {day})", as_of=day)
