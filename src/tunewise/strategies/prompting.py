"""The prompt-engineering rungs: zero-shot, role, few-shot (random / balanced / retrieved), chain-of-thought.

One strategy, ``prompt``, configured by parameters; each named rung in the ladder is a set of
parameters for it (see ``ladder/catalogue.py``):

- ``role``: a persona sentence for the system turn (role prompting), default a neutral one;
- ``k`` and ``selection`` (``random`` | ``balanced`` | ``retrieved``): demonstrations, only ever
  drawn from the training split; random and balanced sets are fixed for the whole rung,
  retrieved ones are the k most similar training examples to each input (embedding cosine);
- ``mode``: ``score`` (classification by scoring every label's log-likelihood with the prompt
  computed once), ``generate`` (free generation, then parsing), ``cot`` (reason first, then
  answer: for classification the answer is scored over the labels after the reasoning); on a
  backend without log-probabilities (``can_score`` False, e.g. ``openai:``) label scoring becomes
  generation constrained to the labels (``GenerationRequest.choices``), without a confidence;
- ``choices``: ``all`` labels, or ``demos`` (only the labels of the retrieved demonstrations);
- ``demonstrations``: an explicit fixed list of ``{text, target}`` (from train; the optimized rung's search);
- ``calibrate``: contextual calibration of label scores with content-free inputs.

Out of scope: fine-tuning (``strategies/finetuning.py``), metrics.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..backends.base import Backend, GenerationRequest, Message, ScoreRequest
from ..errors import TaskSpecError
from ..evaluation.records import Prediction
from ..prompts import (
    COT_SUFFIX,
    DEFAULT_INSTRUCTIONS,
    DEFAULT_ROLE,
    PromptTemplate,
    answer_text,
    default_template,
    render,
)
from .base import Candidate, PrepareContext, register
from .parsing import parse_answer, split_reasoning

__all__ = ["PromptProgram", "prepare_prompt", "select_demos"]

CONTENT_FREE = ("N/A", "", "[MASK]")
CONSTRAINED = "constrained generation: backend has no log-probabilities"
_MODES = ("score", "generate", "cot")
_SELECTIONS = ("random", "balanced", "retrieved")


@dataclass(frozen=True)
class PromptSettings:
    mode: str = "score"
    k: int = 0
    selection: str = "random"
    choices: str = "all"
    calibrate: bool = False
    max_new_tokens: int | None = None  # the answer budget; None: from the task's answers (answer_budget)
    reasoning_tokens: int = 64
    seed: int | None = None  # draws the fixed demonstrations (default: the task seed)
    order_seed: int | None = None  # shuffles the drawn demonstrations' order only (None: as drawn)
    stability: int = 0  # re-draws and re-orders to measure how much the score moves (see ladder/attempt.py)

    @classmethod
    def from_params(cls, rung_name: str, params: dict[str, Any], kind: str) -> "PromptSettings":
        known = {f for f in cls.__dataclass_fields__} | {"role", "instructions", "template", "demonstrations"}
        unknown = sorted(set(params) - known)
        if unknown:
            raise TaskSpecError(f"rung '{rung_name}': unknown parameter '{unknown[0]}' for strategy 'prompt'.")
        s = cls(**{k: v for k, v in params.items() if k in cls.__dataclass_fields__})
        if s.mode not in _MODES or s.selection not in _SELECTIONS or s.choices not in ("all", "demos"):
            raise TaskSpecError(f"rung '{rung_name}': mode must be one of {_MODES}, selection one of {_SELECTIONS}.")
        if kind != "classification" and (s.mode == "score" or s.choices == "demos" or s.calibrate):
            s = cls(**{**s.__dict__, "mode": "cot" if s.mode == "cot" else "generate", "choices": "all",
                       "calibrate": False})
        return s


def select_demos(train: Sequence[Any], *, k: int, selection: str, seed: int) -> list[Any]:
    """A fixed demonstration set: ``random`` (uniform) or ``balanced`` (round-robin over labels)."""
    rng = random.Random(seed)
    if k <= 0:
        return []
    if selection == "random" or not isinstance(train[0].target, str):
        return rng.sample(list(train), min(k, len(train)))
    by_label: dict[str, list[Any]] = defaultdict(list)
    for ex in train:
        by_label[ex.target].append(ex)
    labels = sorted(by_label)
    rng.shuffle(labels)
    pools = {lab: rng.sample(by_label[lab], len(by_label[lab])) for lab in labels}
    demos: list[Any] = []
    while len(demos) < k and any(pools.values()):
        for lab in labels:
            if pools[lab] and len(demos) < k:
                demos.append(pools[lab].pop())
    rng.shuffle(demos)
    return demos


@dataclass
class PromptProgram(Candidate):
    """A prompt template, its variables and demonstrations: everything needed to answer with an LLM."""

    rung: str
    config: dict[str, Any]
    template: PromptTemplate
    variables: dict[str, Any]
    settings: PromptSettings
    kind: str
    labels: list[str] = field(default_factory=list)
    fixed_demos: list[tuple[str, Any]] = field(default_factory=list)
    retriever: Any = None  # callable(texts) -> list[list[(text, target)]] for retrieved demos
    schema: dict[str, Any] | None = None
    calibration: np.ndarray | None = None
    uses_llm: bool = True
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def stability_draws(self) -> int:
        return int(self.settings.stability or 0) if self.fixed_demos else 0

    def prompt_for(self, text: str, demos: Sequence[tuple[str, Any]]) -> tuple[Message, ...]:
        return render(self.template, query=text, demos=demos, variables=self.variables)

    def _demos_for(self, examples: Sequence[Any]) -> list[list[tuple[str, Any]]]:
        if self.retriever is not None:
            return self.retriever([e.text for e in examples])
        return [self.fixed_demos] * len(examples)

    def predict(self, examples: Sequence[Any], *, backend: Backend | None) -> list[Prediction]:
        if backend is None:
            raise TaskSpecError(f"rung '{self.rung}' needs a model backend.")
        demos = self._demos_for(examples)
        prompts = [self.prompt_for(e.text, d) for e, d in zip(examples, demos)]
        if self.settings.mode == "score":
            return self._by_scoring(examples, prompts, demos, backend)
        if self.settings.mode == "cot":
            return self._by_reasoning(examples, prompts, demos, backend)
        return self._by_generation(examples, prompts, backend)

    # -- classification by label scoring -------------------------------------------------
    def _choices(self, demos: Sequence[tuple[str, Any]]) -> list[str]:
        if self.settings.choices == "demos" and demos:
            seen = dict.fromkeys(t for _, t in demos)
            return [label for label in self.labels if label in seen]
        return self.labels

    def _by_scoring(self, examples, prompts, demos, backend, prefixes=None) -> list[Prediction]:
        if not backend.can_score:
            return self._by_choosing(examples, prompts, demos, backend, prefixes)
        choice_sets = [self._choices(d) for d in demos]
        prefixes = prefixes or [""] * len(examples)
        todo = [i for i, c in enumerate(choice_sets) if len(c) > 1]
        requests = [ScoreRequest(prompt=prompts[i], choices=tuple(choice_sets[i]), answer_prefix=prefixes[i])
                    for i in todo]
        results = dict(zip(todo, backend.score(requests))) if requests else {}
        preds = []
        for i, ex in enumerate(examples):
            if i not in results:  # a single candidate label: no model call is needed
                preds.append(Prediction(example_id=ex.id, output=choice_sets[i][0], raw=choice_sets[i][0],
                                        confidence=1.0, model_call=False))
                continue
            r = results[i]
            probs = self._probabilities(np.array(r.logprobs), choice_sets[i])
            j = int(probs.argmax())
            preds.append(Prediction(example_id=ex.id, output=choice_sets[i][j], raw=choice_sets[i][j],
                                    confidence=float(probs[j]), prompt_tokens=r.prompt_tokens,
                                    completion_tokens=0, cached_tokens=r.cached_tokens, latency_s=r.latency_s))
        return preds

    def _by_choosing(self, examples, prompts, demos, backend, prefixes=None) -> list[Prediction]:
        """Classification on a backend without log-probabilities: generation constrained to the labels.

        Text a backend could not constrain is mapped to a label like free generation; no confidence.
        """
        choice_sets = [self._choices(d) for d in demos]
        prefixes = prefixes or [""] * len(examples)
        todo = [i for i, c in enumerate(choice_sets) if len(c) > 1]
        requests = [GenerationRequest(prompt=_continued(prompts[i], prefixes[i]), choices=tuple(choice_sets[i]),
                                      max_new_tokens=self.settings.max_new_tokens) for i in todo]
        results = dict(zip(todo, backend.generate(requests))) if requests else {}
        preds = []
        for i, ex in enumerate(examples):
            if i not in results:  # a single candidate label: no model call is needed
                preds.append(Prediction(example_id=ex.id, output=choice_sets[i][0], raw=choice_sets[i][0],
                                        confidence=1.0, model_call=False))
                continue
            g = results[i]
            output, error, rule = parse_answer(g.text, kind="classification", labels=choice_sets[i])
            preds.append(Prediction(example_id=ex.id, output=output, raw=g.text, prompt_tokens=g.prompt_tokens,
                                    completion_tokens=g.completion_tokens, cached_tokens=g.cached_tokens,
                                    latency_s=g.latency_s, batch_size=g.batch_size, error=error,
                                    parse_rule=f"{CONSTRAINED} ({rule})", truncated=g.finish_reason == "length"))
        return preds

    def _probabilities(self, logprobs: np.ndarray, choices: list[str]) -> np.ndarray:
        p = np.exp(logprobs - logprobs.max())
        p /= p.sum()
        if self.calibration is not None and choices == self.labels:
            p = p / self.calibration
            p /= p.sum()
        return p

    # -- generation and chain of thought --------------------------------------------------
    def _by_generation(self, examples, prompts, backend) -> list[Prediction]:
        schema = self.schema if self.kind == "extraction" else None  # decode under it where the backend can
        reqs = [GenerationRequest(prompt=p, max_new_tokens=self.settings.max_new_tokens, json_schema=schema)
                for p in prompts]
        return [self._parsed(ex, g.text, g) for ex, g in zip(examples, backend.generate(reqs))]

    def _parsed(self, ex: Any, text: str, g: Any) -> Prediction:
        output, error, rule = parse_answer(text, kind=self.kind, labels=self.labels, schema=self.schema)
        return Prediction(example_id=ex.id, output=output, raw=text, prompt_tokens=g.prompt_tokens,
                          completion_tokens=g.completion_tokens, cached_tokens=g.cached_tokens,
                          latency_s=g.latency_s, batch_size=g.batch_size, error=error, parse_rule=rule,
                          truncated=g.finish_reason == "length")

    def _by_reasoning(self, examples, prompts, demos, backend) -> list[Prediction]:
        budget = self.settings.reasoning_tokens + (self.settings.max_new_tokens if self.kind != "classification" else 0)
        stop = ("Answer:",) if self.kind == "classification" else ()
        gens = backend.generate([GenerationRequest(prompt=p, max_new_tokens=budget, stop=stop) for p in prompts])
        if self.kind != "classification":
            return [self._parsed(ex, split_reasoning(g.text)[1], g) for ex, g in zip(examples, gens)]
        prefixes = [g.text.strip() + "\nAnswer: " for g in gens]
        scored = self._by_scoring(examples, prompts, demos, backend, prefixes=prefixes)
        return [
            Prediction(example_id=p.example_id, output=p.output, raw=g.text.strip() + "\nAnswer: " + str(p.output),
                       confidence=p.confidence, prompt_tokens=g.prompt_tokens + p.prompt_tokens,  # both calls
                       completion_tokens=g.completion_tokens + p.completion_tokens,
                       cached_tokens=g.cached_tokens + p.cached_tokens,
                       latency_s=g.latency_s / g.batch_size + p.latency_s / max(1, p.batch_size),
                       error=p.error, parse_rule=p.parse_rule, truncated=p.truncated, model_call=True)
            for p, g in zip(scored, gens)
        ]


def _retriever(ctx: PrepareContext, k: int, *, leave_one_out: bool = False):
    """The k most similar training examples of each input; ``leave_one_out``: never an example with the input's
    own text (a teacher labelling train's inputs must not be shown their gold labels)."""
    train = list(ctx.splits.train)
    train_vectors = ctx.embed([e.text for e in train])
    same_text: dict[str, list[int]] = defaultdict(list)
    for j, e in enumerate(train if leave_one_out else ()):
        same_text[e.text].append(j)

    def retrieve(texts: Sequence[str]) -> list[list[tuple[str, Any]]]:
        sims = ctx.embed(list(texts)) @ train_vectors.T
        for i, text in enumerate(texts if leave_one_out else ()):
            sims[i, same_text.get(text, [])] = -np.inf
        top = np.argsort(-sims, axis=1)[:, :k]
        # most similar last: closest to the query in the prompt
        return [[(train[j].text, train[j].target) for j in row[::-1]] for row in top]

    return retrieve


def _continued(prompt: tuple[Message, ...], prefix: str) -> tuple[Message, ...]:
    """The prompt with what the assistant already wrote (chain-of-thought reasoning) as its turn."""
    return prompt + (Message("assistant", prefix.strip()),) if prefix.strip() else prompt


def _calibration(program: PromptProgram, backend: Backend) -> np.ndarray | None:
    """Contextual calibration (Zhao et al., 2021): mean label probabilities on content-free inputs.

    None on a backend without log-probabilities (its constrained answers have no probabilities).
    """
    if not backend.can_score:
        return None
    prompts = [program.prompt_for(t, program.fixed_demos) for t in CONTENT_FREE]
    scores = backend.score([ScoreRequest(prompt=p, choices=tuple(program.labels)) for p in prompts])
    probs = []
    for s in scores:
        lp = np.array(s.logprobs)
        p = np.exp(lp - lp.max())
        probs.append(p / p.sum())
    return np.maximum(np.mean(probs, axis=0), 1e-12)


@register("prompt")
def prepare_prompt(rung: Any, ctx: PrepareContext) -> PromptProgram:
    spec = ctx.spec
    s = PromptSettings.from_params(rung.name, rung.params, spec.kind)
    labels = list(ctx.splits.labels or ())
    schema = _schema(spec)
    template = PromptTemplate(**rung.params["template"]) if "template" in rung.params else default_template(spec.kind)
    role = rung.params.get("role") or DEFAULT_ROLE
    if role == "expert":
        role = _expert_role(spec)
    variables = {"role": role, "instructions": rung.params.get("instructions") or spec.instructions
                 or DEFAULT_INSTRUCTIONS[spec.kind], "labels": labels,
                 "schema": _schema_text(schema), "reasoning": COT_SUFFIX if s.mode == "cot" else ""}
    retrieved = s.k > 0 and s.selection == "retrieved"
    if retrieved and ctx.embed is None:
        raise TaskSpecError(f"rung '{rung.name}': retrieved demonstrations need an embedder.")
    budget_basis = "set by the rung's max_new_tokens"
    if s.max_new_tokens is None:
        count = ctx.backend.count_tokens if ctx.backend is not None else (lambda text: max(1, len(text) // 4))
        budget, budget_basis = answer_budget([answer_text(e.target) for e in ctx.splits.train], count)
        s = dataclasses.replace(s, max_new_tokens=budget)
    draw_seed = ctx.seed if s.seed is None else s.seed
    fixed = [] if retrieved else [(e.text, e.target) for e in select_demos(ctx.splits.train, k=s.k,
                                                                          selection=s.selection, seed=draw_seed)]
    if rung.params.get("demonstrations") is not None:  # chosen by the caller (the optimized rung's search)
        fixed = [(d["text"], d["target"]) for d in rung.params["demonstrations"]]
    if s.order_seed is not None:
        random.Random(s.order_seed).shuffle(fixed)
    program = PromptProgram(
        rung=rung.name, config={}, template=template, variables=variables, settings=s, kind=spec.kind,
        labels=labels, fixed_demos=fixed, retriever=_retriever(ctx, s.k) if retrieved else None, schema=schema)
    if s.calibrate and s.mode == "score" and not retrieved and ctx.backend is not None:
        program.calibration = _calibration(program, ctx.backend)
    program.config = {
        "strategy": "prompt", **s.__dict__, "role": role, "template": template.to_json(),
        "instructions": variables["instructions"], "model": ctx.backend.name if ctx.backend else None,
        "answer_budget": budget_basis,
        "demonstrations": [{"text": t, "target": y} for t, y in fixed],
        "demonstration_source": "train split only", "seed": draw_seed,
        "calibration": None if program.calibration is None else {
            "content_free_inputs": list(CONTENT_FREE), "mean_probabilities_top5": _top(program.calibration, labels)},
    }
    return program


#: answer budgets never go below the budget every prompt rung had before it followed the task
MIN_ANSWER_TOKENS = 32


def answer_budget(answers: Sequence[str], count: Callable[[str], int], *, margin: float = 1.25,
                  slack: int = 8) -> tuple[int, str]:
    """Tokens a prompt rung's answer may take: the longest answer in train (in the model's tokens) with a
    margin, at least :data:`MIN_ANSWER_TOKENS`; and the sentence that says how it was set."""
    longest = max((count(a) for a in answers), default=0)
    budget = max(MIN_ANSWER_TOKENS, math.ceil(longest * margin) + slack)
    return budget, (f"{budget} tokens: the longest of {len(answers)} train answers is {longest} tokens, "
                    f"x {margin:g} + {slack} (at least {MIN_ANSWER_TOKENS})")


def _expert_role(spec: Any) -> str:
    return (f"You are a senior domain expert who has labelled thousands of '{spec.name}' examples "
            "with perfect accuracy. You read each input carefully and answer precisely.")


def _schema(spec: Any) -> dict[str, Any] | None:
    if spec.kind != "extraction" or spec.extraction is None or spec.extraction.json_schema is None:
        return None
    raw = spec.extraction.json_schema
    if isinstance(raw, dict):
        return raw
    import json

    path = spec.resolve(raw)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TaskSpecError(f"{path}: cannot read the JSON Schema ({exc.__class__.__name__}).") from None


def _schema_text(schema: dict[str, Any] | None) -> str:
    import json

    return json.dumps(schema, separators=(",", ":")) if schema else ""


def _top(probs: np.ndarray, labels: list[str], n: int = 5) -> dict[str, float]:
    order = np.argsort(-probs)[:n]
    return {labels[i]: round(float(probs[i]), 4) for i in order}
