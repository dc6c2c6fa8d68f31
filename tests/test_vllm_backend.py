"""The vLLM backend on CPU, against a stand-in ``vllm`` computed by the same tiny model (``fake_vllm.py``):
its label scores and greedy answers equal the local backend's on that model."""

from __future__ import annotations

import json
import sys

import pytest

from tunewise.backends import load_backend
from tunewise.backends.base import GenerationRequest, ScoreRequest, messages
from tunewise.errors import BackendError

from . import fake_vllm

SYSTEM = ("Classify the banking query into one of the labels below. Label: card_arrival, card linking, "
          "top up failed, exchange rate")
LABELS = ("card_arrival", "card linking", "top up failed", "exchange rate", "yes")
QUERIES = ("How do I activate my new card?", "When will my card arrive?", "top up reverted, pending top up",
           "I lost my card yesterday.")


def _score_requests() -> list[ScoreRequest]:
    return [ScoreRequest(messages(("system", SYSTEM), ("user", q)), LABELS) for q in QUERIES]


@pytest.fixture(scope="module")
def local(tiny_llama_dir):
    from tunewise.backends.local import LocalBackend

    backend = LocalBackend(f"hf:{tiny_llama_dir}", device="cpu")
    yield backend
    backend.close()


def _vllm(monkeypatch, directory, api="new"):
    state = fake_vllm.install(monkeypatch, api=api)
    return load_backend(f"vllm:{directory}"), state


@pytest.mark.parametrize("api", ["new", "old"])
def test_label_scores_equal_the_local_backend(tiny_llama_dir, local, monkeypatch, api):
    backend, state = _vllm(monkeypatch, tiny_llama_dir, api)
    assert type(backend).__name__ == "VLLMBackend" and backend.can_score
    assert state.engines[0].kwargs["enable_prefix_caching"] is True
    got, want = backend.score(_score_requests()), local.score(_score_requests())
    for g, w in zip(got, want, strict=True):
        assert g.logprobs == pytest.approx(w.logprobs, abs=1e-4)
        assert g.token_counts == w.token_counts and g.prompt_tokens == w.prompt_tokens
        assert g.scored_tokens == sum(w.token_counts) and g.latency_s > 0
    n_sequences = len(QUERIES) * len(LABELS)
    first, again = state.served[:n_sequences], state.served[n_sequences:]
    assert all(s.params.prompt_logprobs == 0 and s.params.max_tokens == 1 for s in state.served)
    if api == "new":  # the shared prompt's blocks were read from the cache, and the scores are still exact
        assert all(s.params.skip_reading_prefix_cache is False for s in first)
        assert sum(s.num_cached_tokens > 0 for s in first) >= n_sequences - 1 and max(g.cached_tokens for g in got)
        # a hit that covers the prompt's last token (here: a 64-token prompt, four 16-token blocks) leaves the
        # first choice token without a log-prob: exactly those sequences are scored again, without the cache
        prompts = [g.prompt_tokens for g in got for _ in LABELS]
        missed = [s.prompt_token_ids for s, p in zip(first, prompts) if s.num_cached_tokens > p - 1]
        assert missed and [s.prompt_token_ids for s in again] == missed
        assert all(s.params.skip_reading_prefix_cache is None and s.num_cached_tokens == 0 for s in again)
    else:  # older vLLM: prompt log-probs never read the cache (correct, slower)
        assert not again and not any(s.num_cached_tokens for s in first)
        assert backend.info["prefix_cache_with_prompt_logprobs"] is False


def test_a_cache_hit_inside_the_choice_is_scored_again_without_the_cache(tiny_llama_dir, local, monkeypatch):
    backend, state = _vllm(monkeypatch, tiny_llama_dir)
    shared = " ".join(["yes no maybe"] * 8)  # > one block of choice tokens common to both choices
    request = ScoreRequest(messages(("system", SYSTEM), ("user", QUERIES[0])), (shared + " yes", shared + " no"))
    (got,), (want,) = backend.score([request]), local.score([request])
    assert got.logprobs == pytest.approx(want.logprobs, abs=1e-4)
    redone = [s for s in state.served if s.params.skip_reading_prefix_cache is None]
    assert len(redone) == 1 and state.served[1].num_cached_tokens > got.prompt_tokens - 1


