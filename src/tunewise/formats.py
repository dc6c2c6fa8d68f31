"""How numbers are shown to people: one percentage formatter for the whole code base.

A missing value (None, NaN, infinite) always prints :data:`MISSING`. Callers differ only in what
follows a present value (``"12.5"`` in a table whose header says %, ``"12.5%"`` in a sentence) and in
precision, so those are parameters, never separate functions.

The money and duration formatters stay with their callers: each follows its own rule (the decision's
``an unknown amount`` and trailing-zero trimming, the report's ``unpriced`` and ``< $0.01`` floor, the
policy's two significant digits), so they are not one formatter under several names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["MISSING", "pct", "models_words", "backend_words", "hub_sources"]

#: what a missing number prints as, everywhere
MISSING = "–"


def pct(x: float | None, *, digits: int = 1, unit: str = "", whole_from: float | None = None) -> str:
    """``x`` (a share, 0.125) as a percentage: ``"12.5"``, or ``"12.5%"`` with ``unit="%"``.

    ``digits`` decimals; with ``whole_from``, none when ``|100 x| >= whole_from`` (``whole_from=10``:
    ``"9.5%"`` but ``"42%"``). None, NaN and infinities print :data:`MISSING`.
    """
    if x is None or not math.isfinite(x):
        return MISSING
    p = 100 * x
    decimals = 0 if whole_from is not None and abs(p) >= whole_from else digits
    return f"{p:.{decimals}f}{unit}"


def models_words(task: Mapping[str, Any]) -> str:
    """The model(s) of a recorded task: ``model `local:smollm2-135m```, or each of several by short name."""
    models = task.get("models")
    if not models:
        return f"model `{task.get('model')}`"
    parts = []
    for m in models:
        ident = m if isinstance(m, str) else m.get("id")
        name = None if isinstance(m, str) else m.get("name")
        parts.append(f"`{ident}`" + (f" ({name})" if name else ""))
    return "models " + ", ".join(parts)


def backend_words(info: Mapping[str, Any]) -> str:
    """What the model backend(s) said about themselves: ``device cpu, dtype float32``; several models each
    under its name (``a: device cpu; b: ...``)."""
    def one(d: Mapping[str, Any]) -> str:
        return ", ".join(f"{k} {v}" for k, v in d.items() if v not in (None, "", {}))

    if info and all(isinstance(v, Mapping) for v in info.values()):
        return "; ".join(f"{k}: {one(v)}" for k, v in info.items() if one(v))
    return one(info)


def hub_sources(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(role, source)`` of a run's roles read from an ``hf://`` dataset (files are named by the data hash alone)."""
    sources = data.get("sources") or {}
    return [(role, str(where)) for role, where in sources.items() if str(where).startswith("hf://")]
