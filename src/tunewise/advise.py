"""The decision matrix before any experiment: prompt engineering, fine-tuning, or more data first?

``advise(Factors(...))`` turns what a team knows about its situation into a first move, following
the usual "prompt engineering vs fine-tuning" rules of thumb:

* fewer than 100 labelled examples favours prompting; more than 1,000 favours fine-tuning;
* a low budget, days to deploy and low maintenance capacity favour prompting (a tuned model must
  be versioned, monitored and retrained when the data drifts);
* critical (or high) accuracy needs, domain jargon, a strict output format, latency sensitivity
  and high volume (over ~1M requests a month, where shorter prompts pay back the training) favour
  fine-tuning; low volume (under 100k a month) favours prompting, as training never pays back.

Each known factor gives one :class:`FactorReason` with a leaning and a weight (:data:`WEIGHTS`):
2 for the strong signals (data volume, a low budget, days to deploy, critical accuracy), 1 for the
rest. The verdict:

1. "collect data first" when the *requirements* (every factor except the labelled-example count)
   lean to fine-tuning on balance, but there are fewer than 100 labelled examples, or the count
   is unknown and the accuracy need is critical: you cannot train, or even measure, without them;
2. otherwise "fine-tune" when the fine-tuning weight exceeds the prompting weight, all factors
   counted; ties go to "start with prompt engineering" (cheapest first, and it gives a baseline).

This is advice before measuring. ``tunewise run`` replaces it with evidence.

Out of scope: measuring anything (the ladder), costs in money (``costs.py``), and asking the
user for the factors (the CLI builds flags and prompts from :data:`FACTOR_CHOICES`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from .errors import TunewiseError

__all__ = [
    "Factors",
    "FactorReason",
    "Advice",
    "FACTOR_CHOICES",
    "FACTOR_HELP",
    "WEIGHTS",
    "VERDICTS",
    "advise",
]

Leaning = Literal["prompt", "fine-tune", "data", "neutral"]
VERDICTS = ("start with prompt engineering", "fine-tune", "collect data first")

MIN_EXAMPLES = 100  # below this, fine-tuning has too little to learn from (and tests are too small)
MANY_EXAMPLES = 1_000  # above this, fine-tuning usually beats prompting
HIGH_VOLUME = 1_000_000  # requests/month where shorter prompts pay back a training run
LOW_VOLUME = 100_000  # requests/month where a training run rarely pays back

#: The allowed values of each factor: a tuple of choices, or ``int`` / ``bool``.
FACTOR_CHOICES: dict[str, tuple[str, ...] | type] = {
    "labelled_examples": int,
    "budget": ("low", "medium", "high"),
    "time_to_deploy": ("days", "weeks", "months"),
    "accuracy_need": ("moderate", "high", "critical"),
    "maintenance_capacity": ("low", "medium", "high"),
    "latency_sensitive": bool,
    "domain_jargon": bool,
    "strict_output_format": bool,
    "requests_per_month": int,
}

#: One line of help per factor, for CLI flags and interactive prompts.
FACTOR_HELP: dict[str, str] = {
    "labelled_examples": "How many labelled input/output examples do you have?",
    "budget": "Budget for building this (compute and people): low, medium or high?",
    "time_to_deploy": "When must it be in production: days, weeks or months?",
    "accuracy_need": "How good must it be: moderate, high or critical?",
    "maintenance_capacity": "Capacity to version, monitor and retrain a model: low, medium or high?",
    "latency_sensitive": "Is response latency critical?",
    "domain_jargon": "Is the input full of domain jargon a general model may not know?",
    "strict_output_format": "Must the output follow a strict format (a schema, fixed labels)?",
    "requests_per_month": "How many requests a month do you expect?",
}

#: Weight of each (factor, value) leaning; values not listed lean nowhere (weight 0).
WEIGHTS: dict[str, dict[Any, tuple[Leaning, int]]] = {
    "labelled_examples": {"few": ("prompt", 2), "some": ("neutral", 0), "many": ("fine-tune", 2)},
    "budget": {"low": ("prompt", 2), "medium": ("neutral", 0), "high": ("neutral", 0)},
    "time_to_deploy": {"days": ("prompt", 2), "weeks": ("neutral", 0), "months": ("fine-tune", 1)},
    "accuracy_need": {"moderate": ("prompt", 1), "high": ("fine-tune", 1), "critical": ("fine-tune", 2)},
    "maintenance_capacity": {"low": ("prompt", 1), "medium": ("neutral", 0), "high": ("neutral", 0)},
    "latency_sensitive": {True: ("fine-tune", 1), False: ("neutral", 0)},
    "domain_jargon": {True: ("fine-tune", 1), False: ("neutral", 0)},
    "strict_output_format": {True: ("fine-tune", 1), False: ("neutral", 0)},
    "requests_per_month": {"low": ("prompt", 1), "medium": ("neutral", 0), "high": ("fine-tune", 1)},
}

_SENTENCES: dict[str, dict[Any, str]] = {
    "labelled_examples": {
        "few": "{v:,} labelled examples are enough for few-shot prompts but too few to fine-tune on.",
        "some": "{v:,} labelled examples are enough to measure prompts and to try a small fine-tune.",
        "many": "{v:,} labelled examples are enough for fine-tuning to beat prompting.",
        "data": "{v:,} labelled examples are too few to fine-tune on or to measure reliably; "
        "at least 100 are needed.",
    },
    "budget": {
        "low": "A low budget favours prompting, which needs no training runs.",
        "medium": "A medium budget allows either approach.",
        "high": "A high budget allows fine-tuning but is not a reason to do it.",
    },
    "time_to_deploy": {
        "days": "Deploying within days favours prompting, which can ship today.",
        "weeks": "A few weeks leave time for either approach.",
        "months": "Months leave time to collect data, train and evaluate a tuned model.",
    },
    "accuracy_need": {
        "moderate": "Moderate accuracy needs are often met by a good prompt.",
        "high": "High accuracy needs lean towards fine-tuning, which usually wins given enough data.",
        "critical": "Critical accuracy favours fine-tuning, which gives the most control over quality.",
    },
    "maintenance_capacity": {
        "low": "Low maintenance capacity favours prompting: a tuned model must be versioned, "
        "monitored and retrained when the data drifts.",
        "medium": "Medium maintenance capacity can look after a tuned model.",
        "high": "High maintenance capacity can look after a tuned model.",
    },
    "latency_sensitive": {
        True: "Latency sensitivity favours fine-tuning: a small tuned model with a short prompt answers faster.",
        False: "Latency is not critical, so long prompts are acceptable.",
    },
    "domain_jargon": {
        True: "Domain jargon favours fine-tuning, which teaches the model the vocabulary.",
        False: "Everyday language is well covered by general models.",
    },
    "strict_output_format": {
        True: "A strict output format favours fine-tuning, which makes the format reliable.",
        False: "A loose output format is easy to get from prompting.",
    },
    "requests_per_month": {
        "low": "At {v:,} requests a month a training run rarely pays back.",
        "medium": "At {v:,} requests a month the cost difference is small either way.",
        "high": "At {v:,} requests a month the shorter prompts of a tuned model pay back its training.",
    },
}


def _fail(factor: str, value: Any) -> TunewiseError:
    allowed = FACTOR_CHOICES[factor]
    if isinstance(allowed, tuple):
        expected = "one of " + ", ".join(allowed)
    else:
        expected = "a non-negative integer" if allowed is int else "true or false"
    return TunewiseError(f"factor '{factor}' must be {expected}; got {value!r}.")


@dataclass(frozen=True)
class Factors:
    """What is known about the situation; None means unknown (and gives no reason)."""

    labelled_examples: int | None = None
    budget: str | None = None
    time_to_deploy: str | None = None
    accuracy_need: str | None = None
    maintenance_capacity: str | None = None
    latency_sensitive: bool | None = None
    domain_jargon: bool | None = None
    strict_output_format: bool | None = None
    requests_per_month: int | None = None

    def __post_init__(self) -> None:
        for name, value in self.known().items():
            allowed = FACTOR_CHOICES[name]
            if isinstance(allowed, tuple):
                ok = value in allowed
            elif allowed is int:
                ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            else:
                ok = isinstance(value, bool)
            if not ok:
                raise _fail(name, value)

    def known(self) -> dict[str, Any]:
        """The factors that are not None, in declaration order."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class FactorReason:
    factor: str
    value: Any
    leans: Leaning
    sentence: str
    weight: int = 0


