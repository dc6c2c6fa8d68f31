"""Mask secrets in text before it is logged: API keys, bearer tokens, long hex and base64 tokens.

Pure and deliberately eager: masking a harmless long token in a log costs little, logging a live
key costs a lot. Out of scope: personal data (names, card numbers), which needs its own policy.
"""

from __future__ import annotations

import re

__all__ = ["redact", "MASK"]

MASK = "[REDACTED]"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # "Authorization: Bearer <token>" and bare "Bearer <token>"
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + MASK),
    # key = value / key: value for names that announce a secret
    (re.compile(r"(?i)\b((?:api[_-]?key|access[_-]?key|secret|token|password|passwd|pwd)\w*\s*[:=]\s*)"
                r"[\"']?[^\s\"',;]{4,}"), r"\1" + MASK),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"), MASK),  # OpenAI, Anthropic (sk-ant-...), many others
    (re.compile(r"\b(?:ghp|gho|ghu|ghs|ghr|github_pat)_[A-Za-z0-9_]{20,}"), MASK),  # GitHub
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), MASK),  # Slack
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), MASK),  # AWS access key ids
    (re.compile(r"\bhf_[A-Za-z0-9]{30,}"), MASK),  # Hugging Face
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), MASK),  # JWT
    (re.compile(r"\b[0-9a-fA-F]{32,}\b"), MASK),  # long hex: hashes of keys, raw keys
    # long base64 / url-safe tokens: 32+ characters mixing letters and digits
    (re.compile(r"(?<![A-Za-z0-9+/_-])(?=[A-Za-z0-9+/_-]*\d)(?=[A-Za-z0-9+/_-]*[A-Za-z])[A-Za-z0-9+/_-]{32,}={0,2}"),
     MASK),
)


def redact(text: str | None) -> str | None:
    """``text`` with every secret-looking token replaced by ``[REDACTED]`` (None stays None)."""
    if not text:
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
