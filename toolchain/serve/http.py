"""Service state, its Prometheus text exposition and the ``/healthz`` + ``/metrics`` HTTP server.

The server is a small single-threaded, non-blocking HTTP/1.0 server on :mod:`selectors` (standard
library only, Python 3.8+: nothing to install on the unit). A thread per connection, like the stdlib's
``ThreadingHTTPServer``, let 300 half-sent requests hold 300 threads; here one daemon thread serves
every connection, each connection has a deadline to deliver its request headers (and one to take the
response), the headers are capped in size, and the number of open connections is bounded: when full,
the connection that has waited longest without completing its request is closed to make room, so slow
clients can never lock out a health check or a scrape.

:class:`ServiceState` is written by the inference thread (one event per frame) and the camera threads
(reconnects, errors) and read by the HTTP thread, under one lock. Ages (a camera's time since its last
frame, uptime) are measured on a monotonic clock, so a wall-clock step (NTP, a manual ``date``) never
makes a dead camera read as up; the wall clock only gives the Unix timestamps ``/metrics`` exports.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

from toolchain.redaction import scrub

# End-to-end latency buckets (seconds): a 15 fps camera leaves 66 ms per frame.
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.033, 0.05, 0.066, 0.1, 0.2, 0.5, 1.0, 2.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_log = logging.getLogger(__name__)


@dataclass
class CameraState:
    """Counters of one camera."""

    name: str
    frames: int = 0
    events: dict[str, int] = field(default_factory=dict)
    reconnects: int = 0
    errors: int = 0
    connected: bool = False
    last_frame: float | None = None  # the state's monotonic clock at the last frame that reached the sink
    last_frame_unix: float = 0.0  # the wall clock then, only for the Prometheus timestamp
    last_error: str = ""
    latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0
    vehicles: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (line, direction, class) -> crossings


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"


def _age_ms(seconds: float) -> float:
    """An age in seconds to the millisecond, rounded up: a camera reported down for being older than
    ``--stale-after`` never shows an age equal to it (rounding to nearest turned 1.0004 s into 1.0)."""
    return math.ceil(seconds * 1000) / 1000


class ServiceState:
    """Everything ``/healthz`` and ``/metrics`` report.

    Args:
        cameras: Camera names, in ``--source`` order.
        info: Identity of the served model (model, build, target ...), exported as ``toolchain_serve_info``.
        stale_s: A camera with no frame for this long counts as down.
        require: ``any`` (healthy while one camera delivers), ``all``, or ``none`` (healthy once the
            model is loaded, cameras or not).
        clock: Seconds on a clock that never steps backwards (:func:`time.monotonic`); every age and the
            stale limit are measured on it. Tests pass a fake one.
        wall_clock: Unix time (:func:`time.time`), used only for the timestamps ``/metrics`` exports.
    """

    def __init__(self, cameras: list[str], info: dict[str, str], *, stale_s: float = 15.0, require: str = "any",
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._wall_clock = wall_clock
        self.cameras = {name: CameraState(name) for name in cameras}
        self.info = dict(info)
        self.stale_s = stale_s
        self.require = require
        self._started = clock()
        self.started_unix = wall_clock()
        self.model_ready = False
        self.stopping = False
        self.publishing: Callable[[], dict[str, Any]] | None = None
        """``serve --publish``: the publisher's health (``UnitPublishing.health``), reported under ``publish``.
        Publishing never makes the service unhealthy: counting goes on while the broker or the spool is down."""

    def frame(self, camera: str, label: str, score: float, latency_s: float) -> None:
        """One classified frame reached the sink."""
        with self._lock:
            state = self.cameras[camera]
            state.frames += 1
            if label:  # per-frame mode: one event per frame; the vehicle pipeline counts crossings instead
                state.events[label] = state.events.get(label, 0) + 1
            state.last_frame = self._clock()
            state.last_frame_unix = self._wall_clock()
            state.connected = True
            state.latency_buckets[bisect.bisect_left(LATENCY_BUCKETS, latency_s)] += 1
            state.latency_sum += latency_s

    def seen(self, camera: str, latency_s: float) -> None:
        """One frame of ``camera`` went through the vehicle pipeline (it counts for health and latency)."""
        self.frame(camera, "", 0.0, latency_s)

    def crossing(self, camera: str, line: str, direction: str, cls: str) -> None:
        """One vehicle of class ``cls`` crossed ``line`` of ``camera`` going ``direction``."""
        with self._lock:
            counts = self.cameras[camera].vehicles
            key = (line, direction, cls)
            counts[key] = counts.get(key, 0) + 1

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
            state.last_error = scrub(error)  # /healthz is served to the unit's network: no credential in it

    def _camera_up(self, state: CameraState, now: float) -> bool:
        return state.connected and state.last_frame is not None and now - state.last_frame <= self.stale_s

    def health(self) -> tuple[bool, dict[str, Any]]:
        """``(healthy, report)``."""
        now = self._clock()
        with self._lock:
            cameras = {
                name: {"up": self._camera_up(s, now), "frames": s.frames, "reconnects": s.reconnects, "errors": s.errors,
                       "seconds_since_frame": _age_ms(now - s.last_frame) if s.last_frame is not None else None,
                       "last_error": s.last_error}
                for name, s in self.cameras.items()
            }
            ready, stopping = self.model_ready, self.stopping
        up = [c["up"] for c in cameras.values()]
        cameras_ok = {"any": any(up), "all": all(up), "none": True}[self.require]
        healthy = ready and not stopping and cameras_ok
        reason = ("stopping" if stopping else "model not loaded" if not ready
                  else "ok" if cameras_ok else f"no frame for {self.stale_s:g} s from {self.require} camera(s)")
        report = {"healthy": healthy, "reason": reason, "model": self.info, "cameras": cameras,
                  "uptime_s": round(now - self._started, 3)}
        if self.publishing is not None:
            report["publish"] = self.publishing()
        return healthy, report

    def prometheus(self) -> str:
        """The metrics in Prometheus text exposition format 0.0.4."""
        now = self._clock()
        lines = [
            "# HELP toolchain_serve_info The model this service runs.",
            "# TYPE toolchain_serve_info gauge",
            f"toolchain_serve_info{_labels(**self.info)} 1",
            "# HELP toolchain_serve_start_time_seconds Unix time the service started.",
            "# TYPE toolchain_serve_start_time_seconds gauge",
            f"toolchain_serve_start_time_seconds {self.started_unix:.3f}",
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
                ("toolchain_vehicles_total", "counter", "Vehicles that crossed a line, per camera, line, direction and class.",
                 [f"toolchain_vehicles_total{_labels(camera=c.name, line=line, direction=direction, **{'class': cls})} {n}"
                  for c in cams for (line, direction, cls), n in sorted(c.vehicles.items())]),
                ("toolchain_camera_up", "gauge", "1 while the camera delivers frames.",
                 [f"toolchain_camera_up{_labels(camera=c.name)} {int(self._camera_up(c, now))}" for c in cams]),
                ("toolchain_camera_reconnects_total", "counter", "Reconnections after a camera dropped.",
                 [f"toolchain_camera_reconnects_total{_labels(camera=c.name)} {c.reconnects}" for c in cams]),
                ("toolchain_camera_errors_total", "counter", "Camera failures (open errors, drops, decode errors).",
                 [f"toolchain_camera_errors_total{_labels(camera=c.name)} {c.errors}" for c in cams]),
                ("toolchain_camera_last_frame_timestamp_seconds", "gauge", "Unix time of the camera's last classified frame.",
                 [f"toolchain_camera_last_frame_timestamp_seconds{_labels(camera=c.name)} {c.last_frame_unix:.3f}" for c in cams]),
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
        if self.publishing is not None:
            lines += _publish_metrics(self.publishing())
        return "\n".join(lines) + "\n"


def _publish_metrics(publish: dict[str, Any]) -> list[str]:
    """``serve --publish``'s spool and broker, in Prometheus text."""
    broker = _labels(broker=str(publish.get("broker", "")))
    oldest = publish.get("oldest_unsent_age_s")
    families: list[tuple[str, str, str, list[str]]] = [
        ("toolchain_publish_connected", "gauge", "1 while the MQTT broker connection is up.",
         [f"toolchain_publish_connected{broker} {int(bool(publish.get('connected')))}"]),
        ("toolchain_publish_spool_messages", "gauge", "Messages in the spool not yet acknowledged by the broker.",
         [f"toolchain_publish_spool_messages {int(publish.get('spool_depth') or 0)}"]),
        ("toolchain_publish_spool_bytes", "gauge", "Bytes of the unsent messages in the spool.",
         [f"toolchain_publish_spool_bytes {int(publish.get('spool_bytes') or 0)}"]),
        ("toolchain_publish_oldest_unsent_age_seconds", "gauge", "Age of the oldest unsent message (0: none).",
         [f"toolchain_publish_oldest_unsent_age_seconds {float(oldest or 0.0):.3f}"]),
        ("toolchain_publish_sent_total", "counter", "Messages the broker acknowledged (PUBACK).",
         [f"toolchain_publish_sent_total {int(publish.get('sent') or 0)}"]),
        ("toolchain_publish_evicted_total", "counter", "Messages evicted from the full or aged spool, per kind.",
         [f"toolchain_publish_evicted_total{_labels(kind=kind)} {n}"
          for kind, n in sorted((publish.get("evicted") or {}).items())]),
        ("toolchain_publish_lost_total", "counter", "Messages that could not be spooled (disk full, corrupt spool).",
         [f"toolchain_publish_lost_total {int(publish.get('lost') or 0)}"]),
    ]
    lines: list[str] = []
    for name, kind, help_text, samples in families:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]
    return lines


