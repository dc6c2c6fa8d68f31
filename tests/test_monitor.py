"""Monitoring: every drift check on synthetic data with known answers, and ``tunewise monitor`` end to end
on a hand-written request log (the schema ``tunewise serve`` writes) for a tiny task."""

from __future__ import annotations

import dataclasses
import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats as scipy_stats

from tunewise.cli import cli
from tunewise.monitoring import arms, drift, traffic
from tunewise.monitoring.monitor import MonitorConfig, monitor
from tunewise.monitoring.traffic import MonitorError, parse_duration, read_traffic
from tunewise.run import run_task
from tunewise.serving.requestlog import SCHEMA, LoggedRequest, request_log_path
from tunewise.task import load_task

from .test_run import LABELS, write_task


def unit_rows(rng: np.random.Generator, n: int, dim: int = 16, shift: float = 0.0) -> np.ndarray:
    x = rng.normal(size=(n, dim))
    x[:, 0] += shift
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# --------------------------------------------------------------------------- pure checks


def test_input_drift_flags_a_shift_and_stays_quiet_on_the_same_distribution():
    rng = np.random.default_rng(0)
    ref = unit_rows(rng, 80)
    same = drift.input_drift(ref, unit_rows(rng, 60), permutations=300)
    moved = drift.input_drift(ref, unit_rows(rng, 60, shift=1.5), permutations=300)
    assert not same.drifted and same.p_value > 0.05
    assert moved.drifted and moved.p_value == pytest.approx(1 / 301) and moved.statistic > same.statistic
    assert "MMD^2" in moved.finding and moved.explanation.startswith("input embeddings: shifted")


def test_input_drift_false_alarm_rate_is_about_alpha():
    """Under the null a permutation p-value is uniform: about 5% of 60 same-distribution windows fire."""
    rng = np.random.default_rng(1)
    fired = [drift.input_drift(unit_rows(rng, 40, 8), unit_rows(rng, 30, 8), permutations=199, seed=s,
                               min_current=10).drifted for s in range(60)]
    assert sum(fired) <= 8  # P(>= 9 of 60 | 5%) < 0.01


def test_too_little_traffic_skips_with_a_clear_reason():
    check = drift.input_drift(np.zeros((10, 4)), np.zeros((12, 4)), min_current=50)
    assert check.skipped == "not enough traffic yet (12 of 50 requests needed)"
    assert not check.drifted and math.isnan(check.p_value)
    assert check.to_json()["p_value"] is None  # JSON has no NaN


def test_length_shift_is_a_ks_test():
    same = drift.length_shift([5, 6, 7] * 20, [5, 6, 7] * 20)
    assert same.statistic == 0 and same.p_value == pytest.approx(1.0) and not same.drifted
    longer = drift.length_shift([5, 6, 7] * 20, [15, 16, 17] * 20)
    assert longer.statistic == 1.0 and longer.drifted
    assert "median 16 words now vs 6" in longer.finding


def test_oov_shift_counts_words_never_seen_in_training():
    vocab = {f"w{i}" for i in range(20)}
    rng = np.random.default_rng(2)
    ref = [list(rng.choice(sorted(vocab), 6)) for _ in range(60)]
    same = drift.oov_shift(ref, [list(rng.choice(sorted(vocab), 6)) for _ in range(40)], vocabulary=vocab)
    new = drift.oov_shift(ref, [list(rng.choice(sorted(vocab), 4)) + ["zork", "quux"] for _ in range(40)],
                          vocabulary=vocab)
    assert not same.drifted and same.effect["oov_rate_current"] == 0
    assert new.drifted and new.effect["oov_rate_current"] == pytest.approx(2 / 6)
    assert "33.3% of words never seen in training now vs 0.0%" in new.finding


def test_vocabulary_shift_names_the_rising_words():
    rng = np.random.default_rng(3)
    words = [f"w{i}" for i in range(30)]
    ref = [list(rng.choice(words, 8)) for _ in range(60)]
    same = drift.vocabulary_shift(ref, [list(rng.choice(words, 8)) for _ in range(50)], permutations=300)
    moved = drift.vocabulary_shift(ref, [list(rng.choice(words, 5)) + ["refund", "crypto", "refund"]
                                         for _ in range(50)], permutations=300)
    assert not same.drifted
    assert moved.drifted and moved.effect["rising_words"][:2] == ["refund", "crypto"]


