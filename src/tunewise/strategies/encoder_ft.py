"""``encoder_ft``: a small task model, the task's sentence encoder fine-tuned with a classification head.

For classification the cheapest strong fine-tune is often a small encoder, not an LLM: the frozen MiniLM probe is
already a strong baseline, and fine-tuning the encoder under it (``training/encoder.py``: mean pooling as the
embedder, a head warm-started from the probe, early stopping on dev) is the next step up. The candidate answers
with label probabilities from one forward pass per batch, without an LLM.

Parameters (the rung's ``params``): the :class:`~tunewise.training.encoder.EncoderRecipe` fields, ``encoder``
(default the embedded all-MiniLM-L6-v2; ``hf:<id or directory>`` or a directory for any Hugging Face encoder),
``limit`` (train on a stratified subset of that many examples) and ``time_budget_minutes`` (stop training there,
keeping the best epoch so far). The artifact is content-keyed by the base encoder's files, the recipe and the
data, reused by later runs, and rebuilt (never retrained) to serve a version.

Out of scope: the training loop (``training/encoder.py``), LLM fine-tuning (``finetuning.py``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import StoreError, TaskSpecError
from ..evaluation.records import Prediction
from ..training.subsets import describe_subset, subset_hash, training_subset
from .base import Candidate, PrepareContext, register

__all__ = ["EncoderCandidate", "prepare_encoder_ft", "encoder_name", "encoder_dir", "encoder_work",
           "recipe_from_params", "ENCODER_KEYS"]

#: rung parameters that are not recipe fields
ENCODER_KEYS = ("encoder", "limit", "time_budget_minutes", "fit_reason")
FORMAT_VERSION = 1  # bump when the saved format changes: older artifacts are then not reused


def encoder_name(rung: Any, spec: Any) -> str:
    """The encoder a rung fine-tunes: its ``encoder`` parameter, else the task's embedder when that is a
    transformers encoder (the embedded all-MiniLM-L6-v2 by default)."""
    name = rung.params.get("encoder") or spec.embedder
    if name.startswith("hashing"):
        raise TaskSpecError(f"rung '{rung.name}': the task's embedder '{name}' is not a transformers encoder, so "
                            "there is none to fine-tune; give the rung an encoder (hf:<id or directory>).")
    return name


def encoder_dir(name: str) -> Path:
    """The encoder's model directory: the embedded MiniLM, ``hf:<id or dir>``, or a directory."""
    from ..backends.model_cache import local_model_path, resolve_model
    from ..embeddings import minilm_model_dir

    if name in ("minilm-l6-v2", "local:minilm-l6-v2"):
        return minilm_model_dir()
    ref = name if name.startswith("hf:") else f"hf:{name}"
    return local_model_path(resolve_model(ref))


def recipe_from_params(rung_name: str, params: dict[str, Any]) -> Any:
    from ..training.encoder import EncoderRecipe

    fields = {f.name for f in dataclasses.fields(EncoderRecipe)}
    unknown = sorted(set(params) - fields - set(ENCODER_KEYS))
    if unknown:
        raise TaskSpecError(f"rung '{rung_name}': unknown encoder_ft parameter(s) {', '.join(unknown)} "
                            f"(known: {', '.join(sorted(fields | set(ENCODER_KEYS) - {'fit_reason'}))}).")
    try:
        return EncoderRecipe(**{k: v for k, v in params.items() if k in fields})
    except TypeError as exc:
        raise TaskSpecError(f"rung '{rung_name}': {exc}.") from None


