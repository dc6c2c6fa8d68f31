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
    params = FAST.replace("evals_per_epoch: 2}", "sizes: [3, 6, 9, 12], evals_per_epoch: 1}").replace(
        "max_steps: 12", "max_steps: 6")
    task = tiny_task(tmp_path, tiny_llama_dir, f"  - {{name: curve, strategy: learning_curve, params: {params}}}\n"
                     "  - {name: pcurve, strategy: learning_curve, params: {of: probe, sizes: [2, 4, 8], "
                     "include_all: true}}\n")
    outcome = run_task(load_task(task))
    data = json.loads(outcome.results_path.read_text())
    summary = outcome.summary_path.read_text()
    assert "## Learning curve: curve (finetune)" in summary and "Back-test: fitted on n = [12, 24, 36]" in summary
    assert "## Training (fine-tuning rungs)" in summary and "Forecast:" in summary
    for name, sizes, runs in (("curve", [12, 24, 36, 40], 1), ("pcurve", [8, 16, 32, 40], 3)):
        r = _rung(data, name)
        assert r["status"] == "finished", r.get("error")
        curve = r["extras"]["curve"]
        assert [p["n"] for p in curve["points"]] == [n for n in sizes for _ in range(runs)]  # the probe: 3 seeds
        assert [p["seed"] for p in curve["points"][-runs:]] == list(range(1, runs)) + [0]
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


def _noisy_task(tmp_path: Path, rungs: str, n_train: int = 160, n_test: int = 80) -> Path:
    """Four labels whose texts mix two words of their own vocabulary with three of any label's: a probe learns
    it partly, and different seeds (subset draws) give different scores."""
    import random

    rng = random.Random(5)
    vocab = {label: [f"{label}{i}" for i in range(12)] for label in LABELS}
    everything = [w for words in vocab.values() for w in words]

    def rows(n: int, offset: int) -> str:
        out = []
        for i in range(n):
            label = LABELS[i % len(LABELS)]
            words = rng.sample(vocab[label], 2) + rng.sample(everything, 3)
            rng.shuffle(words)
            out.append(json.dumps({"text": " ".join(words) + f" #{offset + i}", "label": label}))
        return "\n".join(out) + "\n"

    (tmp_path / "train.jsonl").write_text(rows(n_train, 0))
    (tmp_path / "test.jsonl").write_text(rows(n_test, 10_000))
    task = tmp_path / "task.yaml"
    task.write_text("name: noisy\nkind: classification\ndata: {train: train.jsonl, test: test.jsonl}\n"
                    "model: 'fake:random'\nembedder: hashing\ntarget: {accuracy: 0.9}\nrungs:\n" + rungs)
    return task


def test_probe_curve_band_resamples_the_shared_test_examples_and_measures_seed_variation(tmp_path):
    """Issue 13.4: every point is scored on the same test examples, so the band resamples them jointly; with
    ``seeds`` each size is trained that many times and the between-run spread widens the back-test's band."""
    from tunewise.training.curves import JOINT

    task = _noisy_task(tmp_path, "  - {name: pcurve, strategy: learning_curve, params: {of: probe, "
                       "sizes: [2, 4, 8, 10], seeds: 2}}\n  - {name: once, strategy: learning_curve, params: "
                       "{of: probe, sizes: [2, 4, 8, 10], seeds: 1}}\n")
    outcome = run_task(load_task(task))
    data = json.loads(outcome.results_path.read_text())
    r = _rung(data, "pcurve")
    assert r["status"] == "finished", r.get("error")
    curve = r["extras"]["curve"]
    assert [(p["n"], p["seed"]) for p in curve["points"]] == [(n, s) for n in (8, 16, 32, 40) for s in (1, 0)]
    assert r["metrics"]["accuracy"]["value"] == curve["points"][-1]["test"]["value"]  # the task seed's run
    fit = curve["fit"]
    assert fit["uncertainty"] == JOINT and JOINT in curve["model"]
    values = {s: [p["test"]["value"] for p in curve["points"] if p["seed"] == s] for s in (0, 1)}
    pooled = sum((a - b) ** 2 / 2 for a, b in zip(values[0], values[1])) / 4  # 4 sizes, 1 dof each
    assert fit["run_sd_dof"] == 4 and fit["run_sd"] == pytest.approx(pooled**0.5)
    back = curve["backtest"]
    assert back["runs"] == 2 and back["measured_runs"] == [values[1][-1], values[0][-1]]
    assert back["measured"] == pytest.approx(sum(back["measured_runs"]) / 2)
    # the back-test's band: the curve's (fitted on the 3 smaller sizes' 2 runs: 3 dof of run variation) plus the
    # held runs' own measured variation
    assert pooled > 0 and back["band_uncertainty"] == JOINT and back["run_sd_assumed"] is False
    kept = {s: [p["test"]["value"] for p in curve["points"] if p["seed"] == s][:3] for s in (0, 1)}
    kept_sd = (sum((a - b) ** 2 / 2 for a, b in zip(kept[0], kept[1])) / 3) ** 0.5
    assert back["run_sd"] == pytest.approx(kept_sd) and "measured from repeated sizes" in back["band_note"]
    low, high = back["forecast_band"]
    assert low <= back["forecast"] <= high and back["covered"] == (low <= back["measured"] <= high)
    lo_m, hi_m = back["measured_ci"]
    assert lo_m <= back["measured"] <= hi_m
    once = _rung(data, "once")["extras"]["curve"]
    assert once["fit"]["uncertainty"] == JOINT and once["fit"]["run_sd"] is None and once["fit"]["run_sd_assumed"]
    assert "assumed, not measured" in once["uncertainty"] and once["backtest"]["runs"] == 1
    # one run a size: the bands assume each run varies by its test standard error, and say so
    assert once["backtest"]["run_sd_assumed"] is True and once["backtest"]["run_sd"] is None
    assert "assumed, not measured" in once["backtest"]["band_note"]
    low1, high1 = once["backtest"]["forecast_band"]
    f = once["backtest"]["forecast"]
    assert high1 - low1 >= 0.9 * 2 * 1.96 * (f * (1 - f) / 80) ** 0.5  # at least the held run's own assumed spread
    assert any("does not measure training-run variation" in w and "assumes" in w for w in once["warnings"])
    assert not any("training-run variation" in w for w in curve["warnings"])
    summary = outcome.summary_path.read_text()
    assert "joint test-example bootstrap" in summary and "does not measure training-run variation" in summary
    assert once["backtest"]["measured_ci"] == [once["points"][-1]["test"]["low"], once["points"][-1]["test"]["high"]]


