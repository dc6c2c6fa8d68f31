"""Train an adapter (or a full model) with TRL / transformers, resumably, and record what it cost.

``train(job)`` turns a :class:`TrainingJob` into a :class:`TrainedArtifact`:

* **LM head** (``head="lm"``): TRL's ``SFTTrainer`` on prompt/completion pairs, pre-tokenised
  here with the *same* functions the local backend uses at inference (chat template, answer
  tokenised after the prompt, then the end-of-turn token), so the model learns exactly the
  tokens it is later scored on; the loss covers the completion only (``completion_mask``).
* **Classifier head** (``head="classifier"``): ``AutoModelForSequenceClassification`` over the
  same rendered prompt (the last token's hidden state), LoRA on the base with the new ``score``
  layer trained in full, transformers' ``Trainer``: one forward pass per example, real
  probabilities over the labels.
* ``method``: ``lora`` (PEFT), ``qlora`` (4-bit NF4 base via bitsandbytes; CUDA only, the
  caller skips it elsewhere), ``full`` (every weight).

Early stopping on the dev loss keeps the best checkpoint; an optional ``lr_sweep`` trains each
learning rate for ``sweep_steps`` steps and keeps the one with the lowest dev loss (never test).
Checkpoints (model, optimiser, scheduler, RNG) are written every ``save_every`` steps into the
artifact directory; a run killed at any point resumes from the last one, and an artifact whose
``tunewise_provenance.json`` exists is reused without training. The same code runs under
``accelerate launch`` / ``torchrun`` (DDP over gloo on CPUs, NCCL on GPUs): only rank 0 writes.

Out of scope: choosing examples (``subsets.py``), evaluation (the candidate goes through the
ordinary evaluator), curve fitting (``curves.py``).
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..backends.base import Message
from ..backends.devices import torch_device
from ..backends.model_cache import PROVENANCE_FILE
from ..errors import RungSkipped
from .settings import DEFAULT_DEVICE_HOUR_USD, TuneSettings
from .timing import PRIOR_TRAIN_S_PER_TOKEN, TRIAL_STEPS, StepClock, describe_rate, schedule

__all__ = ["TrainingJob", "TrainedArtifact", "TrialOverBudget", "train", "PROVENANCE_FILE", "read_artifact",
           "encode_pair", "training_tokenizer"]

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class TrainingJob:
    """Everything that determines a trained artifact, plus where to put it.

    ``train``/``dev`` are ``(prompt messages, answer text)`` pairs rendered by the evaluator's
    prompt program; ``labels`` is the label inventory (classifier head only).
    """

    base_model: str
    settings: TuneSettings
    train: Sequence[tuple[tuple[Message, ...], str]]
    dev: Sequence[tuple[tuple[Message, ...], str]]
    out_dir: Path
    seed: int = 0
    labels: Sequence[str] = ()
    provenance: dict[str, Any] = field(default_factory=dict)  # task, data hash, subset, prompt format
    # seconds per token a timed trial already measured (a run fitted by it): its estimate, and no trial of its own
    s_per_token: float | None = None


class TrialOverBudget(RungSkipped):
    """The timed trial re-estimated the run past its time allowance; nothing was saved. ``trial``: what it
    measured (``s_per_token``, ``estimate_s``, ``elapsed_s``: the run's seconds up to the stop)."""

    def __init__(self, trial: dict[str, Any], examples: int, budget_s: float) -> None:
        self.trial, self.examples, self.budget_s = trial, examples, budget_s
        super().__init__(f"the timed trial ({trial['timed_steps']} steps after a warm-up step) measured "
                         f"{describe_rate(trial['s_per_token'])}: training on {examples:,} examples would take "
                         f"{trial['estimate_s']:.0f} s, over the {budget_s:.0f} s allowed")


@dataclass(frozen=True)
class TrainedArtifact:
    path: Path  # the PEFT adapter directory, or the full model directory (method "full")
    kind: str  # "adapter" | "model"
    provenance: dict[str, Any]
    reused: bool = False

    @property
    def training(self) -> dict[str, Any]:
        return self.provenance.get("training", {})


TRIAL_FILE = "trial.json"  # the timed trial's measurement, beside the checkpoints (a resumed run keeps it)


def read_artifact(out_dir: Path) -> TrainedArtifact | None:
    """The finished artifact in ``out_dir``, or None (never trained, or interrupted)."""
    for kind, sub in (("adapter", "adapter"), ("model", "model")):
        meta = out_dir / sub / PROVENANCE_FILE
        if meta.is_file():
            return TrainedArtifact(path=out_dir / sub, kind=kind, provenance=json.loads(meta.read_text()),
                                   reused=True)
    return None


# --- tokenisation: the evaluator's exact prompt format --------------------------------------


@functools.lru_cache(maxsize=4)
def training_tokenizer(base_model: str) -> tuple[Any, int | None]:
    """The base model's tokenizer (pad set) and end-of-turn id, loaded once per model."""
    from transformers import AutoTokenizer

    from ..backends.local import end_of_turn_id
    from ..backends.model_cache import local_model_path, resolve_model

    tokenizer = AutoTokenizer.from_pretrained(local_model_path(resolve_model(base_model)))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, end_of_turn_id(tokenizer)


def encode_pair(tokenizer: Any, eot: int | None, prompt: Sequence[Message], answer: str,
                max_length: int) -> tuple[list[int], list[int]]:
    """``(prompt ids, completion ids)``: what the local backend feeds and scores, truncated on the left."""
    from ..backends.local import continuation_ids, encode, render_messages

    text = render_messages(tokenizer, prompt)
    prompt_ids = encode(tokenizer, text)
    completion = continuation_ids(tokenizer, text, prompt_ids, answer) + ([eot] if eot is not None else [])
    keep = max(1, max_length - len(completion))
    return prompt_ids[-keep:], completion[:max_length]


def _lm_rows(tokenizer: Any, eot: int | None, pairs: Sequence[tuple[Any, str]], max_length: int) -> list[dict]:
    rows = []
    for prompt, answer in pairs:
        p, c = encode_pair(tokenizer, eot, prompt, answer, max_length)
        rows.append({"input_ids": p + c, "completion_mask": [0] * len(p) + [1] * len(c)})
    return rows


def _classifier_rows(tokenizer: Any, pairs: Sequence[tuple[Any, str]], labels: Sequence[str],
                     max_length: int) -> list[dict]:
    from ..backends.local import encode, render_messages

    index = {label: i for i, label in enumerate(labels)}
    return [{"input_ids": encode(tokenizer, render_messages(tokenizer, prompt))[-max_length:], "labels": index[answer]}
            for prompt, answer in pairs]


# --- the training run -------------------------------------------------------------------------


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _distributed_backend() -> str | None:
    """The process group's backend (``gloo``, ``nccl``) when training runs multi-process, else None."""
    import torch.distributed as dist

    return str(dist.get_backend()) if dist.is_available() and dist.is_initialized() else None


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for pkg in ("tunewise", "torch", "transformers", "peft", "trl", "accelerate", "datasets", "bitsandbytes"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def _load_model(path: Path, job: TrainingJob, device: str) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    s = job.settings
    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if device == "cuda":
        kwargs["dtype"] = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if s.method == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=kwargs["dtype"])
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", torch.cuda.current_device()))}
    if s.head == "classifier":
        labels = list(job.labels)
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)}, **kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if s.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=s.gradient_checkpointing)
    return model


