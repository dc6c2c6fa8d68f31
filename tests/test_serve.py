"""``tunewise serve`` on loopback: the official openai client, A/B split, shadow, promote/rollback under load,
admin auth, the request log with redaction, Prometheus metrics and feedback. Versions of a fake-backend run."""

from __future__ import annotations

import math
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tunewise.run import run_task
from tunewise.serving import Split, create_app
from tunewise.serving.redact import MASK
from tunewise.serving.requestlog import RequestLog, request_log_path
from tunewise.serving.router import bucket
from tunewise.store import Store
from tunewise.task import load_task
from tunewise.versions import create_version, promote

from .test_run import write_task

TOKEN = "s3cret-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
KEYS = ["tw-key-alpha-0123456789", "tw-key-beta-9876543210"]  # client keys


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A run with two deployable rungs: knn -> ``production`` (A), zero_shot on fake:random -> ``candidate`` (B)."""
    tmp = tmp_path_factory.mktemp("serve")
    task = write_task(tmp)
    outcome = run_task(load_task(task), rungs=["knn", "zero_shot"], task_path=task, report=False)
    with Store(tmp / ".tunewise") as st:
        a = create_version(st, outcome.results.run_id, "knn")
        b = create_version(st, outcome.results.run_id, "zero_shot")
        promote(st, a.id, "production")
        promote(st, b.id, "candidate")
    return tmp / ".tunewise", a.id, b.id


@pytest.fixture
def store_dir(recorded, tmp_path) -> Path:
    shutil.copytree(recorded[0], tmp_path / "store")
    return tmp_path / "store"


@contextmanager
def live(app):
    """uvicorn in a thread on a free loopback port; yields the base URL."""
    import uvicorn

    # proto IPPROTO_TCP, as uvicorn's own binding has: asyncio only sets TCP_NODELAY on such sockets,
    # and without it every response waits ~40 ms for a delayed ACK
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    assert server.started, "the server did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def chat(client: httpx.Client, text: str, *, model: str = "production", user: str | None = None,
         **kw) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}], **kw}
    if user is not None:
        body["user"] = user
    return client.post("/v1/chat/completions", json=body)


def log_rows(store_dir: Path) -> list:
    log = RequestLog(request_log_path(store_dir))
    try:
        return log.rows()
    finally:
        log.close()


# ---------------------------------------------------------------- the official client


def test_official_openai_client_unchanged(store_dir, recorded):
    import openai

    _, a, b = recorded
    with live(create_app(store_dir, admin_token=TOKEN)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="anything", max_retries=0)
        reply = client.chat.completions.create(
            model="production", messages=[{"role": "system", "content": "ignored"},
                                          {"role": "user", "content": "when will my new card arrive"}])
        assert reply.id.startswith("chatcmpl-") and reply.object == "chat.completion" and reply.model == a
        assert reply.choices[0].message.role == "assistant" and reply.choices[0].finish_reason == "stop"
        assert reply.choices[0].message.content == "card_arrival"
        assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
        by_id = client.chat.completions.create(model=b[:6], messages=[{"role": "user", "content": "top up"}])
        assert by_id.model == b and by_id.usage.prompt_tokens > 0  # a version id prefix; the LLM rung counts tokens
        stream = client.chat.completions.create(model="production", stream=True,
                                                messages=[{"role": "user", "content": "when will my new card arrive"}])
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "card_arrival"
        ids = {m.id for m in client.models.list()}
        assert {"production", "candidate", a, b} <= ids
        assert client.models.retrieve("candidate").owned_by == f"tunewise:{b}"
        with pytest.raises(openai.NotFoundError) as missing:
            client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
        assert missing.value.code == "model_not_found" and "no-such-model" in missing.value.message
        with pytest.raises(openai.BadRequestError) as bad:
            client.chat.completions.create(model="production", messages=[{"role": "system", "content": "no user"}])
        assert bad.value.body["param"] == "messages"
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="production", messages=[])


def test_tunewise_serve_command_on_loopback(store_dir, recorded, tmp_path):
    import openai

    from tunewise.serving.app import key_id

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    (tmp_path / "keys").write_text(f"{KEYS[0]}\n{KEYS[1]}\n")
    env = {**os.environ, "TUNEWISE_ADMIN_TOKEN": TOKEN}
    proc = subprocess.Popen([sys.executable, "-m", "tunewise", "serve", str(store_dir), "--port", str(port),
                             "--api-key-file", str(tmp_path / "keys"), "--max-input-chars", "40", "--no-direct"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read()
                time.sleep(0.2)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEYS[0], max_retries=0)
        reply = client.chat.completions.create(model="production", messages=[{"role": "user", "content": "top up"}])
        assert reply.model == recorded[1]
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0).chat.completions.create(
                model="production", messages=[{"role": "user", "content": "top up"}])
        with pytest.raises(openai.BadRequestError, match="at most 40"):
            client.chat.completions.create(model="production", messages=[{"role": "user", "content": "a" * 41}])
        with pytest.raises(openai.PermissionDeniedError):
            client.chat.completions.create(model=recorded[2], messages=[{"role": "user", "content": "top up"}])
        moved = httpx.post(f"{url}/admin/promote", json={"version": "candidate", "alias": "production"}, headers=ADMIN)
        assert moved.status_code == 200 and moved.json()["version"] == recorded[2]
        reply = client.chat.completions.create(model="production", messages=[{"role": "user", "content": "top up"}])
        assert reply.model == recorded[2]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert f"client keys: 2 ({key_id(KEYS[0])}, {key_id(KEYS[1])}); /v1 requires one" in err
    assert KEYS[0] not in err


# ---------------------------------------------------------------- routing


def test_ab_split_ratio_within_binomial_bound(store_dir, recorded):
    """2000 requests from distinct users through the service (routing, workers, request log; no HTTP)."""
    import asyncio

    from tunewise.serving.service import Service

    _, a, b = recorded
    n, p = 2000, 0.1
    users = [f"user-{i}" for i in range(n)]

    async def serve_all() -> list:
        service = Service(store_dir, split=Split("production", "candidate", fraction_b=p))
        try:
            return await asyncio.gather(*(service.answer("production", "top up my card", u) for u in users))
        finally:
            await service.close()

    answers = asyncio.run(serve_all())
    k = sum(x.arm == "b" for x in answers)
    assert abs(k - n * p) <= 4 * math.sqrt(n * p * (1 - p)), k  # 4 sigma: 200 +- 54
    assert all((bucket(u) < p) == (x.arm == "b") for u, x in zip(users, answers))  # the arm is the user's bucket
    assert all(x.version == (b if x.arm == "b" else a) for x in answers)
    assert Counter(r.arm for r in log_rows(store_dir)) == {"a": n - k, "b": k}


def test_ab_split_is_sticky_per_user_over_http(store_dir, recorded):
    _, a, b = recorded
    users = [f"user-{i}" for i in range(40)]
    with live(create_app(store_dir, split=Split("production", "candidate", fraction_b=0.5))) as url, \
            httpx.Client(base_url=url, timeout=60) as client:
        arms = {u: chat(client, "top up", user=u).json()["tunewise"]["arm"] for u in users}
        assert set(arms.values()) == {"a", "b"}
        for user in users:  # the same user, the same arm: by the user field and by the X-User header
            again = {chat(client, f"query {i}", user=user).json()["tunewise"]["arm"] for i in range(2)}
            by_header = client.post("/v1/chat/completions", headers={"X-User": user}, json={
                "model": "production", "messages": [{"role": "user", "content": "x"}]}).json()
            assert again == {arms[user]} and by_header["tunewise"]["arm"] == arms[user]
            assert by_header["model"] == (a if arms[user] == "a" else b)
        pinned = chat(client, "top up", model=a, user=users[0]).json()  # an id is never split, and never an arm
        assert pinned["model"] == a and pinned["tunewise"]["arm"] == "direct"
        anonymous = Counter(chat(client, "top up").json()["tunewise"]["arm"] for _ in range(40))
        assert set(anonymous) == {"a", "b"}  # no user: random, so both arms (P(all one arm) = 2 * 2**-40)


def test_shadow_answers_are_logged_but_never_returned(store_dir, recorded):
    _, a, b = recorded
    app = create_app(store_dir, split=Split("production", "candidate", fraction_b=1.0, shadow=True))
    texts = [f"top up my account now {i}" for i in range(12)]
    with live(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        replies = [chat(client, t, user=f"u{i}").json() for i, t in enumerate(texts)]
        expected = [chat(client, t, model=a).json()["choices"][0]["message"]["content"] for t in texts]
        assert {r["model"] for r in replies} == {a} and {r["tunewise"]["arm"] for r in replies} == {"a"}
        assert [r["choices"][0]["message"]["content"] for r in replies] == expected
        deadline = time.time() + 30
        while sum(r.arm == "shadow" for r in log_rows(store_dir)) < len(texts) and time.time() < deadline:
            time.sleep(0.05)
    rows = log_rows(store_dir)
    shadows = [r for r in rows if r.arm == "shadow"]
    primary = {r.id: r for r in rows if r.id in {x["id"] for x in replies}}
    assert len(shadows) == len(texts) and {r.version for r in shadows} == {b} and {r.alias for r in shadows} == {
        "candidate"}
    assert {r.ts for r in shadows} == {r.ts for r in primary.values()}  # same timestamp, own id
    assert not {r.id for r in shadows} & set(primary) and all(r.status == 200 and r.output for r in shadows)


def test_promote_and_rollback_under_concurrent_load_drop_nothing(store_dir, recorded):
    _, a, b = recorded
    results: list[tuple[int, str]] = []
    with live(create_app(store_dir, admin_token=TOKEN)) as url:

        def load(worker: int) -> None:
            with httpx.Client(base_url=url, timeout=60) as client:
                for i in range(50):
                    r = chat(client, f"when will my card arrive {worker}-{i}", user=f"w{worker}")
                    results.append((r.status_code, r.json().get("model", "")))

        threads = [threading.Thread(target=load, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        switches = 0
        with httpx.Client(base_url=url, timeout=60, headers=ADMIN) as admin:
            while any(t.is_alive() for t in threads):
                up = admin.post("/admin/promote", json={"version": b, "alias": "production"})
                time.sleep(0.03)
                down = admin.post("/admin/rollback", json={"alias": "production"})
                time.sleep(0.03)
                assert (up.status_code, down.status_code) == (200, 200), (up.text, down.text)
                assert down.json()["version"] == a
                switches += 1
        for t in threads:
            t.join()
    statuses = Counter(s for s, _ in results)
    assert statuses == {200: 400}, statuses  # zero failed requests
    assert {m for _, m in results} == {a, b} and switches >= 2  # both versions served


# ---------------------------------------------------------------- admin


def test_admin_endpoints_require_the_bearer_token(store_dir, recorded):
    from fastapi.testclient import TestClient

    _, a, b = recorded
    calls = [("/admin/promote", {"version": b, "alias": "production"}), ("/admin/rollback", {"alias": "production"}),
             ("/admin/split", {"alias_a": "production", "alias_b": "candidate", "fraction_b": 0.5})]
    with TestClient(create_app(store_dir, admin_token=TOKEN)) as client:
        for path, body in calls:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                            {"Authorization": f"Basic {TOKEN}"}):
                r = client.post(path, json=body, headers=headers)
                assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error", (path, headers)
        assert client.post("/admin/promote", json={"version": b, "alias": "production"}, headers=ADMIN).json() == {
            "alias": "production", "version": b}
        assert client.post("/admin/rollback", json={"alias": "production"}, headers=ADMIN).json()["version"] == a
        nothing = client.post("/admin/rollback", json={"alias": "production"}, headers=ADMIN)
        assert nothing.status_code == 409 and "no earlier version" in nothing.json()["error"]["message"]
        assert client.post("/admin/promote", json={"version": "nope", "alias": "production"},
                           headers=ADMIN).status_code == 404
        split = client.post("/admin/split", json=calls[2][1], headers=ADMIN)
        assert split.status_code == 200 and split.json()["split"]["fraction_b"] == 0.5
    with TestClient(create_app(store_dir, admin_token=None)) as client:  # no token configured: admin is off
        r = client.post("/admin/rollback", json={"alias": "production"}, headers={"Authorization": "Bearer "})
        assert r.status_code == 401 and r.json()["error"]["code"] == "admin_disabled"


def test_admin_token_comes_from_a_file_or_the_environment(tmp_path, monkeypatch):
    from tunewise.errors import TaskSpecError
    from tunewise.serving.app import admin_token

    monkeypatch.delenv("TUNEWISE_ADMIN_TOKEN", raising=False)
    assert admin_token() is None
    monkeypatch.setenv("TUNEWISE_ADMIN_TOKEN", "from-env")
    (tmp_path / "token").write_text("from-file\n")
    assert admin_token() == "from-env" and admin_token(tmp_path / "token") == "from-file"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(TaskSpecError, match="empty"):
        admin_token(tmp_path / "empty")


# ---------------------------------------------------------------- log, redaction, metrics, feedback


def parse_prometheus(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """A strict reader of the text exposition format: every sample has a declared family and a valid line."""
    sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_]\w*="(?:[^"\\\n]|\\.)*",?)*)\})? '
                        r'(-?(?:\d+(?:\.\d*)?(?:e[+-]?\d+)?|\+Inf|NaN))$')
    types: dict[str, str] = {}
    out: dict[str, list] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram") and name not in types
            types[name] = kind
            continue
        if line.startswith("# HELP ") or not line:
            continue
        m = sample.match(line)
        assert m, line
        name, labels, value = m.groups()
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types, line
        pairs = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels or ""))
        out.setdefault(name, []).append((pairs, float(value)))
    return out


def test_request_log_rows_redaction_metrics_and_feedback(store_dir, recorded):
    from fastapi.testclient import TestClient

    _, a, _ = recorded
    key = "sk-proj-" + "Xk3_pQ9-vR2mT7wZ" * 5 + "T3BlbkFJ" + "aB4cD5eF6gH7iJ8k" * 4  # an OpenAI project key's shape
    with TestClient(create_app(store_dir, admin_token=TOKEN)) as client:
        ok = []
        for i in range(3):  # the key is in the input and in an Authorization header
            ok.append(client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json={
                "model": "production", "user": "alice",
                "messages": [{"role": "user", "content": f"top up my card {i}, my key is {key}"}]}))
        assert all(r.status_code == 200 for r in ok)
        assert chat(client, "x", model="nope").status_code == 404
        first = ok[0].json()["id"]
        fb = client.post("/v1/feedback", json={"response_id": first, "label": "top_up", "score": 1.0})
        assert fb.status_code == 200 and fb.json()["recorded"] is True
        unknown = client.post("/v1/feedback", json={"response_id": "chatcmpl-nope", "label": "top_up"})
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "response_not_found"
        assert client.post("/v1/feedback", json={"response_id": first}).status_code == 400
        metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = parse_prometheus(metrics.text)
    requests = {(s["version"], s["arm"], s["status"]): v for s, v in families["tunewise_requests_total"]}
    assert requests == {(a, "a", "200"): 3, ("-", "-", "404"): 1}
    buckets = [v for s, v in families["tunewise_request_latency_seconds_bucket"] if s["version"] == a]
    assert buckets == sorted(buckets) and buckets[-1] == 3  # cumulative, +Inf last
    assert families["tunewise_request_latency_seconds_count"][0][1] == 3
    assert families["tunewise_feedback_total"][0][1] == 1
    assert ({"alias": "production", "version": a}, 1.0) in families["tunewise_alias_info"]

    rows = log_rows(store_dir)
    assert [r.id for r in rows] == [r.json()["id"] for r in ok]
    for i, r in enumerate(rows):
        assert r.version == a and r.alias == "production" and r.arm == "a" and r.user == "alice"
        assert r.status == 200 and r.output == ok[i].json()["choices"][0]["message"]["content"]
        assert 0 < r.confidence <= 1 and r.latency_s > 0
        assert r.input == f"top up my card {i}, my key is {MASK}" and r.redactions == 1
        assert r.prompt_tokens == 0 and r.completion_tokens == 0  # knn: no LLM tokens
    raw = b"".join(f.read_bytes() for f in request_log_path(store_dir).parent.glob("requests.sqlite*"))
    assert key.encode() not in raw  # neither the input's key nor the Authorization header is anywhere in the file
    conn = sqlite3.connect(request_log_path(store_dir))
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT response_id, label, score, redactions FROM feedback").fetchall() == [
        (first, "top_up", 1.0, 0)]
    columns = [row[1] for row in conn.execute("PRAGMA table_info(requests)")]
    assert columns == ["id", "ts", "alias", "version", "arm", "user", "input", "output", "confidence", "latency_s",
                       "prompt_tokens", "completion_tokens", "status", "error", "redactions"]
    conn.close()


# the request log as the first release wrote it: opening it must only add columns
V1_SCHEMA = """
CREATE TABLE requests(id TEXT PRIMARY KEY, ts REAL NOT NULL, alias TEXT, version TEXT NOT NULL,
    arm TEXT NOT NULL, user TEXT, input TEXT NOT NULL, output TEXT, confidence REAL,
    latency_s REAL, prompt_tokens INTEGER, completion_tokens INTEGER, status INTEGER NOT NULL, error TEXT);
