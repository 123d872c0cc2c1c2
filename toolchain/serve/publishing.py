"""``serve --publish``: the unit's crossings, interval totals and (rate-limited) frame events, spooled then sent.

:class:`UnitPublishing` ties :mod:`toolchain.publish` to the service: every crossing the pipeline counts is
written to the on-disk spool (:class:`~toolchain.publish.spool.Spool`) before anything else sees it as sent,
and is added to the current interval's totals; a ticker thread closes each interval (default 60 s, with
zeros for every camera, line, direction and class) into an ``interval`` message; the publisher thread
(:class:`~toolchain.publish.mqtt.MqttPublisher`) sends the spool to the broker in order and marks a message
sent only on its PUBACK. The per-frame mode publishes ``frame`` messages too, at most
``frame_rate_limit_hz`` a second per camera.

Nothing here stops counting: a broker that is down, refuses the login or fails TLS, a full disk or a corrupt
spool file each show in ``/healthz`` (``publish``) and ``/metrics``, and the events still go to the events
file or stdout.

Python 3.8 compatible (the roadside runtime).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Tuple

from toolchain.publish.config import BrokerCredentials, PublishConfig, client_id_for
from toolchain.publish.intervals import IntervalCounter, RateLimit
from toolchain.publish.mqtt import MqttPublisher
from toolchain.publish.spool import Spool

SPOOL_FILE = "events.sqlite"
"""The spool's file name inside the spool directory (a unit's spool volume)."""
CONTAINER_SPOOL_DIR = "/var/lib/toolchain/spool"
"""Where ``deploy`` mounts a unit's spool volume (read-write; it outlives upgrades and rollbacks)."""


class UnitPublishing:
    """The spool, the publisher thread and the interval ticker of one ``serve`` run.

    Args:
        config: The broker, topic prefix, interval and spool bounds.
        unit: The unit's id: the MQTT client id's suffix, the topics' unit level and every message's ``unit``.
        spool_dir: Directory of the spool file (created if missing).
        credentials: The broker's login and private CA (from the credentials file), or None.
        keys: The ``(camera, line, direction)`` combinations every interval lists (zeros included).
        classes: The class names every interval lists.
        clock: Wall clock (unix seconds), for interval boundaries.
    """

    def __init__(self, config: PublishConfig, *, unit: str, spool_dir: Path,
                 credentials: Optional[BrokerCredentials] = None, keys: Iterable[Tuple[str, str, str]] = (),
                 classes: Sequence[str] = (), clock: Callable[[], float] = time.time) -> None:
        self.config, self.unit = config, unit
        Path(spool_dir).mkdir(parents=True, exist_ok=True)
        self.spool = Spool(Path(spool_dir) / SPOOL_FILE, unit=unit, max_bytes=config.max_bytes,
                           max_age_s=config.max_age_s)
        self.publisher = MqttPublisher(self.spool, config, client_id=client_id_for(unit), credentials=credentials)
        self.intervals = IntervalCounter(keys, classes, config.interval_s, clock=clock)
        self._frame_limits: Dict[str, RateLimit] = {}
        self._limits_lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="toolchain-intervals", daemon=True)

    def start(self) -> UnitPublishing:
        self.publisher.start()
        self._ticker.start()
        return self

    def crossing(self, event: Dict[str, Any]) -> None:
        """A vehicle crossed a line: spool its message and count it in the current interval."""
        self.publisher.submit("crossing", _body(event))
        self.intervals.add(str(event["camera"]), str(event["line"]), str(event["direction"]), str(event["class"]))

    def frame(self, event: Dict[str, Any]) -> None:
        """A classified frame (the per-frame mode): spooled at most ``frame_rate_limit_hz`` a second per camera."""
        camera = str(event.get("camera", ""))
        with self._limits_lock:
            limit = self._frame_limits.get(camera)
            if limit is None:
                limit = self._frame_limits[camera] = RateLimit(self.config.frame_rate_limit_hz)
        if limit.allow():
            self.publisher.submit("frame", _body(event))

    def health(self) -> Dict[str, Any]:
        """``/healthz``'s ``publish`` entry: broker connectivity, spool depth and age, evictions, losses, errors."""
        return {"unit": self.unit, "interval_s": self.config.interval_s, **self.publisher.health()}

    def close(self, timeout: float = 5.0) -> None:
        """Close the last (partial) interval into the spool, then stop sending; what is unsent stays spooled."""
        self._stop.set()
        if self._ticker.is_alive():
            self._ticker.join(timeout)
        for body in self.intervals.flush():
            self.publisher.submit("interval", body)
        self.publisher.stop(timeout)
        self.spool.close()

    def _tick(self) -> None:
        while not self._stop.wait(min(1.0, self.config.interval_s / 4)):
            for body in self.intervals.due():
                self.publisher.submit("interval", body)


def _body(event: Dict[str, Any]) -> Dict[str, Any]:
    """An event as a message body: its ISO ``time`` (when the event left the pipeline) becomes ``at``, since the
    envelope's ``time`` is when the message was made (unix seconds)."""
    body = {k: v for k, v in event.items() if k != "time"}
    if "time" in event:
        body["at"] = event["time"]
    return body
