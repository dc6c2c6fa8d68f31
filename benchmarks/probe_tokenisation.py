"""Tokenising the choices of a scoring request: the prompt's tail only vs the whole prompt per choice.

``LocalBackend.score`` needs each label's tokens as the model would produce them after the prompt,
so each label is tokenised together with the prompt. Done naively, that re-tokenises the whole
~690-token zero-shot prompt once per label (77 times per example on BANKING77), serially, on one
core, while the forward pass uses both. ``continuations_ids`` tokenises only the prompt's tail after
its last special token with each label (BPE never merges across a special token), checked against
the prompt's own tokens, with a fallback to the whole prompt.

This script times both on the real SmolLM2 tokenizer over BANKING77 test prompts and several answer
prefixes, alternating them, and checks that every label's tokens are identical.
Results: ``benchmarks/results/tokenisation.json``.

Run:  python benchmarks/probe_tokenisation.py          (~10 s)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

PREFIXES = ("", "Label:", "Answer: ", '{"intent": "')


def parse_args(argv: list[str] | None = None):
    p = C.parser(__doc__, out="tokenisation")
    p.add_argument("--n", type=int, default=12, help="test prompts (x 4 answer prefixes)")
    return C.parse(p, argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    env, spec, splits, labels = C.start(args)
    from transformers import AutoTokenizer

    from tunewise.backends.local import continuations_ids, encode, render_messages
    from tunewise.strategies.base import PrepareContext, get_strategy
    from tunewise.task import RungSpec

    tok = AutoTokenizer.from_pretrained(C.model_dir())
    ctx = PrepareContext(spec=spec, splits=splits, backend=None, seed=args.seed)
    program = get_strategy("prompt")(RungSpec(name="zero_shot", strategy="prompt",
                                              params={"mode": "score", "calibrate": False}), ctx)
    warm, items = C.draw(splits.test, args.n, args.seed)
    prompts = [render_messages(tok, program.prompt_for(x.text, ())) + prefix for x in warm + items for prefix in PREFIXES]
    prompts = [(text, encode(tok, text)) for text in prompts]

    def whole(batch):
        out = []
        for text, ids in batch:
            conts = []
            for label in labels:
                joint = encode(tok, text + label)
                conts.append(joint[len(ids):] if joint[: len(ids)] == ids else encode(tok, label))
            out.append(conts)
        return out

    def tail(batch):
        return [continuations_ids(tok, text, ids, labels) for text, ids in batch]

    contenders = [C.Contender("tail", tail), C.Contender("whole-prompt", whole)]
    C.warm_up(contenders, prompts[:len(PREFIXES)])
    C.alternate(contenders, prompts[len(PREFIXES):], args.rounds)
    by = {c.name: c for c in contenders}
    same_by_prompt = {}
    for c in contenders:
        for (text, _), out in zip(c.items, c.outputs):
            same_by_prompt.setdefault(text, []).append(out)
    identical = sum(len(v) == 2 and v[0] == v[1] for v in same_by_prompt.values())
    out = {"probe": "tokenisation", "environment": env,
           "settings": {"prompts": len(prompts) - len(PREFIXES), "labels": len(labels), "prefixes": list(PREFIXES),
                        "rounds": args.rounds, "prompt_tokens_mean": round(sum(len(i) for _, i in prompts) / len(prompts), 1)},
           "contenders": {name: C.contender_json(c, {"ms_per_prompt": round(1000 * c.s_per_item, 2),
                                                     "ms_per_label": round(1000 * c.s_per_item / len(labels), 4)})
                          for name, c in by.items()},
           "identical_tokens": f"{identical}/{len(same_by_prompt)} prompts",
           "speedup": C.ratio(by["tail"], by["whole-prompt"])}
    path = C.write_result(args.out, out)
    print(f"\ntail {out['contenders']['tail']['ms_per_prompt']} ms vs whole prompt "
          f"{out['contenders']['whole-prompt']['ms_per_prompt']} ms per prompt ({len(labels)} labels): "
          f"{out['speedup']['speedup']}x; identical tokens on {out['identical_tokens']}\nwritten {path}")
    return out


if __name__ == "__main__":
    main()
