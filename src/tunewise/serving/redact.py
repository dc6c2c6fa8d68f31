"""Mask credentials in text before it is logged, by the real formats of keys and headers, never ordinary words.

What is masked (each occurrence becomes ``[REDACTED]``; the text around it is kept byte for byte):

- provider keys by their issued shape: OpenAI ``sk-`` (48 characters; ``sk-proj-``, ``sk-svcacct-``,
  ``sk-admin-``), Anthropic ``sk-ant-api03-...``, Stripe ``sk_live_`` / ``rk_live_``, AWS access key ids
  ``AKIA`` / ``ASIA`` + 16, GitHub ``ghp_`` / ``gho_`` / ``ghu_`` / ``ghs_`` / ``ghr_`` + 36 and
  ``github_pat_``, Slack ``xoxb-`` / ``xoxp-`` / ``xoxa-`` / ``xoxr-`` / ``xoxs-``, Google ``AIza`` + 35,
  Hugging Face ``hf_`` + 34, JSON Web Tokens (``eyJ...`` ``.`` ``eyJ...`` ``.`` signature);
- PEM private key blocks (``-----BEGIN ... PRIVATE KEY-----`` to its END line, or to the end of the base64
  body when the block was cut off);
- ``Authorization:`` / ``Proxy-Authorization:`` header values: ``Bearer`` or ``Token`` followed by a token of
  8+ characters, ``Basic`` followed by base64 that decodes to ``user:password``; and ``Bearer`` followed by a
  20+ character token holding letters and digits anywhere;
- the value of a named secret in an assignment: ``password=...``, ``OPENAI_API_KEY=...``, ``"api_key": "..."``,
  ``x-api-key: ...`` (names ending in password, passwd, passphrase, secret, token, api key, access key, secret
  key, private key; with ``:``, the value is masked when it is quoted or looks like a credential: 8+ characters
  without spaces, holding letters and digits, so "my password: I forgot it" and "a new token: physical card"
  stay as they are).

Not masked: long numbers, hex strings, UUIDs, order ids and other random-looking text that is not one of these
formats (they are users' data, which monitoring and the exported re-run split must see unaltered), and
personal data (names, card numbers), which needs its own policy.

Nothing is altered silently: :func:`redact_count` returns how many credentials it masked, and the request log
stores that count with every request and feedback row (``redactions``).
"""

from __future__ import annotations

import base64
import binascii
import re

__all__ = ["redact", "redact_count", "MASK"]

MASK = "[REDACTED]"

_T68 = r"[A-Za-z0-9._~+/-]"  # RFC 7235 token68 characters (then "=" padding)
# a name ending in one of these words (OPENAI_API_KEY, x-api-key, client_secret, password). The match starts at
# the word itself, never at the start of the whole name: a pattern for the name's leading parts would make
# the search quadratic on long hyphenated text ("a-a-a-..."), and only the value is masked anyway
_SECRET_NAME = (r"(?<![A-Za-z0-9])(?i:password|passwd|passphrase|secret|token|api[_-]?key|apikey"
                r"|access[_-]?key|secret[_-]?key|private[_-]?key)(?![A-Za-z0-9_-])")
_PEM_BODY = r"[A-Za-z0-9+/=\s:,.-]"
# (the look-aheads are bounded, so text full of "secret:secret:..." is not rescanned to its end at every name)
_CREDENTIAL_VALUE = r"(?=[^\s\"'&,;]{0,200}\d)(?=[^\s\"'&,;]{0,200}[A-Za-z])[^\s\"'&,;]{8,}"

