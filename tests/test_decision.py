"""The decision on synthetic results, with the expected answers worked out by hand.

Rungs are written as ``results.json`` holds them and read into the typed records the decision takes
(``RunResults.from_json``), as ``tunewise report`` does.

Prices are chosen so the arithmetic is easy: a cpu device-hour costs $3.60 ($0.001 a second), so a
self-hosted rung measured at ``eps`` examples per second costs 0.001 / eps per request, i.e.
$1 / eps per 1,000 requests, when the device's hours are paid for only while it serves: ``spec()`` states
that utilisation (1.0) unless a test says otherwise; ``utilisation=None`` is a dedicated always-on instance.
"""

from __future__ import annotations

import json

import pytest

from tunewise.costs import DAYS_PER_MONTH, ApiPrice, Prices
from tunewise.decision import decide, rung_kind
from tunewise.ladder.policy import family_kind, rung_family
from tunewise.results import RungResult, RunResults
from tunewise.task import TaskSpec

PRICES = Prices(device_hour={"cpu": 3.6, "cuda": 36.0}, api={"m": ApiPrice(input=1.0, output=2.0)})


def rung(name: str, strategy: str = "prompt", *, acc: tuple[float, float, float] = (0.92, 0.91, 0.93),
         eps: float = 1.0, p95: float = 0.2, prompt_tokens: float = 100, training: dict | None = None,
         curve: dict | None = None, config: dict | None = None, status: str = "finished",
         prepare_s: float = 0.0, metric: dict | None = None) -> dict:
    """A minimal finished rung as ``results.json`` holds it; ``acc`` is (value, low, high) on 300 examples, or
    ``metric`` the whole stored metric."""
    value, low, high = acc
    extras = {k: v for k, v in (("training", training), ("curve", curve)) if v}
    return {
        "name": name, "strategy": strategy, "status": status, "config": config or {}, "primary_metric": "accuracy",
        "metrics": {"accuracy": metric or {"value": value, "low": low, "high": high, "n": 300, "method": "test"}},
        "usage": {"requests": 300, "prompt_tokens": {"mean": prompt_tokens}, "completion_tokens": {"mean": 1.0},
                  "cached_prompt_tokens": {"mean": 0.0}, "latency_s": {"p50": p95 / 2, "p95": p95},
                  "examples_per_s": eps},
        "prepare_s": prepare_s, "extras": extras,
    }


#: what a stored comparison holds besides the rungs, the difference and its interval, the p-value and the verdict
COMPARISON = {"n": 300, "accuracy_a": 0.0, "accuracy_b": 0.0, "b01": 0, "b10": 0, "p_value": 1.0, "alpha": 0.05,
              "verdict": "not significantly different", "decided_by": "both", "explanation": ""}


def results(*rungs: dict, comparisons: list | None = None) -> RunResults:
    """The typed results of a run with these rungs (a rung without a strategy: a prompt rung)."""
    return RunResults.from_json({
        "run_id": "r", "task": {}, "data": {}, "checks": {}, "rungs": [{"strategy": "prompt", **r} for r in rungs],
        "comparisons": [{**COMPARISON, **c} for c in comparisons or []], "environment": {}})


def spec(target: float | None = 0.9, **constraints) -> dict:
    constraints.setdefault("utilisation", 1.0)
    return {"kind": "classification", "model": "local:tiny", "target": {"accuracy": target} if target else {},
            "constraints": {k: v for k, v in constraints.items() if v is not None}}


def tuned(name: str = "lora", *, usd: float = 300.0, **kw) -> dict:
    """A fine-tuned rung whose training cost ``usd``: 3 device-hours at the rung's own price of usd / 3."""
    record = {"device": "cpu", "device_hours": 3.0, "device_hour_usd": usd / 3, "wall_s": 3600.0,
              "price_source": "rung setting device_hour_usd"}
    return rung(name, "finetune", training=record, **kw)


CONFIDENT, POINT, MISS = (0.92, 0.91, 0.93), (0.91, 0.88, 0.94), (0.80, 0.75, 0.85)

