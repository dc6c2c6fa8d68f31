"""A model-free backend: dry runs of a whole ladder in seconds, and the test double.

Modes, chosen by the spec string (``load_backend("fake:...")``):

* ``fake:random`` - deterministic pseudo-random answers. A choice's score is a hash of
  (seed, prompt, choice). Generation picks one of the options listed in the prompt (lines starting
  with ``"- "`` in the last user message, else in a system message) so dry runs of classification
  give parseable labels; with no list it answers a short word derived from the prompt hash.
* ``fake:constant:<text>`` - always ``<text>``; scores favour the choice equal to it.
* ``fake:echo`` - returns the last user message.
* ``fake:oracle:<path.jsonl>`` - answers the ``label`` of the example whose ``text`` appears in the
  last user message (a perfect rung, for dry runs); scores favour it. ``?input=..&output=..``
  name other fields.

Options ride on a query string: ``fake:random?delay=0.01&seed=3`` (``delay`` sleeps per request,
making kill/resume tests realistic). Tokens are whitespace-separated words; latency is measured.
``calls`` counts requests served; if ``TUNEWISE_FAKE_CALL_LOG`` (or ``call_log=``) names a file,
one line per served request is appended and flushed, so tests can count calls across processes.

Out of scope: caching (``cached.py``) and parsing answers into labels (the strategies).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from ..errors import BackendError, DataError, ModelNotFoundError
from .base import (
    Backend,
    ChoiceScores,
    Generation,
    GenerationRequest,
    Message,
    ScoreRequest,
)

__all__ = ["FakeBackend", "FAKE_MODES", "CALL_LOG_ENV"]

CALL_LOG_ENV = "TUNEWISE_FAKE_CALL_LOG"
FAKE_MODES = {
    "random": "fake:random",
    "constant": "fake:constant:<text>",
    "echo": "fake:echo",
    "oracle": "fake:oracle:<path to JSONL with text,label>",
}
_OPTIONS = ("delay", "seed", "input", "output")
_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet")
# Scores: the favoured choice gets about -0.1 per token, the others -5 to -15.
_FAVOURED_LOGPROB_PER_TOKEN = -0.1

Script = Callable[[tuple[Message, ...]], str]
FailOn = str | Callable[[tuple[Message, ...]], bool]


def _hash_int(*parts: object) -> int:
    blob = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big")


def _unit(*parts: object) -> float:
    """A deterministic number in [0, 1)."""
    return _hash_int(*parts) / 2**64


def _prompt_text(prompt: Sequence[Message]) -> str:
    return "\n".join(f"{m.role}: {m.content}" for m in prompt)


def _last_user(prompt: Sequence[Message]) -> str:
    return next((m.content for m in reversed(prompt) if m.role == "user"), "")


def _listed_options(prompt: Sequence[Message]) -> list[str]:
    """Options written as ``- option`` lines: the last user message first, then system messages."""
    sources = [_last_user(prompt)] + [m.content for m in prompt if m.role == "system"]
    for text in sources:
        options = [line.strip()[2:].strip() for line in text.splitlines() if line.strip().startswith("- ")]
        options = [o for o in options if o]
        if options:
            return options
    return []


def _split_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """``fake:mode:arg?k=v`` -> (mode, arg, options). A '?' not followed by known options is text."""
    body = spec.split(":", 1)[1] if spec.startswith("fake:") else spec
    options: dict[str, str] = {}
    head, sep, query = body.rpartition("?")
    if sep:
        pairs = parse_qsl(query, keep_blank_values=True)
        if pairs and all(key in _OPTIONS for key, _ in pairs):
            body, options = head, dict(pairs)
    mode, _, arg = body.partition(":")
    return mode, arg, options


def _load_oracle(path: Path, *, input_field: str, output_field: str) -> dict[str, str]:
    if not path.is_file():
        raise BackendError(f"The fake oracle file {path} does not exist.")
    answers: dict[str, str] = {}
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                answers[str(row[input_field]).strip()] = str(row[output_field])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DataError(
                    f"{path}:{line_no} is not a JSON object with {input_field!r} and {output_field!r} fields ({exc})."
                ) from exc
    return answers


class FakeBackend(Backend):
    """Deterministic answers without a model; see the module docstring for the modes."""

    def __init__(
        self,
        name: str = "fake:random",
        *,
        script: Script | None = None,
        seed: int = 0,
        delay_s: float = 0.0,
        fail_on: FailOn | None = None,
        call_log: Path | str | None = None,
    ) -> None:
        mode, arg, options = _split_spec(name)
        if mode not in FAKE_MODES:
            known = ", ".join(FAKE_MODES.values())
            raise ModelNotFoundError(f"Unknown fake backend {name!r}; use one of {known}.")
        super().__init__(name.split("?", 1)[0] if options else name)
        self.can_score = True
        self.max_batch_size = 1  # one request per call: kill/resume tests count exactly
        self.mode, self.arg = mode, arg
        self.script, self.fail_on = script, fail_on
        try:
            self.seed = int(options.get("seed", seed))
            self.delay_s = float(options.get("delay", delay_s))
        except ValueError as exc:
            raise BackendError(f"Bad option in fake backend spec {name!r}: {exc}.") from exc
        self._oracle = self._build_oracle(options) if mode == "oracle" else {}
        log = call_log if call_log is not None else os.environ.get(CALL_LOG_ENV)
        self.call_log = Path(log) if log else None
        self.calls = 0
        self.info = {"kind": "fake", "mode": mode, "seed": self.seed, "delay_s": self.delay_s}

    def _build_oracle(self, options: dict[str, str]) -> dict[str, str]:
        if not self.arg:
            raise ModelNotFoundError("The fake oracle needs a file: fake:oracle:<path to JSONL with text,label>.")
        return _load_oracle(
            Path(self.arg), input_field=options.get("input", "text"), output_field=options.get("output", "label")
        )

    # ---------------------------------------------------------------- identity

    def fingerprint(self) -> str:
        # delay does not change answers, so it is not part of the cache key.
        parts = [f"fake:{self.mode}:{self.arg}", f"seed={self.seed}"]
        if self.mode == "oracle":
            parts.append(hashlib.sha256(_dumps_sorted(self._oracle).encode()).hexdigest()[:16])
        if self.script is not None:
            module, qualname = getattr(self.script, "__module__", "?"), getattr(self.script, "__qualname__", "?")
            parts.append(f"script={module}.{qualname}")
        return "|".join(parts)

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    # ---------------------------------------------------------------- answers

    def _answer(self, prompt: tuple[Message, ...]) -> str | None:
        """The text this backend 'believes'; None when it has no opinion (random scoring)."""
        if self.script is not None:
            return self.script(prompt)
        if self.mode == "constant":
            return self.arg
        if self.mode == "echo":
            return _last_user(prompt)
        if self.mode == "oracle":
            found = self._oracle_lookup(_last_user(prompt))
            if found is not None:
                return found
        return None

    def _oracle_lookup(self, message: str) -> str | None:
        stripped = message.strip()
        if stripped in self._oracle:
            return self._oracle[stripped]
        # Few-shot prompts put the query last, so prefer the match that ends latest, then the longest.
        best: tuple[int, int] | None = None
        label = None
        for text, answer in self._oracle.items():
            at = message.rfind(text) if text else -1
            if at >= 0 and (best is None or (at + len(text), len(text)) > best):
                best, label = (at + len(text), len(text)), answer
        return label

    def _random_text(self, request: GenerationRequest) -> str:
        salt = request.seed if request.temperature > 0 else ""
        key = (self.seed, _prompt_text(request.prompt), salt)
        options = _listed_options(request.prompt)
        if options:
            return options[_hash_int(*key) % len(options)]
        return _WORDS[_hash_int(*key) % len(_WORDS)]

    def _generate_one(self, request: GenerationRequest) -> Generation:
        text = self._answer(request.prompt)
        if text is None:
            text = self._random_text(request)
        for stop in request.stop:
            if stop and stop in text:
                text = text[: text.index(stop)]
        words = text.split()
        finish = "stop"
        if len(words) > request.max_new_tokens:
            text, finish = " ".join(words[: request.max_new_tokens]), "length"
        return Generation(
            text=text,
            prompt_tokens=self._prompt_tokens(request.prompt),
            completion_tokens=min(len(words), request.max_new_tokens),
            latency_s=0.0,
            finish_reason=finish,
        )

    def _score_one(self, request: ScoreRequest) -> ChoiceScores:
        favoured = self._answer(request.prompt)
        prompt = _prompt_text(request.prompt)
        logprobs, counts = [], []
        for choice in request.choices:
            n_tokens = len(choice.split()) + 1  # + end of turn
            if favoured is not None and choice.strip().casefold() == favoured.strip().casefold():
                logprobs.append(_FAVOURED_LOGPROB_PER_TOKEN * n_tokens)
            else:
                logprobs.append(-5.0 - 10.0 * _unit(self.seed, prompt, request.answer_prefix, choice))
            counts.append(n_tokens)
        return ChoiceScores(
            logprobs=tuple(logprobs),
            token_counts=tuple(counts),
            prompt_tokens=self._prompt_tokens(request.prompt) + len(request.answer_prefix.split()),
            latency_s=0.0,
            scored_tokens=sum(counts),
        )

    def _prompt_tokens(self, prompt: Sequence[Message]) -> int:
        return sum(self.count_tokens(m.content) for m in prompt)

    # ---------------------------------------------------------------- the Backend interface

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        return [self._serve("generate", r, self._generate_one) for r in requests]

    def score(self, requests: Sequence[ScoreRequest]) -> list[ChoiceScores]:
        return [self._serve("score", r, self._score_one) for r in requests]

    def _serve(self, kind: str, request: Any, compute: Callable[[Any], Any]) -> Any:
        started = time.perf_counter()
        self._check_failure(request.prompt)
        if self.delay_s > 0:
            time.sleep(self.delay_s)
        result = compute(request)
        latency = time.perf_counter() - started
        self.calls += 1
        self._log(kind, request)
        return replace(result, latency_s=latency)

    def _check_failure(self, prompt: tuple[Message, ...]) -> None:
        if self.fail_on is None:
            return
        hit = self.fail_on(prompt) if callable(self.fail_on) else self.fail_on in _prompt_text(prompt)
        if hit:
            raise BackendError(f"The fake backend {self.name} was told to fail on this prompt.")

    def _log(self, kind: str, request: Any) -> None:
        if self.call_log is None:
            return
        line = json.dumps({"pid": os.getpid(), "backend": self.name, "kind": kind,
                           "prompt": hashlib.sha256(_prompt_text(request.prompt).encode()).hexdigest()[:12]})
        with self.call_log.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()


def _dumps_sorted(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)
