"""Costs against hand-computed values (the arithmetic is in the comments)."""

from __future__ import annotations

import json
import math

import pytest

from tunewise.costs import (
    DAYS_PER_MONTH,
    DEFAULT_PRICES,
    ApiPrice,
    Prices,
    break_even_volume,
    is_self_hosted,
    load_prices,
    monthly_cost,
    prompt_token_savings,
    request_cost,
    retraining_monthly_cost,
    time_to_deploy,
    training_cost,
)
from tunewise.errors import TaskSpecError

PRICES = Prices(
    api={"m": ApiPrice(input=1.0, output=2.0), "gpt-4o-mini": ApiPrice(input=0.15, cached_input=0.075, output=0.6),
         "gpt-4o": ApiPrice(input=2.5, cached_input=1.25, output=10.0)},
    device_hour={"cpu": 0.10, "cuda": 2.50, "a10g": 1.0},
)


def usage(prompt: float = 0, cached: float = 0, completion: float = 0, eps: float | None = None) -> dict:
    return {"prompt_tokens": {"mean": prompt}, "cached_prompt_tokens": {"mean": cached},
            "completion_tokens": {"mean": completion}, "examples_per_s": eps}


REQUEST_CASES = [
    # (800 * 0.15 + 200 * 0.075 + 10 * 0.60) / 1e6 = (120 + 15 + 6) / 1e6
    pytest.param(usage(1000, 200, 10), "openai:gpt-4o-mini", "cpu", 141e-6, id="api-with-cached"),
    # a dated snapshot resolves to the longest matching name: (1000 * 2.5 + 100 * 10) / 1e6 = 3500 / 1e6
    pytest.param(usage(1000, 0, 100), "openai:gpt-4o-2024-08-06", "cpu", 3.5e-3, id="api-snapshot-name"),
    pytest.param(usage(1000, 0, 100), "openai:gpt-4o-mini-2024-07-18", "cpu", (150 + 60) / 1e6, id="longest-prefix"),
    # no cached price: cached tokens at the input price, (50 * 1 + 50 * 1 + 50 * 2) / 1e6
    pytest.param(usage(100, 50, 50), "openai:m", "cpu", 200e-6, id="api-no-cached-price"),
    # self-hosted: 0.10 / 3600 / 20 examples/s
    pytest.param(usage(500, 0, 1, eps=20), "local:smollm2-135m", "cpu", 0.10 / 3600 / 20, id="local-cpu"),
    # 2.50 / 3600 / 50
    pytest.param(usage(500, 0, 1, eps=50), "hf:some/model", "cuda", 2.50 / 3600 / 50, id="hf-cuda"),
    pytest.param(usage(eps=4), None, "a10g", 1.0 / 3600 / 4, id="no-llm-named-gpu"),
    pytest.param(usage(1000, 0, 10), "openai:unknown-model", "cpu", None, id="unpriced-api-model"),
    pytest.param(usage(eps=None), "local:x", "cpu", None, id="no-throughput"),
    pytest.param(usage(eps=5), "local:x", "tpu", None, id="unpriced-device"),
]


@pytest.mark.parametrize(("u", "model", "device", "expected"), REQUEST_CASES)
def test_request_cost(u, model, device, expected):
    cost = request_cost(u, model, PRICES, device=device)
    if expected is None:
        assert cost.per_request_usd is None and cost.per_1k_usd is None
        assert cost.basis
    else:
        assert cost.per_request_usd == pytest.approx(expected)
        assert cost.per_1k_usd == pytest.approx(1000 * expected)


def test_request_cost_accepts_a_rung_dict_and_says_how():
    cost = request_cost({"name": "zero_shot", "usage": usage(1000, 200, 10)}, "openai:gpt-4o-mini", PRICES)
    assert cost.per_request_usd == pytest.approx(141e-6)
    assert "1000.0 prompt (200.0 cached)" in cost.basis and "$0.15" in cost.basis
    assert json.dumps(cost.to_json())


