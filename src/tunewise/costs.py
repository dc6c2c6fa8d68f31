"""Money and time from measured numbers: tokens and device-hours -> USD, break-even, time to deploy.

Every figure comes from what a run measured (mean tokens per request, examples per second,
training device-hours) times a price from :class:`Prices`, and carries a ``basis`` sentence that
names both. Formulas:

* API model, per request: ``((P - C) * input + C * cached_input + O * output) / 1e6`` where P, C, O
  are the measured mean prompt, cached prompt and completion tokens (cached tokens are a subset of
  prompt tokens, as in OpenAI's usage) and prices are USD per million tokens.
* Self-hosted (``local:``, ``hf:``, ``fake:``, or no LLM), as hosting is paid for:
  - by default a dedicated always-on instance, billed every hour: ``instances * device_hour_usd *``
    :data:`HOURS_PER_MONTH` a month, with ``instances = ceil(requests_per_month / capacity)`` and one
    instance's capacity ``examples_per_s * 3600 * HOURS_PER_MONTH``; per request that month over its
    requests (with no volume stated: at full load, and the month's bill said in words);
  - with ``constraints.utilisation`` u (a shared or autoscaled device): the hours actually paid for,
    ``device_hour_usd / 3600 / examples_per_s / u`` per request.
* Training, one-off: ``device_hours * device_hour_usd``.

Where token prices come from, later winning key by key: the built-in table (:data:`DEFAULT_PRICES`, dated
:data:`PRICES_AS_OF`), then LiteLLM's maintained table when the ``litellm`` package is installed
(``price_tables.py``), then the user's price file (tunewise's layout or LiteLLM's), then explicit overrides (a
backend's ``prices`` mapping, the task file's ``models[].prices``). :class:`Prices` records which table it
started from, that table's date, and what was merged over it.

Out of scope: choosing a candidate (``decision.py``) and API fine-tuning fees. Everything here is
pure except :func:`load_prices` and :func:`default_prices`, which read price files.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import TaskSpecError
from .training.settings import DEFAULT_DEVICE_HOUR_USD

__all__ = [
    "ApiPrice", "Prices", "DEFAULT_PRICES", "PRICES_AS_OF", "DAYS_PER_MONTH", "HOURS_PER_MONTH", "load_prices",
    "default_prices", "with_api_prices", "Cost", "Amount", "TokenSavings", "SETUP_HOURS",
    "is_self_hosted", "request_cost", "training_cost", "labelling_cost", "monthly_cost", "retraining_monthly_cost",
    "break_even_volume", "prompt_token_savings", "time_to_deploy",
]

PRICES_AS_OF = "2025-06"
DAYS_PER_MONTH = 365.25 / 12  # 30.4375
HOURS_PER_MONTH = 24 * DAYS_PER_MONTH  # 730.5: what an always-on instance is billed
SELF_HOSTED_KINDS = frozenset({"local", "hf", "fake"})
#: working hours to put a candidate in production, on top of any training wall time
SETUP_HOURS = {
    "prompt": 1.0,  # paste the prompt into the application, wire the model endpoint, smoke test
    "no_llm": 2.0,  # package the embedder and the probe / index behind an endpoint, smoke test
    "tuned": 4.0,  # package the adapter (or merged model), stand up a serving endpoint, smoke test
}
_USD = Annotated[float, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiPrice(_Strict):
    """List prices of one API model, in USD per million tokens; ``cached_input`` None: same as input."""

    input: _USD
    output: _USD
    cached_input: _USD | None = None
    source: str = ""


class Prices(_Strict):
    """API token prices, device-hour prices for self-hosting, and API embedding prices."""

    api: dict[str, ApiPrice] = Field(default_factory=dict)
    device_hour: dict[str, _USD] = Field(default_factory=dict)
    embedding: dict[str, _USD] = Field(
        default_factory=dict, description="USD per million tokens for API embedders; local embedders run on the "
        "device and are inside the measured throughput.")
    device_source: str = ""
    embedding_source: str = ""
    table: str = Field(default="tunewise's built-in table", description="The table the token prices start from.")
    as_of: str = Field(default=PRICES_AS_OF, description="The date of that table's prices.")
    overrides: tuple[str, ...] = Field(default=(), description="What was merged over the table, in order.")

    def sources_words(self) -> str:
        """``API token prices: <table>, as of <date>; then <overrides>; device-hours: <source>`` for reports."""
        then = f"; then {', '.join(self.overrides)}" if self.overrides else ""
        return (f"API token prices: {self.table}, as of {self.as_of}{then}; device-hours: "
                f"{self.device_source or 'price table'}")

    def api_price(self, model: str) -> tuple[str, ApiPrice] | None:
        """The entry for ``openai:gpt-4o-mini-2024-07-18``: exact id, exact name, else the longest dated prefix."""
        name = model.split(":", 1)[1] if ":" in model else model
        for key in (model, name):
            if key in self.api:
                return key, self.api[key]
        prefixes = [k for k in self.api if name.startswith(k + "-")]
        if not prefixes:
            return None
        best = max(prefixes, key=len)
        return best, self.api[best]

    def restricted(self, models: Iterable[str | None]) -> "Prices":
        """The table with only the API entries these models are priced by (a maintained table holds thousands)."""
        keys = {found[0] for m in models if m and (found := self.api_price(m)) is not None}
        return self.model_copy(update={"api": {k: v for k, v in self.api.items() if k in keys}})


_LIST = f"OpenAI list price as of {PRICES_AS_OF}; check your provider"
DEFAULT_PRICES = Prices(
    api={
        "gpt-4o-mini": ApiPrice(input=0.15, cached_input=0.075, output=0.60, source=_LIST),
        "gpt-4o": ApiPrice(input=2.50, cached_input=1.25, output=10.00, source=_LIST),
        "gpt-4.1": ApiPrice(input=2.00, cached_input=0.50, output=8.00, source=_LIST),
        "gpt-4.1-mini": ApiPrice(input=0.40, cached_input=0.10, output=1.60, source=_LIST),
        "gpt-4.1-nano": ApiPrice(input=0.10, cached_input=0.025, output=0.40, source=_LIST),
    },
    device_hour={**DEFAULT_DEVICE_HOUR_USD, "t4": 0.35, "l4": 0.80, "a10g": 1.01, "a100": 3.70, "h100": 4.50},
    embedding={"text-embedding-3-small": 0.02, "text-embedding-3-large": 0.13},
    # cpu: a 2-vCPU VM; cuda: one data-centre GPU; named GPUs: one card
    device_source=f"rough on-demand cloud price as of {PRICES_AS_OF}; check your provider",
    embedding_source=_LIST,
)


def _deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        both = isinstance(value, Mapping) and isinstance(out.get(key), Mapping)
        out[key] = _deep_merge(out[key], value) if both else value
    return out


def _validated(raw: Mapping[str, Any], source: str) -> Prices:
    try:
        return Prices.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            raise TaskSpecError(f"{source}: unknown key '{where}' in the price table (check its spelling).") from None
        if err["type"] == "missing":
            raise TaskSpecError(f"{source}: missing required key '{where}' in the price table.") from None
        raise TaskSpecError(f"{source}: key '{where}': {err['msg'].removeprefix('Value error, ')}.") from None


def default_prices() -> Prices:
    """The built-in table with LiteLLM's maintained table over it when ``litellm`` is installed (see the module
    docstring; ``TUNEWISE_PRICE_TABLE=builtin`` keeps the built-in one)."""
    from .price_tables import installed_litellm

    maintained = installed_litellm()
    if maintained is None:
        return DEFAULT_PRICES
    merged = _deep_merge(DEFAULT_PRICES.model_dump(), {"api": maintained.api, "embedding": maintained.embedding})
    return _validated({**merged, "table": maintained.table, "as_of": maintained.as_of,
                       "embedding_source": maintained.table}, maintained.table)


def load_prices(path: Path | str | None = None, overrides: Mapping[str, Any] | None = None) -> Prices:
    """:func:`default_prices`, deep-merged with a YAML/JSON price file (tunewise's layout, or LiteLLM's model
    price file), then with ``overrides`` (later wins, key by key; each recorded in ``Prices.overrides``)."""
    prices = default_prices()
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
            # JSON read as JSON: YAML 1.1 takes LiteLLM's 6e-07 (no decimal point) for a string
            raw = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        except FileNotFoundError:
            raise TaskSpecError(f"{path}: price file not found.") from None
        except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError) as exc:
            raise TaskSpecError(f"{path}: cannot read the price file ({exc.__class__.__name__}).") from None
        if not isinstance(raw, Mapping):
            raise TaskSpecError(f"{path}: the price file must be a mapping of keys to values.")
        raw, named = _price_file(path, raw)
        prices = _validated(_deep_merge(prices.model_dump(), raw), str(path))
        prices = prices.model_copy(update={"overrides": (*prices.overrides, named)})
    if overrides:
        prices = _validated(_deep_merge(prices.model_dump(), overrides), "price overrides")
        prices = prices.model_copy(update={"overrides": (*prices.overrides, "price overrides")})
    return prices


def _price_file(path: Path, raw: Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    """A price file as tunewise's layout, and its name in words; its API entries say they came from it."""
    from .price_tables import file_date, is_litellm_format, litellm_table

    if is_litellm_format(raw):
        day = file_date(path)
        table = litellm_table(raw, table=f"price file {path} (LiteLLM format, dated {day})", as_of=day)
        return {"api": table.api, "embedding": table.embedding}, table.table
    api = raw.get("api")
    if isinstance(api, Mapping):  # an entry it changes no longer carries the built-in table's source sentence
        named = {k: ({"source": f"price file {path}", **v} if isinstance(v, Mapping) else v) for k, v in api.items()}
        raw = {**raw, "api": named}
    return raw, f"price file {path}"


