"""Prompt rungs: template safety, demonstration selection, parsing, and the strategy on the fake backend."""

from __future__ import annotations

from collections import Counter

import pytest

from tunewise.backends.fake import FakeBackend
from tunewise.data import Example, Splits
from tunewise.errors import TaskSpecError
from tunewise.prompts import PromptTemplate, default_template, render
from tunewise.strategies.base import PrepareContext, get_strategy
from tunewise.strategies.parsing import parse_json, parse_label, split_reasoning
from tunewise.strategies.prompting import select_demos
from tunewise.task import DataSpec, RungSpec, TaskSpec

LABELS = ["card_arrival", "card_linking", "exchange_rate"]


def _ex(i: int, label: str, text: str | None = None) -> Example:
    return Example(id=f"train-{i}", text=text or f"query {i} about {label}", target=label)


def _splits(n_per_label: int = 4) -> Splits:
    train = tuple(_ex(i * 10 + j, lab) for j, lab in enumerate(LABELS) for i in range(n_per_label))
    test = tuple(Example(id=f"test-{j}", text=f"where is my {lab}", target=lab) for j, lab in enumerate(LABELS))
    return Splits(train=train, dev=train[:3], test=test, labels=tuple(LABELS), data_hash="h", dev_origin="test")


def _spec(tmp_path, kind="classification") -> TaskSpec:
    return TaskSpec(kind=kind, data=DataSpec(train=tmp_path / "t.jsonl", test=tmp_path / "s.jsonl"), base_dir=tmp_path)


@pytest.mark.parametrize("nasty", ["{{ 7 * 7 }}", "{% for x in range(3) %}x{% endfor %}", "{{ labels }}", "{# c #}"])
def test_data_is_never_evaluated_as_template_code(nasty):
    template = default_template("classification")
    variables = {"role": "r", "instructions": "i", "labels": LABELS, "schema": "", "reasoning": ""}
    msgs = render(template, query=f"before {nasty} after", demos=[(f"demo {nasty}", "card_arrival")],
                  variables=variables)
    assert msgs[-1].content == f"Input: before {nasty} after"
    assert msgs[1].content == f"Input: demo {nasty}"
    assert "49" not in msgs[-1].content


def test_instructions_with_braces_stay_literal():
    variables = {"role": "{{ 1 + 1 }}", "instructions": "{% raw %}", "labels": LABELS, "schema": "", "reasoning": ""}
    system = render(default_template("classification"), query="q", variables=variables)[0].content
    assert "{{ 1 + 1 }}" in system and "{% raw %}" in system


def test_bad_user_template_is_one_sentence_error():
    with pytest.raises(TaskSpecError, match="not valid Jinja"):
        render(PromptTemplate(system="{% if %}"), query="q", variables={})


def test_balanced_demos_cover_labels_round_robin():
    demos = select_demos(_splits().train, k=6, selection="balanced", seed=1)
    assert Counter(d.target for d in demos) == Counter({lab: 2 for lab in LABELS})


def test_random_demos_are_seeded_and_from_train():
    train = _splits().train
    a = select_demos(train, k=5, selection="random", seed=3)
    assert a == select_demos(train, k=5, selection="random", seed=3)
    assert a != select_demos(train, k=5, selection="random", seed=4)
    assert all(d in train for d in a)


@pytest.mark.parametrize(
    ("text", "label", "rule"),
    [
        ("card_arrival", "card_arrival", "exact"),
        ("Card arrival.", "card_arrival", "normalized"),
        ("The intent is exchange rate, I think", "exchange_rate", "contained"),
        ("card_arival", "card_arrival", "fuzzy"),
        ("no idea", None, "none"),
        ("Reasoning here.\nAnswer: card_linking", "card_linking", "exact"),
    ],
)
def test_parse_label(text, label, rule):
    assert parse_label(text, LABELS) == (label, rule)


def test_parse_json_and_schema():
    schema = {"type": "object", "required": ["intent"]}
    assert parse_json('Sure: ```json\n{"intent": "X"}\n```', schema) == ({"intent": "X"}, None)
    assert parse_json("nothing")[0] is None
    obj, err = parse_json('{"slots": []}', schema)
    assert obj == {"slots": []} and "schema" in err
    assert split_reasoning("because.\nAnswer: yes") == ("because.", "yes")