WINNER_CASES = [
    # probe $0.25/1k (eps 4) and few_shot $1/1k both meet 90% with confidence: the cheaper wins
    pytest.param([rung("probe", "probe", eps=4), rung("few_shot", acc=(0.95, 0.93, 0.97))], spec(),
                 "probe", "few_shot", "target met with confidence", id="cheapest-confident"),
    pytest.param([rung("probe", "probe", acc=POINT, eps=4), rung("zero_shot", acc=MISS, eps=8)], spec(),
                 "probe", "zero_shot", "target met on the point estimate only", id="point-estimate-only"),
    # a confident rung beats a cheaper point-estimate one
    pytest.param([rung("probe", "probe", acc=POINT, eps=4), rung("few_shot", acc=CONFIDENT)], spec(),
                 "few_shot", "probe", "target met with confidence", id="confidence-before-price"),
    # nobody meets 90%: the best quality (85% > 80%) wins although dearer
    pytest.param([rung("probe", "probe", acc=MISS, eps=4), rung("few_shot", acc=(0.85, 0.8, 0.9))], spec(),
                 "few_shot", "probe", "target not met", id="no-rung-meets-target"),
    # probe is cheaper but its p95 of 800 ms breaks the 500 ms limit
    pytest.param([rung("probe", "probe", eps=4, p95=0.8), rung("few_shot", p95=0.3)], spec(max_latency_ms=500),
                 "few_shot", "probe", "target met with confidence", id="latency-excludes-cheaper"),
    # lora ($0.10/1k) is cheapest per request but its $300 training exceeds the $100 budget
    pytest.param([tuned(eps=10), rung("few_shot")], spec(budget_usd=100), "few_shot", "lora",
                 "target met with confidence", id="budget-excludes-tuned"),
    # same $0.50/1k: one-off decides; b's 1,000 s of preparation at $3.60/h cost $1.00
    pytest.param([rung("b", eps=2, prepare_s=1000), rung("a", eps=2, p95=0.9)], spec(), "a", "b",
                 "target met with confidence", id="tie-one-off"),
    # same cost and one-off: the lower p95 latency wins
    pytest.param([rung("a", eps=2, p95=0.9), rung("b", eps=2, p95=0.1)], spec(), "b", "a",
                 "target met with confidence", id="tie-latency"),
    pytest.param([rung("b", eps=2), rung("a", eps=2)], spec(), "a", "b", "target met with confidence", id="tie-name"),
    pytest.param([rung("probe", "probe", eps=4, p95=0.8), rung("few_shot", p95=0.9)], spec(max_latency_ms=500),
                 None, None, "no option meets the constraints", id="all-violate"),
    pytest.param([rung("x", status="failed"), rung("y", status="skipped")], spec(), None, None, "no finished rung",
                 id="nothing-finished"),
    # no target: the best quality that meets the constraints
    pytest.param([rung("probe", "probe", acc=MISS, eps=4), rung("few_shot", acc=POINT)], spec(None), "few_shot",
                 "probe", "no target set", id="no-target"),
]


@pytest.mark.parametrize(("rungs", "task", "winner", "runner_up", "status"), WINNER_CASES)
def test_winner(rungs, task, winner, runner_up, status):
    d = decide(results(*rungs), task, PRICES)
    assert (d.winner, d.runner_up, d.status) == (winner, runner_up, status)


@pytest.mark.parametrize(("acc", "meets"), [
    ((0.92, 0.90, 0.94), "with confidence"),  # low == target counts
    ((0.90, 0.87, 0.93), "point estimate only"),  # value == target
    ((0.89, 0.86, 0.92), "no"),
])
def test_meets_target(acc, meets):
    (option,) = decide(results(rung("r", acc=acc)), spec(0.9), PRICES).options
    assert option.meets_target == meets


def proportion(k: int, n: int) -> dict:
    """An accuracy of k/n as scoring stores it: the exact 95% Clopper-Pearson interval."""
    from scipy.stats import beta

    low, high = beta.ppf(0.025, k, n - k + 1) if k else 0.0, beta.ppf(0.975, k + 1, n - k) if k < n else 1.0
    return {"value": k / n, "low": float(low), "high": float(high), "n": n, "method": "Clopper-Pearson exact, 95%"}