def _peft_config(s: TuneSettings) -> Any:
    if s.method == "full":
        return None
    from peft import LoraConfig

    return LoraConfig(r=s.r, lora_alpha=s.alpha, lora_dropout=s.dropout, target_modules=s.target_modules,
                      task_type="SEQ_CLS" if s.head == "classifier" else "CAUSAL_LM")


@dataclass
class _Plan:
    steps_per_epoch: int
    epochs: float
    total_steps: int
    eval_steps: int
    save_steps: int


def _plan(s: TuneSettings, n_train: int, max_steps: int | None = None) -> _Plan:
    per_step = s.batch_size * s.grad_accum * _world_size()
    steps_per_epoch = max(1, math.ceil(n_train / per_step))
    epochs = s.epochs_for(n_train)
    total = max_steps or s.max_steps or max(1, math.ceil(steps_per_epoch * epochs))
    eval_steps = max(1, steps_per_epoch // s.evals_per_epoch)
    save_steps = s.save_every or eval_steps
    if s.early_stopping_patience:  # keeping the best checkpoint needs saves on evaluation steps
        save_steps = eval_steps * max(1, round(save_steps / eval_steps))
    return _Plan(steps_per_epoch, epochs, total, eval_steps, save_steps)


class _Callbacks:
    """Progress, the timed trial and the time limit (``timing.StepClock``), as a transformers ``TrainerCallback``.

    A trial over the allowance stops at once without saving (the caller shrinks the run); an overrun stops at
    the end of the step and saves, and the best checkpoint so far is loaded at the end as usual.
    """

    def __new__(cls, progress: Progress | None, clock: StepClock | None) -> Any:
        from transformers import TrainerCallback

        class _CB(TrainerCallback):
            def __init__(self) -> None:
                self.ended: str | None = None  # "trial" | "overrun"

            def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001
                if clock is not None:
                    clock.begin_step()
                return control

            def on_evaluate(self, args, state, control, **kwargs):  # noqa: ANN001
                if clock is not None:
                    clock.evaluated()
                return control

            def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
                if progress is not None:
                    progress(state.global_step, state.max_steps)
                why = clock.end_step(state.global_step, state.max_steps) if clock is not None else None
                if why is not None:
                    self.ended = why
                    control.should_training_stop = True
                    control.should_save = why == "overrun"
                    control.should_evaluate = control.should_evaluate and why == "overrun"
                return control

        return _CB()


def _args(job: TrainingJob, plan: _Plan, out: Path, device: str, *, lr: float, sweep: bool) -> dict[str, Any]:
    s = job.settings
    evaluate = bool(job.dev)
    args: dict[str, Any] = dict(
        output_dir=str(out), per_device_train_batch_size=s.batch_size, per_device_eval_batch_size=s.batch_size * 2,
        gradient_accumulation_steps=s.grad_accum, learning_rate=lr, max_steps=plan.total_steps,
        warmup_steps=s.warmup, weight_decay=s.weight_decay, lr_scheduler_type=s.scheduler,
        # a divisor of the checkpoint interval: the logged losses a resume restores end at its checkpoint
        logging_steps=math.gcd(max(1, min(plan.eval_steps, 10)), plan.save_steps),
        seed=job.seed, data_seed=job.seed, report_to="none",
        disable_tqdm=True, use_cpu=device == "cpu", bf16=device == "cuda" and _bf16_ok(),
        **_checkpointing_arg(s.gradient_checkpointing), dataloader_num_workers=0, save_total_limit=2,
        remove_unused_columns=False,
        # every trainable parameter (adapter, or the whole model) takes part in each step: DDP need not
        # search the graph for unused ones (transformers' default does, and warns on every run)
        ddp_find_unused_parameters=False,
    )
    if sweep:
        args.update(save_strategy="no", eval_strategy="no")
    else:
        # restore_callback_states: a resumed run keeps early stopping's patience count, so it stops where
        # a run never interrupted stops (transformers restarts the count at zero by default)
        args.update(save_strategy="steps", save_steps=plan.save_steps,
                    eval_strategy="steps" if evaluate else "no", eval_steps=plan.eval_steps,
                    restore_callback_states_from_checkpoint=True)
        if evaluate and s.early_stopping_patience:
            args.update(load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False)
    return args


def _checkpointing_arg(on: bool) -> dict[str, bool]:
    """transformers 5 renamed gradient_checkpointing to activation_checkpointing (old name deprecated)."""
    import inspect

    from transformers import TrainingArguments

    params = inspect.signature(TrainingArguments.__init__).parameters
    if "activation_checkpointing" not in params:
        return {"gradient_checkpointing": on}
    # TRL's SFTConfig still defaults the old name to True, which wins unless it is set as well
    return {"activation_checkpointing": on, "gradient_checkpointing": on}


def _bf16_ok() -> bool:
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def _build_trainer(job: TrainingJob, model_path: Path, tokenizer: Any, rows: dict[str, list[dict]], plan: _Plan,
                   out: Path, device: str, *, lr: float, sweep: bool, callbacks: list[Any]) -> Any:
    from datasets import Dataset, disable_progress_bars

    disable_progress_bars()  # the CLI draws its own bars from the progress callback
    s = job.settings
    model = _load_model(model_path, job, device)
    train_ds = Dataset.from_list(rows["train"])
    dev_ds = Dataset.from_list(rows["dev"]) if rows["dev"] else None
    args = _args(job, plan, out, device, lr=lr, sweep=sweep)
    if s.early_stopping_patience and dev_ds is not None and not sweep:
        from transformers import EarlyStoppingCallback

        callbacks = [*callbacks, EarlyStoppingCallback(early_stopping_patience=s.early_stopping_patience)]
    if s.head == "lm":
        from trl import SFTConfig

        config = SFTConfig(**args, completion_only_loss=True, max_length=None, padding_free=s.use_padding_free(),
                           dataset_kwargs={"skip_prepare_dataset": False})
        trainer_cls = _sft_trainer_class(s.answer_only_head and _world_size() == 1)
        return _quiet(trainer_cls(model=model, args=config, train_dataset=train_ds, eval_dataset=dev_ds,
                                 processing_class=tokenizer, peft_config=_peft_config(s), callbacks=callbacks))
    from peft import get_peft_model
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    model.config.pad_token_id = tokenizer.pad_token_id
    model = get_peft_model(model, _peft_config(s))
    return _quiet(Trainer(model=model, args=TrainingArguments(**args), train_dataset=train_ds, eval_dataset=dev_ds,
                          data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
                          callbacks=callbacks))


def _sft_trainer_class(answer_only_head: bool) -> Any:
    """TRL's ``SFTTrainer``, or a subclass whose loss applies the LM head to the answer tokens only.

    TRL 1.16 computes the log-probabilities, entropy and top-1 hits of *every* position through its
    chunked LM head unless it runs on a Triton device; with a 49k vocabulary and answers of a few
    tokens after a ~40-token prompt, that is most of a CPU step. The subclass runs the backbone,
    keeps the hidden states whose next token is labelled, and applies the head there only: the
    same loss (mean cross-entropy over completion tokens) for less compute. Data preparation,
    collation, padding-free batches, checkpoints and evaluation stay TRL's. Multi-process runs use
    the stock loss, because DDP synchronises gradients only through its own forward.
    """
    from trl import SFTTrainer

    if not answer_only_head:
        return SFTTrainer

    class AnswerOnlySFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001
            import torch.nn.functional as F

            net = model.get_base_model() if hasattr(model, "get_base_model") else model
            labels = inputs["labels"]
            feed = {k: inputs[k] for k in ("input_ids", "attention_mask", "position_ids") if k in inputs}
            hidden = net.base_model(**feed, use_cache=False).last_hidden_state[:, :-1]
            targets = labels[:, 1:]
            mask = targets != -100
            logits = net.get_output_embeddings()(hidden[mask]).float()
            loss = F.cross_entropy(logits, targets[mask]) if mask.any() else hidden.sum() * 0.0
            return (loss, {"loss": loss}) if return_outputs else loss

        def __init__(self, *args, **kwargs):  # noqa: ANN002, ANN003
            super().__init__(*args, **kwargs)
            self.model_accepts_loss_kwargs = False  # the loss is a per-batch mean: Trainer divides by accumulation

    return AnswerOnlySFTTrainer


def _quiet(trainer: Any) -> Any:
    """The library never prints: drop the callback that prints log dicts (the history is kept)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    return trainer


def _sweep(job: TrainingJob, model_path: Path, tokenizer: Any, rows: dict[str, list[dict]], device: str,
           progress: Progress | None) -> tuple[float, list[dict[str, Any]]]:
    """Train each candidate learning rate for ``sweep_steps`` steps; the lowest dev loss wins."""
    s = job.settings
    table = []
    for lr in s.lr_sweep or []:
        out = job.out_dir / "sweep" / f"lr-{lr:g}"
        plan = _plan(s, len(rows["train"]), max_steps=s.sweep_steps)
        trainer = _build_trainer(job, model_path, tokenizer, rows, plan, out, device, lr=lr, sweep=True,
                                 callbacks=[])
        trainer.train()
        dev_loss = trainer.evaluate()["eval_loss"] if rows["dev"] else trainer.state.log_history[-1].get("train_loss")
        table.append({"learning_rate": lr, "steps": s.sweep_steps, "dev_loss": float(dev_loss)})
        shutil.rmtree(out, ignore_errors=True)
    best = min(table, key=lambda r: r["dev_loss"])["learning_rate"]
    return best, table


def train(job: TrainingJob, *, progress: Progress | None = None) -> TrainedArtifact:
    """Train (or resume, or reuse) the artifact described by ``job``; see the module docstring."""
    from transformers import AutoTokenizer

    from ..backends.local import end_of_turn_id
    from ..backends.model_cache import local_model_path, resolve_model

    found = read_artifact(job.out_dir)
    if found is not None:
        return found
    start = time.perf_counter()  # a time allowance covers everything from here, tokenisation included
    s = job.settings
    device = torch_device()
    resolved = resolve_model(job.base_model)
    model_path = local_model_path(resolved)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if s.head == "classifier":
        rows = {"train": _classifier_rows(tokenizer, job.train, job.labels, s.max_length),
                "dev": _classifier_rows(tokenizer, job.dev, job.labels, s.max_length)}
    else:
        eot = end_of_turn_id(tokenizer)
        rows = {"train": _lm_rows(tokenizer, eot, job.train, s.max_length),
                "dev": _lm_rows(tokenizer, eot, job.dev, s.max_length)}
    job.out_dir.mkdir(parents=True, exist_ok=True)
    plan = _plan(s, len(rows["train"]))
    checkpoints = job.out_dir / "checkpoints"
    last = _last_complete_checkpoint(checkpoints)
    clock = _clock(job, rows, plan, device, start, resumed=last is not None)
    if clock.budget_s is not None and clock.trial is not None and clock.estimate_s > clock.budget_s:
        raise TrialOverBudget(clock.trial, len(rows["train"]), clock.budget_s)  # measured by an earlier run
    lr, sweep = s.lr, []
    if s.lr_sweep:
        lr, sweep = _sweep(job, model_path, tokenizer, rows, device, progress)
    timer = _Callbacks(progress, clock)
    trainer = _build_trainer(job, model_path, tokenizer, rows, plan, checkpoints, device, lr=lr, sweep=False,
                             callbacks=[timer])
    train_start = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=last)
    train_s = time.perf_counter() - train_start
    if timer.ended == "trial":
        shutil.rmtree(checkpoints, ignore_errors=True)
        raise TrialOverBudget(clock.trial or {}, len(rows["train"]), clock.budget_s or 0.0)
    state = trainer.state
    kind = "model" if s.method == "full" else "adapter"
    target = job.out_dir / kind
    if not trainer.is_world_process_zero():
        return TrainedArtifact(path=target, kind=kind, provenance={})
    tokens_per_epoch = sum(len(r["input_ids"]) for r in rows["train"])
    epochs_done = float(state.epoch or 0.0)
    resumed_step = int(Path(last).name.split("-")[-1]) if last else 0
    tokens = tokens_per_epoch * epochs_done
    new_tokens = tokens * (1 - resumed_step / max(1, state.global_step)) if state.global_step else 0.0
    price = s.device_hour_usd if s.device_hour_usd is not None else DEFAULT_DEVICE_HOUR_USD[device]
    wall_s = time.perf_counter() - start
    device_hours = wall_s / 3600 * _world_size()
    history = _history(state.log_history)
    training = {
        "device": device, "world_size": _world_size(), "distributed_backend": _distributed_backend(),
        "method": s.method, "head": s.head,
        "examples": len(rows["train"]), "dev_examples": len(rows["dev"]), "learning_rate": lr, "lr_sweep": sweep,
        "planned_steps": plan.total_steps, "steps": state.global_step, "epochs": round(epochs_done, 3),
        "steps_per_epoch": plan.steps_per_epoch, "batch_size": s.batch_size * s.grad_accum * _world_size(),
        "resumed_from": Path(last).name if last else None,
        "stopped": "time budget" if timer.ended == "overrun" else (
            "early stopping" if state.global_step < plan.total_steps else "completed"),
        "stopped_for_budget": clock.stopped,
        "work_tokens": round(clock.work_tokens), "estimate": _estimate_record(clock, job, device),
        "best_checkpoint_step": _step_of(state.best_model_checkpoint),
        "best_dev_loss": state.best_metric,
        "final_train_loss": _mean_train_loss(output.training_loss, state.log_history, resumed_step,
                                             state.global_step),
        "tokens": int(tokens), "tokens_basis": "real (non-padding) prompt+completion tokens x epochs trained; "
        "tokens/s counts this process's tokens over its training wall time, dev evaluations and checkpoints included",
        "tokens_per_s": new_tokens / train_s if train_s > 0 else None,
        "wall_s": round(wall_s, 2), "train_s": round(train_s, 2), "device_hours": device_hours,
        "device_hour_usd": price,
        "price_source": "rung setting device_hour_usd" if s.device_hour_usd is not None else
        f"default price for a {device} device-hour",
        "cost_usd": device_hours * price,
        "history": history, "warnings": _warnings(history, len(rows["train"]),
                                                  _answers(job.train) if job.labels else []),
    }
    provenance = {**job.provenance, "base_model": job.base_model, "base_fingerprint": resolved.fingerprint,
                  "settings": s.identity(), "seed": job.seed, "versions": _versions(), "training": training,
                  "format": "PEFT adapter (load with peft.PeftModel.from_pretrained on the base model)"
                  if kind == "adapter" else "transformers model directory"}
    _save(trainer, tokenizer, target, provenance, kind)
    shutil.rmtree(checkpoints, ignore_errors=True)  # optimiser states are only needed to resume
    return TrainedArtifact(path=target, kind=kind, provenance=provenance)


def _clock(job: TrainingJob, rows: dict[str, list[dict]], plan: _Plan, device: str, start: float, *,
           resumed: bool) -> StepClock:
    """The run's :class:`~tunewise.training.timing.StepClock`: its work, the prior estimate, the allowance, and the
    trial (timed now on a fresh single-process run, else the one an earlier run stored in ``trial.json``)."""
    s = job.settings
    train_tokens = sum(len(r["input_ids"]) for r in rows["train"])
    dev_tokens = sum(len(r["input_ids"]) for r in rows["dev"])
    trained, evaluations = schedule(train_tokens, len(rows["train"]), s, world_size=_world_size())
    path = job.out_dir / TRIAL_FILE
    stored = json.loads(path.read_text()) if _json_file(path) else None
    fresh = (job.s_per_token is None and stored is None and not resumed and _world_size() == 1
             and plan.total_steps > TRIAL_STEPS)
    clock = StepClock(trained_tokens=trained, dev_tokens=dev_tokens if rows["dev"] else 0.0, evaluations=evaluations,
                      tokens_per_step=train_tokens / plan.steps_per_epoch,
                      s_per_token=job.s_per_token or PRIOR_TRAIN_S_PER_TOKEN.get(device, PRIOR_TRAIN_S_PER_TOKEN["cpu"]),
                      budget_s=s.time_budget_minutes * 60 if s.time_budget_minutes else None,
                      trial_steps=TRIAL_STEPS if fresh else 0, start=start,
                      on_trial=lambda trial: path.write_text(json.dumps(trial)))
    if stored is not None:  # measured before this run was interrupted (or by a run with another allowance)
        clock.trial, clock.s_per_token = stored, float(stored["s_per_token"])
        clock.eval_s_per_token = stored.get("eval_s_per_token")
        clock.committed_s = clock.estimate_s
    return clock


def _estimate_record(clock: StepClock, job: TrainingJob, device: str) -> dict[str, Any]:
    """The run's time estimates: the prior, the timed trial's (or the rate a trial measured before it), and the
    limit it trained under."""
    prior = PRIOR_TRAIN_S_PER_TOKEN.get(device, PRIOR_TRAIN_S_PER_TOKEN["cpu"])
    return {"work_tokens": round(clock.work_tokens), "prior_s_per_token": prior,
            "prior_s": round(prior * clock.work_tokens, 1), "trial": clock.trial,
            "fitted_at_s_per_token": job.s_per_token,
            "committed_s": round(clock.committed_s or clock.estimate_s, 1),
            "s_per_token": clock.s_per_token, "eval_s_per_token": clock.eval_s_per_token,
            "budget_s": clock.budget_s, "limit_s": clock.limit_s,
            "basis": "work = real prompt+answer tokens x epochs (+ the lr sweep) + the dev evaluations' tokens at "
                     "their measured rate (else a share of the training rate); the trial times optimiser steps "
                     f"2-{TRIAL_STEPS} on real batches of the run itself"}


def _save(trainer: Any, tokenizer: Any, target: Path, provenance: dict[str, Any], kind: str) -> None:
    """Write into a temporary sibling and rename: a kill never leaves a half-saved artifact."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model = trainer.model
    if kind == "model" and hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(tmp)
    if kind == "model":
        tokenizer.save_pretrained(tmp)
    (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, default=str))
    shutil.rmtree(target, ignore_errors=True)
    tmp.replace(target)


