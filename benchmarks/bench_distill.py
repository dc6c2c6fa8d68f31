"""Distillation with few labels: does a prompted teacher's labelling of an unlabelled pool teach a small student more
than the gold labels alone? (issue 15, ``examples/banking77_few_labels``)

Runs ``python -m tunewise run examples/banking77_few_labels/task.yaml --store STORE --quiet`` (its named rungs:
knn, probe, encoder_ft on the gold examples only, the teacher few_shot_retrieved on SmolLM2-135M, distill: the
teacher labels a sample of the pool and the same encoder_ft student learns from those labels together with the
gold ones, and distill_confident: the same labels, only those given with probability >= 0.9), then reads the run's ``results.json`` and ``decision.json`` and records:

* every rung's accuracy with its 95% interval on the same frozen test subset;
* the two comparisons the question needs, paired on the same test examples (McNemar + bootstrap, tunewise's own
  ``compare_rungs``): the distilled student vs the same student on gold only, and vs its teacher;
* what distillation cost: inputs labelled, labels kept, the teacher's model seconds and tokens, the labelling and
  training wall times, the one-off cost the decision priced, and the volume at which the student pays for itself.

The contenders are the run's own rungs, scored in one run on one machine. ``--store DIR`` keeps (and reuses) the
store: a rerun reuses every finished rung, so its numbers (times included) are those of the run that computed them.

Run:  python benchmarks/bench_distill.py --store /tmp/fewl/store     (~1 h on 2 idle cores from an empty store)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

TASK = C.ROOT / "examples" / "banking77_few_labels" / "task.yaml"


def _metric(r: dict[str, Any]) -> dict[str, Any]:
    m = (r.get("metrics") or {}).get("accuracy") or {}
    return {k: m.get(k) for k in ("value", "low", "high", "n")}


def _correct(results: dict[str, Any], name: str, truth: dict[str, str]) -> list[bool]:
    """The rung's correctness on each test example, in the test split's order (pairs line up across rungs)."""
    rung = next(r for r in results["rungs"] if r["name"] == name)
    said = {p["example_id"]: p["output"] for p in rung["predictions"]}
    return [said.get(i) == target for i, target in truth.items()]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", type=Path, required=True, help="the run's store (kept; a rerun reuses its rungs)")
    p.add_argument("--out", default="distill", help="results file name (benchmarks/results/<out>.json)")
    args = p.parse_args(argv)
    from tunewise.data import load_splits
    from tunewise.evaluation.scoring import compare_rungs
    from tunewise.task import load_task

    cmd = [sys.executable, "-m", "tunewise", "run", str(TASK), "--store", str(args.store), "--quiet"]
    load_before = list(os.getloadavg())
    start = time.perf_counter()
    proc = subprocess.run(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)
    wall = time.perf_counter() - start
    print(proc.stdout, flush=True)
    if proc.returncode not in (0, 1):
        print(proc.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"tunewise run exited {proc.returncode}")
    run_dir = max(args.store.glob("runs/*/results.json"), key=lambda q: q.stat().st_mtime).parent
    results = json.loads((run_dir / "results.json").read_text())
    decision = json.loads((run_dir / "decision.json").read_text())
    decision = decision.get("decision_recomputed") or decision

    splits = load_splits(load_task(TASK))
    truth = {e.id: e.target for e in splits.test}
    rungs = {r["name"]: r for r in results["rungs"]}
    student = rungs["distill"]
    info = student["extras"]["distillation"]
    correct = {name: _correct(results, name, truth) for name, r in rungs.items() if r["status"] == "finished"}

    def paired(a: str, b: str) -> dict[str, Any]:
        c = compare_rungs(np.array(correct[a]), np.array(correct[b]), seed=0)
        return {"a": a, "b": b, **{k: c[k] for k in ("diff", "low", "high", "p_value", "verdict", "n")}}

    options = {o["name"]: o for o in decision.get("options") or []}
    training = student["extras"].get("training") or {}
    gold_training = (rungs["encoder_ft"]["extras"] or {}).get("training") or {}
    out = {
        "benchmark": "distill",
        "what": "BANKING77 with 10 labels per intent (770 gold) and 9,233 unlabelled queries: the encoder_ft student "
                "on the gold examples only vs the same student on the gold examples plus a SmolLM2-135M teacher's "
                "labels of a pool sample (few_shot_retrieved, 8 retrieved gold demonstrations a query)",
        "environment": C.environment(), "task": str(TASK.relative_to(C.ROOT)), "command": " ".join(cmd[1:]),
        "wall_s_this_invocation": round(wall, 1), "load_average_before": load_before,
        "load_average_after": list(os.getloadavg()),
        "test": {"examples": len(splits.test), "origin": splits.test_origin},
        "train": {"gold_train": len(splits.train), "gold_dev": len(splits.dev), "pool": len(splits.unlabelled)},
        "rungs": {name: {"status": r["status"], **_metric(r), "prepare_s": r.get("prepare_s"),
                         "model_s": (r.get("usage") or {}).get("model_seconds"),
                         "reason": r.get("reason") or r.get("error")} for name, r in rungs.items()},
        "student_vs_gold_only": paired("distill", "encoder_ft"),
        "student_vs_teacher": paired("distill", info["teacher"]),
        "teacher_vs_probe": paired(info["teacher"], "probe"),
        "confident_vs_gold_only": paired("distill_confident", "encoder_ft") if "distill_confident" in correct else None,
        "confident_labelling": {k: (rungs["distill_confident"]["extras"]["distillation"] or {}).get(k) for k in (
            "min_confidence", "labelled", "kept", "below_confidence", "unparsed", "student_examples",
            "labelling_wall_s")} if "distill_confident" in correct else None,
        "labelling": {k: info.get(k) for k in (
            "teacher", "teacher_model_id", "pool_size", "in_dev_or_test", "has_gold", "not_sampled", "labelled",
            "kept", "unparsed", "below_confidence", "gold_examples", "student_examples", "teacher_model_seconds",
            "teacher_prompt_tokens", "teacher_completion_tokens", "labelling_wall_s")},
        "student_training": {k: training.get(k) for k in ("examples", "wall_s", "epochs", "best_dev_accuracy")},
        "gold_only_training": {k: gold_training.get(k) for k in ("examples", "wall_s", "epochs", "best_dev_accuracy")},
        "decision": {"winner": decision.get("winner"), "status": decision.get("status"),
                     "distillation": decision.get("distillation"),
                     "options": {n: {k: o.get(k) for k in ("quality", "low", "high", "per_1k_usd", "one_off_usd",
                                                           "one_off_basis", "latency_p95_ms")}
                                 for n, o in options.items()}},
    }
    path = C.write_result(args.out, out)
    rows = [[n, r["status"], "-" if r["value"] is None else f"{100 * r['value']:.1f}% [{100 * r['low']:.1f}, "
             f"{100 * r['high']:.1f}]"] for n, r in out["rungs"].items()]
    print(C.table(rows, ["rung", "status", "accuracy [95% CI]"]))
    for key in ("student_vs_gold_only", "student_vs_teacher", "teacher_vs_probe", "confident_vs_gold_only"):
        c = out[key]
        if c is None:
            continue
        print(f"{c['a']} - {c['b']}: {100 * c['diff']:+.1f} points [{100 * c['low']:+.1f}, {100 * c['high']:+.1f}], "
              f"p = {c['p_value']:.3g} ({c['verdict']})")
    print(f"written {path}")
    return out


if __name__ == "__main__":
    main()
