"""End to end on the fake backend: results, reuse, resume after kill -9, and errors that lose nothing."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tunewise.errors import TaskSpecError
from tunewise.run import run_task
from tunewise.task import load_task

LABELS = ["card_arrival", "card_linking", "exchange_rate", "top_up"]
WORDS = {
    "card_arrival": "when will my new card arrive in the post",
    "card_linking": "how do i link my card to the app",
    "exchange_rate": "what exchange rate do you use for euros",
    "top_up": "top up my account with money from my bank",
}


def write_task(tmp_path: Path, *, n_train: int = 60, n_test: int = 20, extra: str = "", seed: int = 0) -> Path:
    rng = random.Random(seed)

    def rows(n: int, offset: int) -> str:
        out = []
        for i in range(n):
            label = LABELS[i % len(LABELS)]
            words = WORDS[label].split()
            rng.shuffle(words)
            out.append(json.dumps({"text": " ".join(words) + f" #{offset + i}", "label": label}))
        return "\n".join(out) + "\n"

    (tmp_path / "train.jsonl").write_text(rows(n_train, 0))
    (tmp_path / "test.jsonl").write_text(rows(n_test, 10_000))
    task = tmp_path / "task.yaml"
    task.write_text(
        "name: toy\nkind: classification\ndata: {train: train.jsonl, test: test.jsonl}\n"
        "model: 'fake:random'\nembedder: hashing\ntarget: {accuracy: 0.9}\n" + extra
    )
    return task


def write_extraction(tmp: Path, *, n_train: int = 22, long_words: int = 0, extra: str = "") -> Path:
    """A toy slot-extraction task (30 requests, intent + one artist slot) on the echoing fake model; ``long_words``
    makes each slot value that many words longer (long JSON answers)."""
    long = "".join(f" w{i}" for i in range(long_words))
    rows = [{"text": f"play song {i} by artist {i % 3}",
             "output": {"intent": "PlayMusic", "slots": [{"slot": "artist", "value": f"artist {i % 3}{long}"}]}}
            for i in range(30)]
    (tmp / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:n_train]))
    (tmp / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[n_train:]))
    (tmp / "schema.json").write_text(json.dumps({"type": "object", "required": ["intent", "slots"]}))
    (tmp / "task.yaml").write_text(
        "name: slots\nkind: extraction\ndata: {train: train.jsonl, test: test.jsonl, output: output}\n"
        "extraction: {schema: schema.json}\nmodel: 'fake:echo'\nembedder: hashing\n" + extra)
    return tmp / "task.yaml"


def serve_answer(store_dir: Path, alias: str, text: str):
    """What ``tunewise serve`` answers ``text`` under ``alias``, from the store at ``store_dir``."""
    import asyncio

    from tunewise.serving.service import Service

    async def ask():
        service = Service(store_dir)
        try:
            return await service.answer(alias, text, None)
        finally:
            await service.close()

    return asyncio.run(ask())


def test_run_writes_results_with_every_rung_and_ci(tmp_path):
    outcome = run_task(load_task(write_task(tmp_path)), policy=False)  # every rung of the default ladder
    data = json.loads(outcome.results_path.read_text())
    names = [r["name"] for r in data["rungs"]]
    assert names[:2] == ["knn", "probe"] and "cot" in names and "few_shot_retrieved" in names
    for r in data["rungs"]:
        assert r["status"] == "finished", r
        acc = r["metrics"]["accuracy"]
        assert acc["low"] <= acc["value"] <= acc["high"] and acc["n"] == 20
        assert r["config"]["strategy"] == r["strategy"]
        assert set(r["usage"]) >= {"prompt_tokens", "completion_tokens", "latency_s", "examples_per_s"}
    assert data["data"]["hash"] and data["checks"]["volume_assessment"]
    assert data["comparisons"] and {"p_value", "low", "high", "verdict"} <= set(data["comparisons"][0])
    assert data["environment"]["versions"]["tunewise"]
    assert "| knn |" in outcome.summary_path.read_text()
    html = outcome.report_path.read_text()  # the run writes its report beside results.json
    assert outcome.report_path.parent == outcome.results_path.parent and 'id="plot-pareto"' in html
    assert (outcome.report_path.parent / "decision.json").is_file()


def test_rerun_recomputes_nothing(tmp_path):
    spec = load_task(write_task(tmp_path))
    first = run_task(spec, rungs=["knn", "zero_shot"])
    second = run_task(spec, rungs=["knn", "zero_shot"])
    assert second.reused == ("knn", "zero_shot")
    assert [r.metrics for r in first.results.rungs] == [r.metrics for r in second.results.rungs]


def test_a_reused_rung_is_scored_again_with_the_current_statistics(tmp_path):
    """A rung stored by an older tunewise keeps its predictions (the expensive part) but not its intervals: a
    result stored with the old percentile bootstrap's zero-width [1.0, 1.0] is rescored when it is reused."""
    from tunewise.store import Store

    spec = load_task(write_task(tmp_path))
    first = run_task(spec, rungs=["knn"], report=False)
    knn = first.results.rungs[0]
    stale = knn.to_json()
    stale["metrics"]["accuracy"] = {**stale["metrics"]["accuracy"], "low": 1.0, "high": 1.0,
                                    "method": "percentile bootstrap, 95%"}
    store = Store(spec.store_dir)
    store.finish_rung(first.results.run_id, "knn", stale)
    store.close()
    again = run_task(spec, rungs=["knn"], report=False)
    assert again.reused == ("knn",)
    assert again.results.rungs[0].metrics == knn.metrics  # as scored now, not as stored


