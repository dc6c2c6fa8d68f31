"""Turning a model's free text into an answer: a label, a JSON object, or a string.

Small models paraphrase ("The intent is card arrival."), so label parsing tries, in order: an
exact label, a label written with spaces for underscores, the longest label contained in the
text, then the closest label by string similarity (difflib, cutoff 0.6). Which rule matched is
returned so reports can say how much accuracy came from fuzzy mapping.

Out of scope: scoring (``evaluation/metrics.py``).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from typing import Any

__all__ = ["parse_label", "parse_json", "parse_answer", "split_reasoning"]

_ANSWER = re.compile(r"(?:^|\n)\s*(?:final\s+)?(?:answer|label|intent|output)\s*[:=]\s*", re.IGNORECASE)


def _norm(s: str) -> str:
    """Lowercase; underscores, hyphens and punctuation become single spaces."""
    return re.sub(r"[\W_]+", " ", s.lower()).strip()


def split_reasoning(text: str) -> tuple[str, str]:
    """Split chain-of-thought output at its last 'Answer:' marker -> (reasoning, answer)."""
    matches = list(_ANSWER.finditer(text))
    if not matches:
        return "", text.strip()
    last = matches[-1]
    return text[: last.start()].strip(), text[last.end():].strip()


def parse_label(text: str, labels: Sequence[str]) -> tuple[str | None, str]:
    """-> (label or None, rule that matched: exact | normalized | contained | fuzzy | none)."""
    _, answer = split_reasoning(text)
    first = answer.splitlines()[0] if answer.strip() else ""
    by_norm = {_norm(label): label for label in labels}
    if first.strip() in labels:
        return first.strip(), "exact"
    if _norm(first) in by_norm:
        return by_norm[_norm(first)], "normalized"
    flat = " " + _norm(answer) + " "
    contained = [lab for n, lab in by_norm.items() if n and f" {n} " in flat]
    if contained:
        return max(contained, key=len), "contained"
    close = difflib.get_close_matches(_norm(first), list(by_norm), n=1, cutoff=0.6)
    if close:
        return by_norm[close[0]], "fuzzy"
    return None, "none"


def parse_json(text: str, schema: dict[str, Any] | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """The first JSON object in the text (code fences and chatter allowed) -> (object or None, error)."""
    start = text.find("{")
    if start < 0:
        return None, "no JSON object in the output"
    try:
        obj, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc.msg}"
    if not isinstance(obj, dict):
        return None, "the JSON is not an object"
    if schema is not None:
        import jsonschema

        try:
            jsonschema.validate(obj, schema)
        except jsonschema.ValidationError as exc:
            return obj, f"does not match the schema: {exc.message}"
    return obj, None


def parse_answer(
    text: str, *, kind: str, labels: Sequence[str] = (), schema: dict[str, Any] | None = None
) -> tuple[Any, str | None, str]:
    """-> (parsed output or None, error or None, parse rule)."""
    if kind == "classification":
        label, rule = parse_label(text, labels)
        return label, None if label is not None else "no label found in the output", rule
    if kind == "extraction":
        obj, error = parse_json(text, schema)
        return obj, error, "json"
    answer = split_reasoning(text)[1] if _ANSWER.search(text) else text.strip()
    return answer, None, "text"
