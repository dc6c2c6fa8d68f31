"""Export a version for other servers: a PEFT adapter, a merged model, GGUF, an Ollama Modelfile, or its prompt.

``export_version(version, store, fmt=..., out=...)`` writes files into ``out`` and returns an :class:`ExportResult`
naming them and the command that serves them. What each format holds:

* ``peft``: the LoRA adapter, ``base_model_name_or_path`` set to the base model's real name
  (``weights.base_identifier``), the tokenizer beside it; for ``vllm serve BASE --enable-lora``.
* ``merged``: the adapter merged into the base, safetensors plus tokenizer, loadable by plain transformers; a
  classifier-head version is merged into ``AutoModelForSequenceClassification`` (its head included); a fine-tuned
  encoder (``encoder_ft``, a distilled encoder student) is its saved directory as it is.
* ``gguf``: the merged model as one float32 (or float16) GGUF file, Llama architectures only.
* ``ollama``: that GGUF with a Modelfile holding the template, system prompt, demonstrations and decoding scored.
* ``prompt``: the prompt alone (``prompt.json``, ``prompt.md``); every LLM export writes it too.

LLM exports also write ``tunewise_chat_template.jinja``: the scored prompt as a chat template (the model's own
``chat_template.jinja`` stays as it is; ``export/chat_format.py``).
What cannot be exported in a format (a classifier head as a vLLM LoRA, which vLLM rejects for its
``modules_to_save``; a prompt version as weights; a kNN index) is refused with one sentence naming what can.

Out of scope: serving (``serving/``), making versions (``versions.py``), quantisation below float16.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ExportError

__all__ = ["FORMATS", "ExportResult", "export_version"]

FORMATS = ("peft", "merged", "gguf", "ollama", "prompt")
MANIFEST = "tunewise_export.json"
_VLLM_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts; its default is 16


@dataclass(frozen=True)
class ExportResult:
    version: str
    format: str
    out: Path
    files: tuple[Path, ...]
    serve_command: str  # "" when no server takes the export as it is (the notes say what to do)
    notes: tuple[str, ...] = ()


@dataclass
class _Plan:
    """What one export needs: the version's kind, its artifact, its prompt program and the model's tokenizer."""

    version: Any
    store: Any
    kind: str  # prompt | adapter | model | classifier | encoder
    out: Path
    name: str
    artifact: Path | None = None
    program: Any = None
    tokenizer: Any = None
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def model(self) -> str:
        return self.version.manifest.get("model") or ""


def _kind(version: Any) -> str:
    strategy, config = version.strategy, version.manifest.get("candidate") or {}
    if strategy in ("prompt", "optimize"):
        return "prompt"
    if strategy == "finetune":
        if config.get("head") == "classifier":
            return "classifier"
        return "model" if (version.manifest.get("artifact") or {}).get("kind") == "model" else "adapter"
    if strategy in ("encoder_ft", "distill"):
        return "encoder"
    raise ExportError(f"Version {version.id} is a {strategy} baseline with no model weights or prompt to export; "
                      "serve it with `tunewise serve`.")


_ALLOWED = {
    "prompt": ("prompt", "gguf", "ollama"),
    "adapter": FORMATS,
    "model": ("merged", "gguf", "ollama", "prompt"),
    "classifier": ("merged", "prompt"),
    "encoder": ("merged",),
}
_WHY_NOT = {
    ("classifier", "peft"): "its classifier head is a trained layer PEFT keeps in modules_to_save, which vLLM's LoRA "
                            "loader rejects; use --format merged (a sequence-classification model with the head)",
    ("classifier", "gguf"): "a classifier head is not a language model llama.cpp can run; use --format merged",
    ("classifier", "ollama"): "a classifier head is not a language model Ollama can run; use --format merged",
    ("model", "peft"): "it trained every weight, so there is no adapter; use --format merged",
    ("prompt", "peft"): "a prompt version has no trained weights; use --format prompt, gguf or ollama",
    ("prompt", "merged"): "a prompt version has no trained weights; use --format prompt, gguf or ollama",
}


def _refuse(version: Any, kind: str, fmt: str) -> None:
    if fmt not in FORMATS:
        raise ExportError(f"Unknown export format {fmt!r} (one of {', '.join(FORMATS)}).")
    if fmt in _ALLOWED[kind]:
        return
    why = _WHY_NOT.get((kind, fmt)) or f"a {version.strategy} version exports as {' or '.join(_ALLOWED[kind])} only"
    raise ExportError(f"Version {version.id} ({version.rung}) cannot be exported as {fmt}: {why}.")


def _served_name(version: Any) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", f"{version.manifest['task']['name']}-{version.id[:8]}".lower()).strip("-")


def export_version(version: Any, store: Any, *, fmt: str, out: Path, name: str | None = None,
                   gguf_dtype: str = "f32") -> ExportResult:
    """Write ``version`` in format ``fmt`` into ``out`` (created; files already there are overwritten)."""
    from .gguf_file import GGUF_DTYPES

    kind = _kind(version)
    _refuse(version, kind, fmt)
    if fmt in ("gguf", "ollama") and gguf_dtype not in GGUF_DTYPES:
        raise ExportError(f"GGUF dtype {gguf_dtype!r} is not one of {', '.join(GGUF_DTYPES)}.")
    plan = _Plan(version=version, store=store, kind=kind, out=Path(out), name=name or _served_name(version))
    plan.artifact = _artifact(version, store)
    plan.out.mkdir(parents=True, exist_ok=True)
    if kind == "encoder":
        command = _export_encoder(plan)
    else:
        _prepare(plan, needs_tokenizer=fmt != "prompt")
        command = _EXPORTERS[fmt](plan, gguf_dtype)
        plan.files += _prompt_files(plan)
    result = ExportResult(version=version.id, format=fmt, out=plan.out, files=tuple(plan.files),
                          serve_command=command, notes=tuple(plan.notes))
    _write_manifest(plan, result)
    return result


def _artifact(version: Any, store: Any) -> Path | None:
    """The version's trained artifact, unchanged since the version was made."""
    from ..backends.model_cache import directory_fingerprint

    recorded = version.manifest.get("artifact")
    if not recorded:
        return None
    path = store.directory / recorded["path"]
    if not path.is_dir():
        raise ExportError(f"The trained artifact of version {version.id} ({path}) is missing; run the task again "
                          "to train it.")
    if directory_fingerprint(path) != recorded["fingerprint"]:
        raise ExportError(f"The artifact of version {version.id} ({path}) changed since the version was made.")
    return path