@dataclass(frozen=True)
class Advice:
    verdict: str
    reasons: tuple[FactorReason, ...]
    summary: str
    prompt_weight: int = 0
    fine_tune_weight: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _bucket(factor: str, value: Any) -> Any:
    """The key of ``WEIGHTS[factor]`` that a value falls in."""
    if factor == "labelled_examples":
        return "few" if value < MIN_EXAMPLES else "many" if value > MANY_EXAMPLES else "some"
    if factor == "requests_per_month":
        return "low" if value < LOW_VOLUME else "high" if value > HIGH_VOLUME else "medium"
    return value


def _reason(factor: str, value: Any) -> FactorReason:
    key = _bucket(factor, value)
    leans, weight = WEIGHTS[factor][key]
    return FactorReason(factor, value, leans, _SENTENCES[factor][key].format(v=value), weight)


def _weights(reasons: list[FactorReason], *, leaning: str) -> int:
    return sum(r.weight for r in reasons if r.leans == leaning)


def _needs_data(factors: Factors, requirements: list[FactorReason]) -> bool:
    wants_tuning = _weights(requirements, leaning="fine-tune") > _weights(requirements, leaning="prompt")
    count = factors.labelled_examples
    few = count < MIN_EXAMPLES if count is not None else factors.accuracy_need == "critical"
    return wants_tuning and few


