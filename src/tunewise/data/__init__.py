"""Loading examples, freezing splits, and checking the data.

Three steps, each a public function:

- :func:`read_records` turns one JSONL, CSV or Parquet file into ``(line, record)`` pairs, with
  one-sentence errors that name the file and line.
- :func:`load_splits` builds :class:`Example` objects for train / dev / test from a task spec,
  carves a stratified dev set when none is given, applies ``test_limit``, and hashes the data.
  Every random choice is a hash of (data hash, seed, example id), so splits depend only on the
  data and the seed, never on row order or process state.
- :func:`check_data` is pure: duplicates, train/test leakage (exact and near), label inventory,
  imbalance and a data-volume assessment, returned as :class:`DataChecks`.

Out of scope: the task file itself (``task.py``), rendering prompts from examples (strategies),
and what to do about the warnings (``advise.py`` and the report).
"""

from __future__ import annotations

from .checks import check_data, normalize_text, volume_assessment
from .examples import DataChecks, Example, Splits
from .reading import read_records
from .splits import load_splits

__all__ = [
    "Example",
    "Splits",
    "DataChecks",
    "read_records",
    "load_splits",
    "check_data",
    "normalize_text",
    "volume_assessment",
]
