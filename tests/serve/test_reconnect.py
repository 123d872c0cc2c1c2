"""Reconnecting sources: a camera that drops is reopened with backoff; stop ends the stream at once."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from toolchain.errors import InputNotFoundError, UsageError
from toolchain.runtime.sources import FrameSource, StreamError
from toolchain.serve.reconnect import Backoff, ReconnectingSource


class ScriptedCamera(FrameSource):
    """A network camera stand-in: each connection follows the next step of a script.

    Steps: ``("refuse",)`` the open fails; ``("frames", n, then)`` n frames, then ``then`` is
    ``"break"`` (read raises) or ``"end"`` (the stream ends, as a dropped RTSP session does).
    """

    def __init__(self, script: list[tuple], log: list[str]) -> None:
        super().__init__("rtsp://cam", fps=10.0, live=True)
        self.script, self.log = script, log
        self._left = 0
        self._then = ""

    def open(self) -> None:
        step = self.script.pop(0) if self.script else ("frames", 10**6, "end")
        if step[0] == "refuse":
            self.log.append("refused")
            raise InputNotFoundError("connection refused")
        self.log.append("open")
        _, self._left, self._then = step

    def read(self) -> np.ndarray | None:
        if self._left == 0:
            if self._then == "break":
                raise StreamError("connection reset by peer")
            return None
        self._left -= 1
        return np.zeros((4, 4, 3), np.uint8)


def test_backoff_doubles_up_to_the_cap() -> None:
    nxt = Backoff(initial_s=0.5, max_s=3).delays()
    assert [nxt() for _ in range(5)] == [0.5, 1.0, 2.0, 3, 3]
    with pytest.raises(UsageError):
        Backoff(initial_s=2, max_s=1)


def test_a_dropped_camera_is_reconnected_and_frames_continue() -> None:
    log: list[str] = []
    script = [("frames", 3, "break"), ("refuse",), ("refuse",), ("frames", 2, "end"), ("frames", 4, "end")]
    events: list[tuple[str, object]] = []
    stop = threading.Event()
    source = ReconnectingSource("cam", lambda: ScriptedCamera(script, log), stop=stop,
                                backoff=Backoff(initial_s=0.01, max_s=0.04),
                                on_connect=lambda n, again: events.append(("connect", again)),
                                on_error=lambda n, msg: events.append(("error", msg)))
    source.open()
    frames = [source.read() for _ in range(9)]
    assert all(f is not None for f in frames)
    assert log == ["open", "refused", "refused", "open", "open"]
    assert source.reconnects == 2
    assert [e for e in events if e[0] == "connect"] == [("connect", False), ("connect", True), ("connect", True)]
    errors = [str(e[1]) for e in events if e[0] == "error"]
    assert len(errors) == 4 and "connection reset" in errors[0] and "ended" in errors[-1]


def test_skipping_frames_reconnects_as_reading_does() -> None:
    """skip() (a frame the vehicle finder does not look at) goes through the same reconnects as read()."""
    log: list[str] = []
    script = [("frames", 2, "break"), ("refuse",), ("frames", 1, "end"), ("frames", 3, "end")]
    source = ReconnectingSource("cam", lambda: ScriptedCamera(script, log), stop=threading.Event(),
                                backoff=Backoff(initial_s=0.01, max_s=0.02))
    source.open()
    moved = [source.skip() if i % 2 else source.read() is not None for i in range(6)]
    assert moved == [True] * 6
    assert log == ["open", "refused", "open", "open"] and source.reconnects == 2


def test_stop_ends_the_stream_even_while_waiting_to_reconnect() -> None:
    stop = threading.Event()
    source = ReconnectingSource("cam", lambda: ScriptedCamera([("refuse",)] * 1000, []), stop=stop,
                                backoff=Backoff(initial_s=5, max_s=5))
    source.open()  # a live camera that is not there yet is not an error: read retries
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    assert source.read() is None
    assert time.monotonic() - started < 2


def test_a_file_that_ends_is_not_reconnected() -> None:
    class File(ScriptedCamera):
        def __init__(self) -> None:
            super().__init__([("frames", 2, "end")], [])
            self.live = False

    source = ReconnectingSource("file", File, stop=threading.Event(), backoff=Backoff(initial_s=0.01))
    source.open()
    assert source.read() is not None and source.read() is not None
    assert source.read() is None
    assert source.reconnects == 0
