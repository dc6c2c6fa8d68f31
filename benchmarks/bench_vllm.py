"""The vLLM backend against the local (transformers) backend on one CUDA GPU: same weights, same prompts.

Both backends get the same BANKING77 zero-shot requests (the task's instructions, the 77-label list, the
query): label scoring (every label's log-likelihood; the prediction is the argmax, uncalibrated) and greedy
generation (``--max-new-tokens``). Reported for each: examples/s (the whole batch's wall time, after one
untimed warm-up batch), accuracy with its exact 95% interval, and between the two: how often the predicted
label and the generated text agree, and the largest difference of a label's log-likelihood (the engines'
kernels and bf16 rounding differ, so small differences are expected; a different tokenisation would show
as large ones). Results: ``benchmarks/results/vllm.json``.

Needs a CUDA GPU and vLLM (``pip install 'tunewise[vllm]'``); without them it says so and exits 0 having
measured nothing. Not part of ``run_all.py`` (a CPU machine cannot run it).

Run:  python benchmarks/bench_vllm.py                 (SmolLM2-135M, 300 test queries)
      python benchmarks/bench_vllm.py --model hf:/path/to/model --n 1000
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


def unavailable() -> str | None:
    """Why this machine cannot run the benchmark (None: it can)."""
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed (pip install 'tunewise[vllm]' on a CUDA machine)"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is visible (torch.cuda.is_available() is False)"
    return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="local:smollm2-135m",
                   help="local:<name> or hf:<dir or id>; vLLM gets the same weights (default local:smollm2-135m)")
    p.add_argument("--n", type=int, default=300, help="test queries (default 300)")
    p.add_argument("--dtype", default="bfloat16", help="both backends' dtype (default bfloat16)")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--batch", type=int, default=64, help="requests per backend call (default 64)")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.5,
                   help="vLLM's share of GPU memory, leaving room for the local backend (default 0.5)")
    p.add_argument("--out", default="vllm")
    return p.parse_args(argv)


def requests(spec: Any, examples: list[Any], labels: list[str], max_new_tokens: int) -> tuple[list, list]:
    from tunewise.backends.base import GenerationRequest, ScoreRequest, messages

    system = (f"{spec.instructions}\nLabels:\n" + "".join(f"- {label}\n" for label in labels)
              + "Reply with exactly one label from the list and nothing else.")
    prompts = [messages(("system", system), ("user", f"Input: {ex.text}")) for ex in examples]
    return ([ScoreRequest(p, tuple(labels)) for p in prompts],
            [GenerationRequest(p, max_new_tokens=max_new_tokens) for p in prompts])


def run(backend: Any, method: str, items: list[Any], batch: int) -> tuple[list[Any], float]:
    """Answers to ``items`` in calls of ``batch``, and the wall time (after one untimed warm-up call)."""
    import torch

    getattr(backend, method)(items[:batch])
    torch.cuda.synchronize()
    start = time.perf_counter()
    out: list[Any] = []
    for i in range(0, len(items), batch):
        out.extend(getattr(backend, method)(items[i:i + batch]))
    torch.cuda.synchronize()
    return out, time.perf_counter() - start


def summary(golds: list[str], preds: list[str], wall_s: float) -> dict[str, Any]:
    from tunewise.evaluation.stats import proportion_interval

    k = sum(g == p for g, p in zip(golds, preds))
    low, high = proportion_interval(k, len(golds))
    return {"examples_per_s": round(len(golds) / wall_s, 2), "wall_s": round(wall_s, 2),
            "accuracy": round(k / len(golds), 4), "accuracy_ci95": [round(low, 4), round(high, 4)]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    why = unavailable()
    if why:
        print(f"bench_vllm: {why}; this benchmark needs both, so nothing was measured.", file=sys.stderr)
        return 0
    import _common as C

    from tunewise.backends.local import LocalBackend
    from tunewise.backends.vllm import VLLMBackend

    C.quiet()
    env, spec, splits, labels = C.start(argparse.Namespace(threads=None))
    examples = C.sample(splits.test, args.n, seed=0)
    golds = [ex.target for ex in examples]
    scores_in, gens_in = requests(spec, examples, labels, args.max_new_tokens)
    name = args.model.partition(":")[2]
    local = LocalBackend(args.model, device="cuda", dtype=args.dtype, batch_size=args.batch)
    fast = VLLMBackend(f"vllm:{name}", dtype=args.dtype, batch_size=args.batch,
                       engine={"gpu_memory_utilization": args.gpu_memory_utilization})
    result: dict[str, Any] = {"environment": {**env, "gpu": _gpu()}, "model": args.model, "n": len(examples),
                              "dtype": args.dtype, "batch": args.batch, "vllm_info": fast.info}
    for method in ("score", "generate"):
        items = scores_in if method == "score" else gens_in
        (a, a_s), (b, b_s) = run(local, method, items, args.batch), run(fast, method, items, args.batch)
        if method == "score":
            pa = [labels[max(range(len(labels)), key=s.logprobs.__getitem__)] for s in a]
            pb = [labels[max(range(len(labels)), key=s.logprobs.__getitem__)] for s in b]
            gap = max(abs(x - y) for s, t in zip(a, b) for x, y in zip(s.logprobs, t.logprobs))
            agree = {"same_prediction": round(sum(x == y for x, y in zip(pa, pb)) / len(pa), 4),
                     "max_abs_logprob_diff": round(gap, 4)}
        else:
            pa, pb = [g.text.strip() for g in a], [g.text.strip() for g in b]
            agree = {"same_text": round(sum(x == y for x, y in zip(pa, pb)) / len(pa), 4)}
        result[method] = {"local": summary(golds, pa, a_s), "vllm": summary(golds, pb, b_s), **agree,
                          "speedup": round(a_s / b_s, 2)}
        print(f"{method}: local {result[method]['local']}  vllm {result[method]['vllm']}  {agree}")
    print(f"results: {C.write_result(args.out, result)}")
    return 0


def _gpu() -> dict[str, Any]:
    import torch

    props = torch.cuda.get_device_properties(0)
    return {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1)}


if __name__ == "__main__":
    sys.exit(main())
