"""The GPU path: bf16 LoRA and 4-bit QLoRA (bitsandbytes) on a tiny random model.

Marked ``cuda`` and skipped cleanly on machines without a CUDA GPU (such as the 2-core CI
machine). Run them wherever a GPU is available: ``pytest -m cuda``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tunewise.run import run_task
from tunewise.task import load_task

from .test_finetuning import FAST, tiny_task

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _rung(path: Path, name: str) -> dict:
    return next(r for r in json.loads(path.read_text())["rungs"] if r["name"] == name)


def test_lora_trains_in_bf16_on_cuda(tiny_llama_dir, tmp_path):
    task = tiny_task(tmp_path, tiny_llama_dir, f"  - {{name: lora_gpu, strategy: finetune, params: {FAST}}}\n")
    r = _rung(run_task(load_task(task)).results_path, "lora_gpu")
    assert r["status"] == "finished", r.get("error")
    training = r["extras"]["training"]
    assert training["device"] == "cuda" and training["steps"] == 12
    losses = [loss for _, loss in training["history"]["train_loss"]]
    assert losses[-1] < losses[0]
    meta = json.loads((Path(r["config"]["artifact"]) / "tunewise_provenance.json").read_text())
    assert meta["training"]["device"] == "cuda"


def test_qlora_trains_a_4bit_base_with_bitsandbytes(tiny_llama_dir, tmp_path):
    pytest.importorskip("bitsandbytes")
    params = FAST.replace("}", ", method: qlora}")
    task = tiny_task(tmp_path, tiny_llama_dir, f"  - {{name: qlora_gpu, strategy: finetune, params: {params}}}\n")
    r = _rung(run_task(load_task(task)).results_path, "qlora_gpu")
    assert r["status"] == "finished", r.get("error")
    training = r["extras"]["training"]
    assert training["method"] == "qlora" and training["device"] == "cuda"
    losses = [loss for _, loss in training["history"]["train_loss"]]
    assert losses[-1] < losses[0]
    assert (Path(r["config"]["artifact"]) / "adapter_config.json").is_file()
