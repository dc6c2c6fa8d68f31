"""The fake backend, always built through the real registry, and the registry's errors."""

from __future__ import annotations

import json

import pytest

from tunewise.backends import BACKEND_KINDS, load_backend
from tunewise.backends.base import GenerationRequest, ScoreRequest, messages
from tunewise.backends.fake import CALL_LOG_ENV, FakeBackend
from tunewise.errors import BackendError, DataError, ModelNotFoundError

LABELS = ("card_arrival", "card_lost", "refund_request")


def classify_prompt(text: str) -> tuple:
    listing = "\n".join(f"- {label}" for label in LABELS)
    return messages(("system", "Classify banking questions."), ("user", f"Labels:\n{listing}\n\nQuestion: {text}"))


def gen(backend, *prompts, **kw):
    return backend.generate([GenerationRequest(prompt=p, **kw) for p in prompts])


def score(backend, prompt, choices=LABELS):
    return backend.score([ScoreRequest(prompt=prompt, choices=choices)])[0]


# ---------------------------------------------------------------- random


def test_random_is_deterministic_across_instances_and_picks_listed_options():
    prompts = [classify_prompt(f"question {i}") for i in range(20)]
    first = [g.text for g in gen(load_backend("fake:random"), *prompts)]
    second = [g.text for g in gen(load_backend("fake:random"), *prompts)]
    assert first == second
    assert set(first) <= set(LABELS) and len(set(first)) > 1  # parseable, and not a constant


def test_random_options_in_system_message_and_fallback_word():
    prompt = messages(("system", "Answer with one of:\n- yes\n- no"), ("user", "Is it raining?"))
    assert gen(load_backend("fake:random"), prompt)[0].text in {"yes", "no"}
    plain = gen(load_backend("fake:random"), messages(("user", "Say something")))[0].text
    assert plain and len(plain.split()) == 1


def test_random_seed_changes_answers_and_scores():
    prompts = [classify_prompt(f"q{i}") for i in range(20)]
    a = [g.text for g in gen(load_backend("fake:random"), *prompts)]
    b = [g.text for g in gen(load_backend("fake:random?seed=7"), *prompts)]
    assert a != b
    assert score(load_backend("fake:random"), prompts[0]) != score(load_backend("fake:random", seed=7), prompts[0])


def test_random_scores_are_deterministic_and_well_formed():
    prompt = classify_prompt("where is my card")
    s1, s2 = score(load_backend("fake:random"), prompt), score(load_backend("fake:random"), prompt)
    assert s1.logprobs == s2.logprobs and len(set(s1.logprobs)) == 3
    assert all(lp < 0 for lp in s1.logprobs)
    assert s1.token_counts == (2, 2, 2)  # one word + end of turn
    assert s1.prompt_tokens == sum(len(m.content.split()) for m in prompt)


def test_temperature_uses_the_request_seed():
    backend = load_backend("fake:random")
    prompt = classify_prompt("hello")
    greedy = {gen(backend, prompt, seed=s)[0].text for s in range(10)}
    sampled = {gen(backend, prompt, seed=s, temperature=1.0)[0].text for s in range(10)}
    assert len(greedy) == 1 and len(sampled) > 1


# ---------------------------------------------------------------- constant, echo, script


def test_constant_generates_its_text_and_scores_favour_it():
    backend = load_backend("fake:constant:card_lost")
    assert gen(backend, classify_prompt("x"))[0].text == "card_lost"
    scores = score(backend, classify_prompt("x"))
    assert max(range(3), key=scores.logprobs.__getitem__) == LABELS.index("card_lost")


def test_constant_text_may_contain_colons_and_question_marks():
    assert gen(load_backend("fake:constant:a: b?"), classify_prompt("x"))[0].text == "a: b?"
    assert gen(load_backend("fake:constant:why?delay=0"), classify_prompt("x"))[0].text == "why"


def test_echo_returns_last_user_message():
    prompt = messages(("user", "first"), ("assistant", "ok"), ("user", "second message"))
    out = gen(load_backend("fake:echo"), prompt)[0]
    assert (out.text, out.completion_tokens, out.prompt_tokens) == ("second message", 2, 4)


def test_script_callable_drives_generation_and_scores():
    backend = load_backend("fake:random", script=lambda prompt: "refund_request")
    assert gen(backend, classify_prompt("x"))[0].text == "refund_request"
    scores = score(backend, classify_prompt("x"))
    assert scores.logprobs.index(max(scores.logprobs)) == 2
    assert "script=" in backend.fingerprint()


def test_max_new_tokens_and_stop_strings():
    backend = load_backend("fake:constant:one two three four")
    cut = gen(backend, classify_prompt("x"), max_new_tokens=2)[0]
    assert (cut.text, cut.completion_tokens, cut.finish_reason) == ("one two", 2, "length")
    stopped = gen(backend, classify_prompt("x"), stop=(" three",))[0]
    assert (stopped.text, stopped.finish_reason) == ("one two", "stop")


# ---------------------------------------------------------------- oracle


