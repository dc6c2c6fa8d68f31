"""Drift and degradation checks for a deployed candidate: pure functions from values to verdicts.

Each check compares a window of served requests with what the candidate saw when it was
evaluated (the frozen test split, and the deployed rung's predictions on it) and returns a
:class:`Check`: statistic, p-value, threshold, ``drifted`` and one sentence of numbers.

* :func:`input_drift` - sentence embeddings: squared MMD with a Gaussian kernel, bandwidth by the
  median heuristic, p-value by permuting which rows are "reference" and "current".
* :func:`length_shift` - words per request: two-sample Kolmogorov-Smirnov.
* :func:`oov_shift` - share of each request's words never seen in training, current above
  reference (one-sided permutation test of the mean).
* :func:`vocabulary_shift` - Jensen-Shannon divergence of the two word distributions.
* :func:`prediction_shift` - predicted label counts: G statistic of the 2 x K table.
* :func:`confidence_drop` - one-sided Mann-Whitney: are confidences lower now?
* :func:`accuracy_drop` - accuracy on feedback labels below the evaluated accuracy: exact one-sided
  binomial test, or Fisher's exact test when the evaluation's sample size is given (it carries its
  own noise), with a Wilson interval.
* :func:`holm` and :func:`summarize` - family-wise control across the checks and one verdict.

Why permutations: the independent unit is a request, not a word or a label slot, so the word and
label tests permute whole requests; that keeps them valid for any vocabulary size or label count
(no "expected count >= 5" caveat; a label seen once is no problem, so no smoothing is needed for
validity). Every random choice takes an explicit seed.

Out of scope: comparing A/B arms (``arms.py``), reading the request log and the reference data
(``monitor.py``) and printing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from scipy import sparse
from scipy import stats as _scipy_stats

from ..formats import pct

__all__ = [
    "Check", "Verdict", "words",
    "input_drift", "length_shift", "oov_shift", "vocabulary_shift", "prediction_shift", "confidence_drop",
    "accuracy_drop", "holm", "summarize", "DEGRADATION_CHECKS",
]

#: checks whose alarm means the candidate got worse, not that its inputs moved
DEGRADATION_CHECKS = ("confidence", "accuracy")
_WORD = re.compile(r"\w+", re.UNICODE)
# permutations are scored in blocks of this many rows so memory stays flat for long windows
_BLOCK = 250


def words(text: str) -> list[str]:
    """Lower-cased word tokens (``\\w+``): what the length and vocabulary checks count."""
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class Check:
    """One check's outcome. ``drifted`` compares ``p_adjusted`` (after :func:`holm`) else ``p_value`` with ``threshold``.

    ``finding`` states the numbers without a verdict; :attr:`explanation` adds the verdict.
    ``skipped`` says why a check did not run (then ``p_value`` is NaN and ``drifted`` False).
    """

    name: str
    title: str
    test: str
    statistic: float
    p_value: float
    threshold: float
    drifted: bool
    finding: str
    n_reference: int
    n_current: int
    effect: dict[str, Any] = field(default_factory=dict)
    p_adjusted: float | None = None
    skipped: str | None = None

    @property
    def explanation(self) -> str:
        if self.skipped:
            return f"{self.title}: not checked, {self.skipped}."
        p = self.p_value if self.p_adjusted is None else self.p_adjusted
        which = "p" if self.p_adjusted is None else "Holm-adjusted p"
        verdict = "shifted" if self.drifted else "no significant change"
        return f"{self.title}: {verdict} ({which} {_p(p)}); {self.finding}."

    def to_json(self) -> dict[str, Any]:
        return _clean({**asdict(self), "explanation": self.explanation})


@dataclass(frozen=True)
class Verdict:
    """``status``: ``drift`` (some check fired), ``ok``, or ``not enough traffic`` (no check could run)."""

    status: str
    headline: str
    drifted: tuple[str, ...]
    checks: tuple[Check, ...]
    alpha: float
    correction: str = "Holm"

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "headline": self.headline, "drifted": list(self.drifted), "alpha": self.alpha,
                "correction": self.correction, "checks": [c.to_json() for c in self.checks]}


# --------------------------------------------------------------------------- helpers


def _clean(obj: Any) -> Any:
    """JSON has no NaN or infinity: null instead."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _p(p: float) -> str:
    """``= 0.042`` or ``< 0.001``: what follows "p"."""
    return "= n/a" if math.isnan(p) else ("< 0.001" if p < 0.001 else f"= {p:.3f}")


