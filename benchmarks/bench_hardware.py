"""The hardware ceiling: dense matmul FLOP/s at SmolLM2-135M's shapes, and the model FLOP utilisation (MFU).

Measures ``torch.nn.functional.linear`` (what every projection in the model is) at the model's
shapes (hidden 576, k/v 192, intermediate 1536, vocabulary 49,152) for token counts M from 1 (one
decoding step) to 1,024 (a training batch), in float32 and bfloat16, plus a large square matmul as
the machine's best case and full model forwards (batch 1, no cache) as the best a whole forward
pass reaches. Each shape is timed in several repeats; the best repeat counts (the least disturbed
on a shared machine) and the median is kept too.

Then reads ``results/scoring.json`` and ``results/training.json`` (when present) and reports MFU:

* scoring: FLOPs of what tunewise fed the model per second (linear layers 2 x params per token, the
  LM head on the rows kept, attention scores and values), and the customary 2 x params x tokens/s;
* training: the customary 6 x params x tokens/s (forward 2N + backward 4N per token; LoRA skips the
  frozen weights' gradients and tunewise's answer-only head skips most LM-head rows, so the work
  really done is less - the figure is the one people compare);

each divided by the best measured fp32 matmul FLOP/s, and by the FLOP/s of the layer matmuls at
the token count the workload feeds per forward. Results: ``benchmarks/results/hardware.json``.

Run:  python benchmarks/bench_hardware.py            (~1-2 min)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

FMA_FLOPS_PER_CYCLE = {"avx512f": 64, "avx2": 32, "avx": 16}  # fp32, two FMA pipes of that width per core


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--min-time", type=float, default=0.25, help="seconds per repeat (default 0.25)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                   help="auto: the full bf16 sweep only with avx512_bf16/AMX, else a few shapes to show the cost")
    p.add_argument("--quick", action="store_true", help="fewer shapes, 2 repeats")
    p.add_argument("--out", default="hardware")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.min_time = 2, 0.15
    return args


def _rate(fn, flops: float, min_time: float, repeats: int) -> dict[str, float]:
    """Best and median FLOP/s of ``fn`` over ``repeats`` repeats of at least ``min_time`` seconds."""
    fn()
    fn()
    rates = []
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= min_time:
                break
        rates.append(flops * n / elapsed)
    return {"best": max(rates), "median": statistics.median(rates)}


def linear_rates(shape: C.Shape, ms: list[int], dtype: Any, args: Any, lm_head_ms: list[int]) -> list[dict]:
    import torch
    import torch.nn.functional as F

    rows = []
    with torch.inference_mode():
        for m in ms:
            for name, mm, k, n in shape.layer_matmuls(m):
                x, w = torch.randn(mm, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
                r = _rate(lambda: F.linear(x, w), 2 * mm * k * n, args.min_time, args.repeats)  # noqa: B023
                rows.append({"op": name, "M": mm, "K": k, "N": n, **r})
        for m in lm_head_ms:
            x, w = torch.randn(m, shape.hidden, dtype=dtype), torch.randn(shape.vocab, shape.hidden, dtype=dtype)
            r = _rate(lambda: F.linear(x, w), 2 * m * shape.hidden * shape.vocab, args.min_time, args.repeats)  # noqa: B023
            rows.append({"op": "lm head", "M": m, "K": shape.hidden, "N": shape.vocab, **r})
    return rows


def square_rate(dtype: Any, args: Any, size: int = 2048) -> dict[str, float]:
    import torch

    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    with torch.inference_mode():
        return {"size": size, **_rate(lambda: a @ b, 2 * size**3, args.min_time, args.repeats)}


def layer_mix(rows: list[dict], shape: C.Shape, m: int) -> float | None:
    """FLOP/s of one decoder layer's matmuls at ``m`` tokens (time-weighted: total FLOPs / total time)."""
    at = [r for r in rows if r["M"] == m and r["op"] != "lm head"]
    if not at:
        return None
    weight = {"q/o proj": 2, "k/v proj": 2, "gate/up proj": 2, "down proj": 1}
    flops = sum(weight[r["op"]] * 2 * r["M"] * r["K"] * r["N"] for r in at)
    seconds = sum(weight[r["op"]] * 2 * r["M"] * r["K"] * r["N"] / r["best"] for r in at)
    return flops / seconds