def test_with_confidence_accounts_for_picking_the_best_of_the_candidates():
    # Five rungs on 100 examples. The best, 97/100, has its own 95% low at 91.5%, above the 90% target; but the
    # best of five clears the target with confidence only if its bound at one-sided 2.5% / 5 = 0.5% does: 89.5%.
    others = [rung(f"r{i}", metric=proportion(80, 100)) for i in range(4)]
    d = decide(results(rung("best", metric=proportion(97, 100)), *others), spec(0.9), PRICES)
    assert (d.winner, d.status) == ("best", "target met on the point estimate only")
    # 99/100: 92.8% at one-sided 0.5% clears it, and the reason says the bound is adjusted
    d = decide(results(rung("best", metric=proportion(99, 100)), *others), spec(0.9), PRICES)
    assert (d.winner, d.status) == ("best", "target met with confidence")
    assert "adjusted for 5 candidates" in d.reasons[0] and "92.8%" in d.reasons[0]


def test_a_policy_run_counts_the_rungs_its_stop_left_unrun():
    # the walk could have stopped at any rung of its ladder, so those its stop skipped are candidates too
    stop = {"kind": "stop", "rung": "best", "reason": "target met with confidence", "skipped": ["a", "b", "c", "d"]}
    data = {**results(rung("best", metric=proportion(99, 100))).to_json(),
            "ladder": {"mode": "policy", "actions": [stop]}}
    d = decide(RunResults.from_json(data), spec(0.9), PRICES)
    assert d.status == "target met with confidence" and "adjusted for 5 candidates" in d.reasons[0]
    (option,) = d.options
    assert option.confident_low == pytest.approx(0.928, abs=5e-4)  # Clopper-Pearson's 99/100 at one-sided 0.5%
    alone = decide(results(rung("best", metric=proportion(99, 100))), spec(0.9), PRICES)
    assert alone.options[0].confident_low == pytest.approx(proportion(99, 100)["low"])  # one candidate: the 95% low


def test_option_numbers():
    d = decide(results(rung("probe", "probe", eps=4, p95=0.25, prepare_s=36)), spec(max_latency_ms=300), PRICES)
    (o,) = d.options
    assert o.kind == "no_llm" and o.per_1k_usd == pytest.approx(0.25)  # 3.6 / 3600 / 4 * 1000
    assert o.one_off_usd == pytest.approx(0.036)  # 36 s / 3600 * 3.6
    assert (o.latency_p50_ms, o.latency_p95_ms) == pytest.approx((125.0, 250.0))
    assert o.meets_constraints and o.constraint_checks == ("p95 latency 250 ms <= max_latency_ms 300",)
    assert o.deploy_hours == 2.0 and o.monthly_usd is None


def test_excluded_rung_is_explained():
    d = decide(results(rung("probe", "probe", eps=4, p95=0.8), rung("few_shot", p95=0.3)), spec(max_latency_ms=500),
               PRICES)
    assert "probe is excluded: p95 latency 800 ms exceeds max_latency_ms 500." in d.reasons


def test_next_step_when_target_met():
    d = decide(results(rung("probe", "probe", eps=4), rung("few_shot")), spec(requests_per_month=100_000), PRICES)
    # $0.25 per 1,000 x 100 = $25.00 a month
    # the stored 95% low (91%) with its lower half-width stretched by z(1 - 0.025 / 2) / z(1 - 0.025): 90.9%
    assert d.next_step == ("Use probe: 92.0% [91.0, 93.0] meets the 90% accuracy target with confidence (lower bound "
                           "90.9% adjusted for 2 candidates, Bonferroni at one-sided 98.75%), at $0.25 per 1,000 "
                           "requests, about $25.00 a month at 100,000 requests.")


def curve_rung(status: str, n_needed: float | None, message: str) -> dict:
    forecast = {"status": status, "n_needed": n_needed, "n_low": None, "n_high": None, "message": message}
    return rung("learning_curve", "learning_curve", acc=MISS, eps=10, config={"of": "finetune"},
                curve={"points": [{"n": 100}, {"n": 400}, {"n": 250}], "forecast": forecast})


NEXT_STEP_CASES = [
    # 1,200 needed, 400 in the largest point: about 800 more
    pytest.param([curve_rung("forecast", 1200.0, "About 1,200 labelled examples are forecast.")],
                 "Collect about 800 more labelled examples (forecast: About 1,200", id="forecast"),
    pytest.param([curve_rung("out_of_reach", None, "The target looks out of reach: the fitted ceiling is 85%.")],
                 "try a larger base model", id="out-of-reach"),
    pytest.param([], "Try LoRA fine-tuning (rung lora)", id="no-tuned-rung"),
    pytest.param([tuned(acc=MISS)], "Run a learning curve", id="tuned-without-curve"),
]


