"""The optimized prompt rung (issue 16, item 1): bootstrapped demonstrations and instruction variants searched on
dev within a call budget; the winner is scored on test like any rung, its search is its one-off cost, and the
search replays from the call cache."""

from __future__ import annotations

import pytest

from tunewise.backends.fake import FakeBackend
from tunewise.ladder.planning import plan
from tunewise.ladder.policy import PlannedRung, Pricing, estimate_cost
from tunewise.run import run_task
from tunewise.task import load_task

from .test_run import WORDS, write_task

HINT = "Read the whole input carefully"


def careful_only(prompt) -> str:
    """A model that answers right only under the second instruction variant (else always 'top_up')."""
    text = "\n".join(m.content for m in prompt)
    query = prompt[-1].content
    if HINT not in text:
        return "top_up"
    return next(label for label, words in WORDS.items() if set(words.split()) <= set(query.replace("#", " ").split()))


def _task(tmp_path, params: str = ""):
    return write_task(tmp_path, extra="rungs:\n  - {name: optimized, strategy: optimize, params: {mode: generate, k: 2, "
                      f"candidates: 2, max_calls: 120, dev_limit: 6{params}}}}}\n")


def test_the_search_finds_the_instruction_that_works_on_dev_and_test_agrees(tmp_path):
    task = _task(tmp_path)
    backend = FakeBackend("fake:random", script=careful_only)
    outcome = run_task(load_task(task), backend=backend, report=False)
    (rung,) = outcome.results.rungs
    assert rung.status == "finished", rung.error or rung.reason
    opt = rung.extras["optimization"]
    assert opt["winner"]["instruction"] == 1 and opt["winner"]["dev_score"] == 1.0
    assert HINT in rung.config["instructions"] and rung.config["strategy"] == "optimize"
    assert rung.primary.value == 1.0  # the winner on test
    assert opt["dev_examples"] == 6 and opt["calls"] <= 120 + 6  # the budget, overshot by one dev pass at most
    assert all(t["dev_score"] <= 1.0 for t in opt["trials"]) and len(opt["trials"]) >= 3
    assert opt["bootstrapped"] >= 1  # zero-shot under the task's own instruction is right on top_up examples
    assert opt["prompt_tokens"] > 0 and rung.prepare_s > 0  # its one-off cost

    calls = backend.calls
    again = run_task(load_task(task), backend=backend, report=False, rungs=["optimized"])
    assert again.reused == ("optimized",) and backend.calls == calls

    from tunewise.store import Store
    from tunewise.versions import create_version, load_candidate

    with Store(tmp_path / ".tunewise") as store:
        version = create_version(store, outcome.results.run_id, "optimized")
        candidate, answer_with = load_candidate(version, store, backend=backend)
        assert HINT in candidate.config["instructions"] and backend.calls == calls  # rebuilt from the cache


def test_demonstrations_are_bootstrapped_from_train_answers_the_model_got_right(tmp_path):
    task = _task(tmp_path)
    rung = run_task(load_task(task), backend=FakeBackend("fake:random", script=lambda p: next(
        label for label, words in WORDS.items()
        if set(words.split()) <= set(p[-1].content.replace("#", " ").split()))), report=False).results.rungs[0]
    opt = rung.extras["optimization"]
    assert opt["bootstrapped"] >= 4 and opt["candidate_sets"] == 2
    train = {line for line in (tmp_path / "train.jsonl").read_text().splitlines()}
    for demo in rung.config["demonstrations"]:
        assert any(demo["text"] in line for line in train)  # demonstrations only ever come from train


def test_the_plan_prices_the_search_before_the_test_evaluation(tmp_path):
    spec = load_task(_task(tmp_path))
    from tunewise.data import load_splits
    from tunewise.ladder.catalogue import resolve_rungs

    (rung,) = resolve_rungs(spec)
    splits = load_splits(spec)
    planned = plan(rung, spec, splits.train, dev=splits.dev)
    calls = planned.search_calls
    assert planned.family == "prompt_generate_demos" and 0 < calls <= 120 + 6 and planned.screenable
    est = estimate_cost(planned, {}, 100, {None: Pricing(usd_per_second=0.0)})
    plain = estimate_cost(PlannedRung("x", "prompt_generate_demos"), {}, 100, {None: Pricing(usd_per_second=0.0)})
    assert est.seconds == pytest.approx(plain.seconds * (100 + calls) / 100) and f"{calls} search calls" in est.basis


def test_unknown_parameters_are_one_sentence(tmp_path):
    task = write_task(tmp_path, extra="rungs:\n  - {name: optimized, strategy: optimize, params: {budget: 3}}\n")
    (rung,) = run_task(load_task(task), report=False).results.rungs
    assert rung.status == "failed" and "unknown optimized parameter(s) budget" in rung.error


