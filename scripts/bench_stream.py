"""Streaming latency sweep: `toolchain bench ARTIFACT --source S --streams N --loop` for N in --streams
(default 1, 2, 4, ... up to --max-streams, stopping at the first run that is not real-time); one line per N
(e2e p50/p99, fps, drops, misses, CPU, fps as a share of the decode+resize limit) and the JSON reports.

Before the sweep it measures, in the same run on the same machine, the limits of the clip itself on one
core: decode only (PyAV, one decoder thread) and decode + colour conversion + resize to the model's input
in libswscale (what the scaled-decode path does per frame); the machine's limit is that times its cores.

With ``--rtsp`` the streams are live RTSP cameras instead: GStreamer's RTSP server (``scripts/rtsp_server``)
serves the --source file (an H.264 MP4, e.g. from ``toolchain synth video``) as N camera paths, looping at
the file's frame rate, and the bench reads N of them (``camK=rtsp://...``). Each line then adds the slowest
and fastest camera's frames/s: the claim that every camera keeps its rate and p99 stays under one frame
interval (the default budget) is checked here, on a quiet machine, not in the test suite. Give it a
warm-up of a few seconds (--warmup 3): cameras opened one after another first deliver a burst of the frames
buffered meanwhile.

Usage: python scripts/bench_stream.py --workspace WS --artifact REF --source FILE|synthetic:640x352@30
           [--budget-ms 33] [--duration 10] [--max-streams 32] [--streams 8,16,24,32] [--out DIR]
           [--threads T] [--size 128] [--full-decode] [--rtsp]
  e.g. 8 cameras of a 320x176 15 fps clip:  toolchain synth video cam.mp4 --fps 15 --size 320x176 &&
       python scripts/bench_stream.py --workspace WS --artifact REF --source cam.mp4 --rtsp --streams 8 --warmup 3
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
    parser.add_argument("--streams", default=None, help="Comma-separated stream counts (default 1,2,4,... to --max-streams).")
    parser.add_argument("--size", type=int, default=128, help="Model input side for the decode+resize limit.")
    parser.add_argument("--full-decode", action="store_true", help="Bench the full-frame decode + numpy resize path.")
    parser.add_argument("--aligned", action="store_true", help="All streams' frames at the same instants (worst case).")
    parser.add_argument("--no-stop", action="store_true", help="Run every count even after one is not real-time.")
    parser.add_argument("--rtsp", action="store_true",
                        help="Serve --source (H.264 MP4) as live RTSP cameras (scripts/rtsp_server) and bench those.")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {os.getloadavg()}", file=sys.stderr)
    limit = None
    if not args.source.startswith("synthetic"):
        decode, scaled = decode_limits(args.source, args.size)
        cores = os.cpu_count() or 1
        limit = scaled * cores
        print(f"limits of {args.source} on one core: decode only {decode:.0f} frames/s, decode + swscale to "
              f"{args.size}x{args.size} RGB {scaled:.0f} frames/s; machine ({cores} cores): {limit:.0f} frames/s", flush=True)
    counts = [int(n) for n in args.streams.split(",")] if args.streams else \
        sorted({1, 2, *range(4, args.max_streams + 1, 4), args.max_streams})
    cameras = start_cameras(args.source, max(counts)) if args.rtsp else None
    try:
        return sweep(args, counts, out, limit, cameras)
    finally:
        if cameras is not None:
            cameras.terminate()
            cameras.wait(10)


def start_cameras(source: str, n: int) -> subprocess.Popen[str]:
    """``scripts/rtsp_server`` serving ``source`` as cam0..cam{n-1}; its ``urls`` are in ``.urls`` once it is ready."""
    root = Path(__file__).resolve().parent
    server = subprocess.Popen([str(root / "rtsp_server"), "--exit-with-stdin", *(f"cam{k}={source}" for k in range(n))],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = server.stdout.readline() if server.stdout else ""
    if not line:
        server.wait(10)
        raise SystemExit(f"scripts/rtsp_server did not start (exit {server.returncode}); see its message above")
    server.urls = json.loads(line)["urls"]  # type: ignore[attr-defined]
    print(f"{n} RTSP cameras serving {source}", file=sys.stderr)
    return server


def sweep(args: argparse.Namespace, counts: list[int], out: Path, limit: float | None,
          cameras: subprocess.Popen[str] | None) -> int:
    sustained = 0
    for n in counts:
        if cameras is not None:  # n live cameras, each its own stream
            urls = cameras.urls  # type: ignore[attr-defined]
            sources = [arg for k in range(n) for arg in ("--source", f"cam{k}={urls[f'cam{k}']}")]
        else:
            sources = ["--source", args.source, "--streams", str(n), "--loop"]
        cmd = [sys.executable, "-m", "toolchain", "--workspace", args.workspace, "--json", "bench", args.artifact,
               *sources, "--duration", str(args.duration), "--warmup",
               str(args.warmup), "--plots", str(out / f"plots-{n}"), "--threads", str(args.threads)]
        if args.full_decode:
            cmd.append("--full-decode")
        if args.aligned:
            cmd.append("--aligned")
        if args.budget_ms:
            cmd += ["--budget-ms", str(args.budget_ms)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return done.returncode
        report = json.loads(done.stdout)
        (out / f"streams-{n}.json").write_text(json.dumps(report, indent=2))
        e2e, st = report["e2e_ms"], report["stage_ms"]
        per_camera = [s["frames"] / report["measured_seconds"] for s in report["stream_states"]]
        print(f"streams={n} e2e p50={e2e['p50']:.2f} p99={e2e['p99']:.2f} ms, fps={report['fps']:.1f}, dropped={report['dropped']}"
              f", misses={report['deadline_misses']}, overhead={report['overhead']['fraction']:.1%} (wait {report['overhead']['wait_fraction']:.1%}), cpu={report['cpu_percent']}%"
              f", p50 decode/pre/infer={st['decode']['p50']:.2f}/{st['preprocess']['p50']:.2f}/{st['infer']['p50']:.2f} ms"
              f", realtime={report['realtime']}"
              + (f", share of decode+resize limit={report['fps'] / limit:.0%}" if limit else "")
              + (f", per camera {min(per_camera):.1f}-{max(per_camera):.1f} fps" if cameras is not None else ""), flush=True)
        if report["realtime"]:
            sustained = max(sustained, n)
        elif not args.no_stop:
            break
    print(f"sustained real-time streams: {sustained}; load average after: {os.getloadavg()}")
    return 0


def decode_limits(path: str, size: int, seconds: float = 3.0) -> tuple[float, float]:
    """Frames/s of decoding ``path`` on one thread, and of decoding + libswscale to size x size RGB (looped)."""
    import time

    import av
    from av.video.reformatter import VideoReformatter

    def rate(scale: bool) -> float:
        frames, started = 0, time.perf_counter()
        reformatter = VideoReformatter()
        while time.perf_counter() - started < seconds:
            with av.open(path) as container:
                stream = container.streams.video[0]
                stream.thread_count = 1
                for frame in container.decode(stream):
                    if scale:
                        reformatter.reformat(frame, width=size, height=size, format="rgb24",
                                             interpolation="BILINEAR").to_ndarray()
                    frames += 1
        return frames / (time.perf_counter() - started)

    return rate(False), rate(True)


if __name__ == "__main__":
    sys.exit(main())
