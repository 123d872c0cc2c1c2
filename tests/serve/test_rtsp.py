"""``serve`` against real RTSP cameras (GStreamer's RTSP server, ``scripts/rtsp_server``) and their faults.

Each camera is a child process serving a small H.264 clip at its frame rate, looping, so a fault is a
signal to that process: SIGKILL (the camera vanishes; later it comes back on the same port),
SIGSTOP (it hangs with its connections open; SIGCONT ends the hang). ``serve`` runs in-process as in
test_service.py. Skipped, saying what to install, where Debian's python3 lacks GStreamer's RTSP server.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import statistics
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.ports import free_port
from tests.serve.fixtures import tiny_build
from tests.serve.rtsp import StartServer, camera_clip, rtsp_server_fixture  # noqa: F401 - the fixture
from tests.timing import slack, wait_for
from toolchain.serve.bundle import ServingModel, model_from_registry
from toolchain.serve.reconnect import Backoff
from toolchain.serve.service import ServeConfig, ServeResult, serve
from toolchain.workspace import Workspace

FPS = 15
FAST_BACKOFF = Backoff(initial_s=0.1, max_s=0.4)
# A JPEG 2000 RTP stream: FFmpeg has a JPEG 2000 decoder but no depacketizer for it, so the stream's codec is
# unknown to PyAV (what a client sees of a camera sending a codec it cannot decode).
JPEG2000 = ("videotestsrc ! video/x-raw,width=64,height=48,framerate=5/1,format=I420 ! openjpegenc ! image/x-jpc "
            "! rtpj2kpay name=pay0")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> ServingModel:
    tmp = tmp_path_factory.mktemp("model")
    with Workspace(tmp / "ws") as ws:
        return model_from_registry(ws, tiny_build(ws, tmp))


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s of 160x96 H.264 at 15 fps (the server loops it)."""
    return camera_clip(tmp_path_factory.mktemp("clips") / "cam.mp4", seconds=2, fps=FPS, size=(160, 96))


class Served:
    """A ``serve`` running on a thread; ``health()`` reads its /healthz."""

    def __init__(self, port: int, events: Path) -> None:
        self.port, self.events = port, events
        self.result: ServeResult | None = None

    def health(self) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def camera(self, name: str) -> dict[str, Any]:
        return self.health()[1]["cameras"][name]

    def event_lines(self) -> list[dict[str, Any]]:
        """The events written so far (a line still being written is left out)."""
        lines = self.events.read_text().splitlines(keepends=True) if self.events.exists() else []
        return [json.loads(line) for line in lines if line.endswith("\n")]


@contextlib.contextmanager
def serving(model: ServingModel, tmp_path: Path, sources: list[str], **options: Any) -> Iterator[Served]:
    """``serve(...)`` on a thread until the block ends (then stopped, and its result in ``served.result``)."""
    events = tmp_path / "events.jsonl"
    config = ServeConfig(sources=tuple(sources), events=str(events), host="127.0.0.1", port=0,
                         **{"backoff": FAST_BACKOFF, "stale_s": 1.0, **options})
    stop, ready = threading.Event(), threading.Event()
    port: list[int] = []
    results: list[ServeResult] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            results.append(serve(model, config, stop=stop, install_signals=False,
                                 on_ready=lambda p: (port.append(p), ready.set())))
        except BaseException as exc:  # noqa: BLE001 - re-raised on the test's thread
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=run, name="test-serve")
    thread.start()
    try:
        assert ready.wait(30), "serve did not get ready"
        if failure:
            raise failure[0]
        served = Served(port[0], events)
        yield served
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive(), "serve did not stop within 30 s of the stop event"
    if failure:
        raise failure[0]
    served.result = results[0]
    assert served.result.stopped_by == "stop requested"


# -- the server itself -------------------------------------------------------------------------------