MAX_HEADER_BYTES = 8192  # request line + headers; a GET for /healthz or /metrics needs a few hundred
_RECV_BYTES = 4096
_BACKLOG = 1024  # handshakes the kernel completes ahead of accept(); an overflow drops a SYN, a 1 s retry for the client
_LINGER_S = 1.0
_LINGER_BYTES = 256 * 1024  # a POST body to drop before closing; the linger deadline bounds it too
_ACCEPT_PAUSE_S = 0.1

# Where a connection is in its one request/response exchange (HTTP/1.0: the server closes after answering).
_READING, _WRITING, _LINGERING = "reading", "writing", "lingering"


def _response(code: int, body: bytes, content_type: str, extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A complete HTTP/1.0 response: status line, headers, body."""
    lines = [f"HTTP/1.0 {code} {HTTPStatus(code).phrase}", "Server: toolchain-serve", f"Date: {formatdate(usegmt=True)}",
             f"Content-Type: {content_type}", f"Content-Length: {len(body)}", "Connection: close",
             *(f"{name}: {value}" for name, value in extra)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _error(code: int, message: str, extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    return _response(code, json.dumps({"error": message}).encode(), "application/json", extra)


def _header_end(data: bytearray) -> int:
    """Length of the header block up to and including its blank line, or -1 while it is incomplete.

    Bare ``\\n`` line ends are accepted too, as the stdlib server did.
    """
    ends = [i + 4 for i in (data.find(b"\r\n\r\n"),) if i >= 0] + [i + 2 for i in (data.find(b"\n\n"),) if i >= 0]
    return min(ends) if ends else -1


def _answer(state: ServiceState, head: bytes) -> bytes:
    """The response to one request, given its header block (only the request line matters: GET has no body).

    Args:
        state: What ``/healthz`` and ``/metrics`` report.
        head: The request line and headers, up to the blank line.

    Returns:
        The complete response.
    """
    request_line = head.lstrip(b"\r\n").split(b"\n", 1)[0].rstrip(b"\r").decode("latin-1")
    parts = request_line.split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return _error(400, "bad request line: expected GET /healthz HTTP/1.1")
    method, target, _version = parts
    if method != "GET":
        return _error(405, "method not allowed: use GET", (("Allow", "GET"),))
    path = target.split("?", 1)[0]
    if path == "/healthz":
        healthy, report = state.health()
        return _response(200 if healthy else 503, json.dumps(report, separators=(",", ":")).encode(), "application/json")
    if path == "/metrics":
        return _response(200, state.prometheus().encode(), CONTENT_TYPE)
    return _response(404, b'{"error": "not found: use /healthz or /metrics"}', "application/json")


class _Connection:
    """One accepted socket and its progress through a single request/response exchange."""

    __slots__ = ("sock", "fd", "phase", "deadline", "events", "inbox", "outbox", "drained")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()  # the key in the server's table; fileno() is -1 once closed
        self.phase = _READING
        self.deadline = deadline  # time.monotonic() by which this phase must be over, else the connection is closed
        self.events = selectors.EVENT_READ
        self.inbox = bytearray()
        self.outbox = memoryview(b"")
        self.drained = 0


class HttpServer:
    """``/healthz`` and ``/metrics`` on ``host:port``, served by one daemon thread (port 0 picks a free one).

    One thread multiplexes every connection with :mod:`selectors`, so slow or malicious clients cost a
    file descriptor each, never a thread, and at most ``max_connections`` of them are open at once.
    Each connection must deliver its request headers (at most :data:`MAX_HEADER_BYTES`) within
    ``request_timeout_s`` of being accepted, however it trickles them, and must then take the answer
    within ``request_timeout_s`` too; otherwise it is closed. When a new connection arrives and the
    table is full, the one that has waited longest without completing its request is closed to make
    room: a health check or a scrape, which sends its request at once, is always answered.

    Answers are HTTP/1.0 and the connection closes after each. Only GET is allowed (405 otherwise);
    ``/healthz`` answers 200 or 503 with :meth:`ServiceState.health`'s report, ``/metrics`` the
    Prometheus text, anything else 404. Query strings are ignored.

    Args:
        state: What the endpoints report.
        host: Address to bind; ``0.0.0.0`` (all interfaces) must be asked for. An IPv6 literal binds IPv6.
        port: Port to bind; 0 picks a free one, see :attr:`port`.
        max_connections: Open connections at most.
        request_timeout_s: Seconds a connection has to send its request headers, and again to take the answer.

    Raises:
        OSError: The address cannot be bound (port in use, unknown host).
        ValueError: ``max_connections`` below 1 or ``request_timeout_s`` not positive.
    """

    def __init__(self, state: ServiceState, *, host: str = "127.0.0.1", port: int = 8080, max_connections: int = 64,
                 request_timeout_s: float = 5.0) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, not {max_connections}")
        if not request_timeout_s > 0:
            raise ValueError(f"request_timeout_s must be positive, not {request_timeout_s}")
        self._state = state
        self.max_connections = int(max_connections)
        self.request_timeout_s = float(request_timeout_s)
        self._listener = self._listen(host, port)
        self.port = int(self._listener.getsockname()[1])
        try:
            self._wake_r, self._wake_w = socket.socketpair()  # stop() wakes the loop at once, no polling interval
        except OSError:
            self._listener.close()
            raise
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = threading.Event()
        self._conns: dict[int, _Connection] = {}  # by fd, oldest first: dicts keep insertion order
        self._selector: selectors.BaseSelector | None = None
        self._accept_paused_until = 0.0
        self._thread = threading.Thread(target=self._serve, name="serve-http", daemon=True)

    @staticmethod
    def _listen(host: str, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restarted service rebinds at once (TIME_WAIT)
            sock.bind((host, port))
            sock.listen(_BACKLOG)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def start(self) -> HttpServer:
        """Start serving in the background.

        Returns:
            This server.
        """
        if self._stopping.is_set():
            raise RuntimeError("this HttpServer was stopped: make a new one")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering, close every connection and the listening socket.

        Returns promptly also when :meth:`start` never ran, and may be called more than once.
        """
        self._stopping.set()
        if self._thread.is_alive():
            try:
                self._wake_w.send(b"\0")
            except OSError:
                pass  # the wake-up buffer is full: the loop is awake anyway
            self._thread.join(timeout=5)
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()

    # The event loop; everything below runs in the server thread only.

    def _serve(self) -> None:
        selector = self._selector = selectors.DefaultSelector()
        try:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping.is_set():
                if self._accept_paused_until and time.monotonic() >= self._accept_paused_until:
                    self._accept_paused_until = 0.0
                    selector.register(self._listener, selectors.EVENT_READ)
                incoming = False
                for key, mask in selector.select(self._select_timeout()):
                    if key.fileobj is self._listener:
                        incoming = True
                    elif key.fileobj is self._wake_r:
                        self._drain_wake()
                    else:
                        self._on_event(key.data, mask)
                now = time.monotonic()
                self._expire(now)
                # Accept after serving the ready connections: a burst of new ones then never evicts a connection
                # whose request was already waiting to be read.
                if incoming:
                    self._accept(now)
        except Exception:  # noqa: BLE001 - the service goes on without its endpoints; the HEALTHCHECK will notice
            _log.exception("the /healthz and /metrics server stopped on an unexpected error")
        finally:
            for conn in list(self._conns.values()):
                self._close(conn)
            selector.close()

    def _select_timeout(self) -> float | None:
        deadlines = [conn.deadline for conn in self._conns.values()]
        if self._accept_paused_until:
            deadlines.append(self._accept_paused_until)
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _drain_wake(self) -> None:
        try:
            self._wake_r.recv(64)
        except OSError:
            pass

    def _accept(self, now: float) -> None:
        # A bounded batch: the connections accepted in one round never evict each other before being read once.
        for _ in range(self.max_connections):
            try:
                sock, _address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:  # out of file descriptors or buffers: let deadlines free some, then accept again
                _log.warning("cannot accept a connection on port %d: %s; retrying in %g s", self.port, exc,
                             _ACCEPT_PAUSE_S)
                assert self._selector is not None
                self._selector.unregister(self._listener)
                self._accept_paused_until = now + _ACCEPT_PAUSE_S
                return
            if len(self._conns) >= self.max_connections:
                self._close(self._victim())
            sock.setblocking(False)
            conn = _Connection(sock, now + self.request_timeout_s)
            self._conns[conn.fd] = conn
            assert self._selector is not None
            self._selector.register(sock, selectors.EVENT_READ, conn)
            self._on_event(conn, selectors.EVENT_READ)  # a client usually sends its request with the handshake

    def _victim(self) -> _Connection:
        """The connection to close to make room: an answered one first, else the oldest request still incomplete."""
        for phase in (_LINGERING, _READING):
            for conn in self._conns.values():
                if conn.phase == phase:
                    return conn
        return next(iter(self._conns.values()))  # all are taking their answer: the oldest is the slowest reader

    def _expire(self, now: float) -> None:
        # Closed without a 408: a client this slow is not reading either.
        for conn in [c for c in self._conns.values() if c.deadline <= now]:
            self._close(conn)

    def _on_event(self, conn: _Connection, mask: int) -> None:
        if self._conns.get(conn.fd) is not conn:
            return  # closed earlier in this round
        try:
            if conn.phase == _WRITING:
                if mask & selectors.EVENT_WRITE:
                    self._send(conn)
            elif mask & selectors.EVENT_READ:
                self._receive(conn)
        except Exception:  # noqa: BLE001 - one bad exchange must not take the server down
            _log.exception("closing an HTTP connection after an unexpected error")
            self._close(conn)

    def _receive(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(_RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:  # the client gave up, or (lingering) read its answer and closed
            self._close(conn)
            return
        if conn.phase == _LINGERING:
            conn.drained += len(data)
            if conn.drained > _LINGER_BYTES:
                self._close(conn)
            return
        conn.inbox += data
        end = _header_end(conn.inbox)
        if end > MAX_HEADER_BYTES or (end < 0 and len(conn.inbox) > MAX_HEADER_BYTES):
            self._reply(conn, _error(431, f"request headers over {MAX_HEADER_BYTES} bytes"))
        elif end >= 0:
            self._reply(conn, self._answer(bytes(conn.inbox[:end])))

    def _answer(self, head: bytes) -> bytes:
        try:
            return _answer(self._state, head)
        except Exception:  # noqa: BLE001 - a failing report is a 500, not a dead server
            _log.exception("answering an HTTP request failed")
            return _error(500, "internal error: see the service log")

    def _reply(self, conn: _Connection, response: bytes) -> None:
        conn.phase = _WRITING
        conn.inbox = bytearray()
        conn.outbox = memoryview(response)
        conn.deadline = time.monotonic() + self.request_timeout_s  # a client that does not read is dropped too
        self._send(conn)  # a small answer fits the socket buffer: usually out at once, with no extra round

    def _send(self, conn: _Connection) -> None:
        try:
            sent = conn.sock.send(conn.outbox)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._close(conn)
            return
        conn.outbox = conn.outbox[sent:]
        if conn.outbox:
            self._watch(conn, selectors.EVENT_WRITE)
            return
        # All sent: half-close, then read and drop what the client still sends until it closes. Closing with unread
        # input (a POST body, an oversized header) would reset the connection and could destroy the answer in flight.
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        conn.phase = _LINGERING
        conn.deadline = time.monotonic() + min(_LINGER_S, self.request_timeout_s)
        self._watch(conn, selectors.EVENT_READ)

    def _watch(self, conn: _Connection, events: int) -> None:
        if conn.events != events:
            assert self._selector is not None
            self._selector.modify(conn.sock, events, conn)
            conn.events = events

    def _close(self, conn: _Connection) -> None:
        if self._conns.pop(conn.fd, None) is None:
            return
        if self._selector is not None:
            try:
                self._selector.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
        conn.sock.close()
