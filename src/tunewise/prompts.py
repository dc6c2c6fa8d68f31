"""Prompt templates rendered safely into chat messages.

Templates are Jinja source owned by tunewise or by the user's task file; text from the data only
ever enters as a *variable*, never as template source, so an input containing ``{{ }}`` or
``{% %}`` stays literal. Rendering uses Jinja's sandbox with undefined variables as errors.

Out of scope: choosing demonstrations (``strategies/prompting.py``) and the model's own chat
template (the backend applies it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from .backends.base import Message
from .errors import TaskSpecError

__all__ = ["PromptTemplate", "DEFAULT_INSTRUCTIONS", "default_template", "render", "answer_text"]

DEFAULT_INSTRUCTIONS = {
    "classification": "Classify the input into exactly one of the labels below.",
    "extraction": "Extract the requested information from the input as a JSON object.",
    "generation": "Respond to the input.",
}

_SYSTEM = {
    "classification": (
        "{{ role }}\n\nTask: {{ instructions }}\nLabels:\n{% for label in labels %}- {{ label }}\n{% endfor %}"
        "Reply with exactly one label from the list and nothing else.{{ reasoning }}"
    ),
    "extraction": (
        "{{ role }}\n\nTask: {{ instructions }}\n{% if schema %}The JSON must follow this JSON Schema:\n"
        "{{ schema }}\n{% endif %}Reply with the JSON object only.{{ reasoning }}"
    ),
    "generation": "{{ role }}\n\nTask: {{ instructions }}{{ reasoning }}",
}
_USER = "Input: {{ input }}"
COT_SUFFIX = (
    "\nFirst think step by step in one or two short sentences, then write the final answer on its own line "
    "as 'Answer: <answer>'."
)
DEFAULT_ROLE = "You are a careful assistant."


@dataclass(frozen=True)
class PromptTemplate:
    """Jinja sources for the system turn and each user turn (demonstrations and the query)."""

    system: str
    user: str = _USER

    def to_json(self) -> dict[str, str]:
        return {"system": self.system, "user": self.user}


def default_template(kind: str) -> PromptTemplate:
    return PromptTemplate(system=_SYSTEM[kind])


@lru_cache(maxsize=64)
def _compile(source: str) -> Any:
    env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
    try:
        return env.from_string(source)
    except TemplateError as exc:
        raise TaskSpecError(f"prompt template is not valid Jinja: {exc}.") from None


def _render(source: str, variables: dict[str, Any]) -> str:
    try:
        return _compile(source).render(**variables)
    except TemplateError as exc:
        raise TaskSpecError(f"prompt template failed to render: {exc}.") from None


def answer_text(target: Any) -> str:
    """How a demonstration's answer is written in the assistant turn."""
    if isinstance(target, (dict, list)):
        return json.dumps(target, ensure_ascii=False)
    return str(target)


def render(
    template: PromptTemplate,
    *,
    query: str,
    demos: Sequence[tuple[str, Any]] = (),
    variables: dict[str, Any],
) -> tuple[Message, ...]:
    """System turn, then each demonstration as a user/assistant pair, then the query."""
    msgs = [Message("system", _render(template.system, variables).strip())]
    for text, target in demos:
        msgs.append(Message("user", _render(template.user, {**variables, "input": text})))
        msgs.append(Message("assistant", answer_text(target)))
    msgs.append(Message("user", _render(template.user, {**variables, "input": query})))
    return tuple(msgs)
