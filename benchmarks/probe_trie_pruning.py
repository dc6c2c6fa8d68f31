"""Probe for a src change: exact branch-and-bound pruning of the label trie, vs full trie scoring.

Not a comparison with another tool: a measured proposal. ``LocalBackend.score`` feeds every
internal node of the 77-label trie (~382 tokens on BANKING77) in one forward pass; that trie is
~95% of the tokens fed per zero-shot example once the prompt prefix is cached. But a label's
score is a sum of log-probabilities, each <= 0, so a label scores at most what its first token
scores (minus its log calibration prior when calibrated). Hence, exactly:

1. prefill the prompt's uncached rest (logits of the last position: every label's first token);
2. feed the subtries under the ``--m`` first tokens with the best bounds (one tree-attention
   forward, as tunewise does, against the prompt's cache) -> exact scores for those labels;
3. drop every first-token branch whose bound is below the best exact score; repeat 2 on the
   survivors until none is left.

The argmax (the prediction) is provably the full trie's; probabilities of pruned labels are only
bounded (their mass is tiny). This script alternates full scoring (``LocalBackend.score``) and the
pruned scorer on the same prompts, checks that the predictions are identical, and reports tokens
fed, forwards and examples/s. It reaches into ``LocalBackend``'s internals (``_continuations``,
``_prefix``), which is fine for a probe and is why the change belongs in ``backends/local.py``.

Run:  python benchmarks/probe_trie_pruning.py --n 24        (~3-5 min)
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = C.parser(__doc__, out="trie_pruning")
    p.add_argument("--n", type=int, default=24)
    p.add_argument("--m", type=int, default=4, help="first-token branches expanded per forward")
    p.add_argument("--prompt", choices=("zero-shot", "few-shot-all", "tuned"), default="zero-shot",
                   help="zero-shot: the zero_shot rung (calibrated); few-shot-all: k=8 retrieved demos, all 77 "
                        "labels scored; tuned: a LoRA adapter (--adapter) with the compact tuned prompt")
    p.add_argument("--adapter", default=None, help="PEFT adapter directory for --prompt tuned")
    return C.parse(p, argv)


class PrunedScorer:
    """Exact argmax over a label trie with first-token bounds (see the module docstring)."""

    def __init__(self, backend: Any, m: int) -> None:
        self.backend, self.m = backend, m
        self.fed = self.forwards = self.calls = 0

    def scores(self, request: Any, log_priors: list[float] | None) -> list[float]:
        """Exact log-likelihood for expanded labels, -inf for pruned ones (never the argmax)."""
        import torch

        from tunewise.backends.token_trie import ancestor_mask, build_trie

        be = self.backend
        model = be.model
        prompt_ids, conts = be._continuations(request)
        trie = build_trie(conts)
        n_labels = len(conts)
        lp_prior = log_priors or [0.0] * n_labels
        with torch.inference_mode():
            cache, reused = be._prefix.take(prompt_ids)
            out = model(input_ids=torch.tensor([prompt_ids[reused:]]), cache=cache, use_cache=True, logits_to_keep=1)
            be._prefix.commit(prompt_ids)
            first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
            self.fed += len(prompt_ids) - reused
            self.forwards += 1
            plen = len(prompt_ids)
            children: dict[int, list[int]] = {}
            for i, parent in enumerate(trie.parents):
                children.setdefault(parent, []).append(i)
            under: dict[int, list[int]] = {}  # first-level node -> labels below it
            for c, path in enumerate(trie.paths):
                under.setdefault(path[0], []).append(c)
            bound = {r: float(first[trie.tokens[r]]) + max(-lp_prior[c] for c in under[r]) for r in children[-1]}
            exact = [-math.inf] * n_labels
            best = -math.inf
            frontier = sorted(bound, key=bound.get, reverse=True)
            anc = ancestor_mask(trie)
            while frontier:
                take, frontier = frontier[: self.m], frontier[self.m:]
                exact, best = self._expand(take, trie, anc, first, cache, plen, exact, lp_prior, under, children)
                frontier = [r for r in frontier if bound[r] >= best]
        self.calls += 1
        return [e + lp_prior[c] if e > -math.inf else -math.inf for c, e in enumerate(exact)]

    def _expand(self, roots, trie, anc, first, cache, plen, exact, lp_prior, under, children):
        import torch

        nodes, stack = [], list(roots)
        while stack:  # internal nodes of the chosen subtries, parents first
            node = stack.pop()
            if node in children:
                nodes.append(node)
                stack.extend(children[node])
        nodes.sort()
        rows = {}
        if nodes:
            n = len(nodes)
            mask = torch.zeros(n, plen + n, dtype=torch.bool)
            mask[:, :plen] = True
            mask[:, plen:] = anc[nodes][:, nodes]
            out = self.backend.model(
                input_ids=torch.tensor([[trie.tokens[i] for i in nodes]]), attention_mask=mask[None, None],
                position_ids=torch.tensor([[plen + trie.depths[i] - 1 for i in nodes]]), cache=cache, use_cache=True)
            cache.crop(-n)
            logp = torch.log_softmax(out.logits[0].float(), dim=-1)
            rows = dict(zip(nodes, logp))
            self.fed += n
            self.forwards += 1
        for root in roots:
            for c in under[root]:
                path = trie.paths[c]
                total = float(first[trie.tokens[path[0]]])
                for parent, node in zip(path, path[1:]):
                    total += float(rows[parent][trie.tokens[node]])
                exact[c] = total - lp_prior[c]
        return exact, max(exact)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    env, spec, splits, labels = C.start(args)
    import numpy as np

    from tunewise.backends.base import ScoreRequest
    from tunewise.backends.local import LocalBackend

    warm, items = C.draw(splits.test, args.n, args.seed)
    drawn = warm + items
    backend = LocalBackend(C.MODEL, adapter=args.adapter if args.prompt == "tuned" else None)
    if args.prompt == "tuned":
        from tunewise.strategies.finetuning import tuned_program

        program = tuned_program(spec, labels, "lora")
        demos = {x.text: () for x in drawn}
        log_priors = None
    elif args.prompt == "zero-shot":
        from bench_scoring import zero_shot_program

        program = zero_shot_program(spec, splits, backend)
        demos = {x.text: () for x in drawn}
        log_priors = [float(v) for v in np.log(program.calibration)]
    else:
        from bench_fewshot import _retrieval, few_shot_program

        from tunewise.embeddings import load_embedder

        pool = C.per_label(splits.train, 20, seed=args.seed)
        fargs = argparse.Namespace(k=8)
        pool_splits, demos = _retrieval(splits, pool, load_embedder(spec.embedder), drawn, fargs, spec)
        program = few_shot_program(spec, pool_splits, None, lambda texts: np.zeros((len(texts), 1)), k=8,
                                   choices="all")  # only its template is used: the demos come from ``demos``
        log_priors = None
    request = lambda x: ScoreRequest(prompt=program.prompt_for(x.text, demos[x.text]), choices=tuple(labels))  # noqa: E731
    pruned = PrunedScorer(backend, args.m)
    full_fed = []

    def full(xs):
        out = backend.score([request(x) for x in xs])
        full_fed.extend(s.prompt_tokens - s.cached_tokens + s.scored_tokens for s in out)
        return [[lp - (log_priors[i] if log_priors else 0.0) for i, lp in enumerate(s.logprobs)] for s in out]

    def prune(xs):
        return [[s - (log_priors[i] if log_priors else 0.0) if s > -math.inf else s
                 for i, s in enumerate(pruned.scores(request(x), log_priors))] for x in xs]

    contenders = [C.Contender("full-trie", full), C.Contender("pruned", prune)]
    C.warm_up(contenders, warm)
    full_fed.clear()
    pruned.fed = pruned.forwards = pruned.calls = 0
    C.alternate(contenders, items, args.rounds, checkpoint=f"{args.out}_{args.prompt}")
    argmax = lambda s: int(np.argmax(s))  # noqa: E731
    fa = {x.id: argmax(s) for x, s in zip(contenders[0].items, contenders[0].outputs)}
    pa = {x.id: argmax(s) for x, s in zip(contenders[1].items, contenders[1].outputs)}
    same = sum(fa[i] == pa[i] for i in fa) / len(fa)
    acc = lambda c, a: C.accuracy([x.target for x in c.items], [labels[a[x.id]] for x in c.items])  # noqa: E731
    out = {
        "probe": "trie_pruning", "environment": env,
        "settings": {"n": len(items), "m": args.m, "rounds": args.rounds, "prompt": args.prompt, "adapter": args.adapter,
                     "calibrated": log_priors is not None, "threads": env["threads"]},
        "full": C.contender_json(contenders[0], {"tokens_fed_per_example": round(sum(full_fed) / len(full_fed), 1),
                                                 "accuracy": acc(contenders[0], fa)}),
        "pruned": C.contender_json(contenders[1], {"tokens_fed_per_example": round(pruned.fed / pruned.calls, 1),
                                                   "forwards_per_example": round(pruned.forwards / pruned.calls, 2),
                                                   "accuracy": acc(contenders[1], pa)}),
        "same_predictions": same,
        "speedup": C.ratio(contenders[1], contenders[0]),
    }
    path = C.write_result(f"{args.out}_{args.prompt}", out)
    print(f"\nfull trie {out['full']['tokens_fed_per_example']} tokens/example, {out['full']['items_per_s']:.3f} ex/s; "
          f"pruned {out['pruned']['tokens_fed_per_example']} tokens in {out['pruned']['forwards_per_example']} "
          f"forwards, {out['pruned']['items_per_s']:.3f} ex/s: {out['speedup']['speedup']}x "
          f"(rounds {out['speedup']['per_round']}); identical predictions {same:.0%}\nwritten {path}")
    return out


if __name__ == "__main__":
    main()
