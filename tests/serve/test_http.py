"""Health policy, Prometheus exposition and the HTTP server, including clients that are slow on purpose."""

from __future__ import annotations

import inspect
import json
import re
import select
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Iterator

import pytest

from toolchain.serve.healthcheck import check
from toolchain.serve.http import LATENCY_BUCKETS, MAX_HEADER_BYTES, HttpServer, ServiceState

# One sample line of the text format: name{labels} value.
_SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? -?[0-9.e+-]+$')


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


class FakeClock:
    """A clock the test moves by hand: ``clock()`` reads it, ``clock.now += s`` advances it."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_health_needs_the_model_and_a_fresh_camera() -> None:
    clock = FakeClock(100.0)
    state = ServiceState(["a", "b"], {"model": "m"}, stale_s=0.3, clock=clock)
    assert state.health()[1]["reason"] == "model not loaded"
    state.model_ready = True
    healthy, report = state.health()
    assert not healthy and "no frame" in report["reason"]
    state.connected("a", False)
    state.frame("a", "car", 0.9, 0.01)
    assert state.health()[0]
    state.require = "all"
    assert not state.health()[0]
    state.require = "any"
    clock.now += 0.3  # exactly --stale-after: still up
    assert state.health()[0]
    clock.now += 0.001
    healthy, report = state.health()
    assert not healthy and not report["cameras"]["a"]["up"]
    state.require = "none"
    assert state.health()[0]
    state.stopping = True
    assert state.health()[1]["reason"] == "stopping"


def test_metrics_are_valid_prometheus_text() -> None:
    state = ServiceState(["cam \"1\"", "b"], {"model": "m", "target": "x86-64-cpu"})
    state.model_ready = True
    latencies = [0.004, 0.02, 0.02, 0.07, 5.0]
    for latency in latencies:
        state.frame("cam \"1\"", "truck", 0.8, latency)
    state.disconnected("b", "open failed")
    state.connected("b", True)
    text = state.prometheus()
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) [a-z_]+ .+$", line), line
            continue
        assert _SAMPLE.match(line), line
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    assert samples['toolchain_frames_total{camera="cam \\"1\\""}'] == 5
    assert samples['toolchain_events_total{camera="cam \\"1\\"",label="truck"}'] == 5
    assert samples['toolchain_camera_reconnects_total{camera="b"}'] == 1
    assert samples['toolchain_camera_errors_total{camera="b"}'] == 1
    buckets = [samples[f'toolchain_frame_latency_seconds_bucket{{camera="cam \\"1\\"",le="{b:g}"}}'] for b in LATENCY_BUCKETS]
    assert buckets == sorted(buckets)  # cumulative
    assert samples['toolchain_frame_latency_seconds_bucket{camera="cam \\"1\\"",le="0.02"}'] == 3
    assert samples['toolchain_frame_latency_seconds_bucket{camera="cam \\"1\\"",le="+Inf"}'] == 5
    assert samples['toolchain_frame_latency_seconds_sum{camera="cam \\"1\\""}'] == pytest.approx(sum(latencies))
    assert samples["toolchain_serve_healthy"] == 1


def test_http_server_answers_healthz_metrics_and_404() -> None:
    state = ServiceState(["a"], {"model": "m"}, stale_s=5)
    server = HttpServer(state, host="127.0.0.1", port=0).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        code, ctype, body = _get(base + "/healthz")
        assert code == 503 and ctype == "application/json" and json.loads(body)["healthy"] is False
        assert check(server.port)[0] is False
        state.model_ready = True
        state.frame("a", "car", 0.7, 0.01)
        code, _, body = _get(base + "/healthz")
        assert code == 200 and json.loads(body)["cameras"]["a"]["frames"] == 1
        assert check(server.port)[0] is True
        code, ctype, body = _get(base + "/metrics")
        assert code == 200 and ctype.startswith("text/plain; version=0.0.4")
        assert 'toolchain_frames_total{camera="a"} 1' in body
        assert _get(base + "/nope")[0] == 404
    finally:
        server.stop()
    assert check(server.port)[0] is False  # nothing listens any more


def test_stopping_a_server_that_never_started_returns_and_frees_the_port() -> None:
    server = HttpServer(ServiceState(["a"], {}), host="127.0.0.1", port=0)
    stopper = threading.Thread(target=server.stop, daemon=True)
    started = time.monotonic()
    stopper.start()
    stopper.join(5)
    assert not stopper.is_alive(), "stop() hung on a server whose loop never ran"
    assert time.monotonic() - started < 1.0
    with socket.socket() as again:
        again.bind(("127.0.0.1", server.port))
    server.stop()  # a second stop is harmless


def test_the_healthcheck_asks_where_serve_really_listens(tmp_path, monkeypatch) -> None:
    """serve --port 0 (any free port) + the HEALTHCHECK with no argument: it finds the port serve wrote."""
    from toolchain.serve import healthcheck

    monkeypatch.setattr(healthcheck, "ENDPOINT_FILE", tmp_path / "endpoint.json")
    monkeypatch.setenv("TOOLCHAIN_SERVE_PORT", "1")  # what the image says; serve was told otherwise
    state = ServiceState(["a"], {"model": "m"}, require="none")
    state.model_ready = True
    server = HttpServer(state, host="0.0.0.0", port=0).start()
    try:
        assert healthcheck.main([]) == 1  # nothing published yet: env port 1, no answer
        healthcheck.publish_endpoint("0.0.0.0", server.port)
        assert healthcheck.endpoint() == ("127.0.0.1", server.port)
        assert healthcheck.main([]) == 0
    finally:
        server.stop()


def test_the_image_healthcheck_runs_as_a_bare_script_and_imports_next_to_nothing() -> None:
    """What Docker runs every 3 s: ``python3 -I -S .../healthcheck.py``, no site, no toolchain package, no urllib."""
    import subprocess
    import sys

    from toolchain.serve import healthcheck

    script = healthcheck.__file__
    state = ServiceState(["a"], {"model": "m"}, require="none")
    server = HttpServer(state, host="127.0.0.1", port=0).start()
    try:
        run = [sys.executable, "-X", "importtime", "-I", "-S", script, str(server.port)]
        sick = subprocess.run(run, capture_output=True, text=True, timeout=30)
        assert sick.returncode == 1 and '"reason":"model not loaded"' in sick.stdout, sick  # 503: the body is shown
        state.model_ready = True
        well = subprocess.run(run, capture_output=True, text=True, timeout=30)
        assert well.returncode == 0, well
        assert json.loads(well.stdout)["healthy"] is True and ", " not in well.stdout  # compact: Docker keeps 4 KiB
        imported = {line.split("|")[-1].strip() for line in well.stderr.splitlines() if line.startswith("import time:")}
        assert not {"site", "urllib", "json", "toolchain", "pathlib", "tempfile"} & imported, sorted(imported)
    finally:
        server.stop()
    gone = subprocess.run([sys.executable, "-I", "-S", script, str(server.port)], capture_output=True, text=True,
                          timeout=30)
    assert gone.returncode == 1 and "no answer on port" in gone.stdout


# --- Slow and hostile clients. Every socket below is on the loopback and closed in a `finally`. ---


def _ok_state() -> ServiceState:
    state = ServiceState(["a"], {"model": "m"}, require="none")
    state.model_ready = True
    return state


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _read_to_eof(sock: socket.socket, limit_s: float = 5.0) -> bytes:
    """Everything the server sends until it closes; fails if it has not closed within ``limit_s``."""
    chunks = []
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
    raise AssertionError(f"the server kept the connection open past {limit_s} s")


def _exchange(port: int, request: bytes) -> bytes:
    sock = _connect(port)
    try:
        sock.sendall(request)
        return _read_to_eof(sock)
    finally:
        sock.close()


def _seconds_until_closed(sock: socket.socket, limit_s: float) -> float:
    """How long until the server closes ``sock`` (which sent no complete request, so gets no answer)."""
    started = time.monotonic()
    sock.settimeout(limit_s)
    try:
        data = sock.recv(1)
    except ConnectionResetError:
        data = b""
    except socket.timeout:
        raise AssertionError(f"the server kept the connection open past {limit_s} s") from None
    assert data == b"", f"unexpected answer {data!r}"
    return time.monotonic() - started


def _closed_by_server(sock: socket.socket, wait_s: float = 0.0) -> bool:
    """True once the server has closed it: the socket reads as ready (end of stream or reset)."""
    return bool(select.select([sock], [], [], wait_s)[0])


@pytest.fixture
def descriptors_for_a_flood() -> Iterator[None]:
    """Room for 300 client sockets, the server's side of up to 64 of them and what pytest holds (about 700)."""
    resource = pytest.importorskip("resource", reason="RLIMIT_NOFILE is POSIX only")
    needed = 700
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        yield
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"the open-file limit is {hard} (hard); 300 slow clients need about {needed}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_300_slow_clients_neither_lock_out_a_health_check_nor_cost_a_thread_each(descriptors_for_a_flood: None) -> None:
    """The issue: 300 half-sent requests held 300 threads. Acceptance: /healthz still answers within 1 s."""
    server = HttpServer(_ok_state(), host="127.0.0.1", port=0).start()  # defaults: 64 connections, 5 s to send a request
    threads_before = threading.active_count()
    slow: list[socket.socket] = []
    try:
        flood_started = time.monotonic()
        for _ in range(300):
            sock = _connect(server.port)
            slow.append(sock)
            try:
                sock.sendall(b"GET /heal")  # a request line that never ends
            except OSError:
                pass  # the server already closed it to make room: what it is meant to do
        flood_s = time.monotonic() - flood_started
        time.sleep(0.2)  # let the server take in the whole flood: the health check comes after it, not during it

        started = time.monotonic()
        code, _, body = _get(f"http://127.0.0.1:{server.port}/healthz")
        answer_s = time.monotonic() - started
        print(f"300 slow clients connected in {flood_s:.3f} s; /healthz answered in {answer_s * 1000:.1f} ms")
        assert code == 200 and json.loads(body)["healthy"] is True
        assert answer_s < 1.0, f"/healthz took {answer_s:.3f} s behind 300 slow clients"
        assert threading.active_count() == threads_before, "the server started threads for the slow clients"

        # The server holds at most 64 of them: the oldest were closed to make room, the newest are still held.
        deadline = time.monotonic() + 2.0
        held = [s for s in slow if not _closed_by_server(s)]
        while len(held) > 64 and time.monotonic() < deadline:
            time.sleep(0.05)
            held = [s for s in held if not _closed_by_server(s)]
        assert 0 < len(held) <= 64, f"{len(held)} slow connections still open"
        assert _closed_by_server(slow[0]) and not _closed_by_server(slow[-1])
    finally:
        for sock in slow:
            sock.close()
        server.stop()