CREATE TABLE feedback(response_id TEXT NOT NULL, ts REAL NOT NULL, label TEXT, score REAL);
"""


def test_an_older_request_log_gains_the_new_columns_and_keeps_its_rows(tmp_path):
    from tunewise.serving.requestlog import SCHEMA, LoggedRequest

    path = tmp_path / "requests.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA)
    conn.execute("INSERT INTO requests VALUES ('r0', 1.0, 'production', 'v1', 'a', 'u', 'old input', 'x', 0.9, 0.1,"
                 " 0, 0, 200, NULL)")
    conn.execute("INSERT INTO feedback VALUES ('r0', 2.0, 'x', NULL)")
    conn.commit()
    conn.close()
    log = RequestLog(path)
    log.write(LoggedRequest("r1", 3.0, "production", "v1", "a", None, "new input AKIAIOSFODNN7EXAMPLE", "y", None,
                            0.1, 0, 0, 200))
    assert log.add_feedback("r1", label="y", score=None)
    rows = log.rows()
    log.close()
    assert [(r.id, r.input, r.redactions) for r in rows] == [("r0", "old input", None),
                                                             ("r1", f"new input {MASK}", 1)]
    fresh = sqlite3.connect(tmp_path / "fresh.sqlite")
    fresh.executescript(SCHEMA)
    upgraded = sqlite3.connect(path)
    for table in ("requests", "feedback"):  # an upgraded log has a new log's columns, in the same order
        assert [r[1:3] for r in upgraded.execute(f"PRAGMA table_info({table})")] == [
            r[1:3] for r in fresh.execute(f"PRAGMA table_info({table})")]
    assert upgraded.execute("SELECT response_id, label, redactions FROM feedback ORDER BY ts").fetchall() == [
        ("r0", "x", None), ("r1", "y", 0)]
    upgraded.close()
    fresh.close()


# ---------------------------------------------------------------- request limits (issue 13, item 7)


def test_request_limits_reject_big_bodies_many_messages_and_long_inputs(store_dir, recorded):
    from fastapi.testclient import TestClient

    from tunewise.serving.app import Limits

    limits = Limits(max_body_bytes=4_000, max_messages=5, max_input_chars=300)
    with TestClient(create_app(store_dir, limits=limits)) as client:
        big = chat(client, "top up " * 1_000)  # about 7 kB of JSON
        assert big.status_code == 413
        assert big.json()["error"] == {
            "message": "The request body is larger than this server accepts (4,000 bytes).",
            "type": "invalid_request_error", "param": None, "code": "request_too_large"}
        many = client.post("/v1/chat/completions", json={
            "model": "production", "messages": [{"role": "user", "content": "hi"}] * 6})
        assert many.status_code == 400 and many.json()["error"]["code"] == "too_many_messages"
        assert many.json()["error"]["message"] == "The request has 6 messages; this server accepts at most 5."
        long = chat(client, "x" * 301)
        assert long.status_code == 400 and long.json()["error"]["param"] == "messages"
        assert long.json()["error"]["message"] == ("The input is 301 characters long; this server accepts at most "
                                                   "300.")
        assert chat(client, "x" * 300).status_code == 200 and len(client.post("/v1/chat/completions", json={
            "model": "production", "messages": [{"role": "user", "content": "hi"}] * 5}).json()["choices"]) == 1
        fb = client.post("/v1/feedback", json={"response_id": "chatcmpl-x", "label": "y" * 5_000})
        assert fb.status_code == 413  # every endpoint, not only chat
    assert [r.input for r in log_rows(store_dir)] == ["x" * 300, "hi"]  # refused requests never reach a model


def test_default_limits_refuse_a_huge_streamed_body_without_reading_it_all(store_dir, recorded):
    """No Content-Length (chunked upload): the server stops reading at the limit and answers 413."""
    from tunewise.serving.app import Limits

    sent = 0

    def body():
        nonlocal sent
        yield b'{"model": "production", "messages": [{"role": "user", "content": "'
        for _ in range(4_000):  # up to 4 MB, four times the default limit
            sent += 1_000
            yield b"a" * 1_000
        yield b'"}]}'

    with live(create_app(store_dir)) as url, httpx.Client(base_url=url, timeout=60) as client:
        try:
            r = client.post("/v1/chat/completions", content=body(), headers={"content-type": "application/json"})
            assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
        except httpx.WriteError:  # the server may close the connection before the client finishes sending
            pass
        assert sent < 4_000_000
        assert chat(client, "top up").status_code == 200  # and it keeps serving
    assert Limits().max_body_bytes == 1_048_576 and log_rows(store_dir)[-1].input == "top up"


# ---------------------------------------------------------------- client keys and feedback provenance (item 8)

def test_api_keys_guard_every_v1_endpoint_and_feedback_records_the_client(store_dir, recorded):
    import hashlib

    import openai
    from fastapi.testclient import TestClient

    from tunewise.serving.app import key_id

    with TestClient(create_app(store_dir, api_keys=KEYS)) as client:
        body = {"model": "production", "messages": [{"role": "user", "content": "top up my card"}]}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEYS[0]},
                        {"Authorization": f"Basic {KEYS[0]}"}):
            for method, path, payload in (("post", "/v1/chat/completions", body), ("get", "/v1/models", None),
                                          ("get", "/v1/models/production", None),
                                          ("post", "/v1/feedback", {"response_id": "x", "label": "top_up"})):
                r = client.request(method, path, json=payload, headers=headers)
                assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (path, headers)
                assert r.json()["error"] == {"message": "A valid API key is required: send Authorization: Bearer "
                                                        "<key>.", "type": "authentication_error", "param": None,
                                             "code": "invalid_api_key"}
        assert client.get("/health").status_code == 200 and client.get("/metrics").status_code == 200
        one = client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEYS[0]}"})
        assert one.status_code == 200
        rid = one.json()["id"]
        for key, label in ((KEYS[0], "top_up"), (KEYS[1], "card_arrival"), (KEYS[0], "top_up_failed")):
            fb = client.post("/v1/feedback", json={"response_id": rid, "label": label},
                             headers={"Authorization": f"Bearer {key}"})
            assert fb.status_code == 200 and fb.json()["client"] == key_id(key)
    assert key_id(KEYS[0]) == "key-" + hashlib.sha256(KEYS[0].encode()).hexdigest()[:12]
    conn = sqlite3.connect(request_log_path(store_dir))
    rows = conn.execute("SELECT response_id, label, client FROM feedback ORDER BY rowid").fetchall()
    conn.close()
    assert rows == [(rid, "top_up", key_id(KEYS[0])), (rid, "card_arrival", key_id(KEYS[1])),
                    (rid, "top_up_failed", key_id(KEYS[0]))]  # every label kept, each with its client
    raw = b"".join(f.read_bytes() for f in request_log_path(store_dir).parent.glob("requests.sqlite*"))
    assert not any(k.encode() in raw for k in KEYS)
    with live(create_app(store_dir, api_keys=KEYS)) as url:  # the official client sends its api_key as the bearer
        ok = openai.OpenAI(base_url=f"{url}/v1", api_key=KEYS[1], max_retries=0)
        assert ok.chat.completions.create(**body).choices[0].message.content
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="nope", max_retries=0).models.list()


def test_without_keys_v1_is_open_and_feedback_is_anonymous(store_dir, recorded):
    from fastapi.testclient import TestClient

    with TestClient(create_app(store_dir)) as client:
        rid = chat(client, "top up").json()["id"]
        fb = client.post("/v1/feedback", json={"response_id": rid, "label": "top_up"})
        assert fb.status_code == 200 and fb.json()["client"] is None
    conn = sqlite3.connect(request_log_path(store_dir))
    assert conn.execute("SELECT label, client FROM feedback").fetchall() == [("top_up", None)]
    conn.close()


def test_api_keys_come_from_options_files_or_the_environment(tmp_path, monkeypatch):
    from tunewise.errors import TaskSpecError
    from tunewise.serving.app import load_api_keys as api_keys

    monkeypatch.delenv("TUNEWISE_API_KEY", raising=False)
    assert api_keys() == []
    monkeypatch.setenv("TUNEWISE_API_KEY", "from-env")
    assert api_keys() == ["from-env"]
    (tmp_path / "keys").write_text("# one key a line\nfile-one\n\n  file-two  \n")
    assert api_keys(["opt"], [tmp_path / "keys"]) == ["opt", "file-one", "file-two"]  # given: the env is not used
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(TaskSpecError, match="holds no API key"):
        api_keys([], [tmp_path / "empty"])
    with pytest.raises(TaskSpecError, match="cannot read the API key file"):
        api_keys([], [tmp_path / "missing"])
    with pytest.raises(TaskSpecError, match="API keys cannot contain spaces"):
        api_keys(["two words"])


# ---------------------------------------------------------------- failures and direct version requests (item 9)


def test_server_side_failures_answer_a_request_id_without_internals(store_dir, recorded, caplog):
    import logging

    from fastapi.testclient import TestClient

    from tunewise.errors import StoreError

    _, a, b = recorded
    secret_path = "/home/alice/private/artifacts/adapter-7f3a/adapter_model.safetensors"

    def broken(version, store):
        raise StoreError(f"The trained artifact {secret_path} is missing; run the task again to train it.")

    def crashing(version, store):
        raise RuntimeError(f"CUDA error at {secret_path}")

    class Failing:  # loads, then every model call raises
        uses_llm = False

        def predict(self, examples, backend):
            raise RuntimeError(f"CUDA error at {secret_path}")

    for loader, status in ((broken, 503), (crashing, 503), (lambda version, store: (Failing(), None), 500)):
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="tunewise.serve"), \
                TestClient(create_app(store_dir, loader=loader, admin_token=TOKEN)) as client:
            r = chat(client, "top up")
            promote_r = client.post("/admin/promote", json={"version": b, "alias": "production"}, headers=ADMIN)
        assert promote_r.status_code == (503 if status == 503 else 200)  # admin preloads: the same failure
        for reply in (r, promote_r) if status == 503 else (r,):
            assert reply.status_code == status, reply.text
            error = reply.json()["error"]
            request_id = reply.headers["x-request-id"]
            what = "is unavailable right now" if status == 503 else "failed to answer"
            assert error["message"] == f"The model {what} (request {request_id}); the server log has the details."
            assert error["code"] == ("model_unavailable" if status == 503 else "model_error")
            assert error["type"] == "server_error"
            assert "/home" not in reply.text and "safetensors" not in reply.text and "CUDA" not in reply.text
            logged = [rec for rec in caplog.records if request_id in rec.getMessage()]
            assert logged and secret_path in logged[0].getMessage() + (logged[0].exc_text or "")
    failed = [row for row in log_rows(store_dir) if row.status >= 500]
    assert [row.status for row in failed] == [503, 503, 500]
    assert all(secret_path in row.error for row in failed)  # the detail stays server-side


def test_store_paths_never_reach_clients(store_dir, recorded):
    from fastapi.testclient import TestClient

    with TestClient(create_app(store_dir, admin_token=TOKEN)) as client:
        replies = [client.post("/admin/promote", json={"version": "nope", "alias": "production"}, headers=ADMIN),
                   client.post("/admin/rollback", json={"alias": "nope"}, headers=ADMIN),
                   chat(client, "hi", model="nope")]
    assert [r.status_code for r in replies] == [404, 404, 404]
    assert all(str(store_dir) not in r.text and "/tmp" not in r.text for r in replies), [r.text for r in replies]
    assert replies[0].json()["error"]["message"] == "No version or alias 'nope' in this server's run store."


def test_direct_version_requests_bypass_the_split_as_arm_direct_or_are_refused(store_dir, recorded):
    from fastapi.testclient import TestClient

    _, a, b = recorded
    split = Split("production", "candidate", fraction_b=0.5)
    with TestClient(create_app(store_dir, split=split)) as client:  # default: allowed, logged as arm "direct"
        by_id = chat(client, "top up", model=b, user="u1").json()
        by_alias_b = chat(client, "top up", model="candidate", user="u1").json()
        routed = chat(client, "top up", model="production", user="u1").json()
        assert by_id["model"] == b and by_id["tunewise"]["arm"] == "direct"
        assert by_alias_b["model"] == b and by_alias_b["tunewise"]["arm"] == "direct"
        assert routed["tunewise"]["arm"] in ("a", "b")
    with TestClient(create_app(store_dir, split=split, allow_direct=False)) as client:
        for model in (b, b[:6], "candidate"):
            r = chat(client, "top up", model=model)
            assert r.status_code == 403 and r.json()["error"]["code"] == "direct_model_not_allowed", model
        assert chat(client, "top up", model=b).json()["error"]["message"] == (
            f"This server does not let clients choose the version; ask for 'production' instead of '{b}'.")
        assert chat(client, "top up", model="production").status_code == 200
        assert {m["id"] for m in client.get("/v1/models").json()["data"]} == {"production"}
    with TestClient(create_app(store_dir, allow_direct=False)) as client:  # no split: any alias, never an id
        assert chat(client, "top up", model="candidate").json()["tunewise"]["arm"] == "a"
        assert chat(client, "top up", model=a).status_code == 403
    arms = Counter(r.arm for r in log_rows(store_dir))
    assert arms["direct"] == 2
