"""Fine-tuning rungs on a tiny random Llama: training, saved PEFT adapters, the classifier head,
reuse, resume after kill -9, and the learning curve. No real model is needed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tunewise.run import run_task
from tunewise.task import load_task

from .test_run import LABELS, write_task

FAST = "{max_steps: 12, batch_size: 8, learning_rate: 0.01, r: 4, alpha: 8, dropout: 0.0, evals_per_epoch: 2}"


def tiny_task(tmp_path: Path, model_dir: Path, rungs: str, **kw) -> Path:
    task = write_task(tmp_path, n_train=kw.pop("n_train", 48), n_test=kw.pop("n_test", 12), **kw)
    text = task.read_text().replace("model: 'fake:random'", f"model: 'hf:{model_dir}'")
    task.write_text(text + "rungs:\n" + rungs)
    return task


def _rung(data: dict, name: str) -> dict:
    return next(r for r in data["rungs"] if r["name"] == name)


@pytest.fixture(scope="module")
def lora_run(tiny_llama_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lora")
    task = tiny_task(tmp, tiny_llama_dir, f"  - {{name: lora_small, strategy: finetune, params: {FAST}}}\n")
    outcome = run_task(load_task(task))
    return tmp, task, outcome, json.loads(outcome.results_path.read_text())


def test_lora_rung_trains_loss_falls_and_is_scored_like_any_rung(lora_run):
    _, _, _, data = lora_run
    r = _rung(data, "lora_small")
    assert r["status"] == "finished", r.get("error")
    acc = r["metrics"]["accuracy"]
    assert acc["n"] == 12 and acc["low"] <= acc["value"] <= acc["high"]
    training = r["extras"]["training"]
    losses = [loss for _, loss in training["history"]["train_loss"]]
    assert len(losses) >= 2 and losses[-1] < losses[0]
    assert training["steps"] == 12 and training["tokens"] > 0 and training["tokens_per_s"] > 0
    assert training["device"] == "cpu" and training["cost_usd"] >= 0 and training["price_source"]
    assert r["usage"]["prompt_tokens"]["mean"] > 0  # same usage accounting as the prompt rungs
    assert r["config"]["train_subset"]["examples"] == data["data"]["sizes"]["train"]


def test_adapter_is_standard_peft_with_provenance_and_identical_logits(lora_run, tiny_llama_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tunewise.backends.local import LocalBackend

    _, _, _, data = lora_run
    adapter = Path(_rung(data, "lora_small")["config"]["artifact"])
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    meta = json.loads((adapter / "tunewise_provenance.json").read_text())
    assert meta["data_hash"] == data["data"]["hash"] and meta["seed"] == 0
    assert meta["settings"]["r"] == 4 and meta["versions"]["peft"] and meta["versions"]["trl"]
    assert meta["train_subset"]["examples"] == data["data"]["sizes"]["train"] and meta["task"] == "toy"
    # plain transformers + PEFT load it, and give the same logits as tunewise's backend
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), str(adapter)).eval()
    ours = LocalBackend(f"hf:{tiny_llama_dir}", device="cpu", adapter=adapter)
    ids = torch.tensor([[5, 17, 42, 99, 3]])
    with torch.no_grad():
        a = plain(input_ids=ids).logits
        b = ours.model(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-4)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    with torch.no_grad():
        assert not torch.allclose(base(input_ids=ids).logits, a, atol=1e-3)  # the adapter changed something


def test_rerun_reuses_the_rung_and_a_new_rung_with_the_same_config_reuses_the_artifact(lora_run, tiny_llama_dir):
    tmp, task, first, data = lora_run
    again = run_task(load_task(task))
    assert again.reused == ("lora_small",)
    text = task.read_text() + f"  - {{name: lora_same, strategy: finetune, params: {FAST}}}\n"
    task.write_text(text)
    third = json.loads(run_task(load_task(task)).results_path.read_text())
    same = _rung(third, "lora_same")
    assert same["config"]["artifact_reused"] is True
    assert same["config"]["artifact"] == _rung(data, "lora_small")["config"]["artifact"]
    assert same["metrics"]["accuracy"]["value"] == _rung(data, "lora_small")["metrics"]["accuracy"]["value"]


def test_classifier_head_trains_and_gives_real_probabilities(tiny_llama_dir, tmp_path):
    params = FAST.replace("}", ", head: classifier}")
    task = tiny_task(tmp_path, tiny_llama_dir, f"  - {{name: head, strategy: finetune, params: {params}}}\n")
    data = json.loads(run_task(load_task(task)).results_path.read_text())
    r = _rung(data, "head")
    assert r["status"] == "finished", r.get("error")
    losses = [loss for _, loss in r["extras"]["training"]["history"]["train_loss"]]
    assert losses[-1] < losses[0]
    preds = r["predictions"]
    assert all(p["output"] in LABELS and 0 < p["confidence"] <= 1 for p in preds)
    assert len({round(p["confidence"], 6) for p in preds}) > 1
    meta = json.loads((Path(r["config"]["artifact"]) / "tunewise_provenance.json").read_text())
    assert meta["labels"] == sorted(LABELS)


def test_qlora_without_cuda_is_skipped_with_the_reason(tiny_llama_dir, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the QLoRA test in test_gpu.py covers it")
    task = tiny_task(tmp_path, tiny_llama_dir, "  - qlora\n")
    outcome = run_task(load_task(task))
    r = _rung(json.loads(outcome.results_path.read_text()), "qlora")
    assert r["status"] == "skipped" and "CUDA" in r["reason"]
    assert outcome.results.status == "finished"


def test_finetuning_a_fake_model_is_a_clear_error(tmp_path):
    task = write_task(tmp_path, extra="rungs: [lora]\n")
    r = run_task(load_task(task)).results.rungs[0]
    assert r.status == "failed" and "needs a transformers model" in r.error


def test_unknown_tuning_parameter_names_the_rung_and_key(tiny_llama_dir, tmp_path):
    task = tiny_task(tmp_path, tiny_llama_dir, "  - {name: bad, strategy: finetune, params: {rank: 4}}\n")
    r = run_task(load_task(task)).results.rungs[0]
    assert r.status == "failed" and "rung 'bad'" in r.error and "rank" in r.error


_KILL_SCRIPT = """
import sys, time
from transformers import TrainerCallback
import tunewise.training.trainer as t
original = t._Callbacks.__new__
def slow(cls, progress, budget):
    cb = original(cls, progress, budget)
    inner = cb.on_step_end
    def on_step_end(*a, **k):
        time.sleep(0.4)
        return inner(*a, **k)
    cb.on_step_end = on_step_end
    return cb
