"""``run_task``: load the task, freeze the split, climb the rungs, record everything.

``train_only``: the same splits and artifact directory, one ``finetune`` rung's training and
nothing else (no evaluation, no run store), for ``tunewise train`` under ``accelerate launch``.

Flow: spec -> splits + data checks -> run store (same task and data -> same run id) -> for each
rung: reuse a finished result, or prepare a candidate and evaluate it on the frozen test split
-> paired comparisons -> ``results.json`` and ``summary.md``. Every model call goes through the
call cache and every finished rung is stored, so an interrupted run resumes where it stopped.

A user error inside one rung (a bad template, say) fails that rung with its sentence and the
others still run; nothing already computed is lost. Only the CLI prints.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .data import Splits, check_data, load_splits
from .errors import RungSkipped, TaskSpecError, TunewiseError
from .evaluation.runner import evaluate, usage_summary
from .evaluation.scoring import (
    PRIMARY_METRIC,
    compare_rungs,
    per_example_correct,
    score_predictions,
)
from .ladder import needs_llm, policy_ladder, resolve_rungs, uses_policy
from .policy import (
    PRIOR_API_TOKENS,
    Action,
    Budget,
    Observed,
    PlannedRung,
    PolicyConfig,
    Pricing,
    family_kind,
    next_action,
    rung_family,
    screen_subset,
    spent,
    stratified_order,
)
from .results import RungResult, RunResults, write_json
from .store import Store, environment_info, run_id_for
from .strategies.base import PrepareContext, get_strategy
from .summary import summary_markdown
from .task import RungSpec, TaskSpec

__all__ = ["RunOutcome", "run_task", "train_only", "quick_spec", "Progress", "QUICK_TEST_LIMIT", "QUICK_BUDGET_HOURS"]

# progress(label, done, total): the CLI draws bars; the library never prints
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class RunOutcome:
    results: RunResults
    results_path: Path
    summary_path: Path
    reused: tuple[str, ...]  # rungs whose stored results were reused
    report_path: Path | None = None  # report.html (with report.md, decision.json, edge_cases.md beside it)
    version: str | None = None  # the decision's winner as a deployable version, alias ``candidate``


class EmbeddingCache:
    """Embeddings memoised per text and persisted per request in the store (the train set once).

    It also remembers what each embedding cost when it was computed (``seconds``), so a
    candidate served from the cache still reports the true cost of embedding its inputs.
    """

    def __init__(self, store: Store, name: str, progress: Progress | None = None) -> None:
        self.store, self.name, self.progress = store, name, progress
        self._embedder: Any = None
        self._memo: dict[str, np.ndarray] = {}
        self._cost: dict[str, float] = {}
        self._frozen = False

    def freeze(self) -> None:
        """From now on, new texts are embedded but neither remembered nor stored (served traffic)."""
        self._frozen = True

    def _embed(self, texts: list[str]) -> np.ndarray:
        if self._embedder is None:
            from .embeddings import load_embedder

            self._embedder = load_embedder(self.name)
        report = (lambda done, total: self.progress(f"embedding ({self.name})", done, total)) if self.progress else None
        return self._embedder.embed(texts, progress=report)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if missing and self._frozen:
            fresh = dict(zip(missing, self._embed(missing)))
            return np.stack([self._memo[t] if t in self._memo else fresh[t] for t in texts])
        if missing:
            key = "emb:" + self.name + ":" + hashlib.sha256("\x00".join(missing).encode()).hexdigest()
            blob = self.store.get_blob(key)
            if blob is None:
                start = time.perf_counter()
                vectors = self._embed(missing)
                seconds = time.perf_counter() - start
                self.store.put_array(key, vectors, meta={"embedder": self.name, "texts": len(missing),
                                                         "seconds": seconds})
            else:  # one read: the blob holds both the vectors and what computing them cost
                vectors, seconds = blob.array(), blob.meta.get("seconds", 0.0)
            self._memo.update(zip(missing, vectors))
            self._cost.update(dict.fromkeys(missing, seconds / len(missing)))
        return np.stack([self._memo[t] for t in texts]) if texts else np.zeros((0, 1), dtype=np.float32)

    def seconds(self, texts: Sequence[str]) -> float:
        """Measured seconds it took to embed these texts (batched compute shared per text)."""
        return sum(self._cost.get(t, 0.0) for t in texts)


def _with_limit(spec: TaskSpec, limit: int | None) -> TaskSpec:
    if not limit:
        return spec
    return spec.model_copy(update={"data": spec.data.model_copy(update={"test_limit": limit})})


#: ``quick`` mode: a stratified test subset of at most this many examples ...
QUICK_TEST_LIMIT = 100
#: ... and at most this wall-time budget for the whole ladder (rungs that cannot fit are skipped and say so)
QUICK_BUDGET_HOURS = 4 / 60


def quick_spec(spec: TaskSpec) -> TaskSpec:
    """The spec of a quick run: a smaller frozen test subset and a few minutes of budget; a separate run id."""
    limit = min(spec.data.test_limit or QUICK_TEST_LIMIT, QUICK_TEST_LIMIT)
    hours = min(spec.constraints.budget_hours or QUICK_BUDGET_HOURS, QUICK_BUDGET_HOURS)
    return _with_limit(spec, limit).model_copy(update={
        "constraints": spec.constraints.model_copy(update={"budget_hours": hours})})


def _build_backend(spec: TaskSpec, store: Store, backend: Any, prices: Any = None) -> Any:
    from .backends import load_backend
    from .backends.cached import CachedBackend

    inner = backend if backend is not None else load_backend(spec.model, **_backend_options(spec, prices))
    return CachedBackend(inner, store)


def _backend_options(spec: TaskSpec, prices: Any) -> dict[str, Any]:
    """Constructor options of an ``openai:`` model: the task's ``backend`` section, paths resolved against the
    task file, the money cap defaulting to ``constraints.budget_usd`` and prices to the run's table."""
    if not spec.model.startswith("openai:"):
        return {}  # a --model override to another kind: the endpoint settings do not apply
    section = spec.backend
    options = {k: v for k, v in section.model_dump(exclude_unset=True).items() if v is not None} if section else {}
    if section is None or "budget_usd" not in section.model_fields_set:  # an explicit null: no cap
        options["budget_usd"] = spec.constraints.budget_usd
    if "api_key_file" in options:
        options["api_key_file"] = spec.resolve(options["api_key_file"])
    if isinstance(options.get("prices"), Path):
        options["prices"] = spec.resolve(options["prices"])
    elif "prices" not in options and prices is not None:
        options["prices"] = prices
    return options