def test_unknown_rung_is_a_one_sentence_error(tmp_path):
    with pytest.raises(TaskSpecError, match="unknown rung 'zero_shoot'"):
        run_task(load_task(write_task(tmp_path)), rungs=["zero_shoot"])


def test_wrong_model_fails_llm_rungs_but_keeps_baselines(tmp_path):
    spec = load_task(write_task(tmp_path)).model_copy(update={"model": "nosuch:model"})
    outcome = run_task(spec, rungs=["knn", "zero_shot", "role"])
    by_name = {r.name: r for r in outcome.results.rungs}
    assert by_name["knn"].status == "finished"
    assert by_name["zero_shot"].status == "failed" and "nosuch" in by_name["zero_shot"].error
    assert outcome.results.status == "partial"


def test_limit_scores_a_stratified_subset(tmp_path):
    outcome = run_task(load_task(write_task(tmp_path)), rungs=["knn"], limit=8)
    assert outcome.results.data["sizes"]["test"] == 8
    assert "stratified" in outcome.results.data["test_origin"]


def _calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_killed_run_resumes_without_repeating_a_finished_call(tmp_path):
    task = write_task(tmp_path, n_test=24)
    log = tmp_path / "calls.log"
    env = {**os.environ, "TUNEWISE_FAKE_CALL_LOG": str(log)}
    cmd = [sys.executable, "-m", "tunewise.cli", "run", str(task), "--quiet", "--model", "fake:random?delay=0.03",
           "--rungs", "zero_shot,few_shot_random"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while len(_calls(log)) < 20 and time.time() < deadline:  # mid-way through the first rung
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = len(_calls(log))
    assert 20 <= before < 48 + 3, "the run should have been killed mid-way"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    calls = _calls(log)
    unique = {(json.loads(c)["kind"], json.loads(c)["prompt"]) for c in calls}
    # 24 examples x 2 rungs + 3 calibration calls + few_shot_random's stability (2 re-drawn and 2 re-ordered
    # demonstration sets on a subset that is the whole 24-example split); the fake backend answers each request
    # in its own call, so no extra single-request latency calls; at most the call in flight is repeated
    assert len(unique) == 24 * 2 + 3 + 4 * 24
    assert len(calls) - len(unique) <= 1


def test_embedding_cost_survives_the_cache(tmp_path):
    """A baseline served from cached embeddings still reports what embedding its inputs cost."""
    from tunewise.embeddings import EmbeddingCache
    from tunewise.store import Store

    class SlowEmbedder:
        name = "slow"

        def embed(self, texts, progress=None):
            time.sleep(0.01 * len(texts))
            return __import__("numpy").ones((len(texts), 4), dtype="float32")

    with Store(tmp_path / "store") as store:
        first = EmbeddingCache(store, "slow")
        first._embedder = SlowEmbedder()
        first(["a", "b", "c", "d"])
        again = EmbeddingCache(store, "slow")  # a new process: served from the store
        again(["a", "b", "c", "d"])
        assert again._embedder is None
        assert first.seconds(["a", "b"]) >= 0.02
        assert again.seconds(["a", "b"]) == pytest.approx(first.seconds(["a", "b"]))


def test_extraction_and_generation_tasks_run_end_to_end(tmp_path):
    task = write_extraction(tmp_path, n_train=24, extra="target: {field_f1: 0.8}\n")
    outcome = run_task(load_task(task))  # the policy: no early rejection for field F1
    rung = outcome.results.rungs[1]
    assert [r.name for r in outcome.results.rungs][:6] == ["knn", "zero_shot", "role", "few_shot_random",
                                                       "few_shot_retrieved", "cot"]
    assert rung.primary_metric == "field_f1" and {"json_validity", "field_precision"} <= set(rung.metrics)
    assert rung.metrics["json_validity"].value == 0.0  # echo returns the input text, never JSON

    gen = tmp_path / "gen"
    gen.mkdir()
    pairs = [{"text": f"say {w}", "label": w} for w in ["alpha", "beta", "gamma", "delta"] * 5]
    (gen / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs[:16]))
    (gen / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs[16:]))
    (gen / "task.yaml").write_text("name: echo\nkind: generation\ndata: {train: train.jsonl, test: test.jsonl}\n"
                                   "generation: {match: contains}\nmodel: 'fake:echo'\nembedder: hashing\n")
    outcome = run_task(load_task(gen / "task.yaml"), rungs=["zero_shot"])
    em = outcome.results.rungs[0].metrics["exact_match"]
    assert em.value == 1.0  # "Input: say alpha" contains "alpha" under the contains match


