"""Load test for ``tunewise serve``: N chat completions at concurrency C, then latency percentiles and errors.

Against a running server::

    python benchmarks/serve_load.py --url http://127.0.0.1:8000 --model production -n 500 -c 8

Or let the script start one (a ``tunewise serve`` subprocess on a free loopback port) for a task's
run store; the inputs are the task's frozen test split, cycled::

    python benchmarks/serve_load.py --task examples/banking77/task.yaml --model production -n 200 -c 8
    python benchmarks/serve_load.py --task examples/banking77/task.yaml --rung zero_shot -n 200 -c 8

``--rung NAME`` makes a version of that rung from the task's latest run that finished it and
serves it by id (no alias needed). The first request (which loads the model) is a warm-up and is
not counted. Prints requests, concurrency, errors, p50/p95/max latency and throughput; ``--json
PATH`` also writes them. The client is asyncio + httpx in this process; the server is another process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

DEFAULT_TEXTS = ["I still have not received my new card, when will it arrive?", "How do I top up my account?",
                 "What exchange rate do you use?", "My card payment was declined, why?"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _task_inputs(task: Path) -> tuple[Path, list[str], object]:
    from tunewise.data import load_splits
    from tunewise.task import load_task

    spec = load_task(task)
    return spec.store_dir, [e.text for e in load_splits(spec).test], spec


def _version_of_rung(store_dir: Path, task_name: str, rung: str) -> str:
    from tunewise.store import Store
    from tunewise.versions import create_version

    with Store(store_dir) as store:
        for run in store.list_runs():  # newest first
            record = store.get_rung(run.id, rung)
            if run.task_name == task_name and record is not None and record.status == "finished":
                return create_version(store, run.id, rung).id
    sys.exit(f"error: no run of {task_name} in {store_dir} has a finished rung '{rung}'; run it first.")


def _start_server(store_dir: Path, port: int, max_batch: int | None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tunewise", "serve", str(store_dir), "--port", str(port)]
    if max_batch:
        cmd += ["--max-batch", str(max_batch)]
    return subprocess.Popen(cmd, env={**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1"})


def _wait_ready(url: str, proc: subprocess.Popen | None, timeout_s: float = 600) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        if proc is not None and proc.poll() is not None:
            sys.exit(f"error: the server exited with status {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return time.perf_counter() - start
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    sys.exit(f"error: the server at {url} was not ready after {timeout_s:.0f} s")


async def _load(url: str, model: str, texts: list[str], n: int, concurrency: int) -> tuple[list[float], list[str]]:
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(n))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient, w: int) -> None:
        for i in counter:
            messages = [{"role": "user", "content": texts[i % len(texts)]}]
            body = {"model": model, "user": f"load-{w}", "messages": messages}
            start = time.perf_counter()
            try:
                r = await client.post("/v1/chat/completions", json=body)
                if r.status_code != 200:
                    errors.append(f"{r.status_code}: {r.text[:200]}")
                    continue
            except httpx.HTTPError as exc:
                errors.append(f"{exc.__class__.__name__}: {exc}")
                continue
            latencies.append(time.perf_counter() - start)

    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        await asyncio.gather(*(worker(client, w) for w in range(concurrency)))
    return latencies, errors


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="A running server (default: start one for --task).")
    ap.add_argument("--task", type=Path, help="Task file: its store is served and its test inputs are sent.")
    ap.add_argument("--store", type=Path, help="Run-store directory (default: the task's).")
    ap.add_argument("--model", default="production", help="Alias or version id to ask for.")
    ap.add_argument("--rung", help="Serve a version of this rung from the task's latest run (instead of --model).")
    ap.add_argument("-n", "--requests", type=int, default=200)
    ap.add_argument("-c", "--concurrency", type=int, default=8)
    ap.add_argument("--max-batch", type=int, help="Passed to tunewise serve.")
    ap.add_argument("--json", type=Path, help="Also write the results here.")
    args = ap.parse_args()
    if not args.url and not args.task:
        ap.error("give --url of a running server, or --task to start one")
    texts, store_dir, spec = DEFAULT_TEXTS, args.store, None
    if args.task:
        task_store, texts, spec = _task_inputs(args.task)
        store_dir = store_dir or task_store
    model = _version_of_rung(store_dir, spec.name, args.rung) if args.rung else args.model
    proc = None
    url = args.url
    if url is None:
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        proc = _start_server(store_dir, port, args.max_batch)
    try:
        ready_s = _wait_ready(url, proc)
        start = time.perf_counter()
        warm = httpx.post(f"{url}/v1/chat/completions", timeout=600,
                          json={"model": model, "messages": [{"role": "user", "content": texts[0]}]})
        if warm.status_code != 200:
            sys.exit(f"error: warm-up request failed: {warm.status_code} {warm.text[:300]}")
        warm_s = time.perf_counter() - start
        start = time.perf_counter()
        latencies, errors = asyncio.run(_load(url, model, texts, args.requests, args.concurrency))
        wall = time.perf_counter() - start
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
    result = {"url": url, "model": model, "version": warm.json()["model"], "requests": args.requests,
              "concurrency": args.concurrency, "errors": len(errors), "ok": len(latencies),
              "p50_ms": 1000 * _percentile(latencies, 50) if latencies else None,
              "p95_ms": 1000 * _percentile(latencies, 95) if latencies else None,
              "max_ms": 1000 * max(latencies) if latencies else None, "wall_s": wall,
              "throughput_rps": len(latencies) / wall if wall else None, "server_ready_s": ready_s,
              "warmup_s": warm_s, "error_samples": errors[:5]}
    for key in ("model", "version", "requests", "concurrency", "errors", "p50_ms", "p95_ms", "max_ms",
                "throughput_rps", "wall_s", "warmup_s"):
        value = result[key]
        shown = f"{value:.1f}" if isinstance(value, float) else str(value)
        print(f"{key:<15} {shown}")
    for sample in result["error_samples"]:
        print(f"error: {sample}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