def test_a_named_proposer_model_adds_its_rewrites_of_the_instruction(tmp_path):
    task = _task(tmp_path, ", proposer: writer, rewrites: 2")
    text = task.read_text().replace("model: 'fake:random'\n", "models:\n  - {id: 'fake:random', name: small}\n"
                                    "  - {id: 'fake:constant:Say which intent. " + HINT + ".', name: writer}\n")
    task.write_text(text.replace("{name: optimized,", "{name: optimized, model: small,"))
    outcome = run_task(load_task(task), report=False)
    rung = {r.name: r for r in outcome.results.rungs}["optimized@small"]
    assert rung.status == "finished", rung.error or rung.reason
    instructions = rung.extras["optimization"]["instructions"]
    assert instructions[-1] == f"Say which intent. {HINT}." and len(instructions) == 4  # two equal rewrites: one


def test_sets_are_topped_up_with_labelled_train_examples_when_too_few_are_bootstrapped(tmp_path):
    """A model that answers nothing right zero-shot still gets candidate sets of gold demonstrations."""
    task = _task(tmp_path)
    rung = run_task(load_task(task), backend=FakeBackend("fake:constant:nothing"), report=False).results.rungs[0]
    opt = rung.extras["optimization"]
    assert opt["bootstrapped"] == 0 and opt["candidate_sets"] == 2
    assert {t["demonstrations"] for t in opt["trials"]} == {0, 2}  # k = 2 gold demonstrations a set


@pytest.mark.parametrize("params,n_train", [({}, 60), ({"max_calls": 40}, 60), ({"k": 0}, 60),
                                            ({"candidates": 1, "dev_limit": 3}, 300), ({"max_calls": 1000}, 300)])
def test_the_policy_prices_the_search_by_a_bound_on_its_calls_that_holds(tmp_path, params, n_train):
    """The plan's search_calls bounds the calls the search makes (an estimate below them under-prices the rung) and
    is no looser than the search's own limits allow (the static max_calls over-priced a small task's search)."""
    import json

    from tunewise.data import load_splits
    from tunewise.ladder.catalogue import resolve_rungs

    params = {"mode": "generate", "k": 2, "candidates": 2, "max_calls": 120, "dev_limit": 6, **params}
    task = write_task(tmp_path, n_train=n_train, extra="rungs:\n  - {name: optimized, strategy: optimize, params: "
                      f"{json.dumps(params)}}}\n")
    spec = load_task(task)
    splits = load_splits(spec)
    (rung,) = resolve_rungs(spec)
    planned = plan(rung, spec, splits.train, dev=splits.dev)
    outcome = run_task(spec, backend=FakeBackend("fake:random"), report=False)
    made = outcome.results.rungs[0].extras["optimization"]["calls"]
    assert made <= planned.search_calls <= params["max_calls"] + params["dev_limit"] + 16
    if n_train == 60:  # train, dev and the candidates run out before max_calls: what is left of the bootstrap
        assert planned.search_calls <= made + 60


def test_a_continuous_generation_metric_bootstraps_demonstrations_that_reach_its_threshold(tmp_path):
    """chrF is never exactly 1 for a near answer: requiring a perfect score bootstrapped no demonstration at all on a
    generation task. A demonstration is kept when its score reaches bootstrap_threshold (default: the task's target
    on the metric, else 0.5), as a DSPy metric returning score >= threshold under a trace does."""
    import json

    pairs = [{"text": f"say {w} {i} now", "label": f"{w} {i} now"} for i, w in
             enumerate(["alpha", "beta", "gamma", "delta"] * 10)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs[:32]))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs[32:]))

    def run(target: str, params: str = "") -> dict:
        (tmp_path / "task.yaml").write_text(
            "name: echo\nkind: generation\ndata: {train: train.jsonl, test: test.jsonl}\n"
            f"generation: {{metric: chrf}}\n{target}model: 'fake:echo'\nembedder: hashing\n"
            "rungs:\n  - {name: optimized, strategy: optimize, params: {k: 2, candidates: 2, max_calls: 60, "
            f"dev_limit: 4{params}}}}}\n")
        (rung,) = run_task(load_task(tmp_path / "task.yaml"), report=False).results.rungs
        assert rung.status == "finished", rung.error or rung.reason
        return rung.extras["optimization"]

    # the echo's answers score between 0.5 and 0.9 chrF against their gold answers
    assert run("")["bootstrapped"] >= 1 and run("")["bootstrap_threshold"] == 0.5
    assert run("target: {chrf: 0.95}\n")["bootstrapped"] == 0  # none reaches the task's target
    assert run("target: {chrf: 0.95}\n", ", bootstrap_threshold: 0.3")["bootstrapped"] >= 1
