"""The ladder policy: what to do next, from the rungs (cheapest first), what they measured and the budget.

Pure: no I/O, no model. :func:`next_action` looks at the planned rungs and what the finished ones
measured (primary metric with its CI, per-example correctness, seconds and dollars) and returns one
:class:`Action`, always with a one-sentence reason that carries the numbers:

* ``stop`` - a finished rung meets the target *with confidence*, or the budget is spent, or every
  rung was tried. "With confidence" accounts for picking the best of several rungs: the rung's lower
  bound at one-sided level 2.5% / m, m the number of rungs of the ladder (Bonferroni,
  :func:`~tunewise.evaluation.stats.confident_bound`, the same bound the decision uses), must reach the
  target. m counts every planned rung, not only the finished ones, because the policy looks after each
  rung: with m fixed in advance, the bounds of all rungs at all looks hold together with probability
  >= 97.5%, however the walk stops. When only a point estimate clears the target the policy keeps
  climbing and says so in the next ``run``'s reason.
* escalation - prompting plateaued: each of the last :attr:`PolicyConfig.patience` prompt rungs
  is not significantly better than the best prompt rung before it (paired McNemar + bootstrap,
  :func:`~tunewise.evaluation.stats.compare_paired`), and a tuning rung is runnable and fits the
  budget: the tuning rungs ``run`` next, before the remaining prompt rungs of that model. Those are not
  skipped: weak rungs' stall is no evidence about stronger techniques (retrieved demonstrations,
  chain-of-thought), so each still runs afterwards when the budget allows, screened first, and is skipped only on
  evidence about itself (its screen, its budget estimate). (Results of older versions may hold ``escalate``
  actions, which skipped them.)
* ``skip`` - a rung cannot run here (``blocked``: e.g. fine-tuning needs a transformers model) or
  its estimated cost does not fit what is left of the budget (a tuning rung: not even shrunk, below).
* ``run`` - the next rung, with its estimate; for an LLM rung whose metric is a mean of
  per-example scores and when a finished rung exists, with a successive-halving ``screen``
  (nested stratified test subsets, see :func:`screen_subset`). A tuning rung runs with ``params``
  the walk sets on it: its time allowance, and when all of train does not fit, the subset that does.

Tuning rungs are fitted to the budget instead of skipped (:func:`fit_tuned`): training on all of
train is estimated from its work in tokens (``tunewise.training.timing``: the prompts and answers the
trainer sees x epochs, with the model's tokenizer) x seconds per token, measured on finished tuning
rungs of the same model, else :data:`PRIOR_TRAIN_S_PER_TOKEN`. When that and the test evaluation do
not fit what is left, a ``finetune`` rung trains on the largest nested stratified subset of train that
fits (``limit``; at least 32 examples and 2 per label, else it is skipped), and a learning curve keeps
the smallest sizes it can afford (``max_points``, at least 3). The reason says so with the numbers.
The rung itself then runs a short timed trial and stops an overrun (``training.timing.StepClock``).

Costs are estimated (:func:`estimate_cost`) from the measured throughput of finished rungs of the
same family (same strategy and prompt mode, with or without demonstrations), else from the priors
below, measured with SmolLM2-135M on a 2-core CPU on BANKING77.
Budgets: ``budget.hours`` (wall time, all rungs), ``budget.usd`` (money: device-hours x price for
self-hosted models, tokens x price for API models). When ``budget.hours`` is not set, tuning rungs
(which train) must fit :data:`DEFAULT_TUNING_HOURS` by estimate: a big task on a CPU never starts a
multi-hour fine-tuning unless the user sets ``constraints.budget_hours`` or names the rung.

Early rejection (:func:`screen_subset`): before a full evaluation, the rung is scored on nested
stratified subsets (1/32, 1/8, 1/4, 1/2 of the test split, each at least 8 examples); it is dropped when the
exact one-sided Clopper-Pearson upper bound of its accuracy on the subset, at confidence 1 - ``delta`` / 4
per look (99.75% by default, :attr:`PolicyConfig.look_delta`), is below the best rung's CI low. If the rung's
accuracy on the full test split is at least that low (in particular, if it would beat the best rung), each
look drops it with probability <= delta / 4, so <= delta over the four looks (sampling without replacement
and stratification only make the subset estimate tighter). The first look is small on purpose: a rung at 5%
against a best CI low of 88% is out after 10 examples (0/10 has a 99.75% upper bound of 45%). The best rung
is taken among the finished rungs that meet the latency constraint (the walk passes it in): a rung that
cannot beat one too slow to ship may still be the best that can be shipped. The decision ranks candidates
on cost only among those that meet the quality bar, so early rejection is restricted to rungs that cannot
beat the best.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from ..evaluation.records import MetricValue
from ..evaluation.stats import compare_paired, confidence_words, confident_bound
from ..formats import pct
from ..training.timing import PRIOR_TRAIN_S_PER_TOKEN, largest_fitting

__all__ = [
    "PlannedRung", "Observed", "Budget", "Pricing", "PricingOf", "PolicyConfig", "Action", "Estimate", "pricing_of",
    "rung_family", "family_kind", "estimate_cost", "next_action", "screen_subset", "screen_sizes",
    "stratified_order", "upper_bound", "plateau", "spent", "seconds_left", "fit_tuned", "TunedFit", "distill_action",
    "PRIOR_S_PER_EXAMPLE", "PRIOR_S_PER_ANSWER_TOKEN", "PRIOR_API_TOKENS", "PRIOR_TRAIN_S_PER_TOKEN", "DEFAULT_TUNING_HOURS",
]

#: seconds of model time per test example when no rung of the family has been measured yet
#: (SmolLM2-135M, 2-core CPU, BANKING77's 77 labels: label scoring ~2 s, chain-of-thought ~4.5 s,
#: free generation ~0.7 s, embeddings ~0.03 s; a tuned model scores its labels in ~1 s)
PRIOR_S_PER_EXAMPLE = {
    "no_llm": 0.03, "prompt_score": 2.0, "prompt_score_demos": 2.5, "prompt_score_demo_labels": 1.0,
    "prompt_generate": 0.7,
    "prompt_generate_demos": 0.8, "prompt_cot": 4.5, "prompt_cot_demos": 5.0, "tuned": 1.0, "curve": 1.0,
    "encoder": 0.03, "distill": 0.03,
    "other": 2.0,
}
#: free generation writes its whole answer budget when the model does not stop (SmolLM2-135M repeats JSON slot lists
#: to the end): beyond the 32-token budget the generate priors assume, each answer token adds this much per example
#: (snips_slots: 158-token JSON answers took 2.6 s/example in batches of 16, 2-core CPU; (2.6 - 0.7) / 126)
PRIOR_S_PER_ANSWER_TOKEN = 0.015
PRIOR_ANSWER_TOKENS = 32
#: (prompt tokens, completion tokens) per request assumed for an API model before a rung of the family ran
PRIOR_API_TOKENS = {"prompt_score": (300, 2), "prompt_score_demos": (1000, 2), "prompt_score_demo_labels": (1000, 2),
                    "prompt_generate": (300, 16),
                    "prompt_generate_demos": (1000, 16), "prompt_cot": (300, 80), "prompt_cot_demos": (1000, 80),
                    "other": (500, 32)}
#: seconds a token of encoder_ft work takes before one ran: all-MiniLM-L6-v2, batch 32, 2-core CPU, 3 epochs over
#: 8,965 BANKING77 queries (145k tokens an epoch) and 3 dev evaluations in 354 s (benchmarks/results/encoder_ft.json);
#: a GPU is assumed 15x faster, as for LLM training
PRIOR_ENCODER_S_PER_TOKEN = {"cpu": 0.0008, "cuda": 0.0008 / 15}
#: fewer pool inputs than this are not worth a distillation the budget squeezed
MIN_DISTILL_POOL = 100
#: families whose training is an encoder's (a distilled student is encoder_ft on the teacher's labels)
ENCODER_FAMILIES = ("encoder", "distill")
#: wall-time budget for the tuning rungs together when the task sets no constraints.budget_hours
DEFAULT_TUNING_HOURS = 0.5


def rung_family(strategy: str, params: Mapping[str, Any], kind: str = "classification") -> str:
    """Rungs of one family have similar cost per example: ``no_llm``, ``prompt_<mode>[_demos]``, ``tuned``, ``curve``;
    a scoring rung that scores only its demonstrations' labels (``choices: demos``, few_shot_retrieved: <= k of
    BANKING77's 77) is ``prompt_score_demo_labels``, several times faster than one scoring every label."""
    if strategy in ("knn", "probe"):
        return "no_llm"
    if strategy == "encoder_ft":
        return "encoder"
    if strategy == "distill":  # a teacher's labelling, then a student's training
        return "distill"
    if strategy == "learning_curve":
        return "no_llm" if params.get("of") == "probe" else "curve"
    if strategy == "finetune":
        return "tuned"
    if strategy == "optimize":  # answers as a few-shot prompt does; its search is priced apart (search_calls)
        return rung_family("prompt", {"mode": params.get("mode") or "score", "k": 1}, kind)
    if strategy == "prompt":
        mode = str(params.get("mode", "score"))
        if kind != "classification" and mode == "score":
            mode = "generate"
        if mode == "score" and params.get("k") and params.get("choices") == "demos":
            return "prompt_score_demo_labels"
        return f"prompt_{mode}" + ("_demos" if params.get("k") else "")
    return "other"


