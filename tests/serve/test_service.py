"""``serve`` end to end in-process: a real network camera (HTTP MPEG-TS) that is late, drops and comes back."""

from __future__ import annotations

import functools
import json
import threading
import time
import urllib.error
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.ports import free_port
from tests.serve.fixtures import tiny_build, write_video
from toolchain.errors import UsageError
from toolchain.redaction import redact_url
from toolchain.serve.bundle import model_from_registry
from toolchain.serve.reconnect import Backoff
from toolchain.serve.service import ServeConfig, camera_name, serve
from toolchain.workspace import Workspace


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        return None


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _metric(url: str, sample: str) -> float:
    with urllib.request.urlopen(url, timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(sample + " "):
                return float(line.rsplit(" ", 1)[1])
    return float("nan")


def _wait(predicate, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_serve_survives_a_camera_that_is_late_and_drops(tmp_path: Path) -> None:
    with Workspace(tmp_path / "ws") as ws:
        model = model_from_registry(ws, tiny_build(ws, tmp_path))
    write_video(tmp_path / "cams" / "cam.ts", frames=10, fmt="mpegts")
    camera_port = free_port()
    url = f"http://127.0.0.1:{camera_port}/cam.ts"
    events = tmp_path / "events" / "events.jsonl"
    config = ServeConfig(sources=(f"gantry={url}",), events=str(events), host="127.0.0.1", port=0, stale_s=5.0,
                         backoff=Backoff(initial_s=0.05, max_s=0.2))
    stop = threading.Event()
    ready = threading.Event()
    port: list[int] = []
    results = []

    def run() -> None:
        results.append(serve(model, config, stop=stop, install_signals=False,
                             on_ready=lambda p: (port.append(p), ready.set())))

    thread = threading.Thread(target=run)
    thread.start()
    camera = None
    try:
        assert ready.wait(20)
        health = f"http://127.0.0.1:{port[0]}/healthz"
        time.sleep(0.5)
        assert _status(health) == 503  # the camera is not up yet
        camera = ThreadingHTTPServer(("127.0.0.1", camera_port),
                                     functools.partial(_Quiet, directory=str(tmp_path / "cams")))
        threading.Thread(target=camera.serve_forever, daemon=True).start()
        assert _wait(lambda: _status(health) == 200)
        # The 10-frame stream ends (the camera "drops") and is reopened, again and again.
        metrics_url = f"http://127.0.0.1:{port[0]}/metrics"
        assert _wait(lambda: _metric(metrics_url, 'toolchain_camera_reconnects_total{camera="gantry"}') >= 3)
    finally:
        stop.set()
        thread.join(30)
        if camera is not None:
            camera.shutdown()
            camera.server_close()
    assert not thread.is_alive()
    result = results[0]
    assert result.stopped_by == "stop requested" and result.reconnects["gantry"] >= 3
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert len(lines) == result.frames >= 10  # a live stream decodes faster than real time: some frames are dropped
    assert {tuple(sorted(e)) for e in lines} == {("camera", "frame", "label", "latency_ms", "score", "time")}
    assert {e["camera"] for e in lines} == {"gantry"} and {e["label"] for e in lines} <= {"car", "truck"}
    assert all(0.0 <= e["score"] <= 1.0 and e["time"].endswith("+00:00") for e in lines)


def test_camera_names_hide_passwords_and_configs_are_checked() -> None:
    assert camera_name("rtsp://admin:secret@10.0.0.5:554/s1", 0) == ("rtsp://***@10.0.0.5:554/s1",
                                                                      "rtsp://admin:secret@10.0.0.5:554/s1")
    assert camera_name("north=rtsp://10.0.0.5/s1", 0) == ("north", "rtsp://10.0.0.5/s1")
    assert camera_name("/videos/a=b.mp4", 0)[0] == "/videos/a=b.mp4"
    assert redact_url("/dev/video0") == "/dev/video0"
    with pytest.raises(UsageError, match="same camera name"):
        ServeConfig(sources=("a=x.mp4", "a=y.mp4"))
    with pytest.raises(UsageError, match="at least one"):
        ServeConfig(sources=())
    with pytest.raises(UsageError, match="--require"):
        ServeConfig(sources=("x",), require="most")


def _serve_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "serve-http" and t.is_alive()]


def test_a_busy_port_is_a_clear_error_and_leaves_no_signal_handler_behind(tmp_path: Path) -> None:
    import signal
    import socket

    from toolchain.errors import ToolchainError

    with Workspace(tmp_path / "ws") as ws:
        model = model_from_registry(ws, tiny_build(ws, tmp_path))
    before = signal.getsignal(signal.SIGTERM)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = ServeConfig(sources=("synthetic:32x32@10",), host="127.0.0.1", port=port, duration_s=1)
        with pytest.raises(ToolchainError, match=f"port {port}.*--port"):
            serve(model, config)
    assert signal.getsignal(signal.SIGTERM) is before


def test_an_events_file_that_cannot_be_opened_stops_the_http_server(tmp_path: Path) -> None:
    from toolchain.errors import ToolchainError

    with Workspace(tmp_path / "ws") as ws:
        model = model_from_registry(ws, tiny_build(ws, tmp_path))
    (tmp_path / "events").mkdir()
    config = ServeConfig(sources=("synthetic:32x32@10",), events=str(tmp_path / "events"), host="127.0.0.1", port=0,
                         duration_s=1)
    with pytest.raises(ToolchainError, match="events"):
        serve(model, config, install_signals=False)
    assert not _serve_threads()


def test_a_source_that_cannot_be_opened_closes_the_events_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import toolchain.serve.service as service

    opened = []
    real = service.RotatingFile
    monkeypatch.setattr(service, "RotatingFile", lambda *a, **k: opened.append(real(*a, **k)) or opened[-1])
    with Workspace(tmp_path / "ws") as ws:
        model = model_from_registry(ws, tiny_build(ws, tmp_path))
    config = ServeConfig(sources=(str(tmp_path / "missing.mp4"),), events=str(tmp_path / "ev.jsonl"), host="127.0.0.1",
                         port=0, duration_s=1)
    with pytest.raises(UsageError):
        serve(model, config, install_signals=False)
    assert len(opened) == 1 and opened[0].closed
    assert not _serve_threads()
