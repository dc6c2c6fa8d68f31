"""Run a model on a CUDA GPU with vLLM's offline engine: label scoring by prompt log-probabilities, batched
generation, and JSON Schema / choice constraints through vLLM's guided (structured-output) decoding.

``VLLMBackend`` serves ``vllm:<name>``: an embedded model (``vllm:smollm2-135m``, its dequantised safetensors
copy), a local model directory, or a Hugging Face id (vLLM downloads it; the GPU machine needs the hub).

Prompts are the local backend's, token for token: the same chat template rendering, the same tokenisation
of each choice after the prompt and the same end-of-turn token (``local.choice_sequences``), so a choice's
score is the same quantity as ``LocalBackend.score``'s and the two agree to the engines' float precision.
Token ids go to vLLM as ``{"prompt_token_ids": ...}``; vLLM never re-tokenises text.

* **Scoring.** Each choice is one sequence, prompt + choice + end of turn, asked for ``prompt_logprobs=0``
  (the log-probability of each of its own tokens) and one generated token, all choices of all requests in
  one ``generate`` call. A choice's score is the sum over its own tokens. The engine has prefix caching on.
  vLLM does not read the prefix cache for a request that asks for prompt log-probabilities unless the request
  says so (``skip_reading_prefix_cache=False``, in vLLM versions that have it), because the positions served
  from the cache get no log-probabilities. This backend says so when the installed vLLM allows it, so the
  shared prompt's KV blocks are computed once, and reads only positions vLLM computed: a sequence whose
  reported ``num_cached_tokens`` reaches into its choice's tokens (a cached block past the prompt, when two
  choices share a long start), or whose count is not reported, is scored again without the cache. Older
  vLLM recomputes the prompt for every choice (correct, slower).
* **Generation.** Greedy (or seeded sampling at ``temperature`` > 0), ``max_tokens`` the request's budget,
  the request's stop strings and the local backend's stop tokens (end of turn, eos). ``json_schema`` and
  ``choices`` become ``StructuredOutputsParams`` (vLLM >= 0.10.2; ``GuidedDecodingParams`` before it).
  vLLM's grammar allows free whitespace in JSON where the local backend's enforces compact separators.
* **Usage.** Prompt tokens as fed, completion tokens as generated, cached tokens as vLLM reports them.
  A generation's latency is the wall time of the ``generate`` call that served it (``batch_size`` says how
  many it served); a score's latency is that call's time divided by the requests scored in it.

Out of scope: adapters (a tuned rung runs on the local backend), tensor parallelism beyond passing
``engine`` options to ``vllm.LLM`` (``tensor_parallel_size``, ``gpu_memory_utilization``, ``max_model_len``).
Tested on CPU against a fake ``vllm`` module computed from a tiny transformers model
(``tests/fake_vllm.py``); ``benchmarks/bench_vllm.py`` compares it with the local backend on a GPU.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import BackendError, ModelNotFoundError
from .base import Backend, ChoiceScores, Generation, GenerationRequest, ScoreRequest
from .model_cache import EMBEDDED, directory_fingerprint, local_model_path, resolve_model

__all__ = ["VLLMBackend", "INSTALL_HINT", "model_source"]

INSTALL_HINT = ("the vllm backend needs vLLM and a CUDA GPU; on a machine with one, run "
                "`pip install 'tunewise[vllm]'`")


def _import_vllm() -> Any:
    try:
        import vllm
    except ModuleNotFoundError as exc:
        if exc.name not in (None, "vllm") and not str(exc.name).startswith("vllm."):
            raise
        raise BackendError(f"vLLM is not installed: {INSTALL_HINT}.") from exc
    return vllm


def model_source(spec: str) -> tuple[str, str]:
    """``vllm:<name>`` -> (what ``vllm.LLM(model=...)`` loads, a fingerprint of the weights).

    An embedded model's name gives its dequantised cache (built on first use); an existing directory with a
    ``config.json`` is hashed like ``hf:`` directories; anything else is passed to vLLM as a hub id.
    """
    name = spec.partition(":")[2]
    if not name:
        raise ModelNotFoundError(f"Model {spec!r} names no model; use vllm:<embedded name, hub id or directory>.")
    if name in EMBEDDED:
        resolved = resolve_model(f"local:{name}")
        return str(local_model_path(resolved)), f"vllm:{resolved.fingerprint}"
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"Model {spec!r}: {path} is not a directory containing a config.json.")
        return str(path), f"{spec}@{directory_fingerprint(path)}"
    return name, spec


class VLLMBackend(Backend):
    """vLLM's offline ``LLM`` engine behind the backend interface; see the module docstring.

    ``dtype`` goes to vLLM (``auto``: the checkpoint's); ``batch_size`` is the most requests one call serves
    (the call cache stores after each, so it bounds what a kill loses); ``engine`` holds further
    ``vllm.LLM`` keyword arguments. ``tokenizer`` overrides where the tokenizer is loaded from.
    """

    def __init__(self, spec: str, *, dtype: str = "auto", batch_size: int = 64, seed: int = 0,
                 tokenizer: str | None = None, engine: dict[str, Any] | None = None) -> None:
        super().__init__(name=spec)
        vllm = _import_vllm()
        from transformers import AutoTokenizer

        from .local import end_of_turn_id

        self.can_score = True
        self.max_batch_size = max(1, batch_size)
        self.source, self._weights_fp = model_source(spec)
        self.dtype = dtype
        self._tok = AutoTokenizer.from_pretrained(tokenizer or self.source)
        self._eot_id = end_of_turn_id(self._tok)
        self._stop_ids = sorted({i for i in (self._eot_id, self._tok.eos_token_id) if i is not None})
        self._llm = vllm.LLM(model=self.source, tokenizer=tokenizer or self.source, dtype=dtype, seed=seed,
                             enable_prefix_caching=True, **(engine or {}))
        self._sampling = vllm.SamplingParams
        self._reads_cache_with_logprobs = _accepts(vllm.SamplingParams, skip_reading_prefix_cache=False)
        self.info = {"model": spec, "source": self.source, "fingerprint": self.fingerprint(), "dtype": dtype,
                     "engine": "vllm", "vllm": getattr(vllm, "__version__", "unknown"),
                     "prefix_cache_with_prompt_logprobs": self._reads_cache_with_logprobs,
                     "constrained_generation": "vLLM guided decoding (JSON Schema, choice)"}

    @property
    def tokenizer(self) -> Any:
        return self._tok

    def fingerprint(self) -> str:
        return f"{self._weights_fp}|{self.dtype}"

    def count_tokens(self, text: str) -> int:
        from .local import encode

        return len(encode(self._tok, text))

    # -- scoring ------------------------------------------------------------------------------

    def score(self, requests: Sequence[ScoreRequest]) -> list[ChoiceScores]:
        """All choices of all ``requests`` as one batch of prompt-log-probability requests."""
        from .local import choice_sequences

        start = time.perf_counter()
        built = [choice_sequences(self._tok, r, self._eot_id) for r in requests]
        sequences = [(prompt, cont) for prompt, conts in built for cont in conts]
        sums, cached = self._sequence_logprobs(sequences, read_cache=self._reads_cache_with_logprobs)
        share = (time.perf_counter() - start) / max(1, len(requests))
        out, i = [], 0
        for prompt, conts in built:
            n = len(conts)
            out.append(ChoiceScores(
                logprobs=tuple(sums[i:i + n]), token_counts=tuple(len(c) for c in conts), prompt_tokens=len(prompt),
                latency_s=share, cached_tokens=max(cached[i:i + n], default=0),
                scored_tokens=sum(len(c) for c in conts)))
            i += n
        return out

    def _sequence_logprobs(self, sequences: list[tuple[list[int], list[int]]], *,
                           read_cache: bool) -> tuple[list[float], list[int]]:
        """Sum of each continuation's token log-probs after its prompt, and the prompt tokens read from cache."""
        extra = {"skip_reading_prefix_cache": False} if read_cache else {}
        params = self._sampling(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False, **extra)
        outputs = self._llm.generate([{"prompt_token_ids": p + c} for p, c in sequences], params, use_tqdm=False)
        sums: list[float | None] = []
        cached: list[int] = []
        for (prompt, cont), output in zip(sequences, outputs, strict=True):
            hit = getattr(output, "num_cached_tokens", None)
            if read_cache and (hit is None or hit > len(prompt) - 1):  # a choice token's row may not be computed
                sums.append(None)
                cached.append(0)
                continue
            sums.append(_continuation_logprob(output.prompt_logprobs, prompt, cont))
            cached.append(int(hit or 0))
        redo = [i for i, s in enumerate(sums) if s is None]
        if redo:
            again, _ = self._sequence_logprobs([sequences[i] for i in redo], read_cache=False)
            for i, value in zip(redo, again):
                sums[i] = value
        return [float(s) for s in sums if s is not None], cached

    # -- generation -----------------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """One ``generate`` call for all ``requests`` (vLLM schedules and batches them)."""
        from .local import answer_lead, encode, render_messages

        prompts = [encode(self._tok, render_messages(self._tok, r.prompt)) for r in requests]
        params = [self._generation_params(r) for r in requests]
        start = time.perf_counter()
        outputs = self._llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        latency = time.perf_counter() - start
        lead = answer_lead(self._tok)
        results = []
        for prompt, output in zip(prompts, outputs, strict=True):
            completion = output.outputs[0]
            text = completion.text.removeprefix(lead) if lead else completion.text
            results.append(Generation(
                text=text, prompt_tokens=len(prompt), completion_tokens=len(completion.token_ids), latency_s=latency,
                cached_tokens=int(getattr(output, "num_cached_tokens", None) or 0),
                finish_reason="stop" if completion.finish_reason == "stop" else "length", batch_size=len(requests)))
        return results

    def _generation_params(self, request: GenerationRequest) -> Any:
        sampled = request.temperature > 0
        return self._sampling(
            max_tokens=request.max_new_tokens, temperature=request.temperature, seed=request.seed if sampled else None,
            stop=[s for s in request.stop if s] or None, stop_token_ids=list(self._stop_ids),
            skip_special_tokens=True, **_guided(request))

    def close(self) -> None:
        self._llm = None


def _continuation_logprob(prompt_logprobs: Any, prompt: list[int], cont: list[int]) -> float:
    """Sum of the log-probs vLLM reports for ``cont``'s tokens (entry ``k`` is the log-prob of token ``k``)."""
    total = 0.0
    for k, token in enumerate(cont, start=len(prompt)):
        entry = prompt_logprobs[k] if prompt_logprobs is not None and k < len(prompt_logprobs) else None
        logprob = entry.get(token) if entry else None
        if logprob is None:
            raise BackendError(f"vLLM returned no log-probability for prompt token {k}; cannot score the choices.")
        total += float(logprob.logprob)
    return total


def _guided(request: GenerationRequest) -> dict[str, Any]:
    """The constraint of ``request`` as vLLM's sampling keyword (renamed in vLLM 0.10.2)."""
    if request.json_schema is None and not request.choices:
        return {}
    constraint = {"json": request.json_schema} if request.json_schema is not None else {"choice": list(request.choices)}
    try:
        from vllm.sampling_params import StructuredOutputsParams
    except ImportError:
        from vllm.sampling_params import GuidedDecodingParams

        return {"guided_decoding": GuidedDecodingParams(**constraint)}
    return {"structured_outputs": StructuredOutputsParams(**constraint)}


def _accepts(cls: Any, **kwargs: Any) -> bool:
    """Whether this vLLM's ``SamplingParams`` takes these keyword arguments (fields come and go by version)."""
    try:
        cls(**kwargs)
    except TypeError:
        return False
    return True