def _pct(x: float) -> str:
    return pct(x, unit="%")


def _skipped(name: str, title: str, test: str, reason: str, *, alpha: float, n_reference: int,
             n_current: int) -> Check:
    return Check(name=name, title=title, test=test, statistic=math.nan, p_value=math.nan, threshold=alpha,
                 drifted=False, finding="", n_reference=n_reference, n_current=n_current, skipped=reason)


def _too_few(n_reference: int, n_current: int, min_current: int, *, what: str = "requests") -> str | None:
    if n_current < min_current:
        return f"not enough traffic yet ({n_current} of {min_current} {what} needed)"
    if n_reference < 2:
        return f"the reference has only {n_reference} examples"
    return None


def _membership_blocks(n_ref: int, n_cur: int, permutations: int, seed: int) -> Iterator[np.ndarray]:
    """Boolean rows (True = "reference") with ``n_ref`` Trues, randomly placed; ``permutations`` rows in all."""
    rng = np.random.default_rng(seed)
    base = np.concatenate([np.ones(n_ref, dtype=bool), np.zeros(n_cur, dtype=bool)])
    for start in range(0, permutations, _BLOCK):
        yield rng.permuted(np.tile(base, (min(_BLOCK, permutations - start), 1)), axis=1)


def _perm_p(observed: float, null: np.ndarray) -> float:
    """Permutation p-value with the observed arrangement counted (never 0, valid at any size)."""
    return float((1 + np.sum(null >= observed - 1e-12)) / (1 + null.size))


def _subsample(x: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    return x if len(x) <= cap else x[np.sort(rng.choice(len(x), size=cap, replace=False))]


# --------------------------------------------------------------------------- input checks


def input_drift(reference: np.ndarray, current: np.ndarray, *, alpha: float = 0.05, permutations: int = 1000,
                seed: int = 0, min_current: int = 30, max_samples: int = 1000) -> Check:
    """Sentence-embedding shift: biased squared MMD, Gaussian kernel, median-heuristic bandwidth, permutation p.

    Rows are embeddings (n x d). Each side is capped at ``max_samples`` rows (a seeded random
    subset) so the kernel matrix stays small. The kernel is computed once; each permutation
    is a quadratic form ``w K w`` with a permuted weight vector (1/n for "reference", -1/m else).
    """
    test = f"MMD, Gaussian kernel (median bandwidth), {permutations} permutations"
    x, y = np.asarray(reference, dtype=np.float64), np.asarray(current, dtype=np.float64)
    reason = _too_few(len(x), len(y), min_current)
    if reason:
        return _skipped("input_embeddings", "input embeddings", test, reason, alpha=alpha, n_reference=len(x),
                        n_current=len(y))
    rng = np.random.default_rng(seed)
    x, y = _subsample(x, max_samples, rng), _subsample(y, max_samples, rng)
    z = np.vstack([x, y])
    sq = np.einsum("ij,ij->i", z, z)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (z @ z.T), 0.0)  # (N, N) squared distances
    bandwidth = float(np.median(d2[np.triu_indices(len(z), k=1)])) or 1.0
    kernel = np.exp(-d2 / bandwidth)
    n, m = len(x), len(y)

    def mmd2(ref_rows: np.ndarray) -> np.ndarray:  # (P, N) bool -> (P,) biased MMD^2
        w = np.where(ref_rows, 1.0 / n, -1.0 / m)
        return np.einsum("pi,pi->p", w @ kernel, w)

    observed = float(mmd2(np.concatenate([np.ones(n, bool), np.zeros(m, bool)])[None, :])[0])
    null = np.concatenate([mmd2(b) for b in _membership_blocks(n, m, permutations, seed + 1)])
    p = _perm_p(observed, null)
    finding = (f"MMD^2 = {observed:.4f} against {float(np.percentile(null, 95)):.4f} at the 95th percentile "
               f"of same-distribution shuffles ({m} requests vs {n} test inputs)")
    return Check("input_embeddings", "input embeddings", test, observed, p, alpha, p < alpha, finding, n, m,
                 effect={"mmd2": observed, "null_p95": float(np.percentile(null, 95)), "bandwidth": bandwidth})