@pytest.mark.parametrize(("model", "self_hosted"), [
    (None, True), ("local:smollm2-135m", True), ("hf:x/y", True), ("fake:script", True), ("openai:gpt-4o", False),
])
def test_is_self_hosted(model, self_hosted):
    assert is_self_hosted(model) is self_hosted


TRAINING_CASES = [
    # table price for cuda: 0.5 h * 2.50
    pytest.param({"device": "cuda", "device_hours": 0.5, "device_hour_usd": 9.0,
                  "price_source": "default price for a cuda device-hour"}, 1.25, id="table-price-wins-over-default"),
    # the rung set its own price: 0.5 h * 1.0, whatever the table says
    pytest.param({"device": "cuda", "device_hours": 0.5, "device_hour_usd": 1.0,
                  "price_source": "rung setting device_hour_usd"}, 0.5, id="rung-price-kept"),
    # no device_hours: 1800 s / 3600 * 2 processes = 1.0 h, * 0.10
    pytest.param({"device": "cpu", "wall_s": 1800, "world_size": 2}, 0.10, id="from-wall-time"),
    # device missing from the table: the recorded price, 2 h * 3.0
    pytest.param({"device": "mps", "device_hours": 2.0, "device_hour_usd": 3.0}, 6.0, id="recorded-price-fallback"),
    pytest.param({"device": "cpu"}, None, id="no-time-recorded"),
]


@pytest.mark.parametrize(("record", "expected"), TRAINING_CASES)
def test_training_cost(record, expected):
    amount = training_cost(record, PRICES)
    assert amount.value == (pytest.approx(expected) if expected is not None else None)
    assert amount.basis


@pytest.mark.parametrize(("args", "expected"), [
    ((0.002, 100_000), 200.0),  # 0.002 * 100,000
    ((0.002, 100_000, 50.0), 250.0),  # + 50 fixed
    ((0.0, 10**9, 0.0), 0.0),
])
def test_monthly_cost(args, expected):
    assert monthly_cost(*args) == pytest.approx(expected)


@pytest.mark.parametrize(("usd", "days", "expected"), [
    (300.0, DAYS_PER_MONTH, 300.0),  # once a month
    (300.0, 7.0, 300 * 30.4375 / 7),  # weekly: 1304.46
    (120.0, 365.25, 10.0),  # yearly: 120 / 12
])
def test_retraining_monthly_cost(usd, days, expected):
    assert retraining_monthly_cost(usd, days) == pytest.approx(expected)


def test_retraining_needs_a_positive_cadence():
    with pytest.raises(ValueError):
        retraining_monthly_cost(100.0, 0)


BREAK_EVEN_CASES = [
    # prompt $2.00/1k, tuned $0.50/1k + $300 over 12 months: 300 / 12 / (1.5 / 1000) = 16,666.67
    pytest.param((0.002, 0.0005, 300.0), {}, 300 / 12 / 0.0015, id="brief-example"),
    # + $25/month fixed: (25 + 25) / 0.0015 = 33,333.33
    pytest.param((0.002, 0.0005, 300.0), {"tuned_monthly_fixed": 25.0}, 50 / 0.0015, id="monthly-fixed"),
    # 6-month horizon: 300 / 6 / 0.0015 = 33,333.33
    pytest.param((0.002, 0.0005, 300.0), {"horizon_months": 6}, 50 / 0.0015, id="shorter-horizon"),
    pytest.param((0.002, 0.0005, 0.0), {}, 0.0, id="cheaper-from-the-start"),
    pytest.param((0.0005, 0.002, 300.0), {}, None, id="tuned-dearer-never"),
    pytest.param((0.001, 0.001, 0.0), {}, None, id="equal-per-request-never"),
]


@pytest.mark.parametrize(("args", "kwargs", "expected"), BREAK_EVEN_CASES)
def test_break_even_volume(args, kwargs, expected):
    got = break_even_volume(*args, **kwargs)
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_break_even_is_where_totals_cross():
    v = break_even_volume(0.002, 0.0005, 300.0)
    prompt_total, tuned_total = 12 * v * 0.002, 300.0 + 12 * v * 0.0005
    assert prompt_total == pytest.approx(tuned_total)  # 400 == 400


