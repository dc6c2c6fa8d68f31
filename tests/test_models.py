"""Several models in one decision: rungs crossed with models (``rung@model``), each model priced by its own
price, one budget and one early rejection over all of them, and the decision across models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunewise.errors import TaskSpecError
from tunewise.ladder.catalogue import policy_ladder, resolve_rungs
from tunewise.run import run_task
from tunewise.task import load_task, parse_task

from .test_run import serve_answer, write_task

DATA = {"train": "a.jsonl", "test": "b.jsonl"}


def _spec(**raw):
    return parse_task({"data": DATA, **raw})


def test_models_cross_prompt_rungs_and_tune_only_trainable_models():
    spec = _spec(target={"accuracy": 0.9}, models=[
        "local:smollm2-135m", {"id": "local:gemma3-270m", "tune": False}, "openai:gpt-4o-mini"])
    names = [r.name for r in policy_ladder(spec)]
    assert names[:5] == ["knn", "probe", "zero_shot@smollm2-135m", "zero_shot@gemma3-270m", "zero_shot@gpt-4o-mini"]
    assert [n for n in names if n.startswith(("lora", "learning_curve"))] == [
        "lora@smollm2-135m", "learning_curve@smollm2-135m"]  # gemma is marked tune: false, an API model cannot train
    named = resolve_rungs(spec, ["probe", "cot@gemma3-270m"])
    assert [(r.name, r.model) for r in named] == [("probe", None), ("cot@gemma3-270m", "gemma3-270m")]


def test_one_model_keeps_rung_names_and_hashes():
    one = _spec(model="fake:random")
    rung = resolve_rungs(one, ["zero_shot@random"])[0]
    assert rung.name == "zero_shot" and rung.model is None
    assert rung.config_hash() == resolve_rungs(one, ["zero_shot"])[0].config_hash()
    assert _spec(model="fake:random").fingerprint() == _spec().with_models(["fake:random"]).fingerprint()


@pytest.mark.parametrize("raw, words", [
    ({"model": "fake:a", "models": ["fake:b", "fake:c"]}, "not both"),
    ({"models": ["fake:random", "fake:random"]}, "short name 'random'"),
    ({"models": ["nokind"]}, "not kind:name"),
    ({"models": [{"id": "local:x", "backend": {"base_url": "http://h/v1"}}]}, "only applies to openai"),
    ({"models": ["fake:a"], "backend": {"base_url": "http://h/v1"}}, "under its own 'backend'"),
])
def test_model_list_errors_name_the_key(raw, words):
    with pytest.raises(TaskSpecError, match=words):
        _spec(**raw)


def test_unknown_model_in_a_rung_name_lists_the_models():
    spec = _spec(models=["fake:a", "fake:b"])
    with pytest.raises(TaskSpecError, match=r"no model named 'c' \(the task's models: a, b\)"):
        resolve_rungs(spec, ["zero_shot@c"])
    with pytest.raises(TaskSpecError, match="uses no language model"):
        resolve_rungs(spec, ["knn@a"])


def _two_model_task(tmp_path: Path, extra: str = "") -> Path:
    task = write_task(tmp_path, extra=extra)
    text = task.read_text().replace("model: 'fake:random'\n", "")
    oracle = tmp_path / "test.jsonl"
    task.write_text(text + f"models: ['fake:random', {{id: 'fake:oracle:{oracle}', name: oracle}}]\n")
    return task


def test_a_run_scores_each_rung_on_each_model_and_decides_across_them(tmp_path):
    spec = load_task(_two_model_task(tmp_path))
    outcome = run_task(spec, rungs=["knn", "zero_shot", "few_shot_random@oracle"], report=False)
    rungs = {r.name: r for r in outcome.results.rungs}
    assert list(rungs) == ["knn", "zero_shot@random", "zero_shot@oracle", "few_shot_random@oracle"]
    assert rungs["zero_shot@oracle"].model.startswith("fake:oracle:")
    assert rungs["zero_shot@random"].model == "fake:random" and rungs["knn"].model is None
    assert rungs["zero_shot@oracle"].primary.value == 1.0  # the oracle knows every test answer
    assert outcome.decision.winner in ("zero_shot@oracle", "few_shot_random@oracle")
    data = json.loads(outcome.results_path.read_text())
    assert {r["name"]: r.get("model") for r in data["rungs"]}["knn"] is None
    assert set(data["environment"]["backend"]) == {"random", "oracle"}  # each model's info, keyed by name
    again = run_task(spec, rungs=["knn", "zero_shot", "few_shot_random@oracle"], report=False)
    assert set(again.reused) == set(rungs)  # every rung@model reused by its name and configuration


def test_each_model_is_priced_by_its_own_token_prices(tmp_path):
    task = write_task(tmp_path)
    text = task.read_text().replace("model: 'fake:random'\n", "")
    task.write_text(text + "models: [{id: 'fake:random', name: cheap}, {id: 'fake:echo', name: dear, "
                           "prices: {input: 1000, output: 1000}}]\n")
    spec = load_task(task)
    outcome = run_task(spec, rungs=["zero_shot_generate"], report=False)
    options = {o.name: o for o in outcome.decision.options}
    # fake: models are self-hosted (device time); a price in the task file makes no difference to them, but the
    # table carries it under the model's id for the money cap and API-priced models
    assert options["zero_shot_generate@cheap"].cost_basis and options["zero_shot_generate@dear"].cost_basis
    prices = outcome.results.environment["prices"]["api"]
    assert prices["fake:echo"]["input"] == 1000 and "task file" in prices["fake:echo"]["source"]


def test_the_policy_rejects_hopeless_combinations_early_across_models(tmp_path):
    spec = load_task(_two_model_task(tmp_path, extra="constraints: {budget_hours: 1}\n"))
    outcome = run_task(spec, report=False)
    ladder = outcome.results.ladder
    rejected = ladder.early_rejection.rungs
    assert rejected and all(n.endswith("@random") for n in rejected)  # the oracle's rungs are never dropped
    finished = {r.name for r in outcome.results.rungs if r.status == "finished"}
    assert {"zero_shot@oracle", "few_shot_random@oracle", "cot@oracle"} <= finished
    assert ladder.budget.pricing.startswith("random: ") and "; oracle: " in ladder.budget.pricing


def test_plateau_is_judged_per_model():
    """Model a's prompting stalls while model b's has not had its chance: b's next rung still runs (the old,
    global rule escalated and skipped it)."""
    from tunewise.ladder.policy import Budget, Observed, PlannedRung, Pricing, next_action

    ladder = [PlannedRung(name, "prompt_score", model=name[-1]) for name in
              ("zero_shot@a", "zero_shot@b", "role@a", "role@b", "few@a", "few@b")]
    ladder.append(PlannedRung("lora@a", "tuned", model="a", train_example_epochs=10))
    n = 200
    weak = tuple([True] * 20 + [False] * (n - 20))
    strong = tuple([True] * 120 + [False] * (n - 120))

    def seen(name, correct):
        value = sum(correct) / n
        return Observed(name, "prompt_score", "finished", value=value, low=value - 0.05, high=value + 0.05,
                        correct=correct, examples=n, eval_seconds=1.0, model=name[-1])

    observed = {name: seen(name, weak if name.endswith("a") else strong)
                for name in ("zero_shot@a", "zero_shot@b", "role@a", "role@b", "few@a")}
    action = next_action(ladder, observed, target=None, metric="accuracy", budget=Budget(hours=10), n_test=n,
                         pricing=Pricing(usd_per_second=0.0))
    assert (action.kind, action.rung) == ("run", "few@b")


def test_a_version_of_a_rung_at_one_model_is_rebuilt_and_served_on_that_model(tmp_path):
    from tunewise.data import load_splits
    from tunewise.store import Store
    from tunewise.versions import create_version, load_candidate, promote, task_spec

    task = _two_model_task(tmp_path)
    outcome = run_task(load_task(task), rungs=["zero_shot"], task_path=task, report=False)
    recorded = {r.name: r for r in outcome.results.rungs}
    with Store(tmp_path / ".tunewise") as store:
        oracle = create_version(store, outcome.results.run_id, "zero_shot@oracle")
        rand = create_version(store, outcome.results.run_id, "zero_shot@random")
        assert oracle.id != rand.id and oracle.rung == "zero_shot@oracle"
        assert oracle.manifest["model"].startswith("fake:oracle:") and rand.manifest["model"] == "fake:random"
        test = load_splits(task_spec(oracle, store)).test
        for version, name in ((oracle, "zero_shot@oracle"), (rand, "zero_shot@random")):
            candidate, backend = load_candidate(version, store)
            assert [p.output for p in candidate.predict(test, backend=backend)] == [
                p.output for p in recorded[name].predictions]
        promote(store, oracle.id, "production")
    answer = serve_answer(tmp_path / ".tunewise", "production", test[0].text)
    assert answer.version == oracle.id and answer.text == test[0].target


def test_train_only_names_one_model_when_several_can_be_trained(tmp_path):
    from tunewise.run import train_only

    task = write_task(tmp_path)
    text = task.read_text().replace("model: 'fake:random'\n", "")
    task.write_text(text + "models: ['hf:/nonexistent/a', 'hf:/nonexistent/b']\n")
    with pytest.raises(TaskSpecError, match=r"runs on several models; name one: lora@a, lora@b"):
        train_only(load_task(task), "lora")