def test_few_shot_rung_measures_its_stability_across_draws_and_orders(tmp_path):
    from tunewise.costs import load_prices
    from tunewise.data import load_splits
    from tunewise.decision import decide
    from tunewise.report.edge_cases import edge_cases_markdown

    spec = load_task(write_task(tmp_path, n_test=24))
    outcome = run_task(spec, rungs=["knn", "few_shot_random"])
    rung = next(r for r in outcome.results.rungs if r.name == "few_shot_random")
    st = rung.extras["stability"]
    assert st["subset"] == 24 and len(st["example_ids"]) == 24  # a quarter, at least 60: the whole small split
    assert [v["variant"] for v in st["variants"]] == ["as scored", "re-drawn", "re-ordered", "re-drawn", "re-ordered"]
    assert [v["seed"] for v in st["variants"]] == [0, 1, 0, 2, 0]
    assert [v["order_seed"] for v in st["variants"]] == [None, None, 1, None, 2]
    values = [v["value"] for v in st["variants"]]
    assert st["spread"] == pytest.approx(max(values) - min(values))
    # "as scored" is the rung's own predictions on that subset
    own = {p.example_id: p.output for p in rung.predictions}
    assert st["variants"][0]["outputs"] == [own[i] for i in st["example_ids"]]
    results = outcome.results  # the typed records the decision and the report take
    doc = edge_cases_markdown(results, load_splits(spec).test, decide(results, spec, load_prices()))
    assert "| few_shot_random | finished | 24 |" in doc


def test_order_seed_shuffles_the_same_demonstrations(tmp_path):
    from tunewise.data import load_splits
    from tunewise.strategies.base import PrepareContext, get_strategy
    from tunewise.task import RungSpec

    spec = load_task(write_task(tmp_path))
    splits = load_splits(spec)
    ctx = PrepareContext(spec=spec, splits=splits, seed=0)

    def demos(**params):
        rung = RungSpec(name="fs", strategy="prompt", params={"mode": "score", "k": 8, **params})
        return get_strategy("prompt")(rung, ctx).fixed_demos

    base, shuffled, other = demos(), demos(order_seed=3), demos(seed=5)
    assert sorted(base) == sorted(shuffled) and base != shuffled
    assert sorted(base) != sorted(other)


def test_quick_mode_caps_the_test_subset_and_the_budget(tmp_path):
    from tunewise.run import QUICK_BUDGET_HOURS, QUICK_TEST_LIMIT, quick_spec

    spec = load_task(write_task(tmp_path, n_test=200))
    quick = quick_spec(spec)
    assert quick.data.test_limit == QUICK_TEST_LIMIT and quick.constraints.budget_hours == QUICK_BUDGET_HOURS
    assert quick.fingerprint() != spec.fingerprint()  # its own run, never mixed with the full one
    tight = spec.model_copy(update={"constraints": spec.constraints.model_copy(update={"budget_hours": 0.01})})
    assert quick_spec(tight).constraints.budget_hours == 0.01  # a smaller user budget stays
    outcome = run_task(spec, quick=True)
    assert len(outcome.results.rungs[0].predictions) == QUICK_TEST_LIMIT
    assert outcome.results.ladder.budget.hours == QUICK_BUDGET_HOURS


def test_a_quick_run_of_named_rungs_keeps_its_budget(tmp_path):
    """--quick promises minutes: the task's named rungs are walked with the policy, so its budget holds (a fixed
    list ignores budgets)."""
    task = write_task(tmp_path, extra="rungs: [knn, zero_shot]\n")
    outcome = run_task(load_task(task), quick=True, report=False)
    assert outcome.results.ladder.mode == "policy" and outcome.results.ladder.budget.hours is not None
    assert run_task(load_task(task), report=False).results.ladder.mode == "fixed"  # a full run runs the list as given


