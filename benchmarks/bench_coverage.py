"""Coverage of tunewise's 95% intervals, against the percentile bootstrap they replaced, in one run.

Nominal 95%: a method is honest when its interval holds the true value at least 95% of the time.

* **Accuracy** (any mean of 0/1 per-example scores: accuracy, exact_match, json_validity), n in {30, 100, 308,
  1000} and a true accuracy in {0.5, 0.9, 0.98}: tunewise's exact Clopper-Pearson interval
  (``stats.proportion_metric``), the percentile bootstrap tunewise used before (``stats.bootstrap_mean_ci``,
  2,000 resamples, seed 0, exactly what ``scoring`` called), and Wilson's interval (the other candidate). The
  coverage is computed exactly rather than sampled: the interval of every possible count k = 0..n (those with
  probability above 1e-12) is computed by the shipped function, and the coverage is the binomial probability of
  the counts whose interval holds the true accuracy - what a simulation with infinitely many replicates would
  measure, with no Monte Carlo error.
* **Best of m** (the ladder's and the decision's "with confidence"): m candidates, all truly at accuracy p, on
  the same number of test examples; the claim "the best candidate's accuracy is at least its lower bound" must
  hold with probability >= 97.5% (the lower end of a 95% interval). Exact, as above, for the maximum of m
  independent counts: the old percentile low, Clopper-Pearson's 95% low, and the Clopper-Pearson bound at
  one-sided 2.5% / m tunewise now uses (``stats.confident_bound``).
* **Macro-F1** (a statistic of the whole sample), simulated: classes with shares 40/25/15/12/8%, examples drawn
  independently, the classifier right with probability ``acc`` and otherwise a uniformly drawn wrong class; the
  true macro-F1 is the F1 of the expected confusion matrix. A second setup has BANKING77's test subset shape, 77
  classes with 4 test examples each. Each replicate draws a test set and computes tunewise's BCa interval
  (``stats.bca_metric`` with ``scoring.macro_f1_statistic``, 2,000 resamples) and the old percentile bootstrap
  (``stats.bootstrap_ci``'s resamples and percentiles, checked equal on each cell's first replicate); the coverage is the share of replicates whose interval holds the
  true value, with a 95% Wilson interval for that share.

Run: ``nice -n 10 python benchmarks/bench_coverage.py`` (about 5 minutes on 2 cores; ``--quick``: fewer
macro-F1 replicates). ``--table-only`` rewrites the README table (between ``<!-- coverage:start -->`` and
``<!-- coverage:end -->``) from ``benchmarks/results/coverage.json`` without running anything.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

from tunewise.evaluation.scoring import RESAMPLES, macro_f1_statistic  # noqa: E402
from tunewise.evaluation.stats import (  # noqa: E402
    LOWER_ALPHA,
    _index_chunks,
    _percentile_interval,
    bca_metric,
    bootstrap_ci,
    bootstrap_mean_ci,
    proportion_lower_bound,
    proportion_metric,
)

SIZES = (30, 100, 308, 1000)
RATES = (0.5, 0.9, 0.98)
TAIL = 1e-12  # counts less likely than this at both ends are left out of the exact sums
BEST_OF = ((100, 0.9), (308, 0.9), (308, 0.98))
CANDIDATES = (1, 3, 8)
SHARES = (0.40, 0.25, 0.15, 0.12, 0.08)
MACRO_SIZES = (30, 100, 308)
START, END = "<!-- coverage:start -->", "<!-- coverage:end -->"
OLD_SEED = 0  # the task seed scoring passed to the bootstrap (tasks default to 0)


# --- accuracy: exact coverage over every count ----------------------------------------------------


def wilson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    z = scipy_stats.norm.ppf(1 - alpha / 2)
    p, d = k / n, 1 + z * z / n
    centre, half = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return centre - half, centre + half


def counts(n: int, p: float) -> np.ndarray:
    """The counts k with any real chance at true accuracy p (the binomial's 1e-12 tails left out)."""
    return np.arange(int(scipy_stats.binom.ppf(TAIL, n, p)), int(scipy_stats.binom.isf(TAIL, n, p)) + 1)


def intervals(n: int, ks: np.ndarray) -> dict[str, np.ndarray]:
    """(low, high) of each method for each count k: the shipped functions on a 0/1 vector with k ones."""
    out: dict[str, list[tuple[float, float]]] = {"clopper_pearson": [], "percentile_bootstrap": [], "wilson": []}
    for k in ks:
        v = np.r_[np.ones(int(k)), np.zeros(n - int(k))]
        m = proportion_metric(v)
        out["clopper_pearson"].append((m.low, m.high))
        out["percentile_bootstrap"].append(bootstrap_mean_ci(v, resamples=RESAMPLES, seed=OLD_SEED))
        out["wilson"].append(wilson(int(k), n))
    return {name: np.array(rows) for name, rows in out.items()}


def accuracy_cell(n: int, p: float) -> dict[str, Any]:
    ks = counts(n, p)
    weight = scipy_stats.binom.pmf(ks, n, p)
    found = intervals(n, ks)
    row: dict[str, Any] = {"n": n, "accuracy": p, "counts": [int(ks[0]), int(ks[-1])], "mass": float(weight.sum())}
    for name, iv in found.items():
        holds = (iv[:, 0] <= p) & (p <= iv[:, 1])
        row[name] = {"coverage": float(weight[holds].sum()), "low_holds": float(weight[iv[:, 0] <= p].sum()),
                     "mean_width": float((weight * (iv[:, 1] - iv[:, 0])).sum() / weight.sum())}
    return row


def best_of_cell(n: int, p: float, m: int) -> dict[str, Any]:
    """P(the best of m candidates at p has a lower bound <= p): exact over the maximum of m counts."""
    ks = counts(n, p)
    cdf = scipy_stats.binom.cdf(ks, n, p)
    below = scipy_stats.binom.cdf(ks - 1, n, p)
    weight = cdf**m - below**m  # P(max of m counts == k)
    lows = {
        "percentile_bootstrap": np.array([bootstrap_mean_ci(np.r_[np.ones(int(k)), np.zeros(n - int(k))],
                                                            resamples=RESAMPLES, seed=OLD_SEED)[0] for k in ks]),
        "clopper_pearson": np.array([proportion_metric(np.r_[np.ones(int(k)), np.zeros(n - int(k))]).low for k in ks]),
        "adjusted": np.array([proportion_lower_bound(int(k), n, LOWER_ALPHA / m) for k in ks]),
    }
    return {"n": n, "accuracy": p, "candidates": m,
            **{name: float(weight[low <= p].sum()) for name, low in lows.items()}}


# --- macro-F1: simulated -------------------------------------------------------------------------


def true_macro_f1(shares: np.ndarray, acc: float) -> float:
    """F1 of the expected confusion matrix (the limit of the sample macro-F1): errors go to the other classes evenly."""
    c = len(shares)
    predicted = shares * acc + (shares.sum() - shares) * (1 - acc) / (c - 1)
    return float(np.mean(2 * shares * acc / (shares + predicted)))


def share_ci(hits: int, reps: int) -> list[float]:
    ci = scipy_stats.binomtest(hits, reps).proportion_ci(method="wilson")
    return [float(ci.low), float(ci.high)]


def percentile_interval(stat: Any, n: int, seed: int) -> tuple[float, float]:
    """``stats.bootstrap_ci`` (the old percentile interval) with the statistic scored a chunk of resamples at a time."""
    boot = np.concatenate([stat(chunk) for chunk in _index_chunks(n, RESAMPLES, seed)])
    return _percentile_interval(boot, 0.05)


def macro_cell(shares: tuple[float, ...], n: int, acc: float, reps: int, seed: int, *, per_class: int | None = None,
               setup: str) -> dict[str, Any]:
    share = np.asarray(shares, dtype=float)
    c = len(share)
    truth = true_macro_f1(share, acc)
    rng = np.random.default_rng([seed, n, round(1000 * acc), c])
    labels = list(range(c))
    hits = {"bca": 0, "percentile_bootstrap": 0}
    widths: dict[str, list[float]] = {"bca": [], "percentile_bootstrap": []}
    estimates = []
    for r in range(reps):
        golds = np.repeat(np.arange(c), per_class) if per_class else rng.choice(c, size=n, p=share)
        wrong = (golds + rng.integers(1, c, size=n)) % c
        preds = np.where(rng.random(n) < acc, golds, wrong)
        stat = macro_f1_statistic(golds.tolist(), preds.tolist(), labels)
        new = bca_metric(stat, n, resamples=RESAMPLES, seed=r)
        estimates.append(new.value)
        old = percentile_interval(stat, n, r)
        if r == 0:  # the batched percentile interval is the old bootstrap_ci's, resample for resample
            assert np.allclose(old, bootstrap_ci(lambda idx, s=stat: float(s(idx)[0]), n, resamples=RESAMPLES, seed=r))
        for name, (low, high) in (("bca", (new.low, new.high)), ("percentile_bootstrap", old)):
            hits[name] += low <= truth <= high
            widths[name].append(high - low)
    return {"setup": setup, "n": n, "accuracy": acc, "true_macro_f1": truth, "replicates": reps,
            "mean_estimate": float(np.mean(estimates)),
            **{name: {"coverage": hits[name] / reps, "coverage_ci": share_ci(hits[name], reps),
                      "mean_width": float(np.mean(widths[name]))} for name in hits}}


# --- the README table ----------------------------------------------------------------------------


def _p(x: float) -> str:
    return f"{100 * x:.1f}%"


def table(res: dict[str, Any]) -> str:
    env = res["environment"]
    lines = [
        f"Measured {env['date'][:10]} by `benchmarks/bench_coverage.py` (results in `benchmarks/results/coverage.json`, "
        f"{res['wall_s'] / 60:.1f} min on {env['cpu']['logical_cores']} cores). Nominal 95%; accuracy coverage is "
        "exact (every count k weighted by its binomial probability), the old interval is the percentile bootstrap "
        "tunewise used before (2,000 resamples), Wilson's is shown because it was the other candidate.",
        "",
        "| accuracy interval | n = " + " | ".join(str(n) for n in SIZES) + " |",
        "|---|" + "---|" * len(SIZES),
    ]
    cells = {(c["n"], c["accuracy"]): c for c in res["accuracy"]}
    for p in RATES:
        for name, label in (("clopper_pearson", "**Clopper-Pearson (tunewise)**"),
                            ("percentile_bootstrap", "percentile bootstrap (before)"), ("wilson", "Wilson")):
            row = [_p(cells[(n, p)][name]["coverage"]) if (n, p) in cells else "-" for n in SIZES]
            if name == "clopper_pearson":
                row = [f"**{x}**" for x in row]
            lines.append(f"| {label}, true accuracy {p:g} | " + " | ".join(row) + " |")
    lines += ["", "\"With confidence\" after picking the best of m candidates that are all truly at accuracy p: how "
              "often the best one's lower bound is at or below its true accuracy (must be >= 97.5%):", "",
              "| n, p | m | percentile low (before) | Clopper-Pearson 95% low | **bound at one-sided 2.5% / m (tunewise)** |",
              "|---|---|---|---|---|"]
    for c in res["best_of"]:
        lines.append(f"| {c['n']}, {c['accuracy']:g} | {c['candidates']} | {_p(c['percentile_bootstrap'])} | "
                     f"{_p(c['clopper_pearson'])} | **{_p(c['adjusted'])}** |")
    lines += ["", "Macro-F1, simulated (replicates per cell in the last column; the share's 95% Wilson interval in "
              "brackets):", "",
              "| setup | n | true accuracy (macro-F1) | mean sample macro-F1 | **BCa (tunewise)** | percentile bootstrap "
              "(before) | replicates |",
              "|---|---|---|---|---|---|---|"]
    for c in res["macro_f1"]:
        new, old = c["bca"], c["percentile_bootstrap"]
        lines.append(f"| {c['setup']} | {c['n']} | {c['accuracy']:g} ({c['true_macro_f1']:.3f}) | {c['mean_estimate']:.3f} | "
                     f"**{_p(new['coverage'])}** [{_p(new['coverage_ci'][0])}, {_p(new['coverage_ci'][1])}] | "
                     f"{_p(old['coverage'])} [{_p(old['coverage_ci'][0])}, {_p(old['coverage_ci'][1])}] | "
                     f"{c['replicates']} |")
    return "\n".join(lines)


def write_readme(text: str) -> None:
    C.write_readme_block(START, END, text)


# --- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=500, help="macro-F1 replicates per cell (default 500)")
    p.add_argument("--quick", action="store_true", help="100 macro-F1 replicates per cell")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="coverage", help="results file name (benchmarks/results/<out>.json)")
    p.add_argument("--table-only", action="store_true", help="only rewrite the README table from results/")
    p.add_argument("--no-readme", action="store_true", help="do not touch README.md")
    return p.parse_args(argv)