def _data_info(splits: Splits) -> dict[str, Any]:
    return {
        "hash": splits.data_hash,
        "sizes": {"train": len(splits.train), "dev": len(splits.dev), "test": len(splits.test)},
        "dev_origin": splits.dev_origin,
        "test_origin": splits.test_origin,
        "labels": list(splits.labels) if splits.labels else None,
    }


class _Runner:
    """One run's state: the spec, splits, store and (lazily) backend and embeddings."""

    def __init__(self, spec: TaskSpec, splits: Splits, store: Store, run_id: str, *, backend: Any,
                 progress: Progress | None, prices: Any = None) -> None:
        from .costs import DEFAULT_PRICES

        self.spec, self.splits, self.store, self.run_id = spec, splits, store, run_id
        self.prices = prices or DEFAULT_PRICES
        self.progress = progress
        self._backend_arg = backend
        self._backend: Any = None
        self._backend_error: TunewiseError | None = None
        self.embed = EmbeddingCache(store, spec.embedder, progress)

    @property
    def backend(self) -> Any:
        """Built on first use (baseline-only runs never load a model); a failure is remembered."""
        if self._backend_error is not None:
            raise self._backend_error
        if self._backend is None:
            try:
                self._backend = _build_backend(self.spec, self.store, self._backend_arg, self.prices)
            except TunewiseError as exc:
                self._backend_error = exc
                raise
        return self._backend

    def _schema(self) -> Any:
        from .strategies.prompting import _schema

        return _schema(self.spec)

    def _score(self, predictions: Sequence[Any]) -> dict[str, Any]:
        golds = [e.target for e in self.splits.test]
        match = self.spec.generation.match if self.spec.generation else "normalized"
        return score_predictions(self.spec.kind, golds, predictions, labels=self.splits.labels or (),
                                 schema=self._schema(), match=match, seed=self.spec.seed)

    def _evaluate_for_strategy(self, candidate: Any, label: str) -> tuple[Any, tuple[Any, ...]]:
        """What a strategy uses to score an intermediate candidate (a learning-curve point) on test."""
        report = (lambda done, total: self.progress(f"{label}: test", done, total)) if self.progress else None
        ev = evaluate(candidate, self.splits.test, backend=None, progress=report)
        return self._score(ev.predictions)["metrics"][PRIMARY_METRIC[self.spec.kind]], ev.predictions

    def _match(self) -> str:
        return self.spec.generation.match if self.spec.generation else "normalized"

    def correct(self, predictions: Sequence[Any], examples: Sequence[Any] | None = None) -> np.ndarray:
        """Per-example correctness (the vector paired tests and early rejection use)."""
        examples = self.splits.test if examples is None else examples
        return per_example_correct(self.spec.kind, [e.target for e in examples], [p.output for p in predictions],
                                   match=self._match())

    def run_rung(self, rung: RungSpec, *, screen: Sequence[int] = (), best: tuple[str, float] | None = None,
                 deadline_s: float | None = None, delta: float = 0.01) -> RungResult:
        """Prepare and score one rung on the test split.

        ``screen`` (subset sizes) and ``best`` (name, CI low of the best finished rung): score nested
        stratified subsets first and return a ``skipped`` result with ``extras["early_rejection"]``
        when the rung cannot win. ``deadline_s``: seconds the evaluation may take before it stops
        (a ``skipped`` result; every call made is in the call cache).
        """
        from .backends.cached import CachedBackend

        backend = self.backend if needs_llm(rung) else None
        ctx = PrepareContext(spec=self.spec, splits=self.splits, backend=backend, embed=self.embed,
                             seed=self.spec.seed, progress=None, artifacts=self.spec.store_dir / "artifacts",
                             wrap_backend=lambda inner: CachedBackend(inner, self.store),
                             evaluate=self._evaluate_for_strategy, report=self.progress)
        self.store.start_rung(self.run_id, rung.name, config=rung.model_dump(), config_hash=rung.config_hash())
        start = time.perf_counter()
        candidate = get_strategy(rung.strategy)(rung, ctx)
        prepare_s = time.perf_counter() - start

        def report(done: int, total: int) -> None:
            if self.progress:
                self.progress(rung.name, done, total)
            if deadline_s is not None and time.perf_counter() - start > deadline_s and done < total:
                raise _OutOfBudget(done, total)

        try:
            if screen and best is not None:
                rejected = self._screen(rung, candidate, backend, screen, best, delta)
                if rejected is not None:
                    preds, action = rejected
                    extras: dict[str, Any] = {"early_rejection": action.to_json()}
                    stability = self._stability(rung, ctx, candidate, backend, preds)
                    if stability:
                        extras["stability"] = stability
                    return RungResult(name=rung.name, strategy=rung.strategy, status="skipped",
                                      config=candidate.config, config_hash=rung.config_hash(),
                                      usage=usage_summary(preds, wall_s=time.perf_counter() - start - prepare_s),
                                      prepare_s=prepare_s, reason=action.reason, extras=extras)
            ev = evaluate(candidate, self.splits.test, backend=backend, progress=report)
        except _OutOfBudget as out:
            return RungResult(name=rung.name, strategy=rung.strategy, status="skipped", config=candidate.config,
                              config_hash=rung.config_hash(), prepare_s=time.perf_counter() - start,
                              reason=f"stopped to stay within budget after {out.done} of {out.total} test examples "
                                     f"({time.perf_counter() - start:.0f} s of the {deadline_s:.0f} s left); the calls "
                                     "made are cached for a later run with more budget")
        finally:
            if hasattr(candidate, "close"):
                candidate.close()
        scored = self._score(ev.predictions)
        extras = dict(getattr(candidate, "extras", {}) or {})
        stability = self._stability(rung, ctx, candidate, backend, ev.predictions)
        if stability:
            extras["stability"] = stability
        return RungResult(
            name=rung.name, strategy=rung.strategy, status="finished", config=candidate.config,
            config_hash=rung.config_hash(), metrics=scored["metrics"], primary_metric=PRIMARY_METRIC[self.spec.kind],
            usage=usage_summary(ev.predictions, wall_s=ev.wall_s), per_label=scored.get("per_label"),
            confusions=scored.get("confusions"), parse=scored.get("parse"), prepare_s=prepare_s,
            predictions=ev.predictions, extras=extras,
        )

    def _screen_order(self) -> list[int]:
        """The test split in the stratified order early rejection scores it (nested subsets are prefixes)."""
        test = self.splits.test
        strata = [e.target if self.spec.kind == "classification" else "" for e in test]
        return stratified_order([e.id for e in test], strata, seed=self.spec.seed)

    def _stability(self, rung: RungSpec, ctx: PrepareContext, candidate: Any, backend: Any,
                   predictions: Sequence[Any]) -> dict[str, Any] | None:
        """How much a fixed-demonstration prompt rung's score moves with the demonstrations drawn and their order.

        For ``stability: n`` (a prompt parameter), the rung is re-prepared ``n`` times with other draw
        seeds (new demonstrations, new order) and ``n`` times with the same demonstrations shuffled,
        and each variant is scored on the same stratified test subset: the one early rejection
        stopped at, else a quarter of the test split (at least 60 examples). Every call is cached.
        """
        settings = getattr(candidate, "settings", None)
        n = int(getattr(settings, "stability", 0) or 0)
        if rung.strategy != "prompt" or n <= 0 or not getattr(candidate, "fixed_demos", None):
            return None
        test = self.splits.test
        order = self._screen_order()
        size = len(predictions) if len(predictions) < len(test) else min(len(test), max(60, len(test) // 4))
        subset = [test[i] for i in order[:size]]
        by_id = {p.example_id: p for p in predictions}
        base_seed = candidate.config.get("seed", self.spec.seed)
        variants = [("as scored", base_seed, None, [by_id[e.id] for e in subset])]
        params = {k: v for k, v in rung.params.items() if k not in ("seed", "order_seed", "stability")}
        for i in range(1, n + 1):
            for kind, extra in (("re-drawn", {"seed": base_seed + i}), ("re-ordered", {"seed": base_seed,
                                                                                      "order_seed": base_seed + i})):
                variant = rung.model_copy(update={"name": f"{rung.name}~{kind}{i}", "params": {**params, **extra}})
                other = get_strategy(rung.strategy)(variant, ctx)
                label = f"{rung.name}: stability {kind} {i}"
                report = (lambda done, total, label=label: self.progress(label, done, total)) if self.progress else None
                preds = evaluate(other, subset, backend=backend, progress=report).predictions
                variants.append((kind, extra["seed"], extra.get("order_seed"), list(preds)))
        rows = []
        for kind, seed, order_seed, preds in variants:
            correct = self.correct(preds, subset)
            rows.append({"variant": kind, "seed": seed, "order_seed": order_seed,
                         "value": float(np.mean(correct)), "correct": int(np.sum(correct)),
                         "outputs": [p.output for p in preds]})
        values = [r["value"] for r in rows]
        outputs = [r["outputs"] for r in rows]
        same = float(np.mean([len({str(o[j]) for o in outputs}) == 1 for j in range(size)]))
        return {"subset": size, "example_ids": [e.id for e in subset], "metric": PRIMARY_METRIC[self.spec.kind],
                "variants": rows, "spread": max(values) - min(values),
                "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, "same_answer": same}

    def _screen(self, rung: RungSpec, candidate: Any, backend: Any, sizes: Sequence[int], best: tuple[str, float],
                delta: float) -> tuple[tuple[Any, ...], Action] | None:
        """Successive halving: score growing nested stratified subsets; the rejection, or None to score fully.

        Every call goes through the call cache, so the full evaluation that follows reuses these.
        """
        test = self.splits.test
        order = self._screen_order()
        preds: list[Any] = []
        calls = 0
        for size in sizes:
            chunk = [test[i] for i in order[len(preds):size]]
            before = (backend.hits + backend.misses) if backend is not None else 0
            done = len(preds)
            report = ((lambda d, t, done=done, size=size: self.progress(f"{rung.name}: screen", done + d, size))
                      if self.progress else None)
            preds.extend(evaluate(candidate, chunk, backend=backend, progress=report).predictions)
            calls += ((backend.hits + backend.misses) if backend is not None else 0) - before
            subset = [test[i] for i in order[:size]]
            seconds = sum(p.latency_s / max(1, p.batch_size) for p in preds)
            action = screen_subset(rung.name, [bool(c) for c in self.correct(preds, subset)], best_name=best[0],
                                   best_low=best[1], n_test=len(test), calls=calls, seconds=seconds, delta=delta,
                                   metric=PRIMARY_METRIC[self.spec.kind])
            if action is not None:
                return tuple(preds), action
        return None


class _OutOfBudget(Exception):
    def __init__(self, done: int, total: int) -> None:
        super().__init__(f"{done}/{total}")
        self.done, self.total = done, total


def _comparisons(kind: str, splits: Splits, rungs: Sequence[RungResult], seed: int) -> list[dict[str, Any]]:
    """Every finished rung against the best one, paired on the same test examples."""
    done = [r for r in rungs if r.status == "finished" and r.primary is not None]
    if len(done) < 2:
        return []
    best = max(done, key=lambda r: r.primary.value)
    golds = [e.target for e in splits.test]
    vec = {r.name: per_example_correct(kind, golds, [p.output for p in r.predictions]) for r in done}
    out = []
    for r in done:
        if r.name != best.name:
            out.append({"a": best.name, "b": r.name, **compare_rungs(vec[best.name], vec[r.name], seed=seed)})
    return out


def _device(model: str) -> str:
    """Where a self-hosted model runs (prices and priors); API and fake models: cpu (no torch import)."""
    if model.partition(":")[0] not in ("local", "hf"):
        return "cpu"
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover - torch is a dependency of local models
        return "cpu"


def _pricing(spec: TaskSpec, device: str, prices: Any) -> Pricing:
    from .costs import is_self_hosted

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


def _plan(runner: "_Runner", rung: RungSpec) -> PlannedRung:
    """How the policy sees a rung before it runs: family, training work, whether it can run here."""
    spec = runner.spec
    family = rung_family(rung.strategy, rung.params, spec.kind)
    screenable = needs_llm(rung) and spec.kind != "extraction"  # extraction's field F1 is not a per-example mean
    if family_kind(family) != "tuned":
        return PlannedRung(rung.name, family, screenable=screenable)
    from .strategies.finetuning import _CURVE_KEYS, _check_runnable, _curve_steps
    from .training.settings import settings_from_params
    from .training.subsets import training_subset

    try:
        if rung.strategy == "learning_curve":
            base = settings_from_params(rung.name, rung.params, drop=_CURVE_KEYS)
            steps = _curve_steps(rung.name, dict(rung.params), spec.kind == "classification")
            settings = [base.model_copy(update=step) for step in steps]
        else:
            settings = [settings_from_params(rung.name, rung.params)]
        _check_runnable(rung.name, settings[0], spec)
        work = 0.0
        for s in settings:
            n = len(training_subset(runner.splits.train, per_label=s.per_label, fraction=s.fraction, limit=s.limit,
                                    seed=spec.seed))
            epochs = s.epochs_for(n)
            if s.max_steps:
                epochs = min(epochs, s.max_steps * s.batch_size * s.grad_accum / max(1, n))
            work += n * epochs
    except TunewiseError as exc:
        return PlannedRung(rung.name, family, blocked=str(exc))
    return PlannedRung(rung.name, family, train_example_epochs=work, evaluations=len(settings))


def _observe(runner: "_Runner", result: RungResult, family: str, pricing: Pricing) -> Observed:
    """What the policy needs from a rung result: scores, correctness and measured cost."""
    from .costs import is_self_hosted, request_cost

    usage = result.usage or {}
    eval_s = float(usage.get("model_seconds") or 0.0)
    seconds = float(result.prepare_s or 0.0) + eval_s
    examples = int(usage.get("requests") or 0)
    if pricing.usd_per_second is not None or family_kind(family) == "no_llm":
        usd = seconds * (pricing.usd_per_second or 0.0)
    else:
        per = request_cost(usage, None if is_self_hosted(runner.spec.model) else runner.spec.model,
                           runner.prices).per_request_usd if examples else 0.0
        usd = None if per is None else per * examples
    training = result.extras.get("training") or {}
    train_s = float(training.get("wall_s") or 0.0)
    train_work = float(training.get("examples") or 0) * float(training.get("epochs") or 0)
    if result.status != "finished" or result.primary is None:
        return Observed(result.name, family, "rejected" if "early_rejection" in result.extras else result.status,
                        seconds=seconds, eval_seconds=eval_s, examples=examples, usd=usd)
    m = result.primary
    correct = tuple(bool(c) for c in runner.correct([p for p in result.predictions]))
    return Observed(result.name, family, "finished", value=m.value, low=m.low, high=m.high, correct=correct,
                    seconds=seconds, eval_seconds=eval_s, examples=examples, usd=usd, train_s=train_s,
                    train_example_epochs=train_work)


def _budget(spec: TaskSpec) -> Budget:
    return Budget(hours=spec.constraints.budget_hours, usd=spec.constraints.budget_usd)


def _deadline(rung: PlannedRung, observed: dict[str, Observed], budget: Budget, pricing: Pricing) -> float | None:
    """Seconds the rung's evaluation may run before the budget is exceeded (None: no limit)."""
    spent_s, spent_usd = spent(observed)
    limits = []
    if budget.hours is not None:
        limits.append(budget.hours * 3600 - spent_s)
    elif rung.kind == "tuned":
        limits.append(budget.tuning_hours_default * 3600 - spent(observed, kind="tuned")[0])
    if budget.usd is not None and pricing.usd_per_second:
        limits.append((budget.usd - spent_usd) / pricing.usd_per_second)
    return max(0.0, min(limits)) if limits else None


def _record_skip(store: Store, run_id: str, rung: RungSpec, reason: str) -> RungResult:
    store.start_rung(run_id, rung.name, config=rung.model_dump(), config_hash=rung.config_hash())
    store.skip_rung(run_id, rung.name, reason)
    return RungResult(name=rung.name, strategy=rung.strategy, status="skipped", config=rung.model_dump(),
                      config_hash=rung.config_hash(), reason=reason)


def _walk(runner: "_Runner", rung_specs: Sequence[RungSpec], *, config: PolicyConfig = PolicyConfig()
          ) -> tuple[list[RungResult], list[str], dict[str, Any]]:
    """Climb the ladder with the policy: each step asks :func:`~tunewise.policy.next_action` what to do."""
    spec, store, run_id = runner.spec, runner.store, runner.run_id
    by_name = {r.name: r for r in rung_specs}
    planned = [_plan(runner, r) for r in rung_specs]
    plan_of = {p.name: p for p in planned}
    budget, pricing = _budget(spec), _pricing(spec, _device(spec.model), runner.prices)
    metric = PRIMARY_METRIC[spec.kind]
    target = spec.target.get(metric)
    n_test = len(runner.splits.test)
    observed: dict[str, Observed] = {}
    results: list[RungResult] = []
    reused: list[str] = []
    actions: list[Action] = []

    def settle(result: RungResult) -> None:
        results.append(result)
        observed[result.name] = _observe(runner, result, plan_of[result.name].family, pricing)

    while True:
        action = next_action(planned, observed, target=target, metric=metric, budget=budget, n_test=n_test,
                             pricing=pricing, config=config, seed=spec.seed)
        actions.append(action)
        if action.kind == "stop":
            break
        if action.kind == "escalate":
            for name in action.skipped:
                settle(_record_skip(store, run_id, by_name[name], f"skipped: {action.reason}"))
            continue
        rung = by_name[action.rung]
        if action.kind == "skip":
            settle(_record_skip(store, run_id, rung, action.reason))
            continue
        record = store.rung_result(run_id, rung.name, config_hash=rung.config_hash())
        if record is not None and record.result:
            settle(RungResult.from_json(record.result))
            reused.append(rung.name)
            continue
        finished = [o for o in observed.values() if o.status == "finished" and o.low is not None]
        best = max(finished, key=lambda o: o.value) if finished else None
        try:
            result = runner.run_rung(rung, screen=action.screen, best=(best.name, best.low) if best else None,
                                     deadline_s=_deadline(plan_of[rung.name], observed, budget, pricing),
                                     delta=config.look_delta)
        except RungSkipped as exc:
            store.skip_rung(run_id, rung.name, str(exc))
            settle(RungResult(name=rung.name, strategy=rung.strategy, status="skipped", config=rung.model_dump(),
                              reason=str(exc)))
            continue
        except TunewiseError as exc:
            store.fail_rung(run_id, rung.name, str(exc))
            settle(RungResult(name=rung.name, strategy=rung.strategy, status="failed", config=rung.model_dump(),
                              error=str(exc)))
            continue
        if result.status == "finished":
            store.finish_rung(run_id, rung.name, result.to_json())
        else:
            store.skip_rung(run_id, rung.name, result.reason or "skipped")
            rejection = result.extras.get("early_rejection")
            if rejection:
                actions.append(Action(**{**rejection, "skipped": tuple(rejection.get("skipped", ())),
                                         "screen": tuple(rejection.get("screen", ()))}))
            else:
                actions.append(Action("skip", rung.name, result.reason or "skipped"))
        settle(result)
    rejected = [a for a in actions if a.kind == "reject"]
    spent_s, spent_usd = spent(observed)
    ladder = {
        "mode": "policy",
        "target": {metric: target} if target is not None else None,
        "budget": {"hours": budget.hours, "usd": budget.usd,
                   "tuning_hours_default": None if budget.hours is not None else budget.tuning_hours_default,
                   "spent_s": spent_s, "spent_usd": spent_usd, "pricing": pricing.basis},
        "config": {"patience": config.patience, "fractions": list(config.fractions), "delta": config.delta,
                   "min_subset": config.min_subset},
        "actions": [a.to_json() for a in actions],
        "early_rejection": {"rungs": [a.rung for a in rejected],
                            "saved_calls": sum(a.saved_calls or 0.0 for a in rejected),
                            "saved_s": sum(a.saved_s or 0.0 for a in rejected)},
    }
    return results, reused, ladder


def _run_fixed(runner: "_Runner", rung_specs: Sequence[RungSpec]) -> tuple[list[RungResult], list[str]]:
    """Every named rung, in order, no policy: reuse a finished result, else run it."""
    store, run_id = runner.store, runner.run_id
    results: list[RungResult] = []
    reused: list[str] = []
    for rung in rung_specs:
        record = store.rung_result(run_id, rung.name, config_hash=rung.config_hash())
        if record is not None and record.result:
            results.append(RungResult.from_json(record.result))
            reused.append(rung.name)
            continue
        try:
            result = runner.run_rung(rung)
        except RungSkipped as exc:
            store.skip_rung(run_id, rung.name, str(exc))
            results.append(RungResult(name=rung.name, strategy=rung.strategy, status="skipped",
                                      config=rung.model_dump(), reason=str(exc)))
            continue
        except TunewiseError as exc:
            store.fail_rung(run_id, rung.name, str(exc))
            results.append(RungResult(name=rung.name, strategy=rung.strategy, status="failed",
                                      config=rung.model_dump(), error=str(exc)))
            continue
        store.finish_rung(run_id, rung.name, result.to_json())
        results.append(result)
    return results, reused


def run_task(
    spec: TaskSpec,
    *,
    rungs: Sequence[str] | None = None,
    limit: int | None = None,
    backend: Any = None,
    progress: Progress | None = None,
    task_path: Path | None = None,
    report: bool = True,
    policy: bool | None = None,
    prices: Any = None,
    quick: bool = False,
) -> RunOutcome:
    """Run (or resume) the task; returns the results and where they were written.

    With no ``rungs`` and no ``rungs:`` in the task, the ladder policy (``policy.py``) walks the
    default ladder plus the tuning rungs within the task's budgets; named rungs run as a fixed list.
    ``policy`` forces either way (True: walk the named rungs with the policy; False: run them all).
    ``prices``: a :class:`~tunewise.costs.Prices` table (default: the built-in one); it prices the
    budget, the decision and the report, and is recorded in ``results.json`` so that
    ``tunewise report`` recomputes the same decision.
    ``quick``: :func:`quick_spec` (at most :data:`QUICK_TEST_LIMIT` test examples, a
    :data:`QUICK_BUDGET_HOURS` budget): a first answer in minutes, with wider intervals.
    """
    spec = _with_limit(spec, limit)
    if quick:
        spec = quick_spec(spec)
    splits = load_splits(spec)
    checks = check_data(splits, kind=spec.kind)
    walk_default = uses_policy(spec, rungs) and policy is not False
    rung_specs = policy_ladder(spec) if walk_default else resolve_rungs(spec, rungs)
    store = Store(spec.store_dir)
    run_id = run_id_for(spec.fingerprint(), splits.data_hash)
    store.start_run(task_name=spec.name, spec=spec.model_dump(mode="json"), spec_hash=spec.fingerprint(),
                    data_hash=splits.data_hash, task_path=task_path, run_id=run_id)
    runner = _Runner(spec, splits, store, run_id, backend=backend, progress=progress, prices=prices)
    walk = uses_policy(spec, rungs) if policy is None else policy
    results: list[RungResult] = []
    reused: list[str] = []
    ladder: dict[str, Any] = {"mode": "fixed"}
    status = "finished"
    try:
        if walk:
            results, reused, ladder = _walk(runner, rung_specs)
        else:
            results, reused = _run_fixed(runner, rung_specs)
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        if status == "interrupted":
            store.finish_run(run_id, "interrupted")
    out_dir = spec.store_dir / "runs" / run_id
    run_results = RunResults(
        run_id=run_id, task=spec.model_dump(mode="json"), data=_data_info(splits), checks=checks.to_json(),
        rungs=tuple(results), comparisons=_comparisons(spec.kind, splits, results, spec.seed),
        environment={**environment_info(), "backend": dict(getattr(runner._backend, "info", {}) or {}),
                     "prices": runner.prices.model_dump(mode="json")},
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), seed=spec.seed, ladder=ladder,
        status="finished" if all(r.status in ("finished", "skipped") for r in results) else "partial",
    )
    payload = run_results.to_json()
    results_path = write_json(out_dir / "results.json", payload)
    summary_path = out_dir / "summary.md"
    summary_path.write_text(summary_markdown(run_results), encoding="utf-8")
    if report:  # after results.json: a failure here loses nothing computed, `tunewise report` redoes it
        from .report import render_report

        report_path = render_report(payload, spec=spec, test_examples=splits.test, out_dir=out_dir,
                                    prices=runner.prices).html
    store.finish_run(run_id, "finished" if run_results.status == "finished" else "failed", results_path)
    version = _register_winner(store, run_id, payload, spec, runner.prices)
    store.close()
    if runner._backend is not None and backend is None:  # ours to close (threads, connections); not a caller's
        runner._backend.close()
    return RunOutcome(results=run_results, results_path=results_path, summary_path=summary_path,
                      reused=tuple(reused), report_path=report_path if report else None, version=version)


def _register_winner(store: Store, run_id: str, payload: dict[str, Any], spec: TaskSpec, prices: Any) -> str | None:
    """The decision's winner becomes a version under the alias ``candidate`` (None: no deployable winner)."""
    from .decision import decide
    from .versions import register_winner

    try:
        version = register_winner(store, run_id, decide(payload, spec, prices).winner)
    except TunewiseError:  # e.g. its artifact was deleted meanwhile: the run's results stand without it
        return None
    return version.id if version else None


def train_only(spec: TaskSpec, rung_name: str, *, progress: Progress | None = None) -> Any:
    """Train (or reuse) one ``finetune`` rung's artifact: no evaluation, and the run store is never opened.

    The splits, seed and artifact directory are exactly :func:`run_task`'s, so a later ``run_task``
    of the rung reuses the artifact (``artifact_reused`` in its config). Safe to call from every
    process of an ``accelerate launch`` / ``torchrun`` job: only rank 0 writes the artifact.
    Returns the :class:`~tunewise.training.trainer.TrainedArtifact` (empty provenance on other ranks).
    """
    from .strategies.finetuning import train_rung_artifact

    (rung,) = resolve_rungs(spec, [rung_name])
    if rung.strategy != "finetune":
        raise TaskSpecError(f"rung '{rung.name}' uses strategy '{rung.strategy}'; only 'finetune' rungs can be "
                            "trained on their own (run the others with `tunewise run`).")
    splits = load_splits(spec)
    ctx = PrepareContext(spec=spec, splits=splits, seed=spec.seed, artifacts=spec.store_dir / "artifacts",
                         report=progress)
    return train_rung_artifact(rung, ctx)
