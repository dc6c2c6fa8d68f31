"""Time to a decision: ``tunewise run`` on BANKING77 from an empty store, full ladder and ``--quick``.

This is the number a user feels: from nothing cached (no embeddings, no calibration, no adapters,
no call cache) to the printed verdict, with the default ladder policy and the task's own budget.
Each mode runs ``python -m tunewise run TASK --store <fresh dir> --quiet`` as a subprocess (the
same code path as the CLI, a cold process: imports and model loading are counted) and records:

* wall time, against the targets (full decision < 30 min, quick mode < 5 min on 2 cores);
* per rung: status, accuracy with its 95% CI, or why it was skipped / rejected early;
* the ladder's stop reason, the compute early rejection saved, the decision and its next step;
* the load average before and after, so a run on a busy machine shows itself.

There is no second contender here: the issue's target is an absolute wall time. The comparison
that matters (every rung scored fully instead of rejected early) is what ``saved_calls`` /
``saved_s`` estimate, from the rejected rungs' own measured speed.

Run:  python benchmarks/bench_decision.py                  (~30 min + ~5 min on 2 free cores)
      python benchmarks/bench_decision.py --task examples/snips_slots/task.yaml --out decision_snips
      python benchmarks/bench_decision.py --modes quick    (~5 min)
      python benchmarks/bench_decision.py --keep DIR       (keep the stores, e.g. to open the report)
      TUNEWISE_CACHE_DIR=$(mktemp -d) python benchmarks/bench_decision.py   (an empty model cache too, as on a
                                                          fresh machine: dequantising the GGUF files is timed)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

MODES = {"full": [], "quick": ["--quick"]}
TARGET_MIN = {"full": 30, "quick": 5}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", type=Path, default=C.TASK)
    p.add_argument("--modes", default="full,quick", help="comma-separated, from: full, quick")
    p.add_argument("--keep", type=Path, default=None, help="keep the stores under this directory (default: deleted)")
    p.add_argument("--out", default="decision", help="results file name (benchmarks/results/<out>.json)")
    p.add_argument("--quick", action="store_true", help="only the quick mode (what run_all.py --quick passes)")
    args = p.parse_args(argv)
    args.modes = ["quick"] if args.quick else [m for m in args.modes.split(",") if m]
    unknown = set(args.modes) - set(MODES)
    if unknown:
        p.error(f"unknown mode(s): {', '.join(sorted(unknown))}")
    return args


def _rung(r: dict[str, Any]) -> dict[str, Any]:
    m = (r.get("metrics") or {}).get(r.get("primary_metric") or "accuracy")
    out = {"name": r["name"], "model": r.get("model"), "strategy": r.get("strategy"), "status": r["status"],
           "prepare_s": r.get("prepare_s"), "model_s": (r.get("usage") or {}).get("model_seconds")}
    if m:
        out.update(value=m["value"], low=m["low"], high=m["high"], n=m["n"])
    if r.get("reason") or r.get("error"):
        out["reason"] = r.get("reason") or r.get("error")
    return out


def run_mode(mode: str, task: Path, root: Path) -> dict[str, Any]:
    store = root / f"store-{mode}"
    shutil.rmtree(store, ignore_errors=True)
    cmd = [sys.executable, "-m", "tunewise", "run", str(task), "--store", str(store), "--quiet", *MODES[mode]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    print(f"\n=== {mode}: {' '.join(cmd[1:])}", flush=True)
    load_before = list(os.getloadavg())
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    print(proc.stdout, flush=True)
    if proc.returncode not in (0, 1):  # 1 = finished with a rung that failed or was skipped by the budget
        print(proc.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"tunewise run --{mode} exited {proc.returncode}")
    results_path = next(store.glob("runs/*/results.json"))
    results = json.loads(results_path.read_text())
    decisions = sorted(store.glob("**/decision.json"))
    decision = json.loads(decisions[-1].read_text()) if decisions else {}
    ladder = results.get("ladder") or {}
    actions = ladder.get("actions") or []
    stop = next((a.get("reason") for a in reversed(actions) if a.get("kind") == "stop"), None)
    print(f"{mode}: {wall / 60:.1f} min (target < {TARGET_MIN[mode]} min)", flush=True)
    return {"mode": mode, "command": " ".join(["tunewise", *cmd[3:]]), "exit_code": proc.returncode,
            "wall_s": round(wall, 1), "wall_min": round(wall / 60, 2), "target_min": TARGET_MIN[mode],
            "within_target": wall / 60 < TARGET_MIN[mode],
            "load_average_before": load_before, "load_average_after": list(os.getloadavg()),
            "test_examples": (results.get("data") or {}).get("sizes", {}).get("test"),
            "budget": ladder.get("budget"), "stop_reason": stop,
            "early_rejection": ladder.get("early_rejection"),
            "rungs": [_rung(r) for r in results.get("rungs", [])],
            "decision": {k: decision.get(k) for k in ("status", "winner", "next_step", "reasons", "pareto", "break_even")
                         if k in decision},
            "options": [{k: o.get(k) for k in ("name", "kind", "metric", "quality", "low", "high", "per_1k_usd",
                                               "one_off_usd", "latency_p95_ms", "meets_target", "meets_constraints")}
                        for o in decision.get("options") or []],
            "store": str(store), "stdout": proc.stdout[-6000:]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    env = C.environment()
    root = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="tunewise-decision-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        modes = {m: run_mode(m, args.task.resolve(), root) for m in args.modes}
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    previous = C.read_result(args.out) or {}
    merged = {**(previous.get("modes") or {}), **modes}  # a quick-only rerun keeps the last full run
    out = {"benchmark": "decision", "what": f"tunewise run on {args.task.parent.name} from an empty store (default "
                                            "ladder policy, the task's models + MiniLM), wall time to the verdict",
           "environment": env, "task": str(args.task), "modes": merged}
    path = C.write_result(args.out, out)
    rows = [[m, f"{v['wall_min']:.1f}", f"< {v['target_min']}", "yes" if v["within_target"] else "NO",
             (v["decision"] or {}).get("winner") or "-"] for m, v in merged.items()]
    print(C.table(rows, ["mode", "minutes", "target", "met", "decision"]))
    print(f"written {path}")
    return out


if __name__ == "__main__":
    main()