def test_the_server_loops_the_clip_at_its_frame_rate_over_tcp_and_udp(rtsp_server: StartServer, clip: Path) -> None:
    """PyAV reads the same camera over RTSP/TCP and RTSP/UDP (``rtsp_transport`` set by hand, as PyAVSource
    forces TCP): real-time frames, past the end of the 2 s clip, timestamps still increasing."""
    import av

    server = rtsp_server({"cam": clip})
    wanted = 4 * FPS  # past the clip's end: the loop
    read: dict[str, tuple[list[float], list[int], tuple[int, ...]]] = {}
    errors: list[BaseException] = []

    def client(transport: str) -> None:
        try:
            with av.open(server.url("cam"), options={"rtsp_transport": transport}, timeout=(10, 10)) as container:
                stream = container.streams.video[0]
                times, pts, shape = [], [], ()
                for frame in container.decode(stream):
                    times.append(time.perf_counter())
                    pts.append(frame.pts if frame.pts is not None else -1)
                    shape = frame.to_ndarray(format="rgb24").shape
                    if len(times) == wanted:
                        break
                read[transport] = (times, pts, shape)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(t,)) for t in ("tcp", "udp")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    for transport, (times, pts, shape) in read.items():
        assert shape == (96, 160, 3), transport
        # The first frames come in a burst (buffered while FFmpeg probed the stream); then the camera's pace.
        steady = [t for t in times if t >= times[0] + 0.5]
        assert len(steady) >= FPS, f"{transport}: {len(times) - len(steady)} of {len(times)} frames in the first burst"
        rate = (len(steady) - 1) / (steady[-1] - steady[0])
        assert 0.8 * FPS < rate < 1.25 * FPS, f"{transport}: {rate:.1f} frames/s, the clip has {FPS}"
        # Each frame's timestamp later than the one before, across the loop: no frame repeated. Over TCP the step
        # is exactly a frame interval (90 kHz clock / 15 fps); FFmpeg leaves the first frame(s) without a timestamp
        # (-1 here), and over UDP moves the clock once, to the sender report's time, when the first RTCP packet comes.
        known = [p for p in pts if p >= 0]
        steps = {b - a for a, b in itertools.pairwise(known)}
        assert len(known) >= len(pts) - FPS and min(steps) > 0, f"{transport}: timestamps {pts}"
        if transport == "tcp":
            assert steps <= {5999, 6000, 6001}, f"tcp: timestamp steps {steps}"
    server.stop()
    assert server.returncode == 0  # SIGTERM: a clean exit


# -- faults ------------------------------------------------------------------------------------------


def test_a_camera_killed_and_restarted_goes_stale_and_comes_back_alone(
        rtsp_server: StartServer, clip: Path, model: ServingModel, tmp_path: Path) -> None:
    """SIGKILL one camera's server: that camera is down at once (/healthz 503 under require=all), the other
    keeps delivering; the service retries with backoff and, once the server is back on its port, reconnects
    by itself and its events resume."""
    north, south = rtsp_server({"cam": clip}), rtsp_server({"cam": clip})
    with serving(model, tmp_path, [f"north={north.url('cam')}", f"south={south.url('cam')}"], require="all") as served:
        wait_for(lambda: served.health()[0] == 200, 20, "both cameras up", served.health)
        before = served.camera("north")["frames"]
        north.kill()
        down_after = wait_for(lambda: not served.camera("north")["up"], 5, "north down after its server was killed",
                              served.health)
        code, report = served.health()
        assert code == 503 and "all camera(s)" in report["reason"]
        assert report["cameras"]["south"]["up"]
        south_before = report["cameras"]["south"]["frames"]
        wait_for(lambda: served.camera("north")["errors"] >= 4, 10, "north retried (refused) a few times",
                 served.health)
        assert "Connection refused" in served.camera("north")["last_error"]
        restart = time.monotonic()
        north.start()  # the same port
        back_after = wait_for(lambda: served.health()[0] == 200, 15, "north back after its server restarted",
                              served.health)
        outage = time.monotonic() - restart + down_after
        # Each retry waits 0.1 s, 0.2 s, then 0.4 s: a handful of attempts, not a busy loop on a dead camera.
        assert served.camera("north")["errors"] <= 2 + outage / FAST_BACKOFF.initial_s
        wait_for(lambda: served.camera("north")["frames"] >= before + FPS, 10, "north's events resumed", served.health)
        north_now, south_now = served.camera("north"), served.camera("south")
        assert north_now["reconnects"] == 1 and south_now["reconnects"] == 0 and south_now["errors"] == 0
        assert south_now["up"] and south_now["frames"] > south_before + FPS * outage * 0.5  # south never stopped
    result = served.result
    assert result is not None and result.reconnects == {"north": 1, "south": 0}
    lines = served.event_lines()
    assert {e["camera"] for e in lines} == {"north", "south"} and len(lines) == result.frames
    # Backoff capped at 0.4 s, and an RTSP open of about 1.5 s (FFmpeg probing the stream): reconnected within
    # a few seconds of the camera's return, not at the next reconnect of a minutes-long backoff.
    print(f"killed: down in /healthz after {down_after:.2f} s; restarted: up again after {back_after:.2f} s")
    assert down_after < slack(1.5) and back_after < slack(6), (down_after, back_after)


