"""How the pure policy sees a run: each rung before it runs (:func:`plan`), what a result measured
(:func:`observe`), how seconds and tokens become money (:func:`pricing`), the budgets (:func:`budget`) and
how long an evaluation may run before it would overrun them (:func:`deadline`).

Out of scope: the decisions themselves (``policy.py``) and running rungs (``attempt.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import TunewiseError
from ..results import RungResult
from ..task import RungSpec, TaskSpec
from .catalogue import needs_llm
from .policy import (
    PRIOR_API_TOKENS,
    Budget,
    Observed,
    PlannedRung,
    Pricing,
    family_kind,
    rung_family,
    seconds_left,
)

if TYPE_CHECKING:
    from ..costs import Prices

__all__ = ["plan", "answer_tokens", "observe", "pricing", "pricings", "budget", "deadline"]


def plan(rung: RungSpec, spec: TaskSpec, train: Sequence[Any], *, dev: Sequence[Any] = (),
         pool: Sequence[Any] = ()) -> PlannedRung:
    """A rung before it runs: its family, whether it can be screened, its training work (in tokens, with the subset
    sizes it may be fitted to; ``dev``: the dev split its trainings evaluate), or why it cannot run. ``pool``:
    the unlabelled inputs a distill rung's teacher labels."""
    family = rung_family(rung.strategy, rung.params, spec.kind)
    if family == "distill":
        return _plan_distill(rung, spec, train, dev, pool)
    # extraction's field F1 is not a per-example mean, nor a generation metric's score a 0/1 one
    screenable = needs_llm(rung) and spec.kind != "extraction" and spec.primary_metric in ("accuracy", "exact_match")
    if family_kind(family) != "tuned":
        from ..strategies.optimize import search_calls_bound

        tokens = answer_tokens(rung, spec, train) if family.startswith("prompt_generate") else 0
        search = search_calls_bound(rung.params, len(train), len(dev)) if rung.strategy == "optimize" else 0
        return PlannedRung(rung.name, family, screenable=screenable, model=rung.model, answer_tokens=tokens,
                           search_calls=search)
    from ..strategies.encoder_ft import encoder_work
    from ..strategies.finetuning import training_work

    try:
        work = (encoder_work if rung.strategy == "encoder_ft" else training_work)(
            rung, spec.for_model(rung.model), train, dev)
    except TunewiseError as exc:
        return PlannedRung(rung.name, family, blocked=str(exc), model=rung.model)
    return PlannedRung(rung.name, family, train_example_epochs=work.example_epochs, evaluations=work.evaluations,
                       train_tokens=work.tokens, train_examples=work.examples, fit_sizes=work.fit_sizes,
                       curve_points=work.points, model=rung.model)


def _plan_distill(rung: RungSpec, spec: TaskSpec, train: Sequence[Any], dev: Sequence[Any],
                  pool: Sequence[Any]) -> PlannedRung:
    """A distill rung in the policy's ladder: the pool its teacher labels (``pool_limit`` of data.unlabelled) and
    its encoder student's work on the gold examples and those labels together."""
    from ..strategies.encoder_ft import encoder_work

    if not pool:
        return PlannedRung(rung.name, "distill", blocked="the task has no unlabelled pool (data.unlabelled)")
    student = rung.params.get("student", "encoder_ft")
    if spec.kind != "classification" or student != "encoder_ft":
        return PlannedRung(rung.name, "distill", blocked="the ladder distils into an encoder_ft student "
                           "(classification); name a distill rung for another student")
    limit = rung.params.get("pool_limit")
    n = min(len(pool), int(limit)) if limit else len(pool)
    student_rung = rung.model_copy(update={"params": dict(rung.params.get("student_params") or {})})
    try:
        work = encoder_work(student_rung, spec, [*train, *pool[:n]], dev)
        gold = encoder_work(student_rung, spec, train, dev)
    except TunewiseError as exc:
        return PlannedRung(rung.name, "distill", blocked=str(exc))
    return PlannedRung(rung.name, "distill", train_example_epochs=work.example_epochs, train_tokens=work.tokens,
                       train_examples=work.examples, pool_size=n,
                       pool_work=(gold.tokens, (work.tokens - gold.tokens) / max(1, n)))


def answer_tokens(rung: RungSpec, spec: TaskSpec, train: Sequence[Any]) -> int:
    """The answer budget a generating prompt rung will have (its ``max_new_tokens``, else what
    :func:`~tunewise.strategies.prompting.answer_budget` sets from train's answers), counted with the model's
    tokenizer when it is a transformers model, else at 4 characters a token."""
    from ..prompts import answer_text
    from ..strategies.prompting import answer_budget

    if rung.params.get("max_new_tokens"):
        return int(rung.params["max_new_tokens"])
    return answer_budget([answer_text(e.target) for e in train], _token_counter(spec.for_model(rung.model).model))[0]


