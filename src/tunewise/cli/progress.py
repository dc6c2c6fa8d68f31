"""Progress on stderr, fed by the library's ``progress(label, done, total)``.

On a terminal: rich bars with elapsed time and ETA, one per label. Elsewhere (CI logs, ``nohup``):
a plain line per label at each quarter, so long runs still show that they move.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class ProgressBars:
    """Use as a context manager; ``enabled=False`` prints nothing at all."""

    def __init__(self, *, enabled: bool = True, live: bool | None = None) -> None:
        self.enabled = enabled
        self.live = sys.stderr.isatty() if live is None else live
        self._progress = Progress(
            TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=Console(stderr=True), disable=not (enabled and self.live), transient=False,
        )
        self._tasks: dict[str, Any] = {}
        self._started: dict[str, float] = {}
        self._quarter: dict[str, int] = {}

    def __enter__(self) -> "ProgressBars":
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)

    def __call__(self, label: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.live:
            if label not in self._tasks:
                self._tasks[label] = self._progress.add_task(label, total=total)
            self._progress.update(self._tasks[label], completed=done, total=total)
            return
        start = self._started.setdefault(label, time.monotonic())
        quarter = 4 * done // max(1, total)
        if quarter > self._quarter.get(label, 0):
            self._quarter[label] = quarter
            print(f"{label}: {done}/{total} ({time.monotonic() - start:.0f} s)", file=sys.stderr, flush=True)