def family_kind(family: str) -> str:
    """``no_llm``, ``tuned`` (trains: finetune and its learning curves) or ``prompt`` (every other LLM rung)."""
    if family == "no_llm":
        return "no_llm"
    return "tuned" if family in ("tuned", "curve", "encoder", "distill") else "prompt"


@dataclass(frozen=True)
class PlannedRung:
    """A rung as the policy sees it before it runs."""

    name: str
    family: str
    screenable: bool = False  # scored by a mean of per-example 0/1 scores and uses the run's LLM
    train_example_epochs: float = 0.0  # tuning rungs: examples x epochs over all trainings
    evaluations: int = 1  # test-split evaluations (a learning curve scores each point)
    train_tokens: float = 0.0  # tuning rungs: work in tokens over all trainings (``training.timing.work_tokens``)
    train_examples: int = 0  # tuning rungs: examples of its (largest) training, as configured
    fit_sizes: tuple[tuple[int, float], ...] = ()  # finetune: (examples, tokens) of nested subsets, largest first
    curve_points: tuple[tuple[float, int], ...] = ()  # learning curve: (tokens, evaluations) a size, smallest first
    blocked: str | None = None  # why it cannot run here
    model: str | None = None  # the model's short name when the task weighs several (None: its one model, or none)
    answer_tokens: int = 0  # generating prompt rungs: the answer budget in the model's tokens (0: not known)
    pool_size: int = 0  # distill: the pool inputs its teacher will label
    search_calls: int = 0  # optimized: the model calls its search on dev may make before the test evaluation
    pool_work: tuple[float, float] = (0.0, 0.0)  # distill: the student's work tokens on gold alone, and per pool input

    @property
    def kind(self) -> str:
        return family_kind(self.family)