def test_curve_test_statistic_reproduces_each_kind_primary_metric():
    """The joint bootstrap rescores a point from its per-example scores: they must give the metric it reported,
    under the task's match rule (generation) and as micro field F1 (extraction)."""
    from types import SimpleNamespace

    import numpy as np

    from tunewise.evaluation.records import Prediction
    from tunewise.evaluation.scoring import PRIMARY_METRIC, score_predictions
    from tunewise.strategies.finetuning import _test_statistic

    cases = {
        "classification": (["a", "b", "a", "c"], ["a", "a", "a", None], None),
        "generation": (["alpha", "beta", "gamma"], ["Alpha.", "beta", "delta!"], SimpleNamespace(match="normalized")),
        "extraction": ([{"x": 1, "y": "p"}, {"x": 2}, {"y": "q"}], [{"x": 1, "y": "p"}, {"x": 3}, None], None),
    }
    for kind, (golds, outs, generation) in cases.items():
        preds = [Prediction(example_id=str(i), output=o, raw="" if o is None else json.dumps(o))
                 for i, o in enumerate(outs)]
        value = score_predictions(kind, golds, preds, labels=("a", "b", "c"))["metrics"][PRIMARY_METRIC[kind]].value
        ctx = SimpleNamespace(spec=SimpleNamespace(kind=kind, generation=generation),
                              splits=SimpleNamespace(test=[SimpleNamespace(target=g) for g in golds]))
        stat = _test_statistic(ctx, value, preds)
        assert stat is not None, kind
        assert float(stat(np.arange(len(golds))[None, :])[0]) == pytest.approx(value), kind
        assert stat(np.zeros((5, len(golds)), dtype=int)).shape == (5,)
        assert _test_statistic(ctx, value + 0.1, preds) is None  # scores that do not give the metric: no joint band


def test_curve_training_work_counts_every_seed():
    """The budget estimate of a curve with ``seeds: 3`` is three trainings and three evaluations per size."""
    from types import SimpleNamespace

    from tunewise.strategies.finetuning import training_work
    from tunewise.task import RungSpec

    train = [SimpleNamespace(id=str(i), target=LABELS[i % 4], text=f"text {i}") for i in range(80)]
    spec = SimpleNamespace(model="hf:tiny", kind="classification", seed=0, instructions=None)
    one, three = (training_work(RungSpec(name="curve", strategy="learning_curve",
                                         params={"sizes": [2, 4, 8], **extra}), spec, train)
                  for extra in ({}, {"seeds": 3}))
    assert one.evaluations == 3 and (three.tokens, three.evaluations) == (pytest.approx(3 * one.tokens), 9)
    assert three.example_epochs == pytest.approx(3 * one.example_epochs) and "approximated" in one.basis
    assert [k for _, k in three.points] == [3, 3, 3]  # each size's work covers its 3 runs
    probe = training_work(RungSpec(name="curve", strategy="learning_curve", params={"sizes": [2, 4, 8], "of": "probe"}),
                          spec, train)
    assert probe == three  # the probe's curve trains 3 runs a size unless it says otherwise
