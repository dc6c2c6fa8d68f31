"""Fine-tune a sentence encoder with a classification head (the ``encoder_ft`` rung's training).

The recipe follows what the frozen embedding probe already shows works, then moves the encoder:

* **Pooling as the embedder pools**: the mask-weighted mean of the last hidden states, L2-normalised
  (all-MiniLM-L6-v2's own pooling), not the ``[CLS]`` token a stock sequence-classification head reads.
* **A warm-started head**: a logistic regression fitted on the frozen encoder's embeddings of train (the probe,
  ``C`` = ``probe_c``) gives the linear head its first weights, so fine-tuning starts from the probe's accuracy
  instead of a random head that drags the body around in its first steps.
* **Two learning rates**: small for the body, larger for the head; linear decay after a short warm-up.
* transformers' ``Trainer`` does the loop: an evaluation on dev each epoch, the best epoch's weights kept
  (``load_best_model_at_end``), early stopping after ``patience`` epochs without a better dev accuracy.

The trained encoder is saved as a standard Hugging Face model directory (``AutoModel`` and ``AutoTokenizer`` load
it; the sentence-transformers module files of the base are copied beside it, so ``SentenceTransformer`` loads it as
an embedder too) plus ``classifier_head.safetensors`` (``weight`` [labels x hidden], ``bias``) and
``classifier_head.json`` (pooling, normalisation, label order): logits = weight @ normalise(mean_pool(h)) + bias.

Out of scope: the rung (``strategies/encoder_ft.py``), evaluation, timing priors (``timing.py``).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["EncoderRecipe", "EncoderClassifier", "train_encoder", "load_encoder_classifier", "HEAD_FILE",
           "HEAD_CONFIG", "ST_FILES"]

HEAD_FILE = "classifier_head.safetensors"
HEAD_CONFIG = "classifier_head.json"
#: sentence-transformers module files copied from the base model directory when it has them
ST_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json", "1_Pooling", "2_Normalize")


@dataclass(frozen=True)
class EncoderRecipe:
    """How the encoder is fine-tuned (every field is part of the artifact's identity)."""

    pooling: str = "mean"  # "mean" (mask-weighted, as the embedder) or "cls"
    normalize: bool = True  # L2-normalise the pooled embedding before the head
    warm_start: bool = True  # head initialised from a logistic probe on the frozen embeddings
    probe_c: float = 10.0
    body_lr: float = 5e-5
    head_lr: float = 1e-3
    epochs: float = 3.0  # BANKING77: dev accuracy peaked at the 2nd of 3 (benchmarks/results/encoder_ft.json)
    batch_size: int = 32
    max_length: int = 64
    warmup: float = 0.06  # share of the steps
    weight_decay: float = 0.01
    label_smoothing: float = 0.0
    dropout: float = 0.0  # before the head
    patience: int = 2  # epochs without a better dev accuracy before stopping
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _torch() -> Any:
    import torch

    return torch


class EncoderClassifier(_torch().nn.Module):  # type: ignore[misc]
    """An encoder body, its pooling, and a linear head over the labels."""

    def __init__(self, body: Any, num_labels: int, *, pooling: str = "mean", normalize: bool = True,
                 dropout: float = 0.0, label_smoothing: float = 0.0) -> None:
        torch = _torch()
        super().__init__()
        self.body = body
        self.pooling, self.normalize, self.label_smoothing = pooling, normalize, label_smoothing
        self.dropout = torch.nn.Dropout(dropout)
        self.head = torch.nn.Linear(body.config.hidden_size, num_labels)

    def embed(self, input_ids: Any, attention_mask: Any, **kw: Any) -> Any:
        torch = _torch()
        hidden = self.body(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1) if self.normalize else pooled

    def forward(self, input_ids: Any, attention_mask: Any, labels: Any = None, **kw: Any) -> dict[str, Any]:
        torch = _torch()
        logits = self.head(self.dropout(self.embed(input_ids, attention_mask, **kw)))
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        return out


def _encode(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[dict[str, list[int]]]:
    enc = tokenizer(list(texts), truncation=True, max_length=max_length)
    return [{"input_ids": ids, "attention_mask": m} for ids, m in zip(enc["input_ids"], enc["attention_mask"])]


def _batched(model: EncoderClassifier, tokenizer: Any, texts: Sequence[str], max_length: int, width: int,
             rows: Callable[[Any, Any], Any], batch_size: int = 128) -> np.ndarray:
    """``rows(input_ids, attention_mask)`` over ``texts`` in batches of similar length, rows back in input order."""
    torch = _torch()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), width), dtype=np.float32)
    model.eval()
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt")
            out[idx] = rows(enc["input_ids"], enc["attention_mask"]).float().numpy()
    return out


def _embeddings(model: EncoderClassifier, tokenizer: Any, texts: Sequence[str], max_length: int) -> np.ndarray:
    """The frozen encoder's pooled embeddings (what the head reads)."""
    return _batched(model, tokenizer, texts, max_length, model.head.in_features, model.embed)


