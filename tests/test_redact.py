"""Redaction masks credentials by their real formats and nothing else.

Realistic fakes of every supported key format (random characters of the right alphabet and length) must be
masked wherever they sit in a text; the bundled datasets' texts and ordinary sentences that merely mention
tokens, passwords or "basic" requirements must come through unchanged, and every mask is counted."""

from __future__ import annotations

import base64
import json
import random
import string
from pathlib import Path

import pytest

from tunewise.serving.redact import MASK, redact, redact_count

ROOT = Path(__file__).resolve().parents[1]
ALNUM = string.ascii_letters + string.digits
URLSAFE = ALNUM + "_-"
_rng = random.Random(13)


def _r(alphabet: str, n: int) -> str:
    return "".join(_rng.choice(alphabet) for _ in range(n))


def _b64url(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _pem(kind: str) -> str:
    body = base64.b64encode(bytes(_rng.randrange(256) for _ in range(180))).decode()
    lines = "\n".join(body[i:i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN {kind}-----\n{lines}\n-----END {kind}-----"


# the shapes the providers document or issue today (prefix, alphabet, length)
KEYS = {
    "openai legacy": "sk-" + _r(ALNUM, 20) + "T3BlbkFJ" + _r(ALNUM, 20),
    "openai project": "sk-proj-" + _r(URLSAFE, 74) + "T3BlbkFJ" + _r(URLSAFE, 74),
    "openai service account": "sk-svcacct-" + _r(URLSAFE, 74) + "T3BlbkFJ" + _r(URLSAFE, 74),
    "anthropic": "sk-ant-api03-" + _r(URLSAFE, 93) + "AA",
    "anthropic admin": "sk-ant-admin01-" + _r(URLSAFE, 93) + "AA",
    "aws access key id": "AKIA" + _r(string.ascii_uppercase + "234567", 16),
    "aws temporary key id": "ASIA" + _r(string.ascii_uppercase + "234567", 16),
    "github classic": "ghp_" + _r(ALNUM, 36),
    "github oauth": "gho_" + _r(ALNUM, 36),
    "github app": "ghs_" + _r(ALNUM, 36),
    "github fine-grained": "github_pat_" + _r(ALNUM, 22) + "_" + _r(ALNUM, 59),
    "slack bot": "xoxb-" + _r(string.digits, 12) + "-" + _r(string.digits, 13) + "-" + _r(ALNUM, 24),
    "slack user": "xoxp-" + "-".join(_r(string.digits, 12) for _ in range(3)) + "-" + _r("0123456789abcdef", 32),
    "slack app-level": "xoxa-2-" + _r(string.digits, 12) + "-" + _r(ALNUM, 32),
    "slack refresh": "xoxr-" + _r(string.digits, 12) + "-" + _r(ALNUM, 40),
    "google api key": "AIza" + _r(URLSAFE, 35),
    "hugging face": "hf_" + _r(string.ascii_letters, 34),
    "stripe secret": "sk_live_" + _r(ALNUM, 24),
    "jwt": ".".join([_b64url({"alg": "HS256", "typ": "JWT"}), _b64url({"sub": "1234567890", "iat": 1516239022}),
                     base64.urlsafe_b64encode(bytes(_rng.randrange(256) for _ in range(32))).rstrip(b"=").decode()]),
    "pem rsa": _pem("RSA PRIVATE KEY"),
    "pem pkcs8": _pem("PRIVATE KEY"),
    "pem openssh": _pem("OPENSSH PRIVATE KEY"),
    "pem ec": _pem("EC PRIVATE KEY"),
    "pem encrypted": _pem("ENCRYPTED PRIVATE KEY"),
    "pgp private key": _pem("PGP PRIVATE KEY BLOCK"),
}

CONTEXTS = [
    "{}",
    "please use {} for the transfer",
    "my key is {}, can you check it?",
    '{{"api_key": "{}"}}',
    "export OPENAI_API_KEY={}\nthen run it",
    "(see {}).",
    "https://api.example.com/v1/items?key={}&page=2",
]


def _pieces(secret: str) -> list[str]:
    """Runs of 8 characters of the secret's random part: none may survive masking."""
    core = secret.split("-----")[2] if secret.startswith("-----") else secret
    core = "".join(ch for ch in core if ch.isalnum())[6:]
    return [core[i:i + 8] for i in range(0, max(len(core) - 8, 1), 8)]


@pytest.mark.parametrize("name", list(KEYS))
@pytest.mark.parametrize("context", CONTEXTS)
def test_real_key_formats_are_masked_everywhere(name, context):
    secret = KEYS[name]
    text = context.format(secret)
    out, n = redact_count(text)
    assert n == 1, (name, out)
    assert out == context.format(MASK), (name, out)
    assert not [p for p in _pieces(secret) if p in out]


AUTH_HEADERS = {
    "Authorization: Bearer " + _r(ALNUM, 40): f"Authorization: Bearer {MASK}",
    "authorization: bearer " + _r(URLSAFE + ".", 64): f"authorization: bearer {MASK}",
    'curl -H "Authorization: Bearer ' + _r(ALNUM, 32) + '" https://x': f'curl -H "Authorization: Bearer {MASK}" https://x',
    "Authorization: Basic " + base64.b64encode(b"alice:correct horse battery").decode():
        f"Authorization: Basic {MASK}",
    "Proxy-Authorization: Basic " + base64.b64encode(b"bob:hunter2").decode(): f"Proxy-Authorization: Basic {MASK}",
    '{"Authorization": "Bearer ' + _r(ALNUM, 30) + '"}': f'{{"Authorization": "Bearer {MASK}"}}',
    "the header was Bearer " + _r(ALNUM, 24) + "1 yesterday": f"the header was Bearer {MASK} yesterday",
    "Authorization: Basic " + KEYS["github classic"]: f"Authorization: Basic {MASK}",  # not user:pass, still a key
}


@pytest.mark.parametrize("text", list(AUTH_HEADERS))
def test_authorization_headers_are_masked(text):
    assert redact_count(text) == (AUTH_HEADERS[text], 1)


ASSIGNMENTS = {
    "my password=hunter22 ok": f"my password={MASK} ok",
    'api_key: "1234abcd"': f'api_key: "{MASK}"',
    "AWS_SECRET_ACCESS_KEY=" + _r(ALNUM + "+/", 40): f"AWS_SECRET_ACCESS_KEY={MASK}",
    "client_secret = 'abc'": f"client_secret = '{MASK}'",
    '{"password": "correct horse"}': f'{{"password": "{MASK}"}}',
    "x-api-key: a8f3k2m9q1": f"x-api-key: {MASK}",
    "my password: hunter22": f"my password: {MASK}",
    "https://host/cb?code=1&access_token=abc123def&x=1": f"https://host/cb?code=1&access_token={MASK}&x=1",
}


@pytest.mark.parametrize("text", list(ASSIGNMENTS))
def test_values_of_named_secrets_are_masked(text):
    assert redact_count(text) == (ASSIGNMENTS[text], 1)


ORDINARY = [
    # the review's examples
    "What are the basic requirements",
    "What are the basic requirements for opening an account?",
    "I need a new token: physical card",
    "order 4f9a8c2e7b1d4e6f9a8c2e7b1d4e6f90a1b2c3d4 has not arrived",
    "my order id is ORD2024051712345678901234567890XYZ and it is late",
    "reference SGVsbG8gd29ybGQgdGhpcyBpcyBhIGxvbmcgc3RyaW5n please",
    "tracking 1Z999AA10123456784, transaction 123e4567-e89b-12d3-a456-426614174000",
    "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 of the file",
    # words that name secrets, in prose
    "Basic authentication does not work on my phone",
    "Authorization: pending until Monday",
    "Authorization: Basic requirements apply",
    "He was the bearer of bad news",
    "The bearer of this card is my son",
    "my password: I forgot it",
    "what is a secret: nobody knows",
    "the token: a small coin",
    "set max_tokens=1024 and token_type=bearer",
    "sk-learn is not a package name",
    "the task-abcdefghijklmnopqrstuvwxyz0123456789 failed",
    "use a placeholder like Authorization: Bearer <YOUR_TOKEN>",
    "How do I top up my card with 20 euros?",
    "transfer 12345 failed on 2024-01-05",
    "order #A1B2C3 arrived",
    "internationalisation-and-localisation",
    "",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_is_never_changed(text):
    assert redact_count(text) == (text, 0)
    assert redact(text) == text


def _dataset_strings() -> list[tuple[str, str]]:
    out = []
    for path in sorted(ROOT.glob("examples/*/data/*.jsonl")):
        for i, line in enumerate(path.read_text(encoding="utf-8").split("\n")):  # texts may hold U+2028
            if not line.strip():
                continue
            for key, value in json.loads(line).items():
                text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
                out.append((f"{path.relative_to(ROOT)}:{i + 1}:{key}", text))
    return out


def test_bundled_dataset_texts_come_through_unchanged():
    strings = _dataset_strings()
    assert {s.split(":")[0] for s, _ in strings} >= {
        f"examples/{t}/data/test.jsonl" for t in ("banking77", "fin_sentiment", "snips_slots")}
    changed = [(where, text) for where, text in strings if redact_count(text) != (text, 0)]
    assert changed == [], changed[:5]


def test_several_secrets_are_each_counted_once():
    text = (f"key {KEYS['openai project']} and OPENAI_API_KEY={KEYS['openai legacy']} and "
            f"Authorization: Bearer {KEYS['jwt']}\n{KEYS['pem rsa']}\nthanks")
    out, n = redact_count(text)
    assert n == 4 and out == f"key {MASK} and OPENAI_API_KEY={MASK} and Authorization: Bearer {MASK}\n{MASK}\nthanks"
    assert redact_count(None) == (None, 0)


def test_a_private_key_block_cut_off_is_masked_to_its_end():
    block = KEYS["pem rsa"].rsplit("-----END", 1)[0]
    out, n = redact_count(f"here it is:\n{block}")
    assert n == 1 and out == f"here it is:\n{MASK}"


ADVERSARIAL = {  # repetitive texts that make a backtracking pattern quadratic or worse
    "hyphenated": "a-" * 10_000,
    "dotted": "a." * 10_000,
    "names": "password-" * 2_222,
    "prefixes": "sk-" * 6_666,
    "quotes": '"api_key": "' * 1_666,
    "bearers": "Bearer " * 2_857,
    "headers": "Authorization: " * 1_333,
    "jwt-ish": ("eyJ" + "a" * 10 + ".") * 1_428,
    "pem": "-----BEGIN PRIVATE KEY-----" * 740,
    "pem, no end": "-----BEGIN PRIVATE KEY-----!" * 714,
    "assignments": "token=" * 3_333,
    "colons": "secret:" * 2_857,
}


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_redaction_time_stays_linear_on_adversarial_input(name):
    """A 20,000-character input (the serve default's longest) is redacted in well under a second."""
    import time

    text = ADVERSARIAL[name]
    start = time.perf_counter()
    redact_count(text)
    assert time.perf_counter() - start < 0.5, name
