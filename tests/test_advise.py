"""The decision matrix: a table of situations and the first move each should get."""

from __future__ import annotations

import re
from dataclasses import fields

import pytest

from tunewise.advise import (
    FACTOR_CHOICES,
    FACTOR_HELP,
    VERDICTS,
    WEIGHTS,
    Advice,
    Factors,
    advise,
)
from tunewise.errors import TunewiseError

PROMPT, TUNE, DATA = VERDICTS

CASES = [
    pytest.param({}, PROMPT, id="nothing-known"),
    pytest.param({"labelled_examples": 20, "budget": "low", "time_to_deploy": "days"}, PROMPT, id="startup-mvp"),
    pytest.param(
        {"labelled_examples": 50_000, "accuracy_need": "critical", "domain_jargon": True,
         "strict_output_format": True, "requests_per_month": 5_000_000, "maintenance_capacity": "high"},
        TUNE, id="high-volume-specialist",
    ),
    pytest.param(
        {"labelled_examples": 40, "accuracy_need": "critical", "domain_jargon": True, "strict_output_format": True},
        DATA, id="needs-tuning-but-no-data",
    ),
    pytest.param({"accuracy_need": "critical", "domain_jargon": True}, DATA, id="unknown-count-critical"),
    pytest.param({"accuracy_need": "high", "domain_jargon": True}, TUNE, id="unknown-count-high-need"),
    pytest.param({"labelled_examples": 5_000}, TUNE, id="lots-of-data-only"),
    pytest.param({"labelled_examples": 500}, PROMPT, id="some-data-only-is-a-tie"),
    pytest.param(
        {"labelled_examples": 2_000, "budget": "low", "time_to_deploy": "days", "maintenance_capacity": "low"},
        PROMPT, id="data-but-no-resources",
    ),
    pytest.param({"latency_sensitive": True, "budget": "medium"}, TUNE, id="latency-only"),
    pytest.param({"latency_sensitive": True, "maintenance_capacity": "low"}, PROMPT, id="tie-goes-to-prompting"),
    pytest.param(
        {"labelled_examples": 300, "accuracy_need": "moderate", "requests_per_month": 10_000,
         "latency_sensitive": False, "domain_jargon": False, "strict_output_format": False},
        PROMPT, id="internal-tool",
    ),
    pytest.param(
        {"labelled_examples": 800, "time_to_deploy": "months", "strict_output_format": True,
         "requests_per_month": 2_000_000},
        TUNE, id="structured-high-volume",
    ),
    pytest.param(
        {"labelled_examples": 90, "accuracy_need": "moderate", "domain_jargon": True}, PROMPT,
        id="few-examples-requirements-tied",
    ),
    pytest.param({"labelled_examples": 0, "strict_output_format": True}, DATA, id="zero-examples-strict-format"),
]


@pytest.mark.parametrize(("known", "verdict"), CASES)
def test_verdicts(known: dict, verdict: str) -> None:
    advice = advise(Factors(**known))
    assert advice.verdict == verdict, advice.summary


@pytest.mark.parametrize(("known", "verdict"), CASES)
def test_one_reason_per_known_factor(known: dict, verdict: str) -> None:
    advice = advise(Factors(**known))
    assert sorted(r.factor for r in advice.reasons) == sorted(known)  # exactly one each
    for reason in advice.reasons:
        assert reason.value == known[reason.factor]
        assert reason.leans in {"prompt", "fine-tune", "data", "neutral"}
        assert reason.sentence.endswith(".")
    assert advice.summary.endswith(".")


def test_collect_data_reason_leans_to_data() -> None:
    advice = advise(Factors(labelled_examples=40, accuracy_need="critical", domain_jargon=True))
    count_reason = next(r for r in advice.reasons if r.factor == "labelled_examples")
    assert count_reason.leans == "data"
    assert "only 40 labelled examples" in advice.summary


def test_weights_are_reported() -> None:
    advice = advise(Factors(labelled_examples=5_000, budget="low", latency_sensitive=True))
    assert (advice.fine_tune_weight, advice.prompt_weight) == (3, 2)
    assert advice.verdict == TUNE
    assert "3 against 2" in advice.summary


def test_thresholds_at_the_boundaries() -> None:
    leans = lambda **kw: advise(Factors(**kw)).reasons[0].leans  # noqa: E731
    assert leans(labelled_examples=99) == "prompt"
    assert leans(labelled_examples=100) == "neutral"
    assert leans(labelled_examples=1_000) == "neutral"
    assert leans(labelled_examples=1_001) == "fine-tune"
    assert leans(requests_per_month=1_000_001) == "fine-tune"
    assert leans(requests_per_month=99_999) == "prompt"


def test_factor_choices_cover_every_factor() -> None:
    names = [f.name for f in fields(Factors)]
    assert list(FACTOR_CHOICES) == names
    assert set(FACTOR_HELP) == set(names) == set(WEIGHTS)
    for name, allowed in FACTOR_CHOICES.items():
        if isinstance(allowed, tuple):
            assert set(WEIGHTS[name]) == set(allowed)
            for value in allowed:  # every choice gives a reason
                assert advise(Factors(**{name: value})).reasons[0].factor == name


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"budget": "huge"}, "factor 'budget' must be one of low, medium, high; got 'huge'."),
        ({"labelled_examples": -1}, "factor 'labelled_examples' must be a non-negative integer; got -1."),
        ({"labelled_examples": True}, "non-negative integer"),
        ({"latency_sensitive": "yes"}, "factor 'latency_sensitive' must be true or false; got 'yes'."),
    ],
)
def test_invalid_factors_are_user_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(TunewiseError, match=re.escape(message)):
        Factors(**kwargs)


def test_advice_serialises() -> None:
    advice = advise(Factors(labelled_examples=20, budget="low"))
    assert isinstance(advice, Advice)
    data = advice.to_json()
    assert data["verdict"] == PROMPT
    assert data["reasons"][0] == {
        "factor": "labelled_examples", "value": 20, "leans": "prompt", "weight": 2,
        "sentence": "20 labelled examples are enough for few-shot prompts but too few to fine-tune on.",
    }
