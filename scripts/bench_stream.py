"""Streaming latency sweep: `toolchain bench ARTIFACT --source S --streams N` for N = 1, 2, ... until a run
is not real-time; prints one line per N (e2e p50/p99, fps, drops, overhead) and writes the JSON reports.

Usage: python scripts/bench_stream.py --workspace WS --artifact REF --source FILE|synthetic:640x352@30
           [--budget-ms 33] [--duration 10] [--max-streams 8] [--out DIR] [--threads T]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--artifact", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--budget-ms", type=float, default=None)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--max-streams", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", default="bench-out/stream")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sustained = 0
    print(f"load average before: {os.getloadavg()}", file=sys.stderr)
    for n in range(1, args.max_streams + 1):
        cmd = [sys.executable, "-m", "toolchain", "--workspace", args.workspace, "--json", "bench", args.artifact,
               "--source", args.source, "--streams", str(n), "--duration", str(args.duration), "--warmup",
               str(args.warmup), "--loop", "--plots", str(out / f"plots-{n}"), "--threads", str(args.threads)]
        if args.budget_ms:
            cmd += ["--budget-ms", str(args.budget_ms)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return done.returncode
        report = json.loads(done.stdout)
        (out / f"streams-{n}.json").write_text(json.dumps(report, indent=2))
        e2e, st = report["e2e_ms"], report["stage_ms"]
        print(f"streams={n} e2e p50={e2e['p50']:.2f} p99={e2e['p99']:.2f} ms, fps={report['fps']:.1f}, dropped={report['dropped']}"
              f", misses={report['deadline_misses']}, overhead={report['overhead']['fraction']:.1%} (wait {report['overhead']['wait_fraction']:.1%}), cpu={report['cpu_percent']}%"
              f", p50 decode/pre/infer={st['decode']['p50']:.2f}/{st['preprocess']['p50']:.2f}/{st['infer']['p50']:.2f} ms"
              f", realtime={report['realtime']}", flush=True)
        if not report["realtime"]:
            break
        sustained = n
    print(f"sustained real-time streams: {sustained}; load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
