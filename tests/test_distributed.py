"""Multi-process fine-tuning: ``accelerate launch`` runs ``tunewise train`` as two CPU processes
(DDP over gloo) on the tiny random Llama; the artifact records world size 2 and the gloo backend,
and a later in-process ``run_task`` reuses it and scores it. No GPU and no real model needed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tunewise.errors import TaskSpecError
from tunewise.run import run_task, train_only
from tunewise.task import load_task

from .test_finetuning import tiny_task

DDP = "{max_steps: 6, batch_size: 4, learning_rate: 0.01, r: 4, alpha: 8, dropout: 0.0, evals_per_epoch: 1}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(task: Path, rung: str, port: int) -> list[str]:
    """Two CPU processes on this machine. accelerate's ``--cpu`` starts a single process (multi-CPU
    needs MPI there), so ``--multi_gpu`` selects its torchrun launcher; with no visible GPU the
    trainer asks for the CPU and accelerate initialises the process group with gloo."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(port), "-m", "tunewise", "train", str(task), "--rung", rung, "--quiet"]


@pytest.mark.slow  # three Python processes importing torch + transformers: ~30 s
def test_two_cpu_processes_train_with_gloo_and_run_reuses_the_artifact(tiny_llama_dir, tmp_path):
    task = tiny_task(tmp_path, tiny_llama_dir, f"  - {{name: lora_ddp, strategy: finetune, params: {DDP}}}\n")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    start = time.perf_counter()
    proc = subprocess.run(launch_command(task, "lora_ddp", _free_port()), env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, f"exit {proc.returncode} after {elapsed:.0f} s:\n{proc.stderr[-4000:]}"
    lines = proc.stdout.splitlines()
    assert sum(line.startswith("artifact: ") for line in lines) == 1, proc.stdout  # rank 0 prints, alone
    adapter = Path(next(line for line in lines if line.startswith("artifact: "))[len("artifact: "):])
    summary = next(line for line in lines if line.startswith("training: "))
    assert "6 steps" in summary and "world size 2 (gloo)" in summary, summary

    meta = json.loads((adapter / "tunewise_provenance.json").read_text())
    training = meta["training"]
    assert training["world_size"] == 2 and training["distributed_backend"] == "gloo"
    assert training["steps"] == 6 and training["device"] == "cpu"
    assert training["batch_size"] == 8  # 4 per process x 2 processes
    assert (adapter / "adapter_model.safetensors").is_file()
    store = tmp_path / ".tunewise"
    assert not (store / "tunewise.db").exists()  # training alone never opens the run store
    assert not list(adapter.parent.glob("checkpoints"))

    outcome = run_task(load_task(task))
    r = next(r for r in json.loads(outcome.results_path.read_text())["rungs"] if r["name"] == "lora_ddp")
    assert r["status"] == "finished", r.get("error")
    assert r["config"]["artifact_reused"] is True and r["config"]["artifact"] == str(adapter)
    assert r["config"]["training"]["world_size"] == 2
    acc = r["metrics"]["accuracy"]
    assert acc["n"] == 12 and acc["low"] <= acc["value"] <= acc["high"]


def test_train_only_refuses_a_rung_that_is_not_fine_tuning(tiny_llama_dir, tmp_path):
    task = tiny_task(tmp_path, tiny_llama_dir, "  - knn\n")
    with pytest.raises(TaskSpecError, match="rung 'knn' uses strategy 'knn'"):
        train_only(load_task(task), "knn")
    with pytest.raises(TaskSpecError, match="unknown rung"):
        train_only(load_task(task), "nope")
    assert not (tmp_path / ".tunewise").exists()