def with_api_prices(prices: Prices, entries: Mapping[str, Mapping[str, Any]], source: str) -> Prices:
    """``prices`` with the token prices of ``entries`` (model id -> {input, output, cached_input}) over its table."""
    if not entries:
        return prices
    api = {model: {**{k: v for k, v in entry.items() if v is not None}, "source": source}
           for model, entry in entries.items()}
    merged = _validated(_deep_merge(prices.model_dump(), {"api": api}), source)
    return merged.model_copy(update={"overrides": (*merged.overrides, source)})


@dataclass(frozen=True)
class Cost:
    """USD per request (None when it cannot be priced) and the sentence that says how."""

    per_request_usd: float | None
    basis: str

    @property
    def per_1k_usd(self) -> float | None:
        return None if self.per_request_usd is None else 1000 * self.per_request_usd

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "per_1k_usd": self.per_1k_usd}


@dataclass(frozen=True)
class Amount:
    """A one-off or recurring amount (USD, or hours for :func:`time_to_deploy`) and its basis."""

    value: float | None
    basis: str


@dataclass(frozen=True)
class TokenSavings:
    before: float  # mean prompt tokens per request of the prompting candidate
    after: float  # ... of the tuned candidate
    saved: float  # before - after (negative: the tuned prompt is longer)
    share: float | None  # saved / before


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def _usage(rung_or_usage: Any) -> Mapping[str, Any]:
    usage = getattr(rung_or_usage, "usage", None)
    if usage is None and isinstance(rung_or_usage, Mapping):
        usage = rung_or_usage["usage"] if isinstance(rung_or_usage.get("usage"), Mapping) else rung_or_usage
    return usage or {}


