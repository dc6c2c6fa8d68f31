"""The package's layout: one name per concept, and no text that points outside the repository."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "tunewise"


def _modules() -> list[Path]:
    return sorted(p.relative_to(PACKAGE) for p in PACKAGE.rglob("*.py"))


def test_a_module_name_means_one_thing():
    """Outside the CLI (a module per command, named for it), no two modules share a name; ``base.py`` is
    the interface of its own package."""
    names = Counter(p.name for p in _modules()
                    if p.parts[0] != "cli" and p.name not in {"__init__.py", "__main__.py", "base.py"})
    assert sorted(name for name, n in names.items() if n > 1) == []


def test_the_run_store_is_the_only_store():
    """``store.py`` is the SQLite run store; the content-keyed model cache is called a cache."""
    assert [p.as_posix() for p in _modules() if "store" in p.stem] == ["store.py"]
    assert (PACKAGE / "backends" / "model_cache.py").is_file()


OUTSIDE = re.compile(r"\.\./|\bshared/|\bnotes/|\bissue \d+", re.IGNORECASE)


def test_no_text_points_outside_the_repository():
    found = [f"{p}:{i}: {line.strip()}" for p in _modules()
             for i, line in enumerate((PACKAGE / p).read_text(encoding="utf-8").splitlines(), 1)
             if OUTSIDE.search(line)]
    assert found == []