def test_prediction_shift_is_a_homogeneity_test_not_goodness_of_fit():
    labels = [f"l{i}" for i in range(20)]
    rng = np.random.default_rng(4)
    ref = list(rng.choice(labels, 100))  # about 5 per label: the reference is itself a sample
    same = drift.prediction_shift(ref, list(rng.choice(labels, 80)), permutations=300)
    hot = drift.prediction_shift(ref, ["l3"] * 40 + list(rng.choice(labels, 40)) + ["brand_new"], permutations=300)
    assert not same.drifted
    assert hot.drifted and hot.effect["label"] == "l3" and hot.effect["labels"] == 21


def test_confidence_drop_is_one_sided():
    rng = np.random.default_rng(5)
    ref = rng.beta(8, 2, 200)
    now = rng.beta(4, 3, 60)
    lower = drift.confidence_drop(ref, now)
    higher = drift.confidence_drop(ref, rng.beta(20, 1, 60))
    assert lower.drifted and lower.statistic < 0.5
    assert lower.p_value == pytest.approx(scipy_stats.mannwhitneyu(now, ref, alternative="less").pvalue)
    assert not higher.drifted and higher.p_value > 0.5


def test_accuracy_drop_exact_binomial_and_fisher():
    binom = drift.accuracy_drop(15, 25, expected=0.9)
    assert binom.p_value == pytest.approx(scipy_stats.binomtest(15, 25, 0.9, alternative="less").pvalue)
    assert binom.drifted and binom.effect["low"] < 0.6 < binom.effect["high"]
    fisher = drift.accuracy_drop(15, 25, expected=0.9, expected_n=300)
    table = [[15, 10], [270, 30]]
    assert fisher.p_value == pytest.approx(scipy_stats.fisher_exact(table, alternative="less").pvalue)
    # a lucky evaluation on few test examples makes the two-sample test more careful than the binomial one
    assert drift.accuracy_drop(20, 25, expected=0.9, expected_n=30).p_value > \
        drift.accuracy_drop(20, 25, expected=0.9).p_value
    assert not drift.accuracy_drop(23, 25, expected=0.9).drifted
    assert drift.accuracy_drop(3, 5, expected=0.9).skipped == "not enough traffic yet (5 of 20 feedback labels needed)"


def test_compare_accuracy_picks_fisher_for_small_counts_and_reports_a_ci():
    z = arms.compare_accuracy(80, 100, 70, 100)
    assert z.test.startswith("two-proportion") and z.p_value == pytest.approx(0.1025, abs=1e-3)
    assert z.verdict == "not significantly different" and z.diff == pytest.approx(0.1) and z.low < 0 < z.high
    assert "not significantly different" in z.explanation
    small = arms.compare_accuracy(12, 12, 4, 12)
    assert small.test.startswith("Fisher") and small.verdict == "a better" and small.low > 0
    assert arms.compare_accuracy(3, 4, 2, 4).verdict == "not enough data"


def test_compare_latency_and_paired_arms():
    rng = np.random.default_rng(6)
    slow, fast = rng.gamma(4, 0.1, 80), rng.gamma(4, 0.05, 80)
    lat = arms.compare_latency(slow, fast)
    assert lat.verdict == "b better" and lat.diff > 0 and lat.low > 0
    same = arms.compare_latency(slow, rng.gamma(4, 0.1, 80))
    assert same.verdict == "not significantly different"
    paired = arms.compare_paired_arms([True] * 30 + [False] * 2, [False] * 20 + [True] * 12)
    assert paired.verdict == "a better" and paired.n_a == 32


def test_holm_adjusts_like_the_textbook():
    checks = [drift.length_shift([1, 2], [1, 2], min_current=1)] * 3
    checks = [dataclasses.replace(c, p_value=p) for c, p in zip(checks, (0.01, 0.04, 0.03))]
    adjusted = drift.holm(checks)
    assert [c.p_adjusted for c in adjusted] == pytest.approx([0.03, 0.06, 0.06])
    assert [c.drifted for c in adjusted] == [True, False, False]
    assert "Holm-adjusted p = 0.030" in adjusted[0].explanation


