"""No dead functions: every function or method defined in the package is named somewhere else.

A name counts as used when it appears in ``src/``, ``tests/`` or ``benchmarks/`` as a name, an
attribute, an imported name or a string (``getattr``, ``__all__``). Decorated functions (click
commands, properties, routes), dunders and methods of subclasses (overrides a framework calls)
are not checked.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "tunewise"


def _used_names() -> set[str]:
    used: set[str] = set()
    for folder in ("src", "tests", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Name):
                    used.add(node.id)
                elif isinstance(node, ast.Attribute):
                    used.add(node.attr)
                elif isinstance(node, ast.alias):
                    used.add(node.name.rsplit(".", 1)[-1])
                elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                    used.add(node.value)
    return used


def _defined(body: list[ast.stmt], *, override: bool = False) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if not (node.decorator_list or node.name.startswith("__") or override):
                yield node
        elif isinstance(node, ast.ClassDef):
            yield from _defined(node.body, override=bool(node.bases))


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.fixture(scope="module")
def used() -> set[str]:
    return _used_names()


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_function_is_dead(module, used):
    tree = ast.parse(module.read_text(encoding="utf-8"))
    dead = [f"{fn.name} (line {fn.lineno})" for fn in _defined(tree.body) if fn.name not in used]
    assert dead == [], f"{module.relative_to(ROOT)} defines functions nothing uses: {', '.join(dead)}"
