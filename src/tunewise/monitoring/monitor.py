"""``monitor``: put recent traffic and the evaluation's reference data through the drift checks.

Reference (what the deployed candidate was judged on): the task's frozen test split (inputs for
the embedding, length and word checks; the training words for the unseen-word check) and one
rung's predictions on that split (predicted labels, confidences, evaluated accuracy) from a run of
the same data in the store. The rung is ``rung=`` (in the newest such run) when given; else the
rung the most served version was made from, when the store records versions (``tunewise
versions``); else the newest run's decision winner (``decision.json`` beside ``results.json``),
else its best finished rung.

Traffic: the request log's window (``traffic.py``). Input checks use every served request;
prediction, confidence and accuracy checks use the requests of the most common version (the
reference is one rung's evaluation, so mixing versions would compare apples and pears). Arms
``a`` and ``b`` are compared on feedback accuracy and latency; shadow answers are paired with the
served answer to the same input and compared on the inputs with a feedback label.

Out of scope: the statistics (``drift.py``, ``arms.py``), writing the labelled export (``export.py``), printing.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..data import load_splits
from ..errors import TunewiseError
from ..store import DB_FILENAME, RunRecord, Store
from ..task import TaskSpec
from .arms import ArmComparison, compare_accuracy, compare_latency, compare_paired_arms
from .drift import (
    Check,
    Verdict,
    accuracy_drop,
    confidence_drop,
    input_drift,
    length_shift,
    oov_shift,
    prediction_shift,
    summarize,
    vocabulary_shift,
    words,
)
from .traffic import REQUEST_LOG, MonitorError, Request, Traffic, parse_duration, read_traffic

__all__ = ["MonitorConfig", "Reference", "MonitorReport", "load_reference", "run_checks", "monitor", "is_correct"]

Embed = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class MonitorConfig:
    """Significance level (family-wise, Holm), permutations and the smallest samples a check runs on.

    The minimums come from ``benchmarks/drift_calibration.py`` (BANKING77, 308-query reference): at 50
    requests all checks together fired on 2.0% of 200 same-distribution windows, on every window of
    traffic on 10 intents, typos or longer messages, and on 60% with 20% of traffic from an unseen intent.
    """

    alpha: float = 0.05
    permutations: int = 1000
    min_requests: int = 50
    min_feedback: int = 20
    min_arm: int = 10
    seed: int = 0


@dataclass(frozen=True)
class Reference:
    """What the deployed candidate was evaluated on; ``run_id``/``rung`` None when no run was found (``note`` says why)."""

    texts: tuple[str, ...]
    vocabulary: frozenset[str]
    labels: tuple[str, ...] | None
    run_id: str | None = None
    rung: str | None = None
    rung_basis: str = ""
    predictions: tuple[str, ...] = ()
    confidences: tuple[float, ...] = ()
    metric: str | None = None
    accuracy: float | None = None
    accuracy_n: int | None = None
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "rung": self.rung, "rung_basis": self.rung_basis, "test_inputs": len(self.texts),
                "metric": self.metric, "accuracy": self.accuracy, "accuracy_n": self.accuracy_n, "note": self.note}


@dataclass(frozen=True)
class MonitorReport:
    """Everything one ``monitor`` call found; ``to_json`` is what ``--json`` prints."""

    task: str
    log: str
    window: dict[str, Any]
    reference: Reference
    version: str | None
    verdict: Verdict
    arms: tuple[ArmComparison, ...]
    created_at: str
    traffic: Traffic = field(repr=False, compare=False)

    @property
    def drifted(self) -> bool:
        return self.verdict.status == "drift"

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "log": self.log, "created_at": self.created_at, "window": self.window,
                "reference": self.reference.to_json(), "version": self.version, "verdict": self.verdict.to_json(),
                "arms": [a.to_json() for a in self.arms]}


# --------------------------------------------------------------------------- reference


def _newest_run(store: Store, spec: TaskSpec, data_hash: str) -> RunRecord | None:
    """The newest run with results over the same data (so its predictions are on this test split)."""
    runs = [r for r in store.list_runs() if r.data_hash == data_hash and r.results_path]
    runs.sort(key=lambda r: (r.task_name == spec.name, r.updated_at), reverse=True)
    return runs[0] if runs else None


def _results_file(record: RunRecord, store_dir: Path) -> Path:
    recorded, in_store = Path(record.results_path or ""), store_dir / "runs" / record.id / "results.json"
    return in_store if not recorded.is_file() and in_store.is_file() else recorded


def _pick_rung(results: dict[str, Any], path: Path, rung: str | None) -> tuple[dict[str, Any], str]:
    finished = {r["name"]: r for r in results.get("rungs", []) if r.get("status") == "finished"}
    if rung is not None:
        if rung not in finished:
            names = ", ".join(finished) or "none"
            raise MonitorError(f"{path}: rung '{rung}' has no finished result (finished rungs: {names}).")
        return finished[rung], "named with --rung"
    if not finished:
        raise MonitorError(f"{path}: the run has no finished rung to compare predictions with.")
    decision = path.parent / "decision.json"
    try:
        winner = json.loads(decision.read_text(encoding="utf-8")).get("winner")
    except (OSError, ValueError, AttributeError):
        winner = None
    if winner in finished:
        return finished[winner], "the decision's winner"

    def value(r: dict[str, Any]) -> float:
        v = (r.get("metrics", {}).get(r.get("primary_metric", "")) or {}).get("value")
        return -math.inf if v is None else float(v)

    return max(finished.values(), key=value), "the best finished rung"


def _with_predictions(ref: Reference, rung: dict[str, Any], *, run_id: str, basis: str) -> Reference:
    preds = rung.get("predictions") or []
    metric = rung.get("primary_metric")
    value = (rung.get("metrics", {}).get(metric) or {}) if metric in ("accuracy", "exact_match") else {}
    return Reference(texts=ref.texts, vocabulary=ref.vocabulary, labels=ref.labels, run_id=run_id, rung=rung["name"],
                     rung_basis=basis, predictions=tuple("" if p.get("output") is None else str(p["output"])
                                                         for p in preds),
                     confidences=tuple(float(p["confidence"]) for p in preds if p.get("confidence") is not None),
                     metric=metric if value else None, accuracy=value.get("value"), accuracy_n=value.get("n"))


def _version_run(store: Store, version: str | None, data_hash: str) -> tuple[RunRecord, str] | None:
    """The run and rung a served version was made from, when the store records versions (``tunewise versions``).

    Read loosely (no import of the versions module): a store without versions, an unknown id, or a
    version made from other data (another test split) gives None.
    """
    get = getattr(store, "get_version", None)
    if get is None or version is None:
        return None
    try:
        manifest = getattr(get(version), "manifest", None) or {}
    except (sqlite3.Error, TunewiseError):
        return None
    run_id, name = manifest.get("run_id"), (manifest.get("rung") or {}).get("name")
    run = store.get_run(run_id) if run_id and name else None
    return (run, name) if run is not None and run.data_hash == data_hash and run.results_path else None


def load_reference(spec: TaskSpec, *, rung: str | None = None, version: str | None = None) -> Reference:
    """The test split, the training vocabulary and (when the store has a run of this data) a rung's predictions.

    The rung: ``rung`` in the newest run of this data; else the rung the served ``version`` was made
    from; else the newest run's decision winner, else its best finished rung.
    """
    splits = load_splits(spec)
    vocabulary = frozenset(w for e in (*splits.train, *splits.dev) for w in words(e.text))
    ref = Reference(texts=tuple(e.text for e in splits.test), vocabulary=vocabulary, labels=splits.labels)
    record, from_version = None, None
    if (spec.store_dir / DB_FILENAME).is_file():
        with Store(spec.store_dir) as store:
            found = None if rung is not None else _version_run(store, version, splits.data_hash)
            record, from_version = found if found else (_newest_run(store, spec, splits.data_hash), None)
    if record is None:
        if rung is not None:
            raise MonitorError(f"No run of this task's data in {spec.store_dir}; run `tunewise run` before --rung.")
        note = f"no run of this data in {spec.store_dir}, so predictions, confidence and accuracy are not checked"
        return Reference(texts=ref.texts, vocabulary=vocabulary, labels=ref.labels, note=note)
    path = _results_file(record, spec.store_dir)
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MonitorError(f"{path}: cannot read the results of run {record.id} ({exc.__class__.__name__}).") from None
    chosen, basis = _pick_rung(results, path, rung or from_version)
    if from_version:
        basis = f"the rung version {version} was made from"
    return _with_predictions(ref, chosen, run_id=record.id, basis=basis)


# --------------------------------------------------------------------------- checks


def _norm(value: Any) -> str:
    return " ".join(str(value).split()).casefold()


def is_correct(request: Request, *, kind: str = "classification") -> bool | None:
    """Whether the served output matches the feedback label (normalised text, or equal JSON for
    extraction); with only a score, score >= 0.5 counts as correct; None without feedback."""
    if request.label is not None:
        if request.output is None:
            return False
        if kind == "extraction":
            try:
                return json.loads(request.output) == json.loads(request.label)
            except ValueError:
                pass
        return _norm(request.output) == _norm(request.label)
    return None if request.score is None else request.score >= 0.5


def _input_checks(served: Sequence[Request], ref: Reference, embed: Embed, c: MonitorConfig) -> list[Check]:
    texts = [r.input for r in served]
    ref_words, cur_words = [words(t) for t in ref.texts], [words(t) for t in texts]
    common = {"alpha": c.alpha, "min_current": c.min_requests}
    perm = {**common, "permutations": c.permutations, "seed": c.seed}
    enough = len(texts) >= c.min_requests  # embed nothing (no model load) when the checks will not run
    x = embed(list(ref.texts)) if enough else np.zeros((len(ref.texts), 1))
    y = embed(texts) if enough else np.zeros((len(texts), 1))
    return [input_drift(x, y, **perm),
            length_shift([len(w) for w in ref_words], [len(w) for w in cur_words], **common),
            oov_shift(ref_words, cur_words, vocabulary=ref.vocabulary, **perm),
            vocabulary_shift(ref_words, cur_words, **perm)]


def _output_checks(mine: Sequence[Request], ref: Reference, kind: str, c: MonitorConfig) -> list[Check]:
    common = {"alpha": c.alpha, "min_current": c.min_requests}
    checks: list[Check] = []
    if ref.predictions and kind == "classification":
        outputs = ["" if r.output is None else r.output for r in mine]
        checks.append(prediction_shift(ref.predictions, outputs, permutations=c.permutations, seed=c.seed, **common))
    confidences = [r.confidence for r in mine if r.confidence is not None]
    if ref.confidences and confidences:
        checks.append(confidence_drop(ref.confidences, confidences, **common))
    if ref.accuracy is not None:
        verdicts = [v for v in (is_correct(r, kind=kind) for r in mine) if v is not None]
        checks.append(accuracy_drop(sum(verdicts), len(verdicts), expected=ref.accuracy, expected_n=ref.accuracy_n,
                                    alpha=c.alpha, min_current=c.min_feedback))
    return checks


def _shadow_pairs(traffic: Traffic, kind: str) -> tuple[list[bool], list[bool]]:
    """(served correct, shadow correct) for shadow answers whose input a labelled served request has (nearest in time)."""
    by_input: dict[str, list[Request]] = {}
    for r in traffic.requests:
        if is_correct(r, kind=kind) is not None:
            by_input.setdefault(r.input, []).append(r)
    served, shadow = [], []
    for s in traffic.shadow:
        if s.input in by_input:
            twin = min(by_input[s.input], key=lambda r: abs(r.ts - s.ts))
            feedback = replace(s, label=twin.label, score=twin.score)
            served.append(bool(is_correct(twin, kind=kind)))
            shadow.append(bool(is_correct(feedback, kind=kind)))
    return served, shadow


def _arms(traffic: Traffic, kind: str, c: MonitorConfig) -> list[ArmComparison]:
    by_arm: dict[str, list[Request]] = {}
    for r in traffic.requests:
        by_arm.setdefault(r.arm, []).append(r)
    out: list[ArmComparison] = []
    if {"a", "b"} <= set(by_arm):
        ca, cb = ([v for v in (is_correct(r, kind=kind) for r in by_arm[arm]) if v is not None] for arm in "ab")
        out.append(compare_accuracy(sum(ca), len(ca), sum(cb), len(cb), alpha=c.alpha, min_n=c.min_arm))
        la, lb = ([r.latency_s for r in by_arm[arm] if r.latency_s is not None] for arm in "ab")
        out.append(compare_latency(la, lb, alpha=c.alpha, min_n=c.min_arm, seed=c.seed))
    if traffic.shadow:
        served, shadow = _shadow_pairs(traffic, kind)
        out.append(compare_paired_arms(served, shadow, arm_a="served", arm_b="shadow", alpha=c.alpha,
                                       min_n=c.min_arm, seed=c.seed))
        ls = [r.latency_s for r in traffic.requests if r.latency_s is not None]
        lsh = [r.latency_s for r in traffic.shadow if r.latency_s is not None]
        out.append(compare_latency(ls, lsh, arm_a="served", arm_b="shadow", alpha=c.alpha, min_n=c.min_arm,
                                   seed=c.seed))
    return out


def run_checks(traffic: Traffic, reference: Reference, *, embed: Embed, kind: str = "classification",
               config: MonitorConfig = MonitorConfig()) -> tuple[list[Check], list[ArmComparison], str | None]:
    """The drift checks (unadjusted), the arm comparisons and the version the output checks looked at."""
    versions = Counter(r.version for r in traffic.requests)
    version = versions.most_common(1)[0][0] if versions else None
    mine = [r for r in traffic.requests if r.version == version]
    checks = _input_checks(traffic.requests, reference, embed, config) + _output_checks(mine, reference, kind, config)
    return checks, _arms(traffic, kind, config), version


# --------------------------------------------------------------------------- the whole thing


def _utc(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def monitor(spec: TaskSpec, *, since: str | None = "7d", last: int | None = None, rung: str | None = None,
            embed: Embed | None = None, config: MonitorConfig = MonitorConfig(), now: float | None = None,
            log: Path | None = None) -> MonitorReport:
    """Check the last ``since`` (a duration such as ``7d``; None for all) and/or ``last`` requests of the
    task's request log (``<store>/serve/requests.sqlite`` unless ``log``) against its evaluation."""
    path = log or spec.store_dir / REQUEST_LOG
    traffic = read_traffic(path, since_s=None if since is None else parse_duration(since), last=last, now=now)
    versions = Counter(r.version for r in traffic.requests)
    reference = load_reference(spec, rung=rung, version=versions.most_common(1)[0][0] if versions else None)
    if embed is not None:
        checks, arms, version = run_checks(traffic, reference, embed=embed, kind=spec.kind, config=config)
    else:
        from ..embeddings import (
            EmbeddingCache,  # the store's cache: the run has usually embedded the test split already
        )

        with Store(spec.store_dir) as store:
            checks, arms, version = run_checks(traffic, reference, embed=EmbeddingCache(store, spec.embedder),
                                               kind=spec.kind, config=config)
    start = traffic.first_ts if traffic.first_ts is not None else traffic.since
    window_text = f"since {_utc(start)}" if start is not None else ""
    verdict = summarize(checks, n_requests=len(traffic.requests), window=window_text, alpha=config.alpha)
    window = {"since": since, "last": last, "start": _utc(start), "requests": len(traffic.requests),
              "feedback": sum(r.label is not None or r.score is not None for r in traffic.requests),
              "labelled": len(traffic.labelled), "shadow": len(traffic.shadow),
              "versions": dict(Counter(r.version for r in traffic.requests).most_common())}
    return MonitorReport(task=spec.name, log=str(path), window=window, reference=reference, version=version,
                         verdict=verdict, arms=tuple(arms), traffic=traffic,
                         created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
