"""distill with an unlabelled pool (issue 15): the pool is read apart from the frozen splits, gold examples join the
teacher's labels, held-out inputs are never learnt from, an API teacher (the local OpenAI-compatible stand-in) is
priced by its tokens, the student is compared with its teacher, and the ladder distils only when a teacher beats
the cheaper candidates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunewise.costs import DEFAULT_PRICES, ApiPrice
from tunewise.data import load_splits
from tunewise.ladder.catalogue import policy_ladder
from tunewise.ladder.policy import Budget, Observed, PlannedRung, Pricing, distill_action, next_action
from tunewise.run import run_task
from tunewise.task import load_task

from .test_encoder_ft import _rows
from .test_openai_backend import WORDS, _label_of, write_task
from .test_run import serve_answer

STUDENT = "epochs: 2, batch_size: 16, body_lr: 0.001, head_lr: 0.01, max_length: 16"


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _pool_task(tmp_path: Path, encoder_dir: Path, *, teacher_model: str = "fake:oracle:ORACLE",
               params: str = "") -> Path:
    """40 gold examples, a pool of 60 inputs (one also in train, two also in test), an oracle teacher."""
    train, test, pool = _rows(40, 0), _rows(24, 5), _rows(60, 9)
    pool_texts = [t for t, _ in pool[:57]] + [train[0][0], test[0][0], test[1][0]]
    _jsonl(tmp_path / "train.jsonl", [{"text": t, "label": y} for t, y in train])
    _jsonl(tmp_path / "test.jsonl", [{"text": t, "label": y} for t, y in test])
    _jsonl(tmp_path / "pool.jsonl", [{"text": t} for t in pool_texts])
    _jsonl(tmp_path / "oracle.jsonl", [{"text": t, "label": y} for t, y in train + test + pool])
    task = tmp_path / "task.yaml"
    task.write_text(
        "name: toy\nkind: classification\ndata: {train: train.jsonl, test: test.jsonl, unlabelled: pool.jsonl}\n"
        f"model: '{teacher_model.replace('ORACLE', str(tmp_path / 'oracle.jsonl'))}'\nembedder: hashing\n"
        "rungs:\n  - few_shot_retrieved\n  - {name: distill, strategy: distill, params: {teacher: few_shot_retrieved, "
        f"student_params: {{encoder: '{encoder_dir}', {STUDENT}}}{params}}}}}\n")
    return task


def test_the_unlabelled_pool_is_read_apart_and_changes_neither_the_data_hash_nor_the_splits(tmp_path):
    task = _pool_task(tmp_path, tmp_path)
    with_pool = load_splits(load_task(task))
    without = load_splits(load_task(task).model_copy(update={"data": load_task(task).data.model_copy(
        update={"unlabelled": None})}))
    assert with_pool.data_hash == without.data_hash and with_pool.pool_hash and without.pool_hash is None
    assert [e.id for e in with_pool.test] == [e.id for e in without.test]
    assert [e.id for e in with_pool.dev] == [e.id for e in without.dev]
    assert len(with_pool.unlabelled) == 60 and all(e.target is None for e in with_pool.unlabelled)
    assert with_pool.unlabelled[0].source.endswith("pool.jsonl:1")


def test_an_empty_or_missing_pool_is_one_clear_sentence(tmp_path):
    from tunewise.errors import DataError

    task = _pool_task(tmp_path, tmp_path)
    (tmp_path / "pool.jsonl").write_text("")
    with pytest.raises(DataError, match=r"pool\.jsonl: the file is empty"):
        load_splits(load_task(task))
    (tmp_path / "pool.jsonl").unlink()
    with pytest.raises(DataError, match=r"file not found \(the task's data.unlabelled\)"):
        load_splits(load_task(task))


def test_distill_labels_the_pool_mixes_in_gold_and_never_learns_from_held_out_inputs(tiny_bert_dir, tmp_path):
    task = _pool_task(tmp_path, tiny_bert_dir)
    outcome = run_task(load_task(task), task_path=task, report=False)
    teacher, rung = outcome.results.rungs
    assert rung.status == "finished", rung.error or rung.reason
    info = rung.extras["distillation"]
    assert info["pool"] == "data.unlabelled" and info["pool_size"] == 60
    assert info["in_dev_or_test"] >= 2  # the two test inputs (and any pool text the dev carve took)
    assert info["has_gold"] + info["in_dev_or_test"] >= 3 and info["labelled"] == 60 - info["has_gold"] \
        - info["in_dev_or_test"]
    assert info["kept"] == info["labelled"]  # the oracle answers every input
    splits = load_splits(load_task(task))
    assert info["gold_examples"] == len(splits.train) and info["student_examples"] == info["kept"] + len(splits.train)
    assert info["teacher_agreement_with_gold"] is None  # an unlabelled pool has no gold to agree with
    assert info["teacher_model_version"].startswith("fake:oracle")
    provenance = json.loads((Path(rung.config["student_config"]["artifact"]) / "tunewise_provenance.json").read_text())
    assert provenance["distilled_from"]["teacher"] == "few_shot_retrieved"
    assert provenance["distilled_from"]["teacher_model_version"] == info["teacher_model_version"]
    assert provenance["distilled_from"]["pool_hash"] == splits.pool_hash
    # the student against its teacher: a paired comparison, and the decision's distillation block
    assert any({c.a, c.b} == {"distill", "few_shot_retrieved"} for c in outcome.results.comparisons)
    (block,) = outcome.decision.distillation
    assert (block["student"], block["teacher"]) == ("distill", "few_shot_retrieved") and block["comparison"]
    assert teacher.status == "finished"

    # deployed: the saved student answers, without the teacher
    from tunewise.store import Store
    from tunewise.versions import create_version, load_candidate, promote

    with Store(tmp_path / ".tunewise") as store:
        version = create_version(store, outcome.results.run_id, "distill")
        assert version.manifest["artifact"]["path"].startswith("artifacts/encoder-")
        candidate, backend = load_candidate(version, store)
        assert backend is None and not candidate.uses_llm
        assert [p.output for p in candidate.predict(splits.test)] == [p.output for p in rung.predictions]
        promote(store, version.id, "production")
    answer = serve_answer(tmp_path / ".tunewise", "production", splits.test[0].text)
    assert answer.version == version.id and answer.text == rung.predictions[0].output


def test_pool_limit_samples_the_pool_and_gold_cannot_join_a_train_pool(tiny_bert_dir, tmp_path):
    task = _pool_task(tmp_path, tiny_bert_dir, params=", pool_limit: 10")
    rung = run_task(load_task(task), task_path=task, report=False).results.rungs[1]
    assert rung.status == "finished", rung.error or rung.reason
    assert rung.extras["distillation"]["labelled"] == 10 and rung.extras["distillation"]["not_sampled"] > 0
    task.write_text(task.read_text().replace(", pool_limit: 10", ", pool: train, gold: true"))
    failed = run_task(load_task(task), task_path=task, report=False).results.rungs[1]
    assert failed.status == "failed" and "gold labels cannot join a train pool" in failed.error


def test_an_api_teacher_labels_through_the_cache_and_its_tokens_are_the_one_off_cost(server, tmp_path, tiny_bert_dir,
                                                                                  monkeypatch):
    monkeypatch.setenv("TW_TEST_KEY", "sk-test-key")
    server.answer = _label_of
    task = write_task(tmp_path, server.url)
    pool = [{"text": " ".join(words.split()[::-1]) + f" pool{i}"}
            for i, words in enumerate([w for _ in range(7) for w in WORDS.values()])]
    _jsonl(tmp_path / "pool.jsonl", pool)
    text = task.read_text().replace("data: {train: train.jsonl, test: test.jsonl}",
                                    "data: {train: train.jsonl, test: test.jsonl, unlabelled: pool.jsonl}")
    task.write_text(text + "rungs:\n  - zero_shot\n  - {name: distill, strategy: distill, params: {teacher: zero_shot, "
                    f"student_params: {{encoder: '{tiny_bert_dir}', {STUDENT}}}}}}}\n")
    prices = DEFAULT_PRICES.model_copy(update={"api": {"test-model": ApiPrice(input=1.0, output=2.0)}})
    outcome = run_task(load_task(task), task_path=task, report=False, prices=prices)
    rung = {r.name: r for r in outcome.results.rungs}["distill"]
    assert rung.status == "finished", rung.error or rung.reason
    info = rung.extras["distillation"]
    assert info["teacher_model_id"] == "openai:test-model" and info["kept"] == info["labelled"] == 21
    assert info["teacher_prompt_tokens"] > 0 and info["teacher_model_version"] == f"openai:test-model@{server.url}"
    option = {o.name: o for o in outcome.decision.options}["distill"]
    assert "labelling" in option.one_off_basis and "test-model" in option.one_off_basis
    expected = (info["teacher_prompt_tokens"] - info["teacher_cached_tokens"]) * 1 + info["teacher_cached_tokens"] \
        + info["teacher_completion_tokens"] * 2
    assert option.one_off_usd is not None, option.one_off_basis
    assert option.one_off_usd >= expected / 1e6  # the labelling's tokens at $1 / $2 per million, plus training
    assert "per million" not in option.cost_basis  # the student answers on the device, not through the API

    served = len(server.served)
    task.write_text(task.read_text().replace("epochs: 2", "epochs: 1"))  # another student: no relabelling
    again = {r.name: r for r in run_task(load_task(task), task_path=task, report=False).results.rungs}["distill"]
    assert again.status == "finished" and len(server.served) == served


# ------------------------------------------------------------------------------------- the ladder's trigger

CPU = {None: Pricing(device="cpu", usd_per_second=0.1 / 3600)}
DISTILL = PlannedRung("distill", "distill", train_tokens=20_000, train_examples=1000, pool_size=900,
                      pool_work=(2_000.0, 20.0))


def _done(name: str, family: str, value: float, *, examples: int = 100, eval_seconds: float = 50.0,
          model: str | None = None) -> Observed:
    return Observed(name, family, "finished", value=value, low=value - 0.05, high=value + 0.05, examples=examples,
                    eval_seconds=eval_seconds, model=model)


def test_the_ladder_distils_only_when_the_teacher_beats_the_cheaper_candidates():
    probe = _done("probe", "no_llm", 0.85, eval_seconds=1.0)
    weak = _done("few_shot_retrieved@small", "prompt_score_demos", 0.80, model="small")
    action = distill_action(DISTILL, {"probe": probe, "weak": weak}, Budget(), 100, CPU)
    assert action.kind == "skip" and "does not beat the cheaper probe" in action.reason
    strong = _done("few_shot_retrieved@big", "prompt_score_demos", 0.90, model="big")
    action = distill_action(DISTILL, {"probe": probe, "weak": weak, "strong": strong}, Budget(), 100, CPU)
    assert action.kind == "run" and action.params == {"teacher": "few_shot_retrieved", "teacher_model": "big"}
    # 900 inputs x 0.5 s measured on the teacher, 20,000 tokens x the encoder prior, 100 test examples
    assert action.estimate_s == pytest.approx(900 * 0.5 + 20_000 * 0.0008 + 100 * 0.03)
    assert action.rung == "distill" and "few_shot_retrieved@big" in action.reason
    assert distill_action(DISTILL, {"probe": probe}, Budget(), 100, CPU).reason.endswith(
        "no prompted rung finished to be its teacher")


def test_a_tight_budget_labels_the_largest_sample_of_the_pool_that_fits():
    strong = _done("few_shot_retrieved", "prompt_score_demos", 0.90)
    spent = Observed("probe", "no_llm", "finished", value=0.8, low=0.75, high=0.85, seconds=100.0)
    budget = Budget(hours=(100 + 200) / 3600)  # 200 s left: 2000 x 0.8 ms + 3 s fixed, 0.5 s + 16 ms an input
    action = distill_action(DISTILL, {"probe": spent, "t": strong}, budget, 100, CPU)
    assert action.kind == "run" and action.params["pool_limit"] == int((200 - 1.6 - 3.0) / (0.5 + 0.016))
    assert "labels a random sample of" in action.reason
    budget = Budget(hours=(100 + 40) / 3600)  # 40 s: fewer than 100 inputs
    assert distill_action(DISTILL, {"probe": spent, "t": strong}, budget, 100, CPU).kind == "skip"


def test_the_policy_ladder_has_a_distill_rung_only_with_an_unlabelled_pool(tmp_path):
    task = _pool_task(tmp_path, tmp_path)
    spec = load_task(task).model_copy(update={"rungs": None})
    names = [r.name for r in policy_ladder(spec)]
    assert names.index("distill") == names.index("encoder_ft") + 1
    bare = spec.model_copy(update={"data": spec.data.model_copy(update={"unlabelled": None})})
    assert "distill" not in [r.name for r in policy_ladder(bare)]
    # next_action hands a distill rung to distill_action (after the rungs before it)
    observed = {"t": _done("few_shot_retrieved", "prompt_score_demos", 0.9)}
    action = next_action([DISTILL], observed, target=None, metric="accuracy", budget=Budget(), n_test=100,
                         pricing=CPU)
    assert action.kind == "run" and action.params["teacher"] == "few_shot_retrieved"


@pytest.mark.parametrize(("teacher_model", "runs"), [("fake:oracle:ORACLE", True), ("fake:random", False)])
def test_the_walk_picks_the_teacher_and_distils_only_when_it_beats_the_cheaper_candidates(tiny_bert_dir, tmp_path,
                                                                                          teacher_model, runs):
    task = _pool_task(tmp_path, tiny_bert_dir, teacher_model=teacher_model)
    text = task.read_text().replace("rungs:\n  - few_shot_retrieved\n", "rungs:\n  - probe\n  - few_shot_retrieved\n")
    task.write_text(text.replace("params: {teacher: few_shot_retrieved, ", "params: {"))  # the walk chooses it
    outcome = run_task(load_task(task), task_path=task, report=False, policy=True)
    rung = {r.name: r for r in outcome.results.rungs}["distill"]
    steps = {a.rung: a for a in outcome.results.ladder.actions if a.rung == "distill"}
    if runs:
        assert rung.status == "finished", rung.error or rung.reason
        assert rung.config["teacher"] == "few_shot_retrieved" and steps["distill"].kind == "run"
        assert "distil: the best prompted rung, few_shot_retrieved" in steps["distill"].reason
    else:
        assert rung.status == "skipped" and "does not beat the cheaper probe" in rung.reason


def test_an_extraction_teacher_teaches_a_lora_student_and_answers_off_the_schema_are_dropped(tmp_path, tiny_llama_dir):
    from .test_finetuning import FAST
    from .test_run import write_extraction

    task = write_extraction(tmp_path)
    good = {"intent": "PlayMusic", "slots": [{"slot": "artist", "value": "artist 7"}]}
    pool = [f"play tune {i} by artist 7" for i in range(6)] + ["stop the music", "pause it", "hello", "bye"]
    answers = [json.dumps(good)] * 6 + [json.dumps({"intent": "Stop"})] * 2 + ["no idea", "nothing"]
    _jsonl(tmp_path / "pool.jsonl", [{"text": t} for t in pool])
    _jsonl(tmp_path / "oracle.jsonl", [{"text": t, "label": a} for t, a in zip(pool, answers)])
    text = task.read_text().replace("output: output}", "output: output, unlabelled: pool.jsonl}")
    text = text.replace("model: 'fake:echo'\n", "models:\n  - {id: 'fake:oracle:" + str(tmp_path / "oracle.jsonl")
                        + "', name: teacher}\n  - {id: 'hf:" + str(tiny_llama_dir) + "', name: tiny}\n")
    task.write_text(text + "rungs:\n  - {name: distill, strategy: distill, model: teacher, params: {teacher: zero_shot,"
                    f" student: lora, student_model: tiny, student_params: {FAST}}}}}\n")
    rung = run_task(load_task(task), task_path=task, report=False).results.rungs[0]
    assert rung.name == "distill@teacher" and rung.status == "finished", rung.error or rung.reason
    info = rung.extras["distillation"]
    assert (info["labelled"], info["kept"], info["schema_failures"], info["unparsed"]) == (10, 6, 2, 2)
    assert info["student_model_id"] == f"hf:{tiny_llama_dir}"
    assert rung.config["student_config"]["strategy"] == "finetune"
    assert rung.config["student_config"]["train_subset"]["examples"] == 6 + info["gold_examples"]


def test_a_teacher_named_rung_at_model_puts_the_distill_rung_on_that_model(tmp_path):
    from tunewise.errors import TaskSpecError
    from tunewise.ladder.catalogue import resolve_rungs

    task = _pool_task(tmp_path, tmp_path)
    text = task.read_text().replace("model: 'fake:oracle:", "models:\n  - {name: small, id: 'fake:random'}\n"
                                    "  - {name: big, id: 'fake:oracle:").replace("jsonl'\nembedder", "jsonl'}\nembedder")
    task.write_text(text.replace("params: {teacher: few_shot_retrieved,", "params: {teacher: few_shot_retrieved@big,"))
    spec = load_task(task)
    names = {r.name: r.model for r in resolve_rungs(spec)}
    assert names["distill@big"] == "big" and "distill@small" not in names
    with pytest.raises(TaskSpecError, match="no model named .nosuch."):
        resolve_rungs(spec, ["distill@nosuch"])