@pytest.mark.parametrize(("before", "after", "saved", "share"), [
    (400, 50, 350, 0.875),  # 350 / 400
    (100, 100, 0, 0.0),
    (100, 120, -20, -0.2),  # the tuned prompt is longer
    (0, 0, 0, None),
])
def test_prompt_token_savings(before, after, saved, share):
    s = prompt_token_savings({"usage": usage(before)}, usage(after))
    assert (s.before, s.after, s.saved) == (before, after, saved)
    assert s.share == (pytest.approx(share) if share is not None else None)


def test_prompt_token_savings_without_usage():
    assert prompt_token_savings({}, usage(10)) is None


@pytest.mark.parametrize(("kind", "wall_s", "hours"), [
    ("prompt", 0, 1.0), ("no_llm", 0, 2.0), ("tuned", 5400, 5.5),  # 4 h setup + 5400 / 3600
])
def test_time_to_deploy(kind, wall_s, hours):
    assert time_to_deploy(kind, training_wall_s=wall_s).value == pytest.approx(hours)


def test_defaults_are_dated_and_sourced():
    assert DEFAULT_PRICES.device_hour["cpu"] == 0.10 and DEFAULT_PRICES.device_hour["cuda"] == 2.50
    assert all("as of" in p.source and "check your provider" in p.source for p in DEFAULT_PRICES.api.values())
    assert "as of" in DEFAULT_PRICES.device_source


def test_load_prices_deep_merges_file_then_overrides(tmp_path):
    path = tmp_path / "prices.yaml"
    path.write_text("device_hour:\n  cuda: 1.8\napi:\n  gpt-4o-mini:\n    output: 0.5\n  mine:\n    input: 1\n"
                    "    output: 3\n", encoding="utf-8")
    prices = load_prices(path, {"device_hour": {"a10g": 0.9}})
    assert prices.device_hour["cuda"] == 1.8 and prices.device_hour["cpu"] == 0.10 and prices.device_hour["a10g"] == 0.9
    mini = prices.api["gpt-4o-mini"]
    assert (mini.input, mini.cached_input, mini.output) == (0.15, 0.075, 0.5)  # only output replaced
    assert prices.api["mine"].output == 3 and "gpt-4o" in prices.api
    assert DEFAULT_PRICES.device_hour["cuda"] == 2.50  # defaults untouched


def test_load_prices_reads_json_and_overrides_win(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"device_hour": {"cpu": 0.2}}), encoding="utf-8")
    assert load_prices(path).device_hour["cpu"] == 0.2
    assert load_prices(path, {"device_hour": {"cpu": 0.3}}).device_hour["cpu"] == 0.3
    assert load_prices() == DEFAULT_PRICES


@pytest.mark.parametrize(("text", "needle"), [
    ("api:\n  gpt-4o-mini:\n    outptu: 1\n", "unknown key 'api.gpt-4o-mini.outptu'"),
    ("device_hour:\n  cpu: -1\n", "key 'device_hour.cpu'"),
    ("api:\n  mine:\n    input: 1\n", "missing required key 'api.mine.output'"),
    ("- a list\n", "must be a mapping"),
    ("api: [unclosed\n", "cannot read the price file"),
])
def test_load_prices_errors_name_file_and_key(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(TaskSpecError) as err:
        load_prices(path)
    assert str(path) in str(err.value) and needle in str(err.value)


def test_load_prices_missing_file_and_bad_override(tmp_path):
    with pytest.raises(TaskSpecError, match="price file not found"):
        load_prices(tmp_path / "nope.yaml")
    with pytest.raises(TaskSpecError, match=r"price overrides: unknown key 'device'"):
        load_prices(None, {"device": {"cpu": 1}})


def test_api_price_lookup():
    assert PRICES.api_price("openai:gpt-4o-mini")[0] == "gpt-4o-mini"
    assert PRICES.api_price("gpt-4o-2024-11-20")[0] == "gpt-4o"
    assert PRICES.api_price("openai:gpt-4") is None
    assert math.isclose(PRICES.api_price("m")[1].input, 1.0)
