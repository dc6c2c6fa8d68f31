"""The task specification (``task.yaml``): what the user wants, validated with pydantic.

A task names its data, what kind of output counts as correct, the quality it needs, its
constraints, the model to use and a seed. Unknown keys are errors (``extra="forbid"``) so a
misspelled key never silently does nothing. Paths in the file are relative to the file.

:func:`build_task` makes the same spec in code, from files or from data already in memory (a list of
dicts, a pandas DataFrame): in-memory records are written unchanged as JSONL into the run store, named by
their content, so the report, a version and the server can reload exactly the data that was scored.

Out of scope: loading the data (``data/``) and choosing rungs (``ladder/``).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from .data.hub import HF_SCHEME, HubData, parse_hub_ref
from .data.reading import _type_name, lone_surrogate, shown
from .errors import TaskSpecError

__all__ = [
    "DataSpec",
    "ExtractionSpec",
    "GenerationSpec",
    "Constraints",
    "BackendOptions",
    "ModelSpec",
    "RungSpec",
    "TrackingSpec",
    "TaskSpec",
    "load_task",
    "parse_task",
    "build_task",
]

TaskKind = Literal["classification", "extraction", "generation"]
#: metrics a target may name, per task kind; the first is the kind's primary metric
TARGET_METRICS = {
    "classification": ("accuracy", "macro_f1"),
    "extraction": ("field_f1", "field_precision", "field_recall", "json_validity", "exact_match"),
    "generation": ("exact_match",),
}
MatchMode = Literal["exact", "normalized", "contains"]
#: containers inside containers a task file may hold (a rung's params included); deeper cannot be recorded
MAX_NESTING = 50
#: values a task file may expand to (YAML aliases can make a few lines expand to millions)
MAX_VALUES = 200_000


def _usable_path(path: Path) -> Path:
    """A path that can name a file on this machine: no NUL character, and a ``~user`` that exists."""
    text = str(path)
    if "\x00" in text:
        raise ValueError("the path holds a NUL character")
    try:
        path.expanduser()
    except RuntimeError:
        raise ValueError(f"'~' names no user on this machine ({shown(text)})") from None
    return path


UsablePath = Annotated[Path, AfterValidator(_usable_path)]


def _hub_ref(value: Any) -> Any:
    return parse_hub_ref(value) if isinstance(value, str) and value.startswith(HF_SCHEME) else value


#: a data file, or a Hugging Face dataset split (``hf://owner/name[/config]?split=train``, ``hf://./dir?split=...``)
DataSource = Annotated[UsablePath | Annotated[HubData, PlainSerializer(str, return_type=str)],
                       BeforeValidator(_hub_ref)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSpec(_Strict):
    """Where the examples are and which fields hold input and output."""

    train: DataSource
    test: DataSource
    dev: DataSource | None = None
    unlabelled: DataSource | None = Field(
        default=None,
        description="Inputs without outputs (the input fields only): the pool a distill rung's teacher labels.",
    )
    input: str | list[str] = "text"
    output: str = "label"
    labels: list[str] | UsablePath | None = Field(
        default=None,
        description="Classification labels: a list, a JSON/YAML file holding a list, or None to take them from train.",
    )
    test_limit: int | None = Field(
        default=None,
        ge=1,
        description="Score a fixed, stratified subset of this many test examples (stable for the data hash).",
    )
    dev_fraction: float = Field(default=0.1, gt=0, lt=0.5)

    @field_validator("input")
    @classmethod
    def _distinct_input_fields(cls, v: str | list[str]) -> str | list[str]:
        names = [v] if isinstance(v, str) else v
        if not names or not all(names):
            raise ValueError("names no field (give a field name, or a list of field names)")
        repeated = [name for name, n in Counter(names).items() if n > 1]
        if repeated:
            raise ValueError(f"names '{shown(repeated[0])}' twice (each field is rendered once)")
        return v

    @field_validator("output")
    @classmethod
    def _output_field(cls, v: str) -> str:
        if not v:
            raise ValueError("names no field (give the field holding the expected answer)")
        return v

    @property
    def input_fields(self) -> tuple[str, ...]:
        return (self.input,) if isinstance(self.input, str) else tuple(self.input)


class ExtractionSpec(_Strict):
    """JSON output checked against a JSON Schema and scored per field."""

    json_schema: dict[str, Any] | UsablePath | None = Field(default=None, alias="schema")
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class JudgeSpec(_Strict):
    """An LLM judge (``generation.metric: judge``): a model grading each answer against the reference on a rubric."""

    model: str = Field(description="The judge model: any id tunewise loads (openai:<name>, local:, hf:, fake:).")
    backend: BackendOptions | None = Field(default=None, description="How to reach an openai: judge.")
    rubric: str = Field(default="Grade how well the answer matches the reference answer in meaning and correctness; "
                        "ignore style and length.", description="What the judge is asked to grade.")
    scale: int = Field(default=5, ge=2, le=10, description="Grades 1..scale; a grade g scores (g - 1) / (scale - 1).")
    human: UsablePath | None = Field(default=None, description="JSONL of human grades (input, answer, reference, "
                                     "score in 1..scale): the judge's agreement and biases are measured on it.")


class GenerationSpec(_Strict):
    """Free text scored by a match rule, or by a per-example ``metric``: ``rouge_l``, ``chrf``,
    ``embedding_similarity`` or the user's ``module:function`` scoring one (gold, prediction) pair; that metric is
    then the task's primary one (reported and targeted under its name, a function under its function name)."""

    match: MatchMode = "normalized"
    metric: str | None = None
    judge: JudgeSpec | None = None

    @model_validator(mode="after")
    def _judge_given(self) -> "GenerationSpec":
        if (self.metric == "judge") != (self.judge is not None):
            raise ValueError("metric: judge and a judge section go together (the judge's model, rubric and scale)")
        return self

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, v: str | None) -> str | None:
        from .evaluation.metrics import GENERATION_METRICS

        if v is None or v in GENERATION_METRICS:
            return v
        module, colon, name = v.partition(":")
        if not (colon and module and name.isidentifier()):
            raise ValueError(f"'{shown(v)}' is neither a built-in metric ({', '.join(GENERATION_METRICS)}) nor a "
                             "module:function")
        return v

    @property
    def metric_key(self) -> str | None:
        from .evaluation.metrics import generation_metric_key

        return None if self.metric is None else generation_metric_key(self.metric)