def test_comparisons_use_the_tasks_match_rule(tmp_path):
    """Golds alpha/beta/gamma, one rung answers 'Alpha.'/'beta'/'Gamma!': under the default ``normalized`` match
    the metric says 100%, so the paired comparison must see the same correctness (no discordant examples)."""
    from tunewise.backends.fake import FakeBackend

    words = ["alpha", "beta", "gamma"]
    rows = [{"text": f"say {w} {i}", "label": w} for i, w in enumerate(words * 4)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:6]))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[6:]))
    (tmp_path / "task.yaml").write_text("name: say\nkind: generation\ndata: {train: train.jsonl, test: test.jsonl}\n"
                                        "embedder: hashing\n")

    def script(prompt):
        text = prompt[-1].content
        word = next(w for w in words if f"say {w}" in text)
        system = " ".join(m.content for m in prompt if m.role == "system")
        shouted = "expert" in system.lower()  # the role rung: decorated but normalized-equal answers
        return {"alpha": "Alpha.", "beta": "beta", "gamma": "Gamma!"}[word] if shouted else word

    outcome = run_task(load_task(tmp_path / "task.yaml"), rungs=["zero_shot", "role"],
                       backend=FakeBackend("fake:random", script=script), report=False)
    by = {r.name: r for r in outcome.results.rungs}
    assert by["zero_shot"].primary.value == by["role"].primary.value == 1.0
    assert {p.output for p in by["role"].predictions} >= {"Alpha.", "Gamma!"}  # the decorated answers were given
    (comparison,) = outcome.results.comparisons
    assert (comparison.b01, comparison.b10, comparison.diff) == (0, 0, 0.0)


def _long_extraction_task(tmp_path: Path, extra: str = "") -> tuple[Path, dict]:
    rows = [{"text": f"play song {i} by the artist number {i}",
             "output": {"intent": "PlayMusic", "slots": [{"slot": "artist", "value": f"the artist number {i}"},
                                                         {"slot": "track", "value": f"song {i} " + "la " * 20}]}}
            for i in range(24)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:16]))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[16:]))
    (tmp_path / "schema.json").write_text(json.dumps({"type": "object", "required": ["intent", "slots"]}))
    (tmp_path / "task.yaml").write_text(
        "name: slots\nkind: extraction\ndata: {train: train.jsonl, test: test.jsonl, output: output}\n"
        "extraction: {schema: schema.json}\nembedder: hashing\n" + extra)
    return tmp_path / "task.yaml", {r["text"]: r["output"] for r in rows}


def test_extraction_answers_get_a_budget_that_fits_the_tasks_answers(tmp_path):
    """The gold JSON is ~45 whitespace tokens (the fake backend's tokens): a fixed 32-token budget cut every
    answer off mid-object, so a perfect model scored 0% field F1."""
    from tunewise.backends.fake import FakeBackend

    task, gold = _long_extraction_task(tmp_path)
    seen: list = []

    def script(prompt):
        text = prompt[-1].content
        return json.dumps(next(v for k, v in gold.items() if k in text))

    backend = FakeBackend("fake:random", script=script)
    generate = backend.generate
    backend.generate = lambda requests: seen.extend(requests) or generate(requests)
    outcome = run_task(load_task(task), rungs=["zero_shot"], backend=backend, report=False)
    rung = outcome.results.rungs[0]
    longest = max(len(json.dumps(v).split()) for v in gold.values())
    assert longest > 32 and all(r.max_new_tokens >= longest for r in seen)
    assert all(r.json_schema == {"type": "object", "required": ["intent", "slots"]} for r in seen)
    assert rung.metrics["field_f1"].value == 1.0 and rung.usage["truncated"] == 0
    assert rung.config["max_new_tokens"] >= longest and "train" in rung.config["answer_budget"]


def test_truncated_answers_are_counted_and_reported(tmp_path):
    from tunewise.backends.fake import FakeBackend

    task, gold = _long_extraction_task(tmp_path, extra="rungs: [{name: short, strategy: prompt, "
                                                      "params: {mode: generate, max_new_tokens: 8}}]\n")
    backend = FakeBackend("fake:random", script=lambda p: json.dumps(next(v for k, v in gold.items()
                                                                          if k in p[-1].content)))
    outcome = run_task(load_task(task), backend=backend, report=True)
    rung = outcome.results.rungs[0]
    assert rung.usage["truncated"] == len(rung.predictions) == 8
    said = "8 of 8 answers were cut off at the 8-token answer budget"
    assert said in outcome.summary_path.read_text()
    assert said in (outcome.results_path.parent / "report.md").read_text()


def test_single_request_latency_is_measured_only_when_the_evaluation_batched(tmp_path):
    """knn answers 256 inputs per call, so 16 dev inputs are answered one per call to measure what one user waits;
    a fake LLM rung answers each request in its own call, so its evaluation already measured it (no extra calls)."""
    outcome = run_task(load_task(write_task(tmp_path)), rungs=["knn", "zero_shot"], report=False)
    knn, zero_shot = outcome.results.rungs
    assert "single_request_latency_s" in knn.usage and "one per call" in knn.usage["single_request_basis"]
    assert "single_request_latency_s" not in zero_shot.usage
