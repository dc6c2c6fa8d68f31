"""How long a training run takes: its work in tokens, seconds per token (a prior, then a timed trial), the time
limit it trains under, and the largest nested subset of train that fits a time allowance.

**Work** (:func:`work_tokens`) is counted in the tokens the trainer computes: each training example's real
(non-padding) prompt + answer tokens as ``trainer.py`` encodes them (the compact tuned prompt under the model's
chat template, the answer and its end-of-turn token, capped at ``max_length``), times the epochs the schedule
trains, plus every dev evaluation's tokens at :data:`EVAL_TOKEN_SHARE` of the price (a forward pass without
the backward), plus the learning-rate sweep if there is one. Long answers (JSON extraction) cost more than
short labels at equal example counts, which a per-example figure cannot see.

**Seconds** are work x seconds per token: the prior :data:`PRIOR_TRAIN_S_PER_TOKEN` until something better is
known. On this machine the rung then runs a **timed trial** (:class:`StepClock`): the first
:data:`TRIAL_STEPS` optimiser steps of the real run, the first one untimed (warm-up makes it 1.5-3.5x slower),
re-estimate the whole run from the measured seconds per token (and the dev evaluations from their measured
rate when one ran during the trial). A per-token prior does not transfer well: a token costs more in a step
of many tokens (long answers, big batches), and machines and loads differ; the trial sees all of that. Under
a time allowance the run stops there when the re-estimate does not fit (the caller then trains a smaller
subset, or drops the point), and otherwise stops cleanly at the first step past the allowance or
:data:`OVERRUN_MARGIN` x the committed estimate, keeping its best checkpoint. Without an allowance nothing
is stopped; the numbers are recorded. The trial's seconds are the run's: they count as spent.

**Fitting** (:func:`fit_sizes`, :func:`largest_fitting`): the candidate sizes are nested prefixes of the
subset order (``subsets.nested_order``; stratified by label for classification) from all of train down to
:func:`minimum_examples` (at least :data:`MIN_TRAIN_EXAMPLES`, and :data:`MIN_PER_LABEL` per label).

Pure apart from :func:`token_lengths`, which loads the model's tokenizer lazily. Out of scope: the training
loop (``trainer.py``), which examples (``subsets.py``), the ladder's budget rules (``ladder/policy.py``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .settings import TuneSettings

__all__ = ["PRIOR_TRAIN_S_PER_TOKEN", "EVAL_TOKEN_SHARE", "TRIAL_STEPS", "OVERRUN_MARGIN", "MIN_TRAIN_EXAMPLES",
           "MIN_PER_LABEL", "schedule", "work_tokens", "minimum_examples", "fit_sizes", "largest_fitting", "StepClock",
           "token_lengths", "describe_rate"]

#: training seconds per token of work when nothing was measured. CPU: LoRA r=16 on SmolLM2-135M on a 2-core
#: CPU took 4.8 min for 770 BANKING77 examples x 1.29 epochs; those 770 (10 per label, seed 0) render to 36,589
#: tokens with the compact tuned prompt and SmolLM2's tokenizer (47.5 an example), so 288 s / (36,589 x 1.29)
#: = 0.0061 s a token (the 2,310-example run: 0.0053). CUDA keeps the 15x ratio of the per-example priors
#: this replaced, a rough order of magnitude for one data-centre GPU.
PRIOR_TRAIN_S_PER_TOKEN = {"cpu": 0.0061, "cuda": 0.0061 / 15}
#: a dev-evaluation token costs about a third of a training token (forward only, no backward)
EVAL_TOKEN_SHARE = 1 / 3
#: optimiser steps of the timed trial; the first is warm-up and not timed
TRIAL_STEPS = 4
#: a run under a time allowance stops once it runs past this multiple of its committed estimate
OVERRUN_MARGIN = 1.5
#: a tuning rung fitted to a budget trains on at least this many examples, else it is skipped
MIN_TRAIN_EXAMPLES = 32
#: ... and at least this many examples of each label (classification)
MIN_PER_LABEL = 2


def _steps(s: TuneSettings, n: int, world_size: int) -> tuple[int, int, int]:
    """(steps per epoch, total steps, steps between dev evaluations): the trainer's schedule for ``n`` examples."""
    per_step = s.batch_size * s.grad_accum * world_size
    per_epoch = max(1, math.ceil(n / per_step))
    total = s.max_steps or max(1, math.ceil(per_epoch * s.epochs_for(n)))
    return per_epoch, total, max(1, per_epoch // s.evals_per_epoch)


def schedule(train_tokens: float, n: int, s: TuneSettings, *, world_size: int = 1) -> tuple[float, int]:
    """(tokens trained over the epochs and the learning-rate sweep, dev evaluations) for ``s`` on ``n`` examples
    of ``train_tokens`` tokens in all."""
    if n <= 0:
        return 0.0, 0
    per_epoch, total, every = _steps(s, n, world_size)
    trained, evaluations = train_tokens * total / per_epoch, total // every
    if s.lr_sweep:
        trained += len(s.lr_sweep) * train_tokens / per_epoch * s.sweep_steps
        evaluations += len(s.lr_sweep)
    return trained, evaluations


def work_tokens(train_tokens: float, n: int, s: TuneSettings, *, dev_tokens: float = 0.0,
                world_size: int = 1) -> float:
    """Tokens of work to train ``s`` on ``n`` examples of ``train_tokens`` tokens in all (module docstring)."""
    trained, evaluations = schedule(train_tokens, n, s, world_size=world_size)
    return trained + EVAL_TOKEN_SHARE * dev_tokens * evaluations


def minimum_examples(labels: int = 0) -> int:
    """The fewest examples a budget-fitted rung trains on: :data:`MIN_TRAIN_EXAMPLES`, and
    :data:`MIN_PER_LABEL` per label."""
    return max(MIN_TRAIN_EXAMPLES, MIN_PER_LABEL * labels)


def fit_sizes(lengths: Sequence[int], s: TuneSettings, *, minimum: int, dev_tokens: float = 0.0,
              ratio: float = 0.95) -> tuple[tuple[int, float], ...]:
    """``(examples, work tokens)`` of nested prefixes of ``lengths`` (token counts in the nested subset order),
    largest first: all of them, then sizes shrinking by ``ratio``, plus the sizes where the default epochs
    step down (1,000 and 3,000, the cheaper side), down to ``minimum``. Empty when fewer than ``minimum``."""
    total = len(lengths)
    if total < minimum:
        return ()
    sizes = {total, minimum} | {n for n in (1000, 3000) if minimum <= n < total}
    n = float(total)
    while n * ratio >= minimum:
        n *= ratio
        sizes.add(int(n))
    prefix = [0]
    for length in lengths:
        prefix.append(prefix[-1] + length)
    return tuple((n, work_tokens(prefix[n], n, s, dev_tokens=dev_tokens)) for n in sorted(sizes, reverse=True))


def largest_fitting(sizes: Sequence[tuple[int, float]], s_per_token: float, allowance_s: float,
                    fixed_s: float = 0.0) -> tuple[int, float] | None:
    """The largest ``(examples, seconds)`` whose ``fixed_s + s_per_token x work`` fits ``allowance_s``, or None."""
    fitting = [(n, fixed_s + s_per_token * w) for n, w in sizes if fixed_s + s_per_token * w <= allowance_s]
    return max(fitting, default=None)


def describe_rate(s_per_token: float) -> str:
    return f"{1000 * s_per_token:.3g} ms a token ({1 / s_per_token:,.0f} tokens/s)" if s_per_token > 0 else "?"


@dataclass
class StepClock:
    """A training run's timed trial and time limit, fed by the trainer's callback at each step and evaluation.

    The estimate is ``s_per_token`` x the tokens trained + the dev evaluations' tokens at the rate measured on
    the run's own evaluations (else :data:`EVAL_TOKEN_SHARE` of the training rate). ``s_per_token`` starts as
    the prior (or a rate a trial measured before) and the trial replaces it; the estimate at the end of the
    trial is the one the run commits to (``committed_s``). ``budget_s``: the time allowance (None: nothing is
    stopped). Times count from ``start`` (the run's start, tokenisation and model loading included).
    """

    trained_tokens: float  # tokens the schedule trains (epochs and sweep)
    dev_tokens: float  # tokens of one dev evaluation
    evaluations: int  # dev evaluations planned
    tokens_per_step: float  # mean real tokens of an optimiser step
    s_per_token: float  # training seconds a token: the prior, a rate measured before, then the trial's
    budget_s: float | None = None
    trial_steps: int = 0  # 0: no trial (resumed, multi-process, fitted by an earlier trial, or too few steps)
    margin: float = OVERRUN_MARGIN
    clock: Callable[[], float] = time.perf_counter
    start: float = field(default=0.0)
    on_trial: Callable[[dict[str, Any]], None] | None = None  # called once with the trial's measurement
    eval_s_per_token: float | None = None  # measured on this run's dev evaluations
    committed_s: float | None = None  # the estimate the trial committed to
    trial: dict[str, Any] | None = None
    stopped: dict[str, Any] | None = None
    _steps: int = 0
    _timed_s: float = 0.0
    _begin: float | None = None
    _last_end: float | None = None
    _eval_s: float = 0.0
    _evals: int = 0

    def __post_init__(self) -> None:
        self.start = self.start or self.clock()
        self.first_estimate_s = self.estimate_s  # before anything of this run was measured

    @property
    def work_tokens(self) -> float:
        """The run's work in the policy's unit (dev tokens at :data:`EVAL_TOKEN_SHARE`)."""
        return self.trained_tokens + EVAL_TOKEN_SHARE * self.dev_tokens * self.evaluations

    @property
    def estimate_s(self) -> float:
        eval_rate = self.eval_s_per_token if self.eval_s_per_token is not None else EVAL_TOKEN_SHARE * self.s_per_token
        return self.s_per_token * self.trained_tokens + eval_rate * self.dev_tokens * self.evaluations

    @property
    def limit_s(self) -> float | None:
        """Seconds the run may take: the allowance, and the margin over the committed estimate."""
        if self.budget_s is None:
            return None
        return min(self.budget_s, self.margin * (self.committed_s or self.estimate_s))

    def begin_step(self) -> None:
        self._begin = self.clock()

    def evaluated(self) -> None:
        """A dev evaluation just ended (it ran since the end of the last step): its seconds per token."""
        if self._last_end is None or self.dev_tokens <= 0:
            return
        self._eval_s += self.clock() - self._last_end
        self._evals += 1
        self.eval_s_per_token = self._eval_s / (self._evals * self.dev_tokens)

    def end_step(self, step: int, total: int) -> str | None:
        """``"trial"`` (the trial's re-estimate does not fit the allowance), ``"overrun"`` or None (go on)."""
        now = self.clock()
        self._steps += 1
        if self._begin is not None and 2 <= self._steps <= self.trial_steps:
            self._timed_s += now - self._begin
        self._last_end = now
        if self.trial_steps and self._steps == self.trial_steps and self.tokens_per_step > 0:
            return self._end_trial(now)
        limit = self.limit_s
        if limit is not None and now - self.start > limit and step < total:
            committed = self.committed_s or self.estimate_s
            why = (f"the {limit:.0f} s allowed for training" if limit == self.budget_s else
                   f"{self.margin:g} x the {committed:.0f} s estimate")
            self.stopped = {"after_s": round(now - self.start, 1), "limit_s": round(limit, 1), "step": step,
                            "planned_steps": total, "estimate_s": round(committed, 1),
                            "reason": f"stopped for budget after {now - self.start:.0f} s at step {step} of "
                                      f"{total}: past {why}"}
            return "overrun"
        return None

    def _end_trial(self, now: float) -> str | None:
        timed = self.trial_steps - 1
        self.s_per_token = self._timed_s / (timed * self.tokens_per_step)
        self.committed_s = self.estimate_s
        over = self.budget_s is not None and self.committed_s > self.budget_s
        self.trial = {"steps": self.trial_steps, "timed_steps": timed, "timed_s": round(self._timed_s, 3),
                      "tokens_per_step": round(self.tokens_per_step, 1), "s_per_token": self.s_per_token,
                      "eval_s_per_token": self.eval_s_per_token, "prior_estimate_s": round(self.first_estimate_s, 1),
                      "estimate_s": round(self.committed_s, 1), "elapsed_s": round(now - self.start, 2),
                      "over_budget": over}
        if self.on_trial is not None:
            self.on_trial(self.trial)
        return "trial" if over else None


def token_lengths(base_model: str, s: TuneSettings, pairs: Sequence[tuple[Any, str]],
                  labels: Sequence[str] = ()) -> list[int]:
    """Tokens the trainer computes for each ``(prompt, answer)`` pair: prompt + answer + end-of-turn, capped at
    ``max_length`` (the classifier head: the prompt only). Loads the model's tokenizer (cached per model)."""
    from .trainer import encode_pair, training_tokenizer

    tokenizer, eot = training_tokenizer(base_model)
    if s.head == "classifier":
        from ..backends.local import encode, render_messages

        return [min(s.max_length, len(encode(tokenizer, render_messages(tokenizer, p)))) for p, _ in pairs]
    out = []
    for prompt, answer in pairs:
        p, c = encode_pair(tokenizer, eot, prompt, answer, s.max_length)
        out.append(len(p) + len(c))
    return out
