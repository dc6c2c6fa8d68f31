"""Serve soak: a fixed number of requests under concurrent load while ``production`` is promoted and rolled back.

A run store with three versions of one fake-backend run (knn, zero_shot and few_shot_random on
``fake:random?delay=...``, so LLM versions take a known time per answer and requests are in flight
when an alias moves) is served by ``python -m tunewise serve STORE`` (a subprocess on a free loopback
port, admin token from the environment). Then:

* ``--concurrency`` client threads send ``--requests`` chat completions for ``production`` in all
  (each its own ``httpx.Client``, inputs from the task's test split, 50 distinct users);
* a switcher moves ``production`` until the last request is answered: promote a version, roll back,
  promote the other, roll back, ... with ``--pause`` seconds between moves, through ``POST
  /admin/promote`` / ``/admin/rollback``; every ``--cli-every`` moves, one promotion and its rollback go
  through the CLI instead (``tunewise versions promote|rollback --store STORE``: another process writing
  the store, which the server reads again within a second). The second promotion is such a CLI move, of
  a version the server has not loaded: the requests that follow load it.

Counted: failed requests (any status other than 200, or a transport error: the soak requires zero),
which version answered each request, moves and failed moves, latency percentiles and throughput.
Checked as well: **misrouted** requests, answered by a version that was not ``production``'s at any
moment while the request was open (a move is "in progress" from when it was sent until its reply, and
for a CLI move until one server refresh interval plus half a second later), and the **request log**:
after the server stops, every answered request's id must be in ``<store>/serve/requests.sqlite`` with
the version that answered it.

Run:  python benchmarks/soak_serve.py                 (10,000 requests, 8 clients; ~1.5 min on 2 cores)
      python benchmarks/soak_serve.py -n 300 -c 4 --out ''   (the fast subset the tests run)
Writes benchmarks/results/soak_serve.json (``--out`` to change the name).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

TOKEN = "soak-admin-token"
RUNGS = ("knn", "zero_shot", "few_shot_random")
#: the router re-reads the aliases at most this often (tunewise.serving.router.Router's refresh_s)
REFRESH_S = 1.0


def make_store(workdir: Path, *, delay: float = 0.005) -> tuple[Path, dict[str, str], list[str]]:
    """A run on the fake backend and one version per rung; ``production`` -> knn. (store, rung -> id, inputs)."""
    from soak_kill import write_task

    from tunewise.data import load_splits
    from tunewise.run import run_task
    from tunewise.store import Store
    from tunewise.task import load_task
    from tunewise.versions import create_version, promote

    shutil.rmtree(workdir / "task", ignore_errors=True)
    task = write_task(workdir / "task", n_train=60, n_test=40, model=f"fake:random?delay={delay:g}")
    spec = load_task(task)
    outcome = run_task(spec, rungs=list(RUNGS), task_path=task, report=False)
    with Store(spec.store_dir) as store:
        versions = {rung: create_version(store, outcome.results.run_id, rung).id for rung in RUNGS}
        promote(store, versions["knn"], "production")
    return spec.store_dir, versions, [e.text for e in load_splits(spec).test]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(store: Path, log: Path) -> tuple[subprocess.Popen, str]:
    import httpx

    port = _free_port()
    env = {**os.environ, "TUNEWISE_ADMIN_TOKEN": TOKEN}
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "tunewise", "serve", str(store), "--port", str(port)],
                                env=env, stdout=err, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server was not ready after 120 s")


class Switcher(threading.Thread):
    """Moves ``production``: promote another version, roll back, promote the next, ... until told to stop."""

    def __init__(self, url: str, store: Path, versions: list[str], *, pause: float, cli_every: int) -> None:
        super().__init__(daemon=True)
        self.url, self.store, self.versions = url, store, versions
        self.pause, self.cli_every = pause, cli_every
        self.stop = threading.Event()
        self.moves: list[dict[str, Any]] = []

    def _http(self, client: Any, action: str, target: str | None) -> tuple[bool, str | None, str]:
        body = {"alias": "production", **({"version": target} if action == "promote" else {})}
        try:
            r = client.post(f"/admin/{action}", json=body)
        except Exception as exc:  # noqa: BLE001 - a move that failed is counted, not fatal
            return False, None, f"{exc.__class__.__name__}: {exc}"
        return r.status_code == 200, (r.json().get("version") if r.status_code == 200 else None), r.text[:300]

    def _cli(self, action: str, target: str | None) -> tuple[bool, str | None, str]:
        args = ["promote", target, "--alias", "production"] if action == "promote" else ["rollback", "production"]
        done = subprocess.run([sys.executable, "-m", "tunewise.cli", "versions", *args, "--store", str(self.store)],
                              capture_output=True, text=True, timeout=120)
        return done.returncode == 0, None, (done.stdout + done.stderr)[-300:]

    def _current(self) -> str:
        from tunewise.store import Store

        with Store(self.store) as store:
            return store.aliases()["production"]

    def run(self) -> None:
        import httpx

        others = self.versions[1:]
        n = 0
        with httpx.Client(base_url=self.url, timeout=120, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            while not self.stop.is_set():
                action = "promote" if n % 2 == 0 else "rollback"
                target = others[(n // 2) % len(others)] if action == "promote" else None
                # every cli_every moves a promotion and its rollback go through the CLI, starting with the second
                # promotion: a version never loaded is promoted by another process, and the requests load it
                every = max(1, self.cli_every // 2)
                via = "cli" if self.cli_every and (n // 2) % every == 1 % every else "http"
                sent = time.monotonic()
                ok, version, detail = self._cli(action, target) if via == "cli" else self._http(client, action, target)
                done = time.monotonic()
                if ok and version is None:
                    version = self._current()
                self.moves.append({"action": action, "via": via, "sent": sent, "done": done, "ok": ok,
                                   "version": version, **({} if ok else {"detail": detail})})
                n += 1
                self.stop.wait(self.pause)


def _client(url: str, texts: list[str], take: Any, out: list[dict[str, Any]], worker: int) -> None:
    import httpx

    with httpx.Client(base_url=url, timeout=120) as client:
        while (i := take()) is not None:
            body = {"model": "production", "user": f"user-{i % 50}",
                    "messages": [{"role": "user", "content": texts[i % len(texts)]}]}
            start = time.monotonic()
            row: dict[str, Any] = {"i": i, "worker": worker, "start": start}
            try:
                r = client.post("/v1/chat/completions", json=body)
                row.update(status=r.status_code)
                if r.status_code == 200:
                    reply = r.json()
                    row.update(version=reply["model"], id=reply["id"])
                else:
                    row.update(error=r.text[:300])
            except Exception as exc:  # noqa: BLE001 - a transport error is a failed request
                row.update(status=None, error=f"{exc.__class__.__name__}: {exc}")
            row["end"] = time.monotonic()
            out.append(row)


def _possible(initial: str, moves: list[dict[str, Any]]) -> list[tuple[str, float, float]]:
    """(version, from, to): when each version may have been ``production``'s, a move's uncertainty included."""
    spans, current, since = [], initial, float("-inf")
    for m in sorted((m for m in moves if m["ok"]), key=lambda m: m["sent"]):
        settled = m["done"] + (REFRESH_S + 0.5 if m["via"] == "cli" else 0.0)
        spans.append((current, since, settled))
        current, since = m["version"], m["sent"]
    spans.append((current, since, float("inf")))
    return spans


def misrouted(answered: list[dict[str, Any]], initial: str, moves: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The answered requests whose version was not ``production``'s at any moment while they were open."""
    spans = _possible(initial, moves)
    return [r for r in answered if not any(v == r["version"] and lo <= r["end"] and hi >= r["start"]
                                           for v, lo, hi in spans)]