def _mean(usage: Mapping[str, Any], key: str) -> float | None:
    return _finite((usage.get(key) or {}).get("mean"))


def is_self_hosted(model: str | None) -> bool:
    """No LLM (None) or a ``local:``/``hf:``/``fake:`` model: priced by device time, not tokens."""
    return model is None or model.split(":", 1)[0] in SELF_HOSTED_KINDS


def request_cost(rung_or_usage: Any, model: str | None, prices: Prices, *, device: str = "cpu",
                 requests_per_month: int | None = None, utilisation: float | None = None) -> Cost:
    """Cost of one request at the measured usage (formulas in the module docstring); self-hosted hosting is
    a dedicated always-on instance unless ``utilisation`` says what share of the device's hours is paid for."""
    usage = _usage(rung_or_usage)
    if is_self_hosted(model):
        price, rate = prices.device_hour.get(device), _finite(usage.get("examples_per_s"))
        if price is None:
            return Cost(None, f"no device-hour price for '{device}' in the price table")
        if not rate:
            return Cost(None, "no measured throughput (examples_per_s) to price device time")
        return _hosted(price, rate, device=device, source=prices.device_source or "price table",
                       requests_per_month=requests_per_month, utilisation=utilisation)
    found = prices.api_price(model)
    if found is None:
        return Cost(None, f"no token price for '{model}' in the price table; add it under api")
    key, p = found
    prompt, cached, completion = _mean(usage, "prompt_tokens"), _mean(usage, "cached_prompt_tokens"), \
        _mean(usage, "completion_tokens")
    if prompt is None or completion is None:
        return Cost(None, "no measured token counts to price")
    cached = min(cached or 0.0, prompt)
    usd, cached_price = _token_usd(p, prompt, cached, completion)
    return Cost(usd, f"{key}: measured mean {prompt:.1f} prompt ({cached:.1f} cached) and {completion:.1f} "
                f"completion tokens x ${p.input:g} / ${cached_price:g} / ${p.output:g} per million "
                f"({p.source or 'price table'})")