def _prepare(plan: _Plan, *, needs_tokenizer: bool) -> None:
    """The prompt program that answered for the version, and the model's tokenizer where tunewise has the weights."""
    from .weights import load_tokenizer

    if plan.kind == "prompt":
        from ..versions import load_candidate

        plan.program, backend = load_candidate(plan.version, plan.store)
        if backend is not None:
            backend.close()
    else:
        plan.program = _tuned_program(plan)
    kind = plan.model.partition(":")[0]
    if kind in ("local", "hf"):
        plan.tokenizer = load_tokenizer(plan.model)
    elif needs_tokenizer:
        raise ExportError(f"Version {plan.version.id} runs on {plan.model}, whose weights tunewise does not hold; "
                          "export it with --format prompt.")


def _tuned_program(plan: _Plan) -> Any:
    """The compact prompt the tuned model was trained on and scored with, checked against the version's record."""
    from ..backends.model_cache import PROVENANCE_FILE
    from ..strategies.finetuning import tuned_program
    from ..versions import task_spec

    assert plan.artifact is not None
    manifest = plan.version.manifest
    spec = task_spec(plan.version, plan.store).for_model(manifest["rung"].get("model"))
    labels = json.loads((plan.artifact / PROVENANCE_FILE).read_text()).get("labels") or []
    program = tuned_program(spec, labels, plan.version.rung)
    recorded = manifest["candidate"].get("prompt") or {}
    if (recorded.get("template"), recorded.get("instructions")) != (program.template.to_json(),
                                                                   program.variables["instructions"]):
        raise ExportError(f"Version {plan.version.id}'s prompt no longer rebuilds as recorded; the code or task that "
                          "made it changed, so run the task again and create a new version.")
    return program


