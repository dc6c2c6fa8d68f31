"""Run a transformers causal LM in-process: chat generation and shared-prompt choice scoring.

``LocalBackend`` serves ``local:<name>`` (embedded models, see ``model_cache.EMBEDDED``) and
``hf:<id or directory>``, optionally with a PEFT adapter. Two things make it fast on a CPU:

* **Choice scoring shares the prompt.** All choices' continuations are merged into a token
  trie; the (uncached part of the) prompt and the trie's internal nodes go through the model in
  ONE forward pass, with a 4D attention mask that is causal over the prompt and lets each trie
  node see the prompt and its own ancestors only (tree attention), and explicit
  ``position_ids`` (prompt length + depth - 1). Each choice's log-probability is the sum along
  its trie path; the prompt is computed once per example however many choices there are.
* **Models without tree attention share the prompt too** (sliding-window or hybrid layers, e.g.
  Gemma 3: a sliding layer cannot take the trie's custom 4D mask). The prompt is prefilled once
  (logits at its last position only); then the choices go through in chunks of ``SCORE_CHUNK``
  rows over the prompt cache seen at the chunk's batch size (expanded views, not copies). Each
  row is one root-to-node path of the trie's internal nodes (a choice whose fed tokens are a
  prefix of another's adds no row), right-padded, with ``position_ids`` following the prompt;
  right padding needs no mask, as causal attention keeps real tokens from seeing the padding
  after them. Logits (the 262k-token LM head dominates Gemma's cost) are computed once per
  internal trie node, where it first occurs. Scores equal one forward per choice to float
  tolerance.
* **A cross-request prefix cache.** The KV cache of the previous prompt is kept; when the next
  prompt shares at least ``MIN_SHARED_PREFIX`` tokens with it (task instructions, label list,
  few-shot block), the cache is cropped back to the shared prefix and only the rest is prefilled.
  Batched generation also prefills a batch's common prefix once and copies it to every row.

Prompt rendering (documented behaviour): messages go through the tokenizer's chat template with
``add_generation_prompt=True`` (or ``continue_final_message=True`` when the last message is the
assistant's), then are tokenised with ``add_special_tokens=False``. When the prompt has no system
message, ``DEFAULT_SYSTEM`` is added, because some templates (SmolLM2's) otherwise inject a long
default system turn of their own. Models without a chat template (base models) get plain few-shot
text instead: the system text, a blank line, each demonstration as its user text, a newline and
``Output: <answer>`` followed by a blank line, then the query's user text and ``Output:``; the
answer follows with a leading space (``answer_lead``) and ends with the blank line when that is
one token (``end_of_turn_id``). Generated text comes back without the leading space.

Out of scope: model resolution and weight caching (``model_cache.py``), call caching
(``cached.py``), prompt construction (``strategies/``), tree attention for sliding-window or hybrid-attention
models (they use the batched path above). For such models the prompt cache keeps every layer's
keys (a sliding-window cache layer drops keys older than its window, so it could not be cropped
back to a shared prefix); the attention masks still apply the window.
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tunewise.backends.base import (
    Backend,
    ChoiceScores,
    Generation,
    GenerationRequest,
    Message,
    ScoreRequest,
)
from tunewise.backends.devices import torch_device
from tunewise.backends.model_cache import (
    ResolvedModel,
    adapter_fingerprint,
    load_pretrained,
    resolve_model,
)
from tunewise.backends.prefix_cache import MIN_SHARED_PREFIX, PrefixCache
from tunewise.backends.token_trie import (
    TokenTrie,
    ancestor_mask,
    build_trie,
    common_prefix_len,
)

__all__ = [
    "DEFAULT_SYSTEM",
    "MIN_SHARED_PREFIX",
    "PLAIN_OUTPUT",
    "LocalBackend",
    "TokenTrie",
    "answer_lead",
    "build_trie",
    "choice_sequences",
    "continuation_ids",
    "continuations_ids",
    "encode",
    "end_of_turn_id",
    "render_messages",
]

DEFAULT_SYSTEM = "You are a helpful assistant."
PLAIN_OUTPUT = "Output:"  # closes each user turn of a plain (template-less) prompt; the answer follows it
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# choice rows per forward in batched scoring (models without tree attention). Inside attention
# each row holds its own copy of the prompt's keys and values (Gemma 3 270M: ~37 KB per prompt
# token per row, ~24 MB per row for a 650-token prompt), so this bounds memory. Time per example
# on Gemma (BANKING77 zero-shot, 77 labels, 1 thread, two runs; benchmarks/results/
# batched_scoring.json): 8, 16 and 32 rows are level within run-to-run noise (6.0-7.4 s),
# 4 rows ~20% slower, all 77 rows at once ~60% slower. 8 is the smallest of the level range.
SCORE_CHUNK = 8


# --- the backend ----------------------------------------------------------------------------


@dataclass
class _Row:
    """Decoding state of one generation request inside a batch."""

    request: GenerationRequest
    prompt_tokens: int
    cached_tokens: int
    generator: torch.Generator | None
    tokens: list[int]
    text: str | None = None  # set when a stop string cut the text
    finish_reason: str | None = None
    matcher: Any = None  # the JSON Schema the answer must follow, as a token-mask state (json_schema.py)


class LocalBackend(Backend):
    """A transformers causal LM on CPU or CUDA; see the module docstring for the fast paths.

    ``device`` defaults to CUDA when available, else CPU; ``dtype`` to float32 on CPU (bf16
    autocast is ~20x slower on AVX2 CPUs) and bfloat16 on CUDA. ``threads`` sets torch's
    intra-op threads (process-wide, so only when given). ``adapter`` is a PEFT adapter directory;
    LoRA adapters are merged into the weights for inference speed. ``batch_size`` caps the rows
    of one generation batch. Not thread-safe: the prefix cache is per instance, so give each
    thread its own backend or serialise calls.
    """

    def __init__(
        self,
        spec: str = "local:smollm2-135m",
        *,
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        threads: int | None = None,
        adapter: str | Path | None = None,
        batch_size: int = 8,
    ) -> None:
        super().__init__(name=spec)
        self.can_score = True
        if threads:
            torch.set_num_threads(threads)
        self.device = device or torch_device()
        self.dtype = _resolve_dtype(dtype, self.device)
        self.batch_size = max(1, batch_size)
        self.resolved: ResolvedModel = resolve_model(spec)
        self.adapter = Path(adapter).expanduser() if adapter else None
        self._adapter_fp = adapter_fingerprint(self.adapter) if self.adapter else None
        self._model, self._tok = load_pretrained(self.resolved, dtype=self.dtype, device=self.device)
        if self.adapter:
            self._model = _apply_adapter(self._model, self.adapter)
        self._eot_id = end_of_turn_id(self._tok)
        self._lead = answer_lead(self._tok)
        self._stop_ids = _stop_token_ids(self._tok, self._model, self._eot_id)
        self._tree_ok = _supports_tree_attention(self._model)
        self._prefix = _PromptCache(self._model)
        self._json_decoding: Any = None
        self.info = self._describe()

    @property
    def model(self) -> Any:
        """The loaded transformers model (adapter merged when one was given)."""
        return self._model

    @property
    def tokenizer(self) -> Any:
        return self._tok

    @property
    def end_of_turn_id(self) -> int | None:
        """The token closing an assistant turn; appended to every scored choice."""
        return self._eot_id

    # -- Backend interface ----------------------------------------------------------------

    def fingerprint(self) -> str:
        dtype = str(self.dtype).removeprefix("torch.")
        # template-less models were prompted with "role: content" lines before the plain format:
        # their calls are keyed apart (chat-template models keep the fingerprint they always had)
        plain = "" if _has_chat_template(self._tok) else "|prompt=plain"
        return f"{self.resolved.fingerprint}|{dtype}|adapter={self._adapter_fp or '-'}{plain}"

    def count_tokens(self, text: str) -> int:
        return len(self._encode(text))

    def close(self) -> None:
        self._prefix.clear()

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """Greedy (or seeded sampling) generation, batched by prompt length."""
        prompts = [self._encode(self.render(r.prompt)) for r in requests]
        order = sorted(range(len(requests)), key=lambda i: len(prompts[i]))
        results: dict[int, Generation] = {}
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            outputs = self._generate_batch([requests[i] for i in batch], [prompts[i] for i in batch])
            results.update(zip(batch, outputs))
        return [results[i] for i in range(len(requests))]

    def score(self, requests: Sequence[ScoreRequest]) -> list[ChoiceScores]:
        """Rank classification: the prompt is prefilled once and all choices share one trie pass.

        Models without tree attention (sliding-window layers) score the choices as batched rows
        over the shared prompt cache instead (see the module docstring).
        """
        return [self._score_one(request) for request in requests]

    def score_batched(self, requests: Sequence[ScoreRequest]) -> list[ChoiceScores]:
        """The batched path whatever the model: what ``score`` does without tree attention."""
        return [self._score_batched_one(request) for request in requests]

    def score_naive(self, requests: Sequence[ScoreRequest]) -> list[ChoiceScores]:
        """Reference scoring: one full forward per choice, no cache (tests and benchmarks only)."""
        return [self._score_naive_one(request) for request in requests]

    # -- prompts and tokens ---------------------------------------------------------------

    def render(self, prompt: Sequence[Message]) -> str:
        """The exact prompt text fed to the model (see the module docstring)."""
        return render_messages(self._tok, prompt)

    def _encode(self, text: str) -> list[int]:
        return encode(self._tok, text)

    def _continuations(self, request: ScoreRequest) -> tuple[list[int], list[list[int]]]:
        """Prompt ids and each choice's continuation ids (choice tokens + end-of-turn)."""
        return choice_sequences(self._tok, request, self._eot_id)

    # -- scoring ----------------------------------------------------------------------------

    @torch.inference_mode()
    def _score_one(self, request: ScoreRequest) -> ChoiceScores:
        if not self._tree_ok:
            return self._score_batched_one(request)
        start = time.perf_counter()
        prompt_ids, continuations = self._continuations(request)
        trie = build_trie(continuations)
        first, nodes, reused = self._prompt_and_trie_logprobs(prompt_ids, trie)
        logprobs = tuple(_path_logprob(path, trie, first, nodes) for path in trie.paths)
        return ChoiceScores(
            logprobs=logprobs,
            token_counts=tuple(len(c) for c in continuations),
            prompt_tokens=len(prompt_ids),
            latency_s=time.perf_counter() - start,
            cached_tokens=reused,
            scored_tokens=len(trie.internal),
        )

    def _prompt_and_trie_logprobs(
        self, prompt_ids: list[int], trie: TokenTrie
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor], int]:
        """ONE forward: the uncached rest of the prompt, then the trie's internal nodes.

        Returns the next-token log-probs after the prompt, after each internal node, and the
        number of prompt tokens reused from the prefix cache. Leaves are never fed: nothing
        attends to them and their logits are not needed (every choice ends in one, so this
        saves a token per choice). The 4D mask is causal over the prompt; a trie node sees the
        whole prompt plus its own ancestors; positions follow the node's depth.
        """
        cache, reused = self._prefix.take(prompt_ids)
        fed = trie.internal
        rest, n, device = len(prompt_ids) - reused, len(fed), self._model.device
        mask = torch.zeros(rest + n, reused + rest + n, dtype=torch.bool)
        mask[:, :reused] = True
        mask[:rest, reused : reused + rest] = torch.ones(rest, rest, dtype=torch.bool).tril()
        mask[rest:, reused : reused + rest] = True
        mask[rest:, reused + rest :] = ancestor_mask(trie)[list(fed)][:, list(fed)]
        positions = list(range(reused, len(prompt_ids))) + [len(prompt_ids) + trie.depths[i] - 1 for i in fed]
        out = self._model(
            input_ids=torch.tensor([prompt_ids[reused:] + [trie.tokens[i] for i in fed]], device=device),
            attention_mask=mask[None, None].to(device),
            position_ids=torch.tensor([positions], device=device),
            cache=cache,
            use_cache=True,
            logits_to_keep=torch.arange(rest - 1, rest + n, device=device),
        )
        self._prefix.commit(prompt_ids)
        rows = torch.log_softmax(out.logits[0].float(), dim=-1)
        return rows[0], dict(zip(fed, rows[1:])), reused

    @torch.inference_mode()
    def _score_batched_one(self, request: ScoreRequest) -> ChoiceScores:
        """The prompt once (through the prefix cache), then the trie's paths as batched rows."""
        start = time.perf_counter()
        prompt_ids, continuations = self._continuations(request)
        trie = build_trie(continuations)
        cache, reused, last = self._prefix.prefill(prompt_ids)
        scores = _children_logprobs(trie, [-1], last[None])  # the first tokens, after the prompt
        rows = _trie_rows(trie)
        done: set[int] = set()
        for begin in range(0, len(rows), SCORE_CHUNK):
            scores.update(self._chunk_logprobs(cache, len(prompt_ids), trie, rows[begin : begin + SCORE_CHUNK], done))
        return ChoiceScores(
            logprobs=tuple(float(sum(scores[node] for node in path)) for path in trie.paths),
            token_counts=tuple(len(c) for c in continuations),
            prompt_tokens=len(prompt_ids),
            latency_s=time.perf_counter() - start,
            cached_tokens=reused,
            scored_tokens=sum(len(row) for row in rows),
        )

    def _chunk_logprobs(
        self, cache: Any, prompt_len: int, trie: TokenTrie, rows: list[tuple[int, ...]], done: set[int]
    ) -> dict[int, float]:
        """One forward of ``rows`` (trie paths, right-padded) after the prompt cache.

        Logits are computed only where a row reaches an internal node not in ``done`` (nodes are
        added to it); returns the log-prob of each child of those nodes, keyed by child.
        """
        device = self._model.device
        width = max(len(row) for row in rows)
        keep = torch.zeros(len(rows), width, dtype=torch.bool)
        wanted: list[int] = []  # row-major, like the rows ``keep`` selects
        for i, row in enumerate(rows):
            for j, node in enumerate(row):
                if node not in done:
                    done.add(node)
                    keep[i, j] = True
                    wanted.append(node)
        if not wanted:
            return {}
        pad = self._tok.pad_token_id if self._tok.pad_token_id is not None else 0
        ids = [[trie.tokens[n] for n in row] + [pad] * (width - len(row)) for row in rows]
        select = _logits_row_selection()
        logits = self._model(
            input_ids=torch.tensor(ids, device=device),
            position_ids=torch.arange(prompt_len, prompt_len + width, device=device).expand(len(rows), -1),
            cache=_batch_view(cache, len(rows)),
            use_cache=True,
            logits_to_keep=keep.to(device) if select else 0,
        ).logits
        if not select:  # older transformers: every position was computed
            logits = logits[keep.to(logits.device)]
        return _children_logprobs(trie, wanted, logits)

    @torch.inference_mode()
    def _score_naive_one(self, request: ScoreRequest) -> ChoiceScores:
        start = time.perf_counter()
        prompt_ids, continuations = self._continuations(request)
        logprobs = []
        for continuation in continuations:
            ids = torch.tensor([(prompt_ids + continuation)[:-1]], device=self._model.device)
            logits = self._model(input_ids=ids, use_cache=False, logits_to_keep=len(continuation)).logits
            rows = torch.log_softmax(logits[0].float(), dim=-1)
            picked = rows[torch.arange(len(continuation)), torch.tensor(continuation, device=rows.device)]
            logprobs.append(float(picked.sum()))
        return ChoiceScores(
            logprobs=tuple(logprobs),
            token_counts=tuple(len(c) for c in continuations),
            prompt_tokens=len(prompt_ids),
            latency_s=time.perf_counter() - start,
            scored_tokens=sum(len(c) for c in continuations),
        )

    # -- generation -------------------------------------------------------------------------

    @torch.inference_mode()
    def _generate_batch(self, requests: list[GenerationRequest], prompts: list[list[int]]) -> list[Generation]:
        """Decode one batch: shared prefix once, per-row suffixes padded on the left of the suffix.

        Row layout in the KV cache: ``[shared prefix | padding | own suffix | generated]``; the
        2D attention mask hides the padding and ``position_ids`` skip it, so every row computes
        exactly what it would alone.
        """
        start = time.perf_counter()
        if len(prompts) == 1:
            cache, reused, last_logits = self._prefix.prefill(prompts[0])
            rows = [self._new_row(requests[0], len(prompts[0]), reused)]
            mask = torch.ones(1, len(prompts[0]), dtype=torch.long, device=self._model.device)
            positions = torch.tensor([len(prompts[0]) - 1], device=self._model.device)
            self._decode(rows, cache, last_logits[None], mask, positions)
        else:
            cache, shared, reused = self._shared_cache(prompts)
            rows = [self._new_row(r, len(p), shared) for r, p in zip(requests, prompts)]
            rows[0].cached_tokens = reused  # the first row pays for the shared prefix
            logits, mask, positions = self._prefill_suffixes(cache, prompts, shared)
            self._decode(rows, cache, logits, mask, positions)
        latency = time.perf_counter() - start
        return [self._finish(row, latency, len(rows)) for row in rows]

    def _shared_cache(self, prompts: list[list[int]]) -> tuple[Any, int, int]:
        """A batch-sized cache holding the prompts' common prefix: ``(cache, shared, reused)``.

        The prefix (leaving every row at least one token of its own) is prefilled once at batch
        size 1 through the cross-request prefix cache, then copied to every row.
        """
        from transformers import DynamicCache

        shared = min(len(p) for p in prompts) - 1
        for p in prompts[1:]:
            shared = min(shared, common_prefix_len(prompts[0], p))
        if shared < MIN_SHARED_PREFIX:
            return DynamicCache(config=self._model.config), 0, 0
        cache, reused, _ = self._prefix.prefill(prompts[0][:shared])
        cache = copy.deepcopy(cache)
        cache.batch_repeat_interleave(len(prompts))
        return cache, shared, reused

    def _prefill_suffixes(
        self, cache: Any, prompts: list[list[int]], shared: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        device = self._model.device
        suffixes = [p[shared:] for p in prompts]
        width = max(len(s) for s in suffixes)
        pad = self._tok.pad_token_id if self._tok.pad_token_id is not None else 0
        ids = torch.tensor([[pad] * (width - len(s)) + s for s in suffixes], device=device)
        own = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in suffixes], device=device)
        positions = (shared + own.cumsum(-1) - 1).clamp(min=0)
        mask = torch.cat([torch.ones(len(prompts), shared, dtype=own.dtype, device=device), own], dim=-1)
        out = self._model(
            input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True, logits_to_keep=1
        )
        return out.logits[:, -1], mask, positions[:, -1]

    def _decode(
        self, rows: list[_Row], cache: Any, logits: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor
    ) -> None:
        """Pick tokens until every row stops; finished rows are dropped from the batch."""
        active = list(range(len(rows)))
        while True:
            tokens = [self._pick(rows[r], logits[i]) for i, r in enumerate(active)]
            for r, token in zip(active, tokens):
                self._append(rows[r], token)
            keep = [i for i, r in enumerate(active) if rows[r].finish_reason is None]
            if not keep:
                return
            if len(keep) < len(active):
                index = torch.tensor(keep, device=mask.device)
                cache.batch_select_indices(index)
                mask, positions = mask[index], positions[index]
                tokens = [tokens[i] for i in keep]
                active = [active[i] for i in keep]
            mask = torch.cat([mask, mask.new_ones(len(active), 1)], dim=-1)
            positions = positions + 1
            out = self._model(
                input_ids=torch.tensor(tokens, device=mask.device)[:, None],
                attention_mask=mask,
                position_ids=positions[:, None],
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            logits = out.logits[:, -1]

    def _new_row(self, request: GenerationRequest, prompt_tokens: int, cached: int) -> _Row:
        generator = None
        if request.temperature > 0:
            generator = torch.Generator(device=self._model.device).manual_seed(request.seed)
        matcher = self._json().matcher(request.json_schema) if request.json_schema is not None else None
        return _Row(request, prompt_tokens, cached, generator, tokens=[], matcher=matcher)

    def _json(self) -> Any:
        """Constrained JSON decoding, built on first use (the vocabulary scan takes about a second)."""
        if self._json_decoding is None:
            from .json_schema import JsonSchemaDecoding

            self._json_decoding = JsonSchemaDecoding(self._tok)
        return self._json_decoding

    def _pick(self, row: _Row, logits: torch.Tensor) -> int:
        if row.matcher is not None:
            logits = logits.clone()
            self._json().mask(row.matcher, logits)
        if row.generator is None:
            return int(logits.argmax())
        probs = torch.softmax(logits.float() / row.request.temperature, dim=-1)
        return int(torch.multinomial(probs, 1, generator=row.generator))

    def _append(self, row: _Row, token: int) -> None:
        """Record one generated token and decide whether the row stops (eos, stop string, length)."""
        row.tokens.append(token)
        if token in self._stop_ids:
            row.finish_reason = "stop"
            return
        if row.matcher is not None and self._json().advance(row.matcher, token):
            row.finish_reason = "stop"  # the JSON value is complete
            return
        stops = [s for s in row.request.stop if s]
        if stops:  # decoding every step is only worth it when there is something to look for
            text = self._tok.decode(row.tokens, skip_special_tokens=True)
            cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
            if cut >= 0:
                row.text, row.finish_reason = text[:cut], "stop"
                return
        if len(row.tokens) >= row.request.max_new_tokens:
            row.finish_reason = "length"

    def _finish(self, row: _Row, latency: float, batch_size: int) -> Generation:
        text = row.text
        if text is None:
            ended = bool(row.tokens) and row.tokens[-1] in self._stop_ids
            text = self._tok.decode(row.tokens[:-1] if ended else row.tokens, skip_special_tokens=True)
        if self._lead:
            text = text.removeprefix(self._lead)  # the space after a plain prompt's "Output:"
        return Generation(
            text=text,
            prompt_tokens=row.prompt_tokens,
            completion_tokens=len(row.tokens),
            latency_s=latency,
            cached_tokens=row.cached_tokens,
            finish_reason=row.finish_reason or "length",
            batch_size=batch_size,
        )

    # -- description ------------------------------------------------------------------------

    def _describe(self) -> dict[str, Any]:
        import transformers

        return {
            "model": self.name,
            "path": str(self.resolved.path),
            "fingerprint": self.fingerprint(),
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "constrained_generation": "JSON Schema token masks (llguidance) for extraction answers",
            "n_params": sum(p.numel() for p in self._model.parameters()),
            "adapter": str(self.adapter) if self.adapter else None,
            "tree_scoring": self._tree_ok,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        }



# --- prompt text and tokens, shared with training (``tunewise.training``) -------------------


def render_messages(tokenizer: Any, prompt: Sequence[Message]) -> str:
    """The prompt text for ``prompt`` under the tokenizer's chat template (see the module docstring)."""
    msgs = [{"role": m.role, "content": m.content} for m in prompt]
    if not _has_chat_template(tokenizer):
        return _render_plain(tokenizer, msgs)
    if not any(m["role"] == "system" for m in msgs):
        msgs.insert(0, {"role": "system", "content": DEFAULT_SYSTEM})
    continuing = bool(msgs) and msgs[-1]["role"] == "assistant"
    return tokenizer.apply_chat_template(
        msgs,
        tokenize=False,
        add_generation_prompt=not continuing,
        continue_final_message=continuing,
    )


def _has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _render_plain(tokenizer: Any, msgs: list[dict[str, str]]) -> str:
    """Few-shot text for a base model: blocks separated by blank lines, each user turn closed by ``Output:``.

    A system message is a block of its own; an assistant message completes the user turn before
    it (`` <answer>``). A final assistant message is continued, like ``continue_final_message``.
    The tokenizer's bos token is written first when the tokenizer itself would add it (Gemma), as
    prompts are tokenised with ``add_special_tokens=False``.
    """
    blocks: list[str] = []
    awaiting = False  # the last block is a user turn waiting for its answer
    for m in msgs:
        if m["role"] == "assistant":
            if not awaiting:
                blocks.append(PLAIN_OUTPUT)
            blocks[-1] += f" {m['content']}" if m["content"] else ""
            awaiting = False
        elif m["role"] == "user":
            blocks.append(f"{m['content']}\n{PLAIN_OUTPUT}")
            awaiting = True
        else:  # system text (an empty one adds nothing)
            blocks.extend([m["content"]] if m["content"] else [])
            awaiting = False
    return _bos_text(tokenizer) + "\n\n".join(blocks)


def _bos_text(tokenizer: Any) -> str:
    """The bos token's text when the tokenizer adds it to plain text by itself, else ""."""
    bos = getattr(tokenizer, "bos_token", None)
    bos_id = getattr(tokenizer, "bos_token_id", None)
    if not bos or bos_id is None:
        return ""
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bos if ids and ids[0] == bos_id else ""


def answer_lead(tokenizer: Any) -> str:
    """What comes between a rendered prompt and its answer: "" under a chat template, " " after ``Output:``."""
    return "" if _has_chat_template(tokenizer) else " "


def encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def choice_sequences(tokenizer: Any, request: ScoreRequest, eot_id: int | None) -> tuple[list[int], list[list[int]]]:
    """The prompt ids of a score request and each choice's continuation ids (choice tokens + ``eot_id``).

    Every backend that scores choices by log-likelihood (this one, ``vllm.py``) feeds exactly these tokens.
    """
    prefix = request.answer_prefix
    if prefix and not prefix[0].isspace():
        prefix = answer_lead(tokenizer) + prefix  # a plain prompt's "Output:" is followed by a space
    prompt_text = render_messages(tokenizer, request.prompt) + prefix
    prompt_ids = encode(tokenizer, prompt_text)
    eot = [eot_id] if eot_id is not None else []
    return prompt_ids, [c + eot for c in continuations_ids(tokenizer, prompt_text, prompt_ids, request.choices)]


def continuation_ids(tokenizer: Any, prompt_text: str, prompt_ids: list[int], answer: str) -> list[int]:
    """The tokens of ``answer`` as the model would produce them after ``prompt_text``.

    The answer is tokenised together with the prompt so its first token is the one the model
    really produces after the prompt. After a prompt that does not end in whitespace, the
    answer is preceded by :func:`answer_lead` (" " after a plain prompt's ``Output:``). If that
    joint tokenisation does not start with the prompt's own tokens (a BPE merge across the
    boundary, e.g. an ``answer_prefix`` ending in a space), the answer is tokenised on its own
    instead. Training uses the same function, so a tuned model learns exactly the tokens it is
    scored on.
    """
    return continuations_ids(tokenizer, prompt_text, prompt_ids, [answer])[0]


def continuations_ids(tokenizer: Any, prompt_text: str, prompt_ids: list[int],
                      answers: Sequence[str]) -> list[list[int]]:
    """:func:`continuation_ids` for many answers after one prompt, without re-tokenising the prompt.

    Tokenisers split text at special tokens before BPE, so nothing merges across the prompt's
    last special token (``<|im_start|>`` of the assistant turn): only the prompt's tail after it
    is tokenised with each answer. That is checked, not assumed: when the tail tokenised alone is
    not the end of ``prompt_ids`` (e.g. a tokeniser that adds a prefix space per segment), every
    answer is tokenised with the whole prompt as before. On BANKING77's zero-shot prompt (~690
    tokens, 77 labels) this is 3.4 ms -> ~0.05 ms per label.
    """
    cut = max((i + len(t) for t in getattr(tokenizer, "all_special_tokens", ())
               if t and (i := prompt_text.rfind(t)) >= 0), default=0)
    tail = prompt_text[cut:]
    tail_ids = encode(tokenizer, tail) if cut and tail else []
    if not tail_ids or len(tail_ids) > len(prompt_ids) or prompt_ids[-len(tail_ids):] != tail_ids:
        tail, tail_ids = prompt_text, prompt_ids  # no safe cut: the whole prompt, as before
    lead = answer_lead(tokenizer) if prompt_text and not prompt_text[-1].isspace() else ""
    out = []
    for answer in answers:
        joint = encode(tokenizer, tail + lead + answer)
        out.append(joint[len(tail_ids):] if joint[: len(tail_ids)] == tail_ids else encode(tokenizer, lead + answer))
    return out


def _trie_rows(trie: TokenTrie) -> list[tuple[int, ...]]:
    """The rows batched scoring feeds: root-to-node paths over the internal nodes, shortest first.

    One row ends at each internal node with no internal child, so every internal node (each one
    whose next-token distribution is needed) lies on some row, and a choice whose fed tokens
    are a prefix of another's costs nothing extra. Leaves are never fed.
    """
    internal = set(trie.internal)
    ends = internal - {trie.parents[n] for n in internal}
    rows = []
    for node in sorted(ends):
        path = []
        while node >= 0:
            path.append(node)
            node = trie.parents[node]
        rows.append(tuple(reversed(path)))
    return sorted(rows, key=len)


def _children_logprobs(trie: TokenTrie, parents: list[int], logits: torch.Tensor) -> dict[int, float]:
    """Log-prob of every trie child of ``parents[i]`` (-1 = the prompt) from the logits row ``i``.

    Only the normaliser and the children's logits are read, so no vocabulary-sized log-softmax
    rows are kept.
    """
    rows = logits.float()
    norm = torch.logsumexp(rows, dim=-1)
    index = {parent: i for i, parent in enumerate(parents)}
    children = [(node, index[p]) for node, p in enumerate(trie.parents) if p in index]
    if not children:
        return {}
    at = torch.tensor([i for _, i in children], device=rows.device)
    tokens = torch.tensor([trie.tokens[node] for node, _ in children], device=rows.device)
    values = (rows[at, tokens] - norm[at]).tolist()
    return {node: value for (node, _), value in zip(children, values)}


def _batch_view(cache: Any, rows: int) -> Any:
    """A shallow copy of a batch-1 ``DynamicCache`` whose layers see their keys and values ``rows`` times.

    The copies are ``expand`` views, so nothing is copied until a layer's ``update`` concatenates
    the new tokens (which it must do anyway); the original cache is left as it was.
    """
    view = copy.copy(cache)
    view.layers = []
    for layer in cache.layers:
        layer = copy.copy(layer)
        if getattr(layer, "keys", None) is not None and layer.keys.numel():
            layer.keys = layer.keys.expand(rows, *layer.keys.shape[1:])
            layer.values = layer.values.expand(rows, *layer.values.shape[1:])
        view.layers.append(layer)
    return view


@functools.cache
def _logits_row_selection() -> bool:
    """Whether ``logits_to_keep`` takes a 2D bool mask (transformers 5.25): logits for those rows only."""
    try:
        from transformers.modeling_utils import slice_logits_to_keep
    except ImportError:
        return False
    try:
        kept = slice_logits_to_keep(torch.arange(4.0).reshape(2, 2, 1), torch.tensor([[False, True], [True, False]]))
    except (IndexError, RuntimeError, TypeError):
        return False
    return kept.flatten().tolist() == [1.0, 2.0]


class _PromptCache(PrefixCache):
    """The prefix cache, with every layer's keys kept for models with sliding-window layers.

    ``DynamicSlidingWindowLayer`` keeps only the last window of keys, so once a prompt is longer
    than the window the cache cannot be cropped back to the prefix the next prompt shares (it
    raises). Plain ``DynamicLayer`` caches hold a little more memory and crop anywhere; the
    model's sliding-window masks still restrict attention to the window.
    """

    def __init__(self, model: Any) -> None:
        from transformers import DynamicCache

        super().__init__(model)
        self._keep_all = any(DynamicCache(config=model.config).is_sliding)

    def take(self, ids: list[int]) -> tuple[Any, int]:
        from transformers import DynamicCache

        cache, reused = super().take(ids)
        if reused == 0 and self._keep_all:
            self.cache = cache = DynamicCache()
        return cache, reused


def _path_logprob(path: tuple[int, ...], trie: TokenTrie, first: torch.Tensor, nodes: dict[int, torch.Tensor]) -> float:
    """Sum of log-probs along one choice's trie path (the first token comes from the prompt)."""
    if not path:
        return 0.0
    total = first[trie.tokens[path[0]]]
    for parent, node in zip(path, path[1:]):
        total = total + nodes[parent][trie.tokens[node]]
    return float(total)


# --- model setup helpers ----------------------------------------------------------------------


def _resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    if dtype is None:
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    return _DTYPES[dtype]


def _apply_adapter(model: Any, adapter: Path) -> Any:
    """Attach a PEFT adapter; LoRA-style adapters are merged so inference costs nothing extra."""
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(model, str(adapter))
    try:
        return peft_model.merge_and_unload().eval()
    except (AttributeError, ValueError, NotImplementedError):
        return peft_model.eval()


def end_of_turn_id(tokenizer: Any) -> int | None:
    """The special token closing an assistant turn (``<|im_end|>`` for ChatML), else eos.

    Found by rendering a one-turn conversation and reading the first special token that follows
    the assistant's text, so it works for any chat template without a lookup table. Without a
    chat template it is the token that follows an answer in a rendered plain demonstration when
    that token is the whole blank line ("\\n\\n"), else eos.
    """
    if not _has_chat_template(tokenizer):
        return _plain_end_of_turn(tokenizer)
    marker = "\u2063tunewise\u2063"
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "x"}, {"role": "assistant", "content": marker}], tokenize=False
        )
    except Exception:  # noqa: BLE001 - no template, or one that rejects this shape
        text = ""
    tail = text.split(marker, 1)[1] if marker in text else ""
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    for token in tokenizer(tail, add_special_tokens=False)["input_ids"] if tail else []:
        if token in special:
            return int(token)
    return tokenizer.eos_token_id


