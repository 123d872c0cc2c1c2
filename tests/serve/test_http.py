"""Health policy, Prometheus exposition and the HTTP server."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request

import pytest

from toolchain.serve.healthcheck import check
from toolchain.serve.http import LATENCY_BUCKETS, HttpServer, ServiceState

# One sample line of the text format: name{labels} value.
_SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? -?[0-9.e+-]+$')


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_health_needs_the_model_and_a_fresh_camera() -> None:
    state = ServiceState(["a", "b"], {"model": "m"}, stale_s=0.3)
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
    time.sleep(0.4)
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
    import socket
    import threading

    server = HttpServer(ServiceState(["a"], {}), host="127.0.0.1", port=0)
    stopper = threading.Thread(target=server.stop, daemon=True)
    stopper.start()
    stopper.join(5)
    assert not stopper.is_alive(), "stop() hung on a server whose loop never ran"
    with socket.socket() as again:
        again.bind(("127.0.0.1", server.port))


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