@dataclass(frozen=True)
class Observed:
    """What a rung that was acted on measured (status: finished, failed, skipped, rejected)."""

    name: str
    family: str
    status: str
    value: float | None = None
    low: float | None = None
    high: float | None = None
    correct: tuple[float, ...] | None = None  # per-example correctness (0/1) or score on the full test split
    seconds: float = 0.0  # measured: preparation (training included) + model time
    eval_seconds: float = 0.0  # model time of the evaluation
    examples: int = 0  # test examples evaluated
    usd: float | None = None  # measured money
    train_s: float = 0.0
    train_example_epochs: float = 0.0
    train_tokens: float = 0.0  # work in tokens it trained (with ``train_s``: the measured seconds per token)
    metric: MetricValue | None = None  # the target metric as scored (value, interval, n, method)
    model: str | None = None  # as :attr:`PlannedRung.model`

    @property
    def kind(self) -> str:
        return family_kind(self.family)

    def bound(self, candidates: int) -> float:
        """The metric's lower bound adjusted for ``candidates`` (:func:`~tunewise.evaluation.stats.confident_bound`)."""
        n = len(self.correct) if self.correct is not None else self.examples
        metric = self.metric or MetricValue(self.value, self.low, self.high, n, "")  # type: ignore[arg-type]
        return confident_bound(metric, candidates)


@dataclass(frozen=True)
class Budget:
    hours: float | None = None
    usd: float | None = None
    tuning_hours_default: float = DEFAULT_TUNING_HOURS  # tuning rungs, when ``hours`` is None


@dataclass(frozen=True)
class Pricing:
    """How seconds and examples become money. Self-hosted: ``usd_per_second``; API: ``usd_per_example`` priors."""

    device: str = "cpu"
    usd_per_second: float | None = None  # self-hosted: device-hour price / 3600
    api_usd_per_example: Mapping[str, float] = field(default_factory=dict)  # prior per family, API models
    basis: str = ""


@dataclass(frozen=True)
class PolicyConfig:
    patience: int = 2  # prompt rungs in a row that must fail to beat the best before them
    fractions: tuple[float, ...] = (1 / 32, 1 / 8, 1 / 4, 1 / 2)  # successive-halving subsets of the test split
    delta: float = 0.01  # one-sided error of early rejection over all its looks (split evenly between them)
    min_subset: int = 8  # smaller subsets are not looked at
    alpha: float = 0.05  # paired tests

    @property
    def look_delta(self) -> float:
        """The one-sided error of each early-rejection look (Bonferroni over the looks)."""
        return self.delta / max(1, len(self.fractions))


@dataclass(frozen=True)
class Estimate:
    seconds: float
    usd: float | None
    basis: str


@dataclass(frozen=True)
class Action:
    kind: str  # run | stop | escalate | skip | reject | note
    rung: str | None
    reason: str
    skipped: tuple[str, ...] = ()  # rungs this action leaves out (escalate, stop)
    estimate_s: float | None = None
    estimate_usd: float | None = None
    screen: tuple[int, ...] = ()  # run: subset sizes to screen on before the full evaluation
    scored: int | None = None  # reject: test examples scored before the rung was dropped
    saved_calls: float | None = None  # reject: model calls not made, against scoring the rung fully
    saved_s: float | None = None  # reject: model seconds not spent
    params: dict[str, Any] | None = None  # run: parameters the walk sets on the rung (time allowance, fitted subset)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["skipped"], d["screen"] = list(self.skipped), list(self.screen)
        return {k: v for k, v in d.items() if v not in (None, [], ())}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Action":
        return cls(**{"rung": None, **d, "skipped": tuple(d.get("skipped", ())), "screen": tuple(d.get("screen", ()))})


# --------------------------------------------------------------------------- formatting


def _pct(x: float | None) -> str:
    return pct(x, unit="%")


