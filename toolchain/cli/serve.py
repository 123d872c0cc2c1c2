"""``toolchain serve``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from toolchain.cli.output import app, console, emit, json_option
from toolchain.errors import UsageError

credentials_option = click.option(
    "--credentials", type=click.Path(dir_okay=False, path_type=Path), default=None, envvar="TOOLCHAIN_CAMERA_CREDENTIALS",
    help="JSON (or TOML) file of camera credentials by camera name (--source NAME=URL); keeps passwords off the "
         "command line (env TOOLCHAIN_CAMERA_CREDENTIALS).")
"""``--credentials FILE`` of ``serve`` and ``bench``: one option, one meaning."""


def vehicle_options(*, lines_required: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--line``, ``--anchor``, ``--detector`` and ``--detector-class``: one definition for ``count`` and ``serve``."""
    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed((
            click.option("--line", "lines", multiple=True, required=lines_required, metavar="[CAMERA/]NAME=x1,y1,x2,y2[:DIR]",
                         help="A counting line in frame pixels (of CAMERA only, with the prefix); DIR (up, down, left, "
                              "right) counts one direction only. Repeatable."),
            click.option("--anchor", type=click.Choice(["centre", "bottom"]), default="centre", show_default=True,
                         help="The point of a vehicle's box judged against lines: its centre, or its bottom centre "
                              "(DeepStream's)."),
            click.option("--detector", default="motion", show_default=True, metavar="motion|ONNX",
                         help="How vehicles are found: motion on a fixed camera, or a detector ONNX (YOLOv8 or SSD "
                              "outputs)."),
            click.option("--detector-class", "detector_classes", type=int, multiple=True,
                         help="With --detector ONNX: only these class ids are vehicles (repeatable; default: all)."),
        )):
            command = option(command)
        return command
    return decorate


def publish_settings(url: str | None, unit: str | None, spool_dir: Path | None, interval_s: float, max_bytes: int,
                     max_age_s: float) -> dict[str, Any]:
    """``ServeConfig``'s publish, unit and spool_dir from the ``--publish`` options (nothing without ``--publish``)."""
    if not url:
        return {}
    import socket

    from toolchain.publish.config import parse_publish_url
    from toolchain.serve.publishing import CONTAINER_SPOOL_DIR

    if spool_dir is None:
        spool_dir = Path(CONTAINER_SPOOL_DIR)
        if not spool_dir.is_dir():
            spool_dir = Path.home() / ".local" / "state" / "toolchain" / "spool"
    return {"publish": parse_publish_url(url, interval_s=interval_s, max_bytes=max_bytes, max_age_s=max_age_s),
            "unit": unit or socket.gethostname(), "spool_dir": spool_dir}


def vehicle_config(lines: tuple[str, ...], anchor: str, detector: str, detector_classes: tuple[int, ...]) -> Any:
    """The :class:`~toolchain.runtime.vehicles.VehicleConfig` of the ``vehicle_options``."""
    from toolchain.runtime.vehicles import VehicleConfig

    parsed = [VehicleConfig.parse_line(text) for text in lines]
    return VehicleConfig(lines=tuple(line for camera, line in parsed if not camera),
                         camera_lines=tuple((camera, line) for camera, line in parsed if camera),
                         anchor=anchor, finder=detector, detector_classes=detector_classes)


@click.command()
@click.argument("artifact")
@click.option("--source", "sources", multiple=True, required=True, metavar="[NAME=]URL",
              help="A camera: rtsp://..., a video file, /dev/videoN, an image directory or synthetic. Repeat per camera.")
@click.option("--target", default=None, help="Resolve ARTIFACT (e.g. MODEL@ALIAS) to the build for this target.")
@click.option("--loop", is_flag=True, help="Replay video files from the start when they end.")
@click.option("--events", default="-", show_default=True,
              help="JSON-lines event file (appended, rotated by size), or - for stdout.")
@click.option("--events-max-bytes", type=click.IntRange(min=1), default=50 * 1024 * 1024, show_default=True,
              help="Rotate the events file at this size.")
@click.option("--events-keep", type=click.IntRange(min=0), default=3, show_default=True,
              help="Rotated event files kept (FILE.1 ... FILE.N).")
@credentials_option
@click.option("--host", default="127.0.0.1", show_default=True, envvar="TOOLCHAIN_SERVE_HOST",
              help="Address of /healthz and /metrics: the unit's LAN address (or 0.0.0.0) to let a scraper in "
                   "(env TOOLCHAIN_SERVE_HOST).")
@click.option("--port", type=int, default=8080, show_default=True, envvar="TOOLCHAIN_SERVE_PORT",
              help="Port of /healthz and /metrics (env TOOLCHAIN_SERVE_PORT).")
@click.option("--stale-after", "stale_s", type=float, default=15.0, show_default=True,
              help="Seconds without a frame after which a camera counts as down.")
@click.option("--require", type=click.Choice(["any", "all", "none"]), default="any", show_default=True,
              help="Cameras that must be up for /healthz to answer 200.")