@pytest.mark.parametrize(("extra", "expected"), NEXT_STEP_CASES)
def test_next_step_when_target_missed(extra, expected):
    d = decide(results(rung("few_shot", acc=(0.85, 0.8, 0.9)), *extra), spec(), PRICES)
    assert d.status == "target not met"
    assert d.next_step.startswith("The 90% accuracy target is not met (best: few_shot at 85.0% [80.0, 90.0]).")
    assert expected in d.next_step


def test_break_even_between_best_prompt_and_best_tuned():
    # prompt $2.00/1k (eps 0.5), lora $0.50/1k (eps 2) + $300: 300 / 12 / (1.5 / 1000) = 16,666.67 a month
    rungs = [rung("few_shot", eps=0.5, prompt_tokens=400), tuned(eps=2, prompt_tokens=50),
             rung("zero_shot", eps=0.25, acc=MISS)]
    d = decide(results(*rungs), spec(requests_per_month=50_000), PRICES)
    assert d.winner == "lora"  # cheaper per request, budget unconstrained
    be = d.break_even
    assert (be["prompt"], be["tuned"]) == ("few_shot", "lora")
    assert be["requests_per_month"] == pytest.approx(300 / 12 / 0.0015)
    assert be["token_savings"]["saved"] == 350 and be["token_savings"]["share"] == pytest.approx(0.875)
    assert ("lora costs less than few_shot over 12 months above 16,667 requests a month ($2.00 vs $0.50 per 1,000 "
            "requests, $300.00 one-off); at 50,000 requests a month tuning is cheaper.") in d.reasons
    assert "lora uses 350 fewer prompt tokens per request than few_shot (50 vs 400, 88% saved)." in d.reasons
    monthly = {o.name: o.monthly_usd for o in d.options}
    assert monthly["few_shot"] == pytest.approx(100.0) and monthly["lora"] == pytest.approx(25.0)  # 50,000 x rate


def test_retraining_moves_break_even():
    # retraining monthly adds $300 a month: (300 / 12 + 300) / 0.0015 = 216,666.67
    d = decide(results(rung("few_shot", eps=0.5), tuned(eps=2)), spec(), PRICES, retrain_every_days=DAYS_PER_MONTH)
    assert d.break_even["requests_per_month"] == pytest.approx(325 / 0.0015)


def test_break_even_never_when_tuned_is_dearer():
    d = decide(results(rung("few_shot", eps=4), tuned(eps=1)), spec(), PRICES)
    assert d.break_even["requests_per_month"] is None
    assert any(r.startswith("lora never pays back against few_shot") for r in d.reasons)


def test_pareto_frontier():
    # a (90%, $1/1k, 100 ms), b (95%, $2/1k, 100 ms); c (85%, $2/1k, 200 ms) is dominated by both;
    # d ties a exactly, so neither dominates the other and both stay on the frontier
    rungs = [rung("a", acc=(0.9, 0.85, 0.95), eps=1, p95=0.1), rung("b", acc=(0.95, 0.9, 0.99), eps=0.5, p95=0.1),
             rung("c", acc=(0.85, 0.8, 0.9), eps=0.5, p95=0.2), rung("d", acc=(0.9, 0.85, 0.95), eps=1, p95=0.1)]
    assert decide(results(*rungs), spec(None), PRICES).pareto == ("a", "d", "b")


@pytest.mark.parametrize(("stored", "verdict", "diff", "low", "high"), [
    # stored as best (few_shot) - probe; the decision turns it round to winner (probe) - runner-up
    ({"a": "few_shot", "b": "probe", "verdict": "not significantly different"}, "not significantly different",
     -0.03, -0.07, 0.01),
    ({"a": "probe", "b": "few_shot", "verdict": "A better"}, "probe better", 0.03, -0.01, 0.07),
    ({"a": "few_shot", "b": "probe", "verdict": "A better"}, "few_shot better", -0.03, -0.07, 0.01),
])
def test_comparison_between_winner_and_runner_up(stored, verdict, diff, low, high):
    comparison = {**stored, "diff": 0.03, "low": -0.01, "high": 0.07, "p_value": 0.2}
    d = decide(results(rung("probe", "probe", eps=4), rung("few_shot", acc=(0.95, 0.93, 0.97)),
                       comparisons=[comparison]), spec(), PRICES)
    c = d.comparison
    assert (c["a"], c["b"], c["verdict"]) == ("probe", "few_shot", verdict)
    assert (c["diff"], c["low"], c["high"]) == pytest.approx((diff, low, high))
    assert any(r.startswith(f"probe vs few_shot: {verdict} ({100 * diff:+.1f} points") for r in d.reasons)


