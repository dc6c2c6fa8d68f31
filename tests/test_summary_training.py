"""summary.md says what the budget did to a training: a subset fitted to the budget, a run stopped early."""

from __future__ import annotations

from tunewise.evaluation.evaluator import usage_summary
from tunewise.evaluation.records import MetricValue, Prediction
from tunewise.results import RungResult, RunResults
from tunewise.summary import summary_markdown


def _results(training: dict) -> RunResults:
    preds = [Prediction(example_id=f"e{i}", output="a", raw="a", prompt_tokens=40, completion_tokens=2,
                        latency_s=0.1) for i in range(4)]
    rung = RungResult(name="lora@smollm2-135m", strategy="finetune", status="finished", primary_metric="accuracy",
                      usage=usage_summary(preds, wall_s=0.4), predictions=tuple(preds),
                      metrics={"accuracy": MetricValue(0.8, 0.7, 0.9, 100, "clopper-pearson")},
                      extras={"training": {"method": "lora", "head": "lm", "examples": 300, "steps": 40,
                                           "epochs": 1.0, "wall_s": 600, **training}})
    return RunResults(run_id="r", task={"name": "t", "kind": "classification", "models": [
        "local:smollm2-135m", {"id": "local:gemma3-270m", "name": None}]},
        data={"hash": "h", "sizes": {"train": 8965, "dev": 1038, "test": 4}, "dev_origin": "carved",
              "test_origin": "file", "labels": ["a"]},
        checks={}, rungs=(rung,), comparisons=(), environment={}, created_at="2026-01-01", seed=0)


def test_a_subset_fitted_to_the_budget_and_its_forecast_are_said():
    text = summary_markdown(_results({"fitted_to_budget": {
        "examples": 300, "of": 8965, "by": "the ladder's estimate", "reason": "estimated 50 min exceeds 24 min left",
        "whole_set_forecast": {"status": "not_forecast",
                               "message": "The whole-set result is not forecast: no learning curve ran."}}}))
    assert ("lora@smollm2-135m was trained on 300 of 8,965 training examples to fit the budget (the ladder's "
            "estimate): estimated 50 min exceeds 24 min left. The whole-set result is not forecast") in text
    assert "models `local:smollm2-135m`, `local:gemma3-270m`" in text


def test_a_training_stopped_for_budget_is_said():
    text = summary_markdown(_results({"stopped_for_budget": {
        "step": 13, "reason": "stopped for budget after 95 s at step 13 of 69: past 1.5 x the 60 s estimate"}}))
    assert "lora@smollm2-135m: stopped for budget after 95 s at step 13 of 69" in text
    assert "best checkpoint so far was kept" in text
