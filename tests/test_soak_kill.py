"""The kill soak (``benchmarks/soak_kill.py``) at small scale, and what it found in resumed training.

* ``tunewise run`` on the fake backend, SIGKILLed 3 times at moments spread over a reference run's
  duration, resumed each time: no call served twice except the one in flight at a kill, nothing
  missing, and results, comparisons, decision and versions equal to the run never killed.
* Training interrupted after its best checkpoint and resumed stops where an uninterrupted run stops
  (the early-stopping patience survives the resume), keeps the same history and adapter, and
  reports the same mean training loss (it covered only the steps after the resume).
"""

from __future__ import annotations

import importlib.util
import random
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _soak():
    spec = importlib.util.spec_from_file_location("soak_kill", ROOT / "benchmarks" / "soak_kill.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("soak_kill", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # 5 CLI processes, ~15 s on 2 free cores
def test_prompt_scoring_killed_three_times_resumes_to_the_same_results(tmp_path):
    soak = _soak()
    phase = soak.prompt_phase(tmp_path, delay=0.01, n_test=24, rungs=soak.FAST_PROMPT_RUNGS)
    out = soak.soak_phase(phase, tmp_path, kills=3, per_cycle=3, rng=random.Random(1), timeout_s=120,
                          progress=False)
    s = out["summary"]
    assert s["kills"] >= 3 and s["all_finished"] and s["failed_resumes"] == 0, out["cycles"]
    assert s["repeated_not_in_flight"] == 0 and s["missing"] == 0, out["cycles"]
    assert s["results_equal"], s["unequal"]
    assert s["other_differences"] == [], s["other_differences"]
    assert soak.passed(s)


# ---------------------------------------------------------------- training interrupted and resumed


def _pairs(n: int, offset: int) -> list:
    from tunewise.backends.base import Message

    soak = _soak()
    return [((Message("user", f"Classify: {soak.WORDS[label]} #{offset + i}"),), label)
            for i, label in ((i, soak.LABELS[i % len(soak.LABELS)]) for i in range(n))]


class _Crash(Exception):
    """Stands for the kill: raised from the progress callback at a chosen step (before that step's save)."""


def _crash_at(step: int):
    def progress(done: int, total: int) -> None:
        if done == step:
            raise _Crash(step)

    return progress


@pytest.fixture(scope="module")
def early_stopped(tiny_llama_dir, tmp_path_factory):
    """A LoRA run that stops early (best dev loss at step 8, stopped at 14 with patience 3, evaluated every
    2 steps) and the same job interrupted one step before it stopped, then resumed."""
    from tunewise.training.settings import TuneSettings
    from tunewise.training.trainer import TrainingJob, train

    tmp = tmp_path_factory.mktemp("early_stop")
    settings = TuneSettings(max_steps=60, batch_size=8, learning_rate=0.1, r=4, alpha=8, save_every=2)

    def job(name: str) -> TrainingJob:
        return TrainingJob(base_model=f"hf:{tiny_llama_dir}", settings=settings, train=_pairs(40, 0),
                           dev=_pairs(8, 100), out_dir=tmp / name, seed=0)

    reference = train(job("reference"))
    stopped = reference.training["steps"]
    assert reference.training["stopped"] == "early stopping" and stopped < 60
    assert reference.training["best_checkpoint_step"] <= stopped - 6  # patience 3 x 2 steps
    with pytest.raises(_Crash):
        train(job("resumed"), progress=_crash_at(stopped - 1))  # checkpoint stopped-2 holds patience 2 of 3
    assert (tmp / "resumed" / "checkpoints" / f"checkpoint-{stopped - 2}").is_dir()
    resumed = train(job("resumed"))
    assert resumed.training["resumed_from"] == f"checkpoint-{stopped - 2}"
    yield reference, resumed
    shutil.rmtree(tmp, ignore_errors=True)


def test_training_resumed_after_its_best_checkpoint_stops_where_the_uninterrupted_run_stops(early_stopped):
    reference, resumed = early_stopped
    ref, got = reference.training, resumed.training
    assert (got["steps"], got["stopped"], got["best_checkpoint_step"]) == (
        ref["steps"], ref["stopped"], ref["best_checkpoint_step"])
    assert got["history"] == ref["history"]
    from safetensors.torch import load_file

    a = load_file(reference.path / "adapter_model.safetensors")
    b = load_file(resumed.path / "adapter_model.safetensors")
    assert set(a) == set(b) and all((a[k] == b[k]).all() for k in a)


def test_resumed_training_reports_the_mean_loss_of_every_step_not_only_those_after_the_resume(early_stopped):
    reference, resumed = early_stopped
    assert resumed.training["final_train_loss"] == pytest.approx(reference.training["final_train_loss"], rel=1e-6)


def test_a_checkpoint_whose_trainer_state_a_kill_cut_short_is_not_resumed_from(tmp_path):
    """transformers writes trainer_state.json last; a kill while it is written leaves a file that exists but is
    not JSON, and resuming from it raises in every later run of the rung; the previous complete checkpoint is used."""
    import json

    from tunewise.training.trainer import _last_complete_checkpoint

    for step, state in ((4, json.dumps({"global_step": 4})), (8, '{"global_step": 8, "log_hist')):
        ckpt = tmp_path / f"checkpoint-{step}"
        ckpt.mkdir()
        (ckpt / "optimizer.pt").write_bytes(b"x")
        (ckpt / "trainer_state.json").write_text(state)
    assert _last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert not (tmp_path / "checkpoint-8").exists()  # removed, as other half-written checkpoints are
