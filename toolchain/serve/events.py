"""Where ``serve`` writes its events: one JSON line per classified frame, on a bounded amount of disk.

A service writes one line per frame per camera for months. On stdout the container's log driver
bounds it (``deploy`` sets rotation); a ``--events FILE`` rotates by size itself: when the next line
would take the file past ``max_bytes`` it becomes ``FILE.1`` (``FILE.1`` becomes ``FILE.2``...) and
only ``keep`` old files are kept, so the disk used is at most about ``(keep + 1) * max_bytes``.

Standard library only (the roadside runtime).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any, List, Optional, TextIO

from toolchain.errors import BadInputError
from toolchain.runtime.pipeline import FrameRecord, Sink

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
DEFAULT_KEEP = 3


class RotatingFile:
    """An append-only text file that rotates by size (``FILE`` -> ``FILE.1`` ... ``FILE.keep``).

    Args:
        path: The current file (appended to when it exists).
        max_bytes: Rotate before a line would take the file past this size (> 0).
        keep: Rotated files kept (0: the current file only).

    Raises:
        BadInputError: the file cannot be opened for appending.
    """

    def __init__(self, path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, keep: int = DEFAULT_KEEP) -> None:
        if max_bytes <= 0 or keep < 0:
            raise BadInputError("--events-max-bytes must be > 0 and --events-keep >= 0")
        self.path, self.max_bytes, self.keep = Path(path), max_bytes, keep
        self._out: Optional[TextIO] = None
        self._size = 0
        self._open()

    @property
    def closed(self) -> bool:
        return self._out is None

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._out = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise BadInputError(f"cannot append events to {self.path}: {exc.strerror or exc}; pass --events with a "
                                "writable file path (in a read-only container: a mounted volume), or - for stdout") from None
        self._size = self._out.tell()

    def rotated(self) -> List[Path]:
        """The rotated files that exist, newest first."""
        return [p for p in (self.path.with_name(f"{self.path.name}.{i}") for i in range(1, self.keep + 1)) if p.exists()]

    def _rotate(self) -> None:
        assert self._out is not None
        self._out.close()
        if self.keep == 0:
            os.remove(self.path)
        else:
            for i in range(self.keep - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{i}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._open()

    def write(self, text: str) -> None:
        """Append ``text`` (whole lines), rotating first when it would not fit."""
        assert self._out is not None, "write after close"
        size = len(text.encode("utf-8"))
        if self._size > 0 and self._size + size > self.max_bytes:
            self._rotate()
        assert self._out is not None
        self._out.write(text)
        self._size += size

    def flush(self) -> None:
        if self._out is not None:
            self._out.flush()

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


class EventSink(Sink):
    """One JSON line per classified frame (camera, time, label, score, frame, latency_ms), flushed at once.

    Flushing every line means an event is on disk (or in the container log) when its metrics count it,
    and a crash loses at most the frame in flight.

    Args:
        out: stdout or a :class:`RotatingFile`.
        state: The service state fed with every frame (metrics, health).
        names: Camera names by stream index (already free of credentials).
        close_out: Close ``out`` when the pipeline closes the sink.
        publishing: ``serve --publish``: each event is also spooled for the broker (rate limited per camera).
    """

    def __init__(self, out: Any, state: Any, names: List[str], *, close_out: bool, publishing: Any = None) -> None:
        self.out, self.state, self.names, self.close_out = out, state, names, close_out
        self.publishing = publishing

    def write(self, frame: FrameRecord, stream_name: str) -> None:
        camera = self.names[frame.stream]
        latency = time.perf_counter() - frame.t_arrival
        event = {"camera": camera, "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
                 "label": frame.label, "score": round(float(frame.score), 5), "frame": frame.index,
                 "latency_ms": round(latency * 1e3, 3)}
        self.out.write(json.dumps(event) + "\n")
        self.out.flush()
        self.state.frame(camera, frame.label, float(frame.score), latency)
        if self.publishing is not None:
            self.publishing.frame(event)

    def close(self) -> None:
        self.out.flush()
        if self.close_out:
            self.out.close()


class CrossingSink(Sink):
    """One JSON line per vehicle crossing a line (the vehicle pipeline), flushed at once.

    An event: camera, line, direction, class, score, track, frame, time, latency_ms (crossing frame's arrival
    to the event) and how many classifications the class vote had. Every frame still feeds the service state
    (health, frame rate, latency); each crossing feeds ``toolchain_vehicles_total``.

    Args:
        out: stdout or a :class:`RotatingFile`.
        state: The service state.
        names: Camera names by stream index.
        close_out: Close ``out`` when the pipeline closes the sink.
        publishing: ``serve --publish``: each crossing is also spooled for the broker and counted in the
            interval totals.
    """

    def __init__(self, out: Any, state: Any, names: List[str], *, close_out: bool, publishing: Any = None) -> None:
        self.out, self.state, self.names, self.close_out = out, state, names, close_out
        self.publishing = publishing

    def write(self, frame: FrameRecord, stream_name: str) -> None:
        camera = self.names[frame.stream]
        events = frame.vehicle.events if frame.vehicle is not None else []
        for event in events:
            record = event.to_json()
            self.out.write(json.dumps(record) + "\n")
            self.state.crossing(camera, event.line, event.direction, event.cls)
            if self.publishing is not None:
                self.publishing.crossing(record)
        if events:
            self.out.flush()
        if frame.index >= 0:  # a real frame (not the crossings flushed when a stream ended)
            self.state.seen(camera, time.perf_counter() - frame.t_arrival)

    def close(self) -> None:
        self.out.flush()
        if self.close_out:
            self.out.close()
