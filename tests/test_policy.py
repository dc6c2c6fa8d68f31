"""The ladder policy: pure decisions (table-driven), early rejection's safety and savings, and the walk in run_task."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tunewise.backends.base import GenerationRequest, Message
from tunewise.evaluation.records import Prediction
from tunewise.evaluation.stats import proportion_metric
from tunewise.ladder.policy import (
    PRIOR_S_PER_EXAMPLE,
    Budget,
    Observed,
    PlannedRung,
    PolicyConfig,
    Pricing,
    estimate_cost,
    next_action,
    rung_family,
    screen_sizes,
    screen_subset,
    stratified_order,
    upper_bound,
)
from tunewise.results import RunResults
from tunewise.run import run_task
from tunewise.strategies.base import Candidate, register
from tunewise.task import load_task

from .test_run import write_task

CPU = Pricing(device="cpu", usd_per_second=0.10 / 3600)


def obs(name: str, family: str, correct, *, seconds: float = 10.0, examples: int | None = None) -> Observed:
    v = np.asarray(correct, dtype=bool)
    m = proportion_metric(v.astype(float))  # accuracy as scoring records it
    return Observed(name, family, "finished", value=m.value, low=m.low, high=m.high, correct=tuple(v.tolist()),
                    seconds=seconds, eval_seconds=seconds, examples=len(v) if examples is None else examples,
                    usd=seconds * CPU.usd_per_second, metric=m)


def vec(n: int, k: int, offset: int = 0) -> list[bool]:
    """n examples, k of them correct (starting at ``offset``, wrapping)."""
    out = [False] * n
    for i in range(k):
        out[(offset + i) % n] = True
    return out


LADDER = (PlannedRung("knn", "no_llm"), PlannedRung("zero_shot", "prompt_score", screenable=True),
          PlannedRung("role", "prompt_score", screenable=True),
          PlannedRung("few_shot", "prompt_score_demos", screenable=True),
          PlannedRung("lora", "tuned", train_example_epochs=1000, train_tokens=50_000))
SAME = vec(100, 50)

CASES = [
    # (id, observed, target, budget, config, ladder override, expected kind, expected rung, words in the reason)
    # 99/100 on a ladder of 5 rungs: its bound at one-sided 2.5% / 5 is 92.8%
    ("target met with confidence", {"knn": obs("knn", "no_llm", vec(100, 99))}, 0.9, Budget(), None, None,
     "stop", "knn", ["lower bound 92.8% adjusted for 5 candidates, Bonferroni at one-sided 99.5%", ">= target 90.0%",
                     "not run: zero_shot"]),
    # 97/100: its own 95% low (91.5%) clears 90%, but the best of 5 rungs needs the bound at one-sided 0.5%: 89.5%
    ("the best of several rungs needs the adjusted bound", {"knn": obs("knn", "no_llm", vec(100, 97))}, 0.9,
     Budget(), None, None, "run", "zero_shot", ["point estimate 97.0%", "lower bound 89.5% adjusted for 5 candidates",
                                                "does not"]),
    ("point estimate only keeps climbing", {"knn": obs("knn", "no_llm", vec(100, 92))}, 0.9, Budget(), None, None,
     "run", "zero_shot", ["point estimate 92.0%", "does not"]),
    ("plateau escalates to tuning", {"knn": obs("knn", "no_llm", vec(100, 40)),
                                     "zero_shot": obs("zero_shot", "prompt_score", SAME),
                                     "role": obs("role", "prompt_score", SAME)}, 0.9, Budget(),
     PolicyConfig(patience=1), None, "run", "lora", ["plateaued", "McNemar p", "goes before the remaining prompt "
                                                     "rung few_shot", "not skipped"]),
    # the wall is earned (issue 16.0): after the tuning rungs, the stronger prompt rung still runs
    ("after the tuning rungs the remaining prompt rungs run", {
        "knn": obs("knn", "no_llm", vec(100, 40)), "zero_shot": obs("zero_shot", "prompt_score", SAME),
        "role": obs("role", "prompt_score", SAME), "lora": obs("lora", "tuned", vec(100, 45))}, 0.9, Budget(),
     PolicyConfig(patience=1), None, "run", "few_shot", ["next cheapest"]),
    ("no plateau after a significant gain", {"zero_shot": obs("zero_shot", "prompt_score", vec(100, 30)),
                                            "knn": obs("knn", "no_llm", vec(100, 10)),
                                            "role": obs("role", "prompt_score", vec(100, 70))}, 0.9, Budget(),
     PolicyConfig(patience=1), None, "run", "few_shot", ["next cheapest"]),
    ("patience 2 needs two rungs without a gain", {"knn": obs("knn", "no_llm", vec(100, 40)),
                                                  "zero_shot": obs("zero_shot", "prompt_score", SAME),
                                                  "role": obs("role", "prompt_score", SAME)}, 0.9, Budget(),
     PolicyConfig(patience=2), None, "run", "few_shot", []),
    ("no escalation when tuning cannot run", {"knn": obs("knn", "no_llm", vec(100, 40)),
                                             "zero_shot": obs("zero_shot", "prompt_score", SAME),
                                             "role": obs("role", "prompt_score", SAME)}, 0.9, Budget(),
     PolicyConfig(patience=1), LADDER[:4] + (PlannedRung("lora", "tuned", blocked="needs a transformers model"),),
     "run", "few_shot", []),
    ("no escalation when tuning does not fit the budget", {"knn": obs("knn", "no_llm", vec(100, 40)),
                                                          "zero_shot": obs("zero_shot", "prompt_score", SAME),
                                                          "role": obs("role", "prompt_score", SAME)}, 0.9,
     Budget(hours=0.1), PolicyConfig(patience=1), None, "run", "few_shot", []),
    ("blocked rung is skipped with its reason", {"knn": obs("knn", "no_llm", vec(100, 40))}, None, Budget(), None,
     (LADDER[0], PlannedRung("lora", "tuned", blocked="fine-tuning needs a transformers model")),
     "skip", "lora", ["cannot run here", "transformers"]),
    ("over the time budget is skipped", {"knn": obs("knn", "no_llm", vec(100, 40))}, None, Budget(hours=0.01), None,
     None, "skip", "zero_shot", ["estimated 3.3 min", "26 s left", "budget_hours 0.01", "prior 2 s/example"]),
    ("over the money budget is skipped", {"knn": obs("knn", "no_llm", vec(100, 40))}, None, Budget(usd=0.001), None,
     None, "skip", "zero_shot", ["budget_usd 0.001"]),
    ("default tuning budget without budget_hours", {"knn": obs("knn", "no_llm", vec(100, 40))}, None, Budget(), None,
     (LADDER[0], PlannedRung("lora", "tuned", train_example_epochs=10_000, train_tokens=500_000)), "skip", "lora",
     ["default 0.5 h tuning budget", "500,000 tokens (10,000 example-epochs)", "prior 6.1 ms/token"]),
    ("spent budget stops", {"knn": obs("knn", "no_llm", vec(100, 40), seconds=40)}, None, Budget(hours=0.01), None,
     None, "stop", None, ["time budget is spent", "not run: zero_shot"]),
    ("everything tried stops", {r.name: obs(r.name, r.family, vec(100, 40)) for r in LADDER}, 0.9, Budget(), None,
     None, "stop", None, ["every rung", "best"]),
]


@pytest.mark.parametrize(("observed", "target", "budget", "config", "ladder", "kind", "rung", "words"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_next_action(observed, target, budget, config, ladder, kind, rung, words):
    action = next_action(ladder or LADDER, observed, target=target, metric="accuracy", budget=budget, n_test=100,
                         pricing=CPU, config=config or PolicyConfig())
    assert (action.kind, action.rung) == (kind, rung), action.reason
    for w in words:
        assert w in action.reason
    assert action.reason.count(". ") == 0  # one sentence


def test_a_plateau_skips_no_prompt_rung_it_only_puts_tuning_first():
    """Issue 16.0: the weak rungs' stall is no evidence about the stronger prompt rungs still to come."""
    observed = {"knn": obs("knn", "no_llm", vec(100, 40)), "zero_shot": obs("zero_shot", "prompt_score", SAME),
                "role": obs("role", "prompt_score", SAME)}
    action = next_action(LADDER, observed, target=0.9, metric="accuracy", budget=Budget(), n_test=100, pricing=CPU,
                         config=PolicyConfig(patience=1))
    assert action.kind == "run" and action.rung == "lora" and action.skipped == ()