def test_a_camera_that_hangs_is_stale_within_stale_after_and_recovers(
        rtsp_server: StartServer, clip: Path, model: ServingModel, tmp_path: Path) -> None:
    """SIGSTOP a camera's server: the RTSP connection stays open but nothing comes; /healthz says the camera
    is down within --stale-after (1 s here), the other camera stays up; SIGCONT and its frames resume."""
    north, south = rtsp_server({"cam": clip}), rtsp_server({"cam": clip})
    stale_s = 1.0
    with serving(model, tmp_path, [f"north={north.url('cam')}", f"south={south.url('cam')}"], require="all",
                 stale_s=stale_s) as served:
        wait_for(lambda: served.health()[0] == 200, 20, "both cameras up", served.health)
        north.pause()
        detected = wait_for(lambda: not served.camera("north")["up"], stale_s + 2, "north stale while hung",
                            served.health)
        code, report = served.health()
        assert code == 503 and report["cameras"]["south"]["up"]
        assert report["cameras"]["north"]["seconds_since_frame"] > stale_s
        frames = report["cameras"]["north"]["frames"]
        north.resume()
        back = wait_for(lambda: served.health()[0] == 200, 10, "north up again after SIGCONT", served.health)
        wait_for(lambda: served.camera("north")["frames"] > frames + FPS, 10, "north's frames resumed", served.health)
        # A hang shorter than PyAV's read timeout (10 s) is ridden out on the same connection.
        assert served.camera("north")["reconnects"] == 0
    print(f"hung: stale in /healthz after {detected:.2f} s (--stale-after {stale_s:g}); up {back:.2f} s after SIGCONT")
    # The last frame may have come up to one frame interval before SIGSTOP.
    assert stale_s - 1 / FPS - 0.1 <= detected <= stale_s + slack(1.0), detected


def test_urls_that_answer_but_are_not_video_are_per_camera_errors(
        rtsp_server: StartServer, clip: Path, model: ServingModel, tmp_path: Path) -> None:
    """An HTTP page of text, an RTSP path the server does not have (404) and an RTSP stream in a codec PyAV
    cannot decode each give that camera a clear last_error in /healthz; the good camera and the service go on."""
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "status.txt").write_text("camera OK\n")
    web = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(tmp_path / "www")))
    threading.Thread(target=web.serve_forever, daemon=True).start()
    server, odd = rtsp_server({"cam": clip}), rtsp_server({}, launch={"jpeg2000": JPEG2000})
    sources = [f"good={server.url('cam')}", f"text=http://127.0.0.1:{web.server_address[1]}/status.txt",
               f"missing={server.url('nothing-here')}", f"undecodable={odd.url('jpeg2000')}"]
    expected = {
        "text": ("open failed", "Invalid data found when processing input", "is it a video file or stream?"),
        "missing": ("open failed", "404 Not Found"),
        # FFmpeg waits out the 10 s open timeout probing an unknown codec; the decode then fails
        "undecodable": ("cannot decode",),
    }
    try:
        with serving(model, tmp_path, sources, require="any") as served:
            def reported() -> bool:
                cameras = served.health()[1]["cameras"]
                return all(all(part in cameras[name]["last_error"] for part in parts)
                           for name, parts in expected.items())

            wait_for(reported, 25, f"each bad camera's error in /healthz: {expected}", served.health)
            code, report = served.health()
            assert code == 200 and report["cameras"]["good"]["up"] and report["cameras"]["good"]["errors"] == 0
            for name in expected:
                camera = report["cameras"][name]
                assert not camera["up"] and camera["frames"] == 0 and camera["errors"] >= 1
                assert "127.0.0.1" in camera["last_error"]  # says which camera
            frames = report["cameras"]["good"]["frames"]
            wait_for(lambda: served.camera("good")["frames"] > frames + FPS // 2, 5, "the good camera goes on",
                     served.health)
            odd.kill()  # else stopping waits for the retry of the undecodable camera, blocked in FFmpeg's probe
    finally:
        web.shutdown()
        web.server_close()
    assert {e["camera"] for e in served.event_lines()} == {"good"}


