"""Versions: a finished rung turned into a deployable, content-hashed record, and the aliases that point at it.

A *version* is everything needed to rebuild one candidate exactly as it was measured: the task spec
and where it lives, the run and rung, the candidate's recorded configuration (prompt, demonstrations,
parameters), the model, the trained artifact with its fingerprint, the data hash, the seed, the
library versions of the run and the rung's measured metric with its confidence interval. Its id is
the short sha256 of that manifest (which holds no timestamp), so the same rung result always makes
the same version.

*Aliases* (``production``, ``candidate``, ...) name versions. Each move of an alias is appended to
its history; ``promote`` pushes a version and ``rollback`` pops back to the one before, in one step.

:func:`load_candidate` rebuilds a version's candidate by calling its strategy on the recorded task,
exactly as a run does (``ladder/attempt.py``), and never trains: a missing artifact is an error.

Deployable strategies: ``prompt`` (a prompt program with its demonstrations), ``finetune`` (a base
model with an adapter, or a fully tuned model) and the LLM-free baselines ``knn`` and ``probe``.
Out of scope: serving (``serving/``) and choosing the winner (``decision.py``).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import StoreError
from .store import Store, VersionRecord

__all__ = ["Version", "DEPLOYABLE", "deployable", "create_version", "list_versions", "promote", "rollback", "rollback_target",
           "resolve", "aliases_of", "load_candidate", "register_winner"]

DEPLOYABLE = ("prompt", "finetune", "knn", "probe", "encoder_ft", "distill", "optimize")
FORMAT = 1
_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
_ID_LENGTH = 12
# measured while preparing, or where the store happens to be: not what the candidate is, so a
# rebuild is not compared on them (a finetune artifact is compared by its key and fingerprint)
_VOLATILE = frozenset({"index_seconds", "fit_seconds", "artifact_reused", "artifact"})


@dataclass(frozen=True)
class Version:
    """A recorded deployable candidate; ``manifest`` is what its id hashes."""

    id: str
    created_at: str
    manifest: dict[str, Any]

    @property
    def rung(self) -> str:
        return self.manifest["rung"]["name"]

    @property
    def strategy(self) -> str:
        return self.manifest["rung"]["strategy"]

    @property
    def run_id(self) -> str:
        return self.manifest["run_id"]

    @property
    def metric(self) -> dict[str, Any] | None:
        return self.manifest.get("metric")

    def describe(self) -> str:
        """One line: rung, strategy, model and metric."""
        m = self.metric
        score = (f"{m['name']} {100 * m['value']:.1f}% [{100 * m['low']:.1f}, {100 * m['high']:.1f}]"
                 if m and m.get("value") is not None else "no metric")
        what = self.manifest.get("model") or self.manifest.get("embedder") or ""
        return f"{self.manifest['task']['name']}/{self.rung} ({self.strategy}, {what}) {score}"


def _version(record: VersionRecord) -> Version:
    return Version(id=record.id, created_at=record.created_at, manifest=record.manifest)


def version_id(manifest: dict[str, Any]) -> str:
    """Short sha256 of the canonical (sorted, compact) JSON of the manifest."""
    blob = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:_ID_LENGTH]


# --------------------------------------------------------------------------- making versions


def _finished_rung(store: Store, run_id: str, rung: str) -> tuple[Any, Any]:
    run = store.find_run(run_id)
    record = store.get_rung(run.id, rung)
    if record is None:
        raise StoreError(f"Run {run.id} has no rung '{rung}'.")
    if record.status != "finished" or not record.result:
        raise StoreError(f"Rung '{rung}' of run {run.id} is {record.status}; only a finished rung can become a "
                         "version.")
    strategy = record.result.get("strategy") or record.config.get("strategy")
    if strategy not in DEPLOYABLE:
        raise StoreError(f"Rung '{rung}' uses strategy '{strategy}', which cannot be deployed (deployable: "
                         f"{', '.join(DEPLOYABLE)}).")
    if not deployable(record.result):
        student = (record.result.get("config") or {}).get("student")
        raise StoreError(f"Rung '{rung}' distilled into a {student} student, which is not saved as a model to deploy "
                         "(an encoder_ft student is).")
    return run, record


def deployable(result: dict[str, Any]) -> bool:
    """Whether a finished rung's result can become a version: a deployable strategy, and a distilled student only
    when it is a saved fine-tuned encoder (its training labels were the teacher's, which a rebuild never remakes)."""
    config = result.get("config") or {}
    strategy = result.get("strategy") or config.get("strategy")
    if strategy == "distill":
        return (config.get("student_config") or {}).get("strategy") == "encoder_ft"
    return strategy in DEPLOYABLE


def _artifact(store: Store, config: dict[str, Any]) -> dict[str, Any] | None:
    """The trained artifact of a finetune candidate: path (relative to the store), kind and fingerprint.

    Found by its content key in this store (the recorded path may be relative to where the run started).
    """
    if config.get("strategy") not in ("finetune", "encoder_ft", "distill"):
        return None
    from .backends.model_cache import directory_fingerprint

    path = store.directory / "artifacts" / (  # a fine-tuned encoder's directory is the content key itself
        Path(config["artifact"]).name if config["strategy"] in ("encoder_ft", "distill")
        else Path(str(config.get("artifact_key"))) / Path(config["artifact"]).name)
    if not path.is_dir():
        raise StoreError(f"The trained artifact {path} is missing; run the task again to train it.")
    return {"path": str(path.relative_to(store.directory)), "kind": config.get("artifact_kind"), "key": config.get("artifact_key"),
            "fingerprint": directory_fingerprint(path)}


def _manifest(store: Store, run: Any, record: Any) -> dict[str, Any]:
    result, spec = record.result, run.spec
    strategy = result.get("strategy") or record.config["strategy"]
    metric = (result.get("metrics") or {}).get(result.get("primary_metric") or "")
    llm = strategy in ("prompt", "finetune", "optimize")
    rung = {"name": record.name, "strategy": strategy, "params": record.config.get("params", {})}
    if record.config.get("model") is not None:  # one of several models (one-model versions keep their ids)
        rung["model"] = record.config["model"]
    return {
        "format": FORMAT,
        "task": {"name": run.task_name, "path": run.task_path, "spec": spec},
        "run_id": run.id,
        "rung": rung,
        "candidate": result.get("config") or {},
        "model": (result.get("model") or spec.get("model")) if llm else None,
        "embedder": spec.get("embedder") if strategy in ("knn", "probe") or result.get("config", {}).get(
            "selection") == "retrieved" else None,
        "artifact": _artifact(store, result.get("config") or {}),
        "data_hash": run.data_hash,
        "seed": spec.get("seed", 0),
        "versions": (run.environment or {}).get("versions", {}),
        "metric": None if metric is None else {"name": result["primary_metric"], **metric},
    }


def create_version(store: Store, run_id: str, rung: str) -> Version:
    """Record the finished ``rung`` of run ``run_id`` (an id or unique prefix) as a version; idempotent."""
    run, record = _finished_rung(store, run_id, rung)
    manifest = _manifest(store, run, record)
    return _version(store.put_version(version_id(manifest), manifest))


def register_winner(store: Store, run_id: str, winner: str | None, *, alias: str = "candidate") -> Version | None:
    """The decision's winner as a version under ``alias``; None when nothing won or it cannot be deployed."""
    if winner is None:
        return None
    record = store.get_rung(run_id, winner)
    if record is None or not record.result or not deployable(record.result):
        return None
    version = create_version(store, run_id, winner)
    return promote(store, version.id, alias)


# --------------------------------------------------------------------------- aliases


def list_versions(store: Store) -> list[Version]:
    """Newest first."""
    return [_version(store.get_version(vid)) for vid in store.version_ids()]


def aliases_of(store: Store) -> dict[str, list[str]]:
    """version id -> the aliases pointing at it."""
    out: dict[str, list[str]] = {}
    for alias, vid in store.aliases().items():
        out.setdefault(vid, []).append(alias)
    return out


def resolve(store: Store, alias_or_id: str) -> Version:
    """An alias, a version id, or a unique prefix of one (at least 4 characters)."""
    vid = store.aliases().get(alias_or_id)
    if vid is None:
        exact = store.get_version(alias_or_id)
        found = [alias_or_id] if exact else (store.version_ids(alias_or_id) if len(alias_or_id) >= 4 else [])
        if len(found) > 1:
            raise StoreError(f"Version prefix {alias_or_id!r} matches several versions ({', '.join(found[:5])}); "
                             "give more characters.")
        if not found:
            raise StoreError(f"No version or alias {alias_or_id!r} in {store.path}.")
        vid = found[0]
    record = store.get_version(vid)
    assert record is not None
    return _version(record)


def _check_alias(alias: str) -> None:
    if not _ALIAS.fullmatch(alias) or re.fullmatch(f"[0-9a-f]{{{_ID_LENGTH}}}", alias):
        raise StoreError(f"Alias {alias!r} is not a valid name (a letter, then letters, digits, '_', '.' or '-', "
                         "and not shaped like a version id).")


def _stack(store: Store, alias: str) -> list[str]:
    """The alias's versions as a stack: promote pushes, rollback pops (replayed from the history)."""
    stack: list[str] = []
    for vid, action, _ in store.alias_history(alias):
        if action == "rollback":
            del stack[-1:]
        else:
            stack.append(vid)
    return stack


def promote(store: Store, version: str, alias: str) -> Version:
    """Point ``alias`` at ``version`` (an id, prefix or another alias); promoting the current one is a no-op."""
    _check_alias(alias)
    target = resolve(store, version)
    if store.aliases().get(alias) != target.id:
        store.set_alias(alias, target.id, action="promote")
    return target


def rollback_target(store: Store, alias: str) -> Version:
    """The version ``rollback(alias)`` would restore; an error when there is none."""
    stack = _stack(store, alias)
    if not stack:
        raise StoreError(f"No alias {alias!r} in {store.path}.")
    if len(stack) < 2:
        raise StoreError(f"Alias {alias!r} has no earlier version to roll back to.")
    return resolve(store, stack[-2])


def rollback(store: Store, alias: str) -> Version:
    """Point ``alias`` back at the version it had before its last promotion, in one step."""
    target = rollback_target(store, alias)
    store.set_alias(alias, target.id, action="rollback")
    return target


# --------------------------------------------------------------------------- rebuilding


def task_spec(version: Version, store: Store) -> Any:
    """The version's task spec, with relative paths resolved beside its task file (else beside the store)."""
    from .task import parse_task

    task = version.manifest["task"]
    base = Path(task["path"]).parent if task.get("path") else store.directory.resolve().parent
    return parse_task(dict(task["spec"]), source=f"version {version.id}", base_dir=base)


def _canonical(config: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps({k: v for k, v in config.items() if k not in _VOLATILE}, sort_keys=True,
                                 default=str))


def _check_rebuilt(version: Version, candidate: Any) -> None:
    """The rebuilt candidate must be the recorded one: same configuration, same artifact bytes."""
    recorded, rebuilt = _canonical(version.manifest["candidate"]), _canonical(candidate.config)
    differs = sorted(k for k in recorded if recorded[k] != rebuilt.get(k))
    if differs:
        raise StoreError(f"Version {version.id} no longer rebuilds as recorded ('{differs[0]}' differs); the code "
                         "or data that made it changed, so run the task again and create a new version.")
    artifact = version.manifest.get("artifact")
    if artifact:
        from .backends.model_cache import directory_fingerprint

        if directory_fingerprint(Path(candidate.config["artifact"])) != artifact["fingerprint"]:
            raise StoreError(f"The artifact of version {version.id} ({artifact['path']}) changed since the version "
                             "was made.")


def load_candidate(version: Version, store: Store, *, backend: Any = None, serving: bool = False) -> tuple[Any, Any]:
    """Rebuild ``version``'s candidate and the backend to pass to its ``predict``; never trains.

    Built like a run builds a rung (``ladder/attempt.py``): the recorded task's splits (the data hash must match),
    the store's embedding cache, and the task's model (or ``backend``) behind the call cache.
    ``serving=True``: calls made while preparing still go through the call cache, but answers to
    new inputs afterwards are neither cached nor stored, so traffic stays out of the run store.
    """
    from .backends import build_backend
    from .backends.cached import CachedBackend
    from .data import load_splits
    from .embeddings import EmbeddingCache
    from .ladder.catalogue import needs_llm
    from .strategies.base import PrepareContext, get_strategy
    from .task import RungSpec

    spec = task_spec(version, store)
    splits = load_splits(spec)
    if splits.data_hash != version.manifest["data_hash"]:
        raise StoreError(f"The data of task {spec.name} changed since version {version.id} was made (data hash "
                         f"{splits.data_hash}, the version used {version.manifest['data_hash']}).")
    rung = RungSpec(**version.manifest["rung"])
    spec = spec.for_model(rung.model)  # the rung's model and its endpoint settings
    if rung.strategy == "distill":  # the saved student; the teacher is neither loaded nor asked again
        from .strategies.encoder_ft import EncoderCandidate

        config = version.manifest["candidate"]
        candidate = EncoderCandidate(rung=rung.name, config=config,
                                     path=store.directory / version.manifest["artifact"]["path"])
        _check_rebuilt(version, candidate)
        return candidate, None
    cached = build_backend(spec, store, backend=backend) if needs_llm(rung) else None
    inner = cached.inner if cached is not None else None
    embed = EmbeddingCache(store, spec.embedder)
    ctx = PrepareContext(spec=spec, splits=splits, backend=cached, embed=embed, seed=spec.seed,
                         artifacts=store.directory / "artifacts", may_train=False,
                         wrap_backend=None if serving else (lambda b: CachedBackend(b, store)))
    candidate = get_strategy(rung.strategy)(rung, ctx)
    _check_rebuilt(version, candidate)
    if serving:
        embed.freeze()
    answer_with = (inner if serving else cached) if inner is not None else candidate.own_backend
    return candidate, answer_with