def test_estimate_uses_measured_throughput_of_the_same_family():
    observed = {"zero_shot": obs("zero_shot", "prompt_score", vec(100, 50), seconds=50.0)}
    est = estimate_cost(PlannedRung("role", "prompt_score"), observed, 200, CPU)
    assert est.seconds == pytest.approx(100.0) and "measured 0.5 s/example on zero_shot" in est.basis
    prior = estimate_cost(PlannedRung("cot", "prompt_cot"), observed, 200, CPU)
    assert prior.seconds == pytest.approx(900.0) and "prior" in prior.basis
    tuned = estimate_cost(PlannedRung("lora", "tuned", train_example_epochs=1000, train_tokens=50_000), observed, 100,
                          CPU)
    assert tuned.seconds == pytest.approx(50_000 * 0.0061 + 100 * 1.0)  # training by tokens, then 100 test examples
    assert tuned.usd == pytest.approx(tuned.seconds * 0.10 / 3600)


def test_run_is_screened_only_when_a_finished_rung_exists():
    first = next_action(LADDER[1:], {}, target=None, metric="accuracy", budget=Budget(), n_test=160, pricing=CPU)
    assert first.kind == "run" and first.screen == ()
    after = next_action(LADDER, {"knn": obs("knn", "no_llm", vec(160, 100))}, target=None, metric="accuracy",
                        budget=Budget(), n_test=160, pricing=CPU)
    assert after.screen == (20, 40, 80) == screen_sizes(160)
    assert screen_sizes(40) == (10, 20)  # 1/8 of 40 is under the 8-example minimum