class Constraints(_Strict):
    max_latency_ms: float | None = Field(default=None, gt=0)
    budget_usd: float | None = Field(default=None, ge=0)
    budget_hours: float | None = Field(default=None, gt=0)
    requests_per_month: int | None = Field(default=None, ge=0)
    deadline_days: float | None = Field(default=None, gt=0)
    utilisation: float | None = Field(default=None, gt=0, le=1, description=(
        "Self-hosted models: the share of a device's hours the model's traffic pays for (a shared or autoscaled "
        "device); None: a dedicated always-on instance, billed every hour of the month."))


class BackendOptions(_Strict):
    """How to reach an ``openai:`` model (any OpenAI-compatible endpoint); unset keys keep the backend's defaults.

    The API key itself never goes in the task file: name the environment variable or file that holds it.
    """

    base_url: str | None = Field(default=None, description="API root, e.g. http://localhost:8000/v1 (default: "
                                 "$OPENAI_BASE_URL, else https://api.openai.com/v1).")
    api_key_env: str | None = Field(default=None, description="Environment variable holding the key (OPENAI_API_KEY).")
    api_key_file: UsablePath | None = Field(default=None, description="A file holding the key (relative to the task file).")
    max_concurrency: int | None = Field(default=None, ge=1, description="Requests in flight at once (4).")
    max_retries: int | None = Field(default=None, ge=0, description="Retries on 429, 5xx and timeouts (6).")
    timeout_s: float | None = Field(default=None, gt=0, description="Seconds to wait for one reply (120).")
    backoff_s: float | None = Field(default=None, ge=0, description="First retry wait, doubled each time (0.5).")
    budget_usd: float | None = Field(default=None, ge=0, description="Money cap for this endpoint's calls "
                                     "(default: constraints.budget_usd; null: no cap).")
    prices: dict[str, Any] | UsablePath | None = Field(default=None, description="Price-table overrides or a price file, "
                                                 "e.g. {api: {my-model: {input: 0, output: 0}}}.")
    reasoning_tokens: int | None = Field(default=None, ge=0, description="Completion tokens a reasoning model (o1, "
                                         "o3, o4, gpt-5) may spend thinking, on top of each answer's (2048).")