def model_forward_rates(shape: C.Shape, seqs: list[int], args: Any) -> list[dict]:
    """Whole-model forwards (batch 1, no cache, last-token logits) through transformers, fp32."""
    import torch

    model, _ = C.load_hf()
    rows = []
    with torch.inference_mode():
        for t in seqs:
            ids = torch.randint(0, shape.vocab, (1, t))
            flops = shape.forward_flops(t, 1, t * (t + 1) / 2)
            r = _rate(lambda: model(ids, use_cache=False, logits_to_keep=1), flops, args.min_time, args.repeats)  # noqa: B023
            rows.append({"tokens": t, **r})
    return rows


def nearest(ms: list[int], m: float) -> int:
    return min(ms, key=lambda x: abs(x - m))


def mfu(out: dict[str, Any], ms: list[int], fp32_rows: list[dict], shape: C.Shape) -> dict[str, Any]:
    peak = out["fp32"]["peak_flops"]
    res: dict[str, Any] = {"peak_used": "best measured fp32 matmul FLOP/s on this machine (any shape)",
                           "peak_flops": peak}
    scoring = C.read_result("scoring")
    if scoring:
        tw = scoring["contenders"]["tunewise"]
        m = nearest(ms, tw["tokens_fed_per_example"])
        at_shape = layer_mix(fp32_rows, shape, m)
        res["scoring"] = {
            "source": "results/scoring.json", "date": scoring["environment"]["date"],
            "tokens_fed_per_s": tw["tokens_fed_per_s"], "tokens_fed_per_forward": tw["tokens_fed_per_example"],
            "achieved_flops_per_s": tw["achieved_flops_per_s"], "mfu": tw["achieved_flops_per_s"] / peak,
            "convention_2N_flops_per_s": tw["convention_flops_per_s"], "mfu_2N": tw["convention_flops_per_s"] / peak,
            "layer_matmul_flops_at_shape": at_shape, "shape_M": m,
            "fraction_of_shape_ceiling": tw["achieved_flops_per_s"] / at_shape if at_shape else None,
            "naive_achieved_flops_per_s": scoring["contenders"]["naive"]["achieved_flops_per_s"],
            "naive_mfu": scoring["contenders"]["naive"]["achieved_flops_per_s"] / peak,
            "cpu_busy_min": min((r["cpu_busy"] for r in scoring["contenders"]["tunewise"]["rounds"]), default=None),
            "note": "cpu_busy = process CPU time / (wall x threads) per round in scoring.json; well below 1 means "
                    "other work shared the cores while it was measured",
        }
    training = C.read_result("training")
    if training:
        res["training"] = {"source": "results/training.json", "date": training["environment"]["date"]}
        batch_tokens = training["settings"]["batch_size"] * training["settings"]["tokens_per_example"]
        m = nearest(ms, batch_tokens)
        at_shape = layer_mix(fp32_rows, shape, m)
        for name, c in training["contenders"].items():
            res["training"][name] = {"tokens_per_s": c["tokens_per_s"], "convention_6N_flops_per_s":
                                     c["convention_flops_per_s"], "mfu_6N": c["convention_flops_per_s"] / peak}
        res["training"].update(shape_M=m, layer_matmul_flops_at_shape=at_shape)
    return res


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    C.quiet()
    C.set_threads(args.threads)
    import torch

    env = C.environment()
    shape = C.Shape.of()
    simd = env["cpu"]["simd"]
    native_bf16 = any(f in simd for f in ("avx512_bf16", "amx_bf16"))
    ms = [1, 8, 32, 128, 400, 720, 1024] if not args.quick else [1, 32, 400, 720]
    lm_ms = [1, 32, 400] if not args.quick else [1, 400]
    print(f"hardware benchmark: CPU {env['cpu']['model']}, {env['threads']} threads, SIMD {' '.join(simd)}; "
          f"torch bf16 matmul native: {native_bf16}", flush=True)

    width = next((f for f in ("avx512f", "avx2", "avx") if f in simd), None)
    nominal = (env["cpu"]["mhz"] or 0) * 1e6 * env["threads"] * FMA_FLOPS_PER_CYCLE.get(width, 0)
    out: dict[str, Any] = {
        "benchmark": "hardware", "environment": env,
        "settings": {"threads": env["threads"], "repeats": args.repeats, "min_time_s": args.min_time,
                     "token_counts": ms, "lm_head_token_counts": lm_ms},
        "model": {"params": shape.params, "hidden": shape.hidden, "intermediate": shape.intermediate,
                  "vocab": shape.vocab, "layers": shape.layers},
        "nominal_peak_fp32_flops": nominal or None,
        "nominal_basis": f"{env['threads']} threads x {env['cpu']['mhz']} MHz (reported, not boost) x "
                         f"{FMA_FLOPS_PER_CYCLE.get(width, 0)} fp32 FLOP/cycle ({width}: two FMA pipes)",
    }
    fp32_rows = linear_rates(shape, ms, torch.float32, args, lm_ms)
    square = square_rate(torch.float32, args)
    forwards = model_forward_rates(shape, [64, 256, 512] if not args.quick else [256], args)
    out["fp32"] = {"linear": fp32_rows, "square": square, "model_forward": forwards,
                   "peak_flops": max([square["best"]] + [r["best"] for r in fp32_rows]),
                   "layer_mix_flops": {m: layer_mix(fp32_rows, shape, m) for m in ms}}
    if args.bf16 != "off":
        bf_ms = ms if (args.bf16 == "on" or native_bf16) else [32, 400]
        bf_rows = linear_rates(shape, bf_ms, torch.bfloat16, args, [] if not native_bf16 else lm_ms)
        bf_square = square_rate(torch.bfloat16, args, size=1024 if not native_bf16 else 2048)
        out["bf16"] = {"native": native_bf16, "linear": bf_rows, "square": bf_square,
                       "layer_mix_flops": {m: layer_mix(bf_rows, shape, m) for m in bf_ms},
                       "speed_vs_fp32_layer_mix": {m: layer_mix(bf_rows, shape, m) / layer_mix(fp32_rows, shape, m)
                                                   for m in bf_ms}}
    out["mfu"] = mfu(out, ms, fp32_rows, shape)
    path = C.write_result(args.out, out)
    print_summary(out, ms, path)
    return out


