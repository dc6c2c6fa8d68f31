"""Label scoring for a model without tree attention (Gemma 3 270M): batched rows vs one forward per label.

``local:gemma3-270m`` has sliding-window layers, so the one-forward trie pass (custom 4D mask) is
not available to it. All contenders answer the zero-shot prompt a ``zero_shot`` rung would send
(tunewise's ``prompt`` strategy, score mode, uncalibrated: BANKING77's instructions, the 77-label
list, the query) over all 77 labels:

* ``batched``  - ``LocalBackend.score`` on Gemma: the prompt prefilled once through the
  cross-example prefix cache (logits at its last position only), then the label trie's paths
  as right-padded rows, ``SCORE_CHUNK`` rows per forward, logits only where a trie node first
  occurs.
* ``naive``    - ``LocalBackend.score_naive`` on Gemma: one full forward of prompt + label per
  label, no cache (what the backend did for Gemma before). Minutes per example, so it scores
  ``--naive-n`` examples (default 1), which ``batched`` also scores: their scores are compared.
* ``smollm2``  - ``LocalBackend.score`` on ``local:smollm2-135m`` (tree path), for reference.
* ``chunk-<k>`` - ``batched`` with ``SCORE_CHUNK = k`` (the constant's justification).
* ``generate`` - ``LocalBackend.generate`` on Gemma, greedy, 8 new tokens (prefix cache reused
  across examples; the prompt is longer than Gemma's 512-token window).

Each Gemma contender runs on a shallow copy of one backend (shared weights) with a prefix cache
of its own, so each sees the examples in the same order with the same cache reuse.

Run:  python benchmarks/bench_batched_scoring.py --threads 1   (~11 min, 3.5 of them naive)

On a 2-core machine shared with other work, ``--threads 1`` keeps the timings stable: with two
threads, a busy second core turns each small elementwise op into milliseconds of waiting.
Results: benchmarks/results/batched_scoring.json
"""

from __future__ import annotations

import argparse
import copy
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

GEMMA = "local:gemma3-270m"
CHUNKS = (4, 16, 32, 80)  # besides the default (8); 80 > 77 labels: one forward for all rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = C.parser(__doc__, rounds=5, out="batched_scoring")
    p.add_argument("--n", type=int, default=5, help="timed test examples (default 5)")
    p.add_argument("--naive-n", type=int, default=1, help="examples for naive scoring (default 1, ~3-4 min each)")
    p.add_argument("--no-chunks", action="store_true", help="skip the SCORE_CHUNK sweep")
    return C.parse(p, argv)


def own_cache(backend: Any) -> Any:
    """The same model and tokenizer with a prefix cache of its own."""
    twin = copy.copy(backend)
    twin._prefix = type(backend._prefix)(backend.model)
    return twin


@contextmanager
def chunk(k: int):
    from tunewise.backends import local

    old = local.SCORE_CHUNK
    local.SCORE_CHUNK = k
    try:
        yield
    finally:
        local.SCORE_CHUNK = old


def requests_for(program: Any, examples: list[Any]) -> list[Any]:
    from tunewise.backends.base import ScoreRequest

    return [ScoreRequest(prompt=program.prompt_for(e.text, ()), choices=tuple(program.labels)) for e in examples]


