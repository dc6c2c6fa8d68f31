"""The report on a synthetic run: files, self-containment, escaping, plots, edge cases, decision.json, CLI.

The run is built from real records (``RungResult``, ``score_predictions``, ``usage_summary``, a fitted
learning curve) over a small task written to a temp dir, so predictions join the loaded test split by
example id exactly as in a real run; no model is involved. The results go through ``results.json`` and
back (``RunResults.from_json``); the decision is made once, as the orchestrator and the CLI do, and handed
to the report, which never decides.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import pkgutil
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

import tunewise.report
from tunewise.cli import cli
from tunewise.costs import DEFAULT_PRICES
from tunewise.data import check_data, load_splits
from tunewise.decision import Decision, Option, decide
from tunewise.evaluation.evaluator import usage_summary
from tunewise.evaluation.records import MetricValue, Prediction
from tunewise.evaluation.scoring import compare_rungs, per_example_correct, score_predictions
from tunewise.ladder.policy import Action
from tunewise.report import render_report
from tunewise.report.edge_cases import LENGTH_BUCKETS, edge_cases_markdown, length_bucket
from tunewise.report.markup import markdown_to_html, md_escape
from tunewise.report.plots import per_label_svg
from tunewise.results import (
    Comparison,
    EarlyRejection,
    LadderBudget,
    LadderRecord,
    RungResult,
    RunResults,
    write_json,
)
from tunewise.store import Store
from tunewise.task import load_task
from tunewise.training.curves import CurvePoint, fit_learning_curve, forecast_examples

LABELS = ["card_arrival", "exchange_rate", "top_up", "lost_card"]
PHRASES = {"card_arrival": "when will my new card arrive", "exchange_rate": "what exchange rate do you use",
           "top_up": "top up my account from my bank", "lost_card": "I lost my card yesterday"}
SCRIPT = "<script>alert(1)</script> where is my card"
LONG = "my card has still not arrived " + " ".join(f"word{i}" for i in range(80)) + " please help me with it"


def write_data(tmp: Path) -> Path:
    def rows(n: int, extra: list[tuple[str, str]]) -> str:
        out = [{"text": f"{PHRASES[LABELS[i % 4]]} #{i}", "label": LABELS[i % 4]} for i in range(n)]
        out += [{"text": t, "label": y} for t, y in extra]
        return "\n".join(json.dumps(r) for r in out) + "\n"

    (tmp / "train.jsonl").write_text(rows(40, []))
    (tmp / "test.jsonl").write_text(rows(18, [(SCRIPT, "card_arrival"), (LONG, "card_arrival")]))
    task = tmp / "task.yaml"
    task.write_text("name: report-toy\nkind: classification\ndata: {train: train.jsonl, test: test.jsonl}\n"
                    "model: 'fake:random'\nembedder: hashing\ntarget: {accuracy: 0.8}\n"
                    "constraints: {requests_per_month: 100000}\n")
    return task


def _rung(name, strategy, tests, wrong, *, latency_ms, eps, prompt_tokens=0, config=None, extras=None):
    """A finished rung answering every test example right except those whose text satisfies ``wrong``."""
    preds = []
    for i, e in enumerate(tests):
        out = LABELS[(LABELS.index(e.target) + 1) % 4] if wrong(i, e) else e.target
        preds.append(Prediction(example_id=e.id, output=out, raw=str(out), prompt_tokens=prompt_tokens,
                                completion_tokens=1 if prompt_tokens else 0,
                                latency_s=latency_ms * (1 + 0.3 * ((i * 7) % 5) / 4) / 1000))
    scored = score_predictions("classification", [e.target for e in tests], preds, labels=LABELS, seed=0)
    usage = usage_summary(preds, wall_s=1.0)
    usage["examples_per_s"] = eps
    return RungResult(name=name, strategy=strategy, status="finished", config=config or {"strategy": strategy},
                      config_hash=hashlib.sha256(name.encode()).hexdigest()[:16], metrics=scored["metrics"],
                      primary_metric="accuracy", usage=usage, per_label=scored["per_label"],
                      confusions=scored["confusions"], parse=scored["parse"], predictions=tuple(preds),
                      extras=extras or {})


def _curve(of: str, values: list[float], n_test: int) -> dict:
    sizes = [8, 16, 32, 40]
    points = [CurvePoint(n=n, value=v, low=max(0.0, v - 0.15), high=min(1.0, v + 0.1), n_test=n_test)
              for n, v in zip(sizes, values)]
    fit = fit_learning_curve(points, seed=0, n_boot=60)
    rows = [{"subset": {"per_label": n // 4}, "n": p.n, "test": {"value": p.value, "low": p.low, "high": p.high,
             "n": n_test, "method": "test"}, "train_loss": 0.5, "dev_loss": 0.6} for n, p in zip(sizes, points)]
    return {"of": of, "metric": "accuracy", "target": 0.8, "points": rows, "model": "inverse power law",
            "warnings": [], "fit": fit.to_json(), "forecast": forecast_examples(fit, 0.8).to_json(), "backtest": None}


def build_results(task: Path) -> tuple[RunResults, object, tuple]:
    spec = load_task(task)
    splits = load_splits(spec)
    tests = splits.test
    is_script = lambda e: e.text == SCRIPT  # noqa: E731
    is_long = lambda e: e.text == LONG  # noqa: E731
    plain = lambda e: not is_script(e) and not is_long(e)  # noqa: E731
    prompt_cfg = {"strategy": "prompt", "mode": "score", "k": 8, "selection": "random", "choices": "all",
                  "calibrate": False, "model": "fake:random", "seed": 0,
                  "demonstrations": [{"text": "a", "target": "b"}]}
    training = {"device": "cpu", "device_hours": 0.05, "device_hour_usd": 0.1, "wall_s": 180.0, "method": "lora",
                "head": "lm", "examples": 40, "steps": 10, "epochs": 1.0, "price_source": "default"}
    rungs = [
        _rung("knn", "knn", tests, lambda i, e: i % 4 == 1 and plain(e), latency_ms=4, eps=400),
        _rung("probe", "probe", tests, lambda i, e: (i % 6 == 1 and plain(e)) or is_long(e), latency_ms=3, eps=500),
        _rung("few_shot_random", "prompt", tests, lambda i, e: is_long(e) or (i % 5 == 2 and plain(e)),
              latency_ms=300, eps=4, prompt_tokens=400, config=prompt_cfg),
        _rung("few_shot_random_s1", "prompt", tests, lambda i, e: is_long(e) or (i % 3 == 0 and plain(e)),
              latency_ms=310, eps=4, prompt_tokens=400,
              config={**prompt_cfg, "seed": 1, "demonstrations": [{"text": "c", "target": "d"}]}),
        _rung("lora", "finetune", tests, lambda i, e: is_script(e) or (i % 9 == 4 and plain(e)), latency_ms=120, eps=10,
              prompt_tokens=40, config={"strategy": "finetune", "method": "lora", "seed": 0},
              extras={"training": training}),
        _rung("learning_curve", "learning_curve", tests, lambda i, e: is_script(e) or (i % 3 == 1 and plain(e)),
              latency_ms=120, eps=10, prompt_tokens=40, config={"strategy": "learning_curve", "of": "finetune"},
              extras={"training": training, "curve": _curve("finetune", [0.45, 0.6, 0.72, 0.76], len(tests))}),
        _rung("probe_curve", "learning_curve", tests, lambda i, e: i % 6 == 1 and plain(e), latency_ms=3, eps=500,
              config={"strategy": "learning_curve", "of": "probe"},
              extras={"curve": _curve("probe", [0.5, 0.62, 0.7, 0.74], len(tests))}),
        RungResult(name="zero_shot", strategy="prompt", status="failed", error="the template is broken."),
    ]
    golds = [e.target for e in tests]
    vec = {r.name: per_example_correct("classification", golds, [p.output for p in r.predictions])
           for r in rungs if r.status == "finished"}
    comparisons = tuple(Comparison(a="probe", b=n, **compare_rungs(vec["probe"], v, seed=0)) for n, v in vec.items()
                        if n != "probe")
    results = RunResults(
        run_id="abcd1234-ef567890", task=spec.model_dump(mode="json"),
        data={"hash": splits.data_hash, "sizes": {"train": len(splits.train), "dev": len(splits.dev),
              "test": len(tests)}, "dev_origin": splits.dev_origin, "test_origin": splits.test_origin,
              "labels": list(splits.labels or [])},
        checks=check_data(splits, kind="classification").to_json(), rungs=tuple(rungs), comparisons=comparisons,
        environment={"python": "3.11", "platform": "test", "cpu_count": 2, "versions": {"tunewise": "0.1.0"},
                     "backend": {}},
        created_at="2026-01-01T00:00:00+00:00", seed=0)
    return RunResults.from_json(json.loads(json.dumps(results.to_json()))), spec, tests  # as results.json holds it


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    task = write_data(tmp)
    results, spec, tests = build_results(task)
    decision = decide(results, spec, DEFAULT_PRICES)
    paths = render_report(results, decision, spec=spec, test_examples=tests, out_dir=tmp / "out")
    return {"tmp": tmp, "task": task, "results": results, "spec": spec, "tests": tests, "paths": paths,
            "decision": decision}


def test_files_are_written(made):
    p = made["paths"]
    for path in (p.html, p.markdown, p.json, p.edge_cases):
        assert path.exists() and path.stat().st_size > 500, path


def test_html_is_self_contained_and_carries_the_verdict(made):
    page = made["paths"].html.read_text()
    decision = decide(made["results"], made["spec"], DEFAULT_PRICES)
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert "http://" not in page and "https://" not in page and "@import" not in page and "url(http" not in page
    assert decision.winner and f'<span class="winner">{decision.winner}</span>' in page
    assert decision.status in page and "Next step." in page
    assert page.index('id="verdict"') < page.index('id="options"') < page.index('id="plot-pareto"')


def test_user_text_is_escaped_never_live(made):
    page = made["paths"].html.read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page.lower()
    assert "Content-Security-Policy" in page


def test_plots_are_inline_svg_with_ids_and_titles(made):
    page = made["paths"].html.read_text()
    for name in ("pareto", "curves", "per-label", "latency"):
        m = re.search(rf'<svg id="plot-{name}"[^>]*role="img"[^>]*>\s*<title id="plot-{name}-title">[^<]+</title>',
                      page)
        assert m, name
    ids = re.findall(r'\sid="([^"]+)"', page)
    assert len(ids) == len(set(ids)), "element ids must be unique across the inlined figures"
    assert "<metadata>" not in page and "<?xml" not in page


def test_markdown_has_the_sections(made):
    text = made["paths"].markdown.read_text()
    for heading in ("## Verdict", "## Options, ranked", "## Learning-curve forecasts", "## Data checks",
                    "## Edge cases", "## Reproducibility"):
        assert heading in text, heading
    assert "Not ranked: zero_shot (failed: the template is broken.)" in text
    assert "\\<script>alert(1)\\</script>" in text  # quoted, escaped for Markdown


def _table(md: str, title: str) -> dict[str, list[str]]:
    block = md.split(f"By {title}:")[1].split("\n\n")[1]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()[2:]]
    return {r[0]: r[1:] for r in rows}


def test_edge_cases_count_flips_by_label_and_length(made):
    md = made["paths"].edge_cases.read_text()
    assert "Best prompt rung **few_shot_random**" in md and "best tuned rung **lora**" in md
    by_label = _table(md, "gold label")
    # columns: examples, both right, P right T wrong, P wrong T right, both wrong
    assert int(by_label["card_arrival"][2]) >= 1 and int(by_label["card_arrival"][3]) >= 1
    by_length = _table(md, "input length")
    assert list(by_length) == [b[0] for b in LENGTH_BUCKETS if b[0] in by_length]  # buckets with examples, in order
    assert by_length["41+ words"] == ["1", "0", "0", "1", "0"]  # the long input: prompt wrong, tuned right
    assert sum(int(v[0]) for v in by_length.values()) == len(made["tests"])
    assert "few_shot_random right -> lora wrong" in md and "\\<script>" in md and "\\#" not in md
    assert "…" in md  # the long input is truncated when quoted
    assert "few_shot_random, few_shot_random_s1" in md  # the repeated prompt rungs and their spread
    assert length_bucket("a b c") == "1-5 words" and length_bucket(LONG) == "41+ words"


def test_decision_json_round_trips(made):
    data = json.loads(made["paths"].json.read_text())
    context = data.pop("context")
    assert context["run_id"] == "abcd1234-ef567890" and context["data_hash"] == made["results"].data["hash"]
    options = tuple(Option(**{**o, "constraint_checks": tuple(o["constraint_checks"]),
                              "violations": tuple(o["violations"])}) for o in data.pop("options"))
    rebuilt = Decision(**{**data, "options": options, "pareto": tuple(data["pareto"]),
                          "reasons": tuple(data["reasons"]), "distillation": tuple(data["distillation"])})
    assert rebuilt == decide(made["results"], made["spec"], DEFAULT_PRICES)


def test_the_report_presents_the_decision_it_is_given_and_never_decides(made, tmp_path, monkeypatch):
    def no_deciding(*args, **kwargs):
        raise AssertionError("the report must not call decide(); the caller hands it the Decision")

    monkeypatch.setattr("tunewise.decision.decide", no_deciding)
    for module in pkgutil.iter_modules(tunewise.report.__path__, "tunewise.report."):
        assert not hasattr(importlib.import_module(module.name), "decide"), module.name
    paths = render_report(made["results"], made["decision"], spec=made["spec"], test_examples=made["tests"],
                          out_dir=tmp_path / "again")
    for name in ("html", "markdown", "json", "edge_cases"):  # the same decision: the same four files
        assert getattr(paths, name).read_text() == getattr(made["paths"], name).read_text(), name
    told = dataclasses.replace(made["decision"], next_step="Ship what the caller decided.")
    paths = render_report(made["results"], told, spec=made["spec"], test_examples=made["tests"],
                          out_dir=tmp_path / "told")
    assert "Ship what the caller decided." in paths.html.read_text()
    assert "Ship what the caller decided." in paths.markdown.read_text()
    assert json.loads(paths.json.read_text())["next_step"] == "Ship what the caller decided."


def test_without_test_inputs_it_says_so(made):
    decision = decide(made["results"], made["spec"], DEFAULT_PRICES)
    md = edge_cases_markdown(made["results"], None, decision)
    assert "test inputs were not available" in md and "cannot be scored" in md and "alert(1)" not in md
    assert "because the disk is gone" in edge_cases_markdown(made["results"], None, decision,
                                                            data_note="because the disk is gone")


def test_markup_escapes_everything():
    html = markdown_to_html("# T <b>\n\n- **x** `<i>` " + md_escape("a|b <script>alert(1)</script> **c**") +
                            "\n\n| a | b |\n|---|---|\n| " + md_escape("x|y") + " | <img src=x> |")
    assert "<script" not in html and "<img" not in html and "<b>" not in html
    assert "&lt;script&gt;" in html and "<strong>x</strong>" in html and "<code>&lt;i&gt;</code>" in html
    assert "<td>x|y</td>" in html and "**c**" in html  # escaped data stays literal


def _stored_run(made) -> Path:
    store_dir = made["tmp"] / ".tunewise"
    results = made["results"]
    run_dir = store_dir / "runs" / results.run_id
    with Store(store_dir) as st:
        st.start_run(task_name="report-toy", spec=made["spec"].model_dump(mode="json"), spec_hash="abcd1234",
                     data_hash=results.data["hash"], task_path=made["task"], run_id=results.run_id)
        st.finish_run(results.run_id, "finished", write_json(run_dir / "results.json", results.to_json()))
    return store_dir


def test_cli_report_regenerates_and_survives_missing_data(made):
    store = _stored_run(made)
    assert CliRunner().invoke(cli, ["report", "--help"]).exit_code == 0
    result = CliRunner().invoke(cli, ["report", "abcd", "--store", str(store)])
    assert result.exit_code == 0, result.output
    html_path = Path(result.output.split("html: ")[1].split()[0])
    assert html_path.parent.name == "abcd1234-ef567890" and "alert(1)" in html_path.read_text()
    (made["tmp"] / "test.jsonl").rename(made["tmp"] / "test.moved")
    try:
        again = CliRunner().invoke(cli, ["report", "abcd", "--store", str(store)])
    finally:
        (made["tmp"] / "test.moved").rename(made["tmp"] / "test.jsonl")
    assert again.exit_code == 0, again.output
    assert "could not be read" in again.output
    assert "could not be read" in (html_path.parent / "edge_cases.md").read_text()
    assert "alert(1)" not in html_path.read_text()  # no inputs quoted without the data
    missing = CliRunner().invoke(cli, ["report", "zzz", "--store", str(store)])
    assert missing.exit_code == 2 and "zzz" in missing.output


def test_figures_draw_user_text_as_escaped_text():
    name = "<script>alert(2)</script> costs $5 & $6"
    svg = per_label_svg(RungResult(name=name, strategy="prompt", status="finished", primary_metric="accuracy",
                                   metrics={"accuracy": MetricValue(value=0.5, low=0.2, high=0.8, n=6)},
                                   per_label={name: {"f1": 0.4, "precision": 0.5, "recall": 0.3, "support": 3},
                                              "ok": {"f1": 0.9, "precision": 0.9, "recall": 0.9, "support": 3}}))
    assert svg is not None and "<script" not in svg
    assert "&lt;script&gt;alert(2)&lt;/script&gt; costs $5 &amp; $6" in svg  # literal text, not mathtext


def test_ladder_steps_are_in_the_html_and_markdown():
    from tunewise.report.html import Figures, render_html
    from tunewise.report.markdown import report_markdown
    from tunewise.report.sections import ladder_text

    ladder = LadderRecord(
        mode="policy", budget=LadderBudget(hours=1.0, usd=None, tuning_hours_default=None, spent_s=120.0,
                                           spent_usd=0.0033, pricing="cpu"),
        actions=(Action("run", "knn", "next cheapest rung"), Action("reject", "zero_shot", "rejected early: <b>3/39</b>"),
                 Action("stop", "probe", "every rung of the ladder was tried.")),
        early_rejection=EarlyRejection(rungs=("zero_shot",), saved_calls=269.0, saved_s=540.0))
    text = ladder_text(ladder)
    assert text.steps == (("ran", "knn", "next cheapest rung"), ("rejected early", "zero_shot",
                          "rejected early: <b>3/39</b>"), ("stopped", "", "every rung of the ladder was tried"))
    assert "budget_hours 1" in text.budget and "120 s" in text.budget and "269 model calls" in text.saved
    assert ladder_text(LadderRecord(mode="fixed")) is None
    from tunewise.decision import Decision

    empty = Decision(winner=None, status="no finished rung", runner_up=None, comparison=None, options=(), pareto=(),
                     break_even=None, next_step="", reasons=())
    results = RunResults(run_id="r", task={"name": "t"}, data={}, checks={}, rungs=(), comparisons=(), environment={},
                         created_at="", seed=0, ladder=ladder)
    page = render_html(results, empty, figures=Figures(), edge_cases_md="", repro=[])
    assert 'id="ladder"' in page and "&lt;b&gt;3/39&lt;/b&gt;" in page and "<b>3/39" not in page
    md = report_markdown(results, empty, edge_cases_md="", repro=[])
    assert "## How the ladder was climbed" in md and "2. **rejected early zero_shot**" in md


def test_requests_answered_without_a_model_call_are_explained():
    from types import SimpleNamespace

    from tunewise.report.sections import latency_notes

    usage = {"requests": 308, "without_model_call": 171,
             "called_request_latency_s": {"mean": 0.7, "p50": 0.62, "p95": 1.4, "max": 1.9}}
    rungs = [RungResult(name="few_shot_retrieved", strategy="prompt", status="finished", usage=usage),
             RungResult(name="probe", strategy="probe", status="finished", usage={"requests": 308}),
             RungResult(name="not_ranked", strategy="prompt", status="finished", usage=usage)]
    results = RunResults(run_id="r", task={}, data={}, checks={}, rungs=tuple(rungs), comparisons=(), environment={},
                         created_at="", seed=0)
    decision = SimpleNamespace(options=[SimpleNamespace(name="few_shot_retrieved"), SimpleNamespace(name="probe")])
    notes = latency_notes(results, decision)
    assert notes == ["few_shot_retrieved: 171 of 308 requests (56%) were answered without a model call (one candidate "
                     "label left, e.g. every retrieved demonstration had the same label), at 0 ms; the 137 that "
                     "called it: p50 620 ms, p95 1,400 ms."]
