"""Reasoning models through ``openai:``: max_completion_tokens, the default temperature, reasoning tokens billed."""

from __future__ import annotations

from typing import Any

import pytest

from tunewise.backends import backend_options, load_backend
from tunewise.backends.openai import DEFAULT_REASONING_TOKENS, is_reasoning_model
from tunewise.errors import BackendError
from tunewise.task import parse_task

from .test_openai_backend import FAST, api_key, one_sentence, requests  # noqa: F401 - api_key: autouse fixture

PRICES = {"api": {"o3-mini": {"input": 1000.0, "output": 2000.0}, "acme-thinker": {"input": 1000.0, "output": 2000.0}}}


def openai_refusals(body: dict[str, Any]) -> dict[str, Any] | None:
    """What OpenAI answers a reasoning model sent max_tokens or a temperature other than 1 (HTTP 400)."""
    if "max_tokens" in body:
        return {"message": "Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                "'max_completion_tokens' instead.", "type": "invalid_request_error", "param": "max_tokens",
                "code": "unsupported_parameter"}
    if body.get("temperature", 1) != 1:
        return {"message": f"Unsupported value: 'temperature' does not support {body['temperature']} with this "
                "model. Only the default (1) value is supported.", "type": "invalid_request_error",
                "param": "temperature", "code": "unsupported_value"}
    return None


def reasoner(server, model: str = "o3-mini", **options: Any):
    return load_backend(f"openai:{model}", base_url=server.url, prices=PRICES, **{**FAST, **options})


@pytest.mark.parametrize("name, reasoning", [
    ("o1", True), ("o3-mini", True), ("o4-mini-2025-04-16", True), ("gpt-5", True), ("gpt-5-nano", True),
    ("gpt-5.1", True), ("openai/o3", True), ("gpt-4o", False), ("gpt-4o-mini", False), ("gpt-4.1", False),
    ("llama3.2:1b", False), ("ollama", False), ("Qwen/Qwen2.5-1.5B-Instruct", False)])
def test_reasoning_models_are_known_by_name(name, reasoning):
    assert is_reasoning_model(name) is reasoning


def test_a_reasoning_model_is_sent_max_completion_tokens_and_no_temperature(server):
    server.refuse = openai_refusals
    b = reasoner(server, reasoning_tokens=500)
    out = b.generate(requests(3, temperature=0.0))
    assert [g.text for g in out] == ["a:q00", "a:q01", "a:q02"] and server.attempts == 3  # nothing refused
    body = server.bodies[0]
    assert body["max_completion_tokens"] == 4 + 500 and "max_tokens" not in body and "temperature" not in body
    assert "max_completion_tokens = max_new_tokens + 500 thinking tokens" in b.info["reasoning_model"]
    assert b.fingerprint().endswith("+thinking500")
    b.close()


def test_another_model_refusing_max_tokens_is_retried_once_and_remembered(server):
    server.refuse = openai_refusals
    b = reasoner(server, "acme-thinker", max_concurrency=1)
    assert b.fingerprint() == f"openai:acme-thinker@{server.url}"  # not a reasoning model by name
    out = b.generate(requests(4, temperature=0.0))
    assert [g.text for g in out] == ["a:q00", "a:q01", "a:q02", "a:q03"]
    # one refusal of max_tokens, one of temperature 0; every later request is sent the accepted way
    assert server.attempts == 4 + 2
    assert [sorted(k for k in body if k in ("max_tokens", "max_completion_tokens", "temperature"))
            for body in server.bodies[:3]] == [["max_tokens", "temperature"], ["max_completion_tokens", "temperature"],
                                              ["max_completion_tokens"]]
    assert server.bodies[-1]["max_completion_tokens"] == 4 + DEFAULT_REASONING_TOKENS
    assert b.info["reasoning_model"].endswith("the model's default temperature")
    b.close()


def test_refusals_that_cannot_be_helped_are_one_sentence_and_not_repeated(server):
    server.refuse = lambda body: {"message": "Unsupported parameter: 'stop' is not supported with this model.",
                                  "param": "stop", "code": "unsupported_parameter"}
    b = reasoner(server)
    with pytest.raises(BackendError) as err:
        b.generate(requests(1, stop=("\n",)))
    assert server.attempts == 1 and one_sentence(str(err.value)) and "'stop' is not supported" in str(err.value)
    b.close()
    server.attempts = 0
    server.refuse = lambda body: {"message": "Unsupported parameter: 'max_tokens' is not supported, nor is "
                                  "'max_completion_tokens'.", "param": "max_tokens"} if "max_tokens" in body else \
        {"message": "Unsupported parameter: 'max_completion_tokens'.", "param": "max_completion_tokens"}
    b = reasoner(server, "acme-thinker")
    with pytest.raises(BackendError, match="HTTP 400") as err:
        b.generate(requests(1))
    assert server.attempts == 2 and one_sentence(str(err.value))
    b.close()


def test_reasoning_tokens_are_billed_as_completion_tokens_once(server):
    server.usage = lambda body: {"prompt_tokens": 10, "completion_tokens": 50,
                                 "completion_tokens_details": {"reasoning_tokens": 40}}
    b = reasoner(server)
    [g] = b.generate(requests(1))
    assert g.completion_tokens == 50 and b.info["reasoning_tokens"] == 40  # OpenAI counts them inside
    assert b.spent_usd == pytest.approx((10 * 1000.0 + 50 * 2000.0) / 1e6)
    server.usage = lambda body: {"prompt_tokens": 10, "completion_tokens": 3,
                                 "completion_tokens_details": {"reasoning_tokens": 40}}
    [g] = b.generate(requests(1))
    assert g.completion_tokens == 43 and b.info["reasoning_tokens"] == 80  # reported apart: added
    b.close()


def test_the_money_cap_counts_the_thinking_allowance(server):
    # worst case of one request: ~70 prompt tokens x $1000/M + (4 + 1000) completion tokens x $2000/M ~ $2.08
    b = reasoner(server, reasoning_tokens=1000, budget_usd=1.0)
    with pytest.raises(BackendError, match="Refused"):
        b.generate(requests(1))
    assert server.attempts == 0
    b.close()
    b = reasoner(server, reasoning_tokens=100, budget_usd=1.0)
    assert len(b.generate(requests(1))) == 1
    b.close()


def test_the_task_file_sets_the_thinking_allowance(tmp_path):
    spec = parse_task({"kind": "classification", "model": "openai:o4-mini", "data": {"train": "a.jsonl",
                       "test": "b.jsonl"}, "backend": {"reasoning_tokens": 256}}, base_dir=tmp_path)
    assert backend_options(spec)["reasoning_tokens"] == 256


def test_a_refused_temperature_alone_keeps_max_tokens(server):
    server.refuse = lambda body: openai_refusals({k: v for k, v in body.items() if k != "max_tokens"})
    b = reasoner(server, "acme-thinker", max_concurrency=1)
    assert [g.text for g in b.generate(requests(2, temperature=0.0))] == ["a:q00", "a:q01"] and server.attempts == 3
    assert server.bodies[-1]["max_tokens"] == 4 and "temperature" not in server.bodies[-1]
    assert b.info["reasoning_model"] == "the model's default temperature"
    b.close()
