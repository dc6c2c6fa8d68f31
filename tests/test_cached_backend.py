"""The call cache over a real store and the real fake backend."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tunewise.backends import load_backend
from tunewise.backends.base import (
    Backend,
    Generation,
    GenerationRequest,
    ScoreRequest,
    messages,
)
from tunewise.backends.cached import CachedBackend, call_key
from tunewise.backends.fake import CALL_LOG_ENV
from tunewise.store import Store

LABELS = ("yes", "no")


def request(i: int, **kw) -> GenerationRequest:
    return GenerationRequest(prompt=messages(("user", f"Question {i}?\n- yes\n- no")), **kw)


def score_request(i: int) -> ScoreRequest:
    return ScoreRequest(prompt=messages(("user", f"Question {i}?")), choices=LABELS)


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "store") as s:
        yield s


def test_second_call_is_served_from_the_store_with_equal_results(store):
    inner = load_backend("fake:random?delay=0.001")
    cached = CachedBackend(inner, store)
    first = cached.generate([request(i) for i in range(4)])
    assert (cached.hits, cached.misses, inner.calls, store.count_calls()) == (0, 4, 4, 4)
    second = cached.generate([request(i) for i in range(4)])
    assert second == first  # latency included: the original measurement is replayed
    assert (cached.hits, cached.misses, inner.calls) == (4, 4, 4)


def test_mixed_hits_and_misses_keep_request_order(store):
    inner = load_backend("fake:echo")
    inner.max_batch_size = 8
    cached = CachedBackend(inner, store)
    cached.generate([request(1), request(3)])
    batch = [request(i) for i in range(5)]
    sent = []
    original = inner.generate
    inner.generate = lambda reqs: sent.append(list(reqs)) or original(reqs)
    out = cached.generate(batch)
    assert [g.text for g in out] == [r.prompt[-1].content for r in batch]
    assert sent == [[request(0), request(2), request(4)]]  # one call, misses only, in order
    assert (cached.hits, cached.misses) == (2, 5)


def test_duplicates_in_one_batch_are_computed_once(store):
    inner = load_backend("fake:random")
    cached = CachedBackend(inner, store)
    out = cached.generate([request(1), request(2), request(1), request(1)])
    assert inner.calls == 2 and out[0] == out[2] == out[3]
    assert (cached.hits, cached.misses) == (2, 2)


def test_scores_are_cached_too(store):
    inner = load_backend("fake:random")
    cached = CachedBackend(inner, store)
    first = cached.score([score_request(i) for i in range(3)])
    again = cached.score([score_request(2), score_request(0)])
    assert again == [first[2], first[0]] and inner.calls == 3
    assert isinstance(again[0].logprobs, tuple)


def test_generate_and_score_keys_never_collide(store):
    fingerprint = load_backend("fake:random").fingerprint()
    assert call_key(fingerprint, "generate", request(1)) != call_key(fingerprint, "score", request(1))


def test_cache_is_keyed_by_fingerprint_and_request_settings(store):
    a = CachedBackend(load_backend("fake:random"), store)
    a.generate([request(1)])
    other_seed = CachedBackend(load_backend("fake:random?seed=5"), store)
    other_seed.generate([request(1)])
    a.generate([request(1, max_new_tokens=3)])
    assert (other_seed.misses, a.misses, store.count_calls()) == (1, 2, 3)
    same_weights = CachedBackend(load_backend("fake:random?delay=0.001"), store)  # delay is not identity
    same_weights.generate([request(1)])
    assert same_weights.hits == 1


def test_cache_persists_across_store_instances(tmp_path):
    with Store(tmp_path) as store:
        first = CachedBackend(load_backend("fake:random"), store).generate([request(i) for i in range(3)])
    inner = load_backend("fake:random")
    with Store(tmp_path) as reopened:
        cached = CachedBackend(inner, reopened)
        assert cached.generate([request(i) for i in range(3)]) == first
    assert inner.calls == 0 and cached.hits == 3


def test_delegates_identity_and_capabilities(store):
    inner = load_backend("fake:echo")
    cached = CachedBackend(inner, store)
    assert (cached.name, cached.can_score, cached.fingerprint()) == (inner.name, True, inner.fingerprint())
    assert cached.count_tokens("a b c") == 3 and cached.info is inner.info


class GenerateOnly(Backend):
    """A backend without ``score``: the base class's NotImplementedError must come through."""

    def generate(self, requests):
        return [Generation(text="x", prompt_tokens=1, completion_tokens=1, latency_s=0.0) for _ in requests]


def test_backend_that_cannot_score_keeps_its_error(store):
    cached = CachedBackend(GenerateOnly("plain:gen"), store)
    assert cached.can_score is False
    with pytest.raises(NotImplementedError):
        cached.score([score_request(1)])


def test_inner_failure_keeps_finished_calls_only(store):
    inner = load_backend("fake:random")
    inner.fail_on = "Question 2"
    cached = CachedBackend(inner, store)
    with pytest.raises(Exception, match="told to fail"):
        cached.generate([request(1), request(2)])
    assert store.count_calls() == 1  # request 1's call finished and is kept; the failed one is not
    assert cached.generate([request(1)]) and cached.hits == 1


def test_misses_go_to_the_inner_backend_in_calls_of_max_batch_size(store):
    inner = load_backend("fake:echo")
    inner.max_batch_size = 2
    sent = []
    original = inner.generate
    inner.generate = lambda reqs: sent.append(len(reqs)) or original(reqs)
    CachedBackend(inner, store).generate([request(i) for i in range(5)])
    assert sent == [2, 2, 1] and store.count_calls() == 5


_SCRIPT = """
import sys
from tunewise.backends import load_backend
from tunewise.backends.base import GenerationRequest, messages
from tunewise.backends.cached import CachedBackend
from tunewise.store import Store
with Store(sys.argv[1]) as store:
    backend = CachedBackend(load_backend("fake:random"), store)
    out = backend.generate([GenerationRequest(prompt=messages(("user", f"q{i}"))) for i in range(int(sys.argv[2]))])
    print(backend.hits, backend.misses, "|".join(g.text for g in out))
"""


def test_a_new_process_replays_calls_instead_of_calling_the_model(tmp_path):
    log = tmp_path / "calls.log"
    env = {**os.environ, CALL_LOG_ENV: str(log)}

    def run(n: int) -> list[str]:
        cmd = [sys.executable, "-c", _SCRIPT, str(tmp_path / "store"), str(n)]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout.split()

    hits1, misses1, texts1 = run(3)
    hits2, misses2, texts2 = run(5)
    assert (hits1, misses1, hits2, misses2) == ("0", "3", "3", "2")
    assert texts2.split("|")[:3] == texts1.split("|")
    assert len(log.read_text().splitlines()) == 5  # the model served each distinct request once
