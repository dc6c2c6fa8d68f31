"""Budgets hold for long answers (issue 14, measured on snips_slots): a generating rung is estimated from its answer
budget, its single-request latency sample is bounded and counted, an evaluation a few examples short of the end is
not thrown away, and extraction has a baseline without an LLM (the nearest training example's answer)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tunewise.evaluation.records import Prediction
from tunewise.ladder.attempt import past_deadline, single_requests
from tunewise.ladder.planning import plan
from tunewise.ladder.policy import PlannedRung, Pricing, estimate_cost
from tunewise.run import run_task
from tunewise.task import RungSpec, load_task

from .test_run import write_extraction

CPU = Pricing(device="cpu", usd_per_second=0.10 / 3600)


def _extraction(tmp: Path, *, words: int = 40) -> Path:
    return write_extraction(tmp, long_words=words)


def test_generation_prior_grows_with_the_answer_budget():
    short = estimate_cost(PlannedRung("zero_shot", "prompt_generate", answer_tokens=32), {}, 100, CPU)
    long = estimate_cost(PlannedRung("zero_shot", "prompt_generate", answer_tokens=158), {}, 100, CPU)
    assert short.seconds == pytest.approx(70.0)  # the BANKING77 prior, unchanged at the old 32-token budget
    # snips_slots on SmolLM2-135M: 158-token JSON answers took 2.6 s/example batched (the old prior said 0.7)
    assert 240 <= long.seconds <= 290 and "158-token answers" in long.basis
    scored = estimate_cost(PlannedRung("zero_shot", "prompt_score", answer_tokens=158), {}, 100, CPU)
    assert scored.seconds == pytest.approx(200.0)  # label scoring does not generate the answer


def test_plan_records_the_answer_budget_of_a_generating_rung(tmp_path):
    spec = load_task(_extraction(tmp_path))
    from tunewise.data import load_splits

    splits = load_splits(spec)
    rung = RungSpec(name="zero_shot", strategy="prompt", params={"mode": "score"})
    planned = plan(rung, spec, splits.train)
    assert planned.answer_tokens > 60  # about 4 characters a token for the fake model, x 1.25 + 8
    fixed = plan(rung.model_copy(update={"params": {"mode": "score", "max_new_tokens": 40}}), spec, splits.train)
    assert fixed.answer_tokens == 40


def test_an_evaluation_stops_as_soon_as_it_cannot_finish_and_finishes_when_nearly_done():
    assert not past_deadline(elapsed=200, done=96, total=100, deadline_s=240)
    assert not past_deadline(elapsed=244, done=96, total=100, deadline_s=240)  # 254 s projected: within 10%
    assert past_deadline(elapsed=244, done=50, total=100, deadline_s=240)
    assert past_deadline(elapsed=300, done=96, total=100, deadline_s=240)
    assert not past_deadline(elapsed=10_000, done=100, total=100, deadline_s=240)  # nothing left to stop
    # snips_slots, zero_shot@gemma3-270m: 16 of 140 in 100 s projects 875 s; 600 s left: stop now, not at 600 s
    assert past_deadline(elapsed=100, done=16, total=140, deadline_s=600)
    assert not past_deadline(elapsed=60, done=16, total=140, deadline_s=600)  # 525 s projected
    # a tuned rung trained for 500 s first: the evaluation's pace alone is projected
    assert not past_deadline(elapsed=520, done=16, total=140, deadline_s=700, fixed_s=500)
    assert past_deadline(elapsed=520, done=16, total=140, deadline_s=500, fixed_s=500)


class _Slow:
    uses_llm = True
    rung = "slow"

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, examples, *, backend=None):
        self.calls += 1
        time.sleep(0.05)
        return [Prediction(example_id=e.id, output="x", latency_s=0.05) for e in examples]


def test_single_request_latency_sample_stops_at_its_time_allowance():
    from tunewise.data.examples import Example

    examples = [Example(id=str(i), text=f"t{i}", target="x") for i in range(16)]
    slow = _Slow()
    out = single_requests(examples, slow, None, allowance_s=0.2)
    assert 3 <= slow.calls < 16
    assert out["single_request_n"] == slow.calls
    assert out["single_request_wall_s"] >= 0.05 * slow.calls
    assert f"{slow.calls} dev examples" in out["single_request_basis"]
    few = _Slow()
    single_requests(examples, few, None, allowance_s=0.0)
    assert few.calls == 3  # a latency needs a few requests even without time left


def test_single_request_time_counts_against_the_budget():
    from tunewise.costs import load_prices
    from tunewise.ladder.planning import observe
    from tunewise.results import RungResult

    usage = {"model_seconds": 10.0, "requests": 20, "single_request_wall_s": 30.0}
    result = RungResult(name="zero_shot", strategy="prompt", status="skipped", config={}, config_hash="h",
                        usage=usage, prepare_s=1.0)
    o = observe(result, "prompt_generate", pricing=CPU, model="fake:echo", prices=load_prices(), correct=None)
    assert o.seconds == pytest.approx(41.0) and o.eval_seconds == pytest.approx(10.0)


def test_extraction_has_a_nearest_neighbour_baseline(tmp_path):
    spec = load_task(_extraction(tmp_path, words=2))
    outcome = run_task(spec, rungs=["knn"], report=False)
    knn = outcome.results.rungs[0]
    assert knn.status == "finished" and knn.model is None
    assert knn.metrics["field_f1"].value > 0.5  # same intent, one of three artists
    first = knn.predictions[0]
    assert isinstance(first.output, dict) and first.output["intent"] == "PlayMusic"
    from tunewise.ladder.catalogue import DEFAULT_LADDER

    assert DEFAULT_LADDER["extraction"][0] == "knn" and DEFAULT_LADDER["generation"][0] == "knn"


def test_summary_names_the_metric_when_no_rung_finished(tmp_path):
    import dataclasses

    from tunewise.summary import summary_markdown

    outcome = run_task(load_task(_extraction(tmp_path)), rungs=["knn"], report=False)
    knn = outcome.results.rungs[0]
    stopped = dataclasses.replace(knn, status="skipped", reason="stopped to stay within budget", metrics={})
    summary = summary_markdown(dataclasses.replace(outcome.results, rungs=(stopped,)))
    header = summary.split("## Rungs", 1)[1].splitlines()[0]
    assert header == " (test n = 8; field_f1 in %, 95% CI)", header


def test_a_rung_that_cannot_finish_stops_after_its_first_chunk_and_records_its_pace(tmp_path, monkeypatch):
    """A model too slow for the budget (simulated: every projection overruns) is stopped after its first chunk; the
    examples it scored are replayed from the call cache, so the result records the pace the policy learns from."""
    import tunewise.ladder.attempt as attempt_module

    from .test_run import write_task

    task = write_task(tmp_path, n_test=40)
    task.write_text(task.read_text() + "constraints: {budget_hours: 1}\n")
    monkeypatch.setattr(attempt_module, "past_deadline", lambda elapsed, done, total, deadline_s, fixed_s=0.0:
                        done < total)
    outcome = run_task(load_task(task), rungs=None, report=False)
    stopped = [r for r in outcome.results.rungs if r.reason and "at the pace so far" in r.reason]
    assert stopped, [(r.name, r.reason) for r in outcome.results.rungs]
    first = stopped[0]
    assert first.status == "skipped" and first.usage["requests"] == 16 and "after 16 of 40" in first.reason
    assert "seconds" not in first.reason and first.prepare_s is not None