def test_a_camera_down_at_start_up_is_picked_up_when_it_comes(
        rtsp_server: StartServer, clip: Path, model: ServingModel, tmp_path: Path) -> None:
    """Nothing listens on the camera's port when the service starts (connection refused): 503 with the error,
    retried with backoff; the camera starts later and is served without a restart."""
    port = free_port()
    url = f"rtsp://127.0.0.1:{port}/cam"
    with serving(model, tmp_path, [f"late={url}"], require="all") as served:
        wait_for(lambda: served.camera("late")["errors"] >= 2, 10, "refused connections reported", served.health)
        code, report = served.health()
        assert code == 503 and "Connection refused" in report["cameras"]["late"]["last_error"]
        rtsp_server({"cam": clip}, port=port)
        waited = wait_for(lambda: served.health()[0] == 200, 15, "the late camera served", served.health)
        assert served.camera("late")["reconnects"] == 0  # its first connection
    assert served.result is not None and served.result.frames > 0
    assert waited < slack(6), waited


def test_a_camera_that_hangs_at_start_up_holds_up_no_other_camera(
        rtsp_server: StartServer, clip: Path, model: ServingModel, tmp_path: Path) -> None:
    """A camera that accepts the connection but never answers (a hung camera: its server SIGSTOPped before the
    service starts) must not delay the others: FFmpeg waits out its 10 s open timeout on that camera alone."""
    hung, good = rtsp_server({"cam": clip}), rtsp_server({"cam": clip})
    hung.pause()
    with serving(model, tmp_path, [f"hung={hung.url('cam')}", f"good={good.url('cam')}"], require="any") as served:
        first = wait_for(lambda: served.health()[0] == 200, 20, "the good camera served", served.health)
        assert not served.camera("hung")["up"]
        hung.resume()
        # Recovery is not a timing claim (the good camera's start above is): 40 s (times the CI slack), as one
        # open may wait out its 10 s timeout on the paused server and, with CI's Docker tests running beside this
        # suite, the resumed server's encoder can miss FFmpeg's probe more than once (15 s and 30 s limits each
        # timed out once there).
        wait_for(lambda: served.camera("hung")["up"], 40, "the hung camera served once it answers", served.health)
    assert first < slack(6), f"the good camera waited {first:.1f} s for the hung one"


