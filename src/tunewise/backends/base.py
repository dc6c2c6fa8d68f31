"""The one interface every model backend fills in.

A backend turns chat prompts into text (``generate``) and, when it can, scores a fixed set of
choices by log-likelihood (``score``: rank classification). Strategies and the evaluator only
ever talk to this interface, so a prompt program, a tuned adapter, an HTTP endpoint and the fake
backend used by tests are interchangeable.

Reference implementation: :class:`tunewise.backends.fake.FakeBackend` (small and complete);
the real one is :class:`tunewise.backends.local.LocalBackend`.

Out of scope here: caching (``backends/cached.py`` wraps any backend) and prompt construction
(``strategies/prompting.py``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "Message",
    "GenerationRequest",
    "Generation",
    "ScoreRequest",
    "ChoiceScores",
    "Backend",
    "messages",
]


@dataclass(frozen=True)
class Message:
    role: str  # "system" | "user" | "assistant"
    content: str


def messages(*pairs: tuple[str, str]) -> tuple[Message, ...]:
    """``messages(("system", "..."), ("user", "..."))`` -> a prompt."""
    return tuple(Message(role, content) for role, content in pairs)


@dataclass(frozen=True)
class GenerationRequest:
    """Greedy (temperature 0) unless ``temperature`` > 0; stops at end of turn or a stop string.

    ``choices``: the answer must be exactly one of these (classification without log-probabilities).
    ``json_schema``: the answer must be JSON valid under this schema (extraction). A backend that can
    constrain decoding does (local models mask tokens, the openai backend sends ``response_format``);
    others may answer free text, so callers still parse and validate the answer.
    """

    prompt: tuple[Message, ...]
    max_new_tokens: int = 64
    stop: tuple[str, ...] = ()
    temperature: float = 0.0
    seed: int = 0
    choices: tuple[str, ...] = ()
    json_schema: dict[str, Any] | None = field(default=None, hash=False)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        if not self.choices:  # unconstrained requests keep the call-cache keys they always had
            del d["choices"]
        if self.json_schema is None:
            del d["json_schema"]
        return d


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float  # wall time of the call that served this request
    cached_tokens: int = 0  # prompt tokens served from a prefix cache instead of recomputed
    finish_reason: str = "stop"  # "stop" | "length"
    batch_size: int = 1  # requests served together in that call (throughput = batch_size / latency)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Generation":
        return cls(**d)


@dataclass(frozen=True)
class ScoreRequest:
    """Score each choice as the complete assistant reply to ``prompt``.

    The score of a choice is the sum of the log-probabilities of its tokens, followed by the
    end-of-turn token when the backend has one (so a label that is a prefix of another label is
    not favoured). ``answer_prefix`` is text the assistant reply starts with before the choice
    (e.g. ``"Label: "``), scored as context, not as part of the choice.
    """

    prompt: tuple[Message, ...]
    choices: tuple[str, ...]
    answer_prefix: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ChoiceScores:
    logprobs: tuple[float, ...]  # one per choice, same order as the request
    token_counts: tuple[int, ...]  # tokens scored per choice (incl. end-of-turn)
    prompt_tokens: int
    latency_s: float
    cached_tokens: int = 0
    scored_tokens: int = 0  # tokens fed to the model for the choices (trie size when shared)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ChoiceScores":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclass
class Backend(ABC):
    """A model behind ``generate`` and, if ``can_score``, ``score``.

    ``name`` is the user-facing identifier (``local:smollm2-135m``); ``fingerprint()`` identifies
    the exact weights and settings, and keys the call cache.
    """

    name: str
    can_score: bool = field(default=False, init=False)
    info: dict[str, Any] = field(default_factory=dict, init=False)
    # the most requests worth sending in one call: the call cache stores results after each such
    # call, so it also bounds what a kill -9 can lose
    max_batch_size: int = field(default=8, init=False)

    @abstractmethod
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """Answer each request; the result list is in request order."""

    def score(self, requests: Sequence[ScoreRequest]) -> list[ChoiceScores]:
        raise NotImplementedError(f"{self.name} cannot score choices; use generation instead")

    def fingerprint(self) -> str:
        return self.name

    def count_tokens(self, text: str) -> int:
        """Approximate token count (backends with a tokenizer override this)."""
        return max(1, len(text) // 4)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (threads, connections)."""
