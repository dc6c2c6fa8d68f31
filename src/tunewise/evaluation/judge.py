"""An LLM judge for open-ended answers (``generation.metric: judge``), and the checks that say whether to trust it.

The judge model reads the task's question, the reference answer and the candidate's answer, and gives one grade in
1..``scale`` under the task's rubric (greedy decoding, the grades as the only allowed answers where the backend can
constrain them); a grade g scores ``(g - 1) / (scale - 1)``, so the judge's scores feed the same mean, BCa interval
and paired tests as any generation metric. Every judge call goes through the run's call cache.

Before a judge's numbers mean anything, :func:`judge_checks` measures it on the human grades the user provides
(``generation.judge.human``: input, answer, reference, score):

* agreement: Cohen's kappa with quadratic weights (scikit-learn's ``cohen_kappa_score``), the usual agreement for
  ordinal grades, with a percentile bootstrap interval over the graded examples;
* position bias: the same examples judged with the answer shown before the reference instead of after it; the mean
  grade change with its bootstrap interval and the share of grades that changed;
* length bias: Spearman's rank correlation of grade and answer length (in words), the judge's beside the humans'
  on the same answers, each with a bootstrap interval: a judge that rewards length more than people do shows it.

Out of scope: loading the judge's backend (``ladder/context.py``), where the checks are shown (``summary.py``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backends.base import GenerationRequest, messages

__all__ = ["Judge", "judge_prompt", "parse_grade", "judge_checks", "weighted_kappa"]

SYSTEM = "You are a strict, fair grader. Answer with the grade only."
RESAMPLES = 2000


def judge_prompt(rubric: str, scale: int, question: str, reference: str, answer: str | None, *,
                 answer_first: bool = False) -> Any:
    """The judge's messages; ``answer_first`` shows the answer before the reference (the position-bias check)."""
    parts = [f"Reference answer:\n{reference}", f"Answer to grade:\n{'' if answer is None else answer}"]
    if answer_first:
        parts.reverse()
    user = (f"{rubric}\n\nQuestion:\n{question}\n\n" + "\n\n".join(parts)
            + f"\n\nGrade the answer from 1 (worst) to {scale} (best). Grade:")
    return messages(("system", SYSTEM), ("user", user))


def parse_grade(text: str, scale: int) -> int | None:
    """The first whole number in 1..scale the judge wrote, else None."""
    for match in re.finditer(r"\d+", text or ""):
        grade = int(match.group())
        if 1 <= grade <= scale:
            return grade
    return None


@dataclass
class Judge:
    """A judge model behind the call cache, with its rubric and scale."""

    backend: Any
    rubric: str
    scale: int
    model: str = ""

    def grades(self, questions: Sequence[str], references: Sequence[Any], answers: Sequence[Any], *,
               answer_first: bool = False) -> list[int | None]:
        choices = tuple(str(g) for g in range(1, self.scale + 1))
        requests = [GenerationRequest(prompt=judge_prompt(self.rubric, self.scale, str(q), str(r), a if a is None
                                                          else str(a), answer_first=answer_first),
                                      max_new_tokens=4, choices=choices)
                    for q, r, a in zip(questions, references, answers)]
        return [parse_grade(g.text, self.scale) for g in self.backend.generate(requests)]

    def scores(self, questions: Sequence[str], references: Sequence[Any], answers: Sequence[Any]) -> np.ndarray:
        """Scores in [0, 1]; an answer that did not parse scores 0 without asking, an unreadable grade scores 0."""
        asked = [i for i, a in enumerate(answers) if a is not None]
        out = np.zeros(len(answers))
        grades = self.grades([questions[i] for i in asked], [references[i] for i in asked],
                             [answers[i] for i in asked])
        for i, g in zip(asked, grades):
            if g is not None:
                out[i] = (g - 1) / (self.scale - 1)
        return out


def weighted_kappa(a: Sequence[int], b: Sequence[int], labels: Sequence[int]) -> float:
    """Cohen's kappa with quadratic weights (1.0 when both raters give one and the same grade throughout)."""
    from sklearn.metrics import cohen_kappa_score

    if len(set(a) | set(b)) == 1:
        return 1.0
    return float(cohen_kappa_score(a, b, labels=list(labels), weights="quadratic"))


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def _interval(stat: Any, n: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    values = np.array([stat(rng.integers(0, n, n)) for _ in range(RESAMPLES)], dtype=float)
    values = values[np.isfinite(values)]
    if not values.size:
        return float("nan"), float("nan")
    return float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))


def judge_checks(judge: Judge, rows: Sequence[dict[str, Any]], *, seed: int = 0) -> dict[str, Any]:
    """Agreement with the human grades, position bias and length bias, on ``rows`` (module docstring)."""
    questions = [str(r["input"]) for r in rows]
    references = [str(r.get("reference", "")) for r in rows]
    answers = [str(r["answer"]) for r in rows]
    human = np.array([int(r["score"]) for r in rows])
    first = judge.grades(questions, references, answers)
    swapped = judge.grades(questions, references, answers, answer_first=True)
    readable = [i for i in range(len(rows)) if first[i] is not None and swapped[i] is not None]
    n = len(readable)
    out: dict[str, Any] = {"model": judge.model, "rubric": judge.rubric, "scale": judge.scale, "examples": len(rows),
                           "unreadable_grades": len(rows) - n, "interval": "95% percentile bootstrap over examples"}
    if n < 2:
        return {**out, "warning": "fewer than 2 readable grades: nothing measured"}
    h = human[readable]
    j = np.array([first[i] for i in readable])
    s = np.array([swapped[i] for i in readable])
    lengths = np.array([len(answers[i].split()) for i in readable], dtype=float)
    labels = range(1, judge.scale + 1)
    kappa = weighted_kappa(h.tolist(), j.tolist(), labels)
    out["agreement"] = {"weighted_kappa": kappa, "interval": _interval(
        lambda idx: weighted_kappa(h[idx].tolist(), j[idx].tolist(), labels), n, seed),
        "exact_agreement": float((h == j).mean())}
    change = s - j
    out["position_bias"] = {"mean_grade_change": float(change.mean()), "interval": _interval(
        lambda idx: float(change[idx].mean()), n, seed), "share_changed": float((change != 0).mean()),
        "how": "the same examples judged with the answer shown before the reference; change = that grade minus "
               "the grade with the reference first"}
    out["length_bias"] = {"judge_spearman": _spearman(j, lengths), "judge_interval": _interval(
        lambda idx: _spearman(j[idx], lengths[idx]), n, seed), "human_spearman": _spearman(h, lengths),
        "human_interval": _interval(lambda idx: _spearman(h[idx], lengths[idx]), n, seed),
        "how": "Spearman rank correlation of grade and answer length in words"}
    return out
