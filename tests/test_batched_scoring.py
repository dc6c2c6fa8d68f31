"""Batched choice scoring for models without tree attention (sliding-window layers, e.g. Gemma 3).

The prompt is prefilled once, then the choices go through as right-padded rows over the shared
prompt cache, with logits only where a trie node first needs them. Every test compares with the
naive reference (one full forward per choice, no cache) on tiny random models built here: a
Gemma 3 with sliding window 8 (three sliding layers, one full, logit soft-capping) and a Mistral
with sliding window 8 in every layer, both fed prompts of 30+ tokens, longer than the window.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from tunewise.backends import local
from tunewise.backends.base import GenerationRequest, ScoreRequest, messages
from tunewise.backends.local import MIN_SHARED_PREFIX, LocalBackend, build_trie

from .test_plain_prompt import _blank_line_tokenizer

WINDOW = 8
SYSTEM = "Classify the request. Input: is the sky blue? Output: yes\n\nInput: is the sea dry? Output: no"
CHOICES = (
    "yes",
    "no",
    "yes no",  # its first token is a whole other choice
    "card arrival",
    "card linking",  # shares its first tokens with the one before
    "top up failed",
    "top up reverted",
    "exchange rate",
    "dry",
    "maybe",
)


def ask(user: str):
    return messages(("system", SYSTEM), ("user", user))


def max_diff(a, b) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def gemma(tmp_path_factory: pytest.TempPathFactory) -> LocalBackend:
    """A tiny random Gemma 3 (hybrid: 3 sliding layers of window 8, then a full one) with a plain prompt."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    directory = tmp_path_factory.mktemp("tiny_gemma3")
    tokenizer = _blank_line_tokenizer()
    tokenizer.save_pretrained(directory)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=1, head_dim=8, sliding_window=WINDOW,
        layer_types=["sliding_attention"] * 3 + ["full_attention"], max_position_embeddings=512,
        initializer_range=0.2, final_logit_softcapping=5.0, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    Gemma3ForCausalLM(config).save_pretrained(directory)
    return LocalBackend(f"hf:{directory}", device="cpu")


