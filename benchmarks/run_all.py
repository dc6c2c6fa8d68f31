"""Run every benchmark (or ``--quick`` versions), then regenerate the README's results table.

The table between ``<!-- bench:start -->`` and ``<!-- bench:end -->`` in the top-level README is
written from ``benchmarks/results/*.json`` only, never by hand; ``--table-only`` rewrites it from
the results already there without running anything. If the markers are missing, a "Benchmarks"
section holding them is inserted before the README's "Layout" section (or at its end). The soaks'
paragraph (``<!-- soak:start -->`` ... ``<!-- soak:end -->``, a "Soaks" subsection inserted the same
way) is written from ``results/soak_kill.json`` and ``results/soak_serve.json``; ``--soaks`` also runs
``soak_kill.py`` and ``soak_serve.py`` (~10 min), ``--only soaks`` runs only them.

Run:  python benchmarks/run_all.py            (~35-45 min on 2 free cores)
      python benchmarks/run_all.py --quick    (~12-15 min)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

HERE = Path(__file__).resolve().parent
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
SOAK_START, SOAK_END = "<!-- soak:start -->", "<!-- soak:end -->"
SOAKS = ("soak_kill", "soak_serve")
ORDER = ("scoring", "fewshot", "training", "hardware", "decision")  # hardware reads scoring's and training's results
TECHNIQUES = {"scoring": ["--variants", "no-prefix-cache,tw-generate"],
              "fewshot": ["--variants", "score-all,tw-generate"],
              "training": ["--variants", "tw-full-head,tw-padded,tw-grad-ckpt,trl-tuned"]}
DEFAULT_VARIANTS = {"scoring": ["--variants", "no-prefix-cache"],
                    "training": ["--variants", "tw-full-head,trl-tuned"]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    p.add_argument("--only", default=",".join(ORDER), help=f"comma-separated subset of {', '.join(ORDER)}, soaks")
    p.add_argument("--techniques", action="store_true",
                   help="also time each technique switched off/on (many more runs; see each script's --help)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--soaks", action="store_true", help="also run the kill and serve soaks (~10 min)")
    p.add_argument("--table-only", action="store_true", help="only rewrite the README table from results/")
    p.add_argument("--no-readme", action="store_true", help="do not touch README.md")
    return p.parse_args(argv)


def run(name: str, args: argparse.Namespace) -> float:
    cmd = [sys.executable, str(HERE / f"bench_{name}.py")]
    if args.quick:
        cmd.append("--quick")
    if args.threads and name != "decision":  # the decision runs the CLI as a user would, threads untouched
        cmd += ["--threads", str(args.threads)]
    variants = (TECHNIQUES if args.techniques else DEFAULT_VARIANTS).get(name, [])
    if name == "scoring":  # the thread count the run does not use
        variants = [variants[0], variants[1] + (",threads2" if args.threads == 1 else ",threads1")]
    cmd += variants
    print(f"\n=== {' '.join(Path(c).name if i < 2 else c for i, c in enumerate(cmd))}", flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - start


# --- the README table -------------------------------------------------------------------------


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}x" if v < 100 else f"{v:.0f}x"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _rate(v: float | None, unit: str = "ex/s") -> str:
    return "-" if v is None else f"{v:.3g} {unit}"


def _round_values(results: list[dict[str, Any] | None], key: str) -> list[float]:
    """``key`` (cpu_busy, load_average) of every contender's every round, across the results."""
    return [x[key] for r in results for c in (r or {}).get("contenders", {}).values()
            for x in c.get("rounds", []) if x.get(key) is not None]


def _round_stat(results: list[dict[str, Any] | None], key: str, fmt: str) -> str:
    values = _round_values(results, key)
    return f"{min(values):{fmt}}-{max(values):{fmt}}" if values else "-"


def _busy_words(results: list[dict[str, Any] | None]) -> str:
    busy = _round_values(results, "cpu_busy")
    if busy and min(busy) >= 0.9:
        return "the cores were free for the benchmark"
    return "other jobs shared the cores in some rounds: read the ratios, not the absolute rates"


