"""Where a model runs: ``cuda`` when torch sees a GPU, else ``cpu``.

:func:`torch_device` is the device training and local inference put tensors on. :func:`hosting_device`
is where a task's model runs, for prices and cost priors: a self-hosted model (``local:``, ``hf:``)
runs on :func:`torch_device`; an API or fake model is priced as ``cpu`` and never imports torch.
"""

from __future__ import annotations

__all__ = ["torch_device", "hosting_device"]

#: model prefixes whose weights run in this process (on a GPU when there is one)
_SELF_HOSTED = ("local", "hf")


def torch_device() -> str:
    """``"cuda"`` when torch sees a GPU, else ``"cpu"``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def hosting_device(model: str) -> str:
    """Where ``model`` (a task's model id, e.g. ``local:smollm2-135m``) runs; ``cpu`` for API and fake models."""
    if model.partition(":")[0] not in _SELF_HOSTED:
        return "cpu"
    try:
        return torch_device()
    except ImportError:  # pragma: no cover - torch is a dependency of self-hosted models
        return "cpu"