@pytest.fixture(scope="module")
def mistral(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> LocalBackend:
    """A tiny random Mistral, sliding window 8 in every layer (no ``layer_types`` in its config)."""
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    directory = tmp_path_factory.mktemp("tiny_mistral")
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    tokenizer.save_pretrained(directory)
    config = MistralConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, sliding_window=WINDOW, max_position_embeddings=2048,
        initializer_range=0.2, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    MistralForCausalLM(config).save_pretrained(directory)
    return LocalBackend(f"hf:{directory}", device="cpu")


@pytest.fixture(scope="module")
def llama(tiny_llama_dir: Path) -> LocalBackend:
    return LocalBackend(f"hf:{tiny_llama_dir}", device="cpu")


@pytest.fixture(params=["gemma", "mistral"])
def sliding(request: pytest.FixtureRequest) -> LocalBackend:
    backend = request.getfixturevalue(request.param)
    backend.close()  # every test starts with a cold prefix cache
    return backend


def test_the_tiny_models_are_what_the_tests_need(gemma: LocalBackend, mistral: LocalBackend):
    for backend in (gemma, mistral):
        assert not backend.info["tree_scoring"]  # Mistral's window used to slip through as full attention
        assert len(backend._encode(backend.render(ask("Input: is grass green?")))) > 3 * WINDOW
    assert gemma.model.config.final_logit_softcapping and "full_attention" in gemma.model.config.layer_types


@pytest.mark.parametrize("answer_prefix", ["", "Label:"])
def test_batched_scores_equal_naive_scores_past_the_window(sliding: LocalBackend, answer_prefix: str):
    request = ScoreRequest(ask("Input: is grass green?"), CHOICES, answer_prefix=answer_prefix)
    [batched] = sliding.score([request])
    [naive] = sliding.score_naive([request])
    assert batched.prompt_tokens == naive.prompt_tokens > 3 * WINDOW
    assert batched.token_counts == naive.token_counts
    assert max_diff(batched.logprobs, naive.logprobs) < 1e-4
    assert all(math.isfinite(x) and x < 0 for x in batched.logprobs)


def test_the_prompt_is_computed_once_and_logits_only_where_needed(sliding: LocalBackend):
    """One prefill, one chunk of rows; the LM head sees the prompt's last position and each trie node once."""
    request = ScoreRequest(ask("Input: is the sea dry?"), CHOICES)
    calls: list[int] = []
    head_rows: list[int] = []
    model = sliding.model
    hooks = [
        model.get_input_embeddings().register_forward_hook(lambda m, args, out: calls.append(args[0].numel())),
        model.get_output_embeddings().register_forward_hook(
            lambda m, args, out: head_rows.append(args[0].reshape(-1, args[0].shape[-1]).shape[0])
        ),
    ]
    try:
        [scores] = sliding.score([request])
    finally:
        for hook in hooks:
            hook.remove()
    prompt_ids, continuations = sliding._continuations(request)
    trie = build_trie(continuations)
    rows = local._trie_rows(trie)
    assert len(calls) == 1 + math.ceil(len(rows) / local.SCORE_CHUNK) < len(CHOICES)  # the prompt, then the chunks
    assert calls[0] == scores.prompt_tokens
    assert scores.scored_tokens == sum(map(len, rows))
    assert sum(head_rows) == 1 + len(trie.internal)
    assert scores.scored_tokens < sum(len(c) for c in continuations)


def test_the_prompt_cache_is_reused_across_requests_past_the_window(sliding: LocalBackend):
    """The second prompt shares ~30 tokens with the first: only its tail is prefilled, scores unchanged."""
    first, second = ScoreRequest(ask("Input: is grass green?"), CHOICES), ScoreRequest(ask("Input: is the sky blue?"), CHOICES)
    warm = sliding.score([first, second])
    assert warm[0].cached_tokens == 0
    assert warm[1].cached_tokens >= max(MIN_SHARED_PREFIX, 3 * WINDOW)
    sliding.close()
    [cold] = sliding.score([second])
    [naive] = sliding.score_naive([second])
    assert cold.cached_tokens == 0
    assert max_diff(warm[1].logprobs, cold.logprobs) < 1e-4
    assert max_diff(warm[1].logprobs, naive.logprobs) < 1e-4


def test_chunks_and_the_nodes_they_share(sliding: LocalBackend, monkeypatch: pytest.MonkeyPatch):
    """Chunks of 2 rows: nodes met again in a later chunk are context only, the scores are unchanged."""
    request = ScoreRequest(ask("Input: is grass green?"), CHOICES)
    [whole] = sliding.score([request])
    monkeypatch.setattr(local, "SCORE_CHUNK", 2)
    sliding.close()
    [chunked] = sliding.score([request])
    assert max_diff(whole.logprobs, chunked.logprobs) < 1e-4


def test_without_row_selection_every_position_is_computed(sliding: LocalBackend, monkeypatch: pytest.MonkeyPatch):
    """Older transformers (no 2D bool ``logits_to_keep``): logits for every position, same scores."""
    request = ScoreRequest(ask("Input: is grass green?"), CHOICES)
    [selected] = sliding.score([request])
    monkeypatch.setattr(local, "_logits_row_selection", lambda: False)
    sliding.close()
    [everywhere] = sliding.score([request])
    assert max_diff(selected.logprobs, everywhere.logprobs) < 1e-4


def test_row_selection_is_detected_in_this_transformers():
    import transformers

    if tuple(int(x) for x in transformers.__version__.split(".")[:2]) >= (5, 25):
        assert local._logits_row_selection()


def test_batched_path_on_a_full_attention_model_equals_tree_and_naive(llama: LocalBackend):
    llama.close()
    request = ScoreRequest(ask("Input: is grass green?"), CHOICES)
    [batched] = llama.score_batched([request])
    [tree] = llama.score([request])
    [naive] = llama.score_naive([request])
    assert llama.info["tree_scoring"]
    assert max_diff(batched.logprobs, naive.logprobs) < 1e-4
    assert max_diff(tree.logprobs, naive.logprobs) < 1e-4


def test_trie_rows_cover_every_internal_node_once_per_maximal_path():
    trie = build_trie([[5, 6, 2], [5, 7, 2], [5, 2], [5, 6, 2], [9, 2], [4]])
    rows = local._trie_rows(trie)
    assert rows == [(6,), (0, 1), (0, 3)]  # shortest first; [5, 2] adds no row: [5] is in [5, 6]
    assert {n for row in rows for n in row} == set(trie.internal)


def test_generation_reuses_a_prompt_cache_longer_than_the_window(sliding: LocalBackend):
    """Two prompts longer than the window sharing a prefix: the second used to fail cropping the cache."""
    first, second = (GenerationRequest(prompt=ask(q), max_new_tokens=4) for q in ("Input: is grass green?", "Input: is the sky blue?"))
    warm = [sliding.generate([r])[0] for r in (first, second)]
    assert warm[1].cached_tokens >= max(MIN_SHARED_PREFIX, 3 * WINDOW)
    sliding.close()
    cold = sliding.generate([second])[0]
    assert cold.cached_tokens == 0
    assert (warm[1].text, warm[1].completion_tokens) == (cold.text, cold.completion_tokens)


def test_generation_prefill_computes_logits_for_the_last_position_only(gemma: LocalBackend):
    """The vocabulary projection dominates Gemma's cost: one row per sequence and step, never the prompt."""
    gemma.close()
    head_rows: list[int] = []
    hook = gemma.model.get_output_embeddings().register_forward_hook(
        lambda m, args, out: head_rows.append(args[0].reshape(-1, args[0].shape[-1]).shape[0])
    )
    try:
        [one] = gemma.generate([GenerationRequest(prompt=ask("Input: is grass green?"), max_new_tokens=3)])
        single, head_rows[:] = list(head_rows), []
        two = gemma.generate([GenerationRequest(prompt=ask(q), max_new_tokens=3) for q in ("Input: a?", "Input: bb?")])
    finally:
        hook.remove()
    assert one.prompt_tokens > 3 * WINDOW
    assert single == [1] * one.completion_tokens
    assert two[0].batch_size == 2 and all(rows <= len(two) for rows in head_rows)  # the shared prefix: 1 row