# --------------------------------------------------------------------------- early rejection


def test_stratified_order_gives_nested_stratified_prefixes():
    strata = ["a"] * 60 + ["b"] * 30 + ["c"] * 10
    ids = [f"x{i}" for i in range(100)]
    order = stratified_order(ids, strata, seed=3)
    assert sorted(order) == list(range(100)) and order == stratified_order(ids, strata, seed=3)
    for m in (10, 20, 50):
        counts = {s: sum(strata[i] == s for i in order[:m]) for s in "abc"}
        assert all(abs(counts[s] - m * share) <= 1 for s, share in {"a": 0.6, "b": 0.3, "c": 0.1}.items())


def test_upper_bound_is_clopper_pearson():
    assert upper_bound(0, 10, 0.01) == pytest.approx(1 - 0.01 ** (1 / 10))
    assert upper_bound(10, 10, 0.01) == 1.0 and upper_bound(0, 0, 0.01) == 1.0


def _screen_trials(acc_best: float, acc_rung: float, *, n: int = 320, trials: int = 200) -> tuple[int, float]:
    """Rejections of a rung with full-set accuracy ``acc_rung`` against a best rung of ``acc_best``; mean scored."""
    rng = np.random.default_rng(0)
    rejected, scored = 0, []
    for t in range(trials):
        best = rng.permutation(np.arange(n) < round(acc_best * n))
        rung = rng.permutation(np.arange(n) < round(acc_rung * n))  # the rung's full-set correctness
        low = proportion_metric(best.astype(float)).low  # the best rung's CI low as scoring records it
        order = stratified_order([str(i) for i in range(n)], [i % 4 for i in range(n)], seed=t)
        for size in [*screen_sizes(n), n]:
            sub = [bool(rung[i]) for i in order[:size]]
            if size < n and screen_subset("r", sub, best_name="b", best_low=low, n_test=n, calls=size,
                                          seconds=size, delta=PolicyConfig().look_delta) is not None:
                rejected += 1
                break
        scored.append(size)
    return rejected, float(np.mean(scored))


@pytest.mark.parametrize(("acc_best", "acc_rung"), [(0.6, 0.62), (0.8, 0.81), (0.5, 0.6), (0.9, 0.9), (0.3, 0.3)])
def test_early_rejection_never_drops_a_rung_that_would_win(acc_best, acc_rung):
    rejected, scored = _screen_trials(acc_best, acc_rung)
    assert rejected == 0 and scored == 320


