"""Generation metrics (issue 16, item 3): ``generation.metric`` scores each example (ROUGE-L, chrF, embedding
similarity, or the user's ``module:function``), and those scores feed the same intervals, paired tests, screen
rules and decision as every other metric."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tunewise.errors import TaskSpecError
from tunewise.evaluation.metrics import generation_scores
from tunewise.evaluation.scoring import mean_metric
from tunewise.evaluation.stats import compare_paired
from tunewise.run import run_task
from tunewise.task import load_task, parse_task


def overlap(gold: str, pred: str | None) -> float:
    """A user's metric: the share of the gold words the prediction contains."""
    words = gold.split()
    return 0.0 if pred is None else sum(w in pred.split() for w in words) / len(words)


def broken(gold: str, pred: str | None) -> float:
    return float("nan")


def test_built_in_scores_match_their_libraries_on_known_pairs():
    golds, preds = ["the cat sat on the mat", "hello world"], ["the cat is on the mat", None]
    rouge = generation_scores("rouge_l", golds, preds)
    assert rouge[0] == pytest.approx(10 / 12) and rouge[1] == 0.0  # LCS 5 of 6 words both ways; no answer scores 0
    chrf = generation_scores("chrf", golds, preds)
    assert chrf[0] == pytest.approx(0.619251512899325) and chrf[1] == 0.0

    def embed(texts):
        return np.array([[1.0, 0.0] if "cat" in t else [0.0, 1.0] for t in texts])

    sim = generation_scores("embedding_similarity", ["a cat", "a cat", "a cat"], ["cat", "dog", None], embed=embed)
    assert sim.tolist() == [1.0, 0.0, 0.0]


def test_a_users_function_scores_each_example_and_its_errors_are_one_sentence():
    here = f"{__name__}"
    assert generation_scores(f"{here}:overlap", ["a b", "a b"], ["a", None]).tolist() == [0.5, 0.0]
    with pytest.raises(TaskSpecError, match="returned nan for test example 1; it must return a finite number"):
        generation_scores(f"{here}:broken", ["a"], ["a"])
    with pytest.raises(TaskSpecError, match="cannot be loaded"):
        generation_scores("no_such_module_xyz:f", ["a"], ["a"])


def test_the_task_targets_its_generation_metric_by_name():
    base = {"name": "t", "kind": "generation", "data": {"train": "a.jsonl", "test": "b.jsonl"}}
    spec = parse_task({**base, "generation": {"metric": "pkg.mod:my_score"}, "target": {"my_score": 0.5}})
    assert spec.primary_metric == "my_score"
    assert parse_task({**base, "generation": {"metric": "chrf"}, "target": {"chrf": 0.5}}).primary_metric == "chrf"
    assert parse_task(base).primary_metric == "exact_match"
    with pytest.raises(TaskSpecError, match="neither a built-in metric"):
        parse_task({**base, "generation": {"metric": "bleu"}})
    with pytest.raises(TaskSpecError, match="target metric 'rouge_l' does not apply"):
        parse_task({**base, "generation": {"metric": "chrf"}, "target": {"rouge_l": 0.5}})


def test_the_mean_scores_bca_interval_covers_at_its_level():
    """Coverage of the interval every generation metric gets, checked by simulation: the mean of n = 60 scores in
    [0, 1] (Beta(2, 5), true mean 2/7, and a spike at 0 as unparsed answers give), 300 samples."""
    rng = np.random.default_rng(0)
    hits = 0
    for i in range(300):
        scores = np.where(rng.random(60) < 0.2, 0.0, rng.beta(2, 5, 60))
        m = mean_metric(scores, seed=i)
        hits += m.low <= 0.8 * 2 / 7 <= m.high
    assert 0.92 <= hits / 300 <= 0.98  # nominal 95%


def test_paired_scores_are_compared_with_a_wilcoxon_test_and_the_bootstrap():
    rng = np.random.default_rng(1)
    a = rng.random(80)
    better = compare_paired(np.clip(a + 0.2, 0, 1), a)
    assert better["verdict"] == "A better" and "Wilcoxon signed-rank p" in better["explanation"]
    same = compare_paired(a, a)
    assert same["verdict"] == "not significantly different" and same["p_value"] == 1.0


def _echo_run(tmp_path):
    """knn and zero_shot on a toy generation task scored by ``overlap``, the echoing fake model answering."""
    pairs = [{"text": f"say {w} now", "label": f"{w} now"} for w in ["alpha", "beta", "gamma", "delta"] * 6]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs[:16]))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs[16:]))
    (tmp_path / "task.yaml").write_text(
        "name: echo\nkind: generation\ndata: {train: train.jsonl, test: test.jsonl}\n"
        f"generation: {{metric: '{__name__}:overlap'}}\ntarget: {{overlap: 0.99}}\nmodel: 'fake:echo'\n"
        "embedder: hashing\n")
    outcome = run_task(load_task(tmp_path / "task.yaml"), rungs=["knn", "zero_shot"], report=False)
    return outcome


