"""``toolchain bench``: latency of an artifact on frame streams, stage by stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from toolchain.cli.output import app, emit, json_option
from toolchain.serve.options import credentials_option, vehicle_config, vehicle_options
from toolchain.errors import UsageError


@click.command()
@click.argument("artifacts", nargs=-1, required=True)
@click.option("--source", "sources", multiple=True, metavar="[NAME=]URL",
              help="Video file, rtsp/http URL, image directory, camera (/dev/video0) or synthetic[:WxH][@FPS]; repeat for "
                   "several streams. NAME= names a camera, as serve does: its password goes in --credentials FILE.")
@credentials_option
@click.option("--streams", type=click.IntRange(min=1), default=1, show_default=True, help="Run one --source as N streams.")
@click.option("--pace", type=click.Choice(["realtime", "max"]), default="realtime", show_default=True,
              help="realtime: frames at the source fps, oldest dropped when behind; max: throughput.")
@click.option("--runner", type=click.Choice(["auto", "onnxruntime", "onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt",
                                             "torch", "torch-cuda"]), default="auto", show_default=True)
@click.option("--duration", type=float, default=10.0, show_default=True, help="Measured seconds (after the warm-up).")
@click.option("--warmup", type=float, default=2.0, show_default=True, help="Seconds run but not measured.")
@click.option("--budget-ms", type=float, default=None, help="Deadline per frame (default: the target's latency budget, else one frame interval).")
@click.option("--max-batch", type=click.IntRange(min=0), default=0, help="Largest batch across streams (0: the number of streams).")
@click.option("--max-wait-ms", type=float, default=0.0, show_default=True, help="Wait this long to fill a batch.")
@click.option("--queue", type=click.IntRange(min=1), default=2, show_default=True, help="Frames a stream may hold before the oldest is dropped.")
@click.option("--roi", default=None, help="Region of interest X,Y,W,H (pixels) cropped before the resize.")
@click.option("--fps", type=float, default=None, help="Frame rate of image directories (default 15).")
@click.option("--loop", is_flag=True, help="Replay files and directories from the start when they end.")
@click.option("--pure", is_flag=True, help="Inference alone on a fixed input (like trtexec): no decode, no preprocessing.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Batch of the --pure input.")
@click.option("--threads", type=click.IntRange(min=0), default=0, help="Runner threads (0: the backend's default).")
@click.option("--plots", "plots_dir", default=None, help="Directory for the PNG plots (default: a temp dir; they are also stored in the registry).")
@click.option("--compare", is_flag=True, help="Bench every ARTIFACT and print one table (size, accuracy, inference ms, e2e p99, fps).")
@click.option("--no-record", is_flag=True, help="Do not record the benchmark in the registry.")
@click.option("--aligned", is_flag=True,
              help="Release every stream's frames at the same instants (worst case, genlocked cameras); default: "
                   "streams offset by a fraction of a frame, as free-running cameras are.")
@click.option("--full-decode", is_flag=True,
              help="Decode full-size RGB frames and resize in numpy (bit-exact preprocessing) instead of letting the "
                   "decoder scale to the model's input.")
@click.option("--on", "on", default=None, metavar="DOCKER_HOST",
              help="Run the benchmark on this unit's Docker engine, inside the image `package` built for the build's target.")
@click.option("--unit", default=None, help="Run it on this unit of --fleet (its engine URL).")
@click.option("--fleet", type=click.Path(dir_okay=False, path_type=Path), default=None, help="fleet.toml naming --unit.")
@click.option("--image", default=None, help="With --on/--unit: the runtime image to use (default: the packaged one).")
@click.option("--insecure", is_flag=True, help="Allow a plain, unencrypted tcp:// engine URL (closed test networks).")
@vehicle_options(lines_required=False)
@json_option
@click.pass_context
def bench(ctx: click.Context, artifacts: tuple[str, ...], sources: tuple[str, ...], streams: int, pace: str, runner: str,
          duration: float, warmup: float, budget_ms: float | None, max_batch: int, max_wait_ms: float, queue: int,
          roi: str | None, fps: float | None, loop: bool, pure: bool, batch: int, threads: int, plots_dir: str | None,
          compare: bool, no_record: bool, aligned: bool, full_decode: bool, on: str | None, unit: str | None, fleet: Path | None, image: str | None,
          insecure: bool, credentials: Path | None, lines: tuple[str, ...], anchor: str, detector: str,
          detector_classes: tuple[int, ...], find_every: int) -> None:
    """Will ARTIFACT keep up with these cameras on this device? Measures the whole path of every frame:
    decode -> preprocess -> batch -> infer -> postprocess -> sink, with p50/p90/p95/p99/max per stage
    and end to end, throughput, dropped frames, deadline misses, CPU use and a real-time verdict.

    \b
    With --line it runs the vehicle pipeline `serve --line` runs: decode -> find -> follow -> count ->
    crop -> classify (crops batched across streams) -> sink, timed per stage, and adds the crossings
    counted, vehicles per second, event latency (crossing frame's arrival to its event, p50/p95/p99) and
    crops classified per second.

    ARTIFACT: a build (`toolchain build`), an ONNX artifact, a registered model (torch runner) or a
    file path. With --compare, several ARTIFACTs. Each run is recorded as a `benchmark` linked to the
    artifact, with the device it ran on.

    \b
    --on DOCKER_HOST (or --unit NAME --fleet FILE) runs it on a roadside unit, in the runtime image
    `package` built for the build's target: the same code `serve` runs there. Sources are as the unit
    sees them (a camera URL, a local file sent along, or synthetic). The unit's facts are read inside
    the container (architecture, CPU, memory, L4T, TensorRT, power mode); a run under emulation
    (qemu-user) is marked emulated and gets no real-time verdict.

    \b
    Camera passwords belong in --credentials FILE, keyed by the camera's NAME (--source NAME=rtsp://host/path),
    as for `serve`, never in the URL on the command line; with --on the file reaches the benchmark's container
    as it reaches a unit's service (a file only the service user can read).
    """
    from toolchain.bench.run import BenchConfig, compare as compare_runs, run_bench

    if len(artifacts) > 1 and not compare:
        raise UsageError("several ARTIFACTs need --compare")
    vehicles = vehicle_config(lines, anchor, detector, detector_classes, find_every)

    def config(artifact: str) -> BenchConfig:
        return BenchConfig(artifact=artifact, sources=sources, streams=streams, pace=pace, runner=runner,
                           duration_s=duration, warmup_s=warmup, budget_ms=budget_ms, max_batch=max_batch,
                           max_wait_ms=max_wait_ms, queue=queue, roi=roi, fps=fps, loop=loop, pure=pure, batch=batch,
                           threads=threads, plots_dir=plots_dir, record=not no_record, scaled_decode=not full_decode,
                           aligned=aligned, credentials=credentials, vehicles=vehicles)

    where = _where(on, unit, fleet)
    if where is not None and compare:
        raise UsageError("--compare runs on this machine; bench one ARTIFACT with --on")
    with app(ctx).open_workspace() as workspace:
        if where is not None:
            from toolchain.bench.remote import run_bench_on

            report = run_bench_on(workspace, config(artifacts[0]), where, image=image, insecure=insecure)
            emit(ctx, report, lambda out: _render(out, report))
            return
        if compare:
            payload = compare_runs(workspace, [config(a) for a in artifacts])
            emit(ctx, payload, lambda out: _render_compare(out, payload))
            return
        report = run_bench(workspace, config(artifacts[0]))
    emit(ctx, report, lambda out: _render(out, report))


def _where(on: str | None, unit: str | None, fleet: Path | None) -> str | None:
    """The engine URL of --on, or of --unit in --fleet; None to run here."""
    if unit is None:
        if fleet is not None:
            raise UsageError("--fleet names units: pass --unit NAME with it")
        return on
    if on is not None:
        raise UsageError("give --on URL or --unit NAME --fleet FILE, not both")
    if fleet is None:
        raise UsageError("--unit needs --fleet FILE (the fleet.toml that names it)")
    from toolchain.deploy.fleet import load_fleet

    return load_fleet(fleet).unit(unit).url


def _fmt(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _render(out: Console, report: dict[str, Any]) -> None:
    where = f" on {escape(report['where'])}" + (" [yellow](emulated)[/yellow]" if report.get("emulated") else "") \
        if report.get("where") else ""
    table = Table(title=f"{report['artifact']} on {report['runner']} ({report['device']['runner_device']}){where}, "
                        f"{report['mode']}, pace {report['pace']}")
    for column in ("stage", "p50", "p90", "p95", "p99", "max", "share of e2e p50"):
        table.add_column(column, justify="right" if column != "stage" else "left")
    shares = report.get("stage_share", {})
    for stage, s in report["stage_ms"].items():
        table.add_row(stage, *(_fmt(s[k]) for k in ("p50", "p90", "p95", "p99", "max")),
                      f"{shares[stage]:.0%}" if shares.get(stage) is not None else "")
    e = report["e2e_ms"]
    table.add_row("[bold]end to end[/bold]", *(_fmt(e[k]) for k in ("p50", "p90", "p95", "p99", "max")), "")
    out.print(table)
    extra = ""
    if "overhead" in report and report["overhead"]["fraction"] is not None:
        extra = (f", pipeline overhead {report['overhead']['fraction']:.0%} of e2e p50 (frames waiting, measured per frame: "
                 f"{report['overhead']['wait_fraction']:.0%})")
    out.print(f"{report['fps']:.1f} frames/s, {report['dropped']} dropped, {report['deadline_misses']} deadline misses "
              f"(budget {report['budget_ms']:g} ms), CPU {report['cpu_percent']:.0f}% of one core{extra}")
    if "vehicles" in report:
        _render_vehicles(out, report["vehicles"])
    for state in report.get("stream_states", []):
        if state["status"] not in ("ended", "stopped"):
            out.print(f"[yellow]stream {escape(state['name'])}: {state['status']}[/yellow] {escape(state['error'])}")
    colour = "green" if report["realtime"] else "yellow" if report["realtime"] is None else "red"
    out.print(f"[bold {colour}]{escape(report['verdict'])}[/bold {colour}]")
    for name, path in report.get("plots", {}).items():
        out.print(f"{name}: {escape(path)}")
    if report.get("benchmark"):
        out.print(f"recorded as benchmark {report['benchmark'][:12]}")


def _render_vehicles(out: Console, v: dict[str, Any]) -> None:
    lat = v["event_latency_ms"]
    out.print(f"{v['crossings']} crossings measured ({v['per_second']:.2f} vehicles/s; {v['counted']} counted in the whole "
              f"run), event latency p50 {_fmt(lat['p50'])} / p95 {_fmt(lat['p95'])} / p99 {_fmt(lat['p99'])} ms; "
              f"{v['crops']['classified']} crops classified ({v['crops']['per_second']:.1f}/s, "
              f"{v['classify_batches']['count']} batches); {v['boxes_per_frame']:.2f} boxes, "
              f"{v['tracks_per_frame']:.2f} tracks per frame")
    for line, directions in v["by_line"].items():
        counts = ", ".join(f"{direction} " + " ".join(f"{cls} {n}" for cls, n in sorted(classes.items()))
                           for direction, classes in sorted(directions.items()))
        out.print(f"  line {escape(line)}: {escape(counts)}")


def _render_compare(out: Console, payload: dict[str, Any]) -> None:
    table = Table(title="bench --compare")
    for column in ("artifact", "kind", "runner", "size MB", "test accuracy", "inference ms (p50, b=1)", "e2e p99 ms",
                   "fps", "real-time"):
        table.add_column(column)
    for row in payload["compare"]:
        table.add_row(row["artifact"], row["kind"], row["runner"], _fmt(row["size_mb"], 3), _fmt(row["accuracy"], 3),
                      _fmt(row["infer_ms_p50"], 3), _fmt(row["e2e_ms_p99"]), _fmt(row["fps"], 1),
                      "yes" if row["realtime"] else "no")
    out.print(table)