# --------------------------------------------------------------------------- the formats


def _base(plan: _Plan) -> str:
    from .weights import base_identifier

    return base_identifier(plan.model)


def _prompt_file(plan: _Plan) -> Any:
    from .prompt_file import prompt_file

    stop = _chat_format(plan).stop if plan.tokenizer is not None else ()
    base = _base(plan) if plan.tokenizer is not None else None
    return prompt_file(plan.version, plan.program, base_model=base, stop=stop)


def _chat_format(plan: _Plan) -> Any:
    from .chat_format import derive_chat_format

    return derive_chat_format(plan.tokenizer)


def _demos(prompt: Any) -> list[tuple[str, str]]:
    return [(d["input"], d["assistant"]) for d in prompt.demonstrations]


def _chat_template(plan: _Plan, *, required: bool) -> Path | None:
    """``tunewise_chat_template.jinja``: the scored prompt as a chat template; None (with a note) when it cannot be one."""
    from .chat_format import jinja_template

    prompt = _prompt_file(plan)
    why = ("its demonstrations are retrieved per request" if plan.program.retriever is not None else
           "its user template does not hold the input exactly once" if prompt.user_wrap is None else None)
    if why is not None:
        if required:
            raise ExportError(f"Version {plan.version.id}'s prompt cannot be baked into a server template: {why}; "
                              "export it with --format prompt.")
        plan.notes.append(f"No tunewise_chat_template.jinja: {why}; build each request as prompt.md shows.")
        return None
    path = plan.out / "tunewise_chat_template.jinja"
    path.write_text(jinja_template(_chat_format(plan), prompt.user_wrap, system=prompt.system, demos=_demos(prompt)))
    plan.files.append(path)
    return path


def _prompt_files(plan: _Plan) -> list[Path]:
    return _prompt_file(plan).write(plan.out)


def _export_prompt(plan: _Plan, _dtype: str) -> str:
    if plan.tokenizer is None:
        plan.notes.append(f"The version runs on {plan.model}: send that API the messages prompt.md describes, with "
                          "its decoding settings.")
        return ""
    template = _chat_template(plan, required=False)
    return f"vllm serve {_base(plan)} --chat-template {template}" if template else ""


def _export_peft(plan: _Plan, _dtype: str) -> str:
    from .weights import write_adapter

    assert plan.artifact is not None
    base = _base(plan)
    plan.files += write_adapter(plan.artifact, plan.out, base=base, tokenizer=plan.tokenizer)
    template = _chat_template(plan, required=False)
    rank = int((plan.version.manifest["candidate"] or {}).get("r") or 8)
    max_rank = next((r for r in _VLLM_RANKS if r >= rank), rank)
    command = f"vllm serve {base} --enable-lora --lora-modules {plan.name}={plan.out.resolve()}"
    command += f" --max-lora-rank {max_rank}" if max_rank > 16 else ""
    if plan.model.startswith("local:"):
        plan.notes.append(f"tunewise trained this adapter on a float32 copy of {plan.model}'s quantised GGUF, not "
                          f"on {base}'s own weights; --format merged carries the exact weights that were scored.")
    return command + (f" --chat-template {template}" if template else "")