def length_shift(reference: Sequence[float], current: Sequence[float], *, alpha: float = 0.05,
                 min_current: int = 30) -> Check:
    """Words per request: two-sided two-sample Kolmogorov-Smirnov (conservative with tied counts)."""
    test = "two-sample Kolmogorov-Smirnov"
    x, y = np.asarray(reference, dtype=float), np.asarray(current, dtype=float)
    reason = _too_few(len(x), len(y), min_current)
    if reason:
        return _skipped("length", "request length", test, reason, alpha=alpha, n_reference=len(x), n_current=len(y))
    res = _scipy_stats.ks_2samp(x, y)
    mx, my = float(np.median(x)), float(np.median(y))
    finding = (f"median {my:g} words now vs {mx:g} in the test split (mean {y.mean():.1f} vs {x.mean():.1f}), "
               f"KS D = {res.statistic:.2f}")
    return Check("length", "request length", test, float(res.statistic), float(res.pvalue), alpha,
                 bool(res.pvalue < alpha), finding, len(x), len(y),
                 effect={"median_reference": mx, "median_current": my, "mean_reference": float(x.mean()),
                         "mean_current": float(y.mean())})


def _oov_fractions(texts: Sequence[Sequence[str]], vocabulary: Collection[str]) -> tuple[np.ndarray, int, int]:
    """Per-request share of words outside ``vocabulary``, and (unseen words, words) pooled."""
    fractions, unseen, total = [], 0, 0
    for toks in texts:
        k = sum(t not in vocabulary for t in toks)
        fractions.append(k / len(toks) if toks else 0.0)
        unseen, total = unseen + k, total + len(toks)
    return np.asarray(fractions, dtype=float), unseen, total


def oov_shift(reference: Sequence[Sequence[str]], current: Sequence[Sequence[str]], *,
              vocabulary: Collection[str], alpha: float = 0.05, permutations: int = 1000, seed: int = 0,
              min_current: int = 30) -> Check:
    """Out-of-vocabulary rate against the training vocabulary, now above the test split's.

    ``reference`` and ``current`` are word lists per request; ``vocabulary`` the training words.
    Held-out test inputs already have some unseen words, so the test split's rate is the baseline,
    not zero. One-sided permutation test of the mean per-request share (requests are the unit).
    """
    test = f"one-sided permutation test of the mean per-request unseen-word share, {permutations} permutations"
    reason = _too_few(len(reference), len(current), min_current)
    if reason:
        return _skipped("oov", "unseen words", test, reason, alpha=alpha, n_reference=len(reference),
                        n_current=len(current))
    vocab = vocabulary if isinstance(vocabulary, (set, frozenset, dict)) else set(vocabulary)
    fx, ux, tx = _oov_fractions(reference, vocab)
    fy, uy, ty = _oov_fractions(current, vocab)
    values, n, m = np.concatenate([fx, fy]), len(fx), len(fy)
    observed = float(fy.mean() - fx.mean())
    null = np.concatenate([(~b).astype(float) @ values / m - b.astype(float) @ values / n
                           for b in _membership_blocks(n, m, permutations, seed)])
    p = _perm_p(observed, null)
    rx, ry = (ux / tx if tx else 0.0), (uy / ty if ty else 0.0)
    finding = f"{_pct(ry)} of words never seen in training now vs {_pct(rx)} in the test split"
    return Check("oov", "unseen words", test, observed, p, alpha, p < alpha, finding, n, m,
                 effect={"oov_rate_reference": rx, "oov_rate_current": ry})


