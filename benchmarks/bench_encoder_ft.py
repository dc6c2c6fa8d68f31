"""encoder_ft recipes on BANKING77's full test split (3,080), against the frozen MiniLM probe, on this machine.

Both contenders train on the same split tunewise makes of BANKING77's train (a stratified 10% dev carved out,
seed 0) and are scored on all 3,080 test queries: the probe (mean-pooled, normalised all-MiniLM-L6-v2 embeddings +
logistic regression, C=10) and each encoder_ft recipe (``tunewise.training.encoder``). Reported per recipe: test
accuracy with its Clopper-Pearson interval, the exact McNemar test against the probe, training seconds, epochs,
the dev accuracy per epoch. Results are appended to ``benchmarks/results/encoder_ft.json`` (one row per recipe).

Run on an otherwise idle machine (2 torch processes on 2 cores run ~10x slower each):
    python benchmarks/bench_encoder_ft.py                          # the default recipe
    python benchmarks/bench_encoder_ft.py --recipe '{"body_lr": 3e-5, "epochs": 3}' --name lr3e-5
    python benchmarks/bench_encoder_ft.py --recipe '{"warm_start": false, "pooling": "cls", "body_lr": 1e-4}'
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default="{}", help="EncoderRecipe fields as JSON")
    p.add_argument("--name", default="default")
    p.add_argument("--train-limit", type=int, default=None, help="train on a stratified subset (quick checks)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="encoder_ft")
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from tunewise.data import load_splits
    from tunewise.embeddings import minilm_model_dir
    from tunewise.evaluation.stats import mcnemar_exact, proportion_metric
    from tunewise.task import load_task
    from tunewise.training.encoder import EncoderRecipe, load_encoder_classifier, predict_proba, train_encoder
    from tunewise.training.subsets import training_subset

    torch.set_num_threads(args.threads)
    environment = C.environment()
    spec = load_task(C.TASK)
    spec = spec.model_copy(update={"data": spec.data.model_copy(update={"test_limit": None})})
    splits = load_splits(spec)
    train = list(splits.train)
    if args.train_limit:
        train = list(training_subset(train, limit=args.train_limit, seed=0))
    labels = list(splits.labels)
    test_texts = [e.text for e in splits.test]
    gold = np.array([e.target for e in splits.test])
    base = minilm_model_dir()
    recipe = EncoderRecipe(**json.loads(args.recipe))

    # the probe, on the same train split: the contender encoder_ft must beat
    from sklearn.linear_model import LogisticRegression

    from tunewise.embeddings import MiniLMEmbedder

    emb = MiniLMEmbedder()
    t = time.perf_counter()
    probe = LogisticRegression(C=10.0, max_iter=2000, random_state=0).fit(emb.embed([e.text for e in train]),
                                                                          [e.target for e in train])
    probe_pred = probe.predict(emb.embed(test_texts))
    probe_s = time.perf_counter() - t
    probe_correct = probe_pred == gold

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model"
        t = time.perf_counter()
        training = train_encoder(base, [(e.text, e.target) for e in train], [(e.text, e.target) for e in splits.dev],
                                 labels, out, recipe, threads=args.threads,
                                 progress=lambda d, n: print(f"\r  step {d}/{n}", end="", flush=True))
        total_s = time.perf_counter() - t
        print()
        model, tok, config = load_encoder_classifier(out)
        t = time.perf_counter()
        probs = predict_proba(model, tok, test_texts, config["max_length"])
        predict_s = time.perf_counter() - t
    pred = np.array(labels)[probs.argmax(1)]
    correct = pred == gold
    acc, pacc = proportion_metric(correct.astype(float)), proportion_metric(probe_correct.astype(float))
    test = mcnemar_exact(correct.tolist(), probe_correct.tolist())
    row = {
        "name": args.name, "recipe": recipe.to_json(), "train_examples": len(train), "dev_examples": len(splits.dev),
        "test_examples": len(gold),
        "accuracy": acc.to_json(), "probe_accuracy": pacc.to_json(), "mcnemar_vs_probe": test,
        "train_s": training["train_s"], "total_s": total_s, "warm_start": training.get("warm_start"),
        "epochs_run": training["epochs_run"], "dev_history": training["dev_history"],
        "tokens_per_epoch": training.get("tokens_per_epoch"), "dev_tokens": training.get("dev_tokens"),
        "ms_per_trained_token": 1000 * training["train_s"] / max(1, (training.get("tokens_per_epoch") or 0)
                                                                 * training["epochs_run"]),
        "test_examples_per_s": len(gold) / predict_s, "probe_s": probe_s, "threads": args.threads,
        "environment": environment,
    }
    print(json.dumps({k: row[k] for k in ("name", "accuracy", "probe_accuracy", "mcnemar_vs_probe", "train_s",
                                          "epochs_run", "dev_history")}, indent=1, default=str))
    path = Path(__file__).resolve().parent / "results" / f"{args.out}.json"
    rows = json.loads(path.read_text())["runs"] if path.is_file() else []
    rows = [r for r in rows if r["name"] != args.name] + [row]
    path.write_text(json.dumps({"benchmark": "bench_encoder_ft.py", "runs": rows}, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
