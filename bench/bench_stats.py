"""Helpers every benchmark shares: percentiles and a description of the machine."""

from __future__ import annotations

import os
import platform
import statistics
from typing import Any


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }


def summary(values: list[float]) -> dict[str, float]:
    """Median, p90, p99 and min of timings in ms, rounded for reading."""
    return {
        "median": round(statistics.median(values), 4),
        "p90": round(percentile(values, 90), 4),
        "p99": round(percentile(values, 99), 4),
        "min": round(min(values), 4),
    }
