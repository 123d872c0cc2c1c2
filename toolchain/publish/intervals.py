"""Per-interval totals of line crossings: the compact ``interval`` messages.

An :class:`IntervalCounter` counts crossings by (camera, line, direction, class) and closes an interval at each
boundary. Boundaries are multiples of ``interval_s`` in unix time (12:00:00, 12:01:00, ... for 60 s), so every
unit's intervals line up; the first interval runs from the counter's start to the first boundary and the last
one, at shutdown (:meth:`IntervalCounter.flush`), from the last boundary to the stop. Every interval lists every
known combination, zeros included, so "no trucks this minute" is a message, not a silence. An interval that
ended while nothing was added is still closed (with zeros) at the next :meth:`~IntervalCounter.add` or
:meth:`~IntervalCounter.due`; after a very long gap (the clock jumped, the pipeline stalled) the empty intervals
beyond :data:`MAX_EMPTY_INTERVALS` are merged into one zero interval instead of flooding the spool.

Also :class:`RateLimit`, which keeps per-frame messages to ``frame_rate_limit_hz``. Standard library only,
Python 3.8 compatible.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from toolchain.errors import BadInputError

Key = Tuple[str, str, str]
"""(camera, line, direction)."""

MAX_EMPTY_INTERVALS = 1440
"""Empty intervals emitted one by one after a gap; the rest of the gap becomes one zero interval."""


def _t(value: float) -> float:
    return round(float(value), 3)


class IntervalCounter:
    """Crossing counts per interval (see the module docstring).

    Args:
        keys: The (camera, line, direction) combinations known up front; others are added when first counted.
        classes: The class names known up front (``car``, ``truck``); others are added when first counted.
        interval_s: The interval length in seconds.
        clock: Wall clock (unix seconds).
    """

    def __init__(self, keys: Iterable[Key], classes: Sequence[str], interval_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        if not interval_s > 0:
            raise BadInputError(f"the counting interval must be above 0 s (got {interval_s})")
        self.interval_s = float(interval_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._classes: List[str] = []
        self._counts: Dict[Key, Dict[str, int]] = {}
        for cls in classes:
            self._add_class(str(cls))
        for camera, line, direction in keys:
            self._add_key((str(camera), str(line), str(direction)))
        self._start = float(clock())
        self._end = self._boundary_after(self._start)
        self._closed: List[Dict[str, Any]] = []

    def _boundary_after(self, moment: float) -> float:
        return (math.floor(moment / self.interval_s) + 1) * self.interval_s

    def _add_class(self, cls: str) -> None:
        if cls not in self._classes:
            self._classes.append(cls)
            for per_class in self._counts.values():
                per_class[cls] = 0

    def _add_key(self, key: Key) -> None:
        if key not in self._counts:
            self._counts[key] = {cls: 0 for cls in self._classes}

    def add(self, camera: str, line: str, direction: str, cls: str, count: int = 1) -> None:
        """Count ``count`` crossings now (first closing any interval that has ended)."""
        key = (str(camera), str(line), str(direction))
        with self._lock:
            self._roll(self._clock())
            self._add_key(key)
            self._add_class(str(cls))
            self._counts[key][str(cls)] += int(count)

    def due(self, now: Optional[float] = None) -> List[Dict[str, Any]]:
        """The bodies of the intervals that ended by ``now`` (default: the clock) and were not returned yet."""
        with self._lock:
            self._roll(self._clock() if now is None else float(now))
            closed, self._closed = self._closed, []
            return closed

    def flush(self, now: Optional[float] = None) -> List[Dict[str, Any]]:
        """:meth:`due`, plus the current partial interval up to ``now`` (at shutdown); counting restarts at ``now``."""
        with self._lock:
            now = self._clock() if now is None else float(now)
            self._roll(now)
            if now > self._start:
                self._close(self._start, now)
                self._start = now
            closed, self._closed = self._closed, []
            return closed

    def _roll(self, now: float) -> None:
        emitted_empty = 0
        while now >= self._end:
            empty = not any(any(per_class.values()) for per_class in self._counts.values())
            if empty and emitted_empty >= MAX_EMPTY_INTERVALS:
                last = math.floor(now / self.interval_s) * self.interval_s
                self._close(self._start, last)
                self._start, self._end = last, last + self.interval_s
                continue
            emitted_empty += 1 if empty else 0
            self._close(self._start, self._end)
            self._start, self._end = self._end, self._end + self.interval_s

    def _close(self, start: float, end: float) -> None:
        counts = []
        for (camera, line, direction), per_class in self._counts.items():
            for cls in self._classes:
                counts.append({"camera": camera, "line": line, "direction": direction, "class": cls,
                               "count": per_class.get(cls, 0)})
                per_class[cls] = 0
        self._closed.append({"start": _t(start), "end": _t(end), "counts": counts})


class RateLimit:
    """At most ``rate_hz`` events per second: :meth:`allow` says whether this one may go (per-frame messages)."""

    def __init__(self, rate_hz: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not rate_hz > 0:
            raise BadInputError(f"the rate limit must be above 0 Hz (got {rate_hz})")
        self.period_s = 1.0 / float(rate_hz)
        self._clock = clock
        self._next = float("-inf")
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            now = self._clock()
            if now < self._next:
                return False
            self._next = now + self.period_s
            return True