def _token_usd(p: "ApiPrice", prompt: float, cached: float, completion: float) -> tuple[float, float]:
    """Dollars for these token counts (``cached`` of the prompt tokens at the cached price, the input price when
    the table has none), and that cached price."""
    cached_price = p.input if p.cached_input is None else p.cached_input
    return ((prompt - cached) * p.input + cached * cached_price + completion * p.output) / 1e6, cached_price


def _hosted(price: float, rate: float, *, device: str, source: str, requests_per_month: int | None,
            utilisation: float | None) -> Cost:
    measured = f"{device} at ${price:g}/device-hour, measured {rate:.4g} examples/s ({source})"
    if utilisation is not None:
        return Cost(price / 3600 / rate / utilisation, f"{measured}, at the task's {utilisation:.0%} utilisation "
                    "(the device hours actually paid for)")
    month = price * HOURS_PER_MONTH
    if not requests_per_month:
        return Cost(price / 3600 / rate, f"{measured}, at full load; a dedicated always-on instance costs "
                    f"${month:,.2f} a month whatever the volume (set constraints.requests_per_month, or "
                    "constraints.utilisation for a shared device)")
    instances = max(1, math.ceil(requests_per_month / (rate * 3600 * HOURS_PER_MONTH)))
    return Cost(instances * month / requests_per_month,
                f"{measured}: {instances} always-on instance{'s' if instances > 1 else ''} "
                f"(${instances * month:,.2f} a month, {HOURS_PER_MONTH:g} h each) for {requests_per_month:,} requests "
                "a month")


def training_cost(training: Mapping[str, Any], prices: Prices) -> Amount:
    """One-off: ``device_hours * price``; the rung's own ``device_hour_usd`` wins when it set one, else the table."""
    hours = _finite(training.get("device_hours"))
    if hours is None:
        wall = _finite(training.get("wall_s"))
        hours = None if wall is None else wall / 3600 * int(training.get("world_size") or 1)
    if hours is None:
        return Amount(None, "the training record has no device-hours or wall time")
    device = str(training.get("device") or "cpu")
    rung_set = str(training.get("price_source") or "").startswith("rung setting")
    recorded = training.get("device_hour_usd")
    in_table = not rung_set and device in prices.device_hour
    price = prices.device_hour[device] if in_table else recorded
    if _finite(price) is None:
        return Amount(None, f"no device-hour price for '{device}'")
    where = "the price table" if in_table else "the price recorded with the training run"
    return Amount(hours * price, f"measured {hours:.4g} {device} device-hours x ${price:g}/h ({where})")


