import math

import numpy as np
import pytest

from toolchain.bench.stats import percentile, summarize


def test_percentiles_interpolate_between_order_statistics() -> None:
    values = [10, 1, 9, 2, 8, 3, 7, 4, 6, 5]  # 1..10, shuffled
    assert percentile(values, 50) == pytest.approx(5.5)
    assert percentile(values, 90) == pytest.approx(9.1)  # rank 8.1 between 9 and 10
    assert percentile(values, 99) == pytest.approx(9.91)
    assert percentile(values, 0) == 1 and percentile(values, 100) == 10
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


def test_percentile_matches_numpy_default_on_random_data() -> None:
    data = np.random.default_rng(1).lognormal(1.0, 0.7, 1001)
    for q in (50, 90, 95, 99):
        assert percentile(data, q) == pytest.approx(float(np.percentile(data, q)))


def test_summarize_reports_every_percentile_and_max() -> None:
    s = summarize(np.arange(1, 101, dtype=float))  # 1..100 ms
    assert s == {"count": 100, "mean": 50.5, "p50": 50.5, "p90": 90.1, "p95": 95.05, "p99": 99.01, "max": 100.0}
    empty = summarize([])
    assert empty["count"] == 0 and empty["p99"] is None