def print_summary(out: dict[str, Any], ms: list[int], path: Path) -> None:
    g = 1e9
    fp = out["fp32"]
    print(f"\nfp32 square {fp['square']['size']}^3: {fp['square']['best'] / g:.1f} GFLOP/s; nominal peak "
          f"{(out['nominal_peak_fp32_flops'] or 0) / g:.1f} GFLOP/s ({out['nominal_basis']})")
    rows = [[m, f"{(fp['layer_mix_flops'][m] or 0) / g:.1f}",
             f"{out['bf16']['layer_mix_flops'][m] / g:.1f}" if "bf16" in out and m in out["bf16"]["layer_mix_flops"]
             else "-"] for m in ms]
    print(C.table(rows, ["tokens M", "fp32 layer GFLOP/s", "bf16 layer GFLOP/s"]))
    for r in fp["model_forward"]:
        print(f"model forward, {r['tokens']} tokens: {r['best'] / g:.1f} GFLOP/s")
    m = out["mfu"]
    if "scoring" in m:
        s = m["scoring"]
        print(f"scoring MFU: {s['mfu']:.1%} of peak ({s['achieved_flops_per_s'] / g:.1f} GFLOP/s fed; 2N convention "
              f"{s['mfu_2N']:.1%}); {s['fraction_of_shape_ceiling']:.0%} of the layer matmuls at M={s['shape_M']}")
    if "training" in m:
        for name in ("tunewise", "trl"):
            if name in m["training"]:
                t = m["training"][name]
                print(f"training MFU ({name}, 6N convention): {t['mfu_6N']:.1%} ({t['tokens_per_s']} tokens/s)")
    print(f"written {path}")


if __name__ == "__main__":
    main()
