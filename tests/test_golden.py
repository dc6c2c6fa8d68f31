"""Same behaviour, pinned: whole runs on the fake backend give byte-for-byte the recorded ``results.json`` and
``decision.json`` (timestamps, package versions and temp paths aside).

The clock is frozen (``time.perf_counter`` always returns the same value), so every latency, throughput and
cost derived from them is the same on every machine and the goldens pin the orchestration, the policy's
steps, the comparisons and the decision exactly. Regenerate after an intended change of behaviour with
``TUNEWISE_UPDATE_GOLDEN=1 pytest tests/test_golden.py`` and say why in the commit.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest

from tunewise.run import run_task
from tunewise.task import load_task

from .test_run import write_extraction

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("TUNEWISE_UPDATE_GOLDEN") == "1"
LABELS = ["card_arrival", "card_linking", "exchange_rate", "top_up"]
WORDS = {
    "card_arrival": "when will my new card arrive in the post",
    "card_linking": "how do i link my card to the app",
    "exchange_rate": "what exchange rate do you use for euros",
    "top_up": "top up my account with money from my bank",
}


def _classification(tmp: Path, *, model: str, n_test: int, keep: int = 3, extra: str = "") -> Path:
    rng = random.Random(7)

    def rows(n: int, offset: int) -> list[dict[str, str]]:
        out = []
        for i in range(n):
            label = LABELS[i % len(LABELS)]
            words = WORDS[label].split()
            rng.shuffle(words)
            other = WORDS[rng.choice(LABELS)].split()
            rng.shuffle(other)
            words = words[:keep] + other[:8 - keep]  # noise, so the baselines are not perfect
            rng.shuffle(words)
            out.append({"text": " ".join(words) + f" #{offset + i}", "label": label})
        return out

    train, test = rows(80, 0), rows(n_test, 10_000)
    (tmp / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (tmp / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    (tmp / "oracle.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train + test))
    task = tmp / "task.yaml"
    task.write_text("name: toy\nkind: classification\ndata: {train: train.jsonl, test: test.jsonl}\n"
                    f"model: '{model}'\nembedder: hashing\n" + extra)
    return task


def _extraction(tmp: Path) -> Path:
    return write_extraction(tmp, extra="target: {field_f1: 0.8}\n")


def _generation(tmp: Path) -> Path:
    pairs = [{"text": f"say {w}", "label": w} for w in ["alpha", "beta", "gamma", "delta"] * 6]
    (tmp / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs[:16]))
    (tmp / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs[16:]))
    (tmp / "task.yaml").write_text("name: echo\nkind: generation\ndata: {train: train.jsonl, test: test.jsonl}\n"
                                   "generation: {match: contains}\nmodel: 'fake:random'\nembedder: hashing\n"
                                   "constraints: {requests_per_month: 10000}\n")
    return tmp / "task.yaml"


SCENARIOS: dict[str, tuple[Any, dict[str, Any]]] = {
    # the policy over the default ladder: baselines, screened prompt rungs, tuning rungs blocked for a fake model
    "policy": (lambda t: _classification(t, model="fake:random", n_test=128, keep=4,
                                         extra="target: {accuracy: 0.97}\nconstraints: {max_latency_ms: 500}\n"), {}),
    # a prompt rung that meets the target with confidence stops the climb
    "policy_stop": (lambda t: _classification(t, model=f"fake:oracle:{t / 'oracle.jsonl'}", n_test=48,
                                              extra="target: {accuracy: 0.8}\n"), {"rungs": None}),
    # a fixed list: every rung in full, stability of the random demonstrations
    "fixed": (lambda t: _classification(t, model="fake:random", n_test=24,
                                        extra="constraints: {requests_per_month: 100000}\n"),
              {"rungs": ["knn", "probe", "zero_shot_generate", "few_shot_random", "few_shot_retrieved", "cot"]}),
    "extraction": (_extraction, {}),
    "generation": (_generation, {"rungs": ["zero_shot", "role", "few_shot_random", "few_shot_retrieved"]}),
}


MASKED = ("created_at", "environment", "run_id")  # the run id hashes the spec, which holds the oracle's temp path


def _normalise(obj: Any, tmp: str) -> Any:
    if isinstance(obj, dict):
        return {k: ("<masked>" if k in MASKED else _normalise(v, tmp)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_normalise(v, tmp) for v in obj]
    if isinstance(obj, str):
        return obj.replace(tmp, "<tmp>")
    return obj


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_run_matches_the_recorded_results_and_decision(scenario, tmp_path, monkeypatch):
    monkeypatch.setattr(time, "perf_counter", lambda: 1000.0)  # every duration is 0: no timing noise
    make, options = SCENARIOS[scenario]
    outcome = run_task(load_task(make(tmp_path)), **options)
    got = {
        "results": _normalise(json.loads(outcome.results_path.read_text()), str(tmp_path)),
        "decision": _normalise(json.loads((outcome.results_path.parent / "decision.json").read_text()),
                               str(tmp_path)),
    }
    for name, payload in got.items():
        path = GOLDEN / f"{scenario}.{name}.json"
        if UPDATE:
            path.parent.mkdir(exist_ok=True)
            path.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
        expected = json.loads(path.read_text())
        assert payload == expected, f"{scenario} {name} differs from {path.name}"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_recorded_results_round_trip_through_the_typed_records(scenario):
    from tunewise.results import RunResults

    recorded = json.loads((GOLDEN / f"{scenario}.results.json").read_text())
    assert RunResults.from_json(recorded).to_json() == recorded