def _rounds(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def _dev_test(ratios: dict[str, Any], c: dict[str, Any]) -> str:
    """The dev accuracies' difference with its 95% CI: paired (McNemar) when recorded, else from the counts."""
    paired = ratios.get("dev_paired_test")
    if paired:
        return (f"{paired['verdict']}, {100 * paired['diff']:+.1f} points [{100 * paired['low']:+.1f}, "
                f"{100 * paired['high']:+.1f}], McNemar p {paired['p_value']:.2f}")
    from tunewise.monitoring.arms import compare_accuracy

    a, b = c["tunewise"]["dev"], c["trl"]["dev"]
    r = compare_accuracy(round(a["accuracy"] * a["n"]), a["n"], round(b["accuracy"] * b["n"]), b["n"])
    return (f"{r.verdict}, {100 * r.diff:+.1f} points [{100 * r.low:+.1f}, {100 * r.high:+.1f}], unpaired "
            f"test from the counts, p {r.p_value:.2f}")


def table() -> str:
    res = {name: C.read_result(name) for name in ORDER}
    first = next((r for r in res.values() if r), None)
    if first is None:
        return "_No benchmark results yet: run `python benchmarks/run_all.py`._"
    env = first["environment"]
    v = env["versions"]
    dates = sorted({r["environment"]["date"][:10] for r in res.values() if r})
    lines = [
        f"Measured {', '.join(dates)} on {env['cpu']['model']} ({env['cpu']['logical_cores']} cores, "
        f"{' '.join(env['cpu']['simd'])}), {env['threads']} torch thread(s), torch {v.get('torch')}, transformers "
        f"{v.get('transformers')}, TRL {v.get('trl')}, PEFT {v.get('peft')}, model SmolLM2-135M-Instruct fp32. "
        f"Each script alternates the contenders round by round in one process; per round, CPU time / (wall x "
        f"threads) was {_round_stat(list(res.values()), 'cpu_busy', '.0%')} and the load average "
        f"{_round_stat(list(res.values()), 'load_average', '.1f')} ({_busy_words(list(res.values()))}). "
        f"Speed-ups in parentheses are per round.",
        "",
        "| benchmark | tunewise | alternative | speed-up (rounds) | accuracy tunewise / alternative | target |",
        "|---|---|---|---|---|---|",
    ]
    s = res["scoring"]
    if s:
        c, r = s["contenders"], s["ratios"]
        lines.append(
            f"| label scoring, zero-shot, 77 labels ({c['tunewise']['n']} ex.) | {_rate(c['tunewise']['items_per_s'])} "
            f"| naive: one forward per label ({c['naive']['n']} ex.), {_rate(c['naive']['items_per_s'])} "
            f"| **{_x(r['tunewise_vs_naive']['speedup'])}** ({_rounds(r['tunewise_vs_naive']['per_round'])}) "
            f"| {_pct(c['tunewise']['accuracy_on_naive_subset'])} / {_pct(c['naive']['accuracy'])} (same {c['naive']['n']}) "
            f"| >= 10x |")
        lines.append(
            f"| | | `pipeline(\"text-generation\")` greedy + parse, {_rate(c['generate']['items_per_s'])} "
            f"| **{_x(r['tunewise_vs_generate']['speedup'])}** ({_rounds(r['tunewise_vs_generate']['per_round'])}) "
            f"| {_pct(c['tunewise']['accuracy'])} / {_pct(c['generate']['accuracy'])}"
            + (f" (tunewise uncalibrated: {_pct(c['tunewise']['accuracy_raw'])})" if "accuracy_raw" in c["tunewise"] else "")
            + " | >= 5x |")
    f = res["fewshot"]
    if f:
        c, r = f["contenders"], f["ratios"]["tunewise_vs_generate"]
        lines.append(
            f"| few-shot, k={f['settings']['k']} retrieved demos ({c['tunewise']['n']} ex.) "
            f"| {_rate(c['tunewise']['items_per_s'])} | `model.generate` loop, batch 1, + parse, "
            f"{_rate(c['generate']['items_per_s'])} | **{_x(r['speedup'])}** ({_rounds(r['per_round'])}) "
            f"| {_pct(c['tunewise']['accuracy'])} / {_pct(c['generate']['accuracy'])} | - |")
    t = res["training"]
    if t:
        c, r = t["contenders"], t["ratios"]["tunewise_vs_trl"]
        st = t["settings"]
        lines.append(
            f"| LoRA r=16 all-linear, {st['train_examples']} ex., {st['max_steps']} steps x {st['batch_size']} "
            f"| {_rate(c['tunewise']['tokens_per_s'], 'tok/s')} | TRL `SFTTrainer` defaults (+`use_cpu`, bf16 off), "
            f"{_rate(c['trl']['tokens_per_s'], 'tok/s')} | **{_x(r['tokens_per_s'])}** tokens/s "
            f"({_rounds(r['per_round'])}); wall {_x(r['wall'])} "
            f"| dev {_pct(c['tunewise']['dev']['accuracy'])} / {_pct(c['trl']['dev']['accuracy'])} "
            f"(n={c['tunewise']['dev']['n']}; {_dev_test(r, c)}) | >= 1.5x |")
    h = res["hardware"]
    if h:
        m = h["mfu"]
        parts = [f"best fp32 matmul {h['fp32']['peak_flops'] / 1e9:.1f} GFLOP/s "
                 f"(nominal {(h['nominal_peak_fp32_flops'] or 0) / 1e9:.0f})"]
        if "bf16" in h:
            mix = h["bf16"]["speed_vs_fp32_layer_mix"]
            parts.append(f"bf16 {min(mix.values()):.2f}-{max(mix.values()):.2f}x fp32 "
                         f"({'native' if h['bf16']['native'] else 'no AVX512-BF16/AMX'})")
        mfu = []
        if "scoring" in m:
            mfu.append(f"scoring {_pct(m['scoring']['mfu'])} (2N: {_pct(m['scoring']['mfu_2N'])})")
        if "training" in m and "tunewise" in m["training"]:
            mfu.append(f"training tunewise {_pct(m['training']['tunewise']['mfu_6N'])}, "
                       f"TRL {_pct(m['training']['trl']['mfu_6N'])} (6N)")
        lines.append(f"| hardware ceiling | MFU: {'; '.join(mfu) or '-'} | {'; '.join(parts)} | | | |")
    d = res["decision"]
    if d:
        for mode, m in d["modes"].items():
            er = m.get("early_rejection") or {}
            finished = [r for r in m["rungs"] if r.get("value") is not None]
            best = max(finished, key=lambda r: r["value"], default=None)
            # a decision recomputed from the same results after a fix of the ranking (the run's own is kept beside it)
            decided = m.get("decision_recomputed") or m.get("decision") or {}
            again = " (recomputed by `tunewise report`)" if m.get("decision_recomputed") else ""
            lines.append(
                f"| time to decision, BANKING77 {'full ladder' if mode == 'full' else '`--quick`'} "
                f"({m['test_examples']} test ex., empty store) | **{m['wall_min']:.1f} min** "
                f"| decision: {decided.get('winner') or 'none meets the target and constraints'}{again}"
                + (f"; best {best['name']} {_pct(best['value'])} [{_pct(best['low'])}, {_pct(best['high'])}]" if best else "")
                + f" | {len(er.get('rungs') or [])} rung(s) rejected early, ~{(er.get('saved_s') or 0) / 60:.0f} min saved "
                f"| | < {m['target_min']} min |")
    tech = _techniques(res)
    if tech:
        lines += ["", "Techniques, each switched against tunewise's default in the same alternation "
                  "(speed relative to the default; below 1 means the default's choice pays):", "",
                  "| benchmark | variant | speed vs default | accuracy |", "|---|---|---|---|"] + tech
    return "\n".join(lines)


def _techniques(res: dict[str, Any]) -> list[str]:
    rows = []
    tok = C.read_result("tokenisation")
    if tok:
        c = tok["contenders"]
        rows.append(f"| scoring | `whole-prompt tokenisation` (`probe_tokenisation.py`): each label tokenised with the "
                    f"whole ~{tok['settings']['prompt_tokens_mean']:.0f}-token prompt instead of the prompt's tail after "
                    f"its last special token, {c['whole-prompt']['ms_per_prompt']:.1f} vs {c['tail']['ms_per_prompt']:.1f} "
                    f"ms per example for {tok['settings']['labels']} labels, identical tokens on {tok['identical_tokens']} "
                    f"| {1 / tok['speedup']['speedup']:.2f}x | - |")
    for name in ("scoring", "fewshot", "training"):
        for variant, v in ((res[name] or {}).get("variants") or {}).items():
            speed = v["speed_vs_tunewise"]
            speed = speed["speedup"] if isinstance(speed, dict) else speed
            acc = v.get("accuracy", (v.get("dev") or {}).get("accuracy"))
            rows.append(f"| {name} | `{variant}`: {v['what']} | {speed:.2f}x | {_pct(acc)} |")
    return rows


# --- the soaks' paragraph ------------------------------------------------------------------------


def _n(v: float) -> str:
    return f"{v:,.0f}"


def _where(summary: dict[str, Any]) -> str:
    """``{"training": 10, "after results.json (report, version)": 2}`` -> "10 during training, 2 after results.json"."""
    def phrase(w: str) -> str:
        w = w.split(" (")[0]
        return f"during {w}" if w in ("training", "scoring") else w

    return ", ".join(f"{n} {phrase(w)}" for w, n in sorted(summary["kills_by_moment"].items(), key=lambda x: -x[1]))


def _kill_sentence(k: dict[str, Any]) -> str:
    t, ph = k["totals"], k["phases"]
    env = k["environment"]
    parts = [f"**Kill soak** (`benchmarks/soak_kill.py`, results in `benchmarks/results/soak_kill.json`, "
             f"{env['date'][:10]}, {t['wall_s'] / 60:.0f} min on {env['cpu']['logical_cores']} cores): "
             f"`tunewise run` was killed with SIGKILL at random moments spread over an uninterrupted reference "
             f"run's duration and resumed each time; **{t['kills']} kills survived** ({t['resumes']} resumes, "
             f"{'every' if t['passed'] else 'NOT every'} check passed)."]
    p = ph.get("prompt")
    if p:
        s = p["summary"]
        parts.append(
            f"Prompt scoring (knn and {len(p['settings']['rungs']) - 1} prompt rungs on the fake backend, "
            f"{p['settings']['test']} test examples, {s['cycles']} cycles): {s['kills']} kills ({_where(s)}), "
            f"{_n(s['calls_served'])} model calls served, {s['repeated_not_in_flight']} of them twice (besides "
            f"{s['repeated_in_flight']} in flight at a kill), {s['missing']} missing; rung statuses, metrics, predictions, "
            f"comparisons, decision and versions {'equal to' if s['results_equal'] else 'DIFFERENT from'} the "
            f"uninterrupted run's in every cycle.")
    tr = ph.get("training")
    if tr:
        s = tr["summary"]
        parts.append(
            f"Training (knn and a LoRA rung with early stopping on a tiny random Llama, {s['cycles']} cycles): "
            f"{s['kills']} kills ({_where(s)}); {s['resumes_from_last_complete_checkpoint']} of "
            f"{s['resumes_checked']} trainer starts began from the newest complete checkpoint on disk (none at a "
            f"fresh start), "
            f"{s['steps_repeated']} optimiser steps trained twice in all (at most {s['max_steps_lost_per_kill']} "
            f"lost to one kill), the final adapter "
            + ("bit-identical to the reference's" if s["adapter_bit_identical"]
               else f"off the reference's by at most {s['adapter_max_abs_diff']:.2g}")
            + f", and the evaluation {'equal' if s['results_equal'] else 'DIFFERENT'}.")
    return " ".join(parts)


def _serve_sentence(r: dict[str, Any]) -> str:
    env, m, lat = r["environment"], r["moves"], r["latency_ms"]
    return (f"**Serve soak** (`benchmarks/soak_serve.py`, results in `benchmarks/results/soak_serve.json`, "
            f"{env['date'][:10]}): `tunewise serve` answered **{_n(r['requests'])} requests** from "
            f"{r['concurrency']} concurrent clients while `production` was moved {m['total']} times "
            f"({m['promotions']} promotions, {m['rollbacks']} rollbacks; {m['via_cli']} of them through the CLI "
            f"from another process) among {len(r['answered_by'])} versions: **{r['failed']} failed requests**, "
            f"{r['misrouted']} answered by a version `production` did not name while the request was open, "
            f"{r['request_log']['answered_missing_from_log']} answers missing from the request log; latency p50 "
            f"{lat['p50']:.0f} ms, p95 {lat['p95']:.0f} ms, p99 {lat['p99']:.0f} ms ({r['requests_per_s']:.0f} "
            f"requests/s on a shared 2-core machine).")


def soak_text() -> str:
    kill, serve = (C.read_result(name) for name in SOAKS)
    parts = ([_kill_sentence(kill)] if kill else []) + ([_serve_sentence(serve)] if serve else [])
    return "\n\n".join(parts) or "_No soak results yet: run `python benchmarks/run_all.py --only soaks`._"


def write_soak_readme(text: str) -> None:
    C.write_readme_block(SOAK_START, SOAK_END, text, section="### Soaks\n\n")


def run_soaks() -> dict[str, float]:
    timings = {}
    for name in SOAKS:
        cmd = [sys.executable, str(HERE / f"{name}.py")]
        print(f"\n=== {name}.py", flush=True)
        start = time.perf_counter()
        done = subprocess.run(cmd)
        timings[name] = round(time.perf_counter() - start, 1)
        if done.returncode:
            print(f"{name}.py: a check failed (exit {done.returncode}); see its results file", flush=True)
    return timings


def write_readme(text: str) -> None:
    C.write_readme_block(START, END, text, section="## Benchmarks\n\nRerun with `python benchmarks/run_all.py` "
                         "(`--quick` for a short run; see `benchmarks/README.md`).\n\n")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    timings = {}
    if not args.table_only:
        for name in [n for n in ORDER if n in args.only.split(",")]:
            timings[name] = round(run(name, args), 1)
        print("\nbenchmark wall times (s):", json.dumps(timings))
    if (args.soaks or "soaks" in args.only.split(",")) and not args.table_only:
        timings.update(run_soaks())
        print("\nsoak wall times (s):", json.dumps(timings))
    text = table()
    print("\n" + text)
    soaks = soak_text()
    print("\n" + soaks)
    if not args.no_readme:
        write_readme(text)
        write_soak_readme(soaks)
        print(f"\nREADME table and soak paragraph updated: {C.ROOT / 'README.md'}")


if __name__ == "__main__":
    main()
