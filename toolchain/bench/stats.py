"""Latency statistics: percentiles as numpy's default (linear interpolation between order statistics)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PERCENTILES = (50, 90, 95, 99)


def percentile(values: Sequence[float] | np.ndarray, q: float) -> float:
    """The ``q``-th percentile with linear interpolation: rank ``q/100 * (n-1)`` between sorted values."""
    data = np.sort(np.asarray(values, dtype=np.float64))
    if data.size == 0:
        return float("nan")
    rank = q / 100.0 * (data.size - 1)
    lo = int(np.floor(rank))
    hi = min(lo + 1, data.size - 1)
    return float(data[lo] + (data[hi] - data[lo]) * (rank - lo))


def summarize(values_ms: Sequence[float] | np.ndarray) -> dict[str, float | int | None]:
    """``count, mean, p50, p90, p95, p99, max`` (ms, rounded to microseconds); None values when empty."""
    data = np.asarray(values_ms, dtype=np.float64)
    if data.size == 0:
        return {"count": 0, "mean": None, **{f"p{q}": None for q in PERCENTILES}, "max": None}
    out: dict[str, float | int | None] = {"count": int(data.size), "mean": round(float(data.mean()), 3)}
    for q in PERCENTILES:
        out[f"p{q}"] = round(percentile(data, q), 3)
    out["max"] = round(float(data.max()), 3)
    return out
