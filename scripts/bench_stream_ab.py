"""What each streaming change buys: one run of `bench` per variant, N streams of one clip, same session.

Variants: the old path (full-size RGB + numpy resize, streams aligned, ONNX Runtime threads spinning), then
each change of issue 13 added in turn, then the shipped pipeline with the full decode. Prints a Markdown
table (BENCHMARKS.md, "Many streams").

Usage: python scripts/bench_stream_ab.py WORKSPACE ARTIFACT CLIP [STREAMS=16] [--duration 8]
       python scripts/bench_stream_ab.py --make-clip OUT.mp4 [SOURCE]   (the real motorway clip re-encoded
           as 640x352 H.264 at 30 fps, each real frame once; SOURCE defaults to ../shared/data/video/...)
"""

from __future__ import annotations

import argparse
import sys
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "video" / "highway-320x240-15fps.avi"
VARIANTS = (
    ("all off (old path: full decode, aligned, ORT spinning)", {"scaled_decode": False, "aligned": True}, True),
    ("+ scaled decode", {"scaled_decode": True, "aligned": True}, True),
    ("+ ORT spinning off", {"scaled_decode": True, "aligned": True}, False),
    ("+ staggered streams (shipped)", {"scaled_decode": True, "aligned": False}, False),
    ("shipped but full decode", {"scaled_decode": False, "aligned": False}, False),
)


def make_clip(out: Path, source: Path) -> None:
    import av

    with av.open(str(source)) as src, av.open(str(out), "w") as dst:
        stream = dst.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 640, 352, "yuv420p"
        stream.options = {"crf": "23"}
        for n, frame in enumerate(src.decode(video=0)):
            scaled = frame.reformat(width=640, height=352, format="yuv420p", interpolation="BICUBIC")
            scaled.pts, scaled.time_base = n, Fraction(1, 30)
            for packet in stream.encode(scaled):
                dst.mux(packet)
        for packet in stream.encode():
            dst.mux(packet)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("args", nargs="*")
    parser.add_argument("--make-clip", default=None)
    parser.add_argument("--duration", type=float, default=8.0)
    options = parser.parse_args()
    if options.make_clip:
        make_clip(Path(options.make_clip), Path(options.args[0]) if options.args else REAL)
        return 0
    if len(options.args) < 3:
        parser.error("WORKSPACE ARTIFACT CLIP [STREAMS] are needed")
    workspace, artifact, clip = options.args[:3]
    streams = int(options.args[3]) if len(options.args) > 3 else 16
    import toolchain.runtime.runners as runners
    from toolchain.bench.run import BenchConfig, run_bench
    from toolchain.workspace import Workspace

    original = runners.OnnxRuntimeRunner.__init__
    print("| variant | e2e p50 / p99 ms | fps | dropped | misses | CPU | real-time |\n|---|---|---|---|---|---|---|")
    for name, switches, spinning in VARIANTS:
        def init(self, *args, _spinning=spinning, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            kwargs["spinning"] = _spinning
            original(self, *args, **kwargs)

        runners.OnnxRuntimeRunner.__init__ = init  # the one switch with no bench option
        with Workspace(Path(workspace)) as ws:
            r = run_bench(ws, BenchConfig(artifact=artifact, sources=(clip,), streams=streams, loop=True,
                                          duration_s=options.duration, warmup_s=2, record=False, budget_ms=33,
                                          **switches))
        print(f"| {name} | {r['e2e_ms']['p50']:.1f} / {r['e2e_ms']['p99']:.1f} | {r['fps']:.0f} | {r['dropped']} | "
              f"{r['deadline_misses']} | {r['cpu_percent']:.0f}% | {'yes' if r['realtime'] else 'no'} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
