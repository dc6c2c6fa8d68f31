"""encoder_ft's training (issue 15): a sentence encoder fine-tuned with a warm-started linear head, on a tiny random
BERT built here from a config, saved as a standard Hugging Face model plus its head, and loaded back."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from tunewise.training.encoder import (
    HEAD_CONFIG,
    HEAD_FILE,
    EncoderRecipe,
    load_encoder_classifier,
    predict_proba,
    train_encoder,
)

from .test_run import LABELS, WORDS, serve_answer


def _rows(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = LABELS[i % len(LABELS)]
        words = WORDS[label].split()
        rng.shuffle(words)
        noise = WORDS[rng.choice(LABELS)].split()
        rng.shuffle(noise)
        out.append((" ".join(words[:4] + noise[:3]), label))
    return out


def test_encoder_is_fine_tuned_saved_as_a_hugging_face_model_and_loaded_back(tiny_bert_dir, tmp_path):
    from transformers import AutoModel

    train, dev = _rows(96, 0), _rows(24, 1)
    recipe = EncoderRecipe(epochs=3, batch_size=16, body_lr=1e-3, head_lr=1e-2, max_length=16, patience=3)
    steps = []
    out = tmp_path / "model"
    training = train_encoder(tiny_bert_dir, train, dev, LABELS, out, recipe, progress=lambda d, n: steps.append((d, n)),
                             provenance={"rung": "encoder_ft", "base_model": str(tiny_bert_dir)})
    assert steps and steps[-1][0] == training["steps"] and steps[-1][1] == 18  # 6 steps an epoch x 3
    assert 0.0 <= training["warm_start"]["probe_train_accuracy"] <= 1.0
    assert [h["epoch"] for h in training["dev_history"]] == [1.0, 2.0, 3.0]
    assert training["best_dev_accuracy"] == max(h["dev_accuracy"] for h in training["dev_history"])
    assert training["best_dev_accuracy"] >= 0.75  # four well-separated intents

    for name in ("config.json", "model.safetensors", "tokenizer.json", HEAD_FILE, HEAD_CONFIG,
                 "tunewise_provenance.json", "modules.json"):
        assert (out / name).is_file(), name
    AutoModel.from_pretrained(out, local_files_only=True)  # plain transformers loads the body
    provenance = json.loads((out / "tunewise_provenance.json").read_text())
    assert provenance["labels"] == LABELS and provenance["rung"] == "encoder_ft"

    model, tokenizer, config = load_encoder_classifier(out)
    assert config["labels"] == LABELS and config["pooling"] == "mean"
    texts = [t for t, _ in dev]
    probs = predict_proba(model, tokenizer, texts, config["max_length"])
    assert probs.shape == (len(dev), 4) and np.allclose(probs.sum(1), 1.0, atol=1e-5)
    accuracy = float((np.array(LABELS)[probs.argmax(1)] == np.array([y for _, y in dev])).mean())
    assert accuracy == pytest.approx(training["best_dev_accuracy"], abs=1e-6)  # the best epoch was kept

    again = train_encoder(tiny_bert_dir, train, dev, LABELS, out, recipe, progress=lambda d, n: steps.append("x"))
    assert again == json.loads((out / HEAD_CONFIG).read_text())["training"] and "x" not in steps  # reused


def test_warm_start_copies_the_probe_into_the_head(tiny_bert_dir, tmp_path):
    """Before any step, the head is the logistic probe on the frozen embeddings: its predictions are the probe's."""
    import torch
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoModel, AutoTokenizer

    from tunewise.training.encoder import EncoderClassifier, _embeddings, _warm_start

    train = _rows(64, 3)
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model = EncoderClassifier(AutoModel.from_pretrained(tiny_bert_dir), 4)
    x = _embeddings(model, tok, [t for t, _ in train], 16)
    y = np.array([LABELS.index(label) for _, label in train])
    _warm_start(model, x, y, 10.0, 0)
    probe = LogisticRegression(C=10.0, max_iter=2000, random_state=0).fit(x, y)
    with torch.no_grad():
        logits = model.head(torch.from_numpy(x)).numpy()
    assert (logits.argmax(1) == probe.predict(x)).all()


