"""How the bundled example subsets were cut (kept for provenance; needs the full datasets).

    python examples/subset.py /path/to/shared/datasets

(banking77_few_labels is cut from the bundled examples/banking77/data/train.jsonl; snips_nlg is the bundled
snips_slots subset turned around, see :func:`meaning`.)

Stratified by label/intent, deterministic (seed 0), original row order kept within each subset.
"""

from __future__ import annotations

import json
import random
import sys
from collections import defaultdict
from pathlib import Path


def stratified(rows: list[dict], key, per_group: int, seed: int = 0) -> list[dict]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[key(row)].append(i)
    rng = random.Random(seed)
    keep = sorted(i for idx in groups.values() for i in rng.sample(idx, min(per_group, len(idx))))
    return [rows[i] for i in keep]


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def meaning(output: dict) -> str:
    """A SNIPS request's meaning representation, E2E-NLG style: the intent, then each slot as ``name[value]`` in
    the order the user said them, e.g. ``PlayMusic: artist[clem burke], playlist[Pre-Party R&B Jams]``."""
    return output["intent"] + ": " + ", ".join(f"{s['slot']}[{s['value']}]" for s in output["slots"])


def nlg(rows: list[dict]) -> list[dict]:
    """Data-to-text rows: the meaning representation in, the request as the user typed it out (its text with the
    surrounding spaces some source rows carry stripped; nothing else changed)."""
    return [{"meaning": meaning(r["output"]), "request": r["text"].strip()} for r in rows]


def main(shared: Path) -> None:
    here = Path(__file__).parent
    snips = shared / "snips_slots"
    intent = lambda r: r["output"]["intent"]  # noqa: E731
    for split, n in (("train", 100), ("test", 20)):
        rows = [{"text": r["text"], "output": r["output"]} for r in read(snips / f"{split}.jsonl")]
        write(here / "snips_slots" / "data" / f"{split}.jsonl", stratified(rows, intent, n))
        write(here / "snips_nlg" / "data" / f"{split}.jsonl", nlg(read(here / "snips_slots" / "data" / f"{split}.jsonl")))
    # BANKING77 with few labels: 10 labelled queries per intent, the rest of train as inputs without labels
    bank = read(here / "banking77" / "data" / "train.jsonl")
    few = stratified(bank, lambda r: r["label"], 10)
    chosen = {id(r) for r in few}
    write(here / "banking77_few_labels" / "data" / "train.jsonl", few)
    write(here / "banking77_few_labels" / "data" / "unlabelled.jsonl",
          [{"text": r["text"]} for r in bank if id(r) not in chosen])
    fin = shared / "twitter_fin_sentiment"
    for split, n in (("train", 400), ("test", 100)):
        write(here / "fin_sentiment" / "data" / f"{split}.jsonl", stratified(read(fin / f"{split}.jsonl"),
                                                                           lambda r: r["label"], n))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