@dataclass
class EncoderCandidate(Candidate):
    """A fine-tuned encoder and its head: label probabilities, one forward pass per batch of examples."""

    rung: str
    config: dict[str, Any]
    path: Path
    extras: dict[str, Any] = field(default_factory=dict)
    uses_llm: bool = False
    _loaded: Any = None

    def _model(self) -> Any:
        if self._loaded is None:
            from ..training.encoder import load_encoder_classifier

            self._loaded = load_encoder_classifier(self.path)
        return self._loaded

    def predict(self, examples: Sequence[Any], *, backend: Any = None) -> list[Prediction]:
        from ..training.encoder import predict_proba

        model, tokenizer, config = self._model()
        start = time.perf_counter()
        probs = predict_proba(model, tokenizer, [e.text for e in examples], config["max_length"])
        seconds = time.perf_counter() - start
        labels = config["labels"]
        best = probs.argmax(axis=1)
        return [Prediction(example_id=e.id, output=labels[j], raw=labels[j], confidence=float(probs[i, j]),
                           latency_s=seconds, batch_size=len(examples))
                for i, (e, j) in enumerate(zip(examples, best))]

    def close(self) -> None:
        self._loaded = None


def _artifact_key(base: Path, recipe: Any, train: Sequence[Any], dev: Sequence[Any], labels: Sequence[str],
                  seed: int) -> str:
    from ..backends.model_cache import directory_fingerprint

    ident = {"format": FORMAT_VERSION, "strategy": "encoder_ft", "base": directory_fingerprint(base),
             "recipe": recipe.to_json(), "train": subset_hash(train), "dev": subset_hash(dev), "labels": list(labels),
             "seed": seed}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


@register("encoder_ft")
def prepare_encoder_ft(rung: Any, ctx: PrepareContext) -> EncoderCandidate:
    """Fine-tune (or reuse) the encoder on train with early stopping on dev; never on test."""
    from ..training.encoder import HEAD_CONFIG, train_encoder

    spec = ctx.spec
    if spec.kind != "classification":
        raise TaskSpecError(f"rung '{rung.name}': encoder_ft classifies; it does not apply to {spec.kind} tasks.")
    if ctx.artifacts is None:
        raise TaskSpecError(f"rung '{rung.name}': no artifact directory is available for training.")
    params = dict(rung.params)
    recipe = dataclasses.replace(recipe_from_params(rung.name, params), seed=ctx.seed)
    labels = list(ctx.splits.labels or sorted({e.target for e in ctx.splits.train}))
    subset = training_subset(ctx.splits.train, limit=params.get("limit"), seed=ctx.seed)
    dev = list(ctx.splits.dev)
    if not subset:
        raise TaskSpecError(f"rung '{rung.name}': the training split is empty.")
    name = encoder_name(rung, spec)
    base = encoder_dir(name)
    key = _artifact_key(base, recipe, subset, dev, labels, ctx.seed)
    out = ctx.artifacts / f"encoder-{key}"
    reused = (out / HEAD_CONFIG).is_file()
    if not reused and not ctx.may_train:
        raise StoreError(f"rung '{rung.name}': its trained encoder {out} is missing and serving never trains; "
                         "run the task again to train it.")
    report = None
    if ctx.report is not None:
        def report(done: int, total: int) -> None:
            ctx.report(f"{rung.name}: training", done, total)
    minutes = params.get("time_budget_minutes")
    provenance = {"rung": rung.name, "strategy": "encoder_ft", "task": spec.name, "data_hash": ctx.splits.data_hash,
                  "base_encoder": name, "base_dir": str(base),
                  "train_subset": describe_subset(subset), "dev_subset": describe_subset(dev), "artifact_key": key, **ctx.provenance}
    # the run's embedder is this encoder: its cached embeddings of train are the warm start's input
    cached = None
    if (not reused and recipe.warm_start and ctx.embed is not None and name == spec.embedder
            and recipe.pooling == "mean" and recipe.normalize):
        cached = ctx.embed([e.text for e in subset])
    training = train_encoder(base, [(e.text, e.target) for e in subset], [(e.text, e.target) for e in dev], labels,
                             out, recipe, progress=report, provenance=provenance,
                             time_budget_s=None if minutes is None else 60 * float(minutes), train_embeddings=cached)
    config = {"strategy": "encoder_ft", "encoder": name, **recipe.to_json(),
              "artifact": str(out), "artifact_key": key, "artifact_reused": reused,
              "train_subset": describe_subset(subset), "dev_subset": describe_subset(dev), "seed": ctx.seed,
              "training": training}
    if params.get("time_budget_minutes") is not None:
        config["time_budget_minutes"] = params["time_budget_minutes"]
    extras = {"training": {**training, **_measured(training), "examples": len(subset), "reused": reused,
                           "method": "full (encoder)", "head": "linear", "learning_rate": recipe.body_lr,
                           "stopped": "budget" if training.get("stopped_for_budget") else None}}
    return EncoderCandidate(rung=rung.name, config=config, path=out, extras=extras)


