"""Kill soak: ``tunewise run`` killed with SIGKILL at random moments, resumed, and compared with a run never killed.

Two phases, each a task run as a user runs it (``python -m tunewise.cli run TASK --quiet``, a subprocess):

* **prompt scoring**: a 4-label toy task on the fake backend (``fake:random?delay=...``, so every model
  call takes a known time) with a fixed list of rungs (knn and seven prompt rungs). The fake backend
  appends one line per served call to ``$TUNEWISE_FAKE_CALL_LOG`` (its pid, kind and a hash of the
  prompt), across processes.
* **training**: the same kind of task on a tiny random Llama (``hf:<dir>``, built here like the test
  suite's ``tiny_llama_dir``) with knn and one LoRA rung that writes a checkpoint every few steps, then
  is scored on the test split. Its process is the same CLI behind a thin observer (``child`` below:
  patches nothing but adds log lines) that records which checkpoint training resumed from and every
  optimiser step taken, so lost work is counted, not guessed. Torch runs with one thread
  (``OMP_NUM_THREADS=1``) in the reference and the soak alike.

For each phase an uninterrupted **reference** run measures the duration ``T`` and the moment ``a`` its
first piece of work started (first model call; the trainer's checkpoint look-up). A **cycle** copies the
untouched task into a fresh directory, draws ``k`` kill moments uniformly in ``[a, T]`` (seeded RNG,
sorted) on the reference's timeline, and runs the CLI repeatedly: attempt ``i`` is killed ``a + (m_i -
m_{i-1})`` seconds after it starts (a resumed process starts its remaining work about ``a`` seconds in,
so the kills land spread over the whole run: scoring, training, checkpoint writes, evaluation,
results, report, the version); in the training phase the ``m_i - m_{i-1}`` seconds are counted from the
attempt's own checkpoint look-up instead (its start-up, importing torch, varies with the machine's load
by more than the moments are apart), unless its adapter is already saved. The attempt after the last
kill runs to the end. Cycles repeat until the phase has its kills. Then, per cycle:

(a) calls: the multiset of calls served (kind, prompt hash) against the reference's; a call served
    twice counts as repeated, and is allowed only if it was the killed process's last call (in flight:
    served but not yet stored when the kill came). Missing calls are counted too.
(b) results: ``results.json`` and ``decision.json`` against the reference's: every rung's status,
    reason, metrics, per-label figures, parse counts and predicted outputs, the paired comparisons,
    the decision's winner, status and runner-up, and the versions registered, must be equal. Every
    other difference outside timings (``*_s``, latency, throughput, money derived from time,
    ``created_at``, ``environment``, resume bookkeeping) is listed, not hidden.
(c) training: after each kill the newest complete checkpoint on disk (``trainer_state.json`` that parses,
    and ``optimizer.pt``) is noted; the next process that trains must resume from exactly it. Steps
    trained twice are counted; the final adapter's tensors are compared with the reference's (max
    absolute difference) and its evaluation must be equal.

Run:  python benchmarks/soak_kill.py                      (24 kills: 12 scoring, 12 training; ~8 min on 2 cores)
      python benchmarks/soak_kill.py --prompt-kills 3 --train-kills 0   (the fast subset the tests run)
Writes benchmarks/results/soak_kill.json (``--out`` to change the name).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

TRAIN_LOG_ENV = "TUNEWISE_SOAK_TRAIN_LOG"
CALL_LOG_ENV = "TUNEWISE_FAKE_CALL_LOG"  # tunewise.backends.fake.CALL_LOG_ENV (not imported: keeps the child light)

LABELS = ["card_arrival", "card_linking", "exchange_rate", "top_up"]
WORDS = {
    "card_arrival": "when will my new card arrive in the post",
    "card_linking": "how do i link my card to the app",
    "exchange_rate": "what exchange rate do you use for euros",
    "top_up": "top up my account with money from my bank",
}
PROMPT_RUNGS = "knn,zero_shot,zero_shot_generate,role,few_shot_random,few_shot_balanced,few_shot_retrieved,cot"
FAST_PROMPT_RUNGS = "knn,zero_shot,few_shot_random,cot"
#: the LoRA rung of the training phase: dropout, early stopping on dev (patience 3, evaluated every 2 steps) and
#: warm-up stay at their defaults; at this learning rate the dev loss turns up and training stops early
TRAIN_PARAMS = "{max_steps: %d, batch_size: 8, learning_rate: 0.03, r: 4, alpha: 8, save_every: %d}"


# --- the child: the CLI behind an observer -----------------------------------------------------------


def child(argv: list[str]) -> None:
    """``python -m tunewise.cli`` with log lines for the checkpoint look-up and each optimiser step.

    Nothing is changed: the trainer's own ``_last_complete_checkpoint`` and step callback run as
    always, this only appends what they returned / saw to ``$TUNEWISE_SOAK_TRAIN_LOG``.
    """
    log = Path(os.environ[TRAIN_LOG_ENV])

    def emit(**fields: Any) -> None:
        with log.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"pid": os.getpid(), "t": time.time(), **fields}) + "\n")
            handle.flush()

    emit(event="start")
    import tunewise.training.trainer as trainer

    look_up = trainer._last_complete_checkpoint

    def observed_look_up(directory: Path) -> str | None:
        found = look_up(directory)
        emit(event="resume_check", checkpoint=Path(found).name if found else None)
        return found

    make_callbacks = trainer._Callbacks.__new__

    def observed_callbacks(cls: type, progress: Any, budget: Any) -> Any:
        callbacks = make_callbacks(cls, progress, budget)
        inner = callbacks.on_step_end

        def on_step_end(args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            emit(event="step", step=state.global_step)
            return inner(args, state, control, **kwargs)

        callbacks.on_step_end = on_step_end
        return callbacks

    trainer._last_complete_checkpoint = observed_look_up
    trainer._Callbacks.__new__ = observed_callbacks
    from tunewise.cli import cli

    cli.main(args=argv, prog_name="tunewise")


# --- inputs ----------------------------------------------------------------------------------------


def write_task(directory: Path, *, n_train: int, n_test: int, model: str, rungs: str | None = None,
               seed: int = 0) -> Path:
    """A 4-label classification task (shuffled word bags, numbered so every text is distinct)."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)

    def rows(n: int, offset: int) -> str:
        out = []
        for i in range(n):
            label = LABELS[i % len(LABELS)]
            words = WORDS[label].split()
            rng.shuffle(words)
            out.append(json.dumps({"text": " ".join(words) + f" #{offset + i}", "label": label}))
        return "\n".join(out) + "\n"

    (directory / "train.jsonl").write_text(rows(n_train, 0))
    (directory / "test.jsonl").write_text(rows(n_test, 10_000))
    task = directory / "task.yaml"
    task.write_text("name: soak\nkind: classification\ndata: {train: train.jsonl, test: test.jsonl}\n"
                    f"model: '{model}'\nembedder: hashing\ntarget: {{accuracy: 0.9}}\n" + (rungs or ""))
    return task


_CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_CORPUS = [
    "Is the sky blue? Answer yes or no.",
    "yes no maybe yes no",
    "You are a helpful assistant.",
    "activate my card, card arrival, card linking, lost or stolen card, card not working",
    "top up failed, top up reverted, pending top up, exchange rate, exchange charge",
    "Classify the banking query into one of the labels below. Label: card_arrival",
    "How do I activate my new card? When will my card arrive? I lost my card yesterday.",
    "The quick brown fox jumps over the lazy dog. 0123456789 + - * / ( ) [ ] { } : ; , . ! ?",
]


def build_tiny_llama(directory: Path) -> Path:
    """A tiny random Llama with a ChatML byte-level BPE tokenizer (as tests/conftest.py's ``tiny_llama_dir``)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(_CORPUS * 4, trainers.BpeTrainer(
        vocab_size=420, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        pad_token="<|im_end|>")
    tokenizer.chat_template = _CHATML
    tokenizer.save_pretrained(directory)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         initializer_range=0.2, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


# --- one phase -------------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str  # "prompt" | "training"
    base: Path  # the untouched task directory, copied for every run
    args: list[str]  # after `tunewise`
    env: dict[str, str]
    observed: bool  # run through `child` (training) instead of `python -m tunewise.cli`
    settings: dict[str, Any] = field(default_factory=dict)

    def command(self) -> list[str]:
        if self.observed:
            return [sys.executable, str(Path(__file__).resolve()), "child", *self.args]
        return [sys.executable, "-m", "tunewise.cli", *self.args]


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by the kill: the call was not served to the caller
            continue
    return out


def _adapter_saved(directory: Path) -> bool:
    return any(directory.glob(".tunewise/artifacts/*/adapter/tunewise_provenance.json"))


Trigger = Callable[[int, float], bool]  # (pid, seconds since it started) -> kill it now?


def _attempt(phase: Phase, directory: Path, trigger: Trigger | None, *, timeout_s: float) -> dict[str, Any]:
    """Run the CLI once in ``directory``; SIGKILL it when ``trigger`` says so (None: let it end).

    Returns its pid, whether it was killed, when (seconds after it started), its exit status, the
    wall-clock time it started (``t0``) and, for a run that failed on its own, the end of its stderr.
    """
    env = {**os.environ, **phase.env, CALL_LOG_ENV: str(directory / "calls.log"),
           TRAIN_LOG_ENV: str(directory / "train.log")}
    stderr = directory / "stderr.log"
    with stderr.open("ab") as err:
        err.write(f"\n--- attempt ({'killed when due' if trigger else 'to the end'})\n".encode())
        err.flush()
        t0, start = time.time(), time.monotonic()
        proc = subprocess.Popen(phase.command(), cwd=directory, env=env, stdout=subprocess.DEVNULL, stderr=err)
        due = False
        while proc.poll() is None and time.monotonic() - start < timeout_s:
            if trigger is not None and trigger(proc.pid, time.monotonic() - start):
                due = True
                break
            time.sleep(0.005)
        killed = proc.poll() is None
        if killed:
            os.kill(proc.pid, signal.SIGKILL)
        rc = proc.wait()
        wall = time.monotonic() - start
    if killed and not due:
        raise RuntimeError(f"{phase.name}: a run did not finish in {timeout_s:.0f} s")
    out = {"pid": proc.pid, "killed": killed, "at_s": round(wall, 3), "rc": rc, "t0": t0}
    if not killed and rc != 0:
        out["stderr_tail"] = stderr.read_text(errors="replace")[-3000:]
    return out


def _fresh(phase: Phase, directory: Path) -> Path:
    shutil.rmtree(directory, ignore_errors=True)
    shutil.copytree(phase.base, directory)
    return directory


def reference(phase: Phase, workdir: Path, *, timeout_s: float) -> dict[str, Any]:
    """The uninterrupted run: its duration, when its work started, and (training) when each step ended."""
    directory = _fresh(phase, workdir / f"{phase.name}-reference")
    first_call: list[float] = []

    def watch(pid: int, elapsed: float) -> bool:  # the fake backend's log lines carry no time: note the first
        if not phase.observed and not first_call and (directory / "calls.log").is_file() \
                and (directory / "calls.log").stat().st_size:
            first_call.append(elapsed)
        return False

    run = _attempt(phase, directory, watch, timeout_s=timeout_s)
    if run["rc"] != 0:
        raise RuntimeError(f"{phase.name}: the reference run failed:\n{run.get('stderr_tail')}")
    ref: dict[str, Any] = {"dir": directory, "wall_s": run["at_s"]}
    if phase.observed:
        events = _lines(directory / "train.log")
        ref["work_start_s"] = next(e["t"] for e in events if e["event"] == "resume_check") - run["t0"]
        ref["start_s"] = next(e["t"] for e in events if e["event"] == "start") - run["t0"]
        ref["steps_s"] = [e["t"] - run["t0"] for e in events if e["event"] == "step"]  # step k ended at [k - 1]
    else:
        if not first_call:
            raise RuntimeError(f"{phase.name}: the reference run made no model call")
        ref["work_start_s"] = first_call[0]
    return ref


def _time_trigger(delay: float) -> Trigger:
    return lambda pid, elapsed: elapsed >= delay


def _training_trigger(ref: dict[str, Any], moment: float, directory: Path) -> tuple[Trigger, str]:
    """Kill at the point of the training run that ``moment`` (seconds into the reference) marks.

    Counting seconds from each attempt's start would not do: importing torch and loading the model take
    a different time in every process on a shared machine. So ``moment`` becomes a marker in the
    reference (its checkpoint look-up, or the end of step ``k``) plus the seconds after it, and the
    attempt is killed that long after it passes the same marker (a process resumed past step ``k``
    passes it at its first step). Once the adapter is saved, no process trains again: the seconds after
    the last step are counted from the attempt's start, plus the reference's start-up.
    """
    steps, look_up = ref["steps_s"], ref["work_start_s"]
    if _adapter_saved(directory):
        after = max(0.0, moment - steps[-1])
        return _time_trigger(look_up + after), f"{after:.2f} s after training ended (timed from start-up)"
    if moment >= steps[-1]:
        marker_step, after, label = len(steps), moment - steps[-1], "the last step"
    elif moment < steps[0]:
        marker_step, after, label = 0, moment - look_up, "the checkpoint look-up"
    else:
        marker_step = max(k for k in range(1, len(steps) + 1) if steps[k - 1] <= moment)
        after, label = moment - steps[marker_step - 1], f"step {marker_step}"
    passed_at: list[float] = []

    def trigger(pid: int, elapsed: float) -> bool:
        if not passed_at:
            events = [e for e in _lines(directory / "train.log") if e.get("pid") == pid]
            if marker_step == 0:
                hit = any(e["event"] == "resume_check" for e in events)
            else:
                hit = any(e["event"] == "step" and e["step"] >= marker_step for e in events)
            if hit:
                passed_at.append(elapsed)
        return bool(passed_at) and elapsed >= passed_at[0] + after

    return trigger, f"{after:.2f} s after {label}"


# --- what a killed process left behind ----------------------------------------------------------------


def _complete_checkpoint(directory: Path) -> str | None:
    """The newest checkpoint a resume may use: ``optimizer.pt`` and a ``trainer_state.json`` that parses."""
    found = []
    for state in directory.glob(".tunewise/artifacts/*/checkpoints/checkpoint-*/trainer_state.json"):
        ckpt = state.parent
        if not ckpt.name.split("-")[-1].isdigit() or not (ckpt / "optimizer.pt").is_file():
            continue
        try:
            json.loads(state.read_text())
        except (json.JSONDecodeError, OSError):
            continue
        found.append(ckpt)
    return max(found, key=lambda p: int(p.name.split("-")[-1])).name if found else None


def _snapshot(phase: Phase, directory: Path, pid: int) -> dict[str, Any]:
    """What the killed process ``pid`` had done, and where it was."""
    results = list(directory.glob(".tunewise/runs/*/results.json"))
    snap: dict[str, Any] = {"results_written": bool(results)}
    if phase.observed:
        events = [e for e in _lines(directory / "train.log") if e.get("pid") == pid]
        steps = [e["step"] for e in events if e.get("event") == "step"]
        snap.update(steps_this_process=len(steps), last_step=max(steps) if steps else None,
                    checkpoint_on_disk=_complete_checkpoint(directory), adapter_saved=_adapter_saved(directory))
        if snap["adapter_saved"]:
            snap["where"] = "after training (evaluation, results, report, version)"
        elif steps:
            snap["where"] = "training"
        elif any(e.get("event") == "resume_check" for e in events):
            snap["where"] = "building the trainer / resuming from a checkpoint"
        else:
            snap["where"] = "before training (start-up, data, earlier rungs)"
    else:
        calls = [c for c in _lines(directory / "calls.log") if c.get("pid") == pid]
        snap.update(calls_this_process=len(calls),
                    last_call=f"{calls[-1]['kind']}:{calls[-1]['prompt']}" if calls else None)
        snap["where"] = "scoring" if calls else "before its first new call (start-up, reuse of finished rungs)"
    if snap["results_written"]:
        snap["where"] = "after results.json (report, version)"
    return snap


# --- comparisons ----------------------------------------------------------------------------------------


#: keys whose values are measured time, or derived from it, or say which process did the work
_VOLATILE_KEYS = {"created_at", "environment", "cost_usd", "device_hours", "resumed_from", "tokens_per_s",
                  "examples_per_s"}


def _volatile(key: str) -> bool:
    return key in _VOLATILE_KEYS or key.endswith(("_s", "_seconds")) or "latency" in key


_VOLATILE_DECISION = {"context", "options", "pareto", "next_step", "reasons", "break_even", "comparison"}


def _paths(a: Any, b: Any, path: str, out: list[str], rounding: list[str]) -> None:
    """Paths where ``a`` and ``b`` differ (``rounding``: floats within 1e-9 relative of each other)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if _volatile(str(k)):
                continue
            if k not in a or k not in b:
                out.append(f"{path}/{k} (only in one)")
            else:
                _paths(a[k], b[k], f"{path}/{k}", out, rounding)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            _paths(x, y, f"{path}[{i}]", out, rounding)
    elif isinstance(a, float) and isinstance(b, float) and a != b and math.isclose(a, b, rel_tol=1e-9):
        rounding.append(path)
    elif a != b:
        out.append(path)