@pytest.mark.parametrize("params", [
    {"mode": "score", "calibrate": True},
    {"mode": "generate"},
    {"mode": "score", "k": 3, "selection": "balanced"},
    {"mode": "score", "k": 2, "selection": "retrieved", "choices": "demos"},
    {"mode": "cot"},
])
def test_prompt_strategy_predicts_every_example(tmp_path, params):
    from tunewise.embeddings import HashingEmbedder

    emb = HashingEmbedder()
    backend = FakeBackend("fake:random")
    ctx = PrepareContext(spec=_spec(tmp_path), splits=_splits(), backend=backend, embed=emb.embed, seed=0)
    program = get_strategy("prompt")(RungSpec(name="r", strategy="prompt", params=params), ctx)
    preds = program.predict(_splits().test, backend=backend)
    assert [p.example_id for p in preds] == [e.id for e in _splits().test]
    assert all(p.output in LABELS for p in preds)
    assert program.config["demonstration_source"] == "train split only"
    for demo in program.config["demonstrations"]:
        assert demo["text"] in {e.text for e in _splits().train}


def test_retrieved_demos_are_nearest_training_examples(tmp_path):
    from tunewise.embeddings import HashingEmbedder

    splits = _splits()
    ctx = PrepareContext(spec=_spec(tmp_path), splits=splits, backend=FakeBackend("fake:random"),
                         embed=HashingEmbedder().embed, seed=0)
    program = get_strategy("prompt")(
        RungSpec(name="r", strategy="prompt", params={"k": 2, "selection": "retrieved"}), ctx)
    demos = program.retriever(["query 12 about exchange_rate"])[0]
    assert demos[-1] == ("query 12 about exchange_rate", "exchange_rate")  # most similar last


def test_unknown_prompt_parameter_is_named(tmp_path):
    ctx = PrepareContext(spec=_spec(tmp_path), splits=_splits(), backend=FakeBackend("fake:random"), seed=0)
    with pytest.raises(TaskSpecError, match="unknown parameter 'shots'"):
        get_strategy("prompt")(RungSpec(name="r", strategy="prompt", params={"shots": 3}), ctx)


def test_single_candidate_label_is_answered_without_a_model_call_and_counted(tmp_path):
    """Retrieved demonstrations that all share one label leave one candidate: no call, and usage says so."""
    import math

    from tunewise.evaluation.evaluator import usage_summary

    class OneLabelRetriever:
        def __call__(self, texts):
            return [[("a", "card_linking"), ("b", "card_linking")] if "card" in t
                    else [("c", "exchange_rate"), ("d", "card_arrival")] for t in texts]

    backend = FakeBackend("fake:random")
    ctx = PrepareContext(spec=_spec(tmp_path), splits=_splits(), backend=backend, seed=0,
                         embed=lambda texts: [[1.0]] * len(texts))
    program = get_strategy("prompt")(RungSpec(name="r", strategy="prompt", params={
        "mode": "score", "k": 2, "selection": "retrieved", "choices": "demos"}), ctx)
    program.retriever = OneLabelRetriever()
    preds = program.predict(_splits().test, backend=backend)  # two "card" queries, one "exchange_rate"
    assert [p.model_call for p in preds] == [False, False, True]
    assert [p.output for p in preds[:2]] == ["card_linking", "card_linking"]
    assert preds[0].latency_s == 0 and preds[0].prompt_tokens == 0
    usage = usage_summary(preds, wall_s=1.0)
    assert usage["without_model_call"] == 2 and usage["requests"] == 3
    assert math.isclose(usage["called_request_latency_s"]["p50"], preds[2].latency_s / preds[2].batch_size)
    assert "without_model_call" not in usage_summary(preds[2:], wall_s=1.0)


def test_chain_of_thought_counts_the_tokens_of_both_calls(tmp_path):
    """On a backend without log-probabilities (an API model), chain of thought makes two calls per example:
    the reasoning and the constrained answer. The rung's usage must carry both, or its cost is understated."""

    class NoScores(FakeBackend):
        def __init__(self) -> None:
            super().__init__("fake:random")
            self.can_score = False
            self.seen: list = []

        def generate(self, requests):
            out = super().generate(requests)
            self.seen.extend(out)
            return out

    backend = NoScores()
    ctx = PrepareContext(spec=_spec(tmp_path), splits=_splits(), backend=backend, seed=0)
    program = get_strategy("prompt")(RungSpec(name="cot", strategy="prompt", params={"mode": "cot"}), ctx)
    backend.seen.clear()
    preds = program.predict(list(_splits().test), backend=backend)
    assert len(backend.seen) == 2 * len(preds)  # reasoning, then the answer
    assert sum(p.prompt_tokens for p in preds) == sum(g.prompt_tokens for g in backend.seen)
    assert sum(p.completion_tokens for p in preds) == sum(g.completion_tokens for g in backend.seen)
