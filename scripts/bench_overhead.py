"""Pipeline overhead A/B: the same artifact and source with the hand-over settings off and on, in one session.

Usage: python scripts/bench_overhead.py WORKSPACE ARTIFACT SOURCE [--rounds 2] [--duration 8]
Variants: "defaults of CPython" (5 ms switch interval, plain timed waits), "switch interval 0.5 ms", and
"switch interval + yield loop" (what the pipeline does). Prints e2e p50/p99, overhead and CPU per run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import toolchain.runtime.pipeline as pipeline  # noqa: E402
from toolchain.bench.run import BenchConfig, run_bench  # noqa: E402
from toolchain.workspace import Workspace  # noqa: E402

VARIANTS = {"cpython-defaults": (0.005, 0.0), "switch-0.5ms": (0.0005, 0.0), "switch+yield (shipped)": (0.0005, 0.0015)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("workspace")
    parser.add_argument("artifact")
    parser.add_argument("source")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=8.0)
    args = parser.parse_args()
    shipped = (pipeline.SWITCH_INTERVAL_S, pipeline.SPIN_S)
    with Workspace(Path(args.workspace)) as ws:
        for round_ in range(args.rounds):
            for name, (interval, spin) in VARIANTS.items():
                pipeline.SWITCH_INTERVAL_S, pipeline.SPIN_S = interval, spin
                report = run_bench(ws, BenchConfig(artifact=args.artifact, sources=(args.source,), duration_s=args.duration,
                                                   warmup_s=1.0, loop=True, record=False))
                print(f"round {round_ + 1} {name:24s} e2e p50 {report['e2e_ms']['p50']:.2f} p99 {report['e2e_ms']['p99']:.2f} ms, "
                      f"overhead {100 * report['overhead']['fraction']:.1f}%, CPU {report['cpu_percent']:.0f}%", flush=True)
    pipeline.SWITCH_INTERVAL_S, pipeline.SPIN_S = shipped
    return 0


if __name__ == "__main__":
    sys.exit(main())
