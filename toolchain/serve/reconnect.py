"""A frame source that survives a camera dropping: reopen with exponential backoff until told to stop.

Wraps the sources of :mod:`toolchain.runtime.sources`. A live camera or network stream that fails to
open, raises while reading, or ends (a camera does not end on its own: the connection dropped) is
closed and reopened after a delay that doubles from ``initial_s`` up to ``max_s`` and resets once a
frame arrives. A file that ends ends (or restarts, with ``loop``). ``read`` returns None as soon as
the stop event is set, which is how ``serve`` stops the pipeline's camera threads on SIGTERM.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from toolchain.errors import UsageError
from toolchain.redaction import scrub
from toolchain.runtime.compat import frozen_config
from toolchain.runtime.sources import FrameSource


@frozen_config
class Backoff:
    """Reconnect delays: ``initial_s``, doubled after each failure, at most ``max_s``."""

    initial_s: float = 0.5
    max_s: float = 30.0

    def __post_init__(self) -> None:
        if self.initial_s <= 0 or self.max_s < self.initial_s:
            raise UsageError("--reconnect-min must be > 0 and --reconnect-max >= --reconnect-min (seconds)")

    def delays(self) -> Callable[[], float]:
        """A function giving the next delay each time it is called."""
        current = [self.initial_s]

        def following() -> float:
            delay = current[0]
            current[0] = min(self.max_s, current[0] * 2)
            return delay

        return following


class ReconnectingSource(FrameSource):
    """Reopens ``factory()`` whenever the stream it gives breaks.

    Args:
        name: Camera name (metrics, events).
        factory: Makes a fresh, unopened source each time it is called.
        stop: Set to end the stream (``read`` returns None).
        backoff: Reconnect delays.
        on_connect: Called with ``(name, reconnect)`` after each successful open.
        on_error: Called with ``(name, message)`` after each failure (open error, read error, drop).
    """

    def __init__(self, name: str, factory: Callable[[], FrameSource], *, stop: threading.Event, backoff: Backoff,
                 on_connect: Callable[[str, bool], None] | None = None,
                 on_error: Callable[[str, str], None] | None = None) -> None:
        self._factory = factory
        probe = factory()
        super().__init__(name, fps=probe.fps, live=probe.live, loop=probe.loop)
        self._pending: FrameSource | None = probe  # the first source is used for the first open
        self._inner: FrameSource | None = None
        self._stop = stop
        self._backoff = backoff
        self._next_delay = backoff.delays()
        self._on_connect = on_connect or (lambda _name, _again: None)
        self._on_error = on_error or (lambda _name, _message: None)
        self._opened_once = False
        self._tried = False  # the first open is tried at once; each one after a failure waits out the backoff
        self.reconnects = 0

    def request_size(self, width: int, height: int) -> None:
        super().request_size(width, height)
        for source in (self._pending, self._inner):
            if source is not None:
                source.request_size(width, height)

    def _try_open(self) -> bool:
        self._tried = True
        source = self._pending or self._factory()
        self._pending = None
        if self.output_size is not None:
            source.request_size(*self.output_size)
        try:
            source.open()
        except Exception as exc:  # noqa: BLE001 - any open failure of a camera is retried
            self._on_error(self.name, f"open failed: {type(exc).__name__}: {scrub(exc)}")
            return False
        self._inner = source
        self.fps, self.live = source.fps, source.live
        again = self._opened_once
        self._opened_once = True
        if again:
            self.reconnects += 1
        self._on_connect(self.name, again)
        return True

    def _drop(self, message: str) -> None:
        if self._inner is not None:
            try:
                self._inner.close()
            except Exception:  # noqa: BLE001 - the connection is already broken
                pass
            self._inner = None
        self._on_error(self.name, message)

    def open(self) -> None:
        """Open a file now; a live camera is opened by the first ``read``, on the camera's own thread.

        The pipeline opens its sources one after another before it starts their threads: a camera that accepts
        the connection but never answers would hold every other camera up for its whole open timeout. A camera
        that is not there yet is retried by ``read`` (a unit may boot before its cameras).
        """
        if self.live:
            return
        if not self._try_open():
            raise UsageError(f"cannot open {self.name}; check the --source path")  # a file that is not there stays so

    def read(self) -> np.ndarray | None:
        return self._next(lambda inner: inner.read())

    def skip(self) -> bool:
        """Move past the next frame without converting it, reconnecting as :meth:`read` does."""
        return self._next(lambda inner: True if inner.skip() else None) is not None

    def _next(self, take: Callable[[FrameSource], Any]) -> Any:
        """``take(camera)`` once a camera is connected: its frame (None at the end), reconnecting on a failure."""
        while not self._stop.is_set():
            if self._inner is None:
                if self._tried and self._stop.wait(self._next_delay()):
                    return None
                if not self._try_open():
                    continue
            assert self._inner is not None
            try:
                frame = take(self._inner)
            except Exception as exc:  # noqa: BLE001 - decode errors and lost connections alike
                self._drop(f"stream broke: {type(exc).__name__}: {scrub(exc)}")
                continue
            if frame is None:
                if not self.live:
                    return None  # a file ended (``--loop`` restarts inside the file source instead)
                self._drop("stream ended (camera dropped)")
                continue
            self._next_delay = self._backoff.delays()  # healthy again: start from the shortest delay next time
            return frame
        return None

    @property
    def arrival(self) -> float:
        """When the current camera's last packet came in (the pipeline's arrival time for live streams)."""
        return float(getattr(self._inner, "arrival", 0.0) or 0.0)

    def close(self) -> None:
        if self._inner is not None:
            try:
                self._inner.close()
            finally:
                self._inner = None
