"""A version's prompt as a plain file: the system prompt, demonstrations, user template and decoding it was scored with.

Built from the very :class:`~tunewise.strategies.prompting.PromptProgram` that answers for the version (a prompt
rung's, rebuilt by ``versions.load_candidate``, or the compact prompt a tuned model was trained on), so the text is
the scored text. Written as ``prompt.json`` (for programs) and ``prompt.md`` (for people).

Out of scope: model weights and chat templates (``export/weights.py``, ``export/chat_format.py``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..prompts import answer_text, render

__all__ = ["PromptFile", "prompt_file", "user_wrap"]

_INPUT = "\u2063INPUTQ7X\u2063"
_HOW = {
    "score": "the log-likelihood of each allowed label after the prompt is scored and the most likely label is the "
             "answer (no free text); a server that generates should restrict the answer to the labels",
    "generate": "greedy generation, then the text is parsed into the answer",
    "cot": "greedy reasoning first (up to reasoning_tokens), then 'Answer: ' and the answer",
}


@dataclass(frozen=True)
class PromptFile:
    """Everything a server needs to ask the model what tunewise asked it."""

    version: str
    task: str
    kind: str
    rung: str
    strategy: str
    model: str | None  # the tunewise model identifier
    base_model: str | None  # what other tools call it (Hugging Face id or directory)
    system: str
    user_template: str  # Jinja source; {{ input }} is the request's text
    user_wrap: tuple[str, str] | None  # the user turn's text before and after the input (None: not a simple wrap)
    demonstrations: list[dict[str, str]]  # fixed ones: input (raw), user (the rendered turn), assistant
    demonstration_selection: str
    labels: list[str]
    decoding: dict[str, Any]
    metric: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, out: Path) -> list[Path]:
        (out / "prompt.json").write_text(json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n")
        (out / "prompt.md").write_text(self.to_markdown())
        return [out / "prompt.json", out / "prompt.md"]

    def to_markdown(self) -> str:
        d = self.decoding
        lines = [f"# {self.task} / {self.rung} (version {self.version})", "",
                 f"Model: `{self.base_model or self.model}` (tunewise: `{self.model}`); strategy {self.strategy}.", ""]
        if self.metric and self.metric.get("value") is not None:
            m = self.metric
            lines += [f"Scored {m['name']} {100 * m['value']:.1f}% [95% CI {100 * m['low']:.1f}, "
                      f"{100 * m['high']:.1f}] on {m.get('n', '?')} test examples.", ""]
        lines += ["## System prompt", "", "```text", self.system, "```", "",
                  "## User turn", "", "Each request's text fills `{{ input }}`:", "", "```text", self.user_template,
                  "```", "", f"## Demonstrations ({self.demonstration_selection})", ""]
        for i, demo in enumerate(self.demonstrations, 1):
            lines += [f"{i}. user: `{demo['user']}` -> assistant: `{demo['assistant']}`"]
        lines += ["", "## Decoding", ""] + [f"- {k}: {json.dumps(v, ensure_ascii=False)}" for k, v in d.items()]
        if self.labels:
            lines += ["", "## Labels", "", ", ".join(f"`{label}`" for label in self.labels)]
        lines += [""] + [f"Note: {n}" for n in self.notes]
        return "\n".join(lines).rstrip() + "\n"


def user_wrap(program: Any) -> tuple[str, str] | None:
    """The text around the input in a rendered user turn, or None when the template does not use it exactly once."""
    text = render(program.template, query=_INPUT, variables=program.variables)[-1].content
    return tuple(text.split(_INPUT)) if text.count(_INPUT) == 1 else None  # type: ignore[return-value]


def _demonstrations(program: Any) -> tuple[list[dict[str, str]], str]:
    s = program.settings
    if program.retriever is not None:
        return [], (f"retrieved: for each request, the {s.k} most similar training examples by embedding cosine, "
                    "most similar last; they are not fixed, so no file can list them")
    if not program.fixed_demos:
        return [], "none"
    rendered = render(program.template, query="", demos=program.fixed_demos, variables=program.variables)
    users = [m.content for m in rendered[1:-1:2]]
    demos = [{"input": t, "user": u, "assistant": answer_text(y)} for (t, y), u in zip(program.fixed_demos, users)]
    return demos, f"fixed: {len(demos)} drawn from the training split ({s.selection})"


def prompt_file(version: Any, program: Any, *, base_model: str | None, stop: tuple[str, ...] = ()) -> PromptFile:
    """The :class:`PromptFile` of ``version`` answering through ``program``."""
    s = program.settings
    demos, selection = _demonstrations(program)
    decoding: dict[str, Any] = {"mode": s.mode, "how": _HOW[s.mode], "temperature": 0.0,
                                "max_new_tokens": s.max_new_tokens, "stop": list(stop)}
    if s.mode == "score":
        decoding["choices"] = "the labels of the retrieved demonstrations" if s.choices == "demos" else "all labels"
    if s.mode == "cot":
        decoding["reasoning_tokens"] = s.reasoning_tokens
    calibration = (program.config or {}).get("calibration")
    if calibration:
        decoding["calibration"] = calibration
    notes = []
    if calibration:
        notes.append("Label probabilities were divided by the mean probabilities on content-free inputs "
                     "(contextual calibration); a server returning raw probabilities will differ.")
    if program.schema:
        notes.append("Answers were decoded under the task's JSON Schema: " + json.dumps(program.schema))
    return PromptFile(
        version=version.id, task=version.manifest["task"]["name"], kind=program.kind, rung=version.rung,
        strategy=version.strategy, model=version.manifest.get("model"), base_model=base_model,
        system=render(program.template, query="", variables=program.variables)[0].content,
        user_template=program.template.user, user_wrap=user_wrap(program), demonstrations=demos,
        demonstration_selection=selection, labels=list(program.labels), decoding=decoding,
        metric=version.metric, notes=notes)