def test_api_model_priced_by_tokens_and_device_override():
    task = {**spec(), "model": "openai:m"}
    # prompt: (100 x $1 + 1 x $2) / 1e6 = $0.000102 -> $0.102 per 1,000; probe stays self-hosted
    d = decide(results(rung("zero_shot"), rung("probe", "probe", eps=4)), task, PRICES)
    costs = {o.name: o.per_1k_usd for o in d.options}
    assert costs == pytest.approx({"zero_shot": 0.102, "probe": 0.25})
    # priced on cuda ($36/h = $0.01/s): probe at 4/s costs $2.50 per 1,000
    assert decide(results(rung("probe", "probe", eps=4)), spec(), PRICES, device="cuda").options[0].per_1k_usd == \
        pytest.approx(2.5)


def test_accepts_a_task_spec_and_is_deterministic_json():
    task = TaskSpec.model_validate({"data": {"train": "t.jsonl", "test": "s.jsonl"}, "target": {"accuracy": 0.9},
                                    "model": "local:tiny", "constraints": {"utilisation": 1.0}})
    payload = results(rung("probe", "probe", eps=4), tuned(eps=2), rung("few_shot", eps=0.5))
    first, second = decide(payload, task, PRICES).to_json(), decide(payload, spec(), PRICES).to_json()
    assert first == second
    assert json.loads(json.dumps(first, allow_nan=False))["winner"] == "probe"


@pytest.mark.parametrize(("r", "kind"), [
    ({"strategy": "knn"}, "no_llm"), ({"strategy": "probe"}, "no_llm"), ({"strategy": "prompt"}, "prompt"),
    ({"strategy": "prompt", "config": {"mode": "cot", "k": 8}}, "prompt"), ({"strategy": "finetune"}, "tuned"),
    ({"strategy": "learning_curve", "config": {"of": "probe"}}, "no_llm"),
    ({"strategy": "learning_curve", "config": {"of": "finetune"}}, "tuned"),
    ({"strategy": "learning_curve"}, "tuned"),  # a curve of fine-tuning unless it says otherwise
    ({"strategy": "something_new"}, "prompt"),  # an unknown strategy counts as an LLM rung
])
def test_rung_kind(r, kind):
    rung = RungResult(name="r", status="finished", **r)
    assert rung_kind(rung) == kind
    # one classification for the whole code base: the ladder policy's family and kind of the same rung
    assert kind == family_kind(rung_family(rung.strategy, rung.config))


@pytest.mark.parametrize(("rpm", "winner"), [
    # few_shot $2/1k vs lora $0.50/1k + $300, over 12 months:
    (1_000, "few_shot"),  # 12 x $2 = $24 < $300 + 12 x $0.50 = $306
    (16_000, "few_shot"),  # $384 < $300 + $96 = $396 (just below break-even 16,667)
    (17_000, "lora"),  # $408 > $300 + $102 = $402
    (None, "lora"),  # volume unknown: cost per 1,000 requests decides
])
def test_stated_volume_ranks_by_total_over_the_horizon(rpm, winner):
    constraints = {} if rpm is None else {"requests_per_month": rpm}
    d = decide(results(rung("few_shot", eps=0.5), tuned(eps=2)), spec(**constraints), PRICES)
    assert d.winner == winner


def test_payback_is_said_from_the_winners_side():
    d = decide(results(rung("few_shot", eps=0.5), tuned(eps=2)), spec(requests_per_month=1_000), PRICES)
    assert d.next_step.endswith("Fine-tuning (lora) would pay back above 16,667 requests a month.")
    d = decide(results(rung("few_shot", eps=0.5), tuned(eps=2)), spec(), PRICES)
    assert d.next_step.endswith("It pays back against few_shot above 16,667 requests a month.")
    assert "$300.00 one-off" in d.next_step