def _last_complete_checkpoint(directory: Path) -> str | None:
    """The newest checkpoint that was completely written; half-written ones (a kill mid-save) are removed.

    The Trainer writes ``trainer_state.json`` after the weights, optimiser, scheduler and RNG
    states, so its presence marks a checkpoint that can be resumed from, once it parses (a kill
    while it is written leaves part of it).
    """
    if not directory.is_dir():
        return None
    found = sorted((p for p in directory.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                   key=lambda p: int(p.name.split("-")[-1]))
    complete = [p for p in found if _json_file(p / "trainer_state.json") and (p / "optimizer.pt").is_file()]
    for p in found:
        if p not in complete:
            shutil.rmtree(p, ignore_errors=True)
    return str(complete[-1]) if complete else None


def _json_file(path: Path) -> bool:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def _mean_train_loss(loss: float | None, log_history: list[dict[str, Any]], resumed_step: int,
                     steps: int) -> float | None:
    """The mean training loss over every step, resumed or not.

    transformers' ``training_loss`` averages the steps this process trained; the steps before a resume
    are in the logged losses restored from the checkpoint (each the mean of its window; logging_steps
    divides the checkpoint interval, so the windows end at the resume step).
    """
    if loss is None or not resumed_step:
        return float(loss) if loss is not None else None
    before, last = 0.0, 0
    for h in log_history:
        if "loss" in h and h["step"] <= resumed_step:
            before, last = before + h["loss"] * (h["step"] - last), h["step"]
    if last != resumed_step:
        return None  # the logged windows do not reach the resume step: no honest mean
    return (before + float(loss) * max(0, steps - resumed_step)) / steps


def _step_of(checkpoint: str | None) -> int | None:
    return int(checkpoint.rstrip("/").split("-")[-1]) if checkpoint else None


def _history(log_history: list[dict[str, Any]]) -> dict[str, list[list[float]]]:
    """Train and dev loss by step (the curves the overfitting guard reads)."""
    train = [[h["step"], h["loss"]] for h in log_history if "loss" in h]
    dev = [[h["step"], h["eval_loss"]] for h in log_history if "eval_loss" in h]
    return {"train_loss": train, "dev_loss": dev}


def _answers(pairs: Sequence[tuple[Any, str]]) -> list[str]:
    return [a for _, a in pairs]


def _warnings(history: dict[str, list[list[float]]], n: int, labels: Sequence[str]) -> list[str]:
    """Overfitting and small-data warnings, each one sentence with the numbers behind it."""
    out = []
    dev = history["dev_loss"]
    if len(dev) >= 2:
        best_step, best = min(dev, key=lambda p: p[1])
        last_step, last = dev[-1]
        train = history["train_loss"]
        train_at_best = [loss for step, loss in train if step <= best_step]
        train_after = [loss for step, loss in train if step > best_step]
        if last > best * 1.02 and train_at_best and train_after and min(train_after) < train_at_best[-1]:
            out.append(f"Dev loss rose from {best:.3f} (step {best_step}) to {last:.3f} (step {last_step}) while the "
                       f"training loss kept falling: the model overfits; the best checkpoint was kept.")
    if n < 100:
        out.append(f"Only {n} training examples: expect high variance between seeds and a wide forecast.")
    if labels:
        from collections import Counter

        counts = Counter(labels)
        if min(counts.values()) < 5:
            out.append(f"Some labels have fewer than 5 training examples (minimum {min(counts.values())}).")
    return out