def _log_check(store: Path, answered: list[dict[str, Any]]) -> dict[str, Any]:
    db = sqlite3.connect(store / "serve" / "requests.sqlite")
    try:
        logged = dict(db.execute("SELECT id, version FROM requests WHERE arm != 'shadow'").fetchall())
    finally:
        db.close()
    missing = [r["id"] for r in answered if r["id"] not in logged]
    wrong = [r["id"] for r in answered if r["id"] in logged and logged[r["id"]] != r["version"]]
    return {"rows": len(logged), "answered_missing_from_log": len(missing), "logged_with_another_version": len(wrong)}


def _pct(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def soak(store: Path, versions: dict[str, str], texts: list[str], *, requests: int, concurrency: int,
         pause: float, cli_every: int, workdir: Path) -> dict[str, Any]:
    proc, url = start_server(store, workdir / "server.log")
    order = [versions[r] for r in RUNGS]
    results: list[dict[str, Any]] = []
    lock, counter = threading.Lock(), iter(range(requests))

    def take() -> int | None:
        with lock:
            return next(counter, None)

    try:
        switcher = Switcher(url, store, order, pause=pause, cli_every=cli_every)
        clients = [threading.Thread(target=_client, args=(url, texts, take, results, w), daemon=True)
                   for w in range(concurrency)]
        start = time.monotonic()
        switcher.start()
        for t in clients:
            t.start()
        for t in clients:
            t.join()
        wall = time.monotonic() - start
        switcher.stop.set()
        switcher.join(timeout=180)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    failed = [r for r in results if r.get("status") != 200]
    answered = [r for r in results if r.get("status") == 200]
    wrong = misrouted(answered, order[0], switcher.moves)
    latencies = [r["end"] - r["start"] for r in answered]
    by_rung = {rung: vid for rung, vid in versions.items()}
    served = Counter(r["version"] for r in answered)
    moves = switcher.moves
    return {
        "requests": len(results), "concurrency": concurrency, "failed": len(failed),
        "failures": Counter(str(r.get("status")) for r in failed),
        "failure_examples": [r.get("error") for r in failed[:5]],
        "answered_by": {rung: served.get(vid, 0) for rung, vid in by_rung.items()},
        "moves": {"total": len(moves), "promotions": sum(m["action"] == "promote" for m in moves),
                  "rollbacks": sum(m["action"] == "rollback" for m in moves),
                  "via_http": sum(m["via"] == "http" for m in moves), "via_cli": sum(m["via"] == "cli" for m in moves),
                  "failed": sum(not m["ok"] for m in moves),
                  "failed_examples": [m.get("detail") for m in moves if not m["ok"]][:3]},
        "misrouted": len(wrong),
        "misrouted_examples": [{k: r[k] for k in ("i", "version")} for r in wrong[:5]],
        "request_log": _log_check(store, answered),
        "latency_ms": {"p50": _ms(_pct(latencies, 50)), "p95": _ms(_pct(latencies, 95)),
                       "p99": _ms(_pct(latencies, 99)), "max": _ms(max(latencies, default=None))},
        "wall_s": round(wall, 2), "requests_per_s": round(len(results) / wall, 1) if wall else None,
    }


def _ms(v: float | None) -> float | None:
    return None if v is None else round(1000 * v, 1)


def passed(r: dict[str, Any]) -> bool:
    """Zero failed requests, every request counted, both directions of moves exercised, the log complete."""
    log = r["request_log"]
    return (r["failed"] == 0 and r["moves"]["failed"] == 0 and r["misrouted"] == 0
            and r["moves"]["promotions"] > 0 and r["moves"]["rollbacks"] > 0
            and log["answered_missing_from_log"] == 0 and log["logged_with_another_version"] == 0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", "--requests", type=int, default=10_000)
    p.add_argument("-c", "--concurrency", type=int, default=8)
    p.add_argument("--pause", type=float, default=0.05, help="seconds between alias moves (default 0.05)")
    p.add_argument("--cli-every", type=int, default=10,
                   help="every N moves, a promotion and its rollback through the CLI (0: never)")
    p.add_argument("--delay", type=float, default=0.005, help="seconds per fake model call (default 0.005)")
    p.add_argument("--workdir", type=Path, help="keep the store here (default: a temporary directory, removed)")
    p.add_argument("--out", default="soak_serve", help="benchmarks/results/<out>.json ('' : do not write)")
    args = p.parse_args(argv)
    import _common as C

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tunewise-soak-serve-"))
    try:
        store, versions, texts = make_store(workdir, delay=args.delay)
        r = soak(store, versions, texts, requests=args.requests, concurrency=args.concurrency, pause=args.pause,
                 cli_every=args.cli_every, workdir=workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    r["passed"] = passed(r)
    m, lat = r["moves"], r["latency_ms"]
    print(f"{r['requests']} requests from {r['concurrency']} clients in {r['wall_s']} s "
          f"({r['requests_per_s']} req/s): {r['failed']} failed, {r['misrouted']} misrouted; "
          f"answered by {json.dumps(r['answered_by'])}")
    print(f"moves: {m['promotions']} promotions, {m['rollbacks']} rollbacks ({m['via_http']} over HTTP, "
          f"{m['via_cli']} through the CLI), {m['failed']} failed; latency p50 {lat['p50']} ms, p95 {lat['p95']} ms, "
          f"p99 {lat['p99']} ms, max {lat['max']} ms; request log: {json.dumps(r['request_log'])}")
    print(f"passed: {r['passed']}")
    if args.out:
        data = {"environment": C.environment(), "settings": {**vars(args), "workdir": str(args.workdir or "")},
                "rungs": list(RUNGS), **r}
        print(f"wrote {C.write_result(args.out, data)}")
    return 0 if r["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
