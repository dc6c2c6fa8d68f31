"""tunewise's ``optimized`` rung against DSPy's BootstrapFewShotWithRandomSearch, same model, same splits (issue 16).

Both optimisers prompt the embedded SmolLM2-135M-Instruct on ``examples/fin_sentiment`` (bearish / bullish /
neutral finance tweets) and search demonstrations on the same dev examples, with the same demonstration count
(4) and candidate sets (``--candidates``), each bootstrapping from ``--train`` training examples (DSPy the first
ones of train, tunewise a seeded random sample of train); each winner is then scored on the same stratified test
subset. DSPy reaches the model through an OpenAI-compatible
server this script starts on loopback (FastAPI over tunewise's local backend: greedy chat generation, the
request's ``max_tokens``), with DSPy's own cache off, so every call it makes is counted by the server. DSPy runs
in its own virtual environment (``--dspy-python``; ``python -m venv V && V/bin/pip install dspy``), because its
pins are not tunewise's.

Reported for both: test accuracy with its 95% Clopper-Pearson interval, the paired McNemar test between the two
winners, model calls during the search, and wall time (search, test evaluation). tunewise's rung answers by free
generation here (``mode: generate``), as DSPy does; its default, label scoring, is reported beside it.

``--task snips_nlg`` runs the same comparison on the bundled generation example (data-to-text, a task SmolLM2 can
do with demonstrations): both optimisers answer by free generation and score candidates by sentence chrF
(sacrebleu, the same function for both), and a demonstration is bootstrapped when its chrF reaches the task's
target (DSPy: the metric returns ``score >= target`` under a trace; tunewise: ``bootstrap_threshold``'s default).
Quality is then mean chrF with its BCa interval, compared by the paired bootstrap and Wilcoxon's signed-rank test.

Run:  python benchmarks/bench_optimizers.py --dspy-python /tmp/dspyenv/bin/python      (~20 min on 2 idle cores)
      python benchmarks/bench_optimizers.py --dspy-python V/bin/python --task snips_nlg --out optimizers_nlg
      (V needs dspy and sacrebleu)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
from fastapi import Request  # noqa: E402 - at module level: FastAPI resolves the handler's annotation here

TASKS = {name: C.ROOT / "examples" / name / "task.yaml" for name in ("fin_sentiment", "snips_nlg")}

DSPY_SCRIPT = r'''
import json, sys, time
from typing import Literal
import dspy

print(dspy.__version__, flush=True)
cfg = json.load(open(sys.argv[1]))
if cfg["kind"] == "classification":
    labels = tuple(cfg["labels"])
    Label = Literal[labels]  # type: ignore[valid-type]

    class Task(dspy.Signature):
        """Classify the sentiment of the financial news tweet for the stock it mentions."""

        text: str = dspy.InputField()
        label: Label = dspy.OutputField()

    def metric(example, pred, trace=None):
        return getattr(pred, "label", None) == example.label
else:  # data-to-text, scored by sentence chrF as tunewise scores it
    from sacrebleu.metrics import CHRF

    chrf = CHRF()

    class Task(dspy.Signature):
        __doc__ = cfg["instructions"]

        text: str = dspy.InputField(desc="the intent and its slot values")
        label: str = dspy.OutputField(desc="the request")

    def metric(example, pred, trace=None):
        answer = getattr(pred, "label", None)
        score = 0.0 if answer is None else chrf.sentence_score(str(answer), [example.label]).score / 100
        return score >= cfg["threshold"] if trace is not None else score


def ex(row):
    return dspy.Example(text=row["text"], label=row["label"]).with_inputs("text")


lm = dspy.LM("openai/smollm2", api_base=cfg["url"], api_key="local", temperature=0.0, max_tokens=cfg["max_tokens"],
             cache=False, num_retries=0)
dspy.configure(lm=lm)
program = dspy.Predict(Task)
optimizer = dspy.BootstrapFewShotWithRandomSearch(metric=metric, max_bootstrapped_demos=cfg["k"],
                                                  max_labeled_demos=cfg["k"],
                                                  num_candidate_programs=cfg["candidates"], num_threads=1,
                                                  max_errors=10_000)
start = time.perf_counter()
compiled = optimizer.compile(program, trainset=[ex(r) for r in cfg["train"]], valset=[ex(r) for r in cfg["dev"]])
search_s = time.perf_counter() - start
start = time.perf_counter()
outputs = []
for row in cfg["test"]:
    try:
        outputs.append(getattr(compiled(text=row["text"]), "label", None))
    except Exception as exc:  # a parse failure the adapters could not recover: a wrong answer
        print(f"test answer failed: {exc.__class__.__name__}: {str(exc)[:300]}", file=sys.stderr)
        outputs.append(None)
json.dump({"outputs": outputs, "search_s": search_s, "test_s": time.perf_counter() - start,
           "demos": len(compiled.demos)}, open(sys.argv[2], "w"))
'''


class Server:
    """An OpenAI-compatible chat endpoint over tunewise's local backend, counting the requests it serves."""

    def __init__(self, model: str) -> None:
        import uvicorn
        from fastapi import FastAPI

        from tunewise.backends import load_backend
        from tunewise.backends.base import GenerationRequest, Message

        self.backend, self.requests, self.lock = load_backend(model), 0, threading.Lock()
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> dict[str, Any]:
            body = await request.json()
            prompt = tuple(Message(m["role"], m["content"] if isinstance(m["content"], str) else
                                   "".join(p.get("text", "") for p in m["content"])) for m in body["messages"])
            with self.lock:
                self.requests += 1
                g = self.backend.generate([GenerationRequest(prompt=prompt,
                                                             max_new_tokens=int(body.get("max_tokens") or 64))])[0]
            return {"id": f"c{self.requests}", "object": "chat.completion", "created": int(time.time()),
                    "model": body.get("model", "smollm2"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": g.text},
                                 "finish_reason": "length" if g.finish_reason == "length" else "stop"}],
                    "usage": {"prompt_tokens": g.prompt_tokens, "completion_tokens": g.completion_tokens,
                              "total_tokens": g.prompt_tokens + g.completion_tokens}}

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def _tunewise(spec: Any, store: Path, name: str, params: dict[str, Any]) -> dict[str, Any]:
    from tunewise.run import run_task
    from tunewise.task import RungSpec

    rung = RungSpec(name=name, strategy="optimize", params=params)
    spec = spec.model_copy(update={"rungs": [rung], "store": str(store)})
    start = time.perf_counter()
    outcome = run_task(spec, report=False)
    wall = time.perf_counter() - start
    r = outcome.results.rungs[0]
    if r.status != "finished":
        raise SystemExit(f"{name}: {r.status}: {r.error or r.reason}")
    opt = r.extras["optimization"]
    return {r.primary_metric: r.primary.value, "low": r.primary.low, "high": r.primary.high, "n": r.primary.n,
            "search_calls": opt["calls"], "search_s": opt["wall_s"], "test_model_s": r.usage["model_seconds"],
            "wall_s": wall, "winner": opt["winner"], "bootstrapped": opt["bootstrapped"], "params": params,
            "outputs": {p.example_id: p.output for p in r.predictions}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dspy-python", required=True, help="a Python with dspy installed")
    p.add_argument("--task", choices=sorted(TASKS), default="fin_sentiment")
    p.add_argument("--out", default="optimizers", help="the result's name under benchmarks/results/")
    p.add_argument("--candidates", type=int, default=2)
    p.add_argument("--train", type=int, default=48, help="training examples both optimisers bootstrap from")
    p.add_argument("--dev", type=int, default=32)
    p.add_argument("--test", type=int, default=150)
    p.add_argument("--max-tokens", type=int, default=48, help="DSPy's answer budget (its default is 1,000)")
    p.add_argument("--reuse-dspy", type=Path, default=None,
                   help="a previous run's DSPy output directory (cfg.json, dspy_out.json, calls.json) with the same "
                        "settings: DSPy's side is not rerun (its result does not depend on tunewise's code)")
    args = p.parse_args(argv)

    from tunewise.data import load_splits
    from tunewise.task import load_task

    task = TASKS[args.task]
    spec = load_task(task)
    spec = spec.model_copy(update={"data": spec.data.model_copy(update={"test_limit": args.test})})
    splits = load_splits(spec)
    train, dev, test = list(splits.train[: args.train]), list(splits.dev[: args.dev]), list(splits.test)
    root = Path(tempfile.mkdtemp(prefix="tunewise-optimizers-"))
    k, search = 4, {"k": 4, "candidates": args.candidates, "dev_limit": args.dev, "bootstrap_limit": args.train}
    # tunewise's calls: the two instructions' zero-shot passes on dev, the bootstrap, the candidate sets on dev
    budget = args.train + args.dev * 3 * (args.candidates + 1)
    out: dict[str, Any] = {"benchmark": "optimizers", "environment": C.environment(), "task": str(task.relative_to(C.ROOT)),
                           "model": C.MODEL, "train": len(train), "dev": len(dev), "test": len(test),
                           "test_origin": splits.test_origin, "k": k, "candidates": args.candidates,
                           "max_tokens": args.max_tokens, "kind": spec.kind, "metric": spec.primary_metric,
                           "name": args.out, "load_average_before": list(os.getloadavg())}
    print("tunewise optimized (generate) ...", flush=True)
    tw = _tunewise(spec, root / "store", "optimized_generate", {**search, "mode": "generate", "max_calls": budget})
    print(f"  {tw[spec.primary_metric]:.3f} [{tw['low']:.3f}, {tw['high']:.3f}], {tw['search_calls']} calls",
          flush=True)
    tws = None
    if spec.kind == "classification":  # label scoring, tunewise's default for classification
        print("tunewise optimized (score) ...", flush=True)
        tws = _tunewise(spec, root / "store", "optimized_score", {**search, "mode": "score", "max_calls": budget})
        print(f"  {tws['accuracy']:.3f} [{tws['low']:.3f}, {tws['high']:.3f}], {tws['search_calls']} calls",
              flush=True)

    cfg = {"kind": spec.kind, "instructions": spec.instructions or "",
           "threshold": spec.target.get(spec.primary_metric, 0.5), "labels": list(splits.labels or []), "k": k, "candidates": args.candidates, "max_tokens": args.max_tokens,
           "train": [{"text": e.text, "label": e.target} for e in train],
           "dev": [{"text": e.text, "label": e.target} for e in dev],
           "test": [{"text": e.text, "label": e.target} for e in test]}
    if args.reuse_dspy is not None:
        return _finish(out, tw, tws, test, *_reused(args.reuse_dspy, cfg))
    server = Server(C.MODEL)
    try:
        cfg["url"] = server.url
        (root / "cfg.json").write_text(json.dumps(cfg))
        (root / "dspy_run.py").write_text(DSPY_SCRIPT)
        print("DSPy BootstrapFewShotWithRandomSearch ...", flush=True)
        start = time.perf_counter()
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "DSP_CACHEBOOL": "false"}
        proc = subprocess.run([args.dspy_python, str(root / "dspy_run.py"), str(root / "cfg.json"),
                               str(root / "dspy_out.json")], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode:
            print(proc.stderr[-4000:], file=sys.stderr)
            raise SystemExit(f"the DSPy run exited {proc.returncode}")
        result = json.loads((root / "dspy_out.json").read_text())
        (root / "dspy_stderr.txt").write_text(proc.stderr)
        print(f"DSPy's log and outputs: {root}", flush=True)
        calls_total = server.requests
        (root / "calls.json").write_text(json.dumps({"calls_total": calls_total, "wall_s": wall,
                                                     "version": (proc.stdout.splitlines() or [""])[0][:40]}))
    finally:
        server.close()
    return _finish(out, tw, tws, test, result, calls_total, wall, (proc.stdout.splitlines() or [""])[0][:40])


def _reused(directory: Path, cfg: dict[str, Any]) -> tuple[dict[str, Any], int, float, str]:
    """A previous DSPy run's outputs, when its settings and examples are these."""
    before = json.loads((directory / "cfg.json").read_text())
    if {k: v for k, v in before.items() if k != "url"} != cfg:
        raise SystemExit(f"{directory}: that DSPy run used other settings or examples; rerun it")
    calls = json.loads((directory / "calls.json").read_text()) if (directory / "calls.json").is_file() else {}
    result = json.loads((directory / "dspy_out.json").read_text())
    print(f"DSPy: reusing {directory}", flush=True)
    return result, int(calls.get("calls_total", -1)), float(calls.get("wall_s", float("nan"))), \
        str(calls.get("version", "3.4.1")) + f" (reused from {directory.name})"


def _finish(out: dict[str, Any], tw: dict[str, Any], tws: dict[str, Any] | None, test: list[Any], result: dict[str, Any],
            calls_total: int, wall: float, version: str) -> dict[str, Any]:
    import numpy as np

    from tunewise.evaluation.metrics import generation_scores
    from tunewise.evaluation.scoring import mean_metric
    from tunewise.evaluation.stats import compare_paired, proportion_metric

    k, candidates, max_tokens, metric = out["k"], out["candidates"], out["max_tokens"], out["metric"]
    dspy_out = result["outputs"]
    gold = [e.target for e in test]

    def scores(outputs: list[Any]) -> Any:  # per example: right or wrong, or the task's generation metric
        if out["kind"] == "classification":
            return np.array([o == g for o, g in zip(outputs, gold)], dtype=float)
        return generation_scores(metric, gold, outputs)

    def quality(per_example: Any) -> Any:
        return proportion_metric(per_example) if out["kind"] == "classification" else mean_metric(per_example, 0)

    dspy_scores = scores(dspy_out)
    m = quality(dspy_scores)
    test_calls = len(test)  # at least one a test example (an adapter's retry makes more)
    out["dspy"] = {metric: m.value, "low": m.low, "high": m.high, "n": m.n, "search_s": result["search_s"],
                   "test_s": result["test_s"], "wall_s": wall, "calls_total": calls_total,
                   "search_calls_at_least": calls_total - test_calls, "demos": result["demos"],
                   "unparsed_test_answers": sum(o is None for o in dspy_out), "dspy_version": version,
                   "settings": {"max_bootstrapped_demos": k, "max_labeled_demos": k,
                                "num_candidate_programs": candidates, "max_tokens": max_tokens}}
    ids = [e.id for e in test]
    ours = [("tunewise_generate", "tunewise optimized (generate)", tw)]
    if tws is not None:
        ours.append(("tunewise_score", "tunewise optimized (score)", tws))
    for key, _, res in ours:
        c = compare_paired(scores([res["outputs"].get(i) for i in ids]), dspy_scores)
        out[key] = {k2: v for k2, v in res.items() if k2 != "outputs"}
        out[key]["vs_dspy"] = {x: c[x] for x in ("diff", "low", "high", "p_value", "verdict")}
    out["load_average_after"] = list(os.getloadavg())
    path = C.write_result(out["name"], out)
    rows = [[name, f"{100 * r[metric]:.1f}% [{100 * r['low']:.1f}, {100 * r['high']:.1f}]",
             r.get("search_calls", r.get("search_calls_at_least")), f"{r['search_s'] / 60:.1f}"]
            for name, r in [*((label, out[key]) for key, label, _ in ours), ("DSPy BootstrapRS", out["dspy"])]]
    print(C.table(rows, ["optimiser", f"test {metric} [95% CI]", "search calls", "search min"]))
    print(f"written {path}")
    return out


if __name__ == "__main__":
    main()
