"""A sequence-classification model (a classifier head over the last token) as a scoring backend.

``ClassifierBackend(base, adapter=dir)`` loads ``AutoModelForSequenceClassification`` for the
base model with a PEFT adapter trained by ``tunewise.training`` (LoRA on the base, a full
``score`` layer), merged for speed. It answers :class:`ScoreRequest` s with the head's log
softmax: one forward pass per prompt, whatever the number of labels, and real probabilities.
The prompt is rendered and tokenised exactly as the local causal backend does (chat template,
``add_special_tokens=False``), which is also how the head was trained. Requests in one call are
run as padded batches, sorted by length; each request's ``latency_s`` is its batch's time divided
by the batch size (its share of the compute).

Out of scope: generation (a classifier cannot generate; ``generate`` raises), training.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import BackendError
from .base import Backend, ChoiceScores, Generation, GenerationRequest, ScoreRequest
from .devices import torch_device

__all__ = ["ClassifierBackend"]


class ClassifierBackend(Backend):
    def __init__(self, spec: str, *, adapter: str | Path, max_length: int = 256, batch_size: int = 16) -> None:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from .model_cache import adapter_fingerprint, local_model_path, resolve_model

        super().__init__(name=spec)
        self.can_score = True
        self.max_batch_size = batch_size
        self.max_length = max_length
        self.adapter = Path(adapter)
        resolved = resolve_model(spec)
        path = local_model_path(resolved)
        self.device = torch_device()
        self._tok = AutoTokenizer.from_pretrained(path)
        if self._tok.pad_token_id is None:
            self._tok.pad_token = self._tok.eos_token
        from peft import PeftConfig

        config = PeftConfig.from_pretrained(str(self.adapter))
        labels = _labels_of(self.adapter)
        base = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)}, dtype=torch.float32)
        base.config.pad_token_id = self._tok.pad_token_id
        model = PeftModel.from_pretrained(base, str(self.adapter), config=config)
        self._model = model.merge_and_unload().to(self.device).eval()
        self.labels = labels
        self._index = {label: i for i, label in enumerate(labels)}
        self._fp = f"{resolved.fingerprint}|seq-cls|adapter={adapter_fingerprint(self.adapter)}"
        self.info = {"model": spec, "head": "sequence classification", "adapter": str(self.adapter),
                     "labels": len(labels), "device": self.device, "fingerprint": self._fp}

    @property
    def model(self) -> Any:
        return self._model

    @property
    def tokenizer(self) -> Any:
        return self._tok

    def fingerprint(self) -> str:
        return self._fp

    def count_tokens(self, text: str) -> int:
        return len(self._tok(text, add_special_tokens=False)["input_ids"])

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        raise BackendError(f"{self.name} with a classifier head can only score labels, not generate text.")

    def score(self, requests: Sequence[ScoreRequest]) -> list[ChoiceScores]:
        import torch

        from .local import encode, render_messages

        ids = [encode(self._tok, render_messages(self._tok, r.prompt))[-self.max_length:] for r in requests]
        unknown = sorted({c for r in requests for c in r.choices if c not in self._index})
        if unknown:
            raise BackendError(f"the classifier head was not trained on label '{unknown[0]}'.")
        order = sorted(range(len(requests)), key=lambda i: len(ids[i]))
        out: dict[int, ChoiceScores] = {}
        pad = self._tok.pad_token_id
        for start in range(0, len(order), self.max_batch_size):
            batch = order[start: start + self.max_batch_size]
            t0 = time.perf_counter()
            width = max(len(ids[i]) for i in batch)
            input_ids = torch.tensor([ids[i] + [pad] * (width - len(ids[i])) for i in batch], device=self.device)
            mask = torch.tensor([[1] * len(ids[i]) + [0] * (width - len(ids[i])) for i in batch], device=self.device)
            with torch.inference_mode():
                logits = self._model(input_ids=input_ids, attention_mask=mask).logits.float()
            logprobs = torch.log_softmax(logits, dim=-1).cpu()
            latency = time.perf_counter() - t0
            for row, i in enumerate(batch):
                r = requests[i]
                out[i] = ChoiceScores(
                    logprobs=tuple(float(logprobs[row, self._index[c]]) for c in r.choices),
                    token_counts=tuple(0 for _ in r.choices), prompt_tokens=len(ids[i]), latency_s=latency / len(batch),
                    scored_tokens=0)
        return [out[i] for i in range(len(requests))]


def _labels_of(adapter: Path) -> list[str]:
    import json

    from .model_cache import PROVENANCE_FILE

    meta = adapter / PROVENANCE_FILE
    if not meta.is_file():
        raise BackendError(f"{adapter} has no {PROVENANCE_FILE}: the label order of the classifier head is unknown.")
    labels = json.loads(meta.read_text()).get("labels")
    if not labels:
        raise BackendError(f"{meta} does not list the classifier's labels.")
    return list(labels)
