"""Where models run: one home (``backends/devices.py``) for the device the trainer and the ladder use."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tunewise.backends import devices
from tunewise.training import trainer


@pytest.mark.parametrize("gpu", [True, False])
def test_torch_device_follows_cuda(monkeypatch, gpu):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    assert devices.torch_device() == ("cuda" if gpu else "cpu")
    assert devices.hosting_device("local:smollm2-135m") == devices.torch_device()
    assert devices.hosting_device("hf:/models/tiny") == devices.torch_device()


@pytest.mark.parametrize("model", ["fake:random", "openai:gpt-4o-mini", "echo"])
def test_models_not_hosted_here_run_on_cpu_without_torch(model):
    code = (f"import sys\nfrom tunewise.backends.devices import hosting_device\n"
            f"assert hosting_device({model!r}) == 'cpu'\nassert 'torch' not in sys.modules, 'torch imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_trainer_has_no_device_helper_of_its_own():
    assert not hasattr(trainer, "_device")
