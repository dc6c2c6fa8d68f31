"""The serve soak (``benchmarks/soak_serve.py``) at small scale: ``tunewise serve`` answers every request while
``production`` is promoted and rolled back over HTTP and through the CLI, each by the version the alias named."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _soak():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("soak_serve", ROOT / "benchmarks" / "soak_serve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # a server process, CLI moves, 400 requests: ~8 s on 2 cores
def test_promote_and_rollback_under_load_fail_no_request(tmp_path):
    soak = _soak()
    store, versions, texts = soak.make_store(tmp_path)
    r = soak.soak(store, versions, texts, requests=400, concurrency=4, pause=0.1, cli_every=4, workdir=tmp_path)
    assert r["requests"] == 400 and r["failed"] == 0, (r["failures"], r["failure_examples"])
    assert r["moves"]["failed"] == 0, r["moves"]
    assert r["moves"]["promotions"] >= 1 and r["moves"]["rollbacks"] >= 1 and r["moves"]["via_cli"] >= 1
    assert r["misrouted"] == 0, r["misrouted_examples"]
    assert r["request_log"] == {"rows": 400, "answered_missing_from_log": 0, "logged_with_another_version": 0}
    assert sum(r["answered_by"].values()) == 400 and sum(n > 0 for n in r["answered_by"].values()) >= 2
    assert soak.passed(r)


def test_the_misrouting_check_accepts_a_move_in_progress_and_catches_a_stale_answer():
    soak = _soak()
    moves = [{"ok": True, "via": "http", "sent": 10.0, "done": 10.1, "version": "B"},
             {"ok": True, "via": "cli", "sent": 20.0, "done": 21.0, "version": "A"}]
    answered = [
        {"i": 0, "start": 9.0, "end": 9.5, "version": "A"},  # before any move
        {"i": 1, "start": 10.05, "end": 10.2, "version": "A"},  # open while the promotion was in progress
        {"i": 2, "start": 10.2, "end": 10.3, "version": "A"},  # after the promotion's reply: stale
        {"i": 3, "start": 22.0, "end": 22.1, "version": "B"},  # within a refresh after the CLI rollback
        {"i": 4, "start": 23.0, "end": 23.1, "version": "B"},  # 2 s after it: stale
        {"i": 5, "start": 15.0, "end": 15.1, "version": "C"},  # never production
    ]
    assert [r["i"] for r in soak.misrouted(answered, "A", moves)] == [2, 4, 5]
