"""A subscriber for the units' counts: what ``toolchain events tail`` runs, and the model for a consumer.

:func:`tail` subscribes ``{prefix}/{unit}/#`` at QoS 1, parses each message (:func:`toolchain.publish.messages.decode`),
drops the duplicates at-least-once delivery brings (a message resent after a lost PUBACK) with a
:class:`Deduplicator`, and hands each message to a callback, until told to stop. It reconnects and subscribes
again by itself. With a ``client_id`` it asks the broker for a persistent session (``clean_session=False``):
a broker that keeps sessions then queues the messages that arrive while this subscriber is away (across broker
restarts too, with broker persistence on), which is how a consumer that must not miss a count should run.

A consumer de-duplicates by ``(unit, seq)``::

    dedupe = Deduplicator()

    def on_message(message):
        if dedupe.is_duplicate(message["unit"], message["seq"]):
            return
        store(message)

Python 3.8 compatible; paho-mqtt is imported when :func:`tail` runs.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any, Callable, Dict, Optional, Set

from toolchain.errors import BadInputError
from toolchain.publish import messages
from toolchain.publish.config import BrokerCredentials, PublishConfig
from toolchain.publish.mqtt import describe_connack, describe_connect_error, import_paho, make_client, tls_context
from toolchain.redaction import register_secret, scrub

_log = logging.getLogger(__name__)


class Deduplicator:
    """Remembers, per unit, the highest seq seen and the seqs seen within ``window`` below it.

    A publisher resends in seq order from its lowest unacknowledged message, so a duplicate is always close to
    the highest seq seen; a seq more than ``window`` below it is reported as a duplicate too (too old to tell).
    A seq not seen before but below the highest (one this subscriber missed and got late) is new.
    """

    def __init__(self, window: int = 10000) -> None:
        if window < 1:
            raise BadInputError("the de-duplication window must be at least 1")
        self.window = int(window)
        self._highest: Dict[str, int] = {}
        self._seen: Dict[str, Set[int]] = {}
        self._lock = threading.Lock()

    def is_duplicate(self, unit: str, seq: int) -> bool:
        """Whether ``(unit, seq)`` was seen already; records it when not."""
        with self._lock:
            highest = self._highest.get(unit)
            seen = self._seen.setdefault(unit, set())
            if highest is not None and (seq in seen or seq <= highest - self.window):
                return True
            seen.add(seq)
            if highest is None or seq > highest:
                self._highest[unit] = highest = seq
            if len(seen) > 2 * self.window:
                floor = highest - self.window
                self._seen[unit] = {s for s in seen if s > floor}
            return False

    def highest(self, unit: str) -> Optional[int]:
        """The highest seq seen from ``unit`` (None before its first message)."""
        with self._lock:
            return self._highest.get(unit)


def tail(config: PublishConfig, *, credentials: Optional[BrokerCredentials] = None,
         on_message: Callable[[Dict[str, Any]], None], stop: threading.Event, unit: str = "+", dedupe: bool = True,
         client_id: Optional[str] = None, on_ready: Optional[Callable[[], None]] = None,
         on_error: Optional[Callable[[str], None]] = None) -> int:
    """Call ``on_message`` with each message from ``unit`` (``+``: every unit) until ``stop`` is set.

    Args:
        config: The broker and topic prefix (the publish URL of the units).
        credentials: Username/password and CA for the broker.
        on_message: Gets each message as a dict (envelope and body). It runs in the calling thread; an exception
            in it ends :func:`tail` (the message is then not acknowledged, so a persistent session gets it again).
        stop: Set it (from another thread or a signal handler) to return.
        unit: One unit's id, or ``+`` for all.
        dedupe: Drop repeated ``(unit, seq)``.
        client_id: A stable id asks for a persistent session (the broker queues messages while away); None: a
            random id and a clean session.
        on_ready: Called after each successful subscription (after every reconnect too).
        on_error: Called with each connection problem (already logged).

    Returns:
        How many messages were passed to ``on_message``.
    """
    mqtt = import_paho()
    if credentials is not None:
        register_secret(credentials.password)
    topic_filter = config.topic_filter(unit)
    context = tls_context(credentials) if config.tls else None
    persistent = client_id is not None
    client_id = client_id or f"toolchain-tail-{random.getrandbits(48):012x}"
    dedup = Deduplicator() if dedupe else None
    delivered = [0]
    delay = config.reconnect_min_s

    def report(problem: str) -> None:
        _log.warning("%s", scrub(problem))
        if on_error is not None:
            on_error(scrub(problem))

    while not stop.is_set():
        client = make_client(config, credentials, client_id=client_id, clean_session=not persistent, context=context)
        state: Dict[str, Any] = {"connected": False, "refused": ""}

        def handle_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any, state: Dict[str, Any] = state,
                           client: Any = client) -> None:
            if reason.is_failure:
                state["refused"] = describe_connack(config, reason, client_id)
            else:
                state["connected"] = True
                client.subscribe(topic_filter, qos=1)

        def handle_subscribe(_c: Any, _u: Any, _mid: int, reasons: Any, _p: Any) -> None:
            if any(getattr(r, "is_failure", False) for r in reasons):
                report(f"the broker {config.display_url} refused the subscription to {topic_filter}: check the "
                       "broker's access rules for this user")
            elif on_ready is not None:
                on_ready()

        def handle_message(_c: Any, _u: Any, msg: Any) -> None:
            try:
                message = messages.decode(msg.payload)
            except BadInputError as exc:
                _log.warning("skipped a message on %s: %s", msg.topic, exc)
                return
            if dedup is not None and dedup.is_duplicate(str(message["unit"]), int(message["seq"])):
                return
            delivered[0] += 1
            on_message(message)

        client.on_connect, client.on_subscribe, client.on_message = handle_connect, handle_subscribe, handle_message
        accepted = False
        try:
            try:
                client.connect(config.host, config.port, keepalive=config.keepalive_s)
            except (OSError, ValueError) as exc:
                report(describe_connect_error(config, exc))
            else:
                deadline = time.monotonic() + config.connect_timeout_s
                while not stop.is_set():
                    rc = client.loop(timeout=0.1)
                    if state["refused"]:
                        report(state["refused"])
                        break
                    if rc != mqtt.MQTT_ERR_SUCCESS:
                        report(f"lost the connection to the broker {config.display_url} ({mqtt.error_string(rc)}); "
                               "reconnecting")
                        break
                    if state["connected"]:
                        accepted = True
                    elif time.monotonic() > deadline:
                        report(f"the broker {config.display_url} did not answer CONNECT in time; retrying")
                        break
                if stop.is_set():
                    client.disconnect()
                    client.loop(timeout=0.1)
        finally:
            close = getattr(client, "_reset_sockets", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: S110
                    pass
        if stop.is_set():
            break
        delay = config.reconnect_min_s if accepted else min(delay * 2, config.reconnect_max_s)
        stop.wait(delay * random.uniform(0.8, 1.2))
    return delivered[0]
