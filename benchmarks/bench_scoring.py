"""Classification evaluation on BANKING77: tunewise's label scoring vs naive scoring vs generate-and-parse.

All three answer the same zero-shot prompt (the ``zero_shot`` rung's template: task, the 77-label
list, the query; built by tunewise's ``prompt`` strategy) with the same SmolLM2-135M weights:

* ``tunewise``  - the ``zero_shot`` rung as ``tunewise run`` executes it: ``PromptProgram.predict``
  -> ``LocalBackend.score``: the prompt's KV cache is shared across examples (prefix cache), all 77
  labels are one token trie fed in ONE forward pass, and the label probabilities are divided by
  contextual-calibration priors (three content-free scoring calls once, before timing; they do
  not change the speed per example). Accuracy is reported calibrated and raw.
* ``naive``     - what the standard tools give you: for each label, one forward pass over
  prompt + label + ``<|im_end|>`` (batch 1, no cache, ``model(ids).logits``), summing the label
  tokens' log-probs. The same quantity, so the same predictions up to float rounding (its accuracy
  is reported raw and with tunewise's calibration priors applied to its scores). It is slow,
  so it runs on a subset of each round's examples (``--naive-n`` in all); speed is per example.
* ``generate``  - ``transformers.pipeline("text-generation")`` greedy (``do_sample=False``,
  ``max_new_tokens`` 32) on the same chat messages, batch 1, then the label parsed from the text
  with tunewise's parser (exact, normalised, contained, closest).

Optional ``--variants`` time tunewise with one technique switched (see ``--help``), in the same
alternation. Results: ``benchmarks/results/scoring.json``.

Run:  python benchmarks/bench_scoring.py            (~15-25 min on 2 cores: naive costs minutes per example)
      python benchmarks/bench_scoring.py --quick    (~6-10 min)
"""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

