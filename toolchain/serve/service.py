"""``toolchain serve``: cameras -> pipeline -> JSON-lines events, with /healthz, /metrics, reconnects, SIGTERM.

The runtime pipeline (:class:`toolchain.runtime.pipeline.Pipeline`) does the work: one thread per camera
decodes and preprocesses, the calling thread batches across cameras and infers. ``serve`` adds what a
service on a roadside unit needs around it: cameras wrapped in :class:`ReconnectingSource`, an
:class:`EventSink` that writes one event per frame and feeds the metrics, the HTTP server, and a stop
event set by SIGTERM/SIGINT that ends every camera stream so the pipeline drains and returns.

The pipeline keeps every *measured* frame in memory (it is built for benchmarks); a service runs for
months, so ``serve`` starts it with the measurement window beyond the run (nothing is retained) and
counts frames in its own sink instead.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from toolchain.errors import MissingEnvironmentError, UsageError
from toolchain.redaction import scrub
from toolchain.runtime.compat import frozen_config
from toolchain.runtime.pipeline import Pipeline, PipelineConfig
from toolchain.runtime.preprocess import PreprocessConfig, Preprocessor
from toolchain.runtime.runners import BaseRunner, OnnxRuntimeRunner, TensorRTRunner
from toolchain.runtime.sources import FrameSource, camera_name, open_source
from toolchain.runtime.vehicles import VehicleConfig, make_vehicle_pipeline
from toolchain.serve.bundle import ServingModel
from toolchain.publish.config import PublishConfig
from toolchain.serve.credentials import CameraCredential, load_broker_credentials, load_credentials
from toolchain.serve.events import (
    CrossingSink,
    DEFAULT_KEEP,
    DEFAULT_MAX_BYTES,
    EventSink,
    RotatingFile,
)
from toolchain.serve.healthcheck import publish_endpoint
from toolchain.serve.http import HttpServer, ServiceState
from toolchain.serve.publishing import UnitPublishing
from toolchain.serve.reconnect import Backoff, ReconnectingSource

FOREVER_S = 10 * 365 * 86400.0
REQUIRE = ("any", "all", "none")


@frozen_config
class ServeConfig:
    """Options of ``toolchain serve``.

    Attributes:
        sources: ``URL`` or ``NAME=URL`` per camera (files, rtsp://..., /dev/videoN, synthetic).
        loop: Replay file sources from the start when they end (keeps a test container running).
        events: Where events go: a file path (appended, one JSON object per line) or ``-`` for stdout.
        events_max_bytes, events_keep: An events file rotates at this size, keeping this many old files.
        credentials: File of camera credentials by camera name (see :mod:`toolchain.serve.credentials`).
        host, port: HTTP address of /healthz and /metrics (port 0: any free port). The default is the
            loopback address: serving the unit's network is an explicit choice (its LAN address or 0.0.0.0).
        stale_s: A camera with no frame for this long is down.
        require: Cameras that must be up for /healthz to answer 200: any, all or none.
        threads: Inference threads (0: the backend's default).
        max_batch: Largest batch across cameras (0: one frame per camera).
        backoff: Camera reconnect delays.
        duration_s: Stop after this long (None: until SIGTERM); for tests and soak runs.
        vehicles: The vehicle pipeline (find, follow, classify crops, count on lines; one event per crossing),
            or None for one event per frame. ``serve --line`` turns it on.
        publish: Publish to an MQTT broker (``serve --publish``; :mod:`toolchain.serve.publishing`), or None.
            The broker's login comes from ``credentials`` (its ``broker`` table).
        unit: The unit's id in topics and messages (``serve --unit``; default: the host name).
        spool_dir: Where the publishing spool lives (a unit: its spool volume at
            :data:`~toolchain.serve.publishing.CONTAINER_SPOOL_DIR`).
    """

    sources: tuple[str, ...]
    loop: bool = False
    events: str = "-"
    events_max_bytes: int = DEFAULT_MAX_BYTES
    events_keep: int = DEFAULT_KEEP
    credentials: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    stale_s: float = 15.0
    require: str = "any"
    threads: int = 0
    max_batch: int = 0
    backoff: Backoff = Backoff()
    duration_s: float | None = None
    vehicles: VehicleConfig | None = None
    publish: PublishConfig | None = None
    unit: str = ""
    spool_dir: Path | None = None

    def __post_init__(self) -> None:
        if not self.sources:
            raise UsageError("serve needs at least one --source (a camera URL, a video file, or synthetic)")
        if self.require not in REQUIRE:
            raise UsageError(f"--require must be one of {', '.join(REQUIRE)}")
        if not 0 <= self.port <= 65535:
            raise UsageError(f"--port {self.port} is not a TCP port")
        if self.events_max_bytes <= 0 or self.events_keep < 0:
            raise UsageError("--events-max-bytes must be > 0 and --events-keep >= 0")
        if self.stale_s <= 0 or (self.duration_s is not None and self.duration_s <= 0):
            raise UsageError("--stale-after and --duration must be positive (seconds)")
        names = [camera_name(spec, i)[0] for i, spec in enumerate(self.sources)]
        if len(set(names)) != len(names):
            raise UsageError(f"two --source entries have the same camera name ({', '.join(names)}); name them NAME=URL")
        if self.publish is not None and (not self.unit or self.spool_dir is None):
            raise UsageError("publishing needs the unit's id and a spool directory (serve --unit and --spool)")
        unknown = sorted({camera for camera, _ in (self.vehicles.camera_lines if self.vehicles else ())} - set(names))
        if unknown:
            raise UsageError(f"--line names camera(s) {', '.join(unknown)}, which no --source has; cameras are "
                             f"{', '.join(names)} (name them NAME=URL)")


def with_credentials(specs: list[tuple[str, str]], credentials: dict[str, CameraCredential]) -> list[str]:
    """The URL each camera is opened with: its ``--source`` URL with its credential applied, if it has one.

    Raises:
        UsageError: the credentials name a camera that no ``--source NAME=URL`` names.
    """
    names = {name for name, _ in specs}
    unknown = sorted(set(credentials) - names)
    if unknown:
        raise UsageError(f"the credentials file names camera(s) {', '.join(unknown)} that no --source names; name each "
                         "camera --source NAME=URL with the names the credentials file uses")
    return [credentials[name].apply(url) if name in credentials else url for name, url in specs]


def camera_urls(sources: Sequence[str], credentials: Path | None) -> list[tuple[str, str]]:
    """``(name, URL to open)`` per ``--source``: named as ``serve`` names cameras (``NAME=URL``), each camera's
    credential from the ``credentials`` file applied (``serve``, ``bench`` and ``bench --on`` share this).

    The returned URLs may carry secrets: open streams with them, never print or record them.

    Raises:
        InputNotFoundError / BadInputError: the credentials file is missing or malformed.
        UsageError: it names a camera that no ``NAME=URL`` source names.
    """
    specs = [camera_name(spec, i) for i, spec in enumerate(sources)]
    urls = with_credentials(specs, load_credentials(credentials))
    return [(name, url) for (name, _), url in zip(specs, urls)]


def open_cameras(sources: Sequence[str], credentials: Path | None, *, fps: float | None = None,
                 loop: bool = False) -> list[FrameSource]:
    """The frame sources of ``bench`` (here or in a unit's container): each ``--source`` opened with its
    credential applied (:func:`camera_urls`); a named one (``NAME=URL``) is reported under its name."""
    opened = []
    for i, (spec, (name, url)) in enumerate(zip(sources, camera_urls(sources, credentials))):
        source = open_source(url, index=i, fps=fps, loop=loop)
        if camera_name(spec, i)[1] != spec:  # NAME=URL: the name, never the URL (it may now hold a secret)
            source.name = name
        opened.append(source)
    return opened


@frozen_config
class ServeResult:
    """How a serve run ended."""

    frames: int
    events_by_camera: dict[str, dict[str, int]]
    reconnects: dict[str, int]
    streams: list[dict[str, Any]]
    seconds: float
    stopped_by: str

    def to_json(self) -> dict[str, Any]:
        return {"frames": self.frames, "events": self.events_by_camera, "reconnects": self.reconnects,
                "streams": self.streams, "seconds": round(self.seconds, 3), "stopped_by": self.stopped_by}


def make_runner(model: ServingModel, *, threads: int = 0) -> BaseRunner:
    """The runner for the bundle's backend (ONNX Runtime on CPU targets, TensorRT + pycuda on Jetson)."""
    if model.backend == "onnxruntime":
        return OnnxRuntimeRunner(model.engine, threads=threads)
    if model.backend == "tensorrt":
        return TensorRTRunner(model.engine, build=model.build)
    raise MissingEnvironmentError(f"this toolchain cannot serve a {model.backend!r} engine; use onnxruntime or tensorrt")


def serve(model: ServingModel, config: ServeConfig, *, stop: threading.Event | None = None,
          on_ready: Callable[[int], None] | None = None, install_signals: bool = True) -> ServeResult:
    """Serve ``model`` on ``config.sources`` until SIGTERM/SIGINT, ``stop``, ``duration_s``, or every file ends.

    Args:
        model: The engine and how to feed it.
        config: Sources, events, HTTP, health policy.
        stop: Set it to stop (tests, embedding); SIGTERM sets it too.
        on_ready: Called with the HTTP port once the model is loaded and the server listens.
        install_signals: Handle SIGTERM/SIGINT (only possible on the main thread).
    """
    stop = stop or threading.Event()
    cameras = camera_urls(config.sources, config.credentials)  # secrets live only in these URLs
    names = [name for name, _ in cameras]
    urls = [url for _, url in cameras]
    state = ServiceState(names, {k: v for k, v in model.info.items() if k in
                                 ("model", "build", "target", "precision", "backend", "artifact_sha256")},
                         stale_s=config.stale_s, require=config.require)
    stopped_by = ["end of streams"]

    def on_signal(signum: int, _frame: Any) -> None:
        stopped_by[0] = signal.Signals(signum).name
        state.stopping = True
        stop.set()

    previous: dict[int, Any] = {}
    started = time.monotonic()
    timer: threading.Timer | None = None
    server: HttpServer | None = None
    out: Any = None
    publishing: UnitPublishing | None = None
    close_out = config.events != "-"
    try:  # everything opened from here on is released in `finally`, whatever fails
        if install_signals and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, on_signal)
        if config.publish is not None:
            publishing = _start_publishing(config, names, model.classes)
            state.publishing = publishing.health
        server = _start_http(state, config)
        publish_endpoint(config.host, server.port)
        out = RotatingFile(Path(config.events), max_bytes=config.events_max_bytes,
                           keep=config.events_keep) if close_out else sys.stdout
        preprocess = Preprocessor(PreprocessConfig(size=model.size, layout=model.layout, mean=model.mean, std=model.std))

        def factory(url: str) -> Callable[[], FrameSource]:
            return lambda: open_source(url, loop=config.loop)

        sources = [ReconnectingSource(name, factory(url), stop=stop, backoff=config.backoff,
                                      on_connect=state.connected, on_error=state.disconnected)
                   for name, url in zip(names, urls)]
        with make_runner(model, threads=config.threads) as runner:
            state.model_ready = True
            if on_ready is not None:
                on_ready(server.port)
            if config.duration_s is not None:
                def expire() -> None:
                    stopped_by[0] = "duration"
                    stop.set()

                timer = threading.Timer(config.duration_s, expire)
                timer.daemon = True
                timer.start()
            pipeline_config = PipelineConfig(pace="realtime", duration_s=FOREVER_S, warmup_s=0.0, keep_frames=False,
                                             max_batch=config.max_batch, stall_s=config.stale_s)
            if config.vehicles is None:
                pipeline = Pipeline(sources, runner, preprocess, model.classes,
                                    EventSink(out, state, names, close_out=close_out, publishing=publishing),
                                    pipeline_config)
            else:
                streams, ledger = make_vehicle_pipeline(names, config.vehicles, preprocess)
                pipeline = Pipeline(sources, runner, preprocess, model.classes,
                                    CrossingSink(out, state, names, close_out=close_out, publishing=publishing),
                                    pipeline_config,
                                    vehicles=streams, ledger=ledger)
            result = pipeline.run()
    finally:
        state.stopping = True
        if timer is not None:
            timer.cancel()
        if server is not None:
            server.stop()
        if close_out and out is not None and not out.closed:
            out.close()  # the pipeline closes it through the sink, unless it failed before opening the sink
        if publishing is not None:
            state.publishing = None
            publishing.close()  # the last interval is spooled; what the broker has not acknowledged stays there
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if stopped_by[0] == "end of streams" and stop.is_set():
        stopped_by[0] = "stop requested"
    _, report = state.health()
    return ServeResult(
        frames=sum(c["frames"] for c in report["cameras"].values()),
        events_by_camera={name: dict(state.cameras[name].events) for name in names},
        reconnects={name: state.cameras[name].reconnects for name in names},
        streams=[{**s.to_json(), "error": scrub(s.error)} for s in result.streams], seconds=time.monotonic() - started, stopped_by=stopped_by[0],
    )


def _start_publishing(config: ServeConfig, names: Sequence[str], classes: Sequence[str]) -> UnitPublishing:
    """The spool, publisher and interval ticker for ``config.publish``; every line's both directions (or its one)
    of every camera are listed in each interval, zeros included."""
    assert config.publish is not None and config.spool_dir is not None
    keys = []
    if config.vehicles is not None:
        for camera in names:
            for line in config.vehicles.lines_for(camera):
                keys += [(camera, line.name, d) for d in line.counted]
    return UnitPublishing(config.publish, unit=config.unit, spool_dir=config.spool_dir,
                          credentials=load_broker_credentials(config.credentials), keys=keys,
                          classes=list(classes) if config.vehicles is not None else []).start()


def _start_http(state: ServiceState, config: ServeConfig) -> HttpServer:
    try:
        return HttpServer(state, host=config.host, port=config.port).start()
    except OSError as exc:
        raise MissingEnvironmentError(
            f"cannot serve /healthz and /metrics on {config.host} port {config.port}: {exc.strerror or exc}. Another "
            "process holds the port (with network host, another container too): pass a free --port (or "
            "TOOLCHAIN_SERVE_PORT), or a --host this machine has"
        ) from exc


def load_model(artifact: str, *, open_workspace: Callable[[], Any] | None = None,
               target: str | None = None) -> ServingModel:
    """A bundle directory (in the container), or a registry reference resolved in the workspace (workstation).

    Args:
        open_workspace: Opens the workspace (a context manager) where the global options say its registry is;
            None when there is none (a unit: only bundle directories).
    """
    from toolchain.serve.bundle import load_bundle, model_from_registry

    path = Path(artifact)
    if path.is_dir():
        return load_bundle(path)
    if open_workspace is None:
        raise UsageError(f"{artifact} is not a bundle directory and there is no workspace to resolve it in; pass the "
                         "directory `toolchain package` put in the image, or --workspace/--registry with the registry")
    with open_workspace() as workspace:
        return model_from_registry(workspace, artifact, target=target)