def _count_matrix(texts: Sequence[Sequence[str]], index: dict[str, int]) -> sparse.csr_matrix:
    rows, cols = [], []
    for i, toks in enumerate(texts):
        for t in toks:
            rows.append(i)
            cols.append(index.setdefault(t, len(index)))
    data = np.ones(len(rows), dtype=np.float64)
    return sparse.csr_matrix((data, (rows, cols)), shape=(len(texts), max(len(index), 1)))


def _jsd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence (bits) between columns of two count matrices (V, P)."""
    p = a / np.maximum(a.sum(axis=0, keepdims=True), 1e-12)
    q = b / np.maximum(b.sum(axis=0, keepdims=True), 1e-12)
    mid = (p + q) / 2

    def kl(u: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(u > 0, u * np.log2(u / np.where(mid > 0, mid, 1.0)), 0.0).sum(axis=0)

    return (kl(p) + kl(q)) / 2


def vocabulary_shift(reference: Sequence[Sequence[str]], current: Sequence[Sequence[str]], *,
                     alpha: float = 0.05, permutations: int = 1000, seed: int = 0, min_current: int = 30) -> Check:
    """Word-frequency shift: Jensen-Shannon divergence of the pooled word distributions, permuting requests.

    The divergence of two finite samples is positive even from one distribution; the permutation
    null has the same sample sizes, so that bias cancels.
    """
    test = f"Jensen-Shannon divergence of word frequencies, {permutations} permutations of requests"
    reason = _too_few(len(reference), len(current), min_current)
    if reason:
        return _skipped("vocabulary", "word frequencies", test, reason, alpha=alpha, n_reference=len(reference),
                        n_current=len(current))
    index: dict[str, int] = {}
    counts = _count_matrix([*reference, *current], index)  # (N, V)
    n, m = len(reference), len(current)
    total = np.asarray(counts.sum(axis=0)).ravel()[:, None]  # (V, 1)

    def jsd(ref_rows: np.ndarray) -> np.ndarray:  # (P, N) bool -> (P,)
        ref = np.asarray(counts.T @ ref_rows.T.astype(np.float64))  # (V, P)
        return _jsd(ref, total - ref)

    is_ref = np.concatenate([np.ones(n, bool), np.zeros(m, bool)])
    observed = float(jsd(is_ref[None, :])[0])
    null = np.concatenate([jsd(b) for b in _membership_blocks(n, m, permutations, seed)])
    p = _perm_p(observed, null)
    ref_counts = np.asarray(counts[:n].sum(axis=0)).ravel()
    cur_counts = np.asarray(counts[n:].sum(axis=0)).ravel()
    vocab = np.array(sorted(index, key=index.get))
    lift = (cur_counts + 0.5) / (cur_counts.sum() + 0.5) / ((ref_counts + 0.5) / (ref_counts.sum() + 0.5))
    top = [str(w) for w in vocab[np.argsort(-lift * (cur_counts >= 2))][:3]]
    finding = (f"JSD = {observed:.3f} bits vs {float(np.percentile(null, 95)):.3f} at the 95th percentile of "
               f"shuffles; most over-represented words now: {', '.join(top)}")
    return Check("vocabulary", "word frequencies", test, observed, p, alpha, p < alpha, finding, n, m,
                 effect={"jsd_bits": observed, "null_p95": float(np.percentile(null, 95)), "rising_words": top})


# --------------------------------------------------------------------------- output checks


def prediction_shift(reference: Sequence[str], current: Sequence[str], *, alpha: float = 0.05,
                     permutations: int = 1000, seed: int = 0, min_current: int = 30) -> Check:
    """Predicted-label distribution vs the evaluation's: G statistic of the 2 x K table, permutation p.

    A homogeneity test, not goodness of fit: the evaluation's label shares are themselves a sample
    (with 77 labels and 308 test inputs, about 4 per label), so treating them as exact would fire
    on noise. Labels predicted only now, or only then, count like any other.
    """
    test = f"G-test of predicted label counts, {permutations} permutations"
    reason = _too_few(len(reference), len(current), min_current)
    if reason:
        return _skipped("predictions", "predicted labels", test, reason, alpha=alpha, n_reference=len(reference),
                        n_current=len(current))
    labels = sorted({str(v) for v in [*reference, *current]})
    code = {label: i for i, label in enumerate(labels)}
    codes = np.array([code[str(v)] for v in [*reference, *current]])
    n, m, k = len(reference), len(current), len(labels)
    pooled = np.bincount(codes, minlength=k).astype(float)

    def g(ref_rows: np.ndarray) -> np.ndarray:  # (P, N) bool -> (P,)
        ref = np.stack([np.bincount(codes[r], minlength=k) for r in ref_rows]).astype(float)  # (P, K)
        cur = pooled - ref
        out = np.zeros(len(ref_rows))
        for obs, size in ((ref, n), (cur, m)):
            exp = pooled * size / (n + m)
            with np.errstate(divide="ignore", invalid="ignore"):
                out += np.where(obs > 0, obs * np.log(obs / exp), 0.0).sum(axis=1)
        return 2 * out

    is_ref = np.concatenate([np.ones(n, bool), np.zeros(m, bool)])
    observed = float(g(is_ref[None, :])[0])
    null = np.concatenate([g(b) for b in _membership_blocks(n, m, permutations, seed)])
    p = _perm_p(observed, null)
    ref_share = np.bincount(codes[:n], minlength=k) / n
    cur_share = np.bincount(codes[n:], minlength=k) / m
    j = int(np.argmax(np.abs(cur_share - ref_share)))
    finding = (f"largest change: '{labels[j]}' is {_pct(cur_share[j])} of predictions now vs {_pct(ref_share[j])} "
               f"in the evaluation (G = {observed:.1f}, {k} labels)")
    return Check("predictions", "predicted labels", test, observed, p, alpha, p < alpha, finding, n, m,
                 effect={"label": labels[j], "share_reference": float(ref_share[j]),
                         "share_current": float(cur_share[j]), "labels": k})


def confidence_drop(reference: Sequence[float], current: Sequence[float], *, alpha: float = 0.05,
                    min_current: int = 30) -> Check:
    """Confidences lower now than in the evaluation: one-sided Mann-Whitney U (current < reference).

    The statistic is the probability that a current confidence exceeds a reference one (ties
    half): 0.5 means no change, below 0.5 means falling confidence.
    """
    test = "one-sided Mann-Whitney U"
    x, y = np.asarray(reference, dtype=float), np.asarray(current, dtype=float)
    reason = _too_few(len(x), len(y), min_current, what="requests with a confidence")
    if reason:
        return _skipped("confidence", "confidence", test, reason, alpha=alpha, n_reference=len(x), n_current=len(y))
    res = _scipy_stats.mannwhitneyu(y, x, alternative="less")
    auc = float(res.statistic) / (len(x) * len(y))
    mx, my = float(np.median(x)), float(np.median(y))
    finding = f"median confidence {my:.2f} now vs {mx:.2f} in the evaluation (P(now > then) = {auc:.2f})"
    return Check("confidence", "confidence", test, auc, float(res.pvalue), alpha, bool(res.pvalue < alpha),
                 finding, len(x), len(y), effect={"median_reference": mx, "median_current": my})


def _wilson(k: int, n: int, alpha: float) -> tuple[float, float]:
    if n == 0:
        return math.nan, math.nan
    ci = _scipy_stats.binomtest(k, n).proportion_ci(confidence_level=1 - alpha, method="wilson")
    return float(ci.low), float(ci.high)


def accuracy_drop(correct: int, n: int, *, expected: float, expected_n: int | None = None, alpha: float = 0.05,
                  min_current: int = 20) -> Check:
    """Accuracy on ``n`` feedback labels (``correct`` right) below the evaluated accuracy ``expected``.

    Without ``expected_n``: exact one-sided binomial test against ``expected`` as a fixed value.
    With it (the evaluation's test-set size): one-sided Fisher exact test of the two samples, so an
    evaluation that was lucky on a small test split does not raise false alarms. The interval is a
    Wilson score interval at 1 - ``alpha``. Feedback is rarely a random sample of traffic (people
    report errors more than successes); read a drop as a prompt to label a random sample.
    """
    kind = "exact one-sided binomial" if expected_n is None else "one-sided Fisher exact (feedback vs evaluation)"
    reason = _too_few(max(expected_n or 2, 2), n, min_current, what="feedback labels")
    if reason:
        return _skipped("accuracy", "accuracy on feedback", kind, reason, alpha=alpha,
                        n_reference=expected_n or 0, n_current=n)
    if expected_n is None:
        p = float(_scipy_stats.binomtest(correct, n, expected, alternative="less").pvalue)
    else:
        ref_correct = int(round(expected * expected_n))
        table = [[correct, n - correct], [ref_correct, expected_n - ref_correct]]
        p = float(_scipy_stats.fisher_exact(table, alternative="less").pvalue)
    acc = correct / n
    low, high = _wilson(correct, n, alpha)
    finding = (f"{_pct(acc)} [{_pct(low)}, {_pct(high)}] on {n} feedback labels vs {_pct(expected)} evaluated"
               + (f" on {expected_n} test examples" if expected_n else ""))
    return Check("accuracy", "accuracy on feedback", kind, acc, p, alpha, p < alpha, finding, expected_n or 0, n,
                 effect={"accuracy": acc, "low": low, "high": high, "expected": expected})


# --------------------------------------------------------------------------- family-wise verdict


def holm(checks: Sequence[Check], *, alpha: float = 0.05) -> tuple[Check, ...]:
    """Holm's step-down correction over the checks that ran; returns them (same order) with
    ``p_adjusted`` set and ``drifted`` re-decided at family-wise error rate ``alpha``."""
    ran = [i for i, c in enumerate(checks) if c.skipped is None and not math.isnan(c.p_value)]
    order = sorted(ran, key=lambda i: checks[i].p_value)
    adjusted: dict[int, float] = {}
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * checks[i].p_value))
        adjusted[i] = running
    return tuple(replace(c, p_adjusted=adjusted[i], threshold=alpha, drifted=adjusted[i] < alpha)
                 if i in adjusted else replace(c, threshold=alpha) for i, c in enumerate(checks))


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def summarize(checks: Sequence[Check], *, n_requests: int, window: str = "", alpha: float = 0.05) -> Verdict:
    """Holm-correct the checks and say in one sentence what changed, or that nothing did.

    ``window`` completes "in N requests ..." (e.g. "since 2024-05-01 12:00 UTC").
    """
    adjusted = holm(checks, alpha=alpha)
    ran = [c for c in adjusted if c.skipped is None]
    where = f"{n_requests} requests" + (f" {window}" if window else "")
    if not ran:
        first = next((c.skipped for c in adjusted if c.skipped), "no checks given")
        return Verdict("not enough traffic", f"Not checked yet: {first} ({where}).", (), adjusted, alpha)
    fired = [c for c in adjusted if c.drifted]
    skipped = len(adjusted) - len(ran)
    tally = f"{len(ran)} checks, Holm-corrected at {alpha:g}" + (f"; {skipped} not run" if skipped else "")
    if not fired:
        return Verdict("ok", f"No drift or degradation detected in {where} ({tally}).", (), adjusted, alpha)
    drift = [c.title for c in fired if c.name not in DEGRADATION_CHECKS]
    worse = [c.title for c in fired if c.name in DEGRADATION_CHECKS]
    parts = ([f"drift detected in {_join(drift)}"] if drift else []) + (
        [f"degradation detected in {_join(worse)}"] if worse else [])
    head = "; ".join(parts)
    return Verdict("drift", f"{head[0].upper()}{head[1:]} over {where} ({tally}).", tuple(c.name for c in fired),
                   adjusted, alpha)