def _task(tmp_path, encoder_dir, extra: str = "") -> "Path":
    import json as _json

    train, test = _rows(120, 0), _rows(24, 5)
    (tmp_path / "train.jsonl").write_text("".join(_json.dumps({"text": t, "label": y}) + "\n" for t, y in train))
    (tmp_path / "test.jsonl").write_text("".join(_json.dumps({"text": t, "label": y}) + "\n" for t, y in test))
    task = tmp_path / "task.yaml"
    task.write_text("name: toy\nkind: classification\ndata: {train: train.jsonl, test: test.jsonl}\n"
                    "model: 'fake:random'\nembedder: hashing\n"
                    "rungs:\n  - {name: encoder_ft, strategy: encoder_ft, params: {encoder: '" + str(encoder_dir)
                    + "', epochs: 2, batch_size: 16, body_lr: 0.001, head_lr: 0.01, max_length: 16}}\n" + extra)
    return task


def test_encoder_ft_rung_is_scored_reused_and_served_as_a_version(tiny_bert_dir, tmp_path):
    from tunewise.data import load_splits
    from tunewise.run import run_task
    from tunewise.store import Store
    from tunewise.task import load_task
    from tunewise.versions import create_version, load_candidate, promote, task_spec

    task = _task(tmp_path, tiny_bert_dir)
    outcome = run_task(load_task(task), task_path=task)  # with the report: its sections read the training record
    assert "encoder_ft" in outcome.report_path.read_text()
    training_row = next(line for line in outcome.summary_path.read_text().splitlines()
                        if line.startswith("| encoder_ft | full (encoder) / linear |"))
    assert "None" not in training_row  # fields an encoder's training does not have read as dashes
    rung = outcome.results.rungs[0]
    assert rung.status == "finished", rung.error or rung.reason
    assert rung.model is None and rung.config["strategy"] == "encoder_ft" and not rung.config["artifact_reused"]
    training = rung.extras["training"]
    assert training["examples"] == len(load_splits(load_task(task)).train) and training["work_tokens"] > 0
    assert training["wall_s"] > 0 and training["epochs"] == 2.0
    assert all(p.confidence is not None and p.model_call for p in rung.predictions)
    assert rung.usage["examples_per_s"] > 0  # priced from measured throughput

    again = run_task(load_task(task), task_path=task, report=False, rungs=["encoder_ft"])
    assert again.reused == ("encoder_ft",)

    with Store(tmp_path / ".tunewise") as store:
        version = create_version(store, outcome.results.run_id, "encoder_ft")
        assert version.manifest["artifact"]["path"].startswith("artifacts/encoder-")
        test = load_splits(task_spec(version, store)).test
        candidate, backend = load_candidate(version, store)
        assert [p.output for p in candidate.predict(test, backend=backend)] == [p.output for p in rung.predictions]
        promote(store, version.id, "production")

    answer = serve_answer(tmp_path / ".tunewise", "production", test[0].text)
    assert answer.version == version.id and answer.text == rung.predictions[0].output


def test_encoder_ft_needs_a_transformers_encoder_and_only_classifies(tmp_path):
    from tunewise.ladder.catalogue import policy_ladder
    from tunewise.ladder.planning import plan
    from tunewise.task import RungSpec, load_task

    task = _task(tmp_path, "unused")
    text = task.read_text()
    task.write_text(text[:text.index("rungs:")] + "target: {accuracy: 0.9}\n")
    spec = load_task(task)
    assert [r.name for r in policy_ladder(spec)][-3:] == ["encoder_ft", "lora", "learning_curve"]
    from tunewise.data import load_splits

    planned = plan(RungSpec(name="encoder_ft", strategy="encoder_ft"), spec, load_splits(spec).train)
    assert planned.blocked and "embedder 'hashing' is not a transformers encoder" in planned.blocked
    assert planned.family == "encoder" and planned.kind == "tuned"


def test_encoder_work_counts_tokens_and_nested_sizes(tiny_bert_dir, tmp_path):
    from tunewise.data import load_splits
    from tunewise.ladder.planning import plan
    from tunewise.ladder.policy import Budget, PolicyConfig, Pricing, estimate_cost, fit_tuned
    from tunewise.task import load_task

    spec = load_task(_task(tmp_path, tiny_bert_dir))
    splits = load_splits(spec)
    rung = spec.rungs[0]
    planned = plan(rung, spec, splits.train, dev=splits.dev)
    assert planned.blocked is None and planned.train_examples == len(splits.train)
    assert planned.train_tokens > 2 * sum(len(e.text.split()) for e in splits.train)  # 2 epochs, [CLS] and [SEP]
    assert planned.fit_sizes[0][0] == len(splits.train) and planned.fit_sizes[-1][0] >= 32
    cpu = Pricing(device="cpu", usd_per_second=0.1 / 3600)
    est = estimate_cost(planned, {}, len(splits.test), cpu)
    assert "(encoder)" in est.basis and est.seconds < planned.train_tokens * 0.0061  # not an LLM's rate
    fit = fit_tuned(planned, {}, Budget(hours=est.seconds * 0.8 / 3600), len(splits.test), cpu)
    assert fit.params and fit.params["limit"] < len(splits.train)
    del PolicyConfig