def test_a_client_too_slow_to_send_its_request_is_disconnected_at_the_deadline() -> None:
    server = HttpServer(ServiceState(["a"], {}), host="127.0.0.1", port=0, request_timeout_s=0.5).start()
    silent = trickle = None
    try:
        silent = _connect(server.port)
        waited = _seconds_until_closed(silent, 5.0)
        assert 0.4 <= waited < 2.0, f"a silent client was closed after {waited:.3f} s, not 0.5 s"

        # The deadline counts from the connection, not from the last byte: trickling does not keep it open.
        trickle = _connect(server.port)
        started = time.monotonic()
        closed_after = None
        for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 40:  # one byte per 0.1 s: 6.4 s at most
            if _closed_by_server(trickle, 0.1):
                closed_after = time.monotonic() - started
                break
            try:
                trickle.send(bytes([byte]))
            except OSError:  # reset by the server
                closed_after = time.monotonic() - started
                break
        assert closed_after is not None and 0.4 <= closed_after < 2.0, f"trickling client closed after {closed_after}"

        assert _get(f"http://127.0.0.1:{server.port}/healthz")[0] == 503  # prompt clients are still answered
    finally:
        for sock in (silent, trickle):
            if sock is not None:
                sock.close()
        server.stop()


def test_when_full_the_longest_waiting_connection_makes_room_for_a_new_request() -> None:
    server = HttpServer(_ok_state(), host="127.0.0.1", port=0, max_connections=4, request_timeout_s=30).start()
    idle: list[socket.socket] = []
    try:
        for i in range(4):
            idle.append(_connect(server.port))
            if i % 2:
                idle[-1].sendall(b"GET /metr")  # silent or half-sent: both are waiting on the client
        started = time.monotonic()
        code, _, _ = _get(f"http://127.0.0.1:{server.port}/healthz")
        assert code == 200 and time.monotonic() - started < 1.0
        assert _seconds_until_closed(idle[0], 2.0) < 2.0  # the oldest made room ...
        assert not any(_closed_by_server(sock, 0.05) for sock in idle[1:])  # ... and only it
    finally:
        for sock in idle:
            sock.close()
        server.stop()