def _plain_end_of_turn(tokenizer: Any) -> int | None:
    answered = [Message("user", "x"), Message("assistant", "yes")]
    head = encode(tokenizer, render_messages(tokenizer, answered))
    full = encode(tokenizer, render_messages(tokenizer, [*answered, Message("user", "y")]))
    blank = encode(tokenizer, "\n\n")
    if len(blank) == 1 and full[: len(head)] == head and full[len(head) : len(head) + 1] == blank:
        return blank[0]
    return tokenizer.eos_token_id


def _stop_token_ids(tokenizer: Any, model: Any, eot_id: int | None) -> frozenset[int]:
    ids = {eot_id, tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return frozenset(i for i in ids if i is not None)


def _supports_tree_attention(model: Any) -> bool:
    """Tree scoring needs SDPA full attention in every layer (custom 4D masks).

    Layers are read as the KV cache sees them: a config with a ``sliding_window`` and no
    ``layer_types`` (Mistral) has sliding layers too.
    """
    from transformers import DynamicCache

    config = model.config.get_text_config(decoder=True)
    layer_types = getattr(config, "layer_types", None) or ["full_attention"]
    return (
        getattr(config, "_attn_implementation", None) == "sdpa"
        and set(layer_types) == {"full_attention"}
        and not any(DynamicCache(config=model.config).is_sliding)
    )
