"""Shared plumbing for the benchmark scripts: environment record, alternation, FLOP counts, results.

Every benchmark compares contenders *in one process, alternating them* (round 1: A B C, round 2:
A B C, ...), each round on its own slice of the examples, so a machine shared with other work
slows every contender alike and the ratios stay meaningful even when absolute times do not.
Each round records wall time and this process's CPU time; CPU time / (wall x threads) below ~0.8
means something else was competing for the cores during that round.

Out of scope: what is compared (each ``bench_*.py``), the README table (``run_all.py``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import random
import re
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
TASK = ROOT / "examples" / "banking77" / "task.yaml"
MODEL = "local:smollm2-135m"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# --- environment --------------------------------------------------------------------------


def cpu_info() -> dict[str, Any]:
    """CPU model, logical cores and the SIMD flags that decide fp32/bf16 speed."""
    model, flags, mhz = platform.processor() or "unknown", set(), None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and model in ("unknown", "", platform.processor()):
                model = value.strip()
            elif key == "flags" and not flags:
                flags = set(value.split())
            elif key == "cpu MHz" and mhz is None:
                mhz = float(value)
    except OSError:
        pass
    wanted = ("fma", "avx", "avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8")
    return {"model": model, "logical_cores": os.cpu_count(), "mhz": mhz,
            "simd": [f for f in wanted if f in flags]}


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("tunewise", "torch", "transformers", "trl", "peft", "accelerate", "datasets"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def environment() -> dict[str, Any]:
    import torch

    return {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_info(),
            "threads": torch.get_num_threads(), "load_average_at_start": list(os.getloadavg()),
            "versions": versions(), "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}


def set_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def quiet() -> None:
    """Silence progress bars and advisory warnings so the printed table stays readable."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        from datasets import disable_progress_bars

        disable_progress_bars()
    except ImportError:
        pass
    logging.getLogger("transformers").setLevel(logging.ERROR)


# --- command line -------------------------------------------------------------------------


def parser(doc: str, variants: dict[str, str] | None = None, *, rounds: int = 3, out: str,
           quick: dict[str, int] | None = None) -> argparse.ArgumentParser:
    """The options every comparison takes: rounds, threads, seed, out, and variants / ``--quick`` when given.

    ``quick`` caps options under ``--quick`` (``{"n": 24}``: at most 24), applied by :func:`parse`.
    """
    variants = variants or {}
    width = max(map(len, variants), default=0) + 2
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=("variants:\n" + "\n".join(f"  {k:<{width}} {v}" for k, v in variants.items()))
                                if variants else None)
    p.add_argument("--rounds", type=int, default=rounds)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=out, help=f"results file name (benchmarks/results/<out>.json, default {out})")
    if variants:
        p.add_argument("--variants", default="", help="comma-separated, from: " + ", ".join(variants))
    if quick:
        p.add_argument("--quick", action="store_true",
                       help="a short run: " + ", ".join(f"{k.replace('_', '-')} <= {v}" for k, v in quick.items()))
        p.set_defaults(quick_caps=quick)
    return p


def parse(p: argparse.ArgumentParser, argv: list[str] | None,
          variants: dict[str, str] | None = None) -> argparse.Namespace:
    """Parse, apply the ``--quick`` caps (when the parser has them) and check ``--variants`` against ``variants``."""
    args = p.parse_args(argv)
    caps = vars(args).pop("quick_caps", None) or {}
    if getattr(args, "quick", False):
        for name, cap in caps.items():
            setattr(args, name, min(getattr(args, name), cap))
    if variants is not None:
        args.variants = [v for v in args.variants.split(",") if v]
        unknown = set(args.variants) - set(variants)
        if unknown:
            p.error(f"unknown variant(s): {', '.join(sorted(unknown))}")
    return args


def start(args: argparse.Namespace) -> tuple[dict[str, Any], Any, Any, list[str]]:
    """Quiet libraries, set threads; ``(environment, spec, splits, labels)`` of BANKING77."""
    quiet()
    set_threads(args.threads)
    env = environment()
    spec, splits = banking77()
    return env, spec, splits, list(splits.labels)


def draw(examples: Sequence[Any], n: int, seed: int) -> tuple[list[Any], list[Any]]:
    """``n + 1`` seeded test examples: the first warms every contender up (untimed), the rest are timed."""
    drawn = sample(examples, n + 1, seed=seed)
    return drawn[:1], drawn[1:]


