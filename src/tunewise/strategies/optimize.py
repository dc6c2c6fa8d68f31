"""``optimized``: prompting at its best before a wall is declared, an instruction and demonstrations searched on dev.

In the spirit of DSPy's BootstrapFewShotWithRandomSearch, within a fixed budget of model calls:

1. **Bootstrap demonstrations.** Train examples, in a seeded random order, are answered by the zero-shot program
   (the first instruction); those the model answers correctly under it (a continuous generation metric: at least
   ``bootstrap_threshold``, see :func:`bootstrap_threshold`) become candidate demonstrations (for
   chain-of-thought, with the rationale the model wrote, so demonstrations show how to reason). A set with fewer
   than ``k`` of them is topped up with labelled train examples, as DSPy's ``max_labeled_demos`` does.
   Demonstrations only ever come from train.
2. **Candidates.** Each instruction (the task's, then templated variants, then any ``instructions`` the rung
   lists, then ``rewrites`` rewrites of the task's instruction written by the ``proposer`` model when the rung
   names one of the task's models, sampled at temperature 0.7 through the call cache) is tried with no demonstrations and with ``candidates`` random sets of ``k`` bootstrapped
   demonstrations.
3. **Search on dev only.** Every candidate is scored on the same ``dev_limit`` dev examples (accuracy, field F1,
   or the generation metric's mean) until ``max_calls`` model calls are spent; the best dev score wins (ties:
   fewer demonstrations, then the earlier candidate). Test is never seen by the search.

The winner is an ordinary ``prompt`` program (its instruction and demonstrations written into its config), scored on
test like every rung; the search's calls, tokens and seconds are its one-off cost (``extras["optimization"]``,
and the rung's preparation time). Every call goes through the call cache, so a rerun, a resume or a version
rebuild repeats the search without calling the model.

Out of scope: the prompt program itself (``prompting.py``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import TaskSpecError
from .base import Candidate, PrepareContext, get_strategy, register

__all__ = ["prepare_optimized", "OPTIMIZE_PARAMS", "instruction_variants", "search_calls_bound"]

OPTIMIZE_PARAMS = ("mode", "k", "candidates", "max_calls", "dev_limit", "bootstrap_limit", "bootstrap_threshold",
                   "instructions", "seed", "max_new_tokens", "reasoning_tokens", "proposer", "rewrites")
REWRITE = ("Rewrite the following instruction for a language model so that it is clearer and more precise about what "
           "to answer. Keep its meaning. Write only the new instruction, in one paragraph.\n\nInstruction: {base}")


def instruction_variants(base: str, kind: str) -> list[str]:
    """The task's instruction and two templated rewrites (what to attend to, how to answer)."""
    answer = {"classification": "Answer with the single best label, exactly as written in the list.",
              "extraction": "Answer with the JSON object only, using exactly the fields the schema defines.",
              "generation": "Answer with the expected output only, in the same style as the examples."}[kind]
    return [base, f"{base} Read the whole input carefully before answering; details decide the answer.",
            f"{base} {answer}"]