def _export_merged(plan: _Plan, _dtype: str) -> str:
    from .weights import merged_causal_lm, merged_classifier

    if plan.kind == "classifier":
        assert plan.artifact is not None
        model, tokenizer = merged_classifier(plan.model, plan.artifact, list(plan.program.labels))
    else:
        model, tokenizer = merged_causal_lm(plan.model, plan.artifact, plan.kind)
    model.save_pretrained(plan.out)
    plan.files += [p for p in sorted(plan.out.iterdir()) if p.suffix == ".safetensors"
                   or p.name in ("config.json", "generation_config.json")]
    plan.files += [Path(p) for p in tokenizer.save_pretrained(plan.out)]
    if plan.kind == "classifier":
        plan.notes.append("A sequence-classification model: POST each prompt, rendered as prompt.md shows (chat "
                          "template applied), to vLLM's /classify; the label order is config.json's id2label.")
        return f"vllm serve {plan.out.resolve()} --runner pooling --convert classify --served-model-name {plan.name}"
    template = _chat_template(plan, required=False)
    command = f"vllm serve {plan.out.resolve()} --served-model-name {plan.name}"
    return command + (f" --chat-template {template}" if template else "")


def _write_gguf(plan: _Plan, dtype: str) -> Path:
    from ..backends.model_cache import source_gguf
    from .gguf_file import source_pre_tokenizer, write_gguf
    from .weights import merged_causal_lm

    model, tokenizer = merged_causal_lm(plan.model, None if plan.kind == "prompt" else plan.artifact, plan.kind)
    source = source_gguf(plan.model)
    path = plan.out / f"{plan.name}.{dtype}.gguf"
    write_gguf(model, tokenizer, path, dtype=dtype, name=plan.name,
               pre=source_pre_tokenizer(source) if source is not None else None)
    if source is None:
        plan.notes.append("The GGUF names no llama.cpp pre-tokenizer (tunewise knows it only for models that came "
                          "as GGUF), so llama.cpp splits text with its default rules.")
    plan.files.append(path)
    return path


def _export_gguf(plan: _Plan, dtype: str) -> str:
    path = _write_gguf(plan, dtype)
    template = _chat_template(plan, required=False)
    tokens = plan.program.settings.max_new_tokens
    command = f"llama-server -m {path.resolve()} --temp 0 -n {tokens}"
    return command + (f" --jinja --chat-template-file {template}" if template else "")


def _export_ollama(plan: _Plan, dtype: str) -> str:
    from .chat_format import modelfile

    prompt = _prompt_file(plan)
    _chat_template(plan, required=True)  # refuses a prompt no template can hold, before the GGUF is written
    path = _write_gguf(plan, dtype)
    text = modelfile(path.name, _chat_format(plan), prompt.user_wrap, system=prompt.system, demos=_demos(prompt),
                     max_new_tokens=prompt.decoding["max_new_tokens"])
    (plan.out / "Modelfile").write_text(text)
    plan.files.append(plan.out / "Modelfile")
    return f"cd {plan.out.resolve()} && ollama create {plan.name} -f Modelfile && ollama run {plan.name}"


_EXPORTERS = {"prompt": _export_prompt, "peft": _export_peft, "merged": _export_merged, "gguf": _export_gguf,
              "ollama": _export_ollama}


def _export_encoder(plan: _Plan) -> str:
    assert plan.artifact is not None
    shutil.copytree(plan.artifact, plan.out, dirs_exist_ok=True)
    plan.files += sorted(p for p in plan.out.rglob("*") if p.is_file())
    plan.notes.append("A fine-tuned sentence encoder and its linear head: transformers' AutoModel loads the encoder; "
                      "logits = weight @ normalise(mean_pool(hidden states)) + bias, from classifier_head.safetensors "
                      "(classifier_head.json gives pooling, labels and max_length); no vLLM or Ollama runner serves "
                      "this head, `tunewise serve` does.")
    return ""


def _write_manifest(plan: _Plan, result: ExportResult) -> None:
    manifest = plan.version.manifest
    record = {"version": plan.version.id, "format": result.format, "rung": plan.version.rung,
              "strategy": plan.version.strategy, "model": manifest.get("model"),
              "base_model": _base(plan) if plan.tokenizer is not None else None,
              "artifact": manifest.get("artifact"), "metric": manifest.get("metric"),
              "files": [str(p.relative_to(plan.out)) for p in result.files], "serve_command": result.serve_command,
              "notes": list(result.notes)}
    (plan.out / MANIFEST).write_text(json.dumps(record, indent=2, default=str) + "\n")
