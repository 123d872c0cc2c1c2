"""A real RTSP camera for tests: ``scripts/rtsp_server`` (GStreamer's RTSP server) in a child process.

The server runs with Debian's ``/usr/bin/python3`` (``RTSP_SERVER_PYTHON`` overrides it), which needs
``python3-gi`` and ``gir1.2-gst-rtsp-server-1.0`` plus the GStreamer plugins; tests that use it skip,
saying what to install, where they are missing. Use the ``rtsp_server`` fixture::

    from tests.serve.rtsp import rtsp_server_fixture  # noqa: F401 - the fixture

    def test_x(rtsp_server, tmp_path):
        server = rtsp_server({"cam": camera_clip(tmp_path / "cam.mp4")})
        server.url("cam")  # rtsp://127.0.0.1:PORT/cam
        server.kill(); server.start()  # a camera that drops and comes back on the same port
        rtsp_server({"cam": clip}, auth=("admin", "secret"))  # a camera that wants a password (HTTP Basic)

Every server a test started is stopped (resumed first if paused) when the test ends.
"""

from __future__ import annotations

import functools
import json
import os
import selectors
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

from tests.services import skip_or_fail

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "rtsp_server.py"
PACKAGES = ("gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base gstreamer1.0-plugins-good "
            "gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad gstreamer1.0-libav")
_PROBE = """
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer
Gst.init(None)
elements = ("filesrc", "qtdemux", "h264parse", "rtph264pay", "videotestsrc", "openjpegenc", "rtpj2kpay")
missing = [e for e in elements if not Gst.ElementFactory.find(e)]
assert not missing, "GStreamer elements missing: " + ", ".join(missing)
"""


def camera_clip(path: Path, *, seconds: float = 2.0, fps: int = 15, size: tuple[int, int] = (160, 96)) -> Path:
    """An H.264 MP4 like a camera's stream: a key frame every second and no B-frames (a bar moving across).

    A client joining a live stream waits for the next key frame, so the GOP is short; cameras rarely send
    B-frames (they add a frame of latency).
    """
    from tests.serve.fixtures import write_video

    return write_video(path, frames=round(seconds * fps), fps=fps, size=size,
                       options={"g": str(fps), "bf": "0", "preset": "veryfast"})


def system_python() -> str:
    return os.environ.get("RTSP_SERVER_PYTHON", "/usr/bin/python3")


@functools.cache
def unavailable() -> str | None:
    """Why the RTSP server cannot run here (None: it can)."""
    python = system_python()
    if not os.access(python, os.X_OK):
        return f"no {python} to run scripts/rtsp_server (apt-get install -y {PACKAGES})"
    try:
        probe = subprocess.run([python, "-c", _PROBE], check=False, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{python} cannot be run: {exc}"
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return f"{python} lacks GStreamer's RTSP server ({last}): apt-get install -y {PACKAGES}"
    return None


class RtspServer:
    """One ``scripts/rtsp_server`` process serving ``files`` (``NAME: path``) and ``launch`` (``NAME: description``).

    ``port`` 0 takes a free port on the first start; later starts reuse the port, as a camera does.
    ``auth`` ``(username, password)``: every path requires them (HTTP Basic). The server reads them from a
    file (``--auth-file``), removed once it is ready: the password is never on its command line.
    """

    def __init__(self, files: dict[str, Path], *, launch: dict[str, str] | None = None, port: int = 0,
                 loop: bool = True, log: Path | None = None, auth: tuple[str, str] | None = None) -> None:
        self.files, self.launch, self.port, self.loop = dict(files), dict(launch or {}), port, loop
        self.log = log
        self.auth = auth
        self.process: subprocess.Popen[str] | None = None
        self._stderr: IO[str] | None = None  # the log file, open while the process runs
        self.paused = False
        self.returncode: int | None = None  # of the last process, once it ended

    def url(self, name: str) -> str:
        assert self.port, "start the server first"
        return f"rtsp://127.0.0.1:{self.port}/{name}"

    def start(self, timeout: float = 30.0) -> RtspServer:
        """Start the process and wait for its ready line (the port it listens on)."""
        assert self.process is None or self.process.poll() is not None, "already running"
        auth_file = self._auth_file()
        command = [system_python(), str(SCRIPT), "--host", "127.0.0.1", "--port", str(self.port), "--exit-with-stdin",
                   *(("--auth-file", str(auth_file)) if auth_file else ()),
                   *(f"{name}={path}" for name, path in self.files.items()),
                   *(arg for name, description in self.launch.items() for arg in ("--launch", f"{name}={description}")),
                   *(() if self.loop else ("--no-loop",))]
        log = open(self.log, "a") if self.log else None  # noqa: SIM115 - closed by _end
        self._stderr = log
        # stdin is a pipe only this process holds: if the test runner dies, the server sees its end and stops.
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=log or subprocess.DEVNULL, text=True, start_new_session=True)
        self.paused = False
        try:
            line = _read_line(self.process.stdout, timeout)  # type: ignore[arg-type]
        finally:
            if auth_file:
                auth_file.unlink()  # read before the ready line
        if not line:
            self.stop()
            tail = self.log.read_text()[-2000:] if self.log and self.log.exists() else ""
            raise RuntimeError(f"scripts/rtsp_server did not get ready in {timeout:g} s: {command}\n{tail}")
        ready = json.loads(line)
        assert ready["ready"] and (not self.port or ready["port"] == self.port), ready
        self.port = int(ready["port"])
        return self

    def _auth_file(self) -> Path | None:
        if self.auth is None:
            return None
        fd, name = tempfile.mkstemp(prefix="rtsp-auth-", dir=self.log.parent if self.log else None)  # mode 0600
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{self.auth[0]}:{self.auth[1]}\n")
        return Path(name)

    def kill(self) -> None:
        """SIGKILL: the camera vanishes without a goodbye (power cut, crash)."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM, and wait for a clean exit (SIGKILL after 10 s)."""
        self._end(signal.SIGTERM)

    def pause(self) -> None:
        """SIGSTOP: connections stay open, nothing more is sent (a hung camera)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)
        self.paused = False

    def _end(self, signum: int) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            if self.paused:
                os.kill(process.pid, signal.SIGCONT)
                self.paused = False
            process.send_signal(signum)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        self.returncode = process.returncode


def _read_line(stream: IO[str], timeout: float) -> str:
    """One line from a child's stdout pipe, or "" after ``timeout`` seconds or at end of file."""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if selector.select(left):
                return stream.readline()  # the server prints its ready line in one flushed write
    return ""


StartServer = Callable[..., RtspServer]
"""``(files, *, launch=None, port=0, loop=True, auth=None) -> RtspServer``: starts a server (see :class:`RtspServer`)."""


@pytest.fixture(name="rtsp_server")
def rtsp_server_fixture(tmp_path: Path) -> Iterator[StartServer]:
    """A :data:`StartServer`; every server it started is stopped when the test ends (import this to use it)."""
    reason = unavailable()
    if reason:
        skip_or_fail("rtsp", reason)  # a failure where $TOOLCHAIN_TEST_REQUIRE_RTSP is set (CI installed it)
    servers: list[RtspServer] = []

    def start(files: dict[str, Path], **kwargs: object) -> RtspServer:
        server = RtspServer(files, log=tmp_path / f"rtsp-server-{len(servers)}.log", **kwargs)  # type: ignore[arg-type]
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
