"""Maintained price tables: LiteLLM's model price file mapped to tunewise's prices, its date, and precedence."""

from __future__ import annotations

import datetime
import html
import importlib.metadata
import json
import os
from pathlib import Path

import pytest

from tunewise import price_tables
from tunewise.costs import DEFAULT_PRICES, PRICES_AS_OF, Prices, default_prices, load_prices, with_api_prices
from tunewise.price_tables import file_date, is_litellm_format, litellm_table

# the layout of LiteLLM's model_prices_and_context_window.json (USD per token), a few entries
LITELLM = {
    "sample_spec": {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0, "mode": "one of: chat, embedding"},
    "gpt-4o-mini": {"input_cost_per_token": 1.6e-07, "output_cost_per_token": 6.4e-07,
                    "cache_read_input_token_cost": 8e-08, "litellm_provider": "openai", "mode": "chat"},
    "acme-reasoner": {"input_cost_per_token": 1.1e-06, "output_cost_per_token": 4.4e-06, "mode": "chat",
                      "output_cost_per_reasoning_token": 4.4e-06},
    "acme-legacy": {"input_cost_per_token": 2e-06, "output_cost_per_token": 2e-06, "mode": "completion"},
    "acme-embed": {"input_cost_per_token": 2e-08, "output_cost_per_token": 0.0, "mode": "embedding"},
    "acme-image": {"input_cost_per_token": 1e-06, "output_cost_per_image": 0.04, "mode": "image_generation"},
    "acme-half": {"input_cost_per_token": 1e-06, "mode": "chat"},
    "acme-negative": {"input_cost_per_token": -1, "output_cost_per_token": 1e-06, "mode": "chat"},
}


def litellm_file(tmp_path: Path, entries: dict = LITELLM, *, day: str = "2026-03-14") -> Path:
    path = tmp_path / "model_prices_and_context_window.json"
    path.write_text(json.dumps(entries))
    stamp = datetime.datetime.fromisoformat(day).replace(hour=12, tzinfo=datetime.timezone.utc).timestamp()
    os.utime(path, (stamp, stamp))
    return path


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """LiteLLM 9.9.9 "installed": its package metadata points at a fixture file, found without importing litellm."""
    package = tmp_path / "site-packages"
    (package / "litellm").mkdir(parents=True)
    path = litellm_file(package / "litellm", day="2026-05-01")
    path.rename(package / price_tables.LITELLM_FILE)

    class Dist:
        version = "9.9.9"

        def locate_file(self, name):
            return package / name

    real = importlib.metadata.distribution
    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: Dist() if name == "litellm" else real(name))
    monkeypatch.delenv("TUNEWISE_PRICE_TABLE", raising=False)
    return package / price_tables.LITELLM_FILE


def test_litellm_entries_map_to_prices_per_million_tokens():
    table = litellm_table(LITELLM, table="LiteLLM x", as_of="2026-03-14")
    assert table.api["gpt-4o-mini"] == {"input": 0.16, "output": 0.64, "cached_input": 0.08, "source": "LiteLLM x"}
    assert table.api["acme-reasoner"]["cached_input"] is None and table.api["acme-legacy"]["output"] == 2.0
    assert table.embedding == {"acme-embed": 0.02}
    # images, a missing output price, a negative price and LiteLLM's documentation entry are left out
    assert set(table.api) == {"gpt-4o-mini", "acme-reasoner", "acme-legacy"}
    assert is_litellm_format(LITELLM) and not is_litellm_format(DEFAULT_PRICES.model_dump())


def test_the_built_in_table_when_litellm_is_absent_or_switched_off(installed, monkeypatch):
    monkeypatch.setenv("TUNEWISE_PRICE_TABLE", "builtin")
    prices = load_prices()
    assert prices == DEFAULT_PRICES and prices.table == "tunewise's built-in table" and prices.as_of == PRICES_AS_OF
    real = importlib.metadata.distribution
    monkeypatch.setattr(importlib.metadata, "distribution",
                        lambda name: _absent(name) if name == "litellm" else real(name))
    monkeypatch.delenv("TUNEWISE_PRICE_TABLE")
    assert default_prices() == DEFAULT_PRICES


def _absent(name):
    from importlib.metadata import PackageNotFoundError

    raise PackageNotFoundError(name)


def test_an_installed_litellm_table_goes_over_the_built_in_one_with_its_version_and_date(installed):
    prices = default_prices()
    assert prices.table == "LiteLLM 9.9.9's price file (dated 2026-05-01)" and prices.as_of == "2026-05-01"
    key, price = prices.api_price("openai:gpt-4o-mini-2024-07-18")
    assert (key, price.input, price.cached_input, price.output) == ("gpt-4o-mini", 0.16, 0.08, 0.64)
    assert price.source == prices.table
    assert prices.api_price("openai:acme-reasoner")[1].output == 4.4
    assert prices.api["gpt-4.1-nano"] == DEFAULT_PRICES.api["gpt-4.1-nano"]  # built-in entries it lacks stay
    assert prices.embedding["acme-embed"] == 0.02 and prices.device_hour == DEFAULT_PRICES.device_hour
    assert prices.sources_words().startswith("API token prices: LiteLLM 9.9.9's price file (dated 2026-05-01), as "
                                             "of 2026-05-01; device-hours: rough on-demand cloud price as of 2025-06")