def test_summarize_says_plainly_what_changed():
    rng = np.random.default_rng(7)
    ref = unit_rows(rng, 60)
    quiet = [drift.input_drift(ref, unit_rows(rng, 60)), drift.length_shift([5] * 60, [5] * 60),
             drift.accuracy_drop(3, 5, expected=0.9)]
    verdict = drift.summarize(quiet, n_requests=60, window="since 2024-05-01 12:00 UTC")
    assert verdict.status == "ok"
    assert verdict.headline == ("No drift or degradation detected in 60 requests since 2024-05-01 12:00 UTC "
                                "(2 checks, Holm-corrected at 0.05; 1 not run).")
    loud = [drift.input_drift(ref, unit_rows(rng, 60, shift=2)), drift.accuracy_drop(10, 30, expected=0.9)]
    verdict = drift.summarize(loud, n_requests=60)
    assert verdict.status == "drift" and verdict.drifted == ("input_embeddings", "accuracy")
    assert verdict.headline.startswith("Drift detected in input embeddings; degradation detected in accuracy")
    none = drift.summarize([drift.length_shift([1], [1])], n_requests=1)
    assert none.status == "not enough traffic" and "not enough traffic yet (1 of 30 requests needed)" in none.headline
    json.dumps(verdict.to_json())


def test_parse_duration():
    assert parse_duration("7d") == 7 * 86400 and parse_duration("24h") == 86400 and parse_duration("90") == 90
    with pytest.raises(MonitorError, match="not a duration"):
        parse_duration("a week")


def test_the_request_log_is_defined_once_by_its_writer():
    """``serving/requestlog.py`` owns the table and the file's place; monitoring reads with them, no copy."""
    src = Path(traffic.__file__).resolve().parents[1]
    defining = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.py")
                      if "arm TEXT NOT NULL" in p.read_text(encoding="utf-8")
                      or "response_id TEXT NOT NULL" in p.read_text(encoding="utf-8"))
    assert defining == ["serving/requestlog.py"]
    assert Path("store") / traffic.REQUEST_LOG == request_log_path("store")
    read = {c.strip() for c in traffic._COLUMNS.split(",")}
    assert read <= {f.name for f in dataclasses.fields(LoggedRequest)}


# --------------------------------------------------------------------------- end to end

NOW = 1_750_000_000.0