@pytest.mark.parametrize(("acc_best", "acc_rung"), [(0.8, 0.3), (0.95, 0.5), (0.6, 0.1)])
def test_early_rejection_saves_compute_on_hopeless_rungs(acc_best, acc_rung):
    rejected, scored = _screen_trials(acc_best, acc_rung)
    assert rejected == 200 and scored <= 80  # dropped by the 1/4 look at the latest: >= 75% of the calls saved


def test_rejection_reason_carries_the_numbers_and_savings():
    action = screen_subset("cot", vec(20, 4), best_name="knn", best_low=0.9, n_test=160, calls=40, seconds=90.0)
    assert action.kind == "reject" and action.scored == 20
    assert action.saved_calls == pytest.approx(280) and action.saved_s == pytest.approx(630)
    assert "4/20" in action.reason and "knn" in action.reason and "280 model calls" in action.reason
    assert screen_subset("cot", vec(20, 15), best_name="knn", best_low=0.9, n_test=160, calls=40, seconds=9) is None


# --------------------------------------------------------------------------- the walk in run_task


def _h(*parts: object) -> float:
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:12], 16) / 16**12


@register("scripted")
def _prepare_scripted(rung, ctx) -> Candidate:
    """A test candidate with an exact scripted accuracy: right on the ``accuracy`` share of test examples."""
    return _Scripted(rung=rung.name, config={"strategy": "scripted", **rung.params}, uses_llm=rung.params.get("llm", True),
                     accuracy=float(rung.params["accuracy"]), labels=list(ctx.splits.labels),
                     test=[e.id for e in ctx.splits.test], latency=float(rung.params.get("latency", 0.01)))


class _Scripted(Candidate):
    def __init__(self, *, rung, config, uses_llm, accuracy, labels, test, latency=0.01):
        self.rung, self.config, self.uses_llm, self.extras, self.latency = rung, config, uses_llm, {}, latency
        ranked = sorted(test, key=lambda i: _h(rung, i))
        self.right = set(ranked[: round(accuracy * len(test))])
        self.labels = labels

    def predict(self, examples, *, backend):
        out = []
        for e in examples:
            if self.uses_llm:  # one real (cached, counted) model call per example
                backend.generate([GenerationRequest(prompt=(Message("user", f"{self.rung}: {e.text}"),))])
            wrong = next(lab for lab in self.labels if lab != e.target)
            label = e.target if e.id in self.right else wrong
            out.append(Prediction(example_id=e.id, output=label, raw=label, latency_s=self.latency))
        return out


def _scripted_task(tmp_path: Path, rungs: dict[str, float], *, n_test: int = 160, target: bool = False) -> Path:
    task = write_task(tmp_path, n_test=n_test)
    entries = ", ".join(f"{{name: {name}, strategy: scripted, params: {{accuracy: {acc}, llm: {str(i > 0).lower()}}}}}"
                        for i, (name, acc) in enumerate(rungs.items()))
    text = task.read_text()
    if not target:
        text = text.replace("target: {accuracy: 0.9}\n", "")
    task.write_text(text + f"rungs: [{entries}]\n")
    return task


def _calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_walk_rejects_hopeless_rungs_keeps_the_winner_and_reuses_screened_calls(tmp_path, monkeypatch):
    log = tmp_path / "calls.log"
    monkeypatch.setenv("TUNEWISE_FAKE_CALL_LOG", str(log))
    task = _scripted_task(tmp_path, {"base": 0.6, "hopeless": 0.2, "better": 0.75, "close": 0.58})
    outcome = run_task(load_task(task), policy=True, report=False)
    by = {r.name: r for r in outcome.results.rungs}
    assert by["base"].status == "finished" and by["hopeless"].status == "skipped"
    assert "rejected early" in by["hopeless"].reason
    assert by["better"].status == "finished" and by["better"].primary.value == pytest.approx(0.75)
    assert by["close"].status == "finished"  # slightly worse but within reach of the best: scored fully
    calls = _calls(log)
    unique = {c["prompt"] for c in calls}
    assert len(calls) == len(unique)  # screening then scoring fully never repeats a call (the call cache)
    # hopeless: 20 calls (1/8 of 160) instead of 160; better and close: 160 each (each request was its own call,
    # so no extra calls measure single-request latency)
    assert len(calls) == 20 + 160 + 160
    ladder = outcome.results.ladder
    assert ladder.mode == "policy" and ladder.early_rejection.rungs == ("hopeless",)
    assert ladder.early_rejection.saved_calls == pytest.approx(140)
    kinds = [(a.kind, a.rung) for a in ladder.actions]
    assert ("reject", "hopeless") in kinds and kinds[-1][0] == "stop"
    summary = outcome.summary_path.read_text()
    assert "## Ladder" in summary and "rejected early hopeless" in summary and "140 model calls" in summary
    data = json.loads(outcome.results_path.read_text())
    assert RunResults.from_json(data).ladder == ladder