def _dur(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _usd(x: float | None) -> str:
    if x is None:
        return "an unknown amount"
    return f"${x:,.2f}" if x >= 1 else f"${x:.2g}" if x > 0 else "$0"


def _ci(o: Observed) -> str:
    return f"{_pct(o.value)} [{_pct(o.low)}, {_pct(o.high)}]"


# --------------------------------------------------------------------------- costs


def spent(observed: Mapping[str, Observed], *, kind: str | None = None) -> tuple[float, float]:
    """(seconds, usd) measured so far, over every rung acted on (or those of one kind)."""
    rows = [o for o in observed.values() if kind is None or o.kind == kind]
    return sum(o.seconds for o in rows), sum(o.usd or 0.0 for o in rows)


#: how seconds and tokens become money: one :class:`Pricing` for the run's one model, or one per model name
PricingOf = Pricing | Mapping[str | None, Pricing]


def pricing_of(rung: PlannedRung, pricing: PricingOf) -> Pricing:
    """The pricing of the rung's model (a rung without a model is priced as the run's device)."""
    if isinstance(pricing, Pricing):
        return pricing
    return pricing.get(rung.model) or pricing[None]


def _per_example(rung: PlannedRung, observed: Mapping[str, Observed]) -> tuple[float, str]:
    """Seconds a test example: measured on rungs of the same family and model, else the family's prior (for free
    generation, grown with the rung's answer budget)."""
    family, model = rung.family, rung.model
    same = [o for o in observed.values()
            if o.family == family and o.model == model and o.examples > 0 and o.eval_seconds > 0]
    if same:
        s = sum(o.eval_seconds for o in same) / sum(o.examples for o in same)
        return s, f"measured {s:.3g} s/example on {', '.join(o.name for o in same)}"
    s = PRIOR_S_PER_EXAMPLE.get(family, PRIOR_S_PER_EXAMPLE["other"])
    if family.startswith("prompt_generate") and rung.answer_tokens > PRIOR_ANSWER_TOKENS:
        s += PRIOR_S_PER_ANSWER_TOKEN * (rung.answer_tokens - PRIOR_ANSWER_TOKENS)
        return s, f"prior {s:.3g} s/example for {family} with {rung.answer_tokens}-token answers"
    return s, f"prior {s:g} s/example for {family}"


def estimate_cost(rung: PlannedRung, observed: Mapping[str, Observed], n_test: int, pricing: PricingOf) -> Estimate:
    """Seconds (training + evaluation) and dollars the rung is expected to cost, with the basis; measured
    throughput counts only from rungs of the same family on the same model."""
    pricing = pricing_of(rung, pricing)
    per, basis = _per_example(rung, observed)
    seconds = per * (n_test * max(1, rung.evaluations) + rung.search_calls)
    parts = [f"{n_test * max(1, rung.evaluations)} test examples" + (
        f" + {rung.search_calls} search calls on train and dev" if rung.search_calls else "") + f" x {basis}"]
    if rung.kind == "tuned" and rung.train_tokens > 0:
        rate, why = _train_rate(rung, observed, pricing)
        seconds += rate * rung.train_tokens
        parts.insert(0, f"training {rung.train_tokens:,.0f} tokens ({rung.train_example_epochs:,.0f} example-epochs) "
                        f"x {why}")
    if pricing.usd_per_second is not None:
        usd: float | None = seconds * pricing.usd_per_second
    else:  # API model: measured dollars per example of the family, else the token-price prior
        same = [o for o in observed.values()
                if o.family == rung.family and o.model == rung.model and o.examples > 0 and o.usd is not None]
        if same:
            usd = sum(o.usd or 0.0 for o in same) / sum(o.examples for o in same) * (n_test + rung.search_calls)
        elif rung.kind == "no_llm":
            usd = 0.0
        else:
            prior = pricing.api_usd_per_example.get(rung.family)
            usd = None if prior is None else prior * (n_test + rung.search_calls)
    return Estimate(seconds, usd, "; ".join(parts))


def _train_rate(rung: PlannedRung, observed: Mapping[str, Observed], pricing: Pricing) -> tuple[float, str]:
    """Training seconds per token of work: measured on finished tuning rungs of the same model, else the prior."""
    encoder = rung.family in ENCODER_FAMILIES  # a fine-tuned encoder's tokens cost far less than an LLM's
    tuned = [o for o in observed.values() if o.kind == "tuned" and (o.family in ENCODER_FAMILIES) == encoder
             and o.model == rung.model and o.train_tokens > 0 and o.train_s > 0]
    if tuned:
        rate = sum(o.train_s for o in tuned) / sum(o.train_tokens for o in tuned)
        return rate, f"measured {1000 * rate:.3g} ms/token on {', '.join(o.name for o in tuned)}"
    priors = PRIOR_ENCODER_S_PER_TOKEN if encoder else PRIOR_TRAIN_S_PER_TOKEN
    rate = priors.get(pricing.device, priors["cpu"])
    return rate, f"prior {1000 * rate:.3g} ms/token on {pricing.device}" + (" (encoder)" if encoder else "")


# --------------------------------------------------------------------------- plateau


def plateau(ladder: Sequence[PlannedRung], observed: Mapping[str, Observed], *, patience: int = 2,
            alpha: float = 0.05, seed: int = 0) -> str | None:
    """The plateau sentence when each of the last ``patience`` prompt rungs failed to beat the best before it."""
    prompts = [observed[r.name] for r in ladder if r.kind == "prompt" and r.name in observed]
    prompts = [o for o in prompts if o.status == "finished" and o.correct is not None and o.value is not None]
    if patience < 1 or len(prompts) < patience + 1:
        return None
    sentences = []
    for i in range(len(prompts) - patience, len(prompts)):
        last, best = prompts[i], max(prompts[:i], key=lambda o: o.value)
        c = compare_paired(np.array(last.correct), np.array(best.correct), alpha=alpha, seed=seed)
        if c["verdict"] == "A better":
            return None
        sentences.append(f"{last.name} {_pct(last.value)} vs {best.name} {_pct(best.value)} "
                         f"(diff {100 * c['diff']:+.1f} points [{100 * c['low']:+.1f}, {100 * c['high']:+.1f}], "
                         f"{c['test'].split()[0]} p = {c['p_value']:.3g})")
    return "; ".join(sentences)


# --------------------------------------------------------------------------- the next action


def _fits(rung: PlannedRung, est: Estimate, observed: Mapping[str, Observed], budget: Budget) -> str | None:
    """None when the estimate fits what is left of the budget, else the sentence why not."""
    spent_s, spent_usd = spent(observed)
    if budget.hours is not None:
        left = budget.hours * 3600 - spent_s
        if est.seconds > left:
            return (f"estimated {_dur(est.seconds)} ({est.basis}) exceeds the {_dur(max(0.0, left))} left of "
                    f"budget_hours {budget.hours:g}")
    elif rung.kind == "tuned":
        tuned_s, _ = spent(observed, kind="tuned")
        left = budget.tuning_hours_default * 3600 - tuned_s
        if est.seconds > left:
            return (f"estimated {_dur(est.seconds)} ({est.basis}) exceeds the {_dur(max(0.0, left))} left of the "
                    f"default {budget.tuning_hours_default:g} h tuning budget (no constraints.budget_hours set; "
                    "set it, or name the rung with --rungs, to train longer)")
    if budget.usd is not None:
        left_usd = budget.usd - spent_usd
        if est.usd is None:
            return f"its cost cannot be estimated (no price or measurement) and budget_usd {budget.usd:g} is set"
        if est.usd > left_usd:
            return (f"estimated {_usd(est.usd)} ({est.basis}) exceeds the {_usd(max(0.0, left_usd))} left of "
                    f"budget_usd {budget.usd:g}")
    return None


def seconds_left(rung: PlannedRung, observed: Mapping[str, Observed], budget: Budget,
                 pricing: PricingOf) -> float | None:
    """Seconds the rung may take before a budget is exceeded (None: no limit): ``budget.hours`` (else, for a
    tuning rung, the default tuning budget), and ``budget.usd`` at the device-hour price."""
    pricing = pricing_of(rung, pricing)
    spent_s, spent_usd = spent(observed)
    limits = []
    if budget.hours is not None:
        limits.append(budget.hours * 3600 - spent_s)
    elif rung.kind == "tuned":
        limits.append(budget.tuning_hours_default * 3600 - spent(observed, kind="tuned")[0])
    if budget.usd is not None and pricing.usd_per_second:
        limits.append((budget.usd - spent_usd) / pricing.usd_per_second)
    return max(0.0, min(limits)) if limits else None


@dataclass(frozen=True)
class TunedFit:
    """A tuning rung fitted to the budget: its estimate, the ``params`` the walk sets on it, what the reason adds,
    or why it cannot run (``why_not``)."""

    estimate: Estimate
    params: dict[str, Any] | None = None
    note: str = ""
    why_not: str | None = None


def _minutes(seconds: float) -> float:
    return max(0.1, round(seconds / 60, 1))


def fit_tuned(rung: PlannedRung, observed: Mapping[str, Observed], budget: Budget, n_test: int,
              pricing: PricingOf) -> TunedFit:
    """A tuning rung as it fits what is left of the budget (module docstring): as planned with its time
    allowance, on the largest nested subset of train that fits (``finetune``), or with the curve sizes it can
    afford; else the sentence why not."""
    est = estimate_cost(rung, observed, n_test, pricing)
    why_not = _fits(rung, est, observed, budget)
    left = seconds_left(rung, observed, budget, pricing)
    price = pricing_of(rung, pricing)
    if rung.train_tokens <= 0 or left is None or (budget.usd is not None and not price.usd_per_second):
        return TunedFit(est, why_not=why_not)
    rate, why_rate = _train_rate(rung, observed, price)
    per, per_basis = _per_example(rung, observed)
    eval_s = per * n_test * max(1, rung.evaluations)
    if why_not is None:
        allowance = left if rung.curve_points else left - eval_s  # a curve's allowance covers its evaluations
        return TunedFit(est, {"time_budget_minutes": _minutes(allowance)},
                        f"; it trains under a time allowance of {_dur(allowance)}")
    if rung.fit_sizes:
        found = largest_fitting([x for x in rung.fit_sizes if x[0] < rung.train_examples], rate, left, eval_s)
        if found is None:
            n, work = rung.fit_sizes[-1]
            return TunedFit(est, why_not=f"{why_not}; even its smallest subset, {n:,} examples (at least 32, and 2 "
                                         f"per label), is estimated at {_dur(eval_s + rate * work)}")
        n, seconds = found
        reason = (f"training on all {rung.train_examples:,} examples {why_not}; it trains on the largest nested "
                  f"stratified subset that fits instead: {n:,} of {rung.train_examples:,} examples, estimated "
                  f"{_dur(seconds)} ({why_rate})")
        fitted = Estimate(seconds, seconds * price.usd_per_second if price.usd_per_second is not None else None,
                          f"training {dict(rung.fit_sizes)[n]:,.0f} tokens ({n:,} of {rung.train_examples:,} examples) "
                          f"x {why_rate}; {n_test * max(1, rung.evaluations)} test examples x {per_basis}")
        return TunedFit(fitted, {"limit": n, "time_budget_minutes": _minutes(left - eval_s), "fit_reason": reason},
                        f"; {reason}")
    if rung.curve_points:
        total, costs = 0.0, []
        for work, evaluations in rung.curve_points:
            total += rate * work + per * n_test * evaluations
            costs.append(total)
        k = max((i + 1 for i, c in enumerate(costs) if c <= left), default=0)
        if k < 3:
            return TunedFit(est, why_not=f"{why_not}; even its 3 smallest sizes (a curve needs 3) are estimated "
                                         f"at {_dur(costs[min(2, len(costs) - 1)])}")
        dropped = len(costs) - k
        reason = (f"all {len(costs)} sizes {why_not}; it keeps its {k} smallest sizes, estimated {_dur(costs[k - 1])}, "
                  f"and drops the {dropped} largest it cannot afford")
        fitted = Estimate(costs[k - 1], costs[k - 1] * price.usd_per_second if price.usd_per_second is not None
                          else None, f"training {sum(w for w, _ in rung.curve_points[:k]):,.0f} tokens of its {k} "
                          f"smallest sizes x {why_rate}; {n_test * sum(e for _, e in rung.curve_points[:k])} test "
                          f"examples x {per_basis}")
        return TunedFit(fitted, {"max_points": k, "time_budget_minutes": _minutes(left), "fit_reason": reason},
                        f"; {reason}")
    return TunedFit(est, why_not=why_not)


def _spent_out(observed: Mapping[str, Observed], budget: Budget) -> str | None:
    spent_s, spent_usd = spent(observed)
    if budget.hours is not None and spent_s >= budget.hours * 3600:
        return f"the time budget is spent: {_dur(spent_s)} measured of budget_hours {budget.hours:g}"
    if budget.usd is not None and spent_usd >= budget.usd:
        return f"the money budget is spent: {_usd(spent_usd)} measured of budget_usd {budget.usd:g}"
    return None


def screen_sizes(n_test: int, config: PolicyConfig = PolicyConfig()) -> tuple[int, ...]:
    """Nested subset sizes for early rejection: ``ceil(f * n)`` for each fraction, at least ``min_subset``."""
    sizes = sorted({math.ceil(f * n_test) for f in config.fractions})
    return tuple(s for s in sizes if config.min_subset <= s < n_test)


def next_action(ladder: Sequence[PlannedRung], observed: Mapping[str, Observed], *, target: float | None,
                metric: str, budget: Budget, n_test: int, pricing: PricingOf,
                config: PolicyConfig = PolicyConfig(), seed: int = 0) -> Action:
    """The next step of the walk (module docstring); ``observed`` holds every rung acted on so far."""
    pending = [r for r in ladder if r.name not in observed]
    finished = [o for o in observed.values() if o.status == "finished" and o.value is not None]
    best = max(finished, key=lambda o: o.value) if finished else None
    candidates = max(1, len(ladder))  # every rung the walk may stop at (module docstring)
    bounds = {o.name: o.bound(candidates) for o in finished} if target is not None else {}
    if target is not None:
        confident = [o for o in finished if bounds[o.name] >= target]
        if confident:
            o = max(confident, key=lambda o: bounds[o.name])
            return Action("stop", o.name, f"target met with confidence: {o.name} {metric} {_ci(o)} has its "
                          f"{confidence_words(bounds[o.name], candidates)}, >= target {_pct(target)}"
                          + (f"; not run: {', '.join(r.name for r in pending)}" if pending else ""),
                          skipped=tuple(r.name for r in pending))
    if not pending:
        best_txt = f"; best {best.name} {metric} {_ci(best)}" if best else ""
        others = len(observed) - len(finished)  # "tried" would hide rungs that never ran (a spent budget)
        done = "every rung of the ladder was tried" if not others else (
            f"every rung of the ladder was acted on: {len(finished)} finished, {others} skipped, rejected early or "
            "failed, each with its reason")
        return Action("stop", None, f"{done}{best_txt}")
    out = _spent_out(observed, budget)
    if out:
        return Action("stop", None, f"{out}; not run: {', '.join(r.name for r in pending)}",
                      skipped=tuple(r.name for r in pending))
    nxt = pending[0]
    escalated = ""
    if nxt.kind == "prompt":  # plateaus are per model: a weak model's stall says nothing of another's prompts
        same_model = [r for r in ladder if r.model == nxt.model]
        flat = plateau(same_model, observed, patience=config.patience, alpha=config.alpha, seed=seed)
        tuning = [r for r in pending if r.kind == "tuned" and r.blocked is None and r.family != "distill"]
        fitting = [r for r in tuning if fit_tuned(r, observed, budget, n_test, pricing).why_not is None]
        if flat and fitting:  # tuning goes first; the stronger prompt rungs wait, they are not skipped (a wall is
            # earned on evidence about each rung: its screen or its budget estimate, not its weaker siblings' scores)
            rest = [r.name for r in pending if r.kind == "prompt" and r.model == nxt.model]
            escalated = (f"; prompting plateaued ({flat}), so {fitting[0].name} goes before the remaining prompt "
                         f"rung{'s' if len(rest) > 1 else ''} {', '.join(rest)}, which {'are' if len(rest) > 1 else 'is'}"
                         " not skipped: each runs after the tuning rungs if the budget allows, screened first")
            nxt = fitting[0]
    if nxt.blocked:
        return Action("skip", nxt.name, f"{nxt.name} cannot run here: {nxt.blocked}")
    if nxt.family == "distill":
        return distill_action(nxt, observed, budget, n_test, pricing)
    fit = fit_tuned(nxt, observed, budget, n_test, pricing) if nxt.kind == "tuned" else None
    est = fit.estimate if fit else estimate_cost(nxt, observed, n_test, pricing)
    why_not = fit.why_not if fit else _fits(nxt, est, observed, budget)
    if why_not:
        return Action("skip", nxt.name, f"{nxt.name} skipped to stay within budget: {why_not}",
                      estimate_s=est.seconds, estimate_usd=est.usd)
    reason = f"next cheapest rung, estimated {_dur(est.seconds)} and {_usd(est.usd)} ({est.basis})"
    reason += (fit.note if fit else "") + escalated
    if target is not None and best is not None and best.value >= target:
        reason += (f"; keep climbing: {best.name}'s point estimate {_pct(best.value)} clears the target "
                   f"{_pct(target)} but its {confidence_words(bounds[best.name], candidates)}, does not")
    screen: tuple[int, ...] = ()
    if nxt.screenable and best is not None and best.low is not None:
        screen = screen_sizes(n_test, config)
        if screen:
            reason += f"; screened first on {', '.join(map(str, screen))} of {n_test} test examples " \
                      f"against {best.name}'s CI low {_pct(best.low)}"
    return Action("run", nxt.name, reason, estimate_s=est.seconds, estimate_usd=est.usd, screen=screen,
                  params=fit.params if fit else None)


def distill_action(rung: PlannedRung, observed: Mapping[str, Observed], budget: Budget, n_test: int,
                   pricing: PricingOf) -> Action:
    """Distillation when it can pay: the best finished prompt rung (any model) is the teacher, and it runs only
    when that teacher beats every cheaper candidate (no-LLM baselines, a fine-tuned encoder) on the test split,
    since a student of its labels learns its mistakes with them; its cost is the teacher's measured seconds (or
    dollars) an example x the pool, plus the student's training at the encoder's rate, and it must fit the budget."""
    prompts = [o for o in observed.values() if o.kind == "prompt" and o.status == "finished" and o.value is not None]
    if not prompts:
        return Action("skip", rung.name, f"{rung.name} skipped: no prompted rung finished to be its teacher")
    teacher = max(prompts, key=lambda o: o.value)
    cheaper = [o for o in observed.values() if o.status == "finished" and o.value is not None
               and (o.kind == "no_llm" or o.family == "encoder")]
    rival = max(cheaper, key=lambda o: o.value) if cheaper else None
    if rival is not None and rival.value >= teacher.value:
        return Action("skip", rung.name, f"{rung.name} skipped: the best prompted rung, {teacher.name} "
                      f"{_ci(teacher)}, does not beat the cheaper {rival.name} {_ci(rival)}; a student of its labels "
                      "would learn its mistakes too, so it is not expected to beat what is already cheaper")
    per = teacher.eval_seconds / teacher.examples if teacher.examples else PRIOR_S_PER_EXAMPLE["other"]
    label_s = per * rung.pool_size
    rate, why_rate = _train_rate(rung, observed, pricing_of(rung, pricing))
    train_s = rate * rung.train_tokens
    eval_per, eval_basis = _per_example(replace(rung, family="encoder"), observed)
    seconds = label_s + train_s + eval_per * n_test
    price = pricing_of(rung, pricing).usd_per_second
    if teacher.usd is not None and price is None:  # an API teacher: its measured dollars an example
        usd: float | None = teacher.usd / max(1, teacher.examples) * rung.pool_size
    else:
        usd = None if price is None else label_s * price
    if usd is not None and price is not None:
        usd += (train_s + eval_per * n_test) * price
    basis = (f"labelling {rung.pool_size:,} pool inputs x {per:.3g} s/example measured on {teacher.name}; training "
             f"{rung.train_tokens:,.0f} tokens x {why_rate}; {n_test} test examples x {eval_basis}")
    est = Estimate(seconds, usd, basis)
    why_not = _fits(rung, est, observed, budget)
    params: dict[str, Any] = {"teacher": teacher.name.partition("@")[0], "teacher_model": teacher.model}
    fitted = ""
    if why_not:  # label the largest sample of the pool that fits (each input: its labelling and its training)
        left = seconds_left(rung, observed, budget, pricing)
        gold_tokens, per_input_tokens = rung.pool_work
        fixed, each = rate * gold_tokens + eval_per * n_test, per + rate * per_input_tokens
        n = int((left - fixed) / each) if left is not None and each > 0 else 0
        if left is None or n < MIN_DISTILL_POOL or (budget.usd is not None and price is None):
            return Action("skip", rung.name, f"{rung.name} skipped to stay within budget: {why_not}"
                          + (f"; even {MIN_DISTILL_POOL} pool inputs would not fit" if left is not None else ""),
                          estimate_s=seconds, estimate_usd=usd)
        seconds = fixed + each * n
        usd = None if price is None else seconds * price
        params["pool_limit"] = n
        fitted = (f"; labelling all {rung.pool_size:,} pool inputs {why_not}, so it labels a random sample of "
                  f"{n:,} that fits, estimated {_dur(seconds)}")
    beats = f"beats the cheaper {rival.name} {_ci(rival)}" if rival else "is the only finished candidate"
    return Action("run", rung.name, f"distil: the best prompted rung, {teacher.name} {_ci(teacher)}, {beats}; it "
                  f"labels the unlabelled pool for a student, estimated {_dur(seconds)} and {_usd(usd)} ({basis})"
                  f"{fitted}", estimate_s=seconds, estimate_usd=usd, params=params)


# --------------------------------------------------------------------------- early rejection


def upper_bound(correct: int, n: int, delta: float) -> float:
    """Exact one-sided Clopper-Pearson upper bound of a proportion, confidence ``1 - delta``."""
    if n <= 0:
        return 1.0
    if correct >= n:
        return 1.0
    from scipy import stats as _scipy_stats  # ~0.5 s to import: only when a rung is screened

    return float(_scipy_stats.beta.ppf(1 - delta, correct + 1, n - correct))


def screen_subset(name: str, correct: Sequence[bool], *, best_name: str, best_low: float, n_test: int,
                  calls: float, seconds: float, delta: float = 0.01, metric: str = "accuracy") -> Action | None:
    """A ``reject`` action when the rung's upper bound on the subset is below the best rung's CI low, else None.

    ``calls`` and ``seconds``: model calls and model seconds the subset took; the savings scale
    them to the ``n_test - len(correct)`` examples not scored.
    """
    n, k = len(correct), int(sum(bool(c) for c in correct))
    ub = upper_bound(k, n, delta)
    if ub >= best_low:
        return None
    rest = n_test - n
    saved_calls, saved_s = calls / n * rest if n else 0.0, seconds / n * rest if n else 0.0
    return Action("reject", name, f"rejected early: {name} scored {k}/{n} ({_pct(k / n if n else None)}) on a "
                  f"stratified subset; its {100 * (1 - delta):g}% upper bound {_pct(ub)} is below {best_name}'s "
                  f"{metric} CI low {_pct(best_low)}, so it cannot win; saved about {saved_calls:,.0f} model calls "
                  f"and {_dur(saved_s)} against scoring all {n_test} examples",
                  scored=n, saved_calls=saved_calls, saved_s=saved_s)


def stratified_order(ids: Sequence[str], strata: Sequence[Any], seed: int = 0) -> list[int]:
    """Indices of the examples in an order whose every prefix is stratified (nested subsets).

    Within a stratum, examples are ranked by a hash of (seed, id); each example's key is its
    stratum quantile ``(rank + 0.5) / stratum size``, so a prefix of length m holds about
    ``m x share`` of each stratum. Depends only on ids, strata and the seed.
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(strata):
        groups[repr(s)].append(i)

    def h(*parts: object) -> str:
        return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()

    keys: dict[int, tuple[float, str]] = {}
    for stratum, members in groups.items():
        ranked = sorted(members, key=lambda i: h(seed, ids[i]))
        for rank, i in enumerate(ranked):
            keys[i] = ((rank + 0.5) / len(ranked), h(seed, stratum))
    return sorted(range(len(ids)), key=lambda i: keys[i])
