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

With ``--vehicles`` it measures the vehicle pipeline (``bench --line``: decode -> find -> follow -> count ->
crop -> classify -> sink, the classifier run on crops of tracked vehicles, not on frames): how many real-time
streams of the clip hold (p99 end to end within the budget, at most 1% of frames dropped), for each finder
width in ``--motion-width`` (``MotionConfig.scale_width``: the default 320, or 160, cheaper) and each
``--find-every`` N (``VehicleConfig.find_every``: find on one frame in N; default 1, every frame). Without
--streams it searches: 1, 2, 4, ... until a count fails, then bisects; a count holds when one of --tries
runs (default 2) is real-time, so that a burst of other work on a shared machine does not decide it (every
try is printed and saved). First, in the same run, the decode limit: ``cores`` processes each decode the
clip on one thread (as a stream's source does), for decode alone, decode + conversion to full-size RGB
(what the vehicle pipeline's sources do: vehicles are cropped from the full frame) and decode + libswscale
to the finder's width, best of two interleaved rounds; streams that decode alone in real time are that
frames/s over the clip's fps. The result line gives the sustained streams as a share of the RGB decode
limit and of decode alone; ``OUT/vehicles-summary.json`` has it all.

  toolchain synth video traffic.mp4 --size 640x352 --fps 30 --seconds 20 &&
  python scripts/bench_stream.py --make-model edgenet.onnx &&
  python scripts/bench_stream.py --vehicles --workspace WS --artifact edgenet.onnx --source traffic.mp4 \
      --motion-width 320,160 --duration 5

(``--make-model`` writes the demo's ``edgenet`` architecture, untrained, as a dynamic-batch ONNX: the same
graph and cost as a trained one, for timing when no trained build is at hand; needs the ``train`` extra.)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workspace")
    parser.add_argument("--artifact")
    parser.add_argument("--source")
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
    parser.add_argument("--vehicles", action="store_true",
                        help="Bench the vehicle pipeline (bench --line) and search the real-time streams that hold.")
    parser.add_argument("--line", action="append", default=None,
                        help="With --vehicles: NAME=x1,y1,x2,y2 (default: a vertical line through the frame's middle).")
    parser.add_argument("--motion-width", default="320",
                        help="With --vehicles: finder widths (MotionConfig.scale_width) to measure, comma-separated.")
    parser.add_argument("--find-every", default="1",
                        help="With --vehicles: VehicleConfig.find_every values to measure (find on one frame in N), "
                             "comma-separated; each with each --motion-width.")
    parser.add_argument("--limit-seconds", type=float, default=3.0, help="Seconds per decode-limit measurement.")
    parser.add_argument("--tries", type=int, default=2,
                        help="With --vehicles: runs of a stream count before it is judged not to hold.")
    parser.add_argument("--make-model", metavar="OUT.onnx", default=None,
                        help="Write an untrained edgenet ONNX (dynamic batch, the toolchain's metadata) and exit.")
    args = parser.parse_args()
    if args.make_model:
        make_model(Path(args.make_model))
        return 0
    if not (args.workspace and args.artifact and args.source):
        parser.error("--workspace, --artifact and --source are required")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.vehicles:
        return vehicles_main(args, out)
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


# -- the vehicle pipeline -----------------------------------------------------------------------------------


def clip_info(path: str) -> tuple[int, int, float]:
    """``(width, height, fps)`` of a video file."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        return stream.codec_context.width, stream.codec_context.height, float(rate) if rate else 30.0


def _decode_worker(job: tuple[str, str, int, float]) -> float:
    """Frames/s of one process decoding ``path`` (looped) on one thread, for ``mode``: ``decode`` (the frames
    only), ``rgb`` (and converted to full-size RGB, as a vehicle stream's source does) or ``scaled`` (and
    converted + scaled by libswscale to ``width`` pixels wide)."""
    import time

    import av
    from av.video.reformatter import VideoReformatter

    path, mode, width, seconds = job
    frames, reformatter = 0, VideoReformatter()
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_count = 1
            height = round(stream.codec_context.height * width / stream.codec_context.width / 2) * 2
            for frame in container.decode(stream):
                if mode == "rgb":
                    reformatter.reformat(frame, format="rgb24").to_ndarray()
                elif mode == "scaled":
                    reformatter.reformat(frame, width=width, height=height, format="rgb24",
                                         interpolation="BILINEAR").to_ndarray()
                frames += 1
                if frames % 64 == 0 and time.perf_counter() - started >= seconds:
                    break
    return frames / (time.perf_counter() - started)


def parallel_decode_limits(path: str, widths: list[int], seconds: float, rounds: int = 2) -> dict[str, float]:
    """Frames/s the whole machine decodes ``path`` at: one process per core, each decoding on one thread; the
    modes interleaved over ``rounds`` and the best round kept (another job's burst on a shared machine is not
    the machine's limit)."""
    from concurrent.futures import ProcessPoolExecutor

    cores = os.cpu_count() or 1
    modes = [("decode", 0), ("rgb", 0), *(("scaled", w) for w in widths)]
    limits: dict[str, float] = {}
    with ProcessPoolExecutor(max_workers=cores) as pool:
        for _ in range(rounds):
            for mode, width in modes:
                rate = sum(pool.map(_decode_worker, [(path, mode, width, seconds)] * cores))
                key = mode if mode != "scaled" else f"scaled-{width}"
                limits[key] = max(limits.get(key, 0.0), rate)
    return limits


def vehicles_main(args: argparse.Namespace, out: Path) -> int:
    from toolchain.bench.run import BenchConfig, run_bench
    from toolchain.runtime.find import MotionConfig
    from toolchain.runtime.geometry import Line
    from toolchain.runtime.vehicles import VehicleConfig
    from toolchain.workspace import Workspace

    if args.source.startswith("synthetic") or not Path(args.source).is_file():
        raise SystemExit("--vehicles needs a video file of moving traffic (toolchain synth video OUT.mp4 --size 640x352)")
    width, height, fps = clip_info(args.source)
    widths = [int(w) for w in args.motion_width.split(",")]
    everies = [int(n) for n in args.find_every.split(",")]
    lines = tuple(Line.parse(text) for text in (args.line or [f"mid={width // 2},0,{width // 2},{height}"]))
    cores = os.cpu_count() or 1
    load_before = os.getloadavg()
    print(f"clip {args.source}: {width}x{height} at {fps:g} fps; lines {', '.join(l.spec() for l in lines)}; "
          f"{cores} cores; load average before: {load_before}", flush=True)
    limits = parallel_decode_limits(args.source, widths, args.limit_seconds)
    decode_streams = {mode: int(rate // fps) for mode, rate in limits.items()}
    print("decode limit (" + f"{cores} processes, one decoder thread each): " + ", ".join(
        f"{mode} {rate:.0f} frames/s = {decode_streams[mode]} streams" for mode, rate in limits.items()), flush=True)
    summary: dict[str, object] = {"clip": {"path": args.source, "width": width, "height": height, "fps": fps},
                                  "cores": cores, "lines": [l.spec() for l in lines], "decode_limit_fps": limits,
                                  "decode_limit_streams": decode_streams, "load_before": load_before, "runs": {}}
    results: dict[str, dict[int, list[dict]]] = {}
    with Workspace(Path(args.workspace)) as workspace:
        for scale, every in [(scale, every) for every in everies for scale in widths]:
            vehicles = VehicleConfig(lines=lines, motion=MotionConfig(scale_width=scale), find_every=every)
            key = f"{scale}" if every == 1 else f"{scale}-every{every}"  # a setting: finder width, find every N
            results[key] = {}

            def trial(n: int, key: str = key, vehicles: VehicleConfig = vehicles) -> bool:
                """Whether n streams hold: in any of --tries runs (a burst of other work on a shared machine
                fails one run; the pipeline that cannot keep up fails them all). Every try is printed."""
                for attempt in range(1, args.tries + 1):
                    config = BenchConfig(artifact=args.artifact, sources=(args.source,), streams=n, loop=True,
                                         duration_s=args.duration, warmup_s=args.warmup, budget_ms=args.budget_ms,
                                         threads=args.threads, aligned=args.aligned, record=False, vehicles=vehicles,
                                         plots_dir=str(out / f"plots-vehicles-{key}-{n}-{attempt}"))
                    load = os.getloadavg()[0]
                    report = run_bench(workspace, config)
                    report["load_before"] = load
                    (out / f"vehicles-{key}-streams-{n}-{attempt}.json").write_text(json.dumps(report, indent=2))
                    results[key].setdefault(n, []).append(report)
                    print(f"[try {attempt}, load {load:.1f}] " + vehicle_line(key, n, report, decode_streams["rgb"]),
                          flush=True)
                    if report["realtime"]:
                        return True
                return False

            counts = [int(n) for n in args.streams.split(",")] if args.streams else None
            sustained = sweep_counts(trial, counts, args.no_stop) if counts else search(trial, max(1, decode_streams["decode"]))
            share = sustained / decode_streams["rgb"] if decode_streams["rgb"] else 0.0
            summary["runs"][key] = {"sustained": sustained, "share_of_decode_rgb_limit": round(share, 3),
                                    "share_of_decode_only_limit": round(sustained / max(1, decode_streams["decode"]), 3),
                                    "finder_width": scale, "find_every": every, "tried": sorted(results[key])}
            print(f"finder width {scale}, find every {every}: {sustained} real-time {width}x{height} {fps:g} fps streams hold with the vehicle "
                  f"pipeline = {share:.0%} of the {decode_streams['rgb']} that decode (to RGB) alone in real time "
                  f"({sustained / max(1, decode_streams['decode']):.0%} of the {decode_streams['decode']} of decode only)",
                  flush=True)
    summary["load_after"] = os.getloadavg()
    (out / "vehicles-summary.json").write_text(json.dumps(summary, indent=2))
    print(f"load average after: {summary['load_after']}")
    return 0


def vehicle_line(setting: str, n: int, report: dict, decode_streams: int) -> str:
    e2e, st, v = report["e2e_ms"], report["stage_ms"], report["vehicles"]
    p50 = "/".join(f"{st[s]['p50']:.2f}" if st[s]["p50"] is not None else "-"
                   for s in ("decode", "find", "follow", "count", "crop", "classify"))
    lat = v["event_latency_ms"]
    return (f"setting={setting} streams={n} e2e p50={e2e['p50']:.2f} p99={e2e['p99']:.2f} ms, fps={report['fps']:.1f}, "
            f"dropped={report['dropped']}, misses={report['deadline_misses']}, cpu={report['cpu_percent']}%, "
            f"p50 decode/find/follow/count/crop/classify={p50} ms, crossings={v['crossings']} "
            f"({v['per_second']:.2f}/s), event latency p50/p99={lat['p50']}/{lat['p99']} ms, "
            f"crops/s={v['crops']['per_second']:.1f}, realtime={report['realtime']}"
            + (f", share of decode limit={n / decode_streams:.0%}" if decode_streams else ""))


def sweep_counts(trial: Callable[[int], bool], counts: list[int], no_stop: bool) -> int:
    sustained = 0
    for n in counts:
        if trial(n):
            sustained = max(sustained, n)
        elif not no_stop:
            break
    return sustained


def search(trial: Callable[[int], bool], ceiling: int) -> int:
    """The largest stream count that holds: 1, 2, 4, ... until one fails (or ``ceiling``), then bisect."""
    good, bad, n = 0, None, 1
    while bad is None:
        if trial(n):
            good = n
            if n >= ceiling:
                return n
            n = min(ceiling, n * 2)
        else:
            bad = n
    while bad - good > 1:
        n = (good + bad) // 2
        if trial(n):
            good = n
        else:
            bad = n
    return good


def make_model(out: Path) -> None:
    """The demo's ``edgenet`` recipe, untrained, as an ONNX with a dynamic batch and the metadata bench reads."""
    import json as _json
    import warnings

    import onnx
    import torch

    from toolchain.models.recipe import load_recipe
    from toolchain.models.zoo import build_model

    recipe = load_recipe("edgenet")
    torch.manual_seed(0)
    model = torch.nn.Sequential(build_model(recipe, 2), torch.nn.Softmax(dim=1)).eval()
    size = recipe.input_size
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter calls itself legacy; `toolchain export` uses it too
        torch.onnx.export(model, (torch.zeros(1, 3, size, size),), str(out), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["probabilities"],
                          dynamic_axes={"input": {0: "batch"}, "probabilities": {0: "batch"}})
    graph = onnx.load(str(out))
    for key, value in {"classes": _json.dumps(["car", "truck"]), "input_size": str(size),
                       "mean": _json.dumps(list(recipe.mean)), "std": _json.dumps(list(recipe.std)),
                       "input_layout": "float-nchw", "note": "untrained edgenet (scripts/bench_stream.py --make-model)"}.items():
        graph.metadata_props.add(key=key, value=value)
    onnx.save(graph, str(out))
    print(f"wrote {out} (edgenet, {size} px, untrained, dynamic batch)")


if __name__ == "__main__":
    sys.exit(main())
