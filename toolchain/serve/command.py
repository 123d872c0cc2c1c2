"""The ``serve`` command: its options and what runs it, one definition for both of its entry points.

``toolchain serve`` (the CLI registers this command: :mod:`toolchain.cli.serve`) and the roadside image's
``python3 -m toolchain.serve`` (:mod:`toolchain.serve.__main__`) run this same click command; it imports
nothing of the CLI (the image does not ship it) and reads what the CLI's global options said through
:mod:`toolchain.serve.context`.
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from toolchain.console import console
from toolchain.errors import UsageError
from toolchain.serve.context import emit, json_option, serve_context
from toolchain.serve.options import credentials_option, publish_settings, vehicle_config, vehicle_options


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
          detector_classes: tuple[int, ...], find_every: int, publish_url: str | None, unit: str | None, spool_dir: Path | None,
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

    settings = serve_context(ctx)  # the CLI's global options, or the image's (no workspace)
    if settings.json and events == "-":
        raise UsageError("--json prints one document on stdout, so events cannot go there too: pass --events FILE")
    config = ServeConfig(sources=sources, loop=loop, events=events, events_max_bytes=events_max_bytes,
                         events_keep=events_keep, credentials=credentials, host=host, port=port, stale_s=stale_s, require=require,
                         threads=threads, max_batch=max_batch, backoff=Backoff(initial_s=reconnect_min, max_s=reconnect_max),
                         duration_s=duration_s,
                         vehicles=vehicle_config(lines, anchor, detector, detector_classes, find_every),
                         **publish_settings(publish_url, unit, spool_dir, publish_interval, spool_max_bytes, spool_max_age))
    # In the image ARTIFACT is the bundle directory, and the workspace modules are not shipped: never ask there.
    registry = not Path(artifact).is_dir() and settings.has_registry()
    model = load_model(artifact, open_workspace=settings.open_workspace if registry else None, target=target)

    def ready(bound: int) -> None:
        console.print(f"serving {escape(model.info.get('model', artifact))} ({model.backend}, {model.info.get('target', '')}) "
                      f"on {len(sources)} camera(s); http://{host}:{bound}/healthz and /metrics")

    result = run_serve(model, config, on_ready=ready)

    def render(out: Console) -> None:
        out.print(f"stopped ({result.stopped_by}) after {result.seconds:.1f} s: {result.frames} frames classified")
        for stream in result.streams:
            out.print(f"  {escape(stream['name'])}: {stream['status']} {escape(stream.get('error') or '')}")

    emit(ctx, result.to_json(), render)
