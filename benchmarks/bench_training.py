"""LoRA fine-tuning on BANKING77: tunewise's trainer vs TRL's ``SFTTrainer`` with its defaults.

Both train SmolLM2-135M-Instruct (the same float32 weights) on the same examples (``--per-label``
per intent from the training split, 231 at the default 3), rendered as the same chat prompt
(tunewise's compact tuned prompt: the task instructions as the system turn, the query as the
user turn, the label as the assistant reply), with the same LoRA config (r=16, alpha=32,
dropout 0.05, all linear layers), learning rate 1e-3, batch 16, linear schedule with 10% warm-up,
seed 0 and ``--max-steps`` optimiser steps. Rounds alternate the two (a fresh run each time).

* ``tunewise`` - ``tunewise.training.trainer.train`` with a ``TrainingJob`` built as
  ``strategies/finetuning.py`` builds it (its defaults: pre-tokenised prompt/completion pairs,
  padding-free batches, answer-only LM head, no gradient checkpointing, checkpoints for resuming),
  without a dev split (no evaluation during training, like TRL's default ``eval_strategy="no"``).
* ``trl`` - ``SFTTrainer`` + ``SFTConfig`` defaults on a conversational prompt/completion dataset
  (completion-only loss, padding to the longest in the batch, gradient checkpointing, loss through
  the full-vocabulary LM head), with only ``use_cpu=True, bf16=False`` added: TRL 1.16 defaults to
  bf16, which raises on CPU, and bf16 autocast on a CPU without AVX512-BF16/AMX runs ~20x slower.

Speed is the real (non-padding) tokens of the examples trained on per second of
``trainer.train()``; the ratio is also given in examples/s (the same examples: same count, same
sampler seed). After training, both adapters are scored on the same dev examples (one per label by
default) with tunewise's label scoring over all 77 labels, merged into the base weights.
``--variants`` adds tunewise with one default switched off, and TRL with tunewise's speed settings.
Results: ``benchmarks/results/training.json``.

Run:  python benchmarks/bench_training.py            (~10-15 min on 2 cores)
      python benchmarks/bench_training.py --quick    (~5 min; also scores half the dev examples)
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

VARIANTS = {
    "tw-full-head": "tunewise with answer_only_head=False (TRL's loss through the full LM head)",
    "tw-padded": "tunewise with padding_free=False (padded batches)",
    "tw-grad-ckpt": "tunewise with gradient_checkpointing=True",
    "trl-tuned": "TRL with padding_free=True, max_length=None and gradient checkpointing off",
}
LORA = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = C.parser(__doc__, VARIANTS, rounds=2, out="training", quick={"max_steps": 8, "rounds": 1})
    p.add_argument("--per-label", type=int, default=3, help="training examples per intent (default 3: 231)")
    p.add_argument("--max-steps", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--dev-per-label", type=int, default=1, help="dev examples per intent scored after training")
    p.add_argument("--dev-n", type=int, default=None, help="cap on the dev examples scored (default: all drawn)")
    p.add_argument("--variant-dev", action="store_true", help="also score the variants' adapters on dev")
    p.add_argument("--keep", action="store_true", help="keep the trained adapters (printed path)")
    return C.parse(p, argv, VARIANTS)


# --- the two trainers ---------------------------------------------------------------------------


def tunewise_run(pairs: list[tuple[Any, str]], labels: list[str], out: Path, args: Any, **overrides: Any) -> dict:
    from tunewise.training.settings import TuneSettings
    from tunewise.training.trainer import TrainingJob, train

    settings = TuneSettings(method="lora", **LORA, learning_rate=args.lr, batch_size=args.batch_size,
                            max_steps=args.max_steps, warmup=0.1, **overrides)
    job = TrainingJob(base_model=C.MODEL, settings=settings, train=pairs, dev=(), out_dir=out, seed=args.seed,
                      labels=labels, provenance={"benchmark": "bench_training.py"})
    artifact, wall, cpu = C.timed(lambda: train(job))
    t = artifact.training
    return {"adapter": str(artifact.path), "wall_s": round(wall, 2), "train_s": t["train_s"], "steps": t["steps"],
            "cpu_s": round(cpu, 1), "final_train_loss": t["final_train_loss"],
            "settings": {k: v for k, v in settings.identity().items() if v is not None}}


def trl_run(pairs: list[tuple[Any, str]], out: Path, args: Any, *, tuned: bool = False) -> dict:
    def run() -> dict:
        from datasets import Dataset
        from peft import LoraConfig
        from trl import SFTConfig, SFTTrainer

        model, tok = C.load_hf()
        data = Dataset.from_list([{"prompt": C.chat(prompt), "completion": [{"role": "assistant", "content": answer}]}
                                  for prompt, answer in pairs])
        extra = dict(padding_free=True, max_length=None, gradient_checkpointing=False,
                     activation_checkpointing=False) if tuned else {}
        config = SFTConfig(output_dir=str(out / "trl"), per_device_train_batch_size=args.batch_size,
                           learning_rate=args.lr, max_steps=args.max_steps, warmup_steps=0.1, seed=args.seed,
                           data_seed=args.seed, use_cpu=True, bf16=False, report_to="none", disable_tqdm=True,
                           **extra)
        lora = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                          target_modules=LORA["target_modules"], task_type="CAUSAL_LM")
        trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tok, peft_config=lora)
        tokens = [len(r) for r in trainer.train_dataset["input_ids"]]
        result, train_s, _ = C.timed(trainer.train)
        adapter = out / "adapter"
        trainer.model.save_pretrained(adapter)
        return {"adapter": str(adapter), "train_s": round(train_s, 2), "steps": trainer.state.global_step,
                "final_train_loss": result.training_loss, "tokens_per_example_own": sum(tokens) / len(tokens),
                "settings": {k: str(getattr(config, k)) for k in (
                    "per_device_train_batch_size", "learning_rate", "max_steps", "warmup_steps", "lr_scheduler_type",
                    "optim", "gradient_checkpointing", "padding_free", "max_length", "completion_only_loss",
                    "packing", "bf16", "use_cpu", "seed")}}

    info, wall, cpu = C.timed(run)
    return {**info, "wall_s": round(wall, 2), "cpu_s": round(cpu, 1)}


# --- evaluation of the adapters -----------------------------------------------------------------


def dev_accuracy(adapter: str, program: Any, dev: list[Any]) -> dict[str, Any]:
    from tunewise.backends.local import LocalBackend

    backend = LocalBackend(C.MODEL, adapter=adapter)
    preds, wall, _ = C.timed(lambda: program.predict(dev, backend=backend))
    backend.close()
    return {"accuracy": C.accuracy([x.target for x in dev], [p.output for p in preds]), "n": len(dev),
            "scoring_s": round(wall, 1), "correct": [p.output == x.target for p, x in zip(preds, dev)]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    env, spec, splits, labels = C.start(args)
    from tunewise.prompts import answer_text
    from tunewise.strategies.finetuning import tuned_program
    from tunewise.training.subsets import training_subset
    from tunewise.training.trainer import encode_pair

    program = tuned_program(spec, labels, "lora")
    subset = training_subset(splits.train, per_label=args.per_label, seed=args.seed)
    pairs = [(program.prompt_for(e.text, ()), answer_text(e.target)) for e in subset]
    dev = C.per_label(splits.dev, args.dev_per_label, seed=args.seed)
    if args.quick or args.dev_n:
        dev = dev[: args.dev_n or len(dev) // 2]
    print(f"training benchmark: {len(pairs)} BANKING77 examples ({args.per_label}/label), {args.max_steps} steps x "
          f"batch {args.batch_size}, LoRA r=16 all-linear, {args.rounds} rounds, {env['threads']} threads, "
          f"CPU {env['cpu']['model']}", flush=True)

    from transformers import AutoTokenizer

    from tunewise.backends.local import end_of_turn_id

    tok = AutoTokenizer.from_pretrained(C.model_dir())
    eot = end_of_turn_id(tok)
    tokens_per_example = sum(sum(map(len, encode_pair(tok, eot, p, a, 256))) for p, a in pairs) / len(pairs)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up below when killed
    work = Path(tempfile.mkdtemp(prefix="tunewise-bench-training-"))
    runs = iter(range(10**6))

    def fresh() -> Path:
        return work / f"run-{next(runs)}"

    contenders = [
        C.Contender("tunewise", lambda r: [tunewise_run(pairs, labels, fresh(), args)]),
        C.Contender("trl", lambda r: [trl_run(pairs, fresh(), args)]),
    ]
    switches = {"tw-full-head": {"answer_only_head": False}, "tw-padded": {"padding_free": False},
                "tw-grad-ckpt": {"gradient_checkpointing": True}}
    for name in args.variants:
        if name == "trl-tuned":
            contenders.append(C.Contender(name, lambda r: [trl_run(pairs, fresh(), args, tuned=True)]))
        else:
            contenders.append(C.Contender(name, lambda r, o=switches[name]: [tunewise_run(pairs, labels, fresh(),
                                                                                         args, **o)]))
    try:
        C.alternate(contenders, list(range(args.rounds)), args.rounds, checkpoint=args.out)
        out = report(args, env, contenders, program, dev, tokens_per_example, len(pairs))
    finally:
        if args.keep:
            print(f"adapters kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return out


def _speed(c: C.Contender, tokens_per_example: float, batch: int) -> dict[str, Any]:
    steps = sum(o["steps"] for o in c.outputs)
    train_s = sum(o["train_s"] for o in c.outputs)
    examples = steps * batch
    return {"runs": len(c.outputs), "steps": steps, "train_s": round(train_s, 2),
            "wall_s": round(sum(o["wall_s"] for o in c.outputs), 2),
            "examples_per_s": round(examples / train_s, 3), "tokens_per_s": round(examples * tokens_per_example / train_s, 1),
            "s_per_step": round(train_s / steps, 2), "per_run": c.outputs}


def _paired(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any] | None:
    """McNemar and a paired bootstrap interval on the same dev examples ("at equal dev accuracy" is a test)."""
    from tunewise.evaluation.stats import compare_paired

    if not a.get("correct") or not b.get("correct"):
        return None
    r = compare_paired(a["correct"], b["correct"])
    return {k: r[k] for k in ("diff", "low", "high", "p_value", "verdict", "explanation")}


def report(args, env, contenders, program, dev, tokens_per_example, n_train) -> dict[str, Any]:
    shape = C.Shape.of()
    by = {c.name: c for c in contenders}
    speeds = {c.name: _speed(c, tokens_per_example, args.batch_size) for c in contenders}
    print("\nscoring the first round's adapters on the same dev examples ...", flush=True)
    for name, s in speeds.items():
        s["convention_flops_per_s"] = 6 * shape.params * s["tokens_per_s"]
        if name not in ("tunewise", "trl") and not args.variant_dev:
            s["dev"] = {"accuracy": None, "n": 0}
            continue
        s["dev"] = dev_accuracy(by[name].outputs[0]["adapter"], program, dev)
        print(f"  {name:<14} dev accuracy {s['dev']['accuracy']} on {s['dev']['n']} examples", flush=True)
    tw, trl = speeds["tunewise"], speeds["trl"]

    def per_round(a: str, b: str) -> list[float]:
        return [round((x["steps"] / x["train_s"]) / (y["steps"] / y["train_s"]), 2)
                for x, y in zip(by[a].outputs, by[b].outputs)]

    out: dict[str, Any] = {
        "benchmark": "training",
        "what": "BANKING77 LoRA (r=16, all-linear) on SmolLM2-135M-Instruct fp32: tunewise trainer vs TRL "
                "SFTTrainer defaults (use_cpu, bf16 off), same examples, steps, lr, batch, LoRA, seed",
        "environment": env,
        "settings": {"train_examples": n_train, "per_label": args.per_label, "max_steps": args.max_steps,
                     "batch_size": args.batch_size, "learning_rate": args.lr, "warmup": 0.1, "lora": LORA,
                     "rounds": args.rounds, "dev_examples": len(dev), "seed": args.seed, "threads": env["threads"],
                     "variants": args.variants, "model": C.MODEL,
                     "tokens_per_example": round(tokens_per_example, 2),
                     "tokens_basis": "real prompt+completion tokens of each example as tunewise encodes it "
                                     "(TRL's own encoding, with a trailing newline, is in its per_run records); "
                                     "tokens/s = steps x batch x tokens per example / trainer.train() seconds"},
        "model": {"params": shape.params},
        "contenders": {name: s for name, s in speeds.items() if name in ("tunewise", "trl")},
        "ratios": {"tunewise_vs_trl": {
            "tokens_per_s": round(tw["tokens_per_s"] / trl["tokens_per_s"], 2),
            "per_round": per_round("tunewise", "trl"),
            "wall": round(trl["wall_s"] / tw["wall_s"], 2),
            "dev_accuracy_difference": round((tw["dev"]["accuracy"] or 0) - (trl["dev"]["accuracy"] or 0), 4),
            "dev_paired_test": _paired(tw["dev"], trl["dev"])}},
        "targets": {"tokens_per_s_vs_trl": 1.5},
        "variants": {name: {**s, "what": VARIANTS[name], "speed_vs_tunewise": round(s["tokens_per_s"] / tw["tokens_per_s"], 2)}
                     for name, s in speeds.items() if name not in ("tunewise", "trl")},
    }
    for name in ("tunewise", "trl"):
        out["contenders"][name]["rounds"] = by[name].rounds
    path = C.write_result(args.out, out)
    rows = [[name, s["steps"], s["s_per_step"], s["tokens_per_s"], s["wall_s"], s["dev"]["accuracy"]]
            for name, s in speeds.items()]
    print()
    print(C.table(rows, ["contender", "steps", "s/step", "tokens/s", "wall s", "dev accuracy"]))
    r = out["ratios"]["tunewise_vs_trl"]
    print(f"\ntunewise vs TRL defaults: {r['tokens_per_s']}x tokens/s (rounds {r['per_round']}), "
          f"{r['wall']}x wall time, dev accuracy difference {r['dev_accuracy_difference']:+.3f}\nwritten {path}")
    return out


if __name__ == "__main__":
    main()
