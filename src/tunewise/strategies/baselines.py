"""Baselines without an LLM: nearest neighbours and a logistic probe on sentence embeddings.

They answer "does this task need an LLM at all?" and stay in every ladder. Both use the same cached
embeddings of the training set (all-MiniLM-L6-v2 by default). On extraction and generation tasks the
nearest-neighbour baseline answers with the nearest training example's answer (a retrieval floor: the
intent of a near-paraphrase is often right, its slot values rarely are); the probe only classifies.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import TaskSpecError
from ..evaluation.records import Prediction
from .base import Candidate, PrepareContext, register

__all__ = ["EmbeddingKNN", "EmbeddingProbe", "prepare_knn", "prepare_probe"]

EmbedFn = Callable[[Sequence[str]], np.ndarray]


def _require_embedder(rung: Any, ctx: PrepareContext, *, classification: bool = False) -> None:
    if classification and ctx.spec.kind != "classification":
        raise TaskSpecError(f"rung '{rung.name}': the embedding probe only applies to classification tasks.")
    if ctx.embed is None:
        raise TaskSpecError(f"rung '{rung.name}': no embedder is available in this run.")


def _timed_embed(embed: EmbedFn, examples: Sequence[Any]) -> tuple[np.ndarray, float]:
    """Embeddings and what they cost: as measured when computed, even if now served from a cache."""
    texts = [e.text for e in examples]
    start = time.perf_counter()
    vectors = embed(texts)
    cost = getattr(embed, "seconds", None)
    return vectors, cost(texts) if cost is not None else time.perf_counter() - start


def _predictions(examples: Sequence[Any], labels: list[str], probs: np.ndarray, seconds: float) -> list[Prediction]:
    # these baselines serve a whole chunk in one batch: its wall time, shared by len(examples)
    best = probs.argmax(axis=1)
    return [
        Prediction(example_id=e.id, output=labels[j], raw=labels[j], confidence=float(probs[i, j]),
                   latency_s=seconds, batch_size=len(examples))
        for i, (e, j) in enumerate(zip(examples, best))
    ]


@dataclass
class EmbeddingKNN(Candidate):
    """k nearest training neighbours by cosine similarity, similarity-weighted vote."""

    rung: str
    config: dict[str, Any]
    embed: EmbedFn
    train_vectors: np.ndarray
    train_labels: list[str]
    labels: list[str]
    k: int = 1
    uses_llm: bool = False
    extras: dict[str, Any] = field(default_factory=dict)

    train_targets: list[Any] = field(default_factory=list)  # extraction and generation: the neighbours' answers

    def predict(self, examples: Sequence[Any], *, backend: Any = None) -> list[Prediction]:
        queries, embed_s = _timed_embed(self.embed, examples)
        start = time.perf_counter()
        sims = queries @ self.train_vectors.T  # (n_queries, n_train), rows are unit vectors
        if not self.labels:  # an answer, not a label: the nearest training example's, with its similarity
            from ..prompts import answer_text

            nearest = sims.argmax(axis=1)
            seconds = embed_s + time.perf_counter() - start
            return [Prediction(example_id=e.id, output=self.train_targets[j],
                               raw=answer_text(self.train_targets[j]), confidence=float(max(0.0, sims[i, j])),
                               latency_s=seconds, batch_size=len(examples))
                    for i, (e, j) in enumerate(zip(examples, nearest))]
        k = min(self.k, sims.shape[1])
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        index = {label: i for i, label in enumerate(self.labels)}
        votes = np.zeros((len(examples), len(self.labels)))
        for row, neighbours in enumerate(top):
            for n in neighbours:
                votes[row, index[self.train_labels[n]]] += max(float(sims[row, n]), 1e-6)
        probs = votes / votes.sum(axis=1, keepdims=True)
        return _predictions(examples, self.labels, probs, embed_s + time.perf_counter() - start)


@dataclass
class EmbeddingProbe(Candidate):
    """Multinomial logistic regression on embeddings; C chosen on the dev split."""

    rung: str
    config: dict[str, Any]
    embed: EmbedFn
    model: Any  # fitted sklearn LogisticRegression
    uses_llm: bool = False
    extras: dict[str, Any] = field(default_factory=dict)

    def predict(self, examples: Sequence[Any], *, backend: Any = None) -> list[Prediction]:
        queries, embed_s = _timed_embed(self.embed, examples)
        start = time.perf_counter()
        probs = self.model.predict_proba(queries)
        return _predictions(examples, list(self.model.classes_), probs, embed_s + time.perf_counter() - start)


@register("knn")
def prepare_knn(rung: Any, ctx: PrepareContext) -> EmbeddingKNN:
    _require_embedder(rung, ctx)
    classification = ctx.spec.kind == "classification"
    k = int(rung.params.get("k", 1))
    if not classification and k != 1:
        raise TaskSpecError(f"rung '{rung.name}': k must be 1 on {ctx.spec.kind} tasks (answers are copied, not voted).")
    vectors, seconds = _timed_embed(ctx.embed, ctx.splits.train)
    config = {"strategy": "knn", "k": k, "embedder": rung.params.get("embedder", "minilm-l6-v2"),
              "train_examples": len(ctx.splits.train), "index_seconds": round(seconds, 2)}
    if not classification:
        config["answer"] = "the nearest training example's answer, copied"
    targets = [e.target for e in ctx.splits.train]
    return EmbeddingKNN(rung=rung.name, config=config, embed=ctx.embed, train_vectors=vectors,
                        train_labels=targets if classification else [], labels=list(ctx.splits.labels or ()), k=k,
                        train_targets=[] if classification else targets)


def _fit_probe(x: np.ndarray, y: list[str], c: float, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(x, y)


@register("probe")
def prepare_probe(rung: Any, ctx: PrepareContext) -> EmbeddingProbe:
    """Fit on train for each C in the grid, keep the best on dev (never test), refit is unnecessary."""
    _require_embedder(rung, ctx, classification=True)
    grid = [float(c) for c in rung.params.get("C", [0.1, 1.0, 10.0, 100.0])]
    start = time.perf_counter()
    x_train, _ = _timed_embed(ctx.embed, ctx.splits.train)
    y_train = [e.target for e in ctx.splits.train]
    x_dev, _ = _timed_embed(ctx.embed, ctx.splits.dev)
    y_dev = np.array([e.target for e in ctx.splits.dev])
    scores: dict[float, float] = {}
    fitted: dict[float, Any] = {}
    for c in grid:
        fitted[c] = _fit_probe(x_train, y_train, c, ctx.seed)
        scores[c] = float((fitted[c].predict(x_dev) == y_dev).mean()) if len(y_dev) else 0.0
    best = max(grid, key=lambda c: (scores[c], -abs(np.log10(c))))
    config = {"strategy": "probe", "C": best, "C_grid_dev_accuracy": {str(c): round(s, 4) for c, s in scores.items()},
              "embedder": rung.params.get("embedder", "minilm-l6-v2"), "train_examples": len(y_train),
              "fit_seconds": round(time.perf_counter() - start, 2)}
    return EmbeddingProbe(rung=rung.name, config=config, embed=ctx.embed, model=fitted[best])
