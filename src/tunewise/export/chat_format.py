"""The prompt a version was scored with, as chat templates other servers run: Ollama (Go) and vLLM (Jinja).

tunewise renders every prompt with ``backends.local.render_messages`` (the tokenizer's chat template, or the plain
few-shot text of a base model). :func:`derive_chat_format` reads that rendering back into per-role
``open + content + close`` pieces from a probe conversation (system, user, assistant, user) and checks the pieces
rebuild the rendering of a longer one; a template they cannot rebuild is refused. The exported templates also bake
in the version's user-turn template (``Input: {{ input }}``) around each user message, and the Jinja one falls back
to the scored system prompt and demonstrations when a request brings no system message, so a client sends the raw
input and the model sees exactly the prompt that was measured.

Out of scope: choosing what to export (``export/__init__.py``), the prompt itself (``export/prompt_file.py``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ExportError

__all__ = ["ChatFormat", "derive_chat_format", "go_template", "jinja_template", "modelfile"]

_MARK = {"system": "SYSTEMQ7X", "user": "USERQ7X", "assistant": "ASSISTANTQ7X", "user2": "USERTWOQ7X"}


@dataclass(frozen=True)
class ChatFormat:
    """``text = open[role] + content + close[role]`` per message, then ``generation`` (the assistant's opening)."""

    open: dict[str, str]
    close: dict[str, str]
    generation: str
    stop: tuple[str, ...]  # what ends an answer: the end-of-turn token's text

    def render(self, messages: Sequence[tuple[str, str]]) -> str:
        return "".join(self.open[r] + c + self.close[r] for r, c in messages) + self.generation


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def _common_suffix(a: str, b: str) -> str:
    return _common_prefix(a[::-1], b[::-1])[::-1]


def _render(tokenizer: Any, messages: Sequence[tuple[str, str]]) -> str:
    from ..backends.base import Message
    from ..backends.local import render_messages

    return render_messages(tokenizer, [Message(r, c) for r, c in messages])


def derive_chat_format(tokenizer: Any) -> ChatFormat:
    """The per-role pieces of the rendering tunewise scores with; an error when they do not rebuild it."""
    from ..backends.local import end_of_turn_id

    m = _MARK
    text = _render(tokenizer, [("system", m["system"]), ("user", m["user"]), ("assistant", m["assistant"]),
                               ("user", m["user2"])])
    segments, rest = [], text
    for key in ("system", "user", "assistant", "user2"):
        before, found, rest = rest.partition(m[key])
        if not found:
            raise ExportError("The model's chat template drops or rewrites message text, so its prompt cannot be "
                              "written as an Ollama or vLLM template; export with --format merged or prompt.")
        segments.append(before)
    segments.append(rest)
    lead, system_user, user_assistant, assistant_user, tail = segments
    stop = _stop_strings(tokenizer, end_of_turn_id(tokenizer))
    ends = [_turn_end(seg, stop[0] if stop else "") for seg in (system_user, assistant_user)]
    if None not in ends and system_user[ends[0]:] == assistant_user[ends[1]:]:
        open_user = system_user[ends[0]:]  # a turn closes with the end-of-turn token and the newlines after it
    else:
        open_user = _common_suffix(system_user, assistant_user)
    end = _turn_end(user_assistant, stop[0] if stop else "")
    if end is not None and tail.startswith(user_assistant[:end]):
        close_user = user_assistant[:end]
    else:
        close_user = _common_prefix(user_assistant, tail)
    fmt = ChatFormat(
        open={"system": lead, "user": open_user, "assistant": user_assistant[len(close_user):]},
        close={"system": system_user[: len(system_user) - len(open_user)], "user": close_user,
               "assistant": assistant_user[: len(assistant_user) - len(open_user)]},
        generation=tail[len(close_user):], stop=stop)
    probe = [("system", "s"), ("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d"), ("user", "e")]
    if fmt.render(probe) != _render(tokenizer, probe):
        raise ExportError("The model's chat template does not repeat the same text around every turn, so it "
                          "cannot be written as an Ollama or vLLM template; export with --format merged or prompt.")
    return fmt


def _turn_end(segment: str, eot: str) -> int | None:
    """Where the closing part of ``segment`` ends: after its first end-of-turn text and the newlines after it."""
    if not eot or eot not in segment:
        return None
    end = segment.index(eot) + len(eot)
    while end < len(segment) and segment[end] == "\n" and eot.strip():
        end += 1
    return end


def _stop_strings(tokenizer: Any, eot: int | None) -> tuple[str, ...]:
    ids = [i for i in (eot, tokenizer.eos_token_id) if i is not None]
    return tuple(dict.fromkeys(tokenizer.convert_ids_to_tokens(i) if i in tokenizer.all_special_ids
                               else tokenizer.decode([i]) for i in ids))


def _go_literal(text: str) -> str:
    if "{{" in text or '"""' in text:
        raise ExportError("The chat template's text contains '{{' or '\"\"\"', which an Ollama Modelfile cannot hold; "
                          "export with --format gguf and write the Modelfile by hand.")
    return text


def go_template(fmt: ChatFormat, user_wrap: tuple[str, str]) -> str:
    """An Ollama ``TEMPLATE`` (Go text/template over ``.Messages``) producing ``fmt``'s text, the user turns wrapped
    in the version's user template."""
    g = {k: _go_literal(v) for k, v in {
        "os": fmt.open["system"], "cs": fmt.close["system"], "ou": fmt.open["user"] + user_wrap[0],
        "cu": user_wrap[1] + fmt.close["user"], "oa": fmt.open["assistant"], "ca": fmt.close["assistant"],
        "gen": fmt.generation}.items()}
    return ('{{ range .Messages }}{{ if eq .Role "system" }}' + g["os"] + "{{ .Content }}" + g["cs"]
            + '{{ else if eq .Role "user" }}' + g["ou"] + "{{ .Content }}" + g["cu"]
            + '{{ else if eq .Role "assistant" }}' + g["oa"] + "{{ .Content }}" + g["ca"] + "{{ end }}{{ end }}"
            + g["gen"])


def _j(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def jinja_template(fmt: ChatFormat, user_wrap: tuple[str, str], *, system: str,
                   demos: Sequence[tuple[str, str]] = ()) -> str:
    """A Hugging Face chat template (for ``vllm serve --chat-template``) producing ``fmt``'s text; a request without
    a system message gets the scored ``system`` prompt and ``demos`` (raw input, answer) first."""
    def turn(role: str, content: str) -> str:
        pre = fmt.open[role] + (user_wrap[0] if role == "user" else "")
        post = (user_wrap[1] if role == "user" else "") + fmt.close[role]
        return f"{_j(pre)} + {content} + {_j(post)}"

    default = "".join("{{ " + turn(r, _j(c)) + " }}" for r, c in [("system", system), *[
        (role, text) for d in demos for role, text in zip(("user", "assistant"), d)]])
    return ("{%- if not messages or messages[0]['role'] != 'system' %}" + default + "{% endif %}"
            "{%- for message in messages %}"
            "{%- if message['role'] == 'system' %}{{ " + turn("system", "message['content']") + " }}"
            "{%- elif message['role'] == 'user' %}{{ " + turn("user", "message['content']") + " }}"
            "{%- else %}{{ " + turn("assistant", "message['content']") + " }}{% endif %}"
            "{%- endfor %}"
            "{%- if add_generation_prompt %}{{ " + _j(fmt.generation) + " }}{% endif %}")


def _quoted(text: str) -> str:
    if '"""' in text:
        raise ExportError('The system prompt or a demonstration contains \'"""\', which an Ollama Modelfile cannot '
                          "hold; export with --format prompt and build the request yourself.")
    return f'"""{text}"""'


def modelfile(gguf_name: str, fmt: ChatFormat, user_wrap: tuple[str, str], *, system: str,
              demos: Sequence[tuple[str, str]], max_new_tokens: int) -> str:
    """An Ollama Modelfile: the GGUF, the template, the scored system prompt and demonstrations, greedy decoding."""
    lines = [f"FROM ./{gguf_name}", f"TEMPLATE {_quoted(go_template(fmt, user_wrap))}", f"SYSTEM {_quoted(system)}"]
    lines += [f"MESSAGE {role} {_quoted(text)}" for d in demos for role, text in zip(("user", "assistant"), d)]
    lines += ["PARAMETER temperature 0", f"PARAMETER num_predict {max_new_tokens}"]
    lines += [f"PARAMETER stop {json.dumps(s, ensure_ascii=False)}" for s in fmt.stop]
    return "\n".join(lines) + "\n"