def _measured(training: dict[str, Any]) -> dict[str, Any]:
    """The training's seconds and work in the policy's units (``wall_s``, ``epochs``, ``work_tokens``)."""
    from ..training.timing import EVAL_TOKEN_SHARE

    warm = training.get("warm_start") or {}
    per_epoch = float(training.get("tokens_per_epoch") or 0)
    dev = float(training.get("dev_tokens") or 0) * len(training.get("dev_history") or ())
    return {"wall_s": float(training.get("train_s") or 0.0) + float(warm.get("seconds") or 0.0),
            "epochs": training.get("epochs_run"),
            "work_tokens": float(training.get("epochs_run") or 0) * per_epoch
            + EVAL_TOKEN_SHARE * (per_epoch * bool(warm) + dev)}


def encoder_work(rung: Any, spec: Any, train: Sequence[Any], dev: Sequence[Any] = ()) -> Any:
    """What an ``encoder_ft`` rung will compute before it runs, in the encoder's tokens (the policy's unit): the
    warm start's forward pass over train and each epoch's dev evaluation at a third of a training token, every
    epoch's training tokens in full; with the nested stratified subsets it may be fitted to."""
    from ..training.subsets import nested_order
    from ..training.timing import EVAL_TOKEN_SHARE, minimum_examples
    from .finetuning import TrainingWork

    if spec.kind != "classification":
        raise TaskSpecError(f"rung '{rung.name}': encoder_ft classifies; it does not apply to {spec.kind} tasks.")
    recipe = recipe_from_params(rung.name, dict(rung.params))
    lengths, basis = _token_lengths(encoder_name(rung, spec), [e.text for e in [*train, *dev]], recipe.max_length)
    dev_tokens = sum(lengths[len(train):])
    epochs = max(1, int(-(-recipe.epochs // 1)))  # evaluations: one an epoch

    def work(tokens: float) -> float:
        return recipe.epochs * tokens + EVAL_TOKEN_SHARE * (tokens * recipe.warm_start + dev_tokens * epochs)

    limit = rung.params.get("limit")
    order = nested_order(train, seed=spec.seed)[:limit] if limit else nested_order(train, seed=spec.seed)
    by_id = {e.id: n for e, n in zip(train, lengths)}
    prefix = [0.0]
    for e in order:
        prefix.append(prefix[-1] + by_id[e.id])
    minimum = minimum_examples(len({e.target for e in train}))
    sizes, n = {len(order)}, float(len(order))
    while n * 0.9 >= minimum:
        n *= 0.9
        sizes.add(int(n))
    fit = tuple((k, work(prefix[k])) for k in sorted(sizes, reverse=True) if k >= minimum)
    return TrainingWork(tokens=work(prefix[-1]), example_epochs=len(order) * recipe.epochs, evaluations=1,
                        examples=len(order), fit_sizes=fit, basis=basis)


def _token_lengths(encoder: str, texts: Sequence[str], max_length: int) -> tuple[list[int], str]:
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(encoder_dir(encoder), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - a plan only: the rung fails with its reason when it runs
        return [min(max_length, len(t) // 4 + 2) for t in texts], f"approximated at 4 characters a token ({exc})"
    ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    return [len(x) for x in ids], f"counted with the encoder's tokenizer, capped at {max_length}"
