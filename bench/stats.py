"""Summaries of timed samples that say only what the samples can show.

A percentile is reported only when at least one sample lies above it: p99 needs 100 samples, p95 needs 20 (in
general 1 / (1 - share)). With fewer, the highest sample is all there is, and it is called the maximum.
"""

from __future__ import annotations

import math
import statistics


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile: the sample below which ``share`` of the others lie."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def samples_for(share: float) -> int:
    """How many samples a percentile needs before one of them lies above it."""
    return math.ceil(round(1 / (1 - share), 9))


def tail(values: list[float], share: float = 0.99) -> tuple[str, float]:
    """``("p99", value)`` with enough samples, else ``("max", the highest sample)``."""
    if len(values) >= samples_for(share):
        return f"p{share * 100:g}", percentile(values, share)
    return "max", max(values)


def median(values: list[float]) -> float:
    return statistics.median(values)
