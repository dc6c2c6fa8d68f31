"""The public Python API: ``from tunewise import ...`` names, a task built in code, the typed decision."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import tunewise
from tunewise import build_task, run_task

PUBLIC = [
    "BackendError", "Comparison", "DataError", "Decision", "LadderRecord", "MetricValue", "Option", "Prediction",
    "Prices", "RunOutcome", "RunResults", "RungResult", "TaskSpec", "TaskSpecError", "TunewiseError", "__version__",
    "build_task", "decide", "load_prices", "load_task", "quick_spec", "run_task",
]
WORDS = {"card_arrival": "when will my new card arrive", "top_up": "top up my account with money",
         "exchange_rate": "what exchange rate do you use"}


def rows(n: int, offset: int = 0) -> list[dict[str, str]]:
    labels = sorted(WORDS)
    return [{"text": f"{WORDS[labels[i % 3]]} #{offset + i}", "label": labels[i % 3]} for i in range(n)]


def test_all_is_pinned_and_every_name_resolves():
    assert sorted(tunewise.__all__) == sorted(PUBLIC)
    for name in tunewise.__all__:
        assert getattr(tunewise, name) is not None
    with pytest.raises(AttributeError):
        tunewise.not_a_name  # noqa: B018


def test_import_tunewise_is_light():
    code = "import sys, tunewise; print(json.dumps(sorted(m for m in ('numpy', 'torch', 'tunewise.run') if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_a_task_built_from_lists_and_a_dataframe_runs_and_decides(tmp_path):
    pd = pytest.importorskip("pandas")
    task = build_task(name="intents", train=pd.DataFrame(rows(30)), test=rows(12, 1000), target={"accuracy": 0.5},
                      model="fake:random", embedder="hashing", store=tmp_path / "store")
    outcome = run_task(task, rungs=["knn", "zero_shot"])
    assert isinstance(outcome.decision, tunewise.Decision)
    assert outcome.decision.winner in {"knn", "zero_shot"}
    assert [r.name for r in outcome.results.rungs] == ["knn", "zero_shot"]
    written = json.loads((outcome.results_path.parent / "decision.json").read_text())
    assert written["winner"] == outcome.decision.winner  # the file is the object the run returned
    # the records were kept unchanged in the store, named by content: the same data is the same run
    (train_file,) = (tmp_path / "store" / "data").glob("train-*.jsonl")
    assert [json.loads(line) for line in train_file.read_text().splitlines()] == rows(30)
    again = build_task(name="intents", train=rows(30), test=rows(12, 1000), target={"accuracy": 0.5},
                       model="fake:random", embedder="hashing", store=tmp_path / "store")
    assert again.data.train == task.data.train and run_task(again, rungs=["knn", "zero_shot"]).reused == ("knn",
                                                                                                          "zero_shot")


def test_build_task_errors_are_one_sentence(tmp_path):
    with pytest.raises(tunewise.TaskSpecError, match=r"data.train: record 2 is a str"):
        build_task(train=[{"text": "a", "label": "b"}, "oops"], test=rows(3), store=tmp_path)
    with pytest.raises(tunewise.TaskSpecError, match=r"data.test: record 1 holds a value JSON cannot represent"):
        build_task(train=rows(3), test=[{"text": object(), "label": "x"}], store=tmp_path)
    with pytest.raises(tunewise.TaskSpecError, match=r"unknown key 'tagret'"):
        build_task(train=rows(3), test=rows(3), tagret={"accuracy": 0.9}, store=tmp_path)


@pytest.mark.integration
def test_the_readme_python_example_runs(tmp_path, monkeypatch):
    """The README's Python API section, executed as written (from the repository root, MiniLM baselines)."""
    import contextlib
    import io
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Python API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(root)
    code = code.replace('store=".tunewise"', f"store={str(tmp_path / 'store')!r}")  # keep the checkout clean
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("knn: ") and lines[1].startswith("probe: ") and " - " in lines[2]