def test_eight_rtsp_cameras_all_deliver_in_order_and_lose_no_frame_unaccounted(
        rtsp_server: StartServer, model: ServingModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Eight RTSP cameras (one server, eight streams of a 320x176 15 fps clip) on one service: all come up, each
    keeps delivering, every camera's events are in frame order, and a frame missing from the events is one the
    service counted as dropped (never silently lost).

    Only what holds on a loaded, shared CI machine is asserted: rates get generous bounds and latency none. To
    make sure of it, inference stalls once for a second mid-run, as a loaded machine stalls a process (frames
    pile up and the oldest are dropped; the old +-15% rate and p99-under-a-frame-interval assertions fail on
    such a run). How fast and how late (each camera at its 15 fps, p99 under a frame interval) is measured by
    ``scripts/bench_stream.py --rtsp`` (BENCHMARKS.md), not asserted here.
    """
    from toolchain.serve import service

    stall = threading.Event()
    make_runner = service.make_runner

    def stalling_runner(*args: Any, **kwargs: Any) -> Any:
        runner = make_runner(*args, **kwargs)
        infer = runner.infer

        def infer_or_stall(feed: Any) -> Any:
            if stall.is_set():
                stall.clear()
                time.sleep(1.0)
            return infer(feed)

        runner.infer = infer_or_stall
        return runner

    monkeypatch.setattr(service, "make_runner", stalling_runner)
    clip = camera_clip(tmp_path / "cam8.mp4", seconds=2, fps=FPS, size=(320, 176))
    names = [f"cam{i}" for i in range(8)]
    server = rtsp_server({name: clip for name in names})
    with serving(model, tmp_path, [f"{name}={server.url(name)}" for name in names], require="all",
                 stale_s=5.0) as served:
        wait_for(lambda: served.health()[0] == 200, 60, "all 8 cameras up", served.health)
        first = {name: c["frames"] for name, c in served.health()[1]["cameras"].items()}
        t0 = time.monotonic()
        stall.set()

        def two_seconds_each() -> bool:
            time.sleep(0.1)  # a poll every 0.1 s: no busy loop to add to the load
            return all(c["frames"] - first[n] >= 2 * FPS for n, c in served.health()[1]["cameras"].items())

        wait_for(two_seconds_each, 60, "two seconds of frames from every camera", served.health)
        seconds = time.monotonic() - t0
        code, report = served.health()
    assert code == 200, report
    assert served.result is not None
    rates = {name: (c["frames"] - first[name]) / seconds for name, c in report["cameras"].items()}
    events: dict[str, list[int]] = {name: [] for name in names}
    latencies = []
    for event in served.event_lines():
        events[event["camera"]].append(event["frame"])
        latencies.append(event["latency_ms"])
    streams = {s["name"]: s for s in served.result.streams}
    for name in names:
        frames = events[name]
        assert frames and all(a < b for a, b in zip(frames, frames[1:])), f"{name}: events out of frame order"
        missing = frames[-1] + 1 - len(frames)  # frame numbers skipped up to the last one written
        assert missing <= streams[name]["dropped"], (name, missing, streams[name])
        assert sum(served.result.events_by_camera[name].values()) == len(frames)  # the metrics saw them all
    # Generous: a camera far below its rate is stuck, far above it is replaying; neither is load.
    assert all(0.25 * FPS <= r <= 4 * FPS for r in rates.values()), rates
    assert not stall.is_set(), "the stall never happened"
    p50, p99 = statistics.median(latencies), statistics.quantiles(latencies, n=100)[98]
    print(f"8 RTSP cameras: {min(rates.values()):.1f}-{max(rates.values()):.1f} frames/s each, latency p50 {p50:.1f} "
          f"ms p99 {p99:.1f} ms over {len(latencies)} events, dropped {sum(s['dropped'] for s in streams.values())}")


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return None


def test_a_live_camera_is_opened_by_its_first_read_not_by_open() -> None:
    """The pipeline opens its sources one by one before starting their threads, so ``open`` of a live camera
    must not block (a hung camera held every other one up for its open timeout): the first ``read``, on the
    camera's own thread, opens it at once (no backoff wait before the first try). No RTSP server needed."""
    import numpy as np

    from toolchain.runtime.sources import FrameSource
    from toolchain.serve.reconnect import ReconnectingSource

    answer = threading.Event()
    log: list[str] = []

    class SlowCamera(FrameSource):
        def __init__(self) -> None:
            super().__init__("rtsp://cam", fps=15.0, live=True)

        def open(self) -> None:
            log.append("opening")
            answer.wait(10)

        def read(self) -> np.ndarray | None:
            return np.zeros((4, 4, 3), np.uint8)

    source = ReconnectingSource("cam", SlowCamera, stop=threading.Event(), backoff=Backoff(initial_s=5, max_s=5))
    started = time.monotonic()
    source.open()
    assert time.monotonic() - started < 0.5 and log == []
    threading.Timer(0.2, answer.set).start()
    assert source.read() is not None
    assert log == ["opening"] and time.monotonic() - started < 2  # the 5 s backoff is only for retries