def _token_counter(model: str) -> Any:
    approx = (lambda text: max(1, len(text) // 4))
    if model.partition(":")[0] not in ("local", "hf") and ":" in model:
        return approx
    try:
        from ..backends.model_cache import resolve_model
        from ..training.trainer import training_tokenizer

        resolved = resolve_model(model)
        if resolved.gguf_file is not None and not (resolved.cache_path and resolved.cache_path.is_dir()):
            return approx  # not dequantised yet: a prior is not worth building the model's cache for
        tokenizer = training_tokenizer(model)[0]
    except Exception:  # noqa: BLE001 - a prior only: a model that cannot load here fails where it runs, with its reason
        return approx
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


def observe(result: RungResult, family: str, *, pricing: Pricing, model: str, prices: "Prices",
            correct: Sequence[float] | None, key: str | None = None) -> Observed:
    """What the policy needs from a rung result: scores, per-example ``correct``ness (0/1, or a generation
    metric's score: kept as it is, since the plateau's paired test compares the scores) and measured cost.
    ``model``: the id of the rung's model (its prices); ``key``: its short name when the task weighs several."""
    from ..costs import is_self_hosted, request_cost

    usage = result.usage or {}
    eval_s = float(usage.get("model_seconds") or 0.0)
    # the single-request latency sample is time the run spent too (not throughput: it is not in eval_s)
    seconds = float(result.prepare_s or 0.0) + eval_s + float(usage.get("single_request_wall_s") or 0.0)
    examples = int(usage.get("requests") or 0)
    if pricing.usd_per_second is not None or family_kind(family) == "no_llm":
        usd = seconds * (pricing.usd_per_second or 0.0)
    else:
        per = request_cost(usage, None if is_self_hosted(model) else model, prices).per_request_usd if examples else 0.0
        usd = None if per is None else per * examples
    training = result.extras.get("training") or {}
    train_s = float(training.get("wall_s") or 0.0)
    train_work = float(training.get("examples") or 0) * float(training.get("epochs") or 0)
    train_tokens = float(training.get("work_tokens") or 0)  # older results lack it: their rate is not used
    if result.status != "finished" or result.primary is None:
        return Observed(result.name, family, "rejected" if "early_rejection" in result.extras else result.status,
                        seconds=seconds, eval_seconds=eval_s, examples=examples, usd=usd, model=key)
    m = result.primary
    return Observed(result.name, family, "finished", value=m.value, low=m.low, high=m.high, metric=m,
                    correct=tuple(float(c) for c in correct) if correct is not None else None,
                    seconds=seconds, eval_seconds=eval_s, examples=examples, usd=usd, train_s=train_s,
                    train_example_epochs=train_work, train_tokens=train_tokens, model=key)


def pricings(spec: TaskSpec, prices: "Prices") -> dict[str | None, Pricing]:
    """:func:`pricing` of each of the task's models by short name; None: the first (and rungs without a model)."""
    out: dict[str | None, Pricing] = {m.key: pricing(spec.for_model(m.key), prices) for m in spec.model_specs}
    out[None] = out[spec.model_specs[0].key]
    return out


def pricing(spec: TaskSpec, prices: "Prices") -> Pricing:
    """Self-hosted models: the device-hour price of the device they run on; API models: token-price priors."""
    from ..backends.devices import hosting_device
    from ..costs import is_self_hosted

    device = hosting_device(spec.model)
    if is_self_hosted(spec.model):
        price = prices.device_hour.get(device)
        return Pricing(device=device, usd_per_second=None if price is None else price / 3600,
                       basis=f"{device} at ${price}/device-hour ({prices.device_source})")
    found = prices.api_price(spec.model)
    if found is None:
        return Pricing(device=device, basis=f"no token price for {spec.model!r}")
    key, p = found
    per = {fam: (prompt * p.input + completion * p.output) / 1e6 for fam, (prompt, completion) in PRIOR_API_TOKENS.items()}
    return Pricing(device=device, api_usd_per_example=per, basis=f"{key} token prices ({p.source or 'price table'})")


def budget(spec: TaskSpec) -> Budget:
    return Budget(hours=spec.constraints.budget_hours, usd=spec.constraints.budget_usd)


def deadline(rung: PlannedRung, observed: Mapping[str, Observed], budget: Budget, pricing: Pricing) -> float | None:
    """Seconds the rung (its training included) may run before the budget is exceeded (None: no limit)."""
    return seconds_left(rung, observed, budget, pricing)