def predict_proba(model: EncoderClassifier, tokenizer: Any, texts: Sequence[str], max_length: int) -> np.ndarray:
    """Label probabilities for ``texts`` (rows in input order), batched by length."""
    torch = _torch()
    return _batched(model, tokenizer, texts, max_length, model.head.out_features,
                    lambda ids, mask: torch.softmax(model(ids, mask)["logits"].float(), dim=-1))


def _warm_start(model: EncoderClassifier, x: np.ndarray, y: np.ndarray, c: float, seed: int) -> float:
    """Fit the probe on frozen embeddings and copy it into the head; returns its train accuracy."""
    from sklearn.linear_model import LogisticRegression

    torch = _torch()
    probe = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(x, y)
    coef = np.zeros((model.head.out_features, x.shape[1]), dtype=np.float32)
    bias = np.full(model.head.out_features, -30.0, dtype=np.float32)  # a label absent from train stays unlikely
    for row, cls in enumerate(probe.classes_):
        coef[int(cls)], bias[int(cls)] = probe.coef_[row], probe.intercept_[row]
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(coef))
        model.head.bias.copy_(torch.from_numpy(bias))
    return float((probe.predict(x) == y).mean())


def train_encoder(base_dir: Path | str, train: Sequence[tuple[str, str]], dev: Sequence[tuple[str, str]],
                  labels: Sequence[str], out_dir: Path | str, recipe: EncoderRecipe = EncoderRecipe(), *,
                  progress: Callable[[int, int], None] | None = None, threads: int | None = None,
                  provenance: dict[str, Any] | None = None, time_budget_s: float | None = None,
                  train_embeddings: np.ndarray | None = None) -> dict[str, Any]:
    """Fine-tune the encoder at ``base_dir`` on ``(text, label)`` pairs; write the model to ``out_dir``.

    Returns what the training measured: seconds (warm start, training), epochs run, dev accuracy per epoch, the
    best epoch, the tokens an epoch computes. An ``out_dir`` that already holds a finished model is not trained
    again; a killed training resumes from its last epoch's checkpoint. ``time_budget_s``: training stops at the
    first step past it (after an evaluation on dev, so the best epoch so far, or the last weights, are kept).
    ``train_embeddings``: the frozen encoder's pooled embeddings of ``train`` when the caller has them (the run's
    embedding cache), so the warm start does not compute them again."""
    torch = _torch()
    from transformers import (
        AutoModel,
        AutoTokenizer,
        DataCollatorWithPadding,
        EarlyStoppingCallback,
        Trainer,
        TrainingArguments,
    )

    out_dir = Path(out_dir)
    done = out_dir / HEAD_CONFIG
    if done.is_file():
        return json.loads(done.read_text()).get("training", {})
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(recipe.seed)
    index = {label: i for i, label in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
    body = AutoModel.from_pretrained(base_dir, local_files_only=True, dtype=torch.float32)
    model = EncoderClassifier(body, len(labels), pooling=recipe.pooling, normalize=recipe.normalize,
                              dropout=recipe.dropout, label_smoothing=recipe.label_smoothing)
    y_train = np.array([index[y] for _, y in train])
    start = time.perf_counter()
    warm: dict[str, Any] = {}
    if recipe.warm_start:
        x = train_embeddings if train_embeddings is not None else _embeddings(
            model, tokenizer, [t for t, _ in train], recipe.max_length)
        warm = {"probe_train_accuracy": _warm_start(model, x, y_train, recipe.probe_c, recipe.seed),
                "seconds": time.perf_counter() - start,
                "embeddings": "the run's embedding cache" if train_embeddings is not None else "computed"}
    rows = [{**enc, "labels": int(y)} for enc, y in zip(_encode(tokenizer, [t for t, _ in train], recipe.max_length),
                                                          y_train)]
    dev_rows = [{**enc, "labels": index[y]} for enc, (_, y) in
                zip(_encode(tokenizer, [t for t, _ in dev], recipe.max_length), dev)]
    steps_per_epoch = math.ceil(len(rows) / recipe.batch_size)
    total_steps = max(1, math.ceil(steps_per_epoch * recipe.epochs))
    head = {id(p) for p in model.head.parameters()}
    decay = [p for n, p in model.body.named_parameters() if not any(k in n for k in ("bias", "LayerNorm", "norm"))]
    no_decay = [p for n, p in model.body.named_parameters() if any(k in n for k in ("bias", "LayerNorm", "norm"))]
    optimizer = torch.optim.AdamW([
        {"params": decay, "lr": recipe.body_lr, "weight_decay": recipe.weight_decay},
        {"params": no_decay, "lr": recipe.body_lr, "weight_decay": 0.0},
        {"params": [p for p in model.parameters() if id(p) in head], "lr": recipe.head_lr, "weight_decay": 0.0},
    ])
    work = out_dir.parent / (out_dir.name + ".work")
    args = TrainingArguments(
        output_dir=str(work), per_device_train_batch_size=recipe.batch_size, per_device_eval_batch_size=128,
        num_train_epochs=recipe.epochs, warmup_steps=max(0, round(recipe.warmup * total_steps)),
        lr_scheduler_type="linear", eval_strategy="epoch", save_strategy="epoch", save_total_limit=2,
        load_best_model_at_end=True, metric_for_best_model="accuracy", greater_is_better=True,
        save_only_model=False, use_cpu=not torch.cuda.is_available(), report_to="none", seed=recipe.seed,
        logging_strategy="no", disable_tqdm=True, label_names=["labels"], dataloader_num_workers=0,
        train_sampling_strategy="group_by_length",
    )

    def accuracy(pred: Any) -> dict[str, float]:
        logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
        return {"accuracy": float((np.asarray(logits).argmax(-1) == pred.label_ids).mean())}

    from transformers import TrainerCallback

    stopped: dict[str, Any] = {}

    class ProgressCallback(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if progress is not None:
                progress(state.global_step, state.max_steps)
            elapsed = time.perf_counter() - start
            if time_budget_s is not None and elapsed > time_budget_s and not stopped:
                stopped.update(step=state.global_step, of=state.max_steps, elapsed_s=elapsed, budget_s=time_budget_s)
                control.should_evaluate = True  # score this step's weights on dev: the best so far is kept
                control.should_save = True
                control.should_training_stop = True

    trainer = Trainer(model=model, args=args, train_dataset=rows, eval_dataset=dev_rows,
                      data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=accuracy,
                      optimizers=(optimizer, None),
                      callbacks=[EarlyStoppingCallback(early_stopping_patience=recipe.patience), ProgressCallback()])
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # progress goes to ``progress``; the logs are kept in ``state``
    train_start = time.perf_counter()
    resume = any(work.glob("checkpoint-*")) if work.is_dir() else False
    trainer.train(resume_from_checkpoint=True if resume else None)
    train_s = time.perf_counter() - train_start
    history = [{"epoch": h["epoch"], "dev_accuracy": h["eval_accuracy"]} for h in trainer.state.log_history
               if "eval_accuracy" in h]
    best = max(history, key=lambda h: h["dev_accuracy"]) if history else None
    training = {"recipe": recipe.to_json(), "warm_start": warm, "train_s": train_s, "steps": trainer.state.global_step,
                "epochs_run": trainer.state.epoch, "dev_history": history, "best_epoch": best and best["epoch"],
                "best_dev_accuracy": best and best["dev_accuracy"], "train_examples": len(rows),
                "dev_examples": len(dev_rows), "tokens_per_epoch": sum(len(r["input_ids"]) for r in rows),
                "dev_tokens": sum(len(r["input_ids"]) for r in dev_rows),
                "stopped_for_budget": stopped or None}
    _save(model, tokenizer, Path(base_dir), out_dir, labels, recipe, training, provenance or {})
    shutil.rmtree(work, ignore_errors=True)
    return training


def _save(model: EncoderClassifier, tokenizer: Any, base_dir: Path, out_dir: Path, labels: Sequence[str],
          recipe: EncoderRecipe, training: dict[str, Any], provenance: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    from ..backends.model_cache import PROVENANCE_FILE

    tmp = out_dir.parent / (out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.body.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    for name in ST_FILES:
        src = base_dir / name
        if src.is_dir():
            shutil.copytree(src, tmp / name)
        elif src.is_file():
            shutil.copy2(src, tmp / name)
    save_file({"weight": model.head.weight.detach().contiguous(), "bias": model.head.bias.detach().contiguous()},
              str(tmp / HEAD_FILE))
    (tmp / PROVENANCE_FILE).write_text(json.dumps({**provenance, "labels": list(labels)}, indent=2, default=str))
    (tmp / HEAD_CONFIG).write_text(json.dumps({
        "pooling": recipe.pooling, "normalize": recipe.normalize, "max_length": recipe.max_length,
        "labels": list(labels), "logits": "weight @ pooled + bias", "training": training}, indent=2, default=str))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)


def load_encoder_classifier(model_dir: Path | str) -> tuple[EncoderClassifier, Any, dict[str, Any]]:
    """The saved encoder, its tokenizer and its head config (labels, pooling, max_length)."""
    torch = _torch()
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    model_dir = Path(model_dir)
    config = json.loads((model_dir / HEAD_CONFIG).read_text())
    body = AutoModel.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32)
    model = EncoderClassifier(body, len(config["labels"]), pooling=config["pooling"], normalize=config["normalize"])
    head = load_file(str(model_dir / HEAD_FILE))
    with torch.no_grad():
        model.head.weight.copy_(head["weight"])
        model.head.bias.copy_(head["bias"])
    return model.eval(), AutoTokenizer.from_pretrained(model_dir, local_files_only=True), config
