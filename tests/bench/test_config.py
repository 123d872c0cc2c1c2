"""BenchConfig refuses numbers that would run forever, pace frames backwards, or break the JSON record."""

from __future__ import annotations

import pytest

from toolchain.bench.run import BenchConfig
from toolchain.errors import UsageError


@pytest.mark.parametrize("fields", [
    {"fps": 0.0}, {"fps": -5.0}, {"fps": float("nan")}, {"fps": float("inf")},
    {"budget_ms": float("nan")}, {"duration_s": float("inf")},
])
def test_bench_config_refuses_unusable_numbers(fields: dict) -> None:
    with pytest.raises(UsageError):
        BenchConfig(artifact="m", sources=("synthetic",), **fields)


def test_bench_config_accepts_a_plain_frame_rate() -> None:
    assert BenchConfig(artifact="m", sources=("synthetic",), fps=12.5).fps == 12.5
