"""Data checks (pure): duplicates, train/test leakage (exact and near), labels, imbalance, volume."""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Sequence

from .examples import DataChecks, Example, Splits
from .reading import shown

FEW_PER_LABEL = 5
HEAVY_IMBALANCE = 10.0
PROMPTING_BELOW = 100
FINETUNING_ABOVE = 1_000


# --------------------------------------------------------------------------- checks (pure)

_PUNCTUATION = re.compile(r"[^\w\s]|_")
_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Lowercase, strip punctuation, collapse whitespace: the key for exact leakage."""
    return _SPACES.sub(" ", _PUNCTUATION.sub(" ", text.lower())).strip()


def _trigrams(norm: str) -> set[str]:
    padded = f" {norm} "
    return {padded[i : i + 3] for i in range(len(padded) - 2)}


def _trigram_columns(
    texts: list[str], vocab: dict[str, int], *, grow: bool
) -> tuple[list[list[int]], list[int]]:
    """Each text's trigram columns (only those in ``vocab`` unless ``grow``) and its trigram-set size."""
    columns, sizes = [], []
    for text in texts:
        grams = _trigrams(text)
        sizes.append(len(grams))
        if grow:
            columns.append([vocab.setdefault(g, len(vocab)) for g in grams])
        else:
            columns.append([vocab[g] for g in grams if g in vocab])
    return columns, sizes


def _binary_matrix(columns: list[list[int]], width: int) -> Any:
    import numpy as np
    from scipy import sparse

    indptr = np.cumsum([0] + [len(c) for c in columns])
    indices = np.fromiter((c for row in columns for c in row), dtype=np.int64, count=int(indptr[-1]))
    return sparse.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr), shape=(len(columns), width))


def _prefix(columns: list[int], size: int, df: Any, threshold: float) -> list[int]:
    """The query's rarest trigrams that any match at ``threshold`` must share at least one of.

    J(x, y) >= t implies |x & y| >= t|x|, so at most |x| - ceil(t|x|) trigrams of x are missing
    from y: any |x| - ceil(t|x|) + 1 of them include a shared one (prefix filtering). Trigrams
    absent from the corpus fill the first slots; when they alone exceed that, nothing can match.
    """
    keep = size - math.ceil(threshold * size - 1e-9) + 1 - (size - len(columns))
    return sorted(columns, key=lambda c: (df[c], c))[:keep] if keep > 0 else []


def _near_matches(queries: list[str], corpus: list[str], threshold: float) -> list[tuple[int, int, float]]:
    """(query index, corpus index, Jaccard) of each query's best corpus match at or above threshold.

    Jaccard over character-trigram sets. Candidates come from prefix filtering (pairs sharing one
    of the query's rarest trigrams, found with one sparse product); only they are scored exactly,
    so the cost follows rare shared trigrams rather than all query x corpus pairs.
    """
    import numpy as np

    if not queries or not corpus or threshold <= 0:
        return []
    vocab: dict[str, int] = {}
    corpus_cols, corpus_sizes = _trigram_columns(corpus, vocab, grow=True)
    query_cols, query_sizes = _trigram_columns(queries, vocab, grow=False)
    corpus_m = _binary_matrix(corpus_cols, len(vocab))
    query_m = _binary_matrix(query_cols, len(vocab))
    df = np.asarray(corpus_m.sum(axis=0)).ravel()
    prefixes = [_prefix(c, n, df, threshold) for c, n in zip(query_cols, query_sizes)]
    pairs = (_binary_matrix(prefixes, len(vocab)) @ corpus_m.T).tocoo()
    query_n, corpus_n = np.asarray(query_sizes, dtype=np.float64), np.asarray(corpus_sizes, dtype=np.float64)
    # J >= t needs t|x| <= |y| <= |x|/t: drop candidates whose sizes already rule it out
    qn, cn = query_n[pairs.row], corpus_n[pairs.col]
    fits = (cn >= threshold * qn - 1e-9) & (qn >= threshold * cn - 1e-9)
    all_rows, all_cols = pairs.row[fits], pairs.col[fits]
    best: dict[int, tuple[float, int]] = {}
    for start in range(0, len(all_rows), 50_000):  # bounded memory for the row-wise products
        rows, cols = all_rows[start : start + 50_000], all_cols[start : start + 50_000]
        inter = np.asarray(query_m[rows].multiply(corpus_m[cols]).sum(axis=1)).ravel()
        jaccard = inter / (query_n[rows] + corpus_n[cols] - inter)
        hits = np.nonzero(jaccard >= threshold)[0]
        for r, c, j in zip(rows[hits].tolist(), cols[hits].tolist(), jaccard[hits].tolist()):
            current = best.get(r)
            if current is None or (j, -c) > (current[0], -current[1]):  # ties: the earliest corpus text
                best[r] = (j, c)
    return [(r, c, j) for r, (j, c) in sorted(best.items())]