def test_greedy_generation_equals_the_local_backend(tiny_llama_dir, local, monkeypatch):
    backend, state = _vllm(monkeypatch, tiny_llama_dir)
    requests = [GenerationRequest(messages(("system", SYSTEM), ("user", q)), max_new_tokens=6) for q in QUERIES]
    got, want = backend.generate(requests), local.generate(requests)
    assert [g.text for g in got] == [w.text for w in want]
    assert [(g.prompt_tokens, g.completion_tokens, g.finish_reason) for g in got] == \
           [(w.prompt_tokens, w.completion_tokens, w.finish_reason) for w in want]
    assert all(g.batch_size == len(requests) and g.latency_s > 0 for g in got)
    params = state.served[0].params
    assert params.temperature == 0.0 and params.max_tokens == 6 and params.seed is None
    assert set(params.stop_token_ids) == set(local._stop_ids)


def test_a_stop_string_cuts_the_answer_like_the_local_backend(tiny_llama_dir, local, monkeypatch):
    backend, _ = _vllm(monkeypatch, tiny_llama_dir)
    free = backend.generate([GenerationRequest(messages(("user", QUERIES[1])), max_new_tokens=12)])[0].text
    stop = free[len(free) // 2: len(free) // 2 + 2]
    assert stop.strip(), free
    request = GenerationRequest(messages(("user", QUERIES[1])), max_new_tokens=12, stop=(stop,))
    (got,), (want,) = backend.generate([request]), local.generate([request])
    assert got.text == want.text == free[: free.find(stop)] and got.finish_reason == "stop"


@pytest.mark.parametrize("api", ["new", "old"])
def test_choices_and_json_schema_become_guided_decoding(tiny_llama_dir, monkeypatch, api):
    backend, state = _vllm(monkeypatch, tiny_llama_dir, api)
    schema = {"type": "object", "properties": {"label": {"enum": list(LABELS)}}, "required": ["label"],
              "additionalProperties": False}
    chosen, extracted = backend.generate([
        GenerationRequest(messages(("user", QUERIES[0])), max_new_tokens=16, choices=LABELS),
        GenerationRequest(messages(("user", QUERIES[1])), max_new_tokens=24, json_schema=schema),
    ])
    field = "structured_outputs" if api == "new" else "guided_decoding"
    constraints = [getattr(s.params, field) for s in state.served]
    assert constraints[0].choice == list(LABELS) and constraints[0].json is None
    assert constraints[1].json == schema and not constraints[1].choice
    assert chosen.text in LABELS
    assert json.loads(extracted.text)["label"] in LABELS


def test_missing_vllm_is_one_sentence_with_the_extra(tiny_llama_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(BackendError, match=r"vLLM is not installed: .*CUDA GPU.*pip install 'tunewise\[vllm\]'"):
        load_backend(f"vllm:{tiny_llama_dir}")


def test_model_sources_and_fingerprint(tiny_llama_dir, tmp_path, monkeypatch):
    from tunewise.backends.vllm import model_source
    from tunewise.errors import ModelNotFoundError

    source, fingerprint = model_source(f"vllm:{tiny_llama_dir}")
    assert source == str(tiny_llama_dir) and fingerprint.startswith(f"vllm:{tiny_llama_dir}@")
    assert model_source("vllm:Qwen/Qwen2.5-1.5B-Instruct") == ("Qwen/Qwen2.5-1.5B-Instruct",
                                                               "vllm:Qwen/Qwen2.5-1.5B-Instruct")
    with pytest.raises(ModelNotFoundError, match="not a directory containing a config.json"):
        model_source(f"vllm:{tmp_path}")
    backend, _ = _vllm(monkeypatch, tiny_llama_dir)
    assert backend.fingerprint() == f"{fingerprint}|auto" and backend.count_tokens("card arrival") > 0


def test_a_run_scores_rungs_through_the_vllm_backend(tiny_llama_dir, tmp_path, monkeypatch):
    from tunewise.run import run_task
    from tunewise.task import load_task

    from .test_run import write_task

    state = fake_vllm.install(monkeypatch)
    task = write_task(tmp_path, n_train=12, n_test=8)
    spec = load_task(task).model_copy(update={"model": f"vllm:{tiny_llama_dir}"})
    outcome = run_task(spec, rungs=["zero_shot"], report=False)
    (rung,) = outcome.results.rungs
    assert rung.status == "finished", rung.error
    assert rung.metrics["accuracy"].n == 8 and outcome.results.environment["backend"]["engine"] == "vllm"
    assert any(s.params.prompt_logprobs == 0 for s in state.served)