def test_default_walk_does_not_claim_confidence_from_twenty_examples(tmp_path):
    # knn is right on all 20 test examples: the percentile bootstrap gave [100%, 100%] and the walk stopped "with
    # confidence" at the 90% target, but 20/20 has a 95% Clopper-Pearson low of 83%: the climb goes on
    outcome = run_task(load_task(write_task(tmp_path)), report=False)
    knn = outcome.results.rungs[0]
    assert knn.name == "knn" and knn.primary.value == 1.0 and knn.primary.low == pytest.approx(0.025 ** (1 / 20))
    assert [r.name for r in outcome.results.rungs][:2] == ["knn", "probe"]
    assert not any("with confidence" in a.reason for a in outcome.results.ladder.actions)


def test_early_rejection_only_measures_against_a_rung_that_meets_the_latency_constraint(tmp_path):
    """base (60%) answers in 1 s, over the 500 ms limit, so it cannot be shipped: 'hopeless' (20%, fast) cannot
    beat it but may still be the best option that can; it is scored fully, not rejected against base."""
    task = _scripted_task(tmp_path, {"base": 0.6, "hopeless": 0.2})
    text = task.read_text().replace("rungs: [{name: base, strategy: scripted, params: {accuracy: 0.6, llm: false}}",
                                    "rungs: [{name: base, strategy: scripted, params: {accuracy: 0.6, llm: false, "
                                    "latency: 1.0}}")
    task.write_text(text + "constraints: {max_latency_ms: 500}\n")
    outcome = run_task(load_task(task), policy=True, report=False)
    by = {r.name: r for r in outcome.results.rungs}
    assert by["hopeless"].status == "finished", by["hopeless"].reason
    assert outcome.decision.winner == "hopeless"


def test_default_walk_stops_when_the_target_is_met_with_confidence(tmp_path):
    # knn is perfect on the toy data: 80/80 has a lower bound of 92.7% adjusted for the 11 rungs of the ladder
    outcome = run_task(load_task(write_task(tmp_path, n_test=80)), report=False)
    assert [r.name for r in outcome.results.rungs] == ["knn"]
    stop = outcome.results.ladder.stop
    assert stop.kind == "stop" and "target met with confidence" in stop.reason and "lora" in stop.skipped
    assert outcome.results.status == "finished"


def test_default_walk_skips_tuning_on_a_fake_model_with_the_reason(tmp_path):
    task = write_task(tmp_path, n_test=40)
    test = tmp_path / "test.jsonl"  # a quarter of the test labels flipped: nothing meets the target
    rows = [json.loads(line) for line in test.read_text().splitlines()]
    for i, row in enumerate(rows):
        if i % 4 == 0:
            row["label"] = "top_up" if row["label"] != "top_up" else "card_arrival"
    test.write_text("".join(json.dumps(r) + "\n" for r in rows))
    outcome = run_task(load_task(task), report=False)
    by = {r.name: r for r in outcome.results.rungs}
    assert {"lora", "learning_curve"} <= set(by)
    for name in ("lora", "learning_curve"):
        assert by[name].status == "skipped" and "needs a transformers model" in by[name].reason
    assert outcome.results.status == "finished"


def test_named_rungs_run_as_a_fixed_list_without_the_policy(tmp_path):
    outcome = run_task(load_task(write_task(tmp_path)), rungs=["knn", "zero_shot", "lora"], report=False)
    assert [r.name for r in outcome.results.rungs] == ["knn", "zero_shot", "lora"]
    assert outcome.results.rungs[1].status == "finished"  # no stop although knn met the target
    assert outcome.results.rungs[2].status == "failed" and "transformers" in outcome.results.rungs[2].error
    assert outcome.results.ladder.mode == "fixed" and outcome.results.ladder.to_json() == {"mode": "fixed"}