def environment() -> dict[str, Any]:
    import datetime as dt
    import os

    versions = {"python": sys.version.split()[0]}
    for pkg in ("tunewise", "numpy", "scipy"):
        versions[pkg] = metadata.version(pkg)
    return {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "cpu": C.cpu_info(),
            "load_average_at_start": list(os.getloadavg()), "versions": versions,
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.table_only:
        res = C.read_result(args.out)
        if res is None:
            raise SystemExit(f"no benchmarks/results/{args.out}.json: run the benchmark first")
        write_readme(table(res))
        return res
    reps = min(args.reps, 100) if args.quick else args.reps
    start = time.perf_counter()
    res: dict[str, Any] = {"benchmark": "coverage", "environment": environment(),
                           "settings": {"resamples": RESAMPLES, "old_seed": OLD_SEED, "tail": TAIL,
                                        "macro_replicates": reps, "seed": args.seed, "shares": SHARES}}
    res["accuracy"] = []
    for n in SIZES:
        for p in RATES:
            t = time.perf_counter()
            cell = accuracy_cell(n, p)
            res["accuracy"].append(cell)
            print(f"accuracy n={n:>4} p={p:<4}  Clopper-Pearson {_p(cell['clopper_pearson']['coverage']):>6}  "
                  f"percentile {_p(cell['percentile_bootstrap']['coverage']):>6}  "
                  f"Wilson {_p(cell['wilson']['coverage']):>6}  ({time.perf_counter() - t:.1f} s)", flush=True)
    res["best_of"] = []
    for n, p in BEST_OF:
        for m in CANDIDATES:
            cell = best_of_cell(n, p, m)
            res["best_of"].append(cell)
            print(f"best of {m} n={n} p={p}: percentile low holds {_p(cell['percentile_bootstrap'])}, "
                  f"Clopper-Pearson {_p(cell['clopper_pearson'])}, adjusted {_p(cell['adjusted'])}", flush=True)
    res["macro_f1"] = []
    setups = [(f"5 classes, shares {'/'.join(f'{100 * s:.0f}' for s in SHARES)}%", SHARES, n, None)
              for n in MACRO_SIZES] + [("77 classes x 4 examples", tuple([1 / 77] * 77), 308, 4)]
    for setup, shares, n, per_class in setups:
        for acc in RATES:
            t = time.perf_counter()
            cell = macro_cell(shares, n, acc, reps, args.seed, per_class=per_class, setup=setup)
            res["macro_f1"].append(cell)
            print(f"macro-F1 {setup}, n={n}, acc={acc}: BCa {_p(cell['bca']['coverage'])}, percentile "
                  f"{_p(cell['percentile_bootstrap']['coverage'])} ({time.perf_counter() - t:.0f} s)", flush=True)
    res["wall_s"] = round(time.perf_counter() - start, 1)
    path = C.write_result(args.out, res)
    print(f"\n{table(res)}\n\nwrote {path} in {res['wall_s'] / 60:.1f} min", flush=True)
    if not args.no_readme:
        write_readme(table(res))
    return res


if __name__ == "__main__":
    main()
