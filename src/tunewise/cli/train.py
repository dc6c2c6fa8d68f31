"""``tunewise train TASK --rung NAME``: train one fine-tuning rung's artifact, alone or multi-process."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..task import load_task
from ._common import user_errors
from .progress import ProgressBars


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _summary(training: dict) -> str:
    minutes = (training.get("wall_s") or 0) / 60
    rate = training.get("tokens_per_s")
    backend = training.get("distributed_backend")
    return (f"{training.get('examples')} examples, {training.get('steps')} steps, {minutes:.1f} min, "
            f"{f'{rate:,.0f}' if rate else '?'} tokens/s, world size {training.get('world_size', 1)}"
            f"{f' ({backend})' if backend else ''}")


@click.command("train")
@click.argument("task", type=click.Path(path_type=Path))
@click.option("--rung", "rung", required=True, help="The finetune rung to train, e.g. lora or a rung from task.yaml.")
@click.option("--store", type=click.Path(path_type=Path), help="Run-store directory (default: .tunewise/ beside TASK).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def train_cmd(task: Path, rung: str, store: Path | None, quiet: bool) -> None:
    """Train (or reuse) the artifact of one fine-tuning rung of TASK, without evaluating it.

    The artifact lands where `tunewise run` looks for it, so a later `tunewise run TASK --rungs NAME`
    reuses it and only scores it. The same command runs multi-process (DDP) under accelerate:

    \b
      accelerate launch --num_processes 2 -m tunewise train TASK --rung lora

    That is DDP over NCCL on two GPUs. Without GPUs, add --multi_gpu for two CPU processes
    over gloo (--cpu alone starts a single process). FSDP and DeepSpeed come from an
    `accelerate config` file and the same command. Only rank 0 writes and prints.
    """
    from ..run import train_only  # the orchestrator: only when a rung is trained, not for --help
    from .run import _quiet_libraries

    main = _rank() == 0
    with user_errors():
        spec = load_task(task)
        spec = spec.model_copy(update={"store": store.resolve()}) if store else spec
        _quiet_libraries()
        with ProgressBars(enabled=main and not quiet) as bars:
            artifact = train_only(spec, rung, progress=bars if main else None)
    _finish_process_group()
    if not main:
        return
    click.echo(f"artifact: {artifact.path}{'  (reused)' if artifact.reused else ''}")
    click.echo(f"training: {_summary(artifact.training)}")


def _finish_process_group() -> None:
    """Leave the process group cleanly (torch warns at exit otherwise); a no-op for one process."""
    import sys

    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