def advise(factors: Factors) -> Advice:
    """The first move for this situation, with one reason per known factor."""
    reasons = [_reason(name, value) for name, value in factors.known().items()]
    requirements = [r for r in reasons if r.factor != "labelled_examples"]
    needs_data = _needs_data(factors, requirements)
    if needs_data:
        reasons = [_as_data_reason(r) for r in reasons]
    prompt_w, tune_w = _weights(reasons, leaning="prompt"), _weights(reasons, leaning="fine-tune")
    if needs_data:
        verdict = "collect data first"
    else:
        verdict = "fine-tune" if tune_w > prompt_w else "start with prompt engineering"
    summary = _summary(verdict, factors, prompt_w=prompt_w, tune_w=tune_w)
    return Advice(verdict, tuple(reasons), summary, prompt_weight=prompt_w, fine_tune_weight=tune_w)


def _as_data_reason(r: FactorReason) -> FactorReason:
    """When data is the blocker, the labelled-example count is the reason to collect more.

    Its weight becomes 0: the count is then a precondition, not a preference for prompting.
    """
    if r.factor != "labelled_examples":
        return r
    return FactorReason(r.factor, r.value, "data", _SENTENCES[r.factor]["data"].format(v=r.value), 0)


def _summary(verdict: str, factors: Factors, *, prompt_w: int, tune_w: int) -> str:
    if verdict == "collect data first":
        count = factors.labelled_examples
        have = "an unknown number of" if count is None else f"only {count:,}"
        return (
            f"The requirements point to fine-tuning (weight {tune_w} against {prompt_w}), but with {have} "
            f"labelled examples there is too little to train on or to measure with: label at least "
            f"{MIN_EXAMPLES} (ideally {MANY_EXAMPLES:,}+) while a prompt serves as a stopgap."
        )
    if verdict == "fine-tune":
        return (
            f"Fine-tune: the factors lean to fine-tuning by a weight of {tune_w} against {prompt_w}; "
            "measure a prompt baseline on the same test set first so the gain is known."
        )
    if tune_w == prompt_w == 0:
        why = "nothing known leans either way" if factors.known() else "nothing is known yet"
        return f"Start with prompt engineering: {why}, and it is the cheapest first step and gives a baseline."
    tie = " (a tie goes to the cheaper option)" if tune_w == prompt_w else ""
    return (
        f"Start with prompt engineering: the factors lean to prompting by a weight of {prompt_w} against "
        f"{tune_w}{tie}; fine-tune later only if measured prompts fall short."
    )