def labelling_cost(labelling: Mapping[str, Any], prices: Prices) -> Amount:
    """One-off: a distillation teacher's labelling, at its model's token prices (an API model: every prompt,
    cached and completion token it was sent and wrote) or its measured model seconds x the device-hour price."""
    model = str(labelling.get("teacher_model_id") or "")
    if is_self_hosted(model):
        seconds, device = _finite(labelling.get("teacher_model_seconds")), str(labelling.get("teacher_device") or "cpu")
        price = prices.device_hour.get(device)
        if seconds is None or price is None:
            return Amount(None, f"no measured teacher model time or no device-hour price for '{device}'")
        return Amount(seconds / 3600 * price, f"labelling: measured {seconds:,.0f} s of {model}'s model time x "
                      f"${price:g}/{device} device-hour")
    found = prices.api_price(model)
    if found is None:
        return Amount(None, f"labelling: no token price for '{model}' in the price table")
    key, p = found
    prompt, cached, completion = (float(labelling.get(k) or 0) for k in (
        "teacher_prompt_tokens", "teacher_cached_tokens", "teacher_completion_tokens"))
    cached = min(cached, prompt)
    usd, cached_price = _token_usd(p, prompt, cached, completion)
    return Amount(usd, f"labelling: {prompt:,.0f} prompt ({cached:,.0f} cached) and {completion:,.0f} completion "
                  f"tokens of {key} x ${p.input:g} / ${cached_price:g} / ${p.output:g} per million")


def monthly_cost(per_request_usd: float, requests_per_month: float, fixed_monthly_usd: float = 0.0) -> float:
    """``per_request_usd * requests_per_month + fixed_monthly_usd``."""
    return per_request_usd * requests_per_month + fixed_monthly_usd


def retraining_monthly_cost(training_cost_usd: float, cadence_days: float) -> float:
    """Retraining every ``cadence_days``: ``training_cost_usd * (365.25 / 12) / cadence_days`` a month."""
    if cadence_days <= 0:
        raise ValueError(f"cadence_days must be positive, got {cadence_days}")
    return training_cost_usd * DAYS_PER_MONTH / cadence_days


def break_even_volume(prompt_per_request: float, tuned_per_request: float, tuned_one_off: float, *,
                      horizon_months: float = 12, tuned_monthly_fixed: float = 0.0) -> float | None:
    """Monthly requests V above which tuning costs less over the horizon H.

    Prompting costs ``H*V*p``; tuning ``one_off + H*(fixed + V*t)``; equal at
    ``V = (one_off/H + fixed) / (p - t)``. None: tuning is never cheaper (``t >= p``); 0: cheaper from the start.
    """
    if horizon_months <= 0:
        raise ValueError(f"horizon_months must be positive, got {horizon_months}")
    margin = prompt_per_request - tuned_per_request
    if margin <= 0:
        return None
    return max(0.0, (tuned_one_off / horizon_months + tuned_monthly_fixed) / margin)


def prompt_token_savings(prompt_usage: Any, tuned_usage: Any) -> TokenSavings | None:
    """Prompt tokens per request the tuned model no longer needs: ``before - after`` and ``saved / before``."""
    before, after = _mean(_usage(prompt_usage), "prompt_tokens"), _mean(_usage(tuned_usage), "prompt_tokens")
    if before is None or after is None:
        return None
    return TokenSavings(before, after, before - after, (before - after) / before if before > 0 else None)


def time_to_deploy(kind: str, *, training_wall_s: float = 0.0,
                   setup_hours: Mapping[str, float] = SETUP_HOURS) -> Amount:
    """Hours to production: ``setup_hours[kind] + training_wall_s / 3600`` (kind: prompt, no_llm, tuned)."""
    setup = setup_hours[kind]
    train_h = training_wall_s / 3600
    return Amount(setup + train_h, f"{setup:g} h setup estimate for {kind} + {train_h:.2f} h measured training")