def _rung_core(r: dict[str, Any]) -> dict[str, Any]:
    return {"name": r["name"], "strategy": r["strategy"], "status": r["status"], "reason": r.get("reason"),
            "error": r.get("error"), "metrics": r.get("metrics"), "primary_metric": r.get("primary_metric"),
            "per_label": r.get("per_label"), "confusions": r.get("confusions"), "parse": r.get("parse"),
            "outputs": [p.get("output") for p in r.get("predictions") or []]}


def _run_files(directory: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """results.json and decision.json, with the run's own directory (in artifact paths) written ``<dir>``."""
    (results,) = directory.glob(".tunewise/runs/*/results.json")
    here = json.dumps(str(directory.resolve()))[1:-1]
    return tuple(json.loads(path.read_text().replace(here, "<dir>"))
                 for path in (results, results.parent / "decision.json"))


def _versions(directory: Path) -> list[dict[str, Any]]:
    from tunewise.store import Store
    from tunewise.versions import aliases_of, list_versions

    with Store(directory / ".tunewise") as store:
        aliases = aliases_of(store)
        return [{"rung": v.manifest["rung"]["name"], "metric": v.manifest.get("metric"),
                 "aliases": sorted(aliases.get(v.id, []))} for v in list_versions(store)]


def compare_runs(ref: Path, got: Path) -> dict[str, Any]:
    """Required equalities (rungs, comparisons, decision, versions) and every other non-timing difference."""
    ref_results, ref_decision = _run_files(ref)
    results, decision = _run_files(got)
    unequal = []
    if [r["name"] for r in ref_results["rungs"]] != [r["name"] for r in results["rungs"]]:
        unequal.append("rung list")
    for a, b in zip(ref_results["rungs"], results["rungs"]):
        for key, value in _rung_core(a).items():
            if _rung_core(b)[key] != value:
                unequal.append(f"rung {a['name']}: {key}")
    if ref_results["comparisons"] != results["comparisons"]:
        unequal.append("comparisons")
    for key in ("winner", "status", "runner_up"):
        if ref_decision.get(key) != decision.get(key):
            unequal.append(f"decision {key}: {ref_decision.get(key)!r} != {decision.get(key)!r}")
    if _versions(ref) != _versions(got):
        unequal.append("versions registered")
    other: list[str] = []
    rounding: list[str] = []
    _paths(ref_results, results, "results.json", other, rounding)
    _paths({k: v for k, v in ref_decision.items() if k not in _VOLATILE_DECISION},
           {k: v for k, v in decision.items() if k not in _VOLATILE_DECISION}, "decision.json", other, rounding)

    def generic(paths: list[str]) -> list[str]:
        return sorted({re.sub(r"\[\d+\]", "[]", p) for p in paths})

    return {"equal": not unequal, "unequal": unequal, "other_differences": generic(other),
            "rounding_differences": generic(rounding)}


def _call_keys(calls: list[dict[str, Any]]) -> Counter:
    return Counter(f"{c['kind']}:{c['prompt']}" for c in calls)


def check_calls(ref_dir: Path, directory: Path, kills: list[dict[str, Any]]) -> dict[str, Any]:
    """Calls served in the cycle against the reference: repeats (in flight at a kill, or not) and missing."""
    ref = _call_keys(_lines(ref_dir / "calls.log"))
    got_calls = _lines(directory / "calls.log")
    got = _call_keys(got_calls)
    in_flight = Counter(k["last_call"] for k in kills if k.get("last_call"))
    repeated = got - ref
    explained = repeated & in_flight
    return {"calls_reference": sum(ref.values()), "calls_served": sum(got.values()),
            "repeated": sum(repeated.values()), "repeated_in_flight": sum(explained.values()),
            "repeated_not_in_flight": sum((repeated - explained).values()),
            "missing": sum((ref - got).values())}


def _adapter(directory: Path) -> Path:
    (found,) = directory.glob(".tunewise/artifacts/*/adapter")
    return found


def check_training(ref_dir: Path, directory: Path, kills: list[dict[str, Any]]) -> dict[str, Any]:
    """Resumes from the last complete checkpoint, steps trained twice, and the final adapter against the reference."""
    from safetensors.torch import load_file

    events = _lines(directory / "train.log")
    ref_steps = sum(e.get("event") == "step" for e in _lines(ref_dir / "train.log"))
    steps = sum(e.get("event") == "step" for e in events)
    killed = {k["pid"]: k for k in kills}
    resumes, last_kill = [], None
    pids = list(dict.fromkeys(e["pid"] for e in events))
    for pid in pids:
        checks = [e for e in events if e["pid"] == pid and e.get("event") == "resume_check"]
        for e in checks:  # the first trainer of this process looks up the checkpoint once
            expected = last_kill["checkpoint_on_disk"] if last_kill else None
            resumes.append({"pid": pid, "resumed_from": e["checkpoint"], "newest_complete_at_kill": expected,
                            "ok": e["checkpoint"] == expected})
        if pid in killed:
            last_kill = killed[pid]
    a, b = load_file(_adapter(ref_dir) / "adapter_model.safetensors"), load_file(
        _adapter(directory) / "adapter_model.safetensors")
    diff = max(float((a[k] - b[k]).abs().max()) for k in a) if set(a) == set(b) else float("inf")
    lost = [max(0, k["last_step"] - int((k.get("checkpoint_on_disk") or "checkpoint-0").split("-")[-1]))
            for k in kills if k.get("last_step") and not k.get("adapter_saved")]
    return {"steps_reference": ref_steps, "steps_trained": steps, "steps_repeated": steps - ref_steps,
            "max_steps_lost_per_kill": max(lost, default=0), "resumes": resumes,
            "resumes_from_last_complete_checkpoint": sum(r["ok"] for r in resumes),
            "resumes_elsewhere": sum(not r["ok"] for r in resumes),
            "adapter_max_abs_diff": diff, "adapter_bit_identical": diff == 0.0}


# --- a cycle --------------------------------------------------------------------------------------------


def cycle(phase: Phase, ref: dict[str, Any], directory: Path, n_kills: int, rng: random.Random, *,
          timeout_s: float) -> dict[str, Any]:
    """Kill the run ``n_kills`` times at moments spread over the reference's duration, then let it finish."""
    _fresh(phase, directory)
    a, total = ref["work_start_s"], ref["wall_s"]
    moments = sorted(rng.uniform(a, total) for _ in range(n_kills))
    kills, attempts, previous = [], [], a
    for moment in moments:
        if phase.observed:
            trigger, aim = _training_trigger(ref, moment, directory)
        else:
            trigger, aim = _time_trigger(a + (moment - previous)), f"{a + moment - previous:.2f} s after start"
        previous = moment
        run = _attempt(phase, directory, trigger, timeout_s=timeout_s)
        attempts.append(run)
        if not run["killed"]:
            break  # the rest of the run took less than the moment drawn: it finished on its own
        kills.append({"pid": run["pid"], "after_s": run["at_s"], "moment_s": round(moment, 3), "aimed_at": aim,
                      **_snapshot(phase, directory, run["pid"])})
    if not attempts or attempts[-1]["killed"]:
        attempts.append(_attempt(phase, directory, None, timeout_s=timeout_s))
    final = attempts[-1]
    out: dict[str, Any] = {"kills": len(kills), "resumes": len(attempts) - 1, "attempts": len(attempts),
                           "finished": final["rc"] == 0, "kill_log": kills}
    if final["rc"] != 0:
        out["error"] = final.get("stderr_tail")
        return out
    out["failed_resumes"] = sum(1 for r in attempts if not r["killed"] and r["rc"] != 0)
    out["results"] = compare_runs(ref["dir"], directory)
    if phase.observed:
        out["training"] = check_training(ref["dir"], directory, kills)
    else:
        out["calls"] = check_calls(ref["dir"], directory, kills)
    return out


def soak_phase(phase: Phase, workdir: Path, kills: int, per_cycle: int, rng: random.Random, *,
               timeout_s: float, progress: bool = True) -> dict[str, Any]:
    ref = reference(phase, workdir, timeout_s=timeout_s)
    if progress:
        print(f"[{phase.name}] reference: {ref['wall_s']:.1f} s, work starts at {ref['work_start_s']:.1f} s",
              flush=True)
    cycles = []
    done = 0
    while done < kills:
        c = cycle(phase, ref, workdir / f"{phase.name}-cycle{len(cycles) + 1}", min(per_cycle, kills - done), rng,
                  timeout_s=timeout_s)
        cycles.append(c)
        done += c["kills"]
        if progress:
            print(f"[{phase.name}] cycle {len(cycles)}: {c['kills']} kill(s), finished {c['finished']}, "
                  f"results equal {c.get('results', {}).get('equal')}", flush=True)
        if not c["finished"] or len(cycles) > 4 * kills:
            break
    return {"settings": phase.settings,
            "reference": {"wall_s": ref["wall_s"], "work_start_s": round(ref["work_start_s"], 3),
                          **({"steps": len(ref["steps_s"]), "training_s": [round(ref["steps_s"][0], 3),
                                                                         round(ref["steps_s"][-1], 3)]}
                             if "steps_s" in ref else {})},
            "cycles": cycles, "summary": summarise(cycles)}


def summarise(cycles: list[dict[str, Any]]) -> dict[str, Any]:
    where = Counter(k["where"] for c in cycles for k in c["kill_log"])
    s: dict[str, Any] = {
        "kills": sum(c["kills"] for c in cycles), "resumes": sum(c["resumes"] for c in cycles),
        "cycles": len(cycles), "all_finished": all(c["finished"] for c in cycles),
        "failed_resumes": sum(c.get("failed_resumes", 0) for c in cycles),
        "results_equal": all(c.get("results", {}).get("equal") for c in cycles),
        "unequal": sorted({u for c in cycles for u in c.get("results", {}).get("unequal", [])}),
        "other_differences": sorted({u for c in cycles for u in c.get("results", {}).get("other_differences", [])}),
        "rounding_differences": sorted({u for c in cycles
                                        for u in c.get("results", {}).get("rounding_differences", [])}),
        "kills_by_moment": dict(where),
    }
    calls = [c["calls"] for c in cycles if "calls" in c]
    if calls:
        s.update({k: sum(c[k] for c in calls) for k in
                  ("calls_served", "repeated", "repeated_in_flight", "repeated_not_in_flight", "missing")})
    training = [c["training"] for c in cycles if "training" in c]
    if training:
        s.update(steps_repeated=sum(t["steps_repeated"] for t in training),
                 max_steps_lost_per_kill=max(t["max_steps_lost_per_kill"] for t in training),
                 resumes_checked=sum(len(t["resumes"]) for t in training),
                 resumes_from_last_complete_checkpoint=sum(t["resumes_from_last_complete_checkpoint"]
                                                           for t in training),
                 resumes_elsewhere=sum(t["resumes_elsewhere"] for t in training),
                 adapter_max_abs_diff=max(t["adapter_max_abs_diff"] for t in training),
                 adapter_bit_identical=all(t["adapter_bit_identical"] for t in training))
    return s


def passed(summary: dict[str, Any]) -> bool:
    """The soak's verdict for one phase: every cycle finished, no unexplained repeat, results equal."""
    return (summary["all_finished"] and summary["failed_resumes"] == 0 and summary["results_equal"]
            and summary.get("repeated_not_in_flight", 0) == 0 and summary.get("missing", 0) == 0
            and summary.get("resumes_elsewhere", 0) == 0)


# --- phases ----------------------------------------------------------------------------------------------


def prompt_phase(workdir: Path, *, delay: float, n_test: int, rungs: str) -> Phase:
    base = workdir / "prompt-base"
    shutil.rmtree(base, ignore_errors=True)
    write_task(base, n_train=60, n_test=n_test, model="fake:random")
    model = f"fake:random?delay={delay:g}"
    return Phase("prompt", base, ["run", "task.yaml", "--quiet", "--model", model, "--rungs", rungs], {}, False,
                 {"model": model, "rungs": rungs.split(","), "train": 60, "test": n_test})


def training_phase(workdir: Path, *, steps: int, save_every: int, n_test: int) -> Phase:
    base = workdir / "training-base"
    shutil.rmtree(base, ignore_errors=True)
    model_dir = build_tiny_llama(workdir / "tiny-llama")
    params = TRAIN_PARAMS % (steps, save_every)
    write_task(base, n_train=48, n_test=n_test, model=f"hf:{model_dir}",
               rungs=f"rungs:\n  - knn\n  - {{name: lora_soak, strategy: finetune, params: {params}}}\n")
    env = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    return Phase("training", base, ["run", "task.yaml", "--quiet"], env, True,
                 {"model": "tiny random Llama (2 layers, hidden 32), hf:<dir>", "rungs": ["knn", "lora_soak"],
                  "lora_params": params, "train": 48, "test": n_test, "torch_threads": 1})


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["child"]:
        child(argv[1:])
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompt-kills", type=int, default=12)
    p.add_argument("--train-kills", type=int, default=12)
    p.add_argument("--kills-per-cycle", type=int, default=6)
    p.add_argument("--delay", type=float, default=0.02, help="seconds per fake model call (default 0.02)")
    p.add_argument("--test", type=int, default=48, help="test examples of the prompt task (default 48)")
    p.add_argument("--fast", action="store_true", help=f"prompt rungs {FAST_PROMPT_RUNGS} only")
    p.add_argument("--steps", type=int, default=150, help="LoRA max_steps (default 150; early stopping ends it sooner)")
    p.add_argument("--save-every", type=int, default=4, help="steps between checkpoints (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=600, help="seconds any one run may take")
    p.add_argument("--workdir", type=Path, help="keep the runs here (default: a temporary directory, removed)")
    p.add_argument("--out", default="soak_kill", help="benchmarks/results/<out>.json ('' : do not write)")
    args = p.parse_args(argv)
    import _common as C

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tunewise-soak-kill-"))
    rng = random.Random(args.seed)
    started = time.monotonic()
    phases: dict[str, Any] = {}
    try:
        if args.prompt_kills:
            phase = prompt_phase(workdir, delay=args.delay, n_test=args.test,
                                 rungs=FAST_PROMPT_RUNGS if args.fast else PROMPT_RUNGS)
            phases["prompt"] = soak_phase(phase, workdir, args.prompt_kills, args.kills_per_cycle, rng,
                                          timeout_s=args.timeout)
        if args.train_kills:
            phase = training_phase(workdir, steps=args.steps, save_every=args.save_every, n_test=12)
            phases["training"] = soak_phase(phase, workdir, args.train_kills, args.kills_per_cycle, rng,
                                            timeout_s=args.timeout)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    verdict = all(passed(ph["summary"]) for ph in phases.values())
    totals = {"kills": sum(ph["summary"]["kills"] for ph in phases.values()),
              "resumes": sum(ph["summary"]["resumes"] for ph in phases.values()),
              "passed": verdict, "wall_s": round(time.monotonic() - started, 1)}
    data = {"environment": C.environment(), "settings": {**vars(args), "workdir": str(args.workdir or "")},
            "totals": totals, "phases": phases}
    for name, ph in phases.items():
        s = ph["summary"]
        print(f"{name}: {s['kills']} kills, {s['resumes']} resumes in {s['cycles']} cycle(s); results equal "
              f"{s['results_equal']}; " + (
                  f"calls repeated {s['repeated']} (in flight {s['repeated_in_flight']}), missing {s['missing']}"
                  if "repeated" in s else
                  f"steps repeated {s['steps_repeated']}, resumes from the last complete checkpoint "
                  f"{s['resumes_from_last_complete_checkpoint']}/{s['resumes_checked']}, adapter max |diff| "
                  f"{s['adapter_max_abs_diff']:.3g}"))
        if s["unequal"] or s["other_differences"] or s["rounding_differences"]:
            print(f"  unequal: {s['unequal']}; other differences: {s['other_differences']}; within 1e-9 relative: "
                  f"{s['rounding_differences']}")
    print(f"total: {totals['kills']} kills, {totals['resumes']} resumes, passed {verdict} ({totals['wall_s']} s)")
    if args.out:
        print(f"wrote {C.write_result(args.out, data)}")
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