def _quote(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _leakage(
    train: Sequence[Example], test: Sequence[Example], threshold: float
) -> tuple[int, int, list[dict[str, Any]]]:
    seen = {}
    for ex in train:
        seen.setdefault(normalize_text(ex.text), ex)
    seen.pop("", None)  # texts that are all punctuation say nothing about leakage
    exact, rest = [], []
    for ex in test:
        norm = normalize_text(ex.text)
        (exact if norm in seen else rest).append((ex, norm))
    reference = list(seen)
    near = _near_matches([norm for _, norm in rest], reference, threshold)
    exact_quotes = [{"test": _quote(ex.text), "train": _quote(seen[n].text), "similarity": 1.0} for ex, n in exact]
    near_quotes = [
        {"test": _quote(rest[q][0].text), "train": _quote(seen[reference[c]].text), "similarity": round(j, 3)}
        for q, c, j in sorted(near, key=lambda hit: -hit[2])
    ]
    # show both kinds when both exist: three exact, then near ones, topped up with more exact
    quotes = exact_quotes[:3] + near_quotes[:5]
    quotes = (quotes + exact_quotes[3:])[:5]
    return len(exact), len(near), quotes


def _duplicates(examples: Sequence[Example]) -> tuple[int, int]:
    targets: dict[str, set[str]] = defaultdict(set)
    for ex in examples:
        targets[ex.text].add(json.dumps(ex.target, sort_keys=True))
    conflicting = sum(1 for t in targets.values() if len(t) > 1)
    return len(examples) - len(targets), conflicting


def _at(examples: Sequence[Example]) -> str:
    """' at train.jsonl lines 1, 2, 3' for examples of one file ('' when they carry no source)."""
    places = [ex.source.rpartition(":") for ex in examples if ex.source]
    if not places:
        return ""
    lines = [line for _, _, line in places[:3]] + (["…"] if len(places) > 3 else [])
    return f" at {Path(places[0][0]).name} line{'s' if len(lines) > 1 else ''} {', '.join(lines)}"


def _texts(n: int) -> str:
    return f"{n} input text{'s' if n != 1 else ''}"


def _repeats(roles: dict[str, Sequence[Example]]) -> dict[str, Any]:
    """Where repeated input texts are: per split, across splits, and up to five quoted with their rows."""
    by_text: dict[str, dict[str, list[Example]]] = defaultdict(lambda: defaultdict(list))
    for role, examples in roles.items():
        for example in examples:
            by_text[example.text][role].append(example)
    groups = {role: 0 for role in roles}
    rows = {role: 0 for role in roles}
    pairs = {"train/dev": ("train", "dev"), "train/test": ("train", "test"), "dev/test": ("dev", "test")}
    cross = {name: 0 for name in pairs}
    for places in by_text.values():
        for role, found in places.items():
            if len(found) > 1:
                groups[role] += 1
                rows[role] += len(found)
        for name, (a, b) in pairs.items():
            cross[name] += a in places and b in places
    repeated = [(text, places) for text, places in by_text.items() if sum(map(len, places.values())) > 1]
    repeated.sort(key=lambda item: -sum(map(len, item[1].values())))  # stable: ties keep train, dev, test order
    quoted = [
        {"text": _quote(text), "rows": {role: len(found) for role, found in places.items()},
         "targets": len({json.dumps(ex.target, sort_keys=True, default=str) for f in places.values() for ex in f}),
         "where": [ex.source for f in places.values() for ex in f if ex.source][:5]}
        for text, places in repeated[:5]
    ]
    warnings = []
    for role in roles:
        if groups[role]:
            first = next(found[role] for found in by_text.values() if len(found.get(role, ())) > 1)
            consequence = {"test": "each row is scored, so a repeated text weighs more in every test score"}.get(
                role, "all rows are kept, and a carved dev set takes each text whole")
            warnings.append(
                f"{role} has {_texts(groups[role])} that occur{'s' if groups[role] == 1 else ''} more than once "
                f"({rows[role]} rows, e.g. '{shown(first[0].text)}'{_at(first)}); {consequence}."
            )
    if cross["train/dev"]:
        first = next(found["dev"] for found in by_text.values() if "train" in found and "dev" in found)
        warnings.append(
            f"{_texts(cross['train/dev'])} occur{'s' if cross['train/dev'] == 1 else ''} in both train and dev "
            f"(e.g. '{shown(first[0].text)}'{_at(first)}); choices made on dev then reward recall of train."
        )
    return {"duplicate_groups": groups, "duplicate_rows": rows, "cross_split_duplicates": cross,
            "duplicate_examples": quoted, "warnings": warnings}


def volume_assessment(n: int) -> str:
    """One sentence placing the labelled volume against the prompting / fine-tuning thresholds."""
    if n < PROMPTING_BELOW:
        return (f"{n:,} labelled examples (train + dev) is under {PROMPTING_BELOW}: this volume favours prompting "
                "(few-shot), and fine-tuning is unlikely to pay off.")
    if n > FINETUNING_ABOVE:
        return (f"{n:,} labelled examples (train + dev) is over {FINETUNING_ABOVE:,}: this volume favours fine-tuning "
                "or a trained baseline, though prompting is still measured.")
    return (f"{n:,} labelled examples (train + dev) is in the grey zone between {PROMPTING_BELOW} and "
            f"{FINETUNING_ABOVE:,}, where prompting and fine-tuning should both be measured.")


def _label_stats(splits: Splits) -> tuple[dict[str, dict[str, int]], float | None, int | None]:
    order = list(splits.labels or sorted({ex.target for ex in splits.train}))
    counts = {}
    for role in ("train", "dev", "test"):
        c = Counter(ex.target for ex in getattr(splits, role))
        counts[role] = {label: c.get(label, 0) for label in order}
    train = counts["train"]
    nonzero = [n for n in train.values() if n > 0]
    ratio = round(max(nonzero) / min(nonzero), 2) if nonzero else None
    return counts, ratio, (min(train.values()) if train else None)


def _label_warnings(train_counts: dict[str, int], ratio: float | None) -> list[str]:
    warnings = []
    few = sorted((n, label) for label, n in train_counts.items() if n < FEW_PER_LABEL)
    if few:
        named = ", ".join(f"'{shown(label, 30)}' ({n})" for n, label in few[:5]) + (", …" if len(few) > 5 else "")
        warnings.append(f"{len(few)} label(s) have fewer than {FEW_PER_LABEL} training examples: {named}.")
    if ratio is not None and ratio > HEAVY_IMBALANCE:
        most = max(train_counts, key=train_counts.get)
        least = min((label for label in train_counts if train_counts[label]), key=train_counts.get)
        warnings.append(
            f"Train labels are heavily imbalanced ('{shown(most, 30)}' {train_counts[most]} vs "
            f"'{shown(least, 30)}' {train_counts[least]}, "
            f"ratio {ratio:g}); read macro-F1 alongside accuracy."
        )
    return warnings


def check_data(splits: Splits, *, kind: str, near_threshold: float = 0.9) -> DataChecks:
    """Describe the splits and warn about what would make the comparison misleading (pure)."""
    roles = {"train": splits.train, "dev": splits.dev, "test": splits.test}
    dupes = {role: _duplicates(examples) for role, examples in roles.items()}
    exact, near, quotes = _leakage(splits.train + splits.dev, splits.test, near_threshold)
    warnings = []
    label_counts = ratio = min_per_label = None
    if kind == "classification":
        label_counts, ratio, min_per_label = _label_stats(splits)
        warnings += _label_warnings(label_counts["train"], ratio)
    repeats = _repeats(roles)
    warnings += repeats.pop("warnings")
    for role, (_, conflicting) in dupes.items():
        if conflicting:
            warnings.append(f"{role} has {conflicting} text(s) that appear more than once with different targets.")
    if exact or near:
        warnings.append(
            f"{exact + near} of {len(splits.test)} test examples also occur in train/dev ({exact} exact after "
            f"normalising, {near} near-duplicates with trigram Jaccard >= {near_threshold:g}); "
            "scores on them measure recall, not skill."
        )
    return DataChecks(
        counts={role: len(examples) for role, examples in roles.items()},
        exact_duplicates={role: d for role, (d, _) in dupes.items()},
        leakage_exact=exact,
        leakage_near=near,
        leakage_examples=quotes,
        label_counts=label_counts,
        imbalance_ratio=ratio,
        min_per_label=min_per_label,
        volume_assessment=volume_assessment(len(splits.train) + len(splits.dev)),
        warnings=warnings,
        conflicting_duplicates={role: c for role, (_, c) in dupes.items()},
        near_threshold=near_threshold,
        **repeats,
    )