def test_point_estimate_next_step_and_cheaper_rung_reason():
    d = decide(results(rung("probe", "probe", acc=POINT, eps=4), rung("zero_shot", acc=MISS, eps=50)), spec(), PRICES)
    assert d.next_step.startswith("Use probe provisionally: 91.0% [88.0, 94.0] meets the 90% accuracy target on the "
                                  "point estimate only (at $0.25 per 1,000 requests)")
    # zero_shot costs $1 / 50 = $0.02 per 1,000
    assert "zero_shot is cheaper ($0.02 per 1,000 requests) but misses the target: accuracy 80.0% [75.0, 85.0]." \
        in d.reasons


def test_no_target_and_unpriced_option():
    task = {**spec(None), "model": "openai:not-in-table"}
    d = decide(results(rung("probe", "probe", acc=MISS, eps=4), rung("zero_shot", acc=CONFIDENT)), task, PRICES)
    # zero_shot has the better quality, and with no target quality ranks first even though it cannot be priced
    assert (d.winner, d.status) == ("zero_shot", "no target set")
    assert d.next_step.startswith("Use zero_shot, the best accuracy of the options that meet the constraints")
    assert any(r.startswith("zero_shot costs an unknown amount per 1,000 requests (no token price for "
                            "'openai:not-in-table'") for r in d.reasons)


def test_missing_comparison_is_said():
    d = decide(results(rung("a", eps=4), rung("b", eps=2), rung("c", eps=1, acc=(0.99, 0.98, 1.0)),
                       comparisons=[{"a": "c", "b": "a", "diff": 0.07, "low": 0.05, "high": 0.09, "p_value": 0.001,
                                     "verdict": "A better"}]), spec(), PRICES)
    assert (d.winner, d.runner_up, d.comparison) == ("a", "b", None)
    assert "No paired comparison of a and b in the results (comparisons are against the best rung only)." in d.reasons


@pytest.mark.parametrize(("eps", "shown"), [
    (10_000 / 3, "$0.0003"),  # $1 / 3,333.3 = $0.0003 per 1,000: two significant digits, no trailing zero
    (1 / 2.5, "$2.50"),
    (1 / 1234.5, "$1,234.50"),
])
def test_small_and_large_prices_read_well(eps, shown):
    d = decide(results(rung("probe", "probe", eps=eps)), spec(), PRICES)
    assert f"at {shown} per 1,000 requests." in d.next_step


def test_turned_round_zero_difference_reads_plus_zero():
    same = {"a": "few_shot", "b": "probe", "diff": 0.0, "low": 0.0, "high": 0.0, "p_value": 1.0,
            "verdict": "not significantly different"}
    d = decide(results(rung("probe", "probe", eps=4), rung("few_shot"), comparisons=[same]), spec(), PRICES)
    assert "probe vs few_shot: not significantly different (+0.0 points [+0.0, +0.0], McNemar p = 1)." in d.reasons


def test_batched_rungs_are_judged_on_their_per_request_latency():
    # a baseline that scored 256 inputs per 5 s call: 20 ms per request, not 5 s
    probe = rung("probe", "probe", eps=50, p95=5.0)
    probe["usage"]["request_latency_s"] = {"p50": 0.015, "p95": 0.02}  # the dict, before results() reads it
    d = decide(results(probe, rung("few_shot", p95=0.3)), spec(max_latency_ms=500), PRICES)
    assert d.winner == "probe"
    assert next(o for o in d.options if o.name == "probe").latency_p95_ms == pytest.approx(20.0)


def test_rungs_not_scored_are_said_with_their_reason():
    skipped = [
        {"name": "zero_shot", "status": "skipped", "reason": "rejected early: zero_shot scored 0/10 (0.0%); saved"},
        {"name": "cot", "status": "skipped", "reason": "rejected early: cot scored 0/10"},
        {"name": "lora", "status": "skipped", "reason": "lora skipped to stay within budget: estimated 50.0 min "
                                                         "exceeds the 30.0 min left; raise budget_hours"},
        {"name": "qlora", "status": "failed", "error": "qlora needs CUDA."},
    ]
    d = decide(results(rung("probe", "probe", eps=4), *skipped), spec(), PRICES)
    assert d.winner == "probe"
    assert d.reasons[-3:] == (
        "Rejected early on a small subset, since they could not win: zero_shot, cot.",
        "lora was not scored (skipped): skipped to stay within budget: estimated 50.0 min exceeds the 30.0 min "
        "left; raise budget_hours.",
        "qlora was not scored (failed): needs CUDA.")
    assert not any("not scored" in r for r in decide(results(rung("probe", "probe")), spec(), PRICES).reasons)