def search_calls_bound(params: dict[str, Any], n_train: int, n_dev: int) -> int:
    """The most model calls the search makes before the test evaluation: the bootstrap (stopped at a quarter of
    ``max_calls``, checked every 16 examples) and every candidate on the dev examples (stopped once ``max_calls``
    is spent, checked every candidate), or fewer when train, dev or the candidates run out first."""
    max_calls, k, n_sets = int(params.get("max_calls", 400)), int(params.get("k", 4)), int(params.get("candidates", 4))
    dev = min(n_dev, int(params.get("dev_limit", 48)))
    order = min(n_train, int(params.get("bootstrap_limit", max(8, max_calls // 4))))
    bootstrap = min(order, max_calls // 4 + 16) if k * n_sets > 0 else 0  # nothing to bootstrap for
    proposed = int(params.get("rewrites", 3)) if params.get("proposer") else 0
    instructions = 3 + len(params.get("instructions") or []) + proposed
    candidates = (1 + (n_sets if k > 0 else 0)) * instructions * dev
    return min(bootstrap + candidates, max(max_calls, bootstrap) + dev) + proposed


def _dev_score(ctx: PrepareContext, examples: Sequence[Any], preds: Sequence[Any]) -> float:
    from ..evaluation.metrics import field_prf, generation_scores, match_vector

    spec, golds, outs = ctx.spec, [e.target for e in examples], [p.output for p in preds]
    if spec.kind == "classification":
        return float(np.mean([o == g for o, g in zip(outs, golds)]))
    if spec.kind == "extraction":
        return field_prf(golds, outs)["f1"]
    g = spec.generation
    if g is not None and g.metric and g.metric != "judge":
        return float(generation_scores(g.metric, golds, outs, embed=ctx.embed).mean())
    return float(match_vector(golds, outs, g.match if g else "normalized").mean())


def bootstrap_threshold(spec: Any, params: dict[str, Any]) -> float:
    """The score a train example's answer must reach to become a demonstration: ``bootstrap_threshold`` when the
    rung sets it; for a continuous generation metric (never exactly 1 for a near answer), the task's target on it,
    else 0.5; otherwise 1 (right: the label, the whole JSON object, the exact text)."""
    if params.get("bootstrap_threshold") is not None:
        return float(params["bootstrap_threshold"])
    g = spec.generation
    if spec.kind == "generation" and g is not None and g.metric:
        return float(spec.target.get(spec.primary_metric, 0.5))
    return 1.0


def _proposed(rung: Any, ctx: PrepareContext, base: str, proposer: str, n: int) -> list[str]:
    """``n`` rewrites of the task's instruction by the ``proposer`` model (one of the task's models), deduplicated;
    empty or unchanged rewrites are left out."""
    from ..backends import backend_options, load_backend
    from ..backends.base import GenerationRequest, messages

    task = ctx.task or ctx.spec
    spec = task.for_model(proposer if task.models else None)
    if task.models is None and proposer not in (spec.model, task.model_specs[0].key):
        raise TaskSpecError(f"rung '{rung.name}': proposer '{proposer}' is not one of the task's models.")
    inner = load_backend(spec.model, **backend_options(spec))
    backend = ctx.wrap_backend(inner) if ctx.wrap_backend is not None else inner
    try:
        requests = [GenerationRequest(prompt=messages(("user", REWRITE.format(base=base))), max_new_tokens=96,
                                      temperature=0.7, seed=i) for i in range(n)]
        texts = [g.text.strip().strip('"').strip() for g in backend.generate(requests)]
    finally:
        backend.close()
    out: list[str] = []
    for text in texts:
        if text and text != base and text not in out:
            out.append(text)
    return out


def _calls(backend: Any) -> int:
    return int(getattr(backend, "hits", 0) + getattr(backend, "misses", 0))


@register("optimize")
def prepare_optimized(rung: Any, ctx: PrepareContext) -> Candidate:
    """Bootstrap demonstrations from train, search instruction x demonstrations on dev, return the best program."""
    from ..evaluation.evaluator import evaluate, usage_summary
    from ..prompts import DEFAULT_INSTRUCTIONS

    params = dict(rung.params)
    unknown = sorted(set(params) - set(OPTIMIZE_PARAMS))
    if unknown:
        raise TaskSpecError(f"rung '{rung.name}': unknown optimized parameter(s) {', '.join(unknown)} (known: "
                            f"{', '.join(OPTIMIZE_PARAMS)}).")
    if ctx.backend is None:
        raise TaskSpecError(f"rung '{rung.name}': the search needs the rung's model.")
    spec = ctx.spec
    mode = params.get("mode") or ("score" if spec.kind == "classification" else "generate")
    k, n_sets = int(params.get("k", 4)), int(params.get("candidates", 4))
    max_calls, seed = int(params.get("max_calls", 400)), int(params.get("seed", ctx.seed))
    dev = list(ctx.splits.dev)[: int(params.get("dev_limit", 48))]
    if not dev:
        raise TaskSpecError(f"rung '{rung.name}': the search needs dev examples (data.dev, or a carved dev split).")
    base = spec.instructions or DEFAULT_INSTRUCTIONS[spec.kind]
    instructions = [*instruction_variants(base, spec.kind), *list(params.get("instructions") or [])]
    if params.get("proposer"):
        instructions += _proposed(rung, ctx, base, str(params["proposer"]), int(params.get("rewrites", 3)))
    decoding = {key: params[key] for key in ("max_new_tokens", "reasoning_tokens") if key in params}
    prompt = get_strategy("prompt")

    def program(instruction: str, demos: Sequence[tuple[str, Any]]) -> Any:
        p = {"mode": mode, "instructions": instruction, "demonstrations": [{"text": t, "target": y} for t, y in demos],
             **decoding}
        return prompt(rung.model_copy(update={"strategy": "prompt", "params": p}), ctx)

    start, first = time.perf_counter(), _calls(ctx.backend)
    spent = lambda: _calls(ctx.backend) - first  # noqa: E731 - model calls the search made (cache hits count too)
    usage: list[Any] = []

    # 1. bootstrap: train examples the zero-shot program answers correctly (with their rationale under cot)
    order = list(ctx.splits.train)
    random.Random(seed).shuffle(order)
    order = order[: int(params.get("bootstrap_limit", max(8, max_calls // 4)))]
    zero = program(instructions[0], [])
    threshold = bootstrap_threshold(spec, params)
    pool: list[tuple[str, Any]] = []
    for i in range(0, len(order), 16):
        if len(pool) >= k * n_sets or spent() >= max_calls // 4:
            break
        chunk = order[i: i + 16]
        preds = evaluate(zero, chunk, backend=ctx.backend).predictions
        usage.extend(preds)
        for e, p in zip(chunk, preds):
            if _dev_score(ctx, [e], [p]) >= threshold:
                pool.append((e.text, p.raw if mode == "cot" else e.target))
    # candidate sets: k bootstrapped demonstrations, topped up with labelled train examples when too few were
    # bootstrapped (as DSPy's max_labeled_demos does): a weak model still gets to try gold demonstrations
    rng = random.Random(seed + 1)
    sets: list[list[tuple[str, Any]]] = [[]]
    labelled = [(e.text, e.target) for e in ctx.splits.train if (e.text, e.target) not in pool]
    for _ in range(n_sets if k > 0 else 0):
        demos = rng.sample(pool, min(k, len(pool)))
        demos += rng.sample(labelled, min(k - len(demos), len(labelled)))
        rng.shuffle(demos)
        sets.append(demos)

    # 2-3. candidates, scored on dev within the call budget
    trials = []
    best = None
    for demos in sets:
        for j, instruction in enumerate(instructions):
            if spent() >= max_calls and trials:
                break
            candidate = program(instruction, demos)
            preds = evaluate(candidate, dev, backend=ctx.backend).predictions
            usage.extend(preds)
            score = _dev_score(ctx, dev, preds)
            trials.append({"instruction": j, "demonstrations": len(demos), "dev_score": score,
                           "calls_so_far": spent()})
            key = (score, -len(demos), -len(trials))
            if best is None or key > best[0]:
                best = (key, instruction, demos)
            candidate.close()
    assert best is not None
    _, instruction, demos = best
    winner = program(instruction, demos)
    cost = usage_summary(usage, wall_s=time.perf_counter() - start)
    optimization = {
        "method": "bootstrapped demonstrations x instruction variants, random search on dev (DSPy-style "
                  "BootstrapFewShotWithRandomSearch)", "mode": mode, "k": k, "candidate_sets": len(sets) - 1,
        "bootstrapped": len(pool), "bootstrap_tried": len(order), "bootstrap_threshold": threshold, "instructions": instructions,
        "dev_examples": len(dev), "max_calls": max_calls, "calls": spent(), "trials": trials,
        "winner": {"instruction": instructions.index(instruction), "demonstrations": len(demos),
                   "dev_score": best[0][0]},
        "model_seconds": cost["model_seconds"], "prompt_tokens": sum(p.prompt_tokens for p in usage),
        "completion_tokens": sum(p.completion_tokens for p in usage), "wall_s": cost["wall_s"],
    }
    timing = ("model_seconds", "wall_s")  # measured anew by a rebuild from the cache: not part of what it is
    winner.config = {**winner.config, "strategy": "optimize",
                     "optimization": {k: v for k, v in optimization.items() if k not in timing}}
    winner.extras = {**winner.extras, "optimization": optimization}
    winner.rung = rung.name
    return winner