def write_log(store: Path, rows: list[dict], feedback: list[tuple]) -> Path:
    """A request log as ``tunewise serve`` writes it; feedback: (response id, label, score[, client[, ts]])."""
    path = request_log_path(store)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    for i, r in enumerate(rows):
        conn.execute("INSERT INTO requests (id, ts, alias, version, arm, user, input, output, confidence, latency_s, "
                     "prompt_tokens, completion_tokens, status, error, redactions) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                     (r.get("id", f"r{i}"), r.get("ts", NOW - 3600 + i), "production", r.get("version", "v1"),
                      r.get("arm", "a"), f"user{i % 7}", r["input"], r.get("output"), r.get("confidence"),
                      r.get("latency_s", 0.05), 10, 1, r.get("status", 200), None, r.get("redactions", 0)))
    for rid, label, score, *rest in feedback:
        client, ts = (rest + [None, NOW])[:2] if rest else (None, NOW)
        conn.execute("INSERT INTO feedback (response_id, ts, label, score, client, redactions) VALUES (?,?,?,?,?,0)",
                     (rid, ts, label, score, client))
    conn.commit()
    conn.close()
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny task with a finished knn + zero_shot (fake model) run: (task path, spec, knn's prediction, confidence, gold by text)."""
    tmp = tmp_path_factory.mktemp("monitor")
    task = write_task(tmp, n_train=80, n_test=40)
    spec = load_task(task)
    outcome = run_task(spec, rungs=["knn", "zero_shot"], report=False)
    from tunewise.data import load_splits

    test = load_splits(spec).test
    preds = {e.text: (p.output, p.confidence, e.target) for e, p in zip(test, outcome.results.rungs[0].predictions)}
    return task, spec, preds


def _same_traffic(preds: dict, n: int = 80) -> tuple[list[dict], list[tuple]]:
    texts = list(preds)
    rows = [{"input": texts[i % len(texts)], "output": preds[texts[i % len(texts)]][0],
             "confidence": preds[texts[i % len(texts)]][1], "arm": "ab"[i % 2]} for i in range(n)]
    feedback = [(f"r{i}", preds[texts[i % len(texts)]][2], None) for i in range(0, n, 2)]
    return rows, feedback


def test_monitor_stays_quiet_on_traffic_like_the_test_split(tiny):
    task, spec, preds = tiny
    rows, feedback = _same_traffic(preds)
    rows += [{"input": "not answered", "status": 500}, {"input": "shadow", "arm": "shadow", "output": "top_up"}]
    write_log(spec.store_dir, rows, feedback)
    report = monitor(spec, since=None, now=NOW, rung="knn")
    assert report.verdict.status == "ok", report.verdict.headline
    assert report.window["requests"] == 80 and report.window["shadow"] == 1 and report.window["labelled"] == 40
    assert report.reference.rung == "knn" and report.reference.rung_basis == "named with --rung"
    names = [c.name for c in report.verdict.checks]
    assert names == ["input_embeddings", "length", "oov", "vocabulary", "predictions", "confidence", "accuracy"]
    assert report.verdict.headline.startswith("No drift or degradation detected in 80 requests since ")
    assert [a.metric for a in report.arms] == ["accuracy", "latency_s", "accuracy (paired)", "latency_s"]
    json.dumps(report.to_json())
    result = CliRunner().invoke(cli, ["monitor", str(task), "--since", "all", "--rung", "knn"])
    assert result.exit_code == 0, result.output
    assert "No drift or degradation detected" in result.output and "tunewise run" not in result.output
    assert not (spec.store_dir / "monitor").exists()


def _shifted_traffic(preds: dict) -> tuple[list[dict], list[tuple]]:
    rows = [{"input": f"please close my mortgage account number {i} before the interest rate rises again today",
             "output": LABELS[0], "confidence": 0.2, "arm": "ab"[i % 2], "latency_s": 0.05 + 0.1 * (i % 2)}
            for i in range(60)]
    rows += [{"id": f"s{i}", "input": rows[i]["input"], "output": LABELS[1], "arm": "shadow", "confidence": 0.3}
             for i in range(0, 60, 3)]
    feedback = [(f"r{i}", LABELS[1], None) for i in range(30)] + [(f"r{i}", "mortgage", None) for i in (30, 31)]
    feedback += [(f"r{i}", None, 0.0) for i in (40, 41)]  # a score alone counts, but is not a label to export
    return rows, feedback


def test_monitor_flags_drift_exports_labelled_rows_and_the_rerun_works(tiny, tmp_path):
    task, spec, preds = tiny
    store = tmp_path / "store"
    (store).mkdir()
    # the same store content as the task's (the run), with a shifted log
    import shutil

    shutil.copytree(spec.store_dir, store, dirs_exist_ok=True, ignore=shutil.ignore_patterns("serve"))
    rows, feedback = _shifted_traffic(preds)
    write_log(store, rows, feedback)
    runner = CliRunner()
    unflagged = runner.invoke(cli, ["monitor", str(task), "--since", "all", "--store", str(store)])
    assert unflagged.exit_code == 0, unflagged.output
    assert "Drift detected in input embeddings" in unflagged.output and "tunewise run" not in unflagged.output
    assert ("32 requests carry feedback labels; pass --export-labels to write them as the test split of a task "
            "that re-runs the decision.") in " ".join(unflagged.output.split())
    assert not (store / "monitor").exists()  # feedback labels never become a test split without the flag
    result = runner.invoke(cli, ["monitor", str(task), "--since", "all", "--store", str(store), "--export-labels"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Drift detected in input embeddings" in out and "degradation detected in" in out
    assert "re-run the decision on the fresh labelled data:" in out and "mortgage" in out
    command = out.split("re-run the decision on the fresh labelled data:")[1].split()
    assert command[:2] == ["tunewise", "run"]
    exported = sorted((store / "monitor").glob("labelled-*.jsonl"))
    rows_out = [json.loads(line) for line in exported[0].read_text().splitlines()]
    assert len(rows_out) == 30 and set(rows_out[0]) == {"text", "label", "tunewise_request"}
    assert rows_out[0]["label"] == LABELS[1] and rows_out[0]["tunewise_request"]["served"] == LABELS[0]
    assert rows_out[0]["tunewise_request"]["labels"] == [{"label": LABELS[1], "client": None, "ts": NOW}]
    assert len((store / "monitor").glob("new-labels-*.jsonl").__next__().read_text().splitlines()) == 2
    derived = load_task(Path(command[2]))
    assert derived.store_dir == store.resolve() and derived.data.test_limit is None
    rerun = run_task(derived, rungs=["knn"], report=False)
    assert rerun.results.rungs[0].status == "finished" and rerun.results.data["sizes"]["test"] == 30

    assert runner.invoke(cli, ["monitor", str(task), "--since", "all", "--store", str(store),
                               "--fail-on-drift"]).exit_code == 3
    as_json = runner.invoke(cli, ["monitor", str(task), "--since", "all", "--store", str(store), "--json",
                                  "--export-labels"])
    payload = json.loads(as_json.output)
    assert payload["verdict"]["status"] == "drift" and payload["export"]["rows"] == 30
    accuracy = next(c for c in payload["verdict"]["checks"] if c["name"] == "accuracy")
    assert accuracy["drifted"] and accuracy["n_current"] == 34  # 32 labels + 2 scores, all wrong
    paired = next(a for a in payload["arms"] if a["metric"] == "accuracy (paired)")
    assert paired["n_a"] == 11  # shadow answers to inputs with feedback: every third of r0..r31


def test_reference_rung_comes_from_the_served_version_when_the_store_records_versions(tiny, tmp_path):
    import shutil

    from tunewise.store import Store

    task, spec, preds = tiny
    store = tmp_path / "store"
    shutil.copytree(spec.store_dir, store, ignore=shutil.ignore_patterns("serve"))
    with Store(store) as st:
        if not hasattr(st, "put_version"):
            pytest.skip("this store does not record versions")
        run = st.list_runs()[0]
        results = json.loads(Path(run.results_path).read_text())
        best = max(results["rungs"], key=lambda r: r["metrics"]["accuracy"]["value"])["name"]
        other = next(r["name"] for r in results["rungs"] if r["name"] != best)
        st.put_version("0123456789ab", {"run_id": run.id, "rung": {"name": other}})
    rows, feedback = _same_traffic(preds, n=60)
    write_log(store, [{**r, "version": "0123456789ab"} for r in rows], feedback)
    local = spec.model_copy(update={"store": store})
    report = monitor(local, since=None, now=NOW)
    assert report.version == "0123456789ab" and report.reference.rung == other
    assert report.reference.rung_basis == "the rung version 0123456789ab was made from"
    request_log_path(store).unlink()
    write_log(store, [{**r, "version": "unknown"} for r in rows], feedback)
    assert monitor(local, since=None, now=NOW).reference.rung == best


def test_window_options_and_too_little_traffic(tiny, tmp_path):
    task, spec, preds = tiny
    store = tmp_path / "store"
    rows = [{"input": t, "output": o, "ts": NOW - 86400 * 3 + i} for i, (t, (o, _, _)) in enumerate(preds.items())]
    rows += [{"input": t, "output": o, "ts": NOW - 60 + i} for i, (t, (o, _, _)) in enumerate(list(preds.items())[:5])]
    log = write_log(store, rows, [])
    assert len(read_traffic(log, since_s=parse_duration("1d"), now=NOW).requests) == 5
    assert len(read_traffic(log, last=7, now=NOW).requests) == 7
    assert len(read_traffic(log, since_s=parse_duration("7d"), last=100, now=NOW).requests) == 45
    report = monitor(spec.model_copy(update={"store": store}), since="1d", now=NOW, config=MonitorConfig())
    assert report.verdict.status == "not enough traffic"
    assert "not enough traffic yet (5 of 50 requests needed)" in report.verdict.headline
    assert report.reference.note and "no run of this data" in report.reference.note


def test_missing_log_is_a_one_line_error_and_help_exists(tmp_path):
    task = write_task(tmp_path)
    result = CliRunner().invoke(cli, ["monitor", str(task)])
    assert result.exit_code == 2 and "error: No request log at" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "Usage:" in CliRunner().invoke(cli, ["monitor", "--help"]).output
    lone = CliRunner().invoke(cli, ["monitor", str(task), "--label-client", "key-abc"])
    assert lone.exit_code == 2 and "--label-client only applies with --export-labels." in lone.output


# --------------------------------------------------------------------------- feedback provenance (issue 13, item 8)


def test_every_label_is_kept_with_its_client_and_disagreeing_clients_give_no_label(tmp_path):
    rows = [{"input": f"text {i}", "output": "a"} for i in range(5)]
    feedback = [("r0", "a", None, "key-1", NOW - 30), ("r0", "b", None, "key-1", NOW - 20),  # key-1 corrects itself
                ("r1", "a", None, "key-1", NOW - 30), ("r1", "b", None, "key-2", NOW - 20),  # two clients disagree
                ("r2", "a", None, "key-1", NOW - 30), ("r2", "a", None, None, NOW - 20),  # agree
                ("r3", None, 1.0, "key-1", NOW - 30), ("r3", None, 0.0, "key-2", NOW - 20)]  # scores: their mean
    log = write_log(tmp_path, rows, feedback)
    got = {r.id: r for r in read_traffic(log, now=NOW).requests}
    assert got["r0"].label == "b" and not got["r0"].label_conflict and len(got["r0"].feedback) == 2
    assert got["r1"].label is None and got["r1"].label_conflict
    assert [(f.label, f.client, f.ts) for f in got["r1"].feedback] == [("a", "key-1", NOW - 30),
                                                                       ("b", "key-2", NOW - 20)]
    assert got["r2"].label == "a" and got["r3"].score == 0.5 and got["r3"].label is None
    assert got["r4"].feedback == () and got["r4"].label is None
    assert [r.id for r in read_traffic(log, now=NOW).labelled] == ["r0", "r2"]


def test_a_log_from_before_feedback_provenance_still_reads(tmp_path):
    path = request_log_path(tmp_path)
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    conn.executescript("""
CREATE TABLE requests(id TEXT PRIMARY KEY, ts REAL NOT NULL, alias TEXT, version TEXT NOT NULL, arm TEXT NOT NULL,
    user TEXT, input TEXT NOT NULL, output TEXT, confidence REAL, latency_s REAL, prompt_tokens INTEGER,
    completion_tokens INTEGER, status INTEGER NOT NULL, error TEXT);
CREATE TABLE feedback(response_id TEXT NOT NULL, ts REAL NOT NULL, label TEXT, score REAL);
INSERT INTO requests VALUES ('r0', 1.0, 'production', 'v1', 'a', 'u', 'hello', 'x', 0.9, 0.1, 0, 0, 200, NULL);
INSERT INTO feedback VALUES ('r0', 2.0, 'y', NULL);
""")
    conn.close()
    (request,) = read_traffic(path).requests
    assert request.label == "y" and request.redactions is None
    assert [(f.label, f.client, f.redactions) for f in request.feedback] == [("y", None, None)]


def test_export_keeps_provenance_filters_by_client_and_leaves_out_altered_or_disputed_labels(tiny, tmp_path):
    from tunewise.monitoring.export import export_labelled

    _, spec, preds = tiny
    texts = list(preds)
    rows = [{"input": texts[i], "output": preds[texts[i]][0]} for i in range(8)]
    rows.append({"input": texts[8] + " key [REDACTED]", "output": preds[texts[8]][0], "redactions": 1})
    feedback = [(f"r{i}", preds[texts[i]][2], None, "key-aaa", NOW - 10) for i in range(6)]
    feedback += [("r6", preds[texts[6]][2], None, None, NOW - 10)]  # anonymous
    feedback += [("r0", LABELS[3] if preds[texts[0]][2] != LABELS[3] else LABELS[4], None, "key-bbb", NOW - 5)]
    feedback += [("r8", preds[texts[8]][2], None, "key-aaa", NOW - 10)]
    log = write_log(tmp_path / "store", rows, feedback)
    conn = sqlite3.connect(log)  # a label that held a credential was masked: it is not what the client sent
    conn.execute("INSERT INTO feedback (response_id, ts, label, score, client, redactions) VALUES "
                 "('r7', ?, '[REDACTED]', NULL, 'key-aaa', 1)", (NOW,))
    conn.commit()
    conn.close()
    local = spec.model_copy(update={"store": tmp_path / "store"})
    traffic_now = read_traffic(log, now=NOW)
    everyone = export_labelled(local, traffic_now, stamp="t1")
    assert everyone.rows == 7  # r1..r6 and r8; not r0 (disputed) nor r7 (masked label)
    note = " ".join(everyone.note.split())
    assert "1 request has conflicting labels from different clients and was left out" in note
    assert "1 label had a credential masked (it is not what the client sent) and was left out" in note
    assert "1 exported input had a credential masked ([REDACTED])" in note
    trusted = export_labelled(local, traffic_now, clients=["key-aaa"], stamp="t2")
    assert trusted.rows == 7 and "only labels from key-aaa" in " ".join(trusted.note.split())
    exported = [json.loads(line) for line in trusted.labelled.read_text().splitlines()]
    ids = [r["tunewise_request"]["id"] for r in exported]
    assert ids == ["r0", "r1", "r2", "r3", "r4", "r5", "r8"]  # key-aaa's own label for r0; r6 was anonymous
    first = exported[ids.index("r0")]["tunewise_request"]
    assert first["labels"] == [{"label": preds[texts[0]][2], "client": "key-aaa", "ts": NOW - 10}]
    assert exported[ids.index("r8")]["tunewise_request"]["input_redactions"] == 1