JudgeSpec.model_rebuild()  # its backend options are declared above
GenerationSpec.model_rebuild()


class TokenPrices(_Strict):
    """An API model's list prices in USD per million tokens (``cached_input`` None: the input price)."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)


#: characters a model's short name may not hold: it is written ``rung@name`` and listed with commas
_NAME_FORBIDDEN = frozenset("@, \t\n/")


def default_model_name(model_id: str) -> str:
    """The short name of a model id: ``local:gemma3-270m`` -> ``gemma3-270m``, ``hf:org/name`` -> ``name``,
    ``hf:/path/to/dir/`` -> ``dir``, ``openai:gpt-4o-mini`` -> ``gpt-4o-mini``."""
    rest = model_id.partition(":")[2] or model_id
    tail = rest.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join("-" if c in _NAME_FORBIDDEN else c for c in tail).strip("-")
    return name or "model"


class ModelSpec(_Strict):
    """One model the task weighs: its id, the short name rungs are run under (``few_shot_random@<name>``),
    the endpoint settings of an ``openai:`` model, and an API model's token prices."""

    id: str = Field(description="kind:name, e.g. local:gemma3-270m, hf:/path/to/model, openai:gpt-4o-mini.")
    name: str | None = Field(default=None, description="Short name in rung@name (default: from the id).")
    backend: BackendOptions | None = Field(default=None, description="Endpoint settings of an openai: model.")
    prices: TokenPrices | None = Field(default=None, description="USD per million tokens (API models).")
    tune: bool = Field(default=True, description="Run the tuning rungs on this model where tunewise can train it "
                       "(false: prompt it only).")

    @field_validator("id")
    @classmethod
    def _kind_and_name(cls, v: str) -> str:
        kind, sep, rest = v.partition(":")
        if not (kind and sep and rest):
            raise ValueError(f"'{shown(v)}' is not kind:name (e.g. local:gemma3-270m, openai:gpt-4o-mini)")
        return v

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str | None) -> str | None:
        if v is not None and (not v or any(c in _NAME_FORBIDDEN for c in v)):
            raise ValueError(f"'{shown(v)}' must be non-empty without '@', ',', '/' or spaces")
        return v

    @model_validator(mode="after")
    def _backend_kind(self) -> "ModelSpec":
        if self.backend is not None and not self.id.startswith("openai:"):
            raise ValueError("the 'backend' section only applies to openai: models")
        return self

    @property
    def key(self) -> str:
        """The name rungs and results use for this model."""
        return self.name or default_model_name(self.id)

    def identity(self) -> dict[str, Any]:
        """What changes this model's results (not an endpoint's limits or key): for the task's fingerprint."""
        base_url = self.backend.base_url if self.backend is not None else None
        return {"id": self.id, "name": self.key, "base_url": base_url, "tune": self.tune,
                "prices": self.prices.model_dump() if self.prices else None}


class TrackingSpec(_Strict):
    """Where a finished run is logged besides the run store (``tracking.py``); never changes results."""

    mlflow: str | bool | None = Field(default=None, description="MLflow tracking URI (http://..., file:///..., "
                                      "databricks); true: the MLFLOW_TRACKING_URI environment variable.")
    experiment: str | None = Field(default=None, description="MLflow experiment (default: the task's name).")