# --- data and model ------------------------------------------------------------------------


def banking77():
    """``(spec, splits)`` of the bundled BANKING77 task (the same frozen split ``tunewise run`` uses)."""
    from tunewise.data import load_splits
    from tunewise.task import load_task

    spec = load_task(TASK)
    return spec, load_splits(spec)


def sample(examples: Sequence[Any], n: int, seed: int = 0) -> list[Any]:
    """``n`` examples drawn with a fixed seed (the test file is sorted by label)."""
    examples = list(examples)
    return random.Random(seed).sample(examples, min(n, len(examples)))


def per_label(examples: Sequence[Any], k: int, seed: int = 0) -> list[Any]:
    """The first ``k`` examples of each label in a seeded order (a balanced subset)."""
    seen: dict[str, int] = {}
    out = []
    for ex in sample(examples, len(examples), seed):
        if seen.get(ex.target, 0) < k:
            seen[ex.target] = seen.get(ex.target, 0) + 1
            out.append(ex)
    return out


def model_dir() -> Path:
    """The float32 safetensors copy tunewise loads for ``local:smollm2-135m`` (identical weights for all)."""
    from tunewise.backends.model_cache import local_model_path, resolve_model

    return local_model_path(resolve_model(MODEL))


def load_hf(dtype: str = "float32") -> tuple[Any, Any]:
    """The same weights through plain transformers, as a user of the standard tools would load them."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = model_dir()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).eval()
    return model, tok


def chat(prompt: Sequence[Any]) -> list[dict[str, str]]:
    """tunewise ``Message`` tuples -> the role/content dicts transformers takes."""
    return [{"role": m.role, "content": m.content} for m in prompt]


# --- FLOPs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """The transformer's shapes, read from its config (SmolLM2-135M: 576 / 1536 / 30 layers / 49152)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    params: int  # all parameters, the tied embedding counted once

    @classmethod
    def of(cls, path: Path | None = None) -> "Shape":
        cfg = json.loads(((path or model_dir()) / "config.json").read_text())
        h, i, n = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
        heads, kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
        hd = cfg.get("head_dim") or h // heads
        per_layer = h * heads * hd * 2 + h * kv * hd * 2 + 3 * h * i + 2 * h
        params = n * per_layer + cfg["vocab_size"] * h + h
        return cls(h, i, n, heads, kv, hd, cfg["vocab_size"], params)

    @property
    def linear_params(self) -> int:
        """Weights used as matmuls for every token fed (all but the embedding / LM head)."""
        return self.layers * (self.hidden * self.heads * self.head_dim * 2
                              + self.hidden * self.kv_heads * self.head_dim * 2 + 3 * self.hidden * self.intermediate)

    def forward_flops(self, fed: int, logit_rows: int, attended: float) -> float:
        """Matmul FLOPs of one forward: linear layers, attention (scores + values), LM head rows.

        ``attended`` is the sum over fed tokens of the number of positions each attends to.
        """
        attention = 4 * self.layers * self.heads * self.head_dim * attended
        return 2 * self.linear_params * fed + attention + 2 * self.hidden * self.vocab * logit_rows

    def layer_matmuls(self, m: int) -> list[tuple[str, int, int, int]]:
        """``(name, M, K, N)`` of one decoder layer's linear maps for ``m`` tokens."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return [("q/o proj", m, self.hidden, q), ("k/v proj", m, self.hidden, kv),
                ("gate/up proj", m, self.hidden, self.intermediate), ("down proj", m, self.intermediate, self.hidden)]


# --- alternation ---------------------------------------------------------------------------


@dataclass
class Contender:
    """A named way to do the work: ``run(items) -> per-item outputs``; ``items`` picks its share."""

    name: str
    run: Callable[[list[Any]], Any]
    share: Callable[[list[Any]], list[Any]] = lambda chunk: chunk  # noqa: E731 - all of the chunk
    warm: Callable[[list[Any]], Any] | None = None  # untimed first call (default: ``run``)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[Any] = field(default_factory=list)
    items: list[Any] = field(default_factory=list)

    @property
    def wall_s(self) -> float:
        return sum(r["wall_s"] for r in self.rounds)

    @property
    def n(self) -> int:
        return sum(r["n"] for r in self.rounds)

    @property
    def s_per_item(self) -> float:
        return self.wall_s / self.n if self.n else math.nan


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``(result, wall seconds, process CPU seconds)``."""
    t0, c0 = time.perf_counter(), _cpu_s()
    out = fn()
    return out, time.perf_counter() - t0, _cpu_s() - c0


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def warm_up(contenders: Sequence[Contender], items: list[Any]) -> dict[str, float]:
    """One untimed call each (allocations, caches, lazy imports), before the timed rounds."""
    out = {}
    for c in contenders:
        _, wall, _ = timed(lambda: (c.warm or c.run)(items))  # noqa: B023 - called at once
        out[c.name] = round(wall, 2)
    return out