def test_a_generation_run_is_scored_ranked_and_decided_on_its_metric(tmp_path):
    outcome = _echo_run(tmp_path)
    knn, echo = outcome.results.rungs
    assert knn.primary_metric == echo.primary_metric == "overlap"
    m = echo.metrics["overlap"]
    assert m.value == pytest.approx(1.0) and m.low < 1.0 and m.n == 8  # the echo holds both gold words
    assert "exact_match" in echo.metrics  # the match rule is still reported
    (comparison,) = outcome.results.comparisons
    assert "Wilcoxon" in comparison.explanation
    assert outcome.decision.options[0].metric == "overlap"


# ------------------------------------------------------------------------------------------------ the LLM judge


def _judge(script):
    from tunewise.backends.fake import FakeBackend
    from tunewise.evaluation.judge import Judge

    return Judge(FakeBackend("fake:random", script=script), "Grade it.", 5, model="fake:script")


def _answer(prompt) -> tuple[str, bool]:
    """The answer the judge was shown, and whether it came before the reference."""
    text = prompt[-1].content
    answer = text.split("Answer to grade:\n", 1)[1].split("\n\n", 1)[0]
    return answer, text.index("Answer to grade") < text.index("Reference answer")


def test_judge_checks_measure_agreement_position_bias_and_length_bias():
    from tunewise.evaluation.judge import judge_checks

    rows = [{"input": f"q{i}", "reference": "ref", "answer": " ".join(["w"] * (1 + i % 5)), "score": 1 + i % 5}
            for i in range(40)]
    # a judge that grades by length (as the people here did) and adds a point when the answer is shown first
    graded = judge_checks(_judge(lambda p: str(min(5, len(_answer(p)[0].split()) + _answer(p)[1]))), rows)
    assert graded["agreement"]["weighted_kappa"] == pytest.approx(1.0)
    low, high = graded["agreement"]["interval"]
    assert low <= 1.0 <= high + 1e-9
    bias = graded["position_bias"]
    assert bias["mean_grade_change"] == pytest.approx(32 / 40) and bias["share_changed"] == pytest.approx(0.8)
    assert bias["interval"][0] > 0  # the answer-first bonus is found
    assert graded["length_bias"]["judge_spearman"] == pytest.approx(1.0)
    # a judge that ignores the answer agrees with nobody
    flat = judge_checks(_judge(lambda p: "3"), rows)
    assert flat["agreement"]["weighted_kappa"] == pytest.approx(0.0) and flat["position_bias"]["share_changed"] == 0


def test_a_judged_generation_run_scores_with_the_judge_and_reports_its_checks(tmp_path):
    pairs = [{"text": f"say {w}", "label": w} for w in ["alpha", "beta", "gamma", "delta"] * 5]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs[:16]))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs[16:]))
    human = [{"input": "say alpha", "reference": "alpha", "answer": "alpha", "score": g} for g in (4, 5, 3, 4)]
    (tmp_path / "human.jsonl").write_text("".join(json.dumps(r) + "\n" for r in human))
    (tmp_path / "task.yaml").write_text(
        "name: judged\nkind: generation\ndata: {train: train.jsonl, test: test.jsonl}\n"
        "generation: {metric: judge, judge: {model: 'fake:constant:4', scale: 5, human: human.jsonl}}\n"
        "target: {judge: 0.5}\nmodel: 'fake:echo'\nembedder: hashing\n")
    outcome = run_task(load_task(tmp_path / "task.yaml"), rungs=["knn"], report=False)
    (knn,) = outcome.results.rungs
    assert knn.primary_metric == "judge" and knn.metrics["judge"].value == pytest.approx(0.75)  # grade 4 of 5
    checks = outcome.results.checks["judge"]
    assert checks["examples"] == 4 and checks["agreement"]["exact_agreement"] == pytest.approx(0.5)
    summary = outcome.summary_path.read_text()
    assert "## LLM judge" in summary and "quadratic-weighted Cohen's kappa" in summary
    (tmp_path / "human.jsonl").write_text(json.dumps({"input": "q", "answer": "a", "score": 9}) + "\n")
    from tunewise.errors import DataError

    with pytest.raises(DataError, match=r"human.jsonl: line 1 score 9 is not a whole grade 1..5"):
        run_task(load_task(tmp_path / "task.yaml"), rungs=["knn"], report=False)
    with pytest.raises(TaskSpecError, match="metric: judge and a judge section go together"):
        parse_task({"kind": "generation", "data": {"train": "a.jsonl", "test": "b.jsonl"},
                    "generation": {"metric": "judge"}})


def test_a_generation_runs_paired_tests_are_named_wilcoxon_wherever_they_are_shown(tmp_path):
    """The comparisons of per-example scores use Wilcoxon's signed-rank test, but summary.md's table was headed
    'McNemar exact p' and the decision's and the plateau's sentences said 'McNemar p' (seen on snips_nlg)."""
    from tunewise.summary import summary_markdown

    outcome = _echo_run(tmp_path)
    (comparison,) = outcome.results.comparisons
    assert comparison.test == "Wilcoxon signed-rank"
    text = summary_markdown(outcome.results)
    assert "Wilcoxon signed-rank p" in text and "McNemar" not in text
    assert any("Wilcoxon p = " in r for r in outcome.decision.reasons)
    assert not any("McNemar" in r for r in outcome.decision.reasons)