def test_budget_skips_what_does_not_fit(tmp_path):
    task = write_task(tmp_path, n_test=40)
    text = task.read_text().replace("target: {accuracy: 0.9}\n", "")
    task.write_text(text + "constraints: {budget_hours: 0.01}\n")  # 36 s: the 2 s/example prior does not fit
    outcome = run_task(load_task(task), report=False)
    by = {r.name: r for r in outcome.results.rungs}
    assert by["knn"].status == "finished" and by["zero_shot"].status == "skipped"
    assert "budget_hours 0.01" in by["zero_shot"].reason
    assert outcome.results.ladder.budget.spent_s <= 36


def test_scoring_only_the_demonstrations_labels_is_its_own_cost_family():
    """few_shot_retrieved scores the <= 8 labels of its demonstrations, not all 77: pricing an optimized or
    few_shot_random rung (all labels) at its measured speed under-estimated the optimized rung on BANKING77 by
    several times (estimated from 0.25 s/example, it ran past the budget)."""
    from tunewise.ladder.catalogue import BUILTIN_RUNGS

    fam = {name: rung_family(BUILTIN_RUNGS[name].strategy, BUILTIN_RUNGS[name].params)
           for name in ("few_shot_random", "few_shot_balanced", "few_shot_retrieved", "optimized")}
    assert fam["few_shot_random"] == fam["few_shot_balanced"] == fam["optimized"] == "prompt_score_demos"
    assert fam["few_shot_retrieved"] == "prompt_score_demo_labels"
    assert PRIOR_S_PER_EXAMPLE["prompt_score_demo_labels"] < PRIOR_S_PER_EXAMPLE["prompt_score_demos"]
    retrieved = Observed("few_shot_retrieved", fam["few_shot_retrieved"], "finished", examples=308, eval_seconds=78.0)
    est = estimate_cost(PlannedRung("optimized", fam["optimized"], search_calls=400), {"few_shot_retrieved": retrieved},
                        308, {None: Pricing(usd_per_second=0.0)})
    assert "prior" in est.basis and est.seconds == pytest.approx(PRIOR_S_PER_EXAMPLE["prompt_score_demos"] * 708)


def test_a_generation_metrics_scores_reach_the_plateau_rule_as_scores():
    """observe() turned per-example scores into bools, so on a chrF task every non-empty answer was 'correct' and
    few_shot_random (chrF 0.43) looked no better than zero_shot (0.25): the snips_nlg benchmark escalated to LoRA on
    a plateau that was not there, before few_shot_retrieved ran."""
    from types import SimpleNamespace

    from tunewise.costs import load_prices
    from tunewise.ladder.planning import observe
    from tunewise.ladder.policy import plateau

    rng = np.random.default_rng(0)
    zero, role = rng.uniform(0.1, 0.4, 140), rng.uniform(0.1, 0.4, 140)
    random_demos = np.clip(zero + 0.18 + rng.normal(0, 0.05, 140), 0, 1)
    observed = {}
    for name, scores in (("zero_shot", zero), ("role", role), ("few_shot_random", random_demos)):
        result = SimpleNamespace(name=name, status="finished", usage={}, prepare_s=0.0, extras={},
                                 primary=proportion_metric(np.round(scores)))
        result.primary = result.primary.__class__(float(scores.mean()), 0.0, 1.0, 140, "test")
        observed[name] = observe(result, "prompt_generate", pricing=Pricing(usd_per_second=0.0), model="fake:x",
                                 prices=load_prices(), correct=scores)
        assert observed[name].correct == tuple(float(s) for s in scores)
    ladder = [PlannedRung(n, "prompt_generate") for n in observed]
    assert plateau(ladder, observed) is None  # few_shot_random is significantly better: no plateau
    ladder[2] = PlannedRung("few_shot_random", "prompt_generate")
    observed["few_shot_random"] = replace(observed["role"], name="few_shot_random")
    said = plateau(ladder, observed)
    assert said is not None and "Wilcoxon p = " in said and "McNemar" not in said