def alternate(contenders: Sequence[Contender], items: Sequence[Any], rounds: int, *, log: bool = True,
              checkpoint: str | None = None) -> None:
    """Split ``items`` into ``rounds`` slices; in each round run every contender on its share of the slice.

    The contenders' order rotates each round (A B C, B C A, C A B), so none always runs first
    after a pause or last when the machine gets busy. With ``checkpoint``, what has been measured
    so far is written to ``results/<checkpoint>.partial.json`` after every contender's turn, so a
    killed run still leaves its numbers (``write_result`` removes the file).
    """
    import torch

    slices = [list(items[r::rounds]) for r in range(rounds)]
    for r, chunk in enumerate(slices):
        order = [contenders[(r + j) % len(contenders)] for j in range(len(contenders))]
        for c in order:
            share = c.share(chunk)
            if not share:
                continue
            out, wall, cpu = timed(lambda: c.run(share))  # noqa: B023 - called at once
            c.outputs.extend(out)
            c.items.extend(share)
            busy = cpu / (wall * torch.get_num_threads()) if wall > 0 else math.nan
            c.rounds.append({"round": r + 1, "n": len(share), "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                             "cpu_busy": round(busy, 3), "load_average": round(os.getloadavg()[0], 2)})
            if log:
                print(f"  round {r + 1}: {c.name:<22} {len(share):>3} items  {wall:7.1f} s  "
                      f"({wall / len(share):.2f} s/item, cpu busy {busy:.0%})", flush=True)
            if checkpoint:
                RESULTS.mkdir(parents=True, exist_ok=True)
                partial = {x.name: {"rounds": x.rounds, "outputs": x.outputs} for x in contenders}
                (RESULTS / f"{checkpoint}.partial.json").write_text(json.dumps(partial, indent=1, default=str))


def ratio(fast: Contender, slow: Contender) -> dict[str, Any]:
    """Speed-up of ``fast`` over ``slow`` per item: pooled, and per round where both ran."""
    pooled = slow.s_per_item / fast.s_per_item
    by_round = {r["round"]: r["wall_s"] / r["n"] for r in fast.rounds}
    per_round = [round((s["wall_s"] / s["n"]) / by_round[s["round"]], 2) for s in slow.rounds if s["round"] in by_round]
    return {"speedup": round(pooled, 2), "per_round": per_round,
            "min_round": min(per_round) if per_round else None, "max_round": max(per_round) if per_round else None}


def contender_json(c: Contender, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"n": c.n, "wall_s": round(c.wall_s, 2), "s_per_item": round(c.s_per_item, 4),
            "items_per_s": round(1 / c.s_per_item, 4) if c.n else None, "rounds": c.rounds, **(extra or {})}


# --- output -------------------------------------------------------------------------------


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {**data, "load_average_at_end": list(os.getloadavg()),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    (RESULTS / f"{name}.partial.json").unlink(missing_ok=True)
    return path


def read_result(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def accuracy(golds: Sequence[Any], preds: Sequence[Any]) -> float | None:
    return round(sum(g == p for g, p in zip(golds, preds)) / len(golds), 4) if golds else None


def table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [header] + [[str(x) for x in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_readme_block(start: str, end: str, text: str, *, section: str | None = None) -> None:
    """Put ``text`` between the README's ``start`` and ``end`` markers. Where the markers are missing: with
    ``section`` (a heading and intro), insert that section holding them before "## Layout"; else stop, saying so."""
    readme = ROOT / "README.md"
    body = readme.read_text(encoding="utf-8")
    block = f"{start}\n{text}\n{end}"
    if start in body and end in body:
        body = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, body, flags=re.S)
    elif section is None:
        raise SystemExit(f"README.md has no {start} ... {end} markers")
    else:
        new = section + block + "\n\n"
        body = body.replace("## Layout", new + "## Layout", 1) if "## Layout" in body else body.rstrip() + "\n\n" + new
    readme.write_text(body, encoding="utf-8")
