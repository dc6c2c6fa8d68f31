"""The openai: backend against a real OpenAI-compatible server on loopback that injects faults.

The server (``http.server`` in a thread) answers ``/v1/chat/completions`` and takes a script of
faults, one consumed per request in arrival order: 429 with Retry-After, 500/503, replies slower
than the client's timeout, malformed JSON, 400 rejecting ``response_format``, 401. It records what
it served, the usage it reported and the most requests it had in flight at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tunewise.backends import backend_options, load_backend
from tunewise.backends.base import GenerationRequest, messages
from tunewise.backends.budget import MoneyCap
from tunewise.backends.cached import CachedBackend, call_key
from tunewise.backends.openai import _retry_after
from tunewise.errors import BackendError, TaskSpecError
from tunewise.run import run_task
from tunewise.store import Store
from tunewise.task import load_task

KEY = "sk-test-SECRET-4f9a0c2d7e1b"
PRICES = {"api": {"test-model": {"input": 1000.0, "output": 2000.0, "cached_input": 500.0}}}
FAST = {"backoff_s": 0.001, "max_backoff_s": 0.01, "api_key_env": "TW_TEST_KEY"}


def one_sentence(message: str) -> bool:
    return message.endswith(".") and ". " not in message and "\n" not in message


# ---------------------------------------------------------------------------------------- the test server


class FakeOpenAI:
    """Script, state and bookkeeping of the loopback server."""

    def __init__(self, answer: Callable[[dict[str, Any]], str] | None = None) -> None:
        self.answer = answer or (lambda body: "a:" + body["messages"][-1]["content"][:3])
        self.script: list[str] = []
        self.retry_after = "0"
        self.delay_s = 0.03  # every good reply takes a moment, so requests overlap
        self.slow_s = 1.0
        self.rejects_format = False
        self.refuse: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None  # an HTTP 400's error, or None
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = self.attempts = 0
        self.served: list[tuple[str, dict[str, Any]]] = []  # (last user message, usage) of each good reply
        self.bodies: list[dict[str, Any]] = []
        self.served_prompts: list[str] = []  # the whole prompt of each good reply
        self.auth: set[str] = set()

    def usage(self, body: dict[str, Any]) -> dict[str, Any]:
        prompt = sum(len(m["content"].encode()) for m in body["messages"])
        return {"prompt_tokens": prompt, "completion_tokens": 2, "total_tokens": prompt + 2,
                "prompt_tokens_details": {"cached_tokens": 1}}


def _handler(server: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self._done()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            self._open = True
            with server.lock:
                server.attempts += 1
                server.in_flight += 1
                server.max_in_flight = max(server.max_in_flight, server.in_flight)
                server.bodies.append(body)
                server.auth.add(self.headers.get("Authorization", ""))
                fault = server.script.pop(0) if server.script else "ok"
            try:
                self._reply(fault, body)
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                self._done()

        def _done(self) -> None:
            """The request leaves the in-flight count once, before its reply is written: counted after the write, a
            loaded machine let the client's next request arrive first and saw one request too many in flight."""
            with server.lock:
                if getattr(self, "_open", False):
                    self._open = False
                    server.in_flight -= 1

        def _reply(self, fault: str, body: dict[str, Any]) -> None:
            if fault == "429":
                return self._send(429, {"error": {"message": "slow down"}}, {"Retry-After": server.retry_after})
            if fault in ("500", "503"):
                return self._send(int(fault), {"error": {"message": "overloaded"}})
            if fault == "401":
                return self._send(401, {"error": {"message": f"Incorrect API key provided: {KEY}"}})
            if fault == "400-echo":
                return self._send(400, {"error": {"message": f"bad request from key {KEY}"}})
            if fault == "malformed":
                return self._send(200, b'{"choices": [ {"message": ')
            refusal = server.refuse(body) if server.refuse else None
            if refusal is not None:
                return self._send(400, {"error": refusal})
            if server.rejects_format and "response_format" in body:
                return self._send(400, {"error": {"message": "response_format json_schema is not supported"}})
            if fault == "slow":
                time.sleep(server.slow_s)  # the client has given up by now: not served
                return self._send(200, self._completion(body))
            time.sleep(server.delay_s)
            completion = self._completion(body)
            with server.lock:
                server.served.append((body["messages"][-1]["content"], completion["usage"]))
                server.served_prompts.append(json.dumps(body["messages"]))
            self._send(200, completion)

        def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
            text = server.answer(body)
            if "response_format" in body:
                text = json.dumps({"label": text})
            return {"id": "x", "object": "chat.completion", "model": body["model"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": "stop"}], "usage": server.usage(body)}

    return Handler


@pytest.fixture
def server():
    state = FakeOpenAI()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("TW_TEST_KEY", KEY)


def backend(server: FakeOpenAI, **options: Any):
    return load_backend("openai:test-model", base_url=server.url, prices=PRICES, **{**FAST, **options})


def requests(n: int, **kw: Any) -> list[GenerationRequest]:
    return [GenerationRequest(prompt=messages(("system", "Answer briefly."), ("user", f"q{i:02d} " + "x" * 40)),
                              max_new_tokens=4, **kw) for i in range(n)]


# ---------------------------------------------------------------------------------------- retries and accounting


def test_a_batch_survives_every_fault_answered_once_in_order_with_exact_accounting(server):
    server.script = ["429", "500", "503", "malformed", "slow"]
    server.slow_s = 1.5
    b = backend(server, max_concurrency=3, timeout_s=0.5)
    reqs = requests(12)
    out = b.generate(reqs)
    assert [g.text for g in out] == [f"a:q{i:02d}" for i in range(12)]  # in request order
    served = Counter(message for message, _ in server.served)
    assert sorted(served) == sorted(r.prompt[-1].content for r in reqs) and set(served.values()) == {1}
    assert b.retries == 5 and b.calls == 12 and server.attempts == 17
    usages = [u for _, u in server.served]
    assert sum(g.prompt_tokens for g in out) == sum(u["prompt_tokens"] for u in usages) == b.info["prompt_tokens"]
    assert sum(g.completion_tokens for g in out) == sum(u["completion_tokens"] for u in usages) == 24
    assert sum(g.cached_tokens for g in out) == 12 == b.info["cached_tokens"]
    expected = sum(b.cap.cost(prompt_tokens=u["prompt_tokens"], cached_tokens=1, completion_tokens=2) for u in usages)
    assert b.spent_usd == pytest.approx(expected) and b.info["spent_usd"] == pytest.approx(expected)
    # the slow and the malformed reply may have been billed without an answer: booked at their worst case
    assert b.info["unconfirmed_usd"] == pytest.approx(2 * b.cap.worst_case_usd(reqs[0]))
    assert all(g.latency_s > 0 and g.batch_size == 1 for g in out)
    assert server.max_in_flight <= 3 + 1  # + the slow reply the client abandoned
    b.close()


def test_concurrency_never_exceeds_the_limit(server):
    server.delay_s = 0.05
    b = backend(server, max_concurrency=3)
    assert b.max_batch_size == 3
    b.generate(requests(16))
    assert server.max_in_flight == 3  # used, and never passed
    b.close()


def test_retry_after_is_honoured(server):
    server.script, server.retry_after = ["429"], "1"
    b = backend(server)
    start = time.perf_counter()
    b.generate(requests(1))
    assert time.perf_counter() - start >= 0.95 and b.retries == 1
    b.close()


def test_retry_after_headers_are_read():
    assert _retry_after(httpx.Headers({"retry-after": "2"})) == 2.0
    assert _retry_after(httpx.Headers({"retry-after-ms": "250", "retry-after": "9"})) == 0.25
    soon = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 < _retry_after(httpx.Headers({"retry-after": soon})) <= 31
    assert _retry_after(httpx.Headers({"retry-after": "soon"})) is None
    assert _retry_after(httpx.Headers({})) is None


def test_generation_settings_pass_through(server):
    b = backend(server)
    req = GenerationRequest(prompt=messages(("user", "hello")), max_new_tokens=7, stop=("\n",), temperature=0.5,
                            seed=11)
    b.generate([req])
    sent = server.bodies[-1]
    assert sent["model"] == "test-model" and sent["messages"] == [{"role": "user", "content": "hello"}]
    assert (sent["max_tokens"], sent["stop"], sent["temperature"], sent["seed"]) == (7, ["\n"], 0.5, 11)
    assert "response_format" not in sent and server.auth == {f"Bearer {KEY}"}
    assert b.can_score is False
    b.close()


# ---------------------------------------------------------------------------------------- errors


def test_401_is_one_sentence_and_not_retried(server):
    server.script = ["401"]
    b = backend(server)
    with pytest.raises(BackendError) as err:
        b.generate(requests(1))
    message = str(err.value)
    assert one_sentence(message) and "HTTP 401" in message and "test-model" in message and server.url in message
    assert "TW_TEST_KEY" in message and KEY not in message
    assert server.attempts == 1 and b.retries == 0
    b.close()


def test_unreachable_endpoint_fails_in_one_sentence_after_retries():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    b = load_backend("openai:test-model", base_url=f"http://127.0.0.1:{port}/v1", max_retries=2, **FAST)
    with pytest.raises(BackendError) as err:
        b.generate(requests(1))
    message = str(err.value)
    assert one_sentence(message) and f"127.0.0.1:{port}" in message and "after 3 attempts" in message
    assert b.retries == 2
    b.close()


def test_bad_options_are_one_sentence_errors(server, tmp_path):
    with pytest.raises(BackendError, match="cannot be enforced") as err:
        load_backend("openai:unpriced-model", base_url=server.url, budget_usd=1.0)
    assert one_sentence(str(err.value))
    with pytest.raises(BackendError, match="NO_SUCH_VAR"):
        load_backend("openai:m", base_url=server.url, api_key_env="NO_SUCH_VAR")
    with pytest.raises(BackendError, match="cannot be read"):
        load_backend("openai:m", base_url=server.url, api_key_file=tmp_path / "missing")
    with pytest.raises(BackendError, match="http"):
        load_backend("openai:m", base_url="ftp://example.invalid/v1")
    with pytest.raises(BackendError, match="openai:<model>"):
        load_backend("openai:")


# ---------------------------------------------------------------------------------------- money cap


def test_money_cap_refuses_the_call_that_could_exceed_it_and_keeps_what_was_computed(server, tmp_path):
    reqs = requests(4)
    probe = MoneyCap(what="x", budget_usd=None, price=("test-model", _price()))
    worst = probe.worst_case_usd(reqs[0])
    usage = server.usage({"messages": [{"content": m.content} for m in reqs[0].prompt]})
    cost = probe.cost(prompt_tokens=usage["prompt_tokens"], cached_tokens=1, completion_tokens=2)
    assert worst / 2 <= cost < worst
    budget = 2 * cost + worst / 2  # two calls fit; the third could pass the budget
    with Store(tmp_path / "store") as store:
        cached = CachedBackend(backend(server, max_concurrency=1, budget_usd=budget), store)
        with pytest.raises(BackendError) as err:
            cached.generate(reqs)
        message = str(err.value)
        assert one_sentence(message) and f"would exceed the budget of ${budget:g} (spent ${2 * cost:.4f}" in message
        assert len(server.served) == 2 and store.count_calls() == 2  # what was paid for is in the cache
        assert cached.inner.spent_usd == pytest.approx(2 * cost) and cached.inner.spent_usd <= budget
        more = CachedBackend(backend(server, max_concurrency=1, budget_usd=10 * budget), store)
        out = more.generate(reqs)
        assert [g.text for g in out] == [f"a:q{i:02d}" for i in range(4)]
        assert (more.hits, more.misses, len(server.served)) == (2, 2, 4)  # nothing paid twice


def test_a_batch_that_could_exceed_the_budget_is_refused_before_anything_is_sent(server):
    reqs = requests(3)
    b = backend(server, max_concurrency=3, budget_usd=2.5 * backend(server).cap.worst_case_usd(reqs[0]))
    with pytest.raises(BackendError, match="next 3 request"):
        b.generate(reqs)
    assert server.attempts == 0 and b.spent_usd == 0
    assert len(b.generate(reqs[:2])) == 2  # the cap's reservations were freed


def _price():
    from tunewise.costs import ApiPrice

    return ApiPrice(**PRICES["api"]["test-model"])


# ---------------------------------------------------------------------------------------- constrained generation


def test_choices_are_sent_as_a_strict_json_schema_and_the_label_comes_back(server):
    server.answer = lambda body: "no"
    b = backend(server)
    (g,) = b.generate(requests(1, choices=("yes", "no", "yes")))
    assert g.text == "no"
    fmt = server.bodies[-1]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    assert schema["properties"]["label"]["enum"] == ["yes", "no"] and schema["required"] == ["label"]
    assert schema["additionalProperties"] is False
    b.close()


def test_an_endpoint_that_rejects_response_format_gets_plain_generation_from_then_on(server):
    server.rejects_format = True
    server.answer = lambda body: "The answer is yes"
    b = backend(server, max_concurrency=1)
    out = b.generate(requests(3, choices=("yes", "no")))
    assert [g.text for g in out] == ["The answer is yes"] * 3  # raw text: the caller maps it to a label
    assert b.plain_only and "plain generation" in b.info["constrained_generation"]
    assert ["response_format" in body for body in server.bodies] == [True, False, False, False]
    assert b.retries == 0
    b.close()


def test_to_json_leaves_out_empty_choices_so_cache_keys_do_not_change():
    req = GenerationRequest(prompt=messages(("user", "hi")), max_new_tokens=5)
    old = {"prompt": [{"role": "user", "content": "hi"}], "max_new_tokens": 5, "stop": [], "temperature": 0.0,
           "seed": 0}
    blob = json.dumps({"backend": "fp", "kind": "generate", "request": old}, sort_keys=True)
    assert json.loads(json.dumps(req.to_json())) == old
    assert call_key("fp", "generate", req) == hashlib.sha256(blob.encode()).hexdigest()
    constrained = GenerationRequest(prompt=req.prompt, max_new_tokens=5, choices=("a", "b"))
    assert constrained.to_json()["choices"] == ("a", "b")
    assert call_key("fp", "generate", constrained) != call_key("fp", "generate", req)


# ---------------------------------------------------------------------------------------- secrets


def test_the_api_key_never_leaks(server, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)  # httpx and httpcore debug logs included
    key_file = tmp_path / "key.txt"
    key_file.write_text(KEY + "\n")
    seen: list[str] = []
    with Store(tmp_path / "store") as store:
        for options in ({}, {"api_key_file": key_file, "api_key_env": None}):
            b = backend(server, **options)
            cached = CachedBackend(b, store)
            server.script = ["429", "malformed"]
            out = cached.generate(requests(2))
            seen += [json.dumps(g.to_json()) for g in out] + [b.fingerprint(), json.dumps(b.info), repr(b),
                                                              repr(vars(b))]
            for fault in ("401", "400-echo"):
                server.script = [fault]
                with pytest.raises(BackendError) as err:
                    b.generate(requests(1))
                seen += [str(err.value), repr(err.value), str(err.value.__cause__), str(err.value.__context__)]
            b.close()
    with pytest.raises(BackendError) as err:
        load_backend("openai:test-model", base_url="http://127.0.0.1:9/v1", max_retries=0, **FAST).generate(
            requests(1))
    seen.append(str(err.value))
    assert server.auth == {f"Bearer {KEY}"}  # the key was sent, to the server only
    assert "<key>" in " ".join(seen)  # a server that echoes the key has it masked
    db = b"".join(p.read_bytes() for p in (tmp_path / "store").rglob("*") if p.is_file())
    for text in [*seen, caplog.text, db.decode("utf-8", "replace")]:
        assert KEY not in text and KEY[8:] not in text


# ---------------------------------------------------------------------------------------- the official client


def test_the_official_openai_client_is_not_needed(server):
    code = (
        "import sys; sys.modules['openai'] = None\n"  # `import openai` now fails
        "from tunewise.backends import load_backend\n"
        "from tunewise.backends.base import GenerationRequest, messages\n"
        f"b = load_backend('openai:test-model', base_url={server.url!r})\n"
        "print(b.generate([GenerationRequest(prompt=messages(('user', 'q42')))])[0].text)\n"
        "assert 'openai' not in {m.split('.')[0] for m, v in sys.modules.items() if v}\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OPENAI_API_KEY": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "a:q42"


# ---------------------------------------------------------------------------------------- the task file and a run


LABELS = ["card_arrival", "exchange_rate", "top_up"]
WORDS = {"card_arrival": "when will my new card arrive", "exchange_rate": "what exchange rate do you use",
         "top_up": "top up my account with money"}


def _label_of(body: dict[str, Any]) -> str:
    last_user = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
    query = set(last_user.removeprefix("Input: ").split())
    return next(label for label, words in WORDS.items() if set(words.split()) <= query)


def write_task(tmp_path: Path, url: str, extra: str = "") -> Path:
    rng = random.Random(0)

    def rows(n: int, offset: int) -> str:
        out = []
        for i in range(n):
            label = LABELS[i % len(LABELS)]
            words = WORDS[label].split()
            rng.shuffle(words)
            out.append(json.dumps({"text": " ".join(words) + f" #{offset + i}", "label": label}))
        return "\n".join(out) + "\n"

    (tmp_path / "train.jsonl").write_text(rows(30, 0))
    (tmp_path / "test.jsonl").write_text(rows(12, 1000))
    task = tmp_path / "task.yaml"
    task.write_text(
        "name: api\nkind: classification\ndata: {train: train.jsonl, test: test.jsonl}\nembedder: hashing\n"
        "model: openai:test-model\nconstraints: {budget_usd: 50}\n"
        f"backend: {{base_url: '{url}', api_key_env: TW_TEST_KEY, max_concurrency: 3, backoff_s: 0.001,"
        " prices: {api: {test-model: {input: 1, output: 2}}}}\n" + extra)
    return task


def test_run_task_on_an_openai_endpoint_end_to_end(server, tmp_path):
    server.answer = _label_of
    server.script = ["429", "500", "malformed"]
    outcome = run_task(load_task(write_task(tmp_path, server.url)), rungs=["zero_shot", "few_shot_random"])
    rungs = {r.name: r for r in outcome.results.rungs}
    assert all(r.status == "finished" for r in rungs.values()), [r.error for r in rungs.values()]
    for r in rungs.values():
        assert r.metrics["accuracy"].value == 1.0
        assert {p.parse_rule for p in r.predictions} == {
            "constrained generation: backend has no log-probabilities (exact)"}
    usages = [u for _, u in server.served]
    assert set(Counter(server.served_prompts).values()) == {1}  # no request answered twice
    zero_shot = rungs["zero_shot"].predictions  # one call per example (few_shot_random also measures stability)
    served = dict(zip(server.served_prompts, usages))
    assert len(zero_shot) == 12 and sum(p.prompt_tokens for p in zero_shot) == sum(
        u["prompt_tokens"] for prompt, u in served.items() if '"role": "assistant"' not in prompt)
    info = outcome.results.environment["backend"]
    assert info["calls"] == len(usages) and info["retries"] == 3 and info["budget_usd"] == 50  # from constraints
    assert info["prompt_tokens"] == sum(u["prompt_tokens"] for u in usages)
    assert info["completion_tokens"] == sum(u["completion_tokens"] for u in usages) == 2 * len(usages)
    expected = sum(((u["prompt_tokens"] - 1) * 1 + 1 * 1 + 2 * 2) / 1e6 for u in usages)
    assert info["spent_usd"] == pytest.approx(expected)
    assert server.max_in_flight <= 3
    files = [outcome.results_path, outcome.summary_path, *outcome.report_path.parent.iterdir(),
             *(tmp_path / ".tunewise").rglob("*")]
    for path in files:
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    again = run_task(load_task(write_task(tmp_path, server.url)), rungs=["zero_shot", "few_shot_random"])
    assert again.reused == ("zero_shot", "few_shot_random") and len(server.served) == len(usages)


def test_chain_of_thought_answers_by_constrained_generation_after_its_reasoning(server, tmp_path):
    server.answer = lambda body: "It is about " + _label_of(body) if "response_format" not in body else _label_of(body)
    outcome = run_task(load_task(write_task(tmp_path, server.url)), rungs=["cot"], report=False)
    (cot,) = outcome.results.rungs
    assert cot.status == "finished" and cot.metrics["accuracy"].value == 1.0, cot.error
    constrained = [body for body in server.bodies if "response_format" in body]
    assert len(constrained) == 12 and all(body["messages"][-1]["role"] == "assistant" for body in constrained)
    assert constrained[0]["messages"][-1]["content"].startswith("It is about ")
    assert all(p.parse_rule.startswith("constrained generation") for p in cot.predictions)


def test_task_backend_section(server, tmp_path):
    spec = load_task(write_task(tmp_path, server.url, extra=""))
    options = backend_options(spec, None)
    assert options["budget_usd"] == 50 and options["max_concurrency"] == 3 and "max_retries" not in options
    key_file = tmp_path / "secrets" / "key"
    (tmp_path / "task2.yaml").write_text((tmp_path / "task.yaml").read_text().replace(
        "api_key_env: TW_TEST_KEY", "api_key_file: secrets/key, budget_usd: null"))
    options = backend_options(load_task(tmp_path / "task2.yaml"), None)
    assert options["api_key_file"] == key_file and "budget_usd" not in options
    assert backend_options(spec.model_copy(update={"model": "fake:random"}), None) == {}  # --model override
    faster = tmp_path / "task3.yaml"
    faster.write_text((tmp_path / "task.yaml").read_text().replace("max_concurrency: 3", "max_concurrency: 8"))
    assert load_task(faster).fingerprint() == spec.fingerprint()  # limits do not change answers
    elsewhere = tmp_path / "task4.yaml"
    elsewhere.write_text((tmp_path / "task.yaml").read_text().replace(server.url, "http://127.0.0.1:1/v1"))
    assert load_task(elsewhere).fingerprint() != spec.fingerprint()
    plain = tmp_path / "task5.yaml"
    plain.write_text((tmp_path / "task.yaml").read_text().replace("model: openai:test-model", "model: fake:random"))
    with pytest.raises(TaskSpecError, match="only applies to openai: models"):
        load_task(plain)
    typo = tmp_path / "task6.yaml"
    typo.write_text((tmp_path / "task.yaml").read_text().replace("max_concurrency", "max_concurency"))
    with pytest.raises(TaskSpecError, match="backend.max_concurency"):
        load_task(typo)


def test_the_readme_api_example_is_a_valid_task(monkeypatch):
    import yaml

    from tunewise.task import parse_task

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## API models (OpenAI-compatible endpoints)", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    spec = parse_task({**yaml.safe_load(block), "data": {"train": "t.jsonl", "test": "t.jsonl"}})
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    b = load_backend(spec.model, **backend_options(spec, None))
    assert (b.endpoint, b.max_concurrency, b.cap.budget_usd, b.key_source) == (
        "https://api.openai.com/v1", 4, 20, "environment variable OPENAI_API_KEY")
    b.close()
    local = parse_task({"model": "openai:llama3.2:1b", "data": {"train": "t", "test": "t"},
                        "constraints": {"budget_usd": 5}, "backend": yaml.safe_load(
                            'prices: {api: {"llama3.2:1b": {input: 0, output: 0}}}')})
    b = load_backend(local.model, **backend_options(local, None))
    assert b.cap.price[0] == "llama3.2:1b" and b.model == "llama3.2:1b"
    b.close()


def test_a_json_schema_request_asks_for_that_schema_as_response_format():
    from tunewise.backends.openai import _payload

    schema = {"type": "object", "required": ["intent"], "properties": {"intent": {"type": "string"}}}
    request = GenerationRequest(prompt=messages(("user", "play jazz")), max_new_tokens=80, json_schema=schema)
    payload = _payload("m", request, constrained=True)
    assert payload["response_format"] == {"type": "json_schema",
                                          "json_schema": {"name": "answer", "strict": False, "schema": schema}}
    assert "response_format" not in _payload("m", request, constrained=False)  # the endpoint rejected it