def test_oversized_request_headers_are_refused() -> None:
    server = HttpServer(_ok_state(), host="127.0.0.1", port=0).start()
    try:
        line = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
        fits = _exchange(server.port, line + b"a" * (MAX_HEADER_BYTES - 200) + b"\r\n\r\n")
        assert fits.startswith(b"HTTP/1.0 200 ")
        too_big = _exchange(server.port, line + b"a" * (MAX_HEADER_BYTES + 10) + b"\r\n\r\n")
        assert too_big.startswith(b"HTTP/1.0 431 ")
        endless = _exchange(server.port, line + b"a" * (2 * MAX_HEADER_BYTES))  # no end in sight: refused as well
        assert endless.startswith(b"HTTP/1.0 431 ")
    finally:
        server.stop()


def test_only_get_is_allowed_and_a_garbled_request_is_a_400() -> None:
    server = HttpServer(_ok_state(), host="127.0.0.1", port=0).start()
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{server.port}/healthz", data=b'{"x": 1}', method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 405 and refused.value.headers["Allow"] == "GET"
        assert "GET" in json.loads(refused.value.read())["error"]
        assert _exchange(server.port, b"HEAD /healthz HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.0 405 ")
        assert _exchange(server.port, b"hello\r\n\r\n").startswith(b"HTTP/1.0 400 ")
        code, _, body = _get(f"http://127.0.0.1:{server.port}/healthz?verbose=1")  # query strings are ignored
        assert code == 200 and json.loads(body)["healthy"] is True
    finally:
        server.stop()