@click.option("--threads", type=int, default=0, show_default=True, help="Inference threads (0: backend default).")
@click.option("--max-batch", type=int, default=0, show_default=True, help="Largest batch across cameras (0: one per camera).")
@click.option("--reconnect-min", type=float, default=0.5, show_default=True, help="First reconnect delay (s).")
@click.option("--reconnect-max", type=float, default=30.0, show_default=True, help="Longest reconnect delay (s).")
@click.option("--duration", "duration_s", type=float, default=None, help="Stop after this many seconds (default: SIGTERM).")
@vehicle_options(lines_required=False)
@click.option("--publish", "publish_url", default=None, envvar="TOOLCHAIN_PUBLISH", metavar="mqtt[s]://HOST[:PORT]/PREFIX",
              help="Also publish every crossing, per-interval totals and (rate limited) per-frame events to this MQTT "
                   "broker, QoS 1, through an on-disk spool that keeps them across link cuts and restarts. The "
                   "login and a private CA go in --credentials' broker table, never in the URL.")
@click.option("--unit", default=None, envvar="TOOLCHAIN_UNIT", metavar="NAME",
              help="This unit's id in MQTT topics, messages and client id (default: the host name).")
@click.option("--spool", "spool_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              envvar="TOOLCHAIN_SPOOL_DIR",
              help="Directory of the publishing spool (default: /var/lib/toolchain/spool where it exists, as in a "
                   "deployed unit, else ~/.local/state/toolchain/spool).")
@click.option("--publish-interval", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Seconds per interval-totals message (counts per camera, line, direction and class, zeros too).")
@click.option("--spool-max-bytes", type=click.IntRange(min=4096), default=64 << 20, show_default=True,
              help="Bound of the unsent messages; past it the oldest crossing messages are evicted first, counted in "
                   "/metrics and /healthz.")
@click.option("--spool-max-age", type=click.FloatRange(min=60), default=7 * 86400.0, show_default=True,
              help="Seconds an unsent message is kept at most.")
@json_option
@click.pass_context
def serve(ctx: click.Context, artifact: str, sources: tuple[str, ...], target: str | None, loop: bool, events: str,
          events_max_bytes: int, events_keep: int, credentials: Path | None, host: str, port: int, stale_s: float, require: str, threads: int, max_batch: int, reconnect_min: float,
          reconnect_max: float, duration_s: float | None, lines: tuple[str, ...], anchor: str, detector: str,
          detector_classes: tuple[int, ...], publish_url: str | None, unit: str | None, spool_dir: Path | None,
          publish_interval: float, spool_max_bytes: int, spool_max_age: float) -> None:
    """Count and classify vehicles on camera streams with ARTIFACT: the roadside service.

    \b
    ARTIFACT is the bundle directory `toolchain package` puts in the image (/opt/toolchain/model), or on a
    workstation a registry reference to a build (id prefix, NAME, or MODEL@ALIAS with --target).
    With --line, each vehicle is found, followed, classified on crops of it and counted on the lines it
    crosses: one event per crossing (camera, line, direction, class, score, track, frame, time) and
    toolchain_vehicles_total in /metrics. Without --line, one event per frame (camera, time, label, score).
    Events go to --events; GET /healthz (200 or 503) and /metrics (Prometheus)
    on --host:--port (loopback by default). Camera passwords belong in --credentials FILE, keyed by the
    camera's NAME (--source NAME=rtsp://host/path), never in the URL on the command line. A camera that drops is reconnected with backoff; SIGTERM stops cleanly (exit 0).
    With --publish, the events also go to an MQTT broker through an on-disk spool (see README "Publishing counts").
    """
    from toolchain.serve.reconnect import Backoff
    from toolchain.serve.service import ServeConfig, load_model, serve as run_serve

    if app(ctx).json and events == "-":
        raise UsageError("--json prints one document on stdout, so events cannot go there too: pass --events FILE")
    config = ServeConfig(sources=sources, loop=loop, events=events, events_max_bytes=events_max_bytes,
                         events_keep=events_keep, credentials=credentials, host=host, port=port, stale_s=stale_s, require=require,
                         threads=threads, max_batch=max_batch, backoff=Backoff(initial_s=reconnect_min, max_s=reconnect_max),
                         duration_s=duration_s,
                         vehicles=vehicle_config(lines, anchor, detector, detector_classes) if lines else None,
                         **publish_settings(publish_url, unit, spool_dir, publish_interval, spool_max_bytes, spool_max_age))
    # In the image ARTIFACT is the bundle directory, and the workspace modules are not shipped: never ask there.
    registry = not Path(artifact).is_dir() and app(ctx).has_registry()
    model = load_model(artifact, open_workspace=app(ctx).open_workspace if registry else None, target=target)

    def ready(bound: int) -> None:
        console.print(f"serving {escape(model.info.get('model', artifact))} ({model.backend}, {model.info.get('target', '')}) "
                      f"on {len(sources)} camera(s); http://{host}:{bound}/healthz and /metrics")

    result = run_serve(model, config, on_ready=ready)

    def render(out: Console) -> None:
        out.print(f"stopped ({result.stopped_by}) after {result.seconds:.1f} s: {result.frames} frames classified")
        for stream in result.streams:
            out.print(f"  {escape(stream['name'])}: {stream['status']} {escape(stream.get('error') or '')}")

    emit(ctx, result.to_json(), render)