# Each rule: a pattern whose named group ``v`` is the part to mask (or the whole match when it has none).
_RULES: tuple[str, ...] = (
    # PEM private keys, complete or cut off
    # (the body is base64 and "Proc-Type: 4,ENCRYPTED"-style headers: scanning only those characters for the END
    # line keeps the search linear on text full of BEGIN lines)
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?:" + _PEM_BODY + r"*?-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?"
    r"-----|" + _PEM_BODY + r"*)",
    # Authorization headers (a Basic value is checked to decode to user:password in _replace)
    r"(?i:\b(?:proxy-)?authorization)[\"']?\s*[:=]\s*[\"']?(?i:(?P<basic>basic)|bearer|token)\s+"
    r"(?P<v>" + _T68 + r"{8,}=*)",
    r"(?i:\bbearer)\s+(?P<v>(?=" + _T68 + r"{0,200}\d)(?=" + _T68 + r"{0,200}[A-Za-z])" + _T68 + r"{20,}=*)",
    # provider key formats
    r"\bsk-(?:proj|svcacct|admin|ant-[a-z]+\d*)-[A-Za-z0-9_-]{20,}",
    r"\bsk-[A-Za-z0-9]{32,}(?![A-Za-z0-9_-])",
    r"\b[sr]k_(?:live|test)_[A-Za-z0-9]{20,}",
    r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b",
    r"\bgh[pousr]_[A-Za-z0-9]{36,}",
    r"\bgithub_pat_[A-Za-z0-9_]{50,}",
    r"\bxox[bpars]-(?=[A-Za-z0-9-]{20,})[A-Za-z0-9]+(?:-[A-Za-z0-9]+)+",
    r"\bAIza[A-Za-z0-9_-]{35}(?![A-Za-z0-9_-])",
    r"\bhf_[A-Za-z0-9]{30,}",
    r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+){0,2}",
    # named secrets: name = value (quoted or not; never the start of a PEM block, which the first rule takes)
    _SECRET_NAME + r"[\"']?\s*=\s*(?:(?P<q1>[\"'])(?P<v>[^\"'\n]+)(?P=q1)|(?P<v>(?!-----BEGIN)[^\s\"'&,;]+))",
    # "name": "value" (a quoted name, as in JSON)
    _SECRET_NAME + r"[\"']\s*:\s*(?P<q3>[\"'])(?P<v>[^\"'\n]+)(?P=q3)",
    # name: value, where the value is quoted or looks like a credential
    _SECRET_NAME + r"\s*:\s*(?:(?P<q4>[\"'])(?P<v>[^\"'\n]+)(?P=q4)|(?P<v>" + _CREDENTIAL_VALUE + r"))",
)


def _build() -> tuple[re.Pattern[str], list[list[str]], list[str | None]]:
    parts, value_groups, basic_groups = [], [], []
    for i, rule in enumerate(_RULES):
        values: list[str] = []
        basic: list[str] = []
        renamed: dict[str, str] = {}

        def rename(m: re.Match[str], i: int = i) -> str:
            base = m.group(1)
            new = f"g{i}_{len(renamed)}_{base}"
            renamed[base] = new
            if base == "v":
                values.append(new)
            elif base == "basic":
                basic.append(new)
            return f"(?P<{new}>"

        rule = re.sub(r"\(\?P<(\w+)>", rename, rule)
        rule = re.sub(r"\(\?P=(\w+)\)", lambda m: f"(?P={renamed[m.group(1)]})", rule)
        parts.append(f"(?P<rule{i}>{rule})")
        value_groups.append(values)
        basic_groups.append(basic[0] if basic else None)
    return re.compile("|".join(parts)), value_groups, basic_groups


_PATTERN, _VALUE_GROUPS, _BASIC_GROUPS = _build()


def _is_basic_credential(value: str) -> bool:
    """True when ``value`` is base64 of ``user:password`` (printable text with a colon)."""
    try:
        decoded = base64.b64decode(value + "=" * (-len(value) % 4), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return False
    return ":" in decoded and decoded.isprintable()


def redact_count(text: str | None) -> tuple[str | None, int]:
    """``text`` with every credential replaced by ``[REDACTED]``, and how many were (None stays None)."""
    if not text:
        return text, 0
    count = 0

    def replace(m: re.Match[str]) -> str:
        nonlocal count
        i = int(m.lastgroup[4:])  # type: ignore[index]  # "rule<i>": the alternative that matched
        value = next((g for g in _VALUE_GROUPS[i] if m.group(g) is not None), None)
        if value is None:
            count += 1
            return MASK
        start, end = m.start(value) - m.start(), m.end(value) - m.start()
        whole = m.group(0)
        if _BASIC_GROUPS[i] and m.group(_BASIC_GROUPS[i]) and not _is_basic_credential(m.group(value)):
            inner, n = redact_count(m.group(value))  # not user:password; it may still be a key of a known format
            count += n
            return whole[:start] + str(inner) + whole[end:]
        count += 1
        return whole[:start] + MASK + whole[end:]

    return _PATTERN.sub(replace, text), count


def redact(text: str | None) -> str | None:
    """``text`` with every credential replaced by ``[REDACTED]`` (see the module docstring; None stays None)."""
    return redact_count(text)[0]
