"""The boundaries of the package, checked on its import statements (AST, so lazy imports count too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "tunewise"
ORCHESTRATOR = ("tunewise.run", "tunewise.ladder.walk", "tunewise.ladder.attempt", "tunewise.ladder.lifecycle",
                "tunewise.ladder.context")
HEAVY = ("torch", "transformers", "peft", "trl", "accelerate", "tunewise.backends", "tunewise.store")


def _module(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, relative imports resolved (``from . import x`` counts as ``pkg.x``)."""
    package = _module(path).split(".") if path.name == "__init__.py" else _module(path).split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _files(*names: str) -> list[Path]:
    out: list[Path] = []
    for name in names:
        target = SRC / name
        out.extend(sorted(target.rglob("*.py")) if target.is_dir() else [target])
    return out


@pytest.mark.parametrize("path", _files("serving", "monitoring", "versions.py", "export", "report", "decision.py"),
                         ids=lambda p: str(p.relative_to(SRC)))
def test_serving_versions_monitoring_and_report_never_import_the_orchestrator(path):
    bad = sorted(m for m in imports(path) if m.startswith(ORCHESTRATOR))
    assert not bad, f"{path.relative_to(SRC)} imports {bad}"


@pytest.mark.parametrize("path", _files("decision.py", "costs.py", "advise.py", "ladder/policy.py",
                                        "evaluation/stats.py", "evaluation/metrics.py", "formats.py"),
                         ids=lambda p: str(p.relative_to(SRC)))
def test_pure_modules_import_no_model_library_backend_or_store(path):
    bad = sorted(m for m in imports(path) if m.startswith(HEAVY))
    assert not bad, f"{path.relative_to(SRC)} imports {bad}"


def test_nothing_outside_the_cli_imports_it():
    for path in SRC.rglob("*.py"):
        if "cli" not in path.relative_to(SRC).parts and path.name != "__main__.py":  # `python -m tunewise`
            assert not any(m.startswith("tunewise.cli") for m in imports(path)), path


def test_the_import_parser_sees_relative_and_lazy_imports():
    """The checks above can fail: relative, lazy imports are found."""
    assert "tunewise.run" in imports(SRC / "cli" / "run.py")
    assert "tunewise.embeddings" in imports(SRC / "monitoring" / "monitor.py")  # inside a function
