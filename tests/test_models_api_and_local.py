"""An API model and a local model in one task, end to end (issue 14.6): an OpenAI-compatible server on loopback
stands in for the API model, a tiny random Llama is the model tunewise trains; the run's money cap holds over
every API model together."""

from __future__ import annotations

import pytest

from tunewise.run import run_task
from tunewise.task import load_task

from .test_finetuning import FAST as TUNE_FAST
from .test_openai_backend import _label_of, write_task

API = "  - {id: openai:test-model, name: api, backend: {base_url: '%s', api_key_env: TW_TEST_KEY, backoff_s: 0.001}}\n"


def _task(tmp_path, url, model_dir, *, budget: float = 50.0, extra_models: str = "", rungs: str = ""):
    task = write_task(tmp_path, url)
    lines = [line for line in task.read_text().splitlines(keepends=True)
             if not line.startswith(("model:", "backend:", " prices:", "constraints:"))]
    text = "".join(lines)
    text += f"constraints: {{budget_usd: {budget}, requests_per_month: 1000000}}\n"
    text += "models:\n" + API % url + extra_models + f"  - {{id: 'hf:{model_dir}', name: tiny}}\n"
    text += "rungs:\n" + rungs
    task.write_text(text)
    return task


@pytest.fixture(autouse=True)
def _prices(monkeypatch):  # the API model's price comes from the task file, not the backend section
    monkeypatch.setenv("TW_TEST_KEY", "sk-test-key")


def test_prompt_the_api_model_or_tune_the_local_one_in_one_decision(server, tmp_path, tiny_llama_dir):
    server.answer = _label_of
    rungs = ("  - zero_shot\n"
             f"  - {{name: lora_fast, strategy: finetune, params: {TUNE_FAST}}}\n")
    task = _task(tmp_path, server.url, tiny_llama_dir, rungs=rungs)
    text = task.read_text().replace("name: api,", "name: api, prices: {input: 1, output: 2},")
    task.write_text(text)
    outcome = run_task(load_task(task))
    rungs_by = {r.name: r for r in outcome.results.rungs}
    assert list(rungs_by) == ["zero_shot@api", "zero_shot@tiny", "lora_fast@tiny"]  # an API model is not trained
    assert all(r.status == "finished" for r in rungs_by.values()), [r.error for r in rungs_by.values()]
    assert rungs_by["zero_shot@api"].primary.value == 1.0  # the stand-in knows every answer
    assert rungs_by["zero_shot@api"].model == "openai:test-model"
    assert rungs_by["lora_fast@tiny"].model == f"hf:{tiny_llama_dir}"
    options = {o.name: o for o in outcome.decision.options}
    api, tuned = options["zero_shot@api"], options["lora_fast@tiny"]
    assert "token" in api.cost_basis.lower() or "per million" in api.cost_basis.lower() or "$1" in api.cost_basis
    assert "device" in tuned.cost_basis or "instance" in tuned.cost_basis
    be = outcome.decision.break_even
    assert be is not None and be["prompt"] == "zero_shot@api" and be["tuned"] == "lora_fast@tiny"
    assert any("zero_shot@api" in line and "lora_fast@tiny" in line for line in outcome.decision.reasons)
    info = outcome.results.environment["backend"]
    assert info["api"]["kind"] == "openai" and info["api"]["run_budget_usd"] == 50.0
    html = outcome.report_path.read_text()
    assert "lora_fast@tiny" in html and "zero_shot@api" in html and "pays back" in html


def test_the_money_cap_holds_over_every_api_model_of_the_run(server, tmp_path, tiny_llama_dir):
    server.answer = _label_of
    second = API.replace("test-model, name: api", "test-model-2, name: api2")
    task = _task(tmp_path, server.url, tiny_llama_dir, budget=0.0, extra_models=second % server.url,
                 rungs="  - zero_shot_generate\n")
    text = task.read_text()
    text = text.replace("name: api,", "name: api, prices: {input: 100, output: 100},")
    text = text.replace("name: api2,", "name: api2, prices: {input: 100, output: 100},")
    # one API model's 12 test requests cost about $0.29 at these prices (a batch of 4 reserves up to $0.12):
    # within $0.35 each endpoint alone is admitted, the two together are not
    text = text.replace("budget_usd: 0.0", "budget_usd: 0.35")
    task.write_text(text)
    outcome = run_task(load_task(task), report=False)
    by = {r.name: r for r in outcome.results.rungs}
    assert by["zero_shot_generate@api"].status == "finished", by["zero_shot_generate@api"].error
    assert by["zero_shot_generate@tiny"].status == "finished"
    refused = by["zero_shot_generate@api2"]
    assert refused.status == "failed" and "run's budget of $0.35 over all its models" in refused.error
    info = outcome.results.environment["backend"]
    assert info["api"]["budget_usd"] == info["api2"]["budget_usd"] == 0.35  # each endpoint's own cap: the same
    assert 0.25 < info["api"]["spent_usd"] <= 0.35 and info["api2"]["spent_usd"] == 0  # refused before sending