def test_the_latency_constraint_is_judged_on_requests_served_one_at_a_time():
    """Batch time shared by the batch's requests said 50 ms; one request alone took 900 ms: over a 500 ms limit."""
    batched = rung("few_shot", p95=0.05)
    batched["usage"]["request_latency_s"] = {"p50": 0.04, "p95": 0.05}
    batched["usage"]["single_request_latency_s"] = {"p50": 0.8, "p95": 0.9}
    d = decide(results(batched, rung("probe", "probe", eps=4, p95=0.1)), spec(max_latency_ms=500), PRICES)
    few = next(o for o in d.options if o.name == "few_shot")
    assert not few.meets_constraints and few.latency_p95_ms == pytest.approx(900)
    assert any("p95 latency 900 ms exceeds max_latency_ms 500" in v for v in few.violations)


def test_a_self_hosted_option_pays_for_an_always_on_instance():
    """The probe serves 4 requests/s on a $3.60/h cpu: 100,000 requests a month keep one instance busy 7 hours,
    but an always-on instance is billed all 730.5 hours of the month: $2,629.80, $26.30 per 1,000 requests
    (the old price, device time while serving only, said $0.25 per 1,000 and $25 a month)."""
    d = decide(results(rung("probe", "probe", eps=4)), spec(requests_per_month=100_000, utilisation=None), PRICES)
    (probe,) = d.options
    assert probe.monthly_usd == pytest.approx(3.6 * 730.5)
    assert probe.per_1k_usd == pytest.approx(3.6 * 730.5 / 100)
    assert "1 always-on instance ($2,629.80 a month" in probe.cost_basis


def test_a_stated_utilisation_prices_the_device_hours_actually_paid_for():
    d = decide(results(rung("probe", "probe", eps=4)), spec(requests_per_month=100_000, utilisation=0.5), PRICES)
    (probe,) = d.options
    assert probe.per_1k_usd == pytest.approx(0.5)  # $0.25 at full load, twice that at half
    assert "50% utilisation" in probe.cost_basis


def test_enough_instances_for_the_volume():
    """At 0.1 requests/s one instance serves 262,980 requests a month: 1,000,000 need 4."""
    d = decide(results(rung("slow", eps=0.1)), spec(requests_per_month=1_000_000, utilisation=None), PRICES)
    assert d.options[0].monthly_usd == pytest.approx(4 * 3.6 * 730.5)
    assert "4 always-on instances" in d.options[0].cost_basis


def test_a_cent_of_one_off_cost_does_not_hand_the_win_to_the_weaker_option():
    """BANKING77's main job: probe 91.6% and encoder_ft 93.8% on one always-on CPU instance ($0.73 per 1,000 each),
    both meeting 90% on the point estimate only; encoder_ft's training cost one cent. Costs within 1% are a tie,
    broken by quality, so the Pareto winner ships, not the option a cent cheaper over a year."""
    probe = rung("probe", "probe", acc=(0.916, 0.879, 0.944), eps=200, prepare_s=16)
    encoder = rung("encoder_ft", "encoder_ft", acc=(0.938, 0.87, 0.962), eps=200, prepare_s=364)
    d = decide(results(probe, encoder), spec(utilisation=None, requests_per_month=100_000), PRICES)
    assert {o.name: o.meets_target for o in d.options} == {"probe": "point estimate only",
                                                          "encoder_ft": "point estimate only"}
    assert d.pareto == ("encoder_ft",)
    assert d.winner == "encoder_ft" and d.runner_up == "probe"
    dearer = rung("encoder_ft", "encoder_ft", acc=(0.938, 0.87, 0.962), eps=200, prepare_s=364 * 3600)
    d = decide(results(probe, dearer), spec(utilisation=None, requests_per_month=100_000), PRICES)
    assert d.winner == "probe"  # a material one-off cost (364 device-hours) still decides