def _distill_task(tmp_path, encoder_dir, teacher_model: str, extra_params: str = "") -> "Path":
    import json as _json

    train, test = _rows(120, 0), _rows(24, 5)
    rows = lambda pairs: "".join(_json.dumps({"text": t, "label": y}) + "\n" for t, y in pairs)  # noqa: E731
    (tmp_path / "train.jsonl").write_text(rows(train))
    (tmp_path / "test.jsonl").write_text(rows(test))
    (tmp_path / "oracle.jsonl").write_text(rows(train + test))
    model = teacher_model.replace("ORACLE", str(tmp_path / "oracle.jsonl"))
    task = tmp_path / "task.yaml"
    task.write_text("name: toy\nkind: classification\ndata: {train: train.jsonl, test: test.jsonl}\n"
                    f"model: '{model}'\nembedder: hashing\n"
                    "rungs:\n  - {name: distill, strategy: distill, params: {teacher: few_shot_retrieved, "
                    "student: encoder_ft, student_params: {encoder: '" + str(encoder_dir) + "', epochs: 2, "
                    "batch_size: 16, body_lr: 0.001, head_lr: 0.01, max_length: 16}" + extra_params + "}}\n")
    return task


def test_distill_trains_the_student_on_the_teachers_labels_and_resumes_without_relabelling(tiny_bert_dir, tmp_path):
    from tunewise.run import run_task
    from tunewise.task import load_task

    task = _distill_task(tmp_path, tiny_bert_dir, "fake:oracle:ORACLE")
    outcome = run_task(load_task(task), task_path=task, report=False)
    rung = outcome.results.rungs[0]
    assert rung.status == "finished", rung.error or rung.reason
    info = rung.extras["distillation"]
    assert info["teacher"] == "few_shot_retrieved" and info["labelled"] == info["kept"] > 0
    assert info["teacher_agreement_with_gold"] >= 0.95  # the oracle knows the labels (up to repeated texts)
    assert rung.config["strategy"] == "distill" and rung.config["student_config"]["strategy"] == "encoder_ft"
    assert (Path(rung.config["student_config"]["artifact"]) / "tunewise_provenance.json").is_file()

    def calls() -> int:
        import sqlite3

        with sqlite3.connect(tmp_path / ".tunewise" / "tunewise.db") as db:
            return db.execute("select count(*) from calls").fetchone()[0]

    before = calls()
    assert before > 0  # the labels came from model calls (one with a single candidate label needs none)
    # another student (1 epoch): the rung runs again, and the teacher's labels all come from the call cache
    task.write_text(task.read_text().replace("epochs: 2", "epochs: 1"))
    again = run_task(load_task(task), task_path=task, report=False).results.rungs[0]
    assert again.status == "finished" and again.extras["distillation"]["kept"] == info["kept"]
    assert calls() == before


def test_distill_keeps_only_confident_teacher_labels_and_never_shows_the_teacher_its_gold(tiny_bert_dir, tmp_path):
    from tunewise.run import run_task
    from tunewise.task import load_task

    task = _distill_task(tmp_path, tiny_bert_dir, "fake:random", ", min_confidence: 0.5")
    rung = run_task(load_task(task), task_path=task, report=False).results.rungs[0]
    assert rung.status == "finished", rung.error or rung.reason
    info = rung.extras["distillation"]
    assert info["below_confidence"] > 0
    assert info["kept"] + info["below_confidence"] + info["unparsed"] == info["labelled"]
    assert info["labelled"] + info["in_dev_or_test"] == info["pool_size"] == 108  # train, not dev
    assert info["teacher_agreement_with_gold"] < 0.9  # a random teacher, given no gold label to copy


def test_a_teacher_labelling_train_is_never_shown_the_inputs_own_example(tmp_path):
    from tunewise.data import load_splits
    from tunewise.embeddings import HashingEmbedder
    from tunewise.strategies.base import PrepareContext
    from tunewise.strategies.prompting import _retriever
    from tunewise.task import load_task

    spec = load_task(_task(tmp_path, "unused"))
    splits = load_splits(spec)
    embedder = HashingEmbedder()
    ctx = PrepareContext(spec=spec, splits=splits, embed=embedder.embed)
    query = splits.train[0].text
    assert _retriever(ctx, 8)([query])[0][-1][0] == query  # the nearest demonstration is the input itself
    shown = [text for text, _ in _retriever(ctx, 8, leave_one_out=True)([query])[0]]
    assert len(shown) == 8 and query not in shown
