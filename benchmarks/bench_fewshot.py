"""Few-shot evaluation with retrieved demonstrations: tunewise vs the same prompts through ``model.generate``.

The prompts are the ``few_shot_retrieved`` rung's: task, the 77-label list, the k=8 training
examples most similar to the query (all-MiniLM-L6-v2 cosine, as tunewise retrieves them) as
user/assistant turns, then the query. Retrieval is done once before timing and shared, so both
contenders answer byte-identical chat messages with the same SmolLM2-135M weights:

* ``tunewise`` - the rung as ``tunewise run`` executes it: ``PromptProgram.predict`` ->
  ``LocalBackend.score`` over the labels that occur in the demonstrations (prefix KV cache over
  the shared system turn, one trie forward pass per example).
* ``generate`` - a plain loop a user would write: ``apply_chat_template`` + ``model.generate``
  (greedy, batch 1, ``max_new_tokens`` 32), the label parsed from the reply with tunewise's
  parser (exact, normalised, contained, closest).

The retrieval pool is a per-label subset of the training split (``--pool-per-label``, default 20,
i.e. 1,540 texts embedded in ~15 s) rather than all 8,965 training texts (~60-90 s), to keep the
run short; it changes which demonstrations are found, not the speed of either contender.
``--variants`` adds tunewise with all 77 labels scored (``score-all``) and tunewise's own
batched generation (``tw-generate``). Results: ``benchmarks/results/fewshot.json``.

Run:  python benchmarks/bench_fewshot.py            (~5-10 min on 2 cores)
      python benchmarks/bench_fewshot.py --quick    (~2-3 min)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
from bench_scoring import Recorder, _tunewise_flops  # noqa: E402

VARIANTS = {
    "score-all": "tunewise scoring all 77 labels (choices=all) instead of the demonstrations' labels",
    "tw-generate": "tunewise's own generate mode (LocalBackend.generate, batches of 8, shared prefix) + the same parser",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = C.parser(__doc__, VARIANTS, out="fewshot", quick={"n": 18, "pool_per_label": 10})
    p.add_argument("--n", type=int, default=36, help="test examples (default 36)")
    p.add_argument("--k", type=int, default=8, help="demonstrations per prompt (default 8)")
    p.add_argument("--pool-per-label", type=int, default=20, help="retrieval pool: training examples per label")
    p.add_argument("--max-new-tokens", type=int, default=32)
    return C.parse(p, argv, VARIANTS)


def few_shot_program(spec: Any, splits: Any, backend: Any, embed: Any, *, k: int, choices: str = "demos",
                     mode: str = "score") -> Any:
    from tunewise.strategies.base import PrepareContext, get_strategy
    from tunewise.task import RungSpec

    ctx = PrepareContext(spec=spec, splits=splits, backend=backend, embed=embed, seed=spec.seed)
    params = {"mode": mode, "k": k, "selection": "retrieved", "choices": choices}
    return get_strategy("prompt")(RungSpec(name="few_shot_retrieved", strategy="prompt", params=params), ctx)


class GenerateLoop:
    """``apply_chat_template`` + ``model.generate`` (greedy, batch 1) + label parsing."""

    def __init__(self, model: Any, tok: Any, labels: list[str], max_new_tokens: int) -> None:
        self.model, self.tok, self.labels, self.max_new_tokens = model, tok, labels, max_new_tokens
        self.reset()

    def reset(self) -> None:
        self.rules: dict[str, int] = {}
        self.texts: list[str] = []
        self.prompt_tokens = self.generated_tokens = 0

    def predict(self, prompt: Any) -> str | None:
        import torch

        from tunewise.strategies.parsing import parse_label

        text = self.tok.apply_chat_template(C.chat(prompt), tokenize=False, add_generation_prompt=True)
        enc = self.tok(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False)
        new = out[0, enc["input_ids"].shape[1]:]
        reply = self.tok.decode(new, skip_special_tokens=True)
        self.texts.append(reply)
        self.prompt_tokens += enc["input_ids"].shape[1]
        self.generated_tokens += len(new)
        label, rule = parse_label(reply, self.labels)
        self.rules[rule] = self.rules.get(rule, 0) + 1
        return label


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    env, spec, splits, labels = C.start(args)
    from tunewise.backends.local import LocalBackend
    from tunewise.embeddings import load_embedder

    pool = C.per_label(splits.train, args.pool_per_label, seed=args.seed)
    warm, items = C.draw(splits.test, args.n, args.seed)
    drawn = warm + items
    print(f"few-shot benchmark: {len(items)} BANKING77 test examples, k={args.k} retrieved from {len(pool)} "
          f"training texts, {args.rounds} rounds, {env['threads']} threads, CPU {env['cpu']['model']}", flush=True)

    embedder = load_embedder(spec.embedder)
    (pool_splits, retrieval), embed_s, _ = C.timed(lambda: _retrieval(splits, pool, embedder, drawn, args, spec))
    backend = LocalBackend(C.MODEL)
    recorder = Recorder(backend)
    program = few_shot_program(spec, pool_splits, backend, embedder.embed, k=args.k)
    program.retriever = lambda texts: [retrieval[t] for t in texts]  # precomputed: both sides get the same demos
    model, tok = C.load_hf()
    loop = GenerateLoop(model, tok, labels, args.max_new_tokens)
    prompt = lambda x: program.prompt_for(x.text, retrieval[x.text])  # noqa: E731

    contenders = [
        C.Contender("tunewise", lambda xs: [p.output for p in program.predict(xs, backend=recorder)]),
        C.Contender("generate", lambda xs: [loop.predict(prompt(x)) for x in xs]),
    ]
    for name in args.variants:
        variant = few_shot_program(spec, pool_splits, backend, embedder.embed, k=args.k,
                                   choices="all" if name == "score-all" else "demos",
                                   mode="generate" if name == "tw-generate" else "score")
        variant.retriever = program.retriever
        contenders.append(C.Contender(name, lambda xs, v=variant: [p.output for p in v.predict(xs, backend=backend)]))

    warmup = C.warm_up(contenders, warm)
    recorder.scores.clear()
    loop.reset()
    C.alternate(contenders, items, args.rounds, checkpoint=args.out)

    shape = C.Shape.of()
    by = {c.name: c for c in contenders}
    tw, gen = by["tunewise"], by["generate"]
    gold = lambda c: [x.target for x in c.items]  # noqa: E731
    flops = _tunewise_flops(recorder.scores, shape)
    in_demos = sum(x.target in {t for _, t in retrieval[x.text]} for x in items) / len(items)
    out: dict[str, Any] = {
        "benchmark": "fewshot",
        "what": f"BANKING77 few-shot, k={args.k} MiniLM-retrieved demonstrations, SmolLM2-135M-Instruct fp32: "
                "tunewise (few_shot_retrieved rung: label scoring over the demonstrations' labels) vs "
                "apply_chat_template + model.generate greedy batch 1 + parse",
        "environment": env,
        "settings": {"n": tw.n, "k": args.k, "pool": len(pool), "pool_per_label": args.pool_per_label,
                     "rounds": args.rounds, "max_new_tokens": args.max_new_tokens, "seed": args.seed,
                     "threads": env["threads"], "variants": args.variants, "model": C.MODEL},
        "retrieval_s": round(embed_s, 1),
        "gold_label_among_demo_labels": round(in_demos, 4),
        "warmup_s": warmup,
        "contenders": {
            "tunewise": C.contender_json(tw, {
                "accuracy": C.accuracy(gold(tw), tw.outputs),
                "choices_per_example": round(sum(len(s.logprobs) for s in recorder.scores) / max(1, len(recorder.scores)), 1),
                "model_calls": len(recorder.scores),
                "prompt_tokens_per_example": round(sum(s.prompt_tokens for s in recorder.scores) / max(1, tw.n), 1),
                "cached_tokens_per_example": round(sum(s.cached_tokens for s in recorder.scores) / max(1, tw.n), 1),
                "tokens_fed_per_example": round(flops["tokens_fed"] / max(1, tw.n), 1),
                "achieved_flops_per_s": flops["flops"] / tw.wall_s,
            }),
            "generate": C.contender_json(gen, {
                "accuracy": C.accuracy(gold(gen), gen.outputs), "parse_rules": loop.rules,
                "prompt_tokens_per_example": round(loop.prompt_tokens / max(1, gen.n), 1),
                "generated_tokens_per_example": round(loop.generated_tokens / max(1, gen.n), 1),
                "sample_replies": loop.texts[:5],
            }),
        },
        "ratios": {"tunewise_vs_generate": C.ratio(tw, gen)},
        "variants": {name: C.contender_json(by[name], {"accuracy": C.accuracy(gold(by[name]), by[name].outputs),
                                                       "what": VARIANTS[name],
                                                       "speed_vs_tunewise": C.ratio(by[name], tw)})
                     for name in args.variants},
    }
    path = C.write_result(args.out, out)
    rows = [[name, v["n"], f"{v['items_per_s']:.3f}", v["accuracy"]] for name, v in out["contenders"].items()]
    rows += [[name, v["n"], f"{v['items_per_s']:.3f}", v["accuracy"]] for name, v in out["variants"].items()]
    print()
    print(C.table(rows, ["contender", "examples", "examples/s", "accuracy"]))
    r = out["ratios"]["tunewise_vs_generate"]
    print(f"\ntunewise vs generate loop: {r['speedup']}x (rounds {r['per_round']}); gold label among the "
          f"demonstrations' labels {in_demos:.0%}\nwritten {path}")
    return out


def _retrieval(splits: Any, pool: list[Any], embedder: Any, drawn: list[Any], args: Any, spec: Any):
    """Embed the pool once and find each drawn example's k demonstrations with tunewise's retriever."""
    import numpy as np

    pool_splits = dataclasses.replace(splits, train=tuple(pool))
    cache: dict[str, Any] = {}

    def embed(texts):  # noqa: ANN001, ANN202 - the pool is embedded once, queries as they come
        missing = [t for t in texts if t not in cache]
        if missing:
            cache.update(zip(missing, embedder.embed(missing)))
        return np.stack([cache[t] for t in texts])

    program = few_shot_program(spec, pool_splits, None, embed, k=args.k)
    demos = program.retriever([x.text for x in drawn])
    return pool_splits, {x.text: d for x, d in zip(drawn, demos)}


if __name__ == "__main__":
    main()
