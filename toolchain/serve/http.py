"""Service state, its Prometheus text exposition and the ``/healthz`` + ``/metrics`` HTTP server.

The server is the standard library's ``ThreadingHTTPServer`` in a daemon thread: nothing to install on
the unit. :class:`ServiceState` is written by the inference thread (one event per frame) and the
camera threads (reconnects, errors) and read by HTTP handler threads, under one lock.
"""

from __future__ import annotations

import bisect
import json
import math
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# End-to-end latency buckets (seconds): a 15 fps camera leaves 66 ms per frame.
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.033, 0.05, 0.066, 0.1, 0.2, 0.5, 1.0, 2.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class CameraState:
    """Counters of one camera."""

    name: str
    frames: int = 0
    events: dict[str, int] = field(default_factory=dict)
    reconnects: int = 0
    errors: int = 0
    connected: bool = False
    last_frame: float = 0.0  # time.time() of the last frame that reached the sink
    last_error: str = ""
    latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"


class ServiceState:
    """Everything ``/healthz`` and ``/metrics`` report.

    Args:
        cameras: Camera names, in ``--source`` order.
        info: Identity of the served model (model, build, target ...), exported as ``toolchain_serve_info``.
        stale_s: A camera with no frame for this long counts as down.
        require: ``any`` (healthy while one camera delivers), ``all``, or ``none`` (healthy once the
            model is loaded, cameras or not).
    """

    def __init__(self, cameras: list[str], info: dict[str, str], *, stale_s: float = 15.0, require: str = "any") -> None:
        self._lock = threading.Lock()
        self.cameras = {name: CameraState(name) for name in cameras}
        self.info = dict(info)
        self.stale_s = stale_s
        self.require = require
        self.started = time.time()
        self.model_ready = False
        self.stopping = False

    def frame(self, camera: str, label: str, score: float, latency_s: float) -> None:
        """One classified frame reached the sink."""
        with self._lock:
            state = self.cameras[camera]
            state.frames += 1
            state.events[label] = state.events.get(label, 0) + 1
            state.last_frame = time.time()
            state.connected = True
            state.latency_buckets[bisect.bisect_left(LATENCY_BUCKETS, latency_s)] += 1
            state.latency_sum += latency_s

    def connected(self, camera: str, reconnect: bool) -> None:
        with self._lock:
            state = self.cameras[camera]
            state.connected = True
            if reconnect:
                state.reconnects += 1

    def disconnected(self, camera: str, error: str) -> None:
        with self._lock:
            state = self.cameras[camera]
            state.connected = False
            state.errors += 1
            state.last_error = error

    def _camera_up(self, state: CameraState, now: float) -> bool:
        return state.connected and state.last_frame > 0 and now - state.last_frame <= self.stale_s

    def health(self) -> tuple[bool, dict[str, Any]]:
        """``(healthy, report)``."""
        now = time.time()
        with self._lock:
            cameras = {
                name: {"up": self._camera_up(s, now), "frames": s.frames, "reconnects": s.reconnects, "errors": s.errors,
                       "seconds_since_frame": round(now - s.last_frame, 3) if s.last_frame else None,
                       "last_error": s.last_error}
                for name, s in self.cameras.items()
            }
            ready, stopping = self.model_ready, self.stopping
        up = [c["up"] for c in cameras.values()]
        cameras_ok = {"any": any(up), "all": all(up), "none": True}[self.require]
        healthy = ready and not stopping and cameras_ok
        reason = ("stopping" if stopping else "model not loaded" if not ready
                  else "ok" if cameras_ok else f"no frame for {self.stale_s:g} s from {self.require} camera(s)")
        return healthy, {"healthy": healthy, "reason": reason, "model": self.info, "cameras": cameras,
                         "uptime_s": round(now - self.started, 3)}

    def prometheus(self) -> str:
        """The metrics in Prometheus text exposition format 0.0.4."""
        now = time.time()
        lines = [
            "# HELP toolchain_serve_info The model this service runs.",
            "# TYPE toolchain_serve_info gauge",
            f"toolchain_serve_info{_labels(**self.info)} 1",
            "# HELP toolchain_serve_start_time_seconds Unix time the service started.",
            "# TYPE toolchain_serve_start_time_seconds gauge",
            f"toolchain_serve_start_time_seconds {self.started:.3f}",
        ]
        healthy, _ = self.health()
        lines += ["# HELP toolchain_serve_healthy 1 while /healthz answers 200.", "# TYPE toolchain_serve_healthy gauge",
                  f"toolchain_serve_healthy {int(healthy)}"]
        with self._lock:
            cams = list(self.cameras.values())
            families: list[tuple[str, str, str, list[str]]] = [
                ("toolchain_frames_total", "counter", "Frames classified, per camera.",
                 [f"toolchain_frames_total{_labels(camera=c.name)} {c.frames}" for c in cams]),
                ("toolchain_events_total", "counter", "Events written, per camera and label.",
                 [f"toolchain_events_total{_labels(camera=c.name, label=label)} {n}"
                  for c in cams for label, n in sorted(c.events.items())]),
                ("toolchain_camera_up", "gauge", "1 while the camera delivers frames.",
                 [f"toolchain_camera_up{_labels(camera=c.name)} {int(self._camera_up(c, now))}" for c in cams]),
                ("toolchain_camera_reconnects_total", "counter", "Reconnections after a camera dropped.",
                 [f"toolchain_camera_reconnects_total{_labels(camera=c.name)} {c.reconnects}" for c in cams]),
                ("toolchain_camera_errors_total", "counter", "Camera failures (open errors, drops, decode errors).",
                 [f"toolchain_camera_errors_total{_labels(camera=c.name)} {c.errors}" for c in cams]),
                ("toolchain_camera_last_frame_timestamp_seconds", "gauge", "Unix time of the camera's last classified frame.",
                 [f"toolchain_camera_last_frame_timestamp_seconds{_labels(camera=c.name)} {c.last_frame:.3f}" for c in cams]),
            ]
            histogram = []
            for c in cams:
                total = 0
                for bound, count in zip((*LATENCY_BUCKETS, math.inf), c.latency_buckets):
                    total += count
                    le = "+Inf" if bound == math.inf else f"{bound:g}"
                    histogram.append(f"toolchain_frame_latency_seconds_bucket{_labels(camera=c.name, le=le)} {total}")
                histogram.append(f"toolchain_frame_latency_seconds_sum{_labels(camera=c.name)} {c.latency_sum:.6f}")
                histogram.append(f"toolchain_frame_latency_seconds_count{_labels(camera=c.name)} {total}")
        for name, kind, help_text, samples in families:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]
        lines += ["# HELP toolchain_frame_latency_seconds End-to-end latency per frame: arrival to event written.",
                  "# TYPE toolchain_frame_latency_seconds histogram", *histogram]
        return "\n".join(lines) + "\n"


class _Handler(BaseHTTPRequestHandler):
    state: ServiceState  # set on the subclass made per server
    server_version = "toolchain-serve"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            healthy, report = self.state.health()
            self._send(200 if healthy else 503, json.dumps(report).encode(), "application/json")
        elif path == "/metrics":
            self._send(200, self.state.prometheus().encode(), CONTENT_TYPE)
        else:
            self._send(404, b'{"error": "not found: use /healthz or /metrics"}', "application/json")

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - scrapes every few seconds; keep logs quiet
        return None


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True  # a restarted service rebinds at once (TIME_WAIT); set here, not on the stdlib class
    daemon_threads = True  # a scrape in flight never holds up a SIGTERM exit


class HttpServer:
    """``/healthz`` and ``/metrics`` on ``host:port`` in a daemon thread (port 0 picks a free one)."""

    def __init__(self, state: ServiceState, *, host: str = "0.0.0.0", port: int = 8080) -> None:
        handler = type("Handler", (_Handler,), {"state": state})
        self._server = _Server((host, port), handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="serve-http", daemon=True)

    def start(self) -> HttpServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering and close the socket (also when :meth:`start` never ran: ``shutdown`` would wait forever)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()
