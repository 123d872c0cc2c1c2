#!/usr/bin/env python3
"""How many real-time vehicle-pipeline streams hold when they run in K processes instead of one (issue 24).

Tests the diagnosis in BENCHMARKS.md ("Vehicle pipeline streams"): the streams' source threads spend most
of their time waiting to take the GIL back, so one process stops being real-time long before the cores are
busy. For each total stream count N and each group count K, it starts K ``toolchain bench`` processes at
once, each running N/K of the streams (the same clip, ``--loop``, paced in real time, the vehicle pipeline
with ``--line``), and reports whether every group held (p99 end to end within the budget and at most 1% of
frames dropped, as ``bench`` judges), the worst p99, drops, deadline misses and the CPU of all groups
together. K = 1 is today's single service; K > 1 is what a process per group of streams would give (each
group also runs its own classifier, which costs little here: a few crops a second per stream). A count
holds for K when one of ``--tries`` runs holds, as in ``bench_stream.py --vehicles``.

Each group is ``bench``'s own run (``run_bench``, the code ``toolchain bench --line`` runs) in a process of its
own; all groups start their pipelines at one agreed instant, so their warm-ups and measured windows coincide,
and none draws plots (that would load the CPU while another group still measures). Each group's streams are
offset by k/n of a frame as ``bench`` does; the groups are not offset from each other (a harsher case than one
process of N streams).

Usage: python scripts/bench_stream_groups.py --workspace WS --artifact REF --source CLIP.mp4
           [--line NAME=x1,y1,x2,y2] [--find-every 1] [--streams 6,8,10,12] [--groups 1,2]
           [--duration 5] [--warmup 3] [--budget-ms 33] [--tries 2] [--json OUT.json]
  e.g. python scripts/bench_stream_groups.py --workspace ws --artifact edgenet.onnx --source traffic.mp4 \\
           --find-every 2 --streams 6,8,10,12,16 --groups 1,2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
START_DELAY_S = 6.0
"""How far ahead the groups' common start is set: time for each process to import toolchain and open its workspace."""


def split(total: int, groups: int) -> list[int]:
    """``total`` streams in ``groups`` near-equal groups (the larger ones first)."""
    base, extra = divmod(total, groups)
    return [base + (1 if g < extra else 0) for g in range(groups) if base + (1 if g < extra else 0) > 0]


def run_groups(args: argparse.Namespace, sizes: list[int]) -> dict[str, Any]:
    """One try: ``len(sizes)`` bench processes at once; their reports and the verdict."""
    load = os.getloadavg()[0]
    start_at = time.time() + START_DELAY_S  # every group's pipeline starts at this instant
    settings = json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()})
    children = [subprocess.Popen([sys.executable, __file__, "--child", settings, str(n), str(start_at)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT) for n in sizes]
    reports = []
    for child in children:
        out, err = child.communicate(timeout=600)
        if child.returncode != 0:
            raise SystemExit(f"a group failed (exit {child.returncode}): {err[-2000:]}")
        reports.append(json.loads(out))
    return {
        "groups": sizes, "load_before": load, "realtime": all(r["realtime"] for r in reports),
        "p99_ms": max(r["e2e_ms"]["p99"] for r in reports), "p50_ms": max(r["e2e_ms"]["p50"] for r in reports),
        "dropped": sum(r["dropped"] for r in reports), "misses": sum(r["deadline_misses"] for r in reports),
        "cpu_percent": round(sum(r["cpu_percent"] for r in reports), 1),
        "fps": round(sum(r["fps"] for r in reports), 1),
        "crossings": sum(r["vehicles"]["crossings"] for r in reports),
    }


def child(settings: dict[str, Any], streams: int, start_at: float) -> int:
    """One group: ``bench``'s own run (``toolchain.bench.run.run_bench``) of ``streams`` streams, started at
    ``start_at``, its report as JSON on stdout. No plots: drawing them would load the CPU while the other groups
    may still be measuring."""
    sys.path.insert(0, str(ROOT))
    from toolchain.bench import run as bench_run
    from toolchain.runtime.geometry import Line
    from toolchain.runtime.vehicles import VehicleConfig
    from toolchain.workspace import Workspace

    bench_run.plots_from_arrays = lambda *a, **k: {}  # the report's numbers are unchanged
    vehicles = VehicleConfig(lines=(Line.parse(settings["line"]),), find_every=settings["find_every"])
    config = bench_run.BenchConfig(artifact=settings["artifact"], sources=(settings["source"],), streams=streams,
                                   loop=True, duration_s=settings["duration"], warmup_s=settings["warmup"],
                                   budget_ms=settings["budget_ms"], record=False, vehicles=vehicles)
    with Workspace(Path(settings["workspace"])) as workspace:
        time.sleep(max(0.0, start_at - time.time()))
        report = bench_run.run_bench(workspace, config)
    print(json.dumps(report))
    return 0


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        return child(json.loads(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--artifact", required=True)
    parser.add_argument("--source", required=True, help="a clip of moving traffic (toolchain synth video)")
    parser.add_argument("--line", default="mid=320,0,320,352")
    parser.add_argument("--find-every", type=int, default=1)
    parser.add_argument("--streams", default="6,8,10,12", help="total stream counts, comma-separated")
    parser.add_argument("--groups", default="1,2", help="process counts, comma-separated")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--budget-ms", type=float, default=33.0)
    parser.add_argument("--tries", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.workspace, args.artifact = str(Path(args.workspace).resolve()), args.artifact
    if Path(args.artifact).exists():
        args.artifact = str(Path(args.artifact).resolve())
    args.source = str(Path(args.source).resolve())
    results: list[dict[str, Any]] = []
    print(f"{os.cpu_count()} cores; find every {args.find_every}; load average before {os.getloadavg()}", flush=True)
    for total in (int(n) for n in args.streams.split(",")):
        for groups in (int(k) for k in args.groups.split(",")):
            for attempt in range(1, args.tries + 1):
                row = {"streams": total, "processes": groups, "try": attempt, **run_groups(args, split(total, groups))}
                results.append(row)
                print(f"streams={total} processes={groups} ({'+'.join(map(str, row['groups']))}) try={attempt} "
                      f"load={row['load_before']:.1f}: p50 {row['p50_ms']:.2f} / p99 {row['p99_ms']:.2f} ms (worst "
                      f"group), fps {row['fps']}, dropped {row['dropped']}, misses {row['misses']}, CPU "
                      f"{row['cpu_percent']}%, crossings {row['crossings']}, real-time {row['realtime']}", flush=True)
                if row["realtime"]:
                    break
    if args.json:
        args.json.write_text(json.dumps({"find_every": args.find_every, "rows": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