VARIANTS = {
    "no-prefix-cache": "tunewise with the cross-example prefix KV cache off (trie kept)",
    "threads1": "tunewise with torch.set_num_threads(1)",
    "threads2": "tunewise with torch.set_num_threads(2)",
    "bf16": "tunewise with the model in bfloat16 (LocalBackend(dtype='bfloat16')); 1 example per round",
    "compile": "tunewise with torch.compile(model.forward, dynamic=True); compile time reported apart",
    "tw-generate": "tunewise's own generate mode (LocalBackend.generate, batches of 8, shared prefix) + the same parser",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = C.parser(__doc__, VARIANTS, out="scoring", quick={"n": 24, "naive_n": 1})
    p.add_argument("--n", type=int, default=48, help="test examples for tunewise and generate (default 48)")
    p.add_argument("--naive-n", type=int, default=2,
                   help="examples for naive scoring, spread over the rounds (default 2; ~2.5-7 min each)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    return C.parse(p, argv, VARIANTS)


class Recorder:
    """Passes calls to a tunewise backend and keeps the results (token counts for FLOPs)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.scores, self.generations = inner, [], []

    def __getattr__(self, name: str) -> Any:  # capabilities (can_score, ...) are the inner backend's
        return getattr(self.inner, name)

    def score(self, requests):  # noqa: ANN001, ANN201
        out = self.inner.score(requests)
        self.scores.extend(out)
        return out

    def generate(self, requests):  # noqa: ANN001, ANN201
        out = self.inner.generate(requests)
        self.generations.extend(out)
        return out


def zero_shot_program(spec: Any, splits: Any, backend: Any, mode: str = "score") -> Any:
    """The built-in ``zero_shot`` rung (score mode, calibrated) or ``zero_shot_generate`` (generate mode)."""
    from tunewise.strategies.base import PrepareContext, get_strategy
    from tunewise.task import RungSpec

    ctx = PrepareContext(spec=spec, splits=splits, backend=backend, seed=spec.seed)
    params = {"mode": mode, "calibrate": mode == "score"}
    return get_strategy("prompt")(RungSpec(name=f"zero_shot_{mode}", strategy="prompt", params=params), ctx)


def calibrated_argmax(logprobs: list[float], labels: list[str], priors: Any) -> str:
    """The label tunewise's calibrated scoring picks from raw log-likelihoods (see prompting.py)."""
    import numpy as np

    lp = np.array(logprobs)
    p = np.exp(lp - lp.max())
    p = p / p.sum() / priors
    return labels[int(p.argmax())]


# --- the baselines, written as a user of the standard tools would -----------------------------


class NaiveScorer:
    """One forward pass per label over prompt + label + end of turn; batch 1, no cache."""

    def __init__(self, model: Any, tok: Any, labels: list[str]) -> None:
        self.model, self.tok, self.labels = model, tok, labels
        self.reset()

    def reset(self) -> None:
        self.tokens_fed = 0
        self.attended = 0
        self.logit_rows = 0
        self.logprobs: list[list[float]] = []

    def predict(self, prompt: Any, labels: list[str] | None = None) -> str:
        import torch

        labels = labels or self.labels
        text = self.tok.apply_chat_template(C.chat(prompt), tokenize=False, add_generation_prompt=True)
        n_prompt = len(self.tok(text, add_special_tokens=False)["input_ids"])
        scores = []
        for label in labels:
            ids = self.tok(text + label + self.tok.eos_token, add_special_tokens=False)["input_ids"]
            k = len(ids) - n_prompt  # label tokens + <|im_end|>
            with torch.no_grad():
                logits = self.model(torch.tensor([ids])).logits[0]
            logprobs = torch.log_softmax(logits[-k - 1:-1].float(), dim=-1)
            scores.append(float(logprobs.gather(1, torch.tensor(ids[-k:])[:, None]).sum()))
            self.tokens_fed += len(ids)
            self.logit_rows += len(ids)
            self.attended += len(ids) * (len(ids) + 1) // 2
        self.logprobs.append(scores)
        return labels[max(range(len(scores)), key=scores.__getitem__)]


class PipelineGenerator:
    """``pipeline("text-generation")``, greedy, batch 1, then the label parsed from the reply."""

    def __init__(self, model: Any, tok: Any, labels: list[str], max_new_tokens: int) -> None:
        from transformers import pipeline

        self.pipe = pipeline("text-generation", model=model, tokenizer=tok)
        self.tok, self.labels, self.max_new_tokens = tok, labels, max_new_tokens
        self.reset()

    def reset(self) -> None:
        self.rules: dict[str, int] = {}
        self.texts: list[str] = []
        self.generated_tokens = 0

    def predict(self, prompt: Any) -> str | None:
        from tunewise.strategies.parsing import parse_label

        out = self.pipe(C.chat(prompt), max_new_tokens=self.max_new_tokens, do_sample=False)
        text = out[0]["generated_text"][-1]["content"]
        self.texts.append(text)
        self.generated_tokens += len(self.tok(text, add_special_tokens=False)["input_ids"])
        label, rule = parse_label(text, self.labels)
        self.rules[rule] = self.rules.get(rule, 0) + 1
        return label


# --- variants ----------------------------------------------------------------------------------


@contextmanager
def _no_prefix_cache():
    import tunewise.backends.prefix_cache as pc

    old = pc.MIN_SHARED_PREFIX
    pc.MIN_SHARED_PREFIX = 10**9
    try:
        yield
    finally:
        pc.MIN_SHARED_PREFIX = old


@contextmanager
def _threads(n: int):
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _variant(name: str, spec: Any, splits: Any, backend: Any, program: Any, warm: list[Any]) -> tuple[Any, dict]:
    """A ``Contender`` for one technique switch, and what was measured while setting it up."""
    from tunewise.backends.local import LocalBackend

    info: dict[str, Any] = {"what": VARIANTS[name]}
    if name == "no-prefix-cache":
        def run(items):
            with _no_prefix_cache():
                return [p.output for p in program.predict(items, backend=backend)]
        return C.Contender(name, run), info
    if name in ("threads1", "threads2"):
        def run(items, n=int(name[-1])):
            with _threads(n):
                return [p.output for p in program.predict(items, backend=backend)]
        return C.Contender(name, run), info
    if name == "tw-generate":
        gen_program = zero_shot_program(spec, splits, backend, mode="generate")
        return C.Contender(name, lambda items: [p.output for p in gen_program.predict(items, backend=backend)]), info
    other = LocalBackend(C.MODEL, dtype="bfloat16" if name == "bf16" else None)
    if name == "compile":
        import torch

        other.model.forward = torch.compile(other.model.forward, dynamic=True)
        _, wall, _ = C.timed(lambda: program.predict(warm * 2, backend=other))
        info["compile_and_first_calls_s"] = round(wall, 1)
    run = lambda items: [p.output for p in program.predict(items, backend=other)]  # noqa: E731
    share = (lambda chunk: chunk[:1]) if name == "bf16" else (lambda chunk: chunk)
    return C.Contender(name, run, share=share), info


# --- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    env, spec, splits, labels = C.start(args)
    from tunewise.backends.local import LocalBackend

    warm, items = C.draw(splits.test, args.n, args.seed)
    print(f"scoring benchmark: {len(items)} BANKING77 test examples, {len(labels)} labels, {args.rounds} rounds, "
          f"{env['threads']} threads, CPU {env['cpu']['model']}", flush=True)

    backend = LocalBackend(C.MODEL)
    recorder = Recorder(backend)
    program, calibration_s, _ = C.timed(lambda: zero_shot_program(spec, splits, backend))
    model, tok = C.load_hf()
    naive = NaiveScorer(model, tok, labels)
    generator = PipelineGenerator(model, tok, labels, args.max_new_tokens)

    naive_left = [args.naive_n]

    def naive_share(chunk: list[Any]) -> list[Any]:  # an even spread of the naive examples over the rounds
        take = min(naive_left[0], max(1, -(-args.naive_n // args.rounds)), len(chunk))
        naive_left[0] -= take
        return chunk[:take]
    contenders = [
        C.Contender("tunewise", lambda xs: [p.output for p in program.predict(xs, backend=recorder)]),
        C.Contender("naive", lambda xs: [naive.predict(program.prompt_for(x.text, ())) for x in xs],
                    share=naive_share,
                    warm=lambda xs: [naive.predict(program.prompt_for(x.text, ()), labels[:2]) for x in xs]),
        C.Contender("generate", lambda xs: [generator.predict(program.prompt_for(x.text, ())) for x in xs]),
    ]
    variant_info = {}
    for name in args.variants:
        contender, info = _variant(name, spec, splits, backend, program, warm)
        contenders.append(contender)
        variant_info[name] = info

    warmup = C.warm_up(contenders, warm)
    recorder.scores.clear()
    naive.reset()
    generator.reset()

    C.alternate(contenders, items, args.rounds, checkpoint=args.out)
    warmup["calibration (once per rung)"] = round(calibration_s, 2)
    return report(args, env, contenders, labels, recorder, naive, generator, variant_info, warmup, program)


def _tunewise_flops(scores: list[Any], shape: C.Shape) -> dict[str, float]:
    fed = attended = rows = 0.0
    for s in scores:
        rest = s.prompt_tokens - s.cached_tokens
        fed += rest + s.scored_tokens
        rows += s.scored_tokens + 1
        attended += rest * s.cached_tokens + rest * (rest + 1) / 2 + s.scored_tokens * (s.prompt_tokens + 2)
    return {"tokens_fed": fed, "flops": shape.forward_flops(int(fed), int(rows), attended)}


def _max_diff(naive_lps: list[list[float]], naive_ids: list[str], tw_items: list[Any], scores: list[Any]) -> float:
    """Largest |naive - tunewise| label log-likelihood on the examples both scored (float rounding only)."""
    by_id = {x.id: s.logprobs for x, s in zip(tw_items, scores)}
    diffs = [abs(a - b) for i, lp in zip(naive_ids, naive_lps) for a, b in zip(lp, by_id[i])]
    return round(max(diffs), 5) if diffs else None


def report(args, env, contenders, labels, recorder, naive, generator, variant_info, warmup, program) -> dict[str, Any]:
    by = {c.name: c for c in contenders}
    tw, nv, gen = by["tunewise"], by["naive"], by["generate"]
    shape = C.Shape.of()
    gold = lambda c: [x.target for x in c.items]  # noqa: E731
    tw_pred = {x.id: p for x, p in zip(tw.items, tw.outputs)}
    naive_ids = [x.id for x in nv.items]
    tw_on_naive = [tw_pred[i] for i in naive_ids]
    argmax = lambda lp: labels[max(range(len(lp)), key=lp.__getitem__)]  # noqa: E731
    tw_raw = [argmax(s.logprobs) for s in recorder.scores]  # same order as tw.items
    tw_raw_by_id = {x.id: p for x, p in zip(tw.items, tw_raw)}
    naive_cal = [calibrated_argmax(lp, labels, program.calibration) for lp in naive.logprobs]
    flops = _tunewise_flops(recorder.scores, shape)
    naive_flops = shape.forward_flops(naive.tokens_fed, naive.logit_rows, naive.attended)
    out: dict[str, Any] = {
        "benchmark": "scoring",
        "what": "BANKING77 zero-shot classification over 77 labels, SmolLM2-135M-Instruct fp32: tunewise label "
                "scoring vs naive per-label scoring vs transformers pipeline generate + parse",
        "environment": env,
        "settings": {"n": tw.n, "naive_n": nv.n, "rounds": args.rounds, "max_new_tokens": args.max_new_tokens,
                     "seed": args.seed, "threads": env["threads"], "variants": args.variants,
                     "prompt": "zero_shot rung template (task + 77-label list + query), label log-likelihoods with "
                               "contextual calibration (accuracy also raw)", "model": C.MODEL, "model_dir": str(C.model_dir())},
        "model": {"params": shape.params, "linear_params": shape.linear_params},
        "warmup_s": warmup,
        "contenders": {
            "tunewise": C.contender_json(tw, {
                "accuracy": C.accuracy(gold(tw), tw.outputs),
                "accuracy_raw": C.accuracy(gold(tw), tw_raw),
                "accuracy_on_naive_subset": C.accuracy(gold(nv), tw_on_naive),
                "accuracy_raw_on_naive_subset": C.accuracy(gold(nv), [tw_raw_by_id[i] for i in naive_ids]),
                "tokens_fed_per_example": round(flops["tokens_fed"] / max(1, tw.n), 1),
                "prompt_tokens_per_example": round(sum(s.prompt_tokens for s in recorder.scores) / max(1, tw.n), 1),
                "cached_tokens_per_example": round(sum(s.cached_tokens for s in recorder.scores) / max(1, tw.n), 1),
                "trie_tokens_per_example": round(sum(s.scored_tokens for s in recorder.scores) / max(1, tw.n), 1),
                "tokens_fed_per_s": round(flops["tokens_fed"] / tw.wall_s, 1),
                "flops_per_example": flops["flops"] / max(1, tw.n),
                "achieved_flops_per_s": flops["flops"] / tw.wall_s,
                "convention_flops_per_s": 2 * shape.params * flops["tokens_fed"] / tw.wall_s,
            }),
            "naive": C.contender_json(nv, {
                "accuracy": C.accuracy(gold(nv), naive_cal),
                "accuracy_raw": C.accuracy(gold(nv), nv.outputs),
                "agreement_with_tunewise": C.accuracy(tw_on_naive, naive_cal),
                "agreement_with_tunewise_raw": C.accuracy([tw_raw_by_id[i] for i in naive_ids], nv.outputs),
                "max_abs_logprob_difference": _max_diff(naive.logprobs, naive_ids, tw.items, recorder.scores),
                "tokens_fed_per_example": round(naive.tokens_fed / max(1, nv.n), 1),
                "flops_per_example": naive_flops / max(1, nv.n),
                "achieved_flops_per_s": naive_flops / nv.wall_s,
            }),
            "generate": C.contender_json(gen, {
                "accuracy": C.accuracy(gold(gen), gen.outputs), "parse_rules": generator.rules,
                "generated_tokens_per_example": round(generator.generated_tokens / max(1, gen.n), 1),
                "sample_replies": generator.texts[:5],
            }),
        },
        "ratios": {"tunewise_vs_naive": C.ratio(tw, nv), "tunewise_vs_generate": C.ratio(tw, gen)},
        "targets": {"vs_naive": 10, "vs_generate": 5},
        "variants": {},
    }
    for name, info in variant_info.items():
        c = by[name]
        out["variants"][name] = C.contender_json(c, {**info, "accuracy": C.accuracy(gold(c), c.outputs),
                                                      "speed_vs_tunewise": C.ratio(c, tw)})
    path = C.write_result(args.out, out)
    print_summary(out, path)
    return out


def print_summary(out: dict[str, Any], path: Path) -> None:
    c, r = out["contenders"], out["ratios"]
    rows = [[name, v["n"], f"{v['items_per_s']:.3f}", v["accuracy"],
             {"tunewise": "1.00", "naive": f"{r['tunewise_vs_naive']['speedup']:.2f}",
              "generate": f"{r['tunewise_vs_generate']['speedup']:.2f}"}[name]] for name, v in c.items()]
    for name, v in out["variants"].items():
        rows.append([name, v["n"], f"{v['items_per_s']:.3f}", v["accuracy"],
                     f"(variant: {v['speed_vs_tunewise']['speedup']:.2f}x tunewise's speed)"])
    print()
    print(C.table(rows, ["contender", "examples", "examples/s", "accuracy", "tunewise speed-up"]))
    print(f"\ntunewise vs naive {r['tunewise_vs_naive']['speedup']}x (rounds {r['tunewise_vs_naive']['per_round']}), "
          f"vs generate {r['tunewise_vs_generate']['speedup']}x (rounds {r['tunewise_vs_generate']['per_round']}); "
          f"tunewise accuracy on the naive subset {c['tunewise']['accuracy_on_naive_subset']} vs naive "
          f"{c['naive']['accuracy']} (agreement {c['naive']['agreement_with_tunewise']})")
    print(f"written {path}")


if __name__ == "__main__":
    main()