def test_explicit_prices_win_over_the_installed_table_and_are_recorded(installed, tmp_path):
    mine = tmp_path / "prices.yaml"
    mine.write_text("api:\n  gpt-4o-mini: {input: 0.1, output: 0.2}\n")
    prices = load_prices(mine, overrides={"api": {"acme-reasoner": {"input": 0, "output": 0}}})
    assert prices.api["gpt-4o-mini"].input == 0.1 and prices.api["gpt-4o-mini"].source == f"price file {mine}"
    assert prices.api["acme-reasoner"].output == 0 and prices.api["acme-legacy"].output == 2.0
    assert prices.table.startswith("LiteLLM 9.9.9") and prices.overrides == (f"price file {mine}", "price overrides")
    tasked = with_api_prices(prices, {"openai:acme-legacy": {"input": 1, "output": 1}}, "the task file's models.prices")
    assert tasked.overrides[-1] == "the task file's models.prices"
    assert tasked.api_price("openai:acme-legacy")[1].input == 1


def test_a_litellm_format_price_file_is_accepted_and_dated(installed, tmp_path):
    newer = litellm_file(tmp_path, {"gpt-4o-mini": {"input_cost_per_token": 1.5e-07, "output_cost_per_token": 6e-07,
                                                    "mode": "chat"}}, day="2026-06-30")
    prices = load_prices(newer)
    named = f"price file {newer} (LiteLLM format, dated 2026-06-30)"
    assert prices.overrides == (named,) and prices.api["gpt-4o-mini"].source == named
    assert (prices.api["gpt-4o-mini"].input, prices.api["gpt-4o-mini"].output) == (0.15, 0.6)
    assert prices.api["acme-reasoner"].input == 1.1  # the installed table under it
    assert file_date(newer) == "2026-06-30"


def test_a_recorded_table_keeps_only_the_entries_its_models_are_priced_by(installed):
    prices = default_prices()
    kept = prices.restricted(["openai:gpt-4o-mini-2024-07-18", "local:smollm2-135m", None])
    assert set(kept.api) == {"gpt-4o-mini"} and kept.table == prices.table
    assert Prices.model_validate(kept.model_dump(mode="json")) == kept  # as results.json stores and reloads it


def test_the_report_and_summary_show_the_prices_source_and_date(installed, tmp_path):
    from tunewise.run import run_task
    from tunewise.task import parse_task

    rows = [{"text": f"{label} request number {i}", "label": label} for label in ("a", "b") for i in range(12)]
    for name, part in (("train.jsonl", rows[::2]), ("test.jsonl", rows[1::2])):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in part))
    task = parse_task({"name": "p", "kind": "classification", "model": "fake:random", "embedder": "hashing",
                       "data": {"train": "train.jsonl", "test": "test.jsonl"}}, base_dir=tmp_path)
    outcome = run_task(task, rungs=["knn"])
    words = "API token prices: LiteLLM 9.9.9's price file (dated 2026-05-01), as of 2026-05-01"
    assert f"Prices: {words}" in outcome.summary_path.read_text()
    assert words in html.unescape(outcome.report_path.read_text())
    assert words in (outcome.report_path.parent / "report.md").read_text()
    context = json.loads((outcome.report_path.parent / "decision.json").read_text())["context"]["prices"]
    assert context["as_of"] == "2026-05-01" and context["table"].startswith("LiteLLM 9.9.9")
    recorded = json.loads(outcome.results_path.read_text())["environment"]["prices"]
    assert recorded["api"] == {} and recorded["as_of"] == "2026-05-01"  # fake:random is priced by no API entry


def test_the_real_litellm_file_when_installed(monkeypatch):
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution("litellm")
    except PackageNotFoundError:
        pytest.skip("litellm is not installed")
    monkeypatch.delenv("TUNEWISE_PRICE_TABLE", raising=False)
    prices = default_prices()
    assert prices.table.startswith("LiteLLM ") and datetime.date.fromisoformat(prices.as_of)
    assert len(prices.api) > 500
    _, mini = prices.api_price("openai:gpt-4o-mini")
    assert 0 < mini.input < mini.output < 100 and mini.cached_input is not None and mini.cached_input < mini.input
    _, reasoner = prices.api_price("openai:o3-mini")
    assert 0 < reasoner.input < reasoner.output