def test_stop_closes_held_connections_and_ends_the_thread_promptly() -> None:
    server = HttpServer(ServiceState(["a"], {}), host="127.0.0.1", port=0).start()
    held: list[socket.socket] = []
    try:
        held = [_connect(server.port) for _ in range(5)]
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 1.0
        assert not [t for t in threading.enumerate() if t.name == "serve-http" and t.is_alive()]
        assert all(_seconds_until_closed(sock, 2.0) < 2.0 for sock in held)
    finally:
        for sock in held:
            sock.close()
        server.stop()


def test_loopback_by_default_bind_failures_and_bad_limits() -> None:
    assert inspect.signature(HttpServer).parameters["host"].default == "127.0.0.1"  # all interfaces only when asked
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(OSError):
            HttpServer(ServiceState(["a"], {}), host="127.0.0.1", port=busy.getsockname()[1])
    with pytest.raises(ValueError, match="max_connections"):
        HttpServer(ServiceState(["a"], {}), host="127.0.0.1", port=0, max_connections=0)
    with pytest.raises(ValueError, match="request_timeout_s"):
        HttpServer(ServiceState(["a"], {}), host="127.0.0.1", port=0, request_timeout_s=0)


def test_a_stale_camera_reports_an_age_above_stale_after_never_equal_to_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Half a millisecond past --stale-after is down, and its age must say so (it was rounded to 1.0)."""
    from toolchain.serve import http

    clock = FakeClock(1000.0)
    state = http.ServiceState(["north"], {}, stale_s=1.0, clock=clock)
    state.frame("north", "car", 0.9, 0.01)
    clock.now = 1001.0004
    _, report = state.health()
    assert report["cameras"]["north"]["up"] is False
    assert report["cameras"]["north"]["seconds_since_frame"] > 1.0


def test_a_wall_clock_step_backwards_never_brings_a_dead_camera_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """An NTP step of the wall clock an hour back, after the camera's last frame: the camera has still been
    silent for longer than --stale-after, so it is down and /healthz says 503 (on the wall clock its age was
    negative, it read as up, and deploy's health gate passed a unit whose camera was dead)."""
    from toolchain.serve import http

    wall = [1_700_000_000.0]
    monkeypatch.setattr(http.time, "time", lambda: wall[0])
    state = http.ServiceState(["north"], {"model": "m"}, stale_s=0.05)  # the real monotonic clock
    state.model_ready = True
    state.connected("north", False)
    state.frame("north", "car", 0.9, 0.01)
    assert state.health()[0]
    wall[0] -= 3600.0
    time.sleep(0.1)  # past the stale limit on the monotonic clock; sleeping longer can only make it staler
    healthy, report = state.health()
    assert report["cameras"]["north"]["up"] is False and not healthy, report
    assert report["cameras"]["north"]["seconds_since_frame"] >= 0.1
    assert 'toolchain_camera_up{camera="north"} 0' in state.prometheus()


def test_health_ages_come_from_the_injected_clock_and_timestamps_from_the_wall_clock() -> None:
    """Wall-clock steps either way change no age: forward an hour does not take a live camera down (a
    restart loop on a unit whose NTP catches up), back an hour does not bring a dead one up. /metrics
    still exports Unix timestamps for humans and dashboards."""
    clock, wall = FakeClock(50.0), FakeClock(1_700_000_000.0)
    state = ServiceState(["north", "south"], {"model": "m"}, stale_s=5.0, require="all", clock=clock,
                         wall_clock=wall)
    state.model_ready = True
    for camera in ("north", "south"):
        state.connected(camera, False)
        state.frame(camera, "car", 0.9, 0.01)
    wall.now += 3600.0  # a forward step: nothing aged
    clock.now += 1.0
    healthy, report = state.health()
    assert healthy and report["cameras"]["north"]["seconds_since_frame"] == 1.0 and report["uptime_s"] == 1.0
    metrics = state.prometheus()
    assert "toolchain_serve_start_time_seconds 1700000000.000" in metrics
    assert 'toolchain_camera_last_frame_timestamp_seconds{camera="north"} 1700000000.000' in metrics
    wall.now -= 7200.0  # a backward step
    clock.now += 4.5
    state.frame("north", "car", 0.9, 0.01)  # south stays silent: 5.5 s
    healthy, report = state.health()
    assert not healthy and report["cameras"]["north"]["up"] and not report["cameras"]["south"]["up"]
    assert report["cameras"]["south"]["seconds_since_frame"] == 5.5