def test_a_model_that_answers_without_the_llm_is_priced_on_the_device_even_when_the_task_model_is_an_api():
    # encoder_ft and a distilled student answer without the (API) model: $3.60/h at 4/s is $0.25 per 1,000,
    # not the API's token price of an answer that sends no tokens
    task = {**spec(), "model": "openai:m"}
    student = rung("distill", "distill", eps=4, prompt_tokens=0, config={"strategy": "distill"})
    d = decide(results(rung("encoder_ft", "encoder_ft", eps=4, prompt_tokens=0), student), task, PRICES)
    assert {o.name: o.per_1k_usd for o in d.options} == pytest.approx({"encoder_ft": 0.25, "distill": 0.25})


def distilled(teacher_model: str = "openai:m", *, prompt_tokens: int = 1_000_000, completion_tokens: int = 500_000,
              model_seconds: float = 3600.0, wall_s: float = 360.0, **kw) -> dict:
    """A distilled student: the teacher's labelling (tokens, model seconds) and the student's 360 s of training."""
    out = rung("distill", "distill", config={"strategy": "distill"}, eps=4, prompt_tokens=0,
               training={"device": "cpu", "wall_s": wall_s}, **kw)
    out["extras"]["distillation"] = {
        "teacher": "few_shot@m", "teacher_model_id": teacher_model, "teacher_device": "cpu", "labelled": 1000,
        "teacher_prompt_tokens": prompt_tokens, "teacher_completion_tokens": completion_tokens,
        "teacher_cached_tokens": 0, "teacher_model_seconds": model_seconds}
    return out


@pytest.mark.parametrize(("teacher", "one_off"), [
    ("openai:m", 0.36 + 1.0 + 1.0),  # training 0.1 h x $3.60 + 1M prompt x $1/M + 0.5M completion x $2/M
    ("local:tiny", 0.36 + 3.6),  # training + 1 h of the teacher's model time on the cpu at $3.60/h
])
def test_a_distilled_students_one_off_cost_includes_the_teachers_labelling(teacher, one_off):
    d = decide(results(distilled(teacher)), spec(), PRICES)
    (o,) = d.options
    assert o.one_off_usd == pytest.approx(one_off)
    assert "labelling" in o.one_off_basis


def test_distillation_is_reported_against_its_teacher_with_the_volume_at_which_it_pays_for_itself():
    # teacher few_shot@m: (100 x $1 + 1 x $2) / 1e6 a request = $0.102 per 1,000; the student: $0.25 per 1,000 on
    # the cpu at 4/s: never cheaper per request than this cheap API teacher
    teacher = rung("few_shot@m", acc=(0.93, 0.9, 0.95))
    student = distilled(acc=(0.91, 0.88, 0.93))
    student["extras"]["distillation"]["teacher"] = "few_shot@m"
    comparison = {"a": "few_shot@m", "b": "distill", "diff": 0.02, "low": -0.01, "high": 0.05, "p_value": 0.2}
    task = {**spec(), "model": "openai:m"}
    d = decide(results(teacher, student, comparisons=[comparison]), task, PRICES)
    (block,) = d.distillation
    assert (block["student"], block["teacher"]) == ("distill", "few_shot@m")
    assert block["comparison"]["diff"] == pytest.approx(-0.02)  # student - teacher
    assert block["requests_per_month"] is None  # never: the student is dearer per request
    assert any(r.startswith("distill (distilled from few_shot@m): 91.0% [88.0, 93.0] vs its teacher's 93.0% "
                            "[90.0, 95.0]") for r in d.reasons)
    # a dear teacher (eps 0.25 on the cpu: $4.00 per 1,000) pays the student back above a stated volume
    local = {**spec()}
    d = decide(results(rung("few_shot@m", eps=0.25), distilled("local:tiny")), local, PRICES)
    (block,) = d.distillation
    # one-off $3.96; per request $4.00 vs $0.25 per 1,000: 3.96 / 12 / (3.75 / 1000) = 88 requests a month
    assert block["requests_per_month"] == pytest.approx(3.96 / 12 / 0.00375)
    assert block["comparison"] is None and "no paired comparison" in block["said"].lower()
