"""Tuning fits the budget instead of being skipped: training estimated from tokens, a short timed trial that
re-estimates, the largest nested stratified subset that fits (or a skip below the minimum), learning-curve
sizes dropped when unaffordable, and a run past its estimate stopped, scored and marked."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from tunewise.ladder.policy import (
    Budget,
    Observed,
    PlannedRung,
    Pricing,
    estimate_cost,
    fit_tuned,
    next_action,
)
from tunewise.run import run_task
from tunewise.task import RungSpec, load_task
from tunewise.training.settings import TuneSettings
from tunewise.training.timing import StepClock, fit_sizes, minimum_examples, work_tokens

from .test_finetuning import tiny_task

CPU = Pricing(device="cpu", usd_per_second=0.10 / 3600)


def banking_like_lora(n: int = 8965, tokens_each: int = 48, labels: int = 77) -> PlannedRung:
    """A ``lora`` rung on a BANKING77-sized train split (48 tokens an example, 1 epoch above 3,000 examples)."""
    sizes = fit_sizes([tokens_each] * n, TuneSettings(), minimum=minimum_examples(labels))
    return PlannedRung("lora", "tuned", train_example_epochs=float(n), train_tokens=sizes[0][1], train_examples=n,
                       fit_sizes=sizes)


# --------------------------------------------------------------------------- the policy (pure)


def test_policy_shrinks_tuning_to_the_largest_nested_subset_that_fits_instead_of_skipping():
    lora = banking_like_lora()
    action = next_action([lora], {}, target=0.9, metric="accuracy", budget=Budget(), n_test=308, pricing=CPU)
    assert action.kind == "run" and action.rung == "lora", action.reason
    n = action.params["limit"]
    assert 154 <= n < 8965
    # all of train: 430,320 tokens x 6.1 ms = 44 min + 308 s of evaluation, over the default 30 min
    assert "training on all 8,965 examples estimated 48.9 min" in action.reason
    assert "default 0.5 h tuning budget" in action.reason
    assert f"largest nested stratified subset that fits instead: {n:,} of 8,965 examples" in action.reason
    assert action.reason.count(". ") == 0
    # the largest that fits: the next size up does not
    seconds = {size: 308 * 1.0 + 0.0061 * work for size, work in lora.fit_sizes}
    assert seconds[n] <= 1800 and action.estimate_s == pytest.approx(seconds[n])
    assert all(seconds[size] > 1800 for size in seconds if size > n)
    # the rung trains under what is left once its evaluation is paid for, and says why it was fitted
    assert action.params["time_budget_minutes"] == pytest.approx((1800 - 308) / 60, abs=0.05)
    assert action.params["fit_reason"] in action.reason
    assert Budget().tuning_hours_default == 0.5


def test_below_the_minimum_subset_a_tuning_rung_is_skipped_with_the_numbers():
    lora = banking_like_lora()
    assert lora.fit_sizes[-1][0] == 154  # 2 per label for 77 labels (at least 32)
    action = next_action([lora], {}, target=None, metric="accuracy", budget=Budget(hours=0.05), n_test=308,
                         pricing=CPU)
    assert (action.kind, action.rung) == ("skip", "lora")
    assert "even its smallest subset, 154 examples (at least 32, and 2 per label), is estimated at" in action.reason
    assert "budget_hours 0.05" in action.reason and action.params is None


def test_a_tuning_rung_that_fits_runs_whole_with_its_time_allowance():
    small = banking_like_lora(n=400, labels=4)
    action = next_action([small], {}, target=None, metric="accuracy", budget=Budget(), n_test=100, pricing=CPU)
    assert action.kind == "run" and "limit" not in action.params and "fit_reason" not in action.params
    assert action.params["time_budget_minutes"] == pytest.approx((1800 - 100) / 60, abs=0.05)
    assert "time allowance of 28.3 min" in action.reason


def test_a_learning_curve_drops_the_sizes_it_cannot_afford_and_needs_three():
    points = ((20_000.0, 1), (40_000.0, 1), (80_000.0, 1), (800_000.0, 1))  # (tokens, evaluations) a size
    curve = PlannedRung("learning_curve", "curve", train_tokens=sum(w for w, _ in points), evaluations=4,
                        curve_points=points)
    action = next_action([curve], {}, target=0.9, metric="accuracy", budget=Budget(), n_test=100, pricing=CPU)
    assert action.kind == "run" and action.params["max_points"] == 3, action.reason
    assert "keeps its 3 smallest sizes" in action.reason and "drops the 1 largest" in action.reason
    assert action.params["time_budget_minutes"] == 30.0  # a curve's allowance covers its evaluations too
    tight = next_action([curve], {}, target=0.9, metric="accuracy", budget=Budget(hours=0.2), n_test=100,
                        pricing=CPU)
    assert tight.kind == "skip" and "even its 3 smallest sizes (a curve needs 3)" in tight.reason


def test_measured_training_rates_take_precedence_over_the_token_prior():
    lora = banking_like_lora(n=400, labels=4)
    done = Observed("lora_small", "tuned", "finished", value=0.5, low=0.4, high=0.6, seconds=100.0, train_s=90.0,
                    train_tokens=30_000.0)
    est = estimate_cost(lora, {"lora_small": done}, 100, CPU)
    assert "measured 3 ms/token on lora_small" in est.basis
    assert est.seconds == pytest.approx(0.003 * lora.train_tokens + 100 * 1.0)
    fit = fit_tuned(lora, {}, Budget(), 100, CPU)
    assert "prior 6.1 ms/token on cpu" in fit.estimate.basis


# --------------------------------------------------------------------------- tokens, not examples


def test_token_estimate_is_larger_for_long_answers_than_short_ones_at_equal_example_counts(tiny_llama_dir):
    from tunewise.strategies.finetuning import training_work
    from tunewise.training.trainer import encode_pair, training_tokenizer

    spec = SimpleNamespace(model=f"hf:{tiny_llama_dir}", kind="generation", seed=0, instructions=None)
    short = [SimpleNamespace(id=f"s{i}", text=f"card arrival {i}", target="yes") for i in range(64)]
    long = [SimpleNamespace(id=f"l{i}", text=f"card arrival {i}",
                            target=json.dumps({"intent": "card_arrival", "slots": [{"slot": "when", "value":
                                               "yesterday morning before the top up"}] * 3})) for i in range(64)]
    rung = RungSpec(name="lora", strategy="finetune", params={})
    a, b = training_work(rung, spec, short), training_work(rung, spec, long)
    assert a.example_epochs == b.example_epochs == 64 * 3  # the per-example count cannot tell them apart
    assert b.tokens > 3 * a.tokens and "counted with" in a.basis
    ladder = [PlannedRung("lora", "tuned", train_tokens=w.tokens, train_example_epochs=w.example_epochs)
              for w in (a, b)]
    assert estimate_cost(ladder[1], {}, 10, CPU).seconds > 2 * estimate_cost(ladder[0], {}, 10, CPU).seconds
    # the count is what the trainer computes: prompt + answer + end of turn, x 3 epochs
    tokenizer, eot = training_tokenizer(spec.model)
    from tunewise.prompts import answer_text
    from tunewise.strategies.finetuning import tuned_program

    program = tuned_program(spec, (), "lora")
    rows = [encode_pair(tokenizer, eot, program.prompt_for(e.text, ()), answer_text(e.target), 256) for e in long]
    assert b.tokens == pytest.approx(3 * sum(len(p) + len(c) for p, c in rows))


def test_work_counts_epochs_dev_evaluations_and_steps_like_the_trainer():
    s = TuneSettings(batch_size=16, evals_per_epoch=2)
    # 100 examples: 7 steps an epoch, 3 epochs = 21 steps, a dev evaluation every 3 steps (7 of them)
    assert work_tokens(1000.0, 100, s) == pytest.approx(3000.0)
    assert work_tokens(1000.0, 100, s, dev_tokens=300.0) == pytest.approx(3000.0 + 7 * 300.0 / 3)
    sizes = fit_sizes([10] * 5000, s, minimum=32)
    assert sizes[0][0] == 5000 and sizes[-1][0] == 32 and [n for n, _ in sizes] == sorted(
        [n for n, _ in sizes], reverse=True)
    by_n = dict(sizes)
    below = max(n for n in by_n if n < 1000)  # 3 epochs below 1,000 examples, 2 from 1,000: the grid has both
    assert by_n[1000] == pytest.approx(2 * 10 * 1000) and by_n[below] == pytest.approx(3 * 10 * below)
    assert by_n[below] > by_n[1000]


# --------------------------------------------------------------------------- the timed trial and overruns


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _step(clock: StepClock, fake: FakeClock, step: int, seconds: float, total: int = 100) -> str | None:
    clock.begin_step()
    fake.now += seconds
    return clock.end_step(step, total)


def test_the_timed_trial_re_estimates_from_the_measured_seconds_per_token_after_a_warm_up_step():
    fake = FakeClock()
    seen = []
    clock = StepClock(trained_tokens=10_000, dev_tokens=0, evaluations=0, tokens_per_step=100, s_per_token=0.0061,
                      trial_steps=4, clock=fake, start=1e-9, on_trial=seen.append)
    assert clock.estimate_s == pytest.approx(61.0)  # the prior
    assert _step(clock, fake, 1, 10.0) is None  # warm-up: not timed
    for step in (2, 3, 4):
        assert _step(clock, fake, step, 1.0) is None
    assert clock.trial["s_per_token"] == pytest.approx(0.01)  # 3 s over 3 steps of 100 tokens
    assert clock.committed_s == pytest.approx(100.0) and clock.trial["prior_estimate_s"] == 61.0
    assert seen == [clock.trial] and clock.trial["over_budget"] is False and clock.limit_s is None


def test_the_trial_times_the_dev_evaluations_it_saw():
    fake = FakeClock()
    clock = StepClock(trained_tokens=10_000, dev_tokens=500, evaluations=10, tokens_per_step=100, s_per_token=0.0061,
                      trial_steps=4, clock=fake, start=1e-9)
    assert clock.estimate_s == pytest.approx(0.0061 * (10_000 + 10 * 500 / 3))  # dev tokens at a third before
    for step in (1, 2):
        _step(clock, fake, step, 1.0)
    fake.now += 4.0  # the evaluation after step 2: 500 tokens in 4 s
    clock.evaluated()
    for step in (3, 4):
        _step(clock, fake, step, 1.0)
    assert clock.trial["eval_s_per_token"] == pytest.approx(0.008)
    assert clock.committed_s == pytest.approx(0.01 * 10_000 + 0.008 * 10 * 500)


def test_the_trial_stops_a_run_whose_re_estimate_does_not_fit_its_allowance():
    fake = FakeClock()
    clock = StepClock(trained_tokens=10_000, dev_tokens=0, evaluations=0, tokens_per_step=100, s_per_token=0.0061,
                      budget_s=80.0, trial_steps=4, clock=fake, start=1e-9)
    assert [_step(clock, fake, s, 1.0) for s in (1, 2, 3)] == [None, None, None]
    assert _step(clock, fake, 4, 1.0) == "trial" and clock.trial["over_budget"] is True


def test_a_run_past_the_margin_over_its_estimate_or_its_allowance_stops():
    fake = FakeClock()
    clock = StepClock(trained_tokens=10_000, dev_tokens=0, evaluations=0, tokens_per_step=100, s_per_token=0.01,
                      budget_s=1000.0, clock=fake, start=1e-9)
    assert clock.limit_s == pytest.approx(150.0)  # 1.5 x the 100 s estimate, under the allowance
    assert _step(clock, fake, 1, 149.0) is None
    assert _step(clock, fake, 2, 2.0) == "overrun"
    assert clock.stopped["step"] == 2 and "past 1.5 x the 100 s estimate" in clock.stopped["reason"]
    tight = StepClock(trained_tokens=10_000, dev_tokens=0, evaluations=0, tokens_per_step=1, s_per_token=0.01,
                      budget_s=50.0, clock=fake, start=fake.now)
    assert _step(tight, fake, 1, 51.0) == "overrun" and "the 50 s allowed for training" in tight.stopped["reason"]
    free = StepClock(trained_tokens=1, dev_tokens=0, evaluations=0, tokens_per_step=1, s_per_token=1.0, clock=fake,
                     start=fake.now)
    assert _step(free, fake, 1, 1e6) is None  # no allowance: nothing is stopped


def _virtual_steps(monkeypatch, seconds_of_step) -> None:
    """The trainer's clock sees only virtual time: step k takes ``seconds_of_step(k)`` seconds, nothing else any
    (deterministic, however loaded the machine is)."""
    import tunewise.training.trainer as trainer
    from tunewise.training import timing

    class VirtualClock(timing.StepClock):
        def __post_init__(self) -> None:
            self.virtual = 0.0
            self.clock = lambda: self.virtual
            super().__post_init__()
            self.start = 0.0

        def end_step(self, step: int, total: int) -> str | None:
            self.virtual += seconds_of_step(self._steps + 1)
            return super().end_step(step, total)

    monkeypatch.setattr(trainer, "StepClock", VirtualClock)


def _rung(data: dict, name: str) -> dict:
    return next(r for r in data["rungs"] if r["name"] == name)


PARAMS = "batch_size: 8, learning_rate: 0.01, r: 4, alpha: 8, dropout: 0.0, early_stopping_patience: null"


def test_a_trial_over_the_allowance_retrains_the_largest_subset_that_fits(tiny_llama_dir, tmp_path, monkeypatch):
    _virtual_steps(monkeypatch, lambda step: 1.0)  # 69 steps of 1 s for all 180 training examples: over 30 s
    task = tiny_task(tmp_path, tiny_llama_dir, f"  - {{name: fit, strategy: finetune, params: {{{PARAMS}, "
                     "time_budget_minutes: 0.5}}\n", n_train=200)
    data = json.loads(run_task(load_task(task)).results_path.read_text())
    r = _rung(data, "fit")
    assert r["status"] == "finished", r.get("reason") or r.get("error")
    training = r["extras"]["training"]
    fitted = training["fitted_to_budget"]
    assert fitted["by"] == "the timed trial" and 32 <= fitted["examples"] < fitted["of"] == data["data"]["sizes"][
        "train"]
    assert "training on 180 examples would take 7" in fitted["reason"]  # 69 steps of 1 s and the dev evaluations
    assert "over the 30 s allowed" in fitted["reason"]
    assert r["config"]["train_subset"]["examples"] == fitted["examples"] == training["examples"]
    assert "the timed trial (3 steps after a warm-up step) measured" in fitted["reason"]
    assert f"{fitted['examples']:,} of {fitted['of']:,} examples" in fitted["reason"]
    assert fitted["whole_set_forecast"]["status"] == "not_forecast"
    assert training["estimate"]["fitted_at_s_per_token"] > 0 and training["estimate"]["trial"] is None
    assert r["metrics"]["accuracy"]["n"] == 12  # scored like any rung


def test_an_overrun_stops_training_cleanly_keeps_the_best_checkpoint_and_is_scored(tiny_llama_dir, tmp_path,
                                                                                    monkeypatch):
    _virtual_steps(monkeypatch, lambda step: 1.0 if step <= 12 else 1000.0)  # the trial saw the real pace
    params = "batch_size: 8, learning_rate: 0.01, r: 4, alpha: 8, dropout: 0.0, time_budget_minutes: 10"
    task = tiny_task(tmp_path, tiny_llama_dir, f"  - {{name: over, strategy: finetune, params: {{{params}}}}}\n",
                     n_train=200)
    data = json.loads(run_task(load_task(task)).results_path.read_text())
    r = _rung(data, "over")
    assert r["status"] == "finished", r.get("reason") or r.get("error")
    training = r["extras"]["training"]
    stop = training["stopped_for_budget"]
    assert training["stopped"] == "time budget" and training["steps"] == stop["step"] == 13
    assert stop["planned_steps"] == training["planned_steps"] == 69  # 23 steps an epoch x 3
    assert stop["reason"].startswith("stopped for budget after") and stop["after_s"] > stop["limit_s"]
    assert stop["limit_s"] == pytest.approx(min(600.0, 1.5 * training["estimate"]["committed_s"]), abs=0.1)
    assert training["estimate"]["trial"]["steps"] == 4 and "fitted_to_budget" not in training
    assert training["best_checkpoint_step"] == 11  # the dev evaluation at step 11: its weights are kept
    assert r["metrics"]["accuracy"]["n"] == 12 and len(r["predictions"]) == 12


# --------------------------------------------------------------------------- the walk and the curve


def test_the_walk_trains_the_fitted_subset_and_records_it(tiny_llama_dir, tmp_path):
    from tunewise.data import load_splits
    from tunewise.ladder.planning import plan

    params = "{batch_size: 8, epochs: 1, learning_rate: 0.01, r: 4, alpha: 8, evals_per_epoch: 1}"
    task = tiny_task(tmp_path, tiny_llama_dir, f"  - {{name: lora, strategy: finetune, params: {params}}}\n",
                     n_train=120)
    spec = load_task(task)
    splits = load_splits(spec)
    planned = plan(spec.rungs[0], spec, splits.train, dev=splits.dev)
    train_s = 0.0061 * planned.train_tokens
    hours = (12 * 1.0 + 0.6 * train_s) / 3600  # the evaluation and 60% of the training: a subset fits
    task.write_text(task.read_text() + f"constraints: {{budget_hours: {hours:.6f}}}\n")
    outcome = run_task(load_task(task), policy=True, report=False)
    run = next(a for a in outcome.results.ladder.actions if a.kind == "run")
    n = run.params["limit"]
    assert 32 <= n < planned.train_examples and f"{n:,} of {planned.train_examples:,} examples" in run.reason
    r = outcome.results.rungs[0]
    assert r.status == "finished", r.reason or r.error
    fitted = r.extras["training"]["fitted_to_budget"]
    assert (fitted["examples"], fitted["of"], fitted["by"]) == (n, planned.train_examples, "the ladder's estimate")
    assert fitted["reason"] == run.params["fit_reason"] and r.config["train_subset"]["examples"] == n
    assert fitted["whole_set_forecast"]["message"] == "The whole-set result is not forecast: no learning curve ran."
    assert r.config_hash != spec.rungs[0].config_hash()  # a result for the subset is never reused as the whole


def test_a_curve_with_dropped_sizes_says_so_and_forecasts_the_whole_set(tiny_llama_dir, tmp_path):
    from tunewise.results import RungResult
    from tunewise.strategies.finetuning import forecast_whole_set

    params = ("{max_steps: 6, batch_size: 8, learning_rate: 0.01, r: 4, alpha: 8, dropout: 0.0, evals_per_epoch: 1, "
              "sizes: [3, 6, 9, 12], max_points: 3, fit_reason: 'the 12/label size does not fit'}")
    task = tiny_task(tmp_path, tiny_llama_dir, f"  - {{name: curve, strategy: learning_curve, params: {params}}}\n")
    data = json.loads(run_task(load_task(task), report=False).results_path.read_text())
    r = _rung(data, "curve")
    assert r["status"] == "finished", r.get("reason") or r.get("error")
    curve = r["extras"]["curve"]
    assert [p["subset"]["per_label"] for p in curve["points"]] == [3, 6, 9]
    assert curve["dropped"] == [{"subset": {"per_label": 12, "fraction": None}, "label": "12/label",
                                 "reason": "the 12/label size does not fit"}]
    whole = curve["at_full_train"]
    n_train = data["data"]["sizes"]["train"]
    assert whole["n"] == n_train and whole["largest_point"] == 36 and whole["band"][0] <= whole["value"]
    assert f"when training on all {n_train:,} examples" in whole["message"] and "extrapolated" in whole["message"]
    # a budget-fitted tuning rung of the same run takes its whole-set forecast from this curve
    lora = RungResult(name="lora", strategy="finetune", status="finished", extras={"training": {"fitted_to_budget": {
        "examples": 40, "of": n_train, "whole_set_forecast": {"status": "not_forecast"}}}})
    linked = forecast_whole_set([lora, RungResult.from_json(r)])[0]
    assert linked.extras["training"]["fitted_to_budget"]["whole_set_forecast"] == {**whole, "rung": "curve"}
    alone = forecast_whole_set([lora])[0]
    assert alone.extras["training"]["fitted_to_budget"]["whole_set_forecast"] == {"status": "not_forecast"}


def test_nested_order_prefixes_are_the_limit_subsets():
    from tunewise.data import Example
    from tunewise.training.subsets import nested_order, training_subset

    train = [Example(id=f"{lab}{i}", text=f"{lab} {i}", target=lab) for lab in "abcd" for i in range(10 + 5 * (
        lab == "a"))]
    order = nested_order(train, seed=3)
    for n in (8, 13, 40):
        assert {e.id for e in order[:n]} == {e.id for e in training_subset(train, limit=n, seed=3)}