class RungSpec(_Strict):
    """One rung: a strategy and its parameters, and the model it runs on when the task weighs several
    (``model``: a model's short name; None: the task's only model, or no LLM). ``name`` is unique in the ladder."""

    name: str
    strategy: str
    params: dict[str, Any] = Field(default_factory=dict)
    model: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The rung as recorded (``model`` only when it names one, so one-model records keep their shape)."""
        d = self.model_dump(mode="json")
        if d["model"] is None:
            del d["model"]
        return d

    def config_hash(self) -> str:
        what: dict[str, Any] = {"strategy": self.strategy, "params": self.params}
        if self.model is not None:  # absent for one-model tasks: their stored results keep their hashes
            what["model"] = self.model
        blob = json.dumps(what, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class TaskSpec(_Strict):
    name: str = "task"
    kind: TaskKind = "classification"
    data: DataSpec
    target: dict[str, float] = Field(default_factory=dict)
    constraints: Constraints = Field(default_factory=Constraints)
    model: str = "local:smollm2-135m"
    backend: BackendOptions | None = Field(default=None, description="Endpoint settings of an openai: model.")
    models: list[str | ModelSpec] | None = Field(
        default=None, description="Several models weighed in one decision (ids or {id, name, backend, prices}); "
        "prompt rungs run on each, tuning rungs on each trainable one. Replaces 'model'.")
    seed: int = Field(default=0, ge=0, lt=2**32, description="0 <= seed < 2**32, as numpy and scikit-learn take.")
    embedder: str = Field(default="minilm-l6-v2", description="Sentence embedder for baselines and retrieval.")
    instructions: str | None = Field(
        default=None, description="One or two sentences that describe the task to the model."
    )
    extraction: ExtractionSpec | None = None
    generation: GenerationSpec | None = None
    rungs: list[str | RungSpec] | None = Field(
        default=None, description="Rungs to run (names of built-in rungs or full specs); None: the default ladder."
    )
    store: UsablePath | None = Field(default=None,
                                    description="Run-store directory; default .tunewise/ beside the task file.")
    tracking: TrackingSpec | None = Field(default=None, description="Log finished runs to MLflow "
                                          "(needs the tracking extra).")
    base_dir: Path = Field(default=Path("."), exclude=True)

    @field_validator("target")
    @classmethod
    def _target_in_unit_interval(cls, v: dict[str, float]) -> dict[str, float]:
        for metric, value in v.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"target {shown(metric)} must be between 0 and 1, got {value}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _model_or_models(cls, raw: Any) -> Any:
        """``models`` replaces ``model`` (and ``backend``); ``model`` then names the first of them."""
        if not isinstance(raw, dict) or raw.get("models") is None:
            return raw
        models = raw["models"]
        first = models[0] if isinstance(models, list) and models else None
        first_id = first if isinstance(first, str) else first.get("id") if isinstance(first, dict) else None
        if "model" in raw and raw["model"] != first_id:  # a recorded spec holds both, the first model's id twice
            raise ValueError("give 'model' (one model) or 'models' (several), not both")
        if raw.get("backend") is not None:
            raise ValueError("with 'models', put each openai: model's endpoint settings under its own 'backend' key")
        return {**raw, "model": first_id} if isinstance(first_id, str) else raw

    @field_validator("models")
    @classmethod
    def _distinct_models(cls, v: list[str | ModelSpec] | None) -> list[str | ModelSpec] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("names no model (give at least one, or use 'model')")
        entries = [ModelSpec(id=m) if isinstance(m, str) else m for m in v]
        keys = [m.key for m in entries]
        repeated = [k for k, n in Counter(keys).items() if n > 1]
        if repeated:
            raise ValueError(f"two models have the short name '{shown(repeated[0])}'; give one of them a 'name'")
        return v

    @model_validator(mode="after")
    def _kind_sections(self) -> "TaskSpec":
        if self.extraction is not None and self.kind != "extraction":
            raise ValueError("the 'extraction' section is only allowed with kind: extraction")
        if self.generation is not None and self.kind != "generation":
            raise ValueError("the 'generation' section is only allowed with kind: generation")
        if self.backend is not None and not self.model.startswith("openai:"):
            raise ValueError("the 'backend' section only applies to openai: models")
        own = (self.generation.metric_key,) if self.generation is not None and self.generation.metric else ()
        for metric in self.target:
            if metric not in (*TARGET_METRICS[self.kind], *own):
                allowed = ", ".join((*own, *TARGET_METRICS[self.kind]))
                raise ValueError(
                    f"target metric '{shown(metric)}' does not apply to {self.kind} (use one of: {allowed})"
                )
        return self

    @property
    def primary_metric(self) -> str:
        """The metric rungs are ranked, screened and targeted on: a generation task's own ``generation.metric``,
        else the kind's first target metric."""
        if self.generation is not None and self.generation.metric:
            return self.generation.metric_key
        return TARGET_METRICS[self.kind][0]

    def resolve(self, path: Path | str | None) -> Path | None:
        """A path from the spec, made absolute relative to the task file."""
        if path is None:
            return None
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    @property
    def store_dir(self) -> Path:
        return self.resolve(self.store) if self.store else self.base_dir / ".tunewise"

    @property
    def model_specs(self) -> tuple[ModelSpec, ...]:
        """The models the task weighs: its ``models``, else its one ``model`` (with its ``backend``)."""
        if self.models is None:
            return (ModelSpec(id=self.model, backend=self.backend),)
        return tuple(ModelSpec(id=m) if isinstance(m, str) else m for m in self.models)

    @property
    def several_models(self) -> bool:
        """Whether rungs are run per model and named ``rung@model``."""
        return self.models is not None and len(self.models) > 1

    def model_named(self, key: str | None) -> ModelSpec:
        """The model with short name ``key`` (None: the first model)."""
        specs = self.model_specs
        if key is None:
            return specs[0]
        for m in specs:
            if m.key == key:
                return m
        raise TaskSpecError(f"no model named '{shown(key)}' (the task's models: {', '.join(m.key for m in specs)}).")

    def for_model(self, key: str | None) -> "TaskSpec":
        """This task as seen by one of its models: ``model`` and ``backend`` are that model's (strategies, the
        backends and versions read those); the same spec when the task has one model."""
        if self.models is None:
            return self
        m = self.model_named(key)
        return self.model_copy(update={"model": m.id, "backend": m.backend, "models": None})

    def with_models(self, ids: Sequence[str]) -> "TaskSpec":
        """The task with other models (``--model``): one id replaces ``model``, several become ``models``;
        endpoint settings stay with a model of the same id (one openai: model for another: the same endpoint)."""
        kept = {m.id: m for m in self.model_specs}
        if len(ids) == 1:
            backend = kept[ids[0]].backend if ids[0] in kept else None
            if backend is None and self.models is None and ids[0].startswith("openai:"):
                backend = self.backend  # another model on the same endpoint
            return self.model_copy(update={"model": ids[0], "backend": backend, "models": None})
        raw = {**self.model_dump(exclude={"model", "backend", "models", "base_dir"}, exclude_unset=True),
               "models": [kept[i].model_dump(exclude_none=True) if i in kept else i for i in ids]}
        return parse_task(raw, source="--model", base_dir=self.base_dir)

    def fingerprint(self) -> str:
        """Hash of everything that changes results (not the store location, an endpoint's limits, nor tracking)."""
        blob = self.model_dump_json(exclude={"store", "base_dir", "backend", "models", "tracking"})
        if self.backend is not None and self.backend.base_url:  # another server may answer differently
            blob += "|" + self.backend.base_url
        if self.models is not None:
            blob += "|" + json.dumps([m.identity() for m in self.model_specs], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _step(node: Any, part: Any) -> tuple[bool, Any]:
    """``(True, child)`` when ``part`` is a key or index of ``node`` in the file, else ``(False, None)``."""
    if isinstance(node, dict):
        try:
            return (True, node[part]) if part in node else (False, None)
        except TypeError:  # an unhashable part cannot be a key
            return False, None
    if isinstance(node, list) and isinstance(part, int) and not isinstance(part, bool) and 0 <= part < len(node):
        return True, node[part]
    return False, None


def _file_path(raw: Any, loc: tuple[Any, ...]) -> list[Any]:
    """The keys of ``loc`` that exist in the file, in order: pydantic's union tags ('str', 'RungSpec') and '[key]' drop out."""
    parts, node = [], raw
    for part in loc:
        found, child = _step(node, part)
        if found:
            parts.append(part)
            node = child
    return parts


def _located(err: dict[str, Any], raw: Any) -> tuple[str, list[Any]]:
    """(what kind of problem, the keys of the file it is at) for one pydantic error."""
    loc = tuple(err["loc"])
    if err["type"] == "invalid_key":  # a key that is not text: pydantic puts its repr in the location
        return "key", _file_path(raw, loc[:-1]) + [err.get("input")]
    if loc and loc[-1] == "[key]":
        return "key", _file_path(raw, loc[:-1])
    if err["type"] == "missing":
        return "missing", _file_path(raw, loc[:-1]) + list(loc[-1:])
    return err["type"], _file_path(raw, loc)


def _dotted(parts: list[Any], limit: int = 80) -> str:
    return shown(".".join(str(p) for p in parts), limit)


def _validation_sentence(exc: ValidationError, raw: Any, source: str) -> str:
    """One sentence for the first problem; among a union's alternatives, the one that got deepest into the file."""
    errors = exc.errors()
    same_key = [e for e in errors if tuple(e["loc"])[:1] == tuple(errors[0]["loc"])[:1]]
    located = [(e, *_located(e, raw)) for e in same_key]
    # the deepest; among equals, a problem inside a value before "not of this type" (max keeps the first of equals)
    err, kind, parts = max(located, key=lambda item: (len(item[2]), not item[0]["type"].endswith("_type")))
    where = _dotted(parts)
    if kind == "key":
        return f"{source}: key '{where}' is not text (keys must be names)."
    if kind == "extra_forbidden":
        return f"{source}: unknown key '{where}' (check its spelling)."
    if kind == "missing":
        return f"{source}: missing required key '{where}'."
    msg = shown(err["msg"].removeprefix("Value error, "), None).rstrip(".")
    return f"{source}: key '{where}': {msg}." if parts else f"{source}: {msg}."


def _unrecordable(raw: Any) -> str | None:
    """Why ``raw`` cannot be recorded, or None: nested past :data:`MAX_NESTING`, over :data:`MAX_VALUES` values,
    or text holding a lone surrogate (YAML's "\\uD800" escape; the task's fingerprint cannot encode it).

    Iterative and bounded, so a YAML alias that refers to itself or expands exponentially is stopped, not walked.
    """
    stack: list[tuple[list[Any], Any]] = [([], raw)]
    seen = 0
    while stack:
        parts, node = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            return f"expands to more than {MAX_VALUES:,} values (YAML aliases repeating a large value?)"
        if isinstance(node, str) and (char := lone_surrogate(node)):
            return _surrogate_sentence(parts, char)
        if isinstance(node, (dict, list)):
            if len(parts) >= MAX_NESTING:
                head = ".".join(str(p) for p in parts[:5])
                return f"key '{shown(head, 80)}…' is nested more than {MAX_NESTING} levels deep"
            items = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
            for key, _ in items:
                if isinstance(key, str) and (char := lone_surrogate(key)):
                    return _surrogate_sentence(parts + [key], char)
            stack.extend((parts + [key], value) for key, value in items)
    return None


def _surrogate_sentence(parts: list[Any], char: str) -> str:
    return (f"key '{_dotted(parts)}' holds {ascii(char)[1:-1]}, half of a UTF-16 surrogate pair, "
            "which is not a character")


def parse_task(raw: Any, *, source: str = "<task>", base_dir: Path = Path(".")) -> TaskSpec:
    """Validate a parsed YAML mapping; the first problem becomes a one-sentence error."""
    if not isinstance(raw, dict):
        raise TaskSpecError(f"{source}: the task file must be a YAML mapping of keys to values.")
    problem = _unrecordable(raw)
    if problem is not None:
        raise TaskSpecError(f"{source}: {problem}.")
    try:
        return TaskSpec.model_validate({**raw, "base_dir": base_dir})
    except ValidationError as exc:
        raise TaskSpecError(_validation_sentence(exc, raw, source)) from None


class _RepeatedYamlKey(yaml.MarkedYAMLError):
    def __init__(self, key: Any, mark: Any) -> None:
        super().__init__(problem="a key repeated in one mapping", problem_mark=mark)
        self.key = key


class _TaskLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last value silently).

    Merge keys (``<<: *defaults``) may still be overridden by the mapping's own keys, as YAML intends.
    """

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    repeated = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if repeated:
                    raise _RepeatedYamlKey(key, key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def load_task(path: Path | str) -> TaskSpec:
    """Read and validate ``task.yaml``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TaskSpecError(f"{path}: task file not found.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TaskSpecError(f"{path}: cannot read the task file ({exc.__class__.__name__}).") from None
    try:
        raw = yaml.load(text, Loader=_TaskLoader)  # noqa: S506 - a SafeLoader subclass
    except _RepeatedYamlKey as exc:
        line = exc.problem_mark.line + 1
        raise TaskSpecError(
            f"{path}: line {line} repeats the key '{shown(str(exc.key))}'; keep one of its values."
        ) from None
    except yaml.reader.ReaderError as exc:  # a control character: PyYAML gives its position, not its line
        line = text[: exc.position].count("\n") + 1
        char = ascii(chr(exc.character))[1:-1] if isinstance(exc.character, int) else shown(str(exc.character))
        raise TaskSpecError(f"{path}: line {line} holds the character {char}, which YAML does not allow.") from None
    except yaml.YAMLError as exc:
        mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
        where = f"line {mark.line + 1}" if mark is not None else "the file"
        why = f" ({shown(problem)})" if problem else ""
        raise TaskSpecError(f"{path}: {where} is not valid YAML{why}.") from None
    except RecursionError:
        raise TaskSpecError(f"{path}: the YAML is nested too deeply to read.") from None
    return parse_task(raw, source=str(path), base_dir=path.resolve().parent)


Records = Any  # a path, a sequence of mappings, or a pandas DataFrame


def _jsonl(records: Records, role: str) -> bytes:
    """In-memory records as JSONL bytes; a value JSON cannot hold is a one-sentence error naming the record."""
    if hasattr(records, "to_json") and hasattr(records, "columns"):  # a pandas DataFrame: its JSON types, our bytes
        text = records.to_json(orient="records", lines=True, force_ascii=False, date_format="iso")
        records = [json.loads(line) for line in text.split("\n") if line.strip()]  # not splitlines: U+2028

    def plain(value: Any) -> Any:
        if hasattr(value, "tolist"):  # numpy scalars and arrays
            return value.tolist()
        raise TypeError(_type_name(value))

    lines = []
    for i, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise TaskSpecError(f"data.{role}: record {i} is {_type_name(record)}, not a mapping of fields.")
        try:
            lines.append(json.dumps(record, ensure_ascii=False, default=plain).encode("utf-8") + b"\n")
        except UnicodeEncodeError:  # a lone surrogate ("\ud800"): not a character, cannot be saved
            raise TaskSpecError(
                f"data.{role}: record {i} holds text that is not valid Unicode (a lone surrogate such as \\ud800)."
            ) from None
        except (TypeError, ValueError) as exc:
            raise TaskSpecError(
                f"data.{role}: record {i} holds a value JSON cannot represent ({shown(str(exc))})."
            ) from None
    if not lines:
        raise TaskSpecError(f"data.{role}: no records.")
    return b"".join(lines)


def _data_file(records: Records, role: str, directory: Path) -> Path | str:
    if isinstance(records, str) and records.startswith(HF_SCHEME):
        return records
    if isinstance(records, (str, Path)):
        return Path(records).expanduser().resolve()
    blob = _jsonl(records, role)
    path = directory / f"{role}-{hashlib.sha256(blob).hexdigest()[:16]}.jsonl"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(blob)
        tmp.replace(path)
    return path


def build_task(*, train: Records, test: Records, dev: Records | None = None, name: str = "task",
               kind: TaskKind = "classification", input: str | list[str] = "text", output: str = "label",
               store: Path | str = ".tunewise", **fields: Any) -> TaskSpec:
    """A task made in code: ``train``, ``test`` (and ``dev``) are file paths, lists of dicts or DataFrames.

    Every other keyword is a key of ``task.yaml`` (``target``, ``constraints``, ``model``, ``labels``,
    ``test_limit``, ``instructions``, ``rungs``, ...), validated the same way. In-memory records are
    written as ``<store>/data/<role>-<content hash>.jsonl`` (the run store keeps what it scored).
    """
    store_dir = Path(store).expanduser().resolve()
    data_keys = {k: fields.pop(k) for k in ("labels", "test_limit", "dev_fraction") if k in fields}
    files = {role: _data_file(records, role, store_dir / "data")
             for role, records in (("train", train), ("test", test), ("dev", dev)) if records is not None}
    raw = {"name": name, "kind": kind, "store": str(store_dir), **fields,
           "data": {**{k: str(v) for k, v in files.items()}, "input": input, "output": output, **data_keys}}
    return parse_task(raw, source=f"task {name!r}", base_dir=Path.cwd())