@pytest.fixture
def oracle_file(tmp_path):
    path = tmp_path / "test.jsonl"
    rows = [{"text": "my card has not arrived", "label": "card_arrival"},
            {"text": "I lost my card", "label": "card_lost"},
            {"text": "card", "label": "refund_request"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_oracle_answers_the_label_of_the_text_in_the_prompt(oracle_file):
    backend = load_backend(f"fake:oracle:{oracle_file}")
    out = gen(backend, classify_prompt("my card has not arrived"), classify_prompt("I lost my card"))
    assert [g.text for g in out] == ["card_arrival", "card_lost"]  # not the shorter "card" example
    scores = score(backend, classify_prompt("I lost my card"))
    assert scores.logprobs.index(max(scores.logprobs)) == LABELS.index("card_lost")


def test_oracle_prefers_the_query_over_few_shot_demos(oracle_file):
    prompt = messages(("user", "Example: I lost my card -> card_lost\nNow: my card has not arrived"))
    assert gen(load_backend(f"fake:oracle:{oracle_file}"), prompt)[0].text == "card_arrival"


def test_oracle_with_other_field_names(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"question": "hello there", "intent": "greeting"}) + "\n")
    backend = load_backend(f"fake:oracle:{path}?input=question&output=intent")
    assert gen(backend, messages(("user", "hello there")))[0].text == "greeting"


def test_oracle_errors(tmp_path):
    with pytest.raises(BackendError, match="does not exist"):
        load_backend(f"fake:oracle:{tmp_path / 'missing.jsonl'}")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": "b"}\n{"text": "no label"}\n')
    with pytest.raises(DataError, match="bad.jsonl:2"):
        load_backend(f"fake:oracle:{bad}")
    with pytest.raises(ModelNotFoundError):
        load_backend("fake:oracle")


def test_oracle_fingerprint_follows_file_content(oracle_file):
    before = load_backend(f"fake:oracle:{oracle_file}").fingerprint()
    oracle_file.write_text(json.dumps({"text": "x", "label": "y"}) + "\n")
    assert load_backend(f"fake:oracle:{oracle_file}").fingerprint() != before


# ---------------------------------------------------------------- bookkeeping


def test_options_query_string_and_name():
    backend = load_backend("fake:random?delay=0.001&seed=3")
    assert (backend.name, backend.delay_s, backend.seed, backend.can_score) == ("fake:random", 0.001, 3, True)
    assert backend.fingerprint() == load_backend("fake:random?seed=3").fingerprint()  # delay changes nothing
    with pytest.raises(BackendError, match="Bad option"):
        load_backend("fake:random?seed=abc")


def test_calls_latency_and_call_log(tmp_path, monkeypatch):
    log = tmp_path / "calls.log"
    monkeypatch.setenv(CALL_LOG_ENV, str(log))
    backend = load_backend("fake:random?delay=0.001")
    gens = gen(backend, classify_prompt("a"), classify_prompt("b"))
    score(backend, classify_prompt("a"))
    assert backend.calls == 3
    assert all(g.latency_s > 0 for g in gens)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["kind"] for line in lines] == ["generate", "generate", "score"]


def test_no_call_log_without_env(tmp_path, monkeypatch):
    monkeypatch.delenv(CALL_LOG_ENV, raising=False)
    assert load_backend("fake:echo").call_log is None


def test_fail_on_raises_backend_error():
    backend = FakeBackend("fake:random", fail_on="poison")
    assert gen(backend, classify_prompt("fine"))
    with pytest.raises(BackendError, match="told to fail"):
        gen(backend, classify_prompt("poison pill"))
    picky = FakeBackend("fake:echo", fail_on=lambda prompt: len(prompt) > 1)
    with pytest.raises(BackendError):
        gen(picky, classify_prompt("x"))


def test_whitespace_token_count():
    assert load_backend("fake:echo").count_tokens("three little words") == 3


# ---------------------------------------------------------------- registry


@pytest.mark.parametrize("spec", ["smollm2-135m", "fake", "nosuch:model", ":x", ""])
def test_unknown_kind_or_missing_colon(spec):
    with pytest.raises(ModelNotFoundError) as err:
        load_backend(spec)
    message = str(err.value)
    assert all(example in message for example in BACKEND_KINDS.values())
    assert message.count(".") <= 2 and "\n" not in message  # one sentence


def test_unknown_fake_mode_lists_modes():
    with pytest.raises(ModelNotFoundError, match="fake:echo"):
        load_backend("fake:telepathy")


def test_openai_kind_builds_the_http_backend():  # behaviour: tests/test_openai_backend.py
    backend = load_backend("openai:gpt-4o-mini", base_url="http://127.0.0.1:9/v1")
    assert type(backend).__name__ == "OpenAIBackend" and backend.can_score is False
    backend.close()


def test_backend_kinds_are_exported():
    assert set(BACKEND_KINDS) == {"fake", "local", "hf", "openai", "vllm"}


def test_third_party_backend_via_entry_point(monkeypatch):
    import tunewise.backends as registry

    class EntryPoint:
        name, value = "toy", "toy_pkg:Toy"

        def load(self):
            return lambda spec, **options: FakeBackend("fake:constant:from plugin")

    monkeypatch.setattr(registry.metadata, "entry_points", lambda group: [EntryPoint()])
    assert gen(load_backend("toy:anything"), classify_prompt("x"))[0].text == "from plugin"
    with pytest.raises(ModelNotFoundError, match="toy:"):
        load_backend("other:thing")
