"""A stand-in ``vllm`` package for CPU tests: the offline API's shapes, answered by a transformers model.

``install(monkeypatch, api=...)`` puts modules ``vllm`` and ``vllm.sampling_params`` into ``sys.modules``:
``LLM(model=..., enable_prefix_caching=..., ...)`` loads the directory with transformers (float32, CPU) and
``LLM.generate(prompts, sampling_params)`` returns ``RequestOutput``-shaped objects computed by that model:

* ``prompt_logprobs``: entry 0 is None, entry ``k`` maps token ``k`` to its ``Logprob``, as vLLM does. The
  prefix cache is simulated as vLLM's: full blocks of ``BLOCK`` tokens, keyed by the whole prefix, never the
  last token; a request asking for prompt log-probs reads it only with ``skip_reading_prefix_cache=False``.
  Positions served from the cache get a made-up log-prob of 0.0 (vLLM leaves those rows uncomputed), so a
  backend that reads them scores wrong and the tests see it. ``num_cached_tokens`` reports the cache hit.
* generation: greedy (sampling is not faked), ``max_tokens``, ``stop`` strings (cut, excluded),
  ``stop_token_ids`` and eos; ``choice`` constraints decode greedily among the choices' token sequences,
  ``json`` constraints through llguidance (tunewise's ``JsonSchemaDecoding``).

``api="new"`` has ``StructuredOutputsParams`` and ``skip_reading_prefix_cache`` (vLLM >= 0.11); ``api="old"``
has ``GuidedDecodingParams`` and neither (vLLM 0.8 - 0.10). Unknown keywords raise ``TypeError`` like vLLM's
``SamplingParams``. Every ``SamplingParams`` made and every request served is recorded on the module.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from typing import Any

BLOCK = 16

_COMMON = {"n": 1, "temperature": 1.0, "seed": None, "max_tokens": 16, "stop": None, "stop_token_ids": None,
           "logprobs": None, "prompt_logprobs": None, "detokenize": True, "skip_special_tokens": True}


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: Any
    finish_reason: str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    prompt_logprobs: list[dict[int, Logprob] | None] | None
    outputs: list[CompletionOutput]
    finished: bool = True
    num_cached_tokens: int | None = None


@dataclass
class _Constraint:
    json: Any = None
    choice: list[str] | None = None
    regex: str | None = None
    grammar: str | None = None


def _sampling_params_class(fields: dict[str, Any], log: list[Any]) -> type:
    class SamplingParams:
        def __init__(self, **kwargs: Any) -> None:
            unknown = set(kwargs) - set(fields)
            if unknown:
                raise TypeError(f"SamplingParams got unexpected keyword arguments {sorted(unknown)}")
            for name, default in fields.items():
                setattr(self, name, kwargs.get(name, default))
            log.append(self)

    return SamplingParams


@dataclass
class _Served:
    """One request as the fake engine served it."""

    prompt_token_ids: list[int]
    params: Any
    num_cached_tokens: int


@dataclass
class FakeVLLM:
    api: str
    params_made: list[Any] = field(default_factory=list)
    served: list[_Served] = field(default_factory=list)
    engines: list[Any] = field(default_factory=list)


def install(monkeypatch: Any, *, api: str = "new") -> FakeVLLM:
    state = FakeVLLM(api=api)
    fields = dict(_COMMON)
    params_module = types.ModuleType("vllm.sampling_params")
    if api == "new":
        fields.update(structured_outputs=None, skip_reading_prefix_cache=None)
        params_module.StructuredOutputsParams = type("StructuredOutputsParams", (_Constraint,), {})
    else:
        fields.update(guided_decoding=None)
        params_module.GuidedDecodingParams = type("GuidedDecodingParams", (_Constraint,), {})
    sampling_params = _sampling_params_class(fields, state.params_made)
    params_module.SamplingParams = sampling_params
    vllm = types.ModuleType("vllm")
    vllm.__version__ = f"0.0.0+fake-{api}"
    vllm.SamplingParams = sampling_params
    vllm.LLM = lambda **kwargs: _LLM(state, **kwargs)
    vllm.sampling_params = params_module
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", params_module)
    return state


class _LLM:
    def __init__(self, state: FakeVLLM, *, model: str, tokenizer: str | None = None, dtype: str = "auto",
                 seed: int = 0, enable_prefix_caching: bool = False, **engine: Any) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.state, self.kwargs = state, {"model": model, "enable_prefix_caching": enable_prefix_caching, **engine}
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
        self.tok = AutoTokenizer.from_pretrained(tokenizer or model)
        self.caching = enable_prefix_caching
        self.blocks: set[tuple[int, ...]] = set()
        self._json: Any = None
        state.engines.append(self)

    def generate(self, prompts: list[dict[str, list[int]]], sampling_params: Any, use_tqdm: bool = True):
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        assert len(params) == len(prompts)
        return [self._one(str(i), p["prompt_token_ids"], sp) for i, (p, sp) in enumerate(zip(prompts, params))]

    # -- the engine ------------------------------------------------------------------------------

    def _cache_hit(self, ids: list[int], params: Any) -> int:
        reads = self.caching and (params.prompt_logprobs is None
                                  or getattr(params, "skip_reading_prefix_cache", None) is False)
        hit = 0
        if reads:
            while hit + BLOCK <= len(ids) - 1 and tuple(ids[: hit + BLOCK]) in self.blocks:
                hit += BLOCK
        if self.caching:
            self.blocks.update(tuple(ids[:end]) for end in range(BLOCK, len(ids) + 1, BLOCK))
        return hit

    def _one(self, request_id: str, ids: list[int], params: Any) -> RequestOutput:
        import torch

        hit = self._cache_hit(ids, params)
        self.state.served.append(_Served(list(ids), params, hit))
        with torch.no_grad():
            rows = torch.log_softmax(self.model(torch.tensor([ids])).logits[0].float(), dim=-1)
        prompt_logprobs = None
        if params.prompt_logprobs is not None:
            prompt_logprobs = [None] + [
                {token: Logprob(float(rows[k - 1, token]) if k - 1 >= hit else 0.0, rank=None)}
                for k, token in enumerate(ids) if k > 0]
        text, tokens, reason = self._decode(ids, rows[-1], params)
        completion = CompletionOutput(0, text, tokens, None, None, reason)
        return RequestOutput(request_id, None, list(ids), prompt_logprobs, [completion], True, hit)

    def _decode(self, ids: list[int], last: Any, params: Any) -> tuple[str, list[int], str]:
        import torch

        constraint = getattr(params, "structured_outputs", None) or getattr(params, "guided_decoding", None)
        stops = set(params.stop_token_ids or []) | {self.tok.eos_token_id}
        matcher = json = None
        allowed_paths = None
        if constraint is not None and constraint.choice:
            allowed_paths = [self.tok(c, add_special_tokens=False)["input_ids"] for c in constraint.choice]
        elif constraint is not None and constraint.json is not None:
            json = self._json_decoding()
            matcher = json.matcher(constraint.json)
        tokens: list[int] = []
        logits = last
        while len(tokens) < params.max_tokens:
            scores = logits.clone()
            if allowed_paths is not None:
                nxt = {p[len(tokens)] for p in allowed_paths if p[: len(tokens)] == tokens and len(p) > len(tokens)}
                if any(p == tokens for p in allowed_paths):
                    nxt |= stops
                mask = torch.full_like(scores, float("-inf"))
                mask[list(nxt)] = 0
                scores = scores + mask
            if matcher is not None:
                json.mask(matcher, scores)
            token = int(scores.argmax())
            if token in stops:
                return self._text(tokens), tokens + [token], "stop"
            tokens.append(token)
            if matcher is not None and json.advance(matcher, token):
                return self._text(tokens), tokens, "stop"
            text = self._text(tokens)
            cuts = [i for i in (text.find(s) for s in params.stop or []) if i >= 0]
            if cuts:
                return text[: min(cuts)], tokens, "stop"
            with torch.no_grad():
                logits = torch.log_softmax(self.model(torch.tensor([ids + tokens])).logits[0, -1].float(), dim=-1)
        return self._text(tokens), tokens, "length"

    def _json_decoding(self) -> Any:
        if self._json is None:
            from tunewise.backends.json_schema import JsonSchemaDecoding

            self._json = JsonSchemaDecoding(self.tok)
        return self._json

    def _text(self, tokens: list[int]) -> str:
        return self.tok.decode(tokens, skip_special_tokens=True)