t._Callbacks.__new__ = slow
from tunewise.run import run_task
from tunewise.task import load_task
run_task(load_task(sys.argv[1]))
"""


def test_training_killed_with_sigkill_resumes_from_its_last_checkpoint(tiny_llama_dir, tmp_path):
    params = "{max_steps: 40, batch_size: 4, learning_rate: 0.01, r: 4, save_every: 5, early_stopping_patience: null}"
    task = tiny_task(tmp_path, tiny_llama_dir, f"  - {{name: lora_kill, strategy: finetune, params: {params}}}\n")
    script = tmp_path / "slow_run.py"
    script.write_text(_KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen([sys.executable, str(script), str(task)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    artifacts = tmp_path / ".tunewise" / "artifacts"
    deadline = time.time() + 240
    while time.time() < deadline:
        if list(artifacts.glob("*/checkpoints/checkpoint-10/trainer_state.json")):
            break
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("no checkpoint appeared")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not list(artifacts.glob("*/adapter"))  # nothing finished
    data = json.loads(run_task(load_task(task)).results_path.read_text())
    r = _rung(data, "lora_kill")
    assert r["status"] == "finished", r.get("error")
    training = r["extras"]["training"]
    assert training["resumed_from"] in {"checkpoint-10", "checkpoint-15", "checkpoint-20"}
    assert training["steps"] == 40
    assert not list(artifacts.glob("*/checkpoints"))  # optimiser states are removed once the adapter is saved


def test_learning_curve_trains_nested_subsets_and_forecasts(tiny_llama_dir, tmp_path):
    params = FAST.replace("}", ", sizes: [3, 6, 9, 12], evals_per_epoch: 1}").replace("max_steps: 12", "max_steps: 6")
    task = tiny_task(tmp_path, tiny_llama_dir, f"  - {{name: curve, strategy: learning_curve, params: {params}}}\n"
                     "  - {name: pcurve, strategy: learning_curve, params: {of: probe, sizes: [2, 4, 8], "
                     "include_all: true}}\n")
    outcome = run_task(load_task(task))
    data = json.loads(outcome.results_path.read_text())
    summary = outcome.summary_path.read_text()
    assert "## Learning curve: curve (finetune)" in summary and "Back-test: fitted on n = [12, 24, 36]" in summary
    assert "## Training (fine-tuning rungs)" in summary and "Forecast:" in summary
    for name, sizes in (("curve", [12, 24, 36, 40]), ("pcurve", [8, 16, 32, 40])):
        r = _rung(data, name)
        assert r["status"] == "finished", r.get("error")
        curve = r["extras"]["curve"]
        assert [p["n"] for p in curve["points"]] == sizes
        assert curve["target"] == 0.9 and curve["metric"] == "accuracy"
        assert curve["forecast"]["status"] in {"reached", "forecast", "out_of_reach"}
        assert curve["forecast"]["message"]
        assert curve["backtest"]["n"] == sizes[-1] and curve["backtest"]["fitted_on"] == sizes[:-1]
        # the rung's own score is the largest point's
        assert r["metrics"]["accuracy"]["value"] == curve["points"][-1]["test"]["value"]
    subsets = [p["subset"]["per_label"] for p in _rung(data, "curve")["extras"]["curve"]["points"]]
    assert subsets == [3, 6, 9, 12]


def test_full_fine_tuning_saves_a_loadable_model_and_the_lr_sweep_is_chosen_on_dev(tiny_llama_dir, tmp_path):
    full = "{method: full, max_steps: 6, batch_size: 8, learning_rate: 0.001}"
    sweep = "{max_steps: 6, batch_size: 8, r: 4, lr_sweep: [0.00001, 0.01], sweep_steps: 3}"
    task = tiny_task(tmp_path, tiny_llama_dir, f"  - {{name: full_ft, strategy: finetune, params: {full}}}\n"
                     f"  - {{name: swept, strategy: finetune, params: {sweep}}}\n")
    data = json.loads(run_task(load_task(task)).results_path.read_text())
    r = _rung(data, "full_ft")
    assert r["status"] == "finished", r.get("error")
    model_dir = Path(r["config"]["artifact"])
    assert r["config"]["artifact_kind"] == "model" and (model_dir / "config.json").is_file()
    assert (model_dir / "tunewise_provenance.json").is_file() and (model_dir / "tokenizer.json").is_file()
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(model_dir)  # a plain transformers model directory
    s = _rung(data, "swept")
    assert s["status"] == "finished", s.get("error")
    table = s["extras"]["training"]["lr_sweep"]
    assert [row["learning_rate"] for row in table] == [0.00001, 0.01]
    best = min(table, key=lambda row: row["dev_loss"])["learning_rate"]
    assert s["extras"]["training"]["learning_rate"] == best
