"""Serving telemetry: the counters ``GET /metrics`` exposes, in the Prometheus text format (0.0.4), by hand.

Counters of requests by version, arm and HTTP status; a latency histogram by version and arm;
prompt and completion tokens by version; feedback received; and which version each alias names.
Thread-safe; ``render`` is what ``GET /metrics`` returns.

Out of scope: the request log (``requestlog.py``), which keeps every request rather than totals.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from collections.abc import Mapping

__all__ = ["Telemetry", "LATENCY_BUCKETS", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"


def _number(x: float) -> str:
    return repr(float(x)) if not float(x).is_integer() else str(int(x))


class Telemetry:
    """Totals since the server started."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, str, int]] = Counter()
        self._tokens: Counter[tuple[str, str]] = Counter()
        self._latency: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0] * (len(LATENCY_BUCKETS) + 2))
        self._feedback = 0

    def observe(self, *, version: str, arm: str, status: int, latency_s: float | None = None,
                prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        with self._lock:
            self._requests[(version, arm, status)] += 1
            self._tokens[(version, "prompt")] += prompt_tokens
            self._tokens[(version, "completion")] += completion_tokens
            if latency_s is not None:
                row = self._latency[(version, arm)]
                for i, bound in enumerate(LATENCY_BUCKETS):
                    if latency_s <= bound:
                        row[i] += 1  # cumulative counts are summed at render time
                        break
                row[-2] += latency_s
                row[-1] += 1

    def feedback(self) -> None:
        with self._lock:
            self._feedback += 1

    def render(self, aliases: Mapping[str, str] | None = None) -> str:
        with self._lock:
            lines = ["# HELP tunewise_requests_total Chat completion requests answered, by version, arm and status.",
                     "# TYPE tunewise_requests_total counter"]
            for (version, arm, status), n in sorted(self._requests.items()):
                lines.append(f"tunewise_requests_total{_labels(version=version, arm=arm, status=str(status))} {n}")
            lines += ["# HELP tunewise_request_latency_seconds Time to answer a request, by version and arm.",
                      "# TYPE tunewise_request_latency_seconds histogram"]
            for (version, arm), row in sorted(self._latency.items()):
                cumulative = 0.0
                for bound, n in zip(LATENCY_BUCKETS, row):
                    cumulative += n
                    lines.append(f"tunewise_request_latency_seconds_bucket"
                                 f"{_labels(version=version, arm=arm, le=_number(bound))} {_number(cumulative)}")
                lines.append(f"tunewise_request_latency_seconds_bucket{_labels(version=version, arm=arm, le='+Inf')} "
                             f"{_number(row[-1])}")
                lines.append(f"tunewise_request_latency_seconds_sum{_labels(version=version, arm=arm)} {row[-2]!r}")
                lines.append(f"tunewise_request_latency_seconds_count{_labels(version=version, arm=arm)} "
                             f"{_number(row[-1])}")
            lines += ["# HELP tunewise_tokens_total Prompt and completion tokens, by version.",
                      "# TYPE tunewise_tokens_total counter"]
            for (version, kind), n in sorted(self._tokens.items()):
                lines.append(f"tunewise_tokens_total{_labels(version=version, kind=kind)} {n}")
            lines += ["# HELP tunewise_feedback_total Feedback records received.",
                      "# TYPE tunewise_feedback_total counter", f"tunewise_feedback_total {self._feedback}"]
        lines += ["# HELP tunewise_alias_info The version each alias names (value 1).",
                  "# TYPE tunewise_alias_info gauge"]
        lines += [f"tunewise_alias_info{_labels(alias=a, version=v)} 1" for a, v in sorted((aliases or {}).items())]
        return "\n".join(lines) + "\n"
