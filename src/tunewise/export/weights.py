"""A version's weights outside tunewise: the base model's real name, the adapter as other tools load it, merged
models.

``base_identifier`` is what the rest of the world calls the model a task named: the Hugging Face id or the
directory of an ``hf:`` model, and for an embedded ``local:`` model the Hugging Face repository its GGUF was made
from (``EmbeddedModel.origin``). tunewise trained on the dequantised copy of that GGUF, not on the repository's own
weights; the export manifest says so, and the merged export carries the exact weights that were scored.

Out of scope: GGUF writing (``export/gguf_file.py``), choosing what to export (``export/__init__.py``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..errors import ExportError

__all__ = ["base_identifier", "load_tokenizer", "write_adapter", "merged_causal_lm", "merged_classifier",
           "ADAPTER_FILES"]

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")


def base_identifier(model: str) -> str:
    """The model's name outside tunewise (see the module docstring)."""
    from ..backends.model_cache import EMBEDDED, resolve_model

    kind, _, ref = model.partition(":")
    if kind == "local":
        entry = EMBEDDED.get(ref)
        if entry is not None and entry.origin:
            return entry.origin
        return str(resolve_model(model).path)
    if kind == "hf":
        local = Path(ref).expanduser()
        return str(local.resolve()) if local.is_dir() else ref
    raise ExportError(f"Model {model!r} is not one whose weights tunewise holds (local: or hf:); export the prompt "
                      "with --format prompt.")


def _base_dir(model: str) -> Path:
    from ..backends.model_cache import local_model_path, resolve_model

    return local_model_path(resolve_model(model))


def load_tokenizer(model: str) -> Any:
    """The tokenizer tunewise rendered and trained with (pad set to eos when the model has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(_base_dir(model))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def write_adapter(adapter: Path, out: Path, *, base: str, tokenizer: Any) -> list[Path]:
    """The PEFT adapter files with ``base_model_name_or_path`` set to ``base``, and the tokenizer beside them."""
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name in ADAPTER_FILES:
        if (adapter / name).is_file():
            shutil.copy2(adapter / name, out / name)
            files.append(out / name)
    config = json.loads((out / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    files += [Path(p) for p in tokenizer.save_pretrained(out)]
    return files


def merged_causal_lm(model: str, artifact: Path | None, kind: str) -> tuple[Any, Any]:
    """``(model, tokenizer)`` in float32: a fully tuned model (``kind`` "model"), the base with the adapter merged
    into its weights, or the base alone (``artifact`` None: a prompt version's model)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if kind == "model" and artifact is not None:
        return (AutoModelForCausalLM.from_pretrained(artifact, dtype=torch.float32).eval(),
                AutoTokenizer.from_pretrained(artifact))
    base = AutoModelForCausalLM.from_pretrained(_base_dir(model), dtype=torch.float32)
    return (base.eval() if artifact is None else _merge(base, artifact)), load_tokenizer(model)


def merged_classifier(model: str, adapter: Path, labels: list[str]) -> tuple[Any, Any]:
    """``(model, tokenizer)``: ``AutoModelForSequenceClassification`` with the LoRA merged and the trained head."""
    import torch
    from transformers import AutoModelForSequenceClassification

    tokenizer = load_tokenizer(model)
    base = AutoModelForSequenceClassification.from_pretrained(
        _base_dir(model), num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)}, dtype=torch.float32)
    base.config.pad_token_id = tokenizer.pad_token_id  # the head reads the last non-padding token
    return _merge(base, adapter), tokenizer


def _merge(base: Any, adapter: Path) -> Any:
    from peft import PeftModel

    return PeftModel.from_pretrained(base, str(adapter)).merge_and_unload().eval()