def shape_of(backend: Any, request: Any) -> dict[str, int]:
    """Rows, fed tokens and LM-head rows of the batched path for one request (no model call)."""
    from tunewise.backends.local import _trie_rows, build_trie

    _, continuations = backend._continuations(request)
    trie = build_trie(continuations)
    rows = _trie_rows(trie)
    return {"choices": len(continuations), "choice_tokens": sum(map(len, continuations)),
            "rows": len(rows), "row_tokens": sum(map(len, rows)), "widest_row": max(map(len, rows)),
            "lm_head_rows": 1 + len(trie.internal), "naive_lm_head_rows": sum(map(len, continuations))}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from tunewise.backends.base import GenerationRequest
    from tunewise.backends.local import SCORE_CHUNK, LocalBackend
    from tunewise.strategies.base import PrepareContext, get_strategy
    from tunewise.task import RungSpec

    args = parse_args(argv)
    env, spec, splits, labels = C.start(args)
    warm, items = C.draw(splits.test, args.n, args.seed)
    gemma, load_s, _ = C.timed(lambda: LocalBackend(GEMMA))
    smol = LocalBackend(C.MODEL)
    assert not gemma.info["tree_scoring"] and smol.info["tree_scoring"]
    ctx = PrepareContext(spec=spec, splits=splits, backend=gemma, seed=spec.seed)
    program = get_strategy("prompt")(RungSpec(name="zero_shot", strategy="prompt",
                                              params={"mode": "score", "calibrate": False}), ctx)
    naive_ids = {x.id for x in items[: args.naive_n]}

    def scorer(backend: Any, method: str, k: int | None = None):
        def run(xs: list[Any]) -> list[Any]:
            with chunk(k or SCORE_CHUNK):
                return getattr(backend, method)(requests_for(program, xs))
        return run

    def generate(xs: list[Any]) -> list[Any]:
        return [gen.generate([GenerationRequest(prompt=program.prompt_for(x.text, ()), max_new_tokens=8)])[0]
                for x in xs]

    gen = own_cache(gemma)
    batched = C.Contender("batched", scorer(own_cache(gemma), "score"))
    naive = C.Contender("naive", scorer(gemma, "score_naive"), share=lambda xs: [x for x in xs if x.id in naive_ids],
                        warm=lambda xs: None)  # minutes per call: not warmed (the others warm the model)
    smollm2 = C.Contender("smollm2", scorer(smol, "score"))
    sweep = [] if args.no_chunks else [C.Contender(f"chunk-{k}", scorer(own_cache(gemma), "score", k)) for k in CHUNKS]
    generation = C.Contender("generate", generate)
    contenders = [batched, naive, smollm2, *sweep, generation]
    print(f"Gemma loaded in {load_s:.1f} s; {len(items)} timed examples, naive on {len(naive_ids)}", flush=True)
    warmup = C.warm_up(contenders, warm)
    C.alternate(contenders, items, args.rounds, checkpoint=args.out)

    by_id = {x.id: s for x, s in zip(batched.items, batched.outputs)}
    diffs = [max(abs(a - b) for a, b in zip(by_id[x.id].logprobs, s.logprobs)) for x, s in zip(naive.items, naive.outputs)]
    same_argmax = [max(range(len(s.logprobs)), key=s.logprobs.__getitem__)
                   == max(range(len(s.logprobs)), key=by_id[x.id].logprobs.__getitem__)
                   for x, s in zip(naive.items, naive.outputs)]
    shapes = [shape_of(gemma, r) for r in requests_for(program, items)]

    def scored(c: C.Contender) -> dict[str, Any]:
        return {"prompt_tokens": [s.prompt_tokens for s in c.outputs], "cached_tokens": [s.cached_tokens for s in c.outputs],
                "scored_tokens": [s.scored_tokens for s in c.outputs],
                "latency_s": [round(s.latency_s, 3) for s in c.outputs]}

    out = {
        "benchmark": "batched label scoring for a model without tree attention (Gemma 3 270M), BANKING77 zero-shot, 77 labels",
        "environment": env, "args": vars(args), "model": GEMMA, "reference_model": C.MODEL, "score_chunk": SCORE_CHUNK,
        "gemma_load_s": round(load_s, 2), "warmup_s": warmup, "example_ids": [x.id for x in items],
        "batched_shape_per_example": shapes,
        "contenders": {
            "batched": C.contender_json(batched, scored(batched)),
            "naive": C.contender_json(naive, {**scored(naive), "example_ids": [x.id for x in naive.items]}),
            "smollm2": C.contender_json(smollm2, scored(smollm2)),
            "generate": C.contender_json(generation, {
                "prompt_tokens": [g.prompt_tokens for g in generation.outputs],
                "cached_tokens": [g.cached_tokens for g in generation.outputs],
                "completion_tokens": [g.completion_tokens for g in generation.outputs]}),
        },
        "chunk_sweep": {c.name: C.contender_json(c, {"speed_vs_batched": C.ratio(c, batched)}) for c in sweep},
        "batched_vs_naive": {**C.ratio(batched, naive), "max_abs_logprob_diff": max(diffs) if diffs else None,
                             "max_abs_logprob_diff_per_example": diffs, "same_top_label": same_argmax},
        "batched_vs_smollm2_tree": C.ratio(batched, smollm2),
    }
    path = C.write_result(args.out, out)
    rows = [[c.name, c.n, f"{c.s_per_item:.2f}"] for c in contenders]
    print(C.table(rows, ["contender", "examples", "s/example"]))
    print(f"batched vs naive: {out['batched_vs_naive']['speedup']}x, max |diff| {out['batched_vs_naive']['max_abs_logprob_diff']}")
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
