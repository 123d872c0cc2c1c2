"""The publisher thread: sends the spool's messages to the MQTT broker in seq order, at least once.

:class:`MqttPublisher` runs one thread that owns the MQTT connection (paho-mqtt, MQTT 3.1.1, QoS 1). Each
connection gets a fresh paho client, and the thread drives it itself (``client.loop``), so paho's callbacks
run in the same thread as the sends and nothing races:

* It reads :meth:`Spool.pending` in seq order and publishes up to ``window`` messages at once (correct with
  a window of 1, too); a message leaves the spool only when its PUBACK arrives (``on_publish``, mapped from
  the packet id to the seq). Acknowledgements are applied in batches: one spool transaction per batch.
* After a reconnect it starts again from the lowest unacknowledged seq, in order. Nothing relies on paho's
  in-memory queue (it dies with the process, and paho would resend it on its own, out of our order): the old
  client is dropped with its queue. A consumer may see a message twice (sent, PUBACK lost, sent again); it
  de-duplicates by ``(unit, seq)``.
* It reconnects on its own with exponential backoff (``reconnect_min_s`` doubling to ``reconnect_max_s``, with
  a little jitter so a fleet does not reconnect in step). A broker that is down at start is fine: health says
  not connected, and the spool grows within its bound.
* A clean session (``clean_session=True``): the broker keeps no state for a pure publisher that we would need;
  durability is the spool's.

:meth:`MqttPublisher.submit` (or :meth:`Spool.append` then :meth:`MqttPublisher.notify`) wakes the sender at
once, so a message leaves within about :data:`TICK_S` of being spooled while the link is up.

TLS (``mqtts://``): the broker is verified against the credentials' CA (``ca_pem``, loaded from memory with
``ssl.create_default_context(cadata=...)``, so it never touches the disk) or the system's CAs, host name
included. The username and password never appear in a log line, an error or :meth:`MqttPublisher.health`.

paho-mqtt is imported when a publisher is made, not when this module is. Python 3.8 compatible.
"""

from __future__ import annotations

import logging
import random
import socket
import ssl
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from toolchain.errors import BadInputError, MissingEnvironmentError
from toolchain.publish import messages
from toolchain.publish.config import BrokerCredentials, PublishConfig
from toolchain.publish.spool import Spool
from toolchain.redaction import register_secret, scrub

_log = logging.getLogger(__name__)

TICK_S = 0.05
"""How long the sender waits for network events before looking at the spool again."""

EXPIRE_EVERY_S = 60.0
"""How often the idle publisher evicts messages past ``max_age_s``."""

STOP_DRAIN_S = 1.0
"""At most this long :meth:`MqttPublisher.stop` waits for PUBACKs of messages in flight (fewer duplicates later)."""


def import_paho() -> Any:
    """The ``paho.mqtt.client`` module, or :class:`MissingEnvironmentError` saying how to install it."""
    try:
        import paho.mqtt.client as mqtt_client
    except ImportError:
        raise MissingEnvironmentError("paho-mqtt is not installed: pip install 'paho-mqtt>=2,<3' (the roadside "
                                      "image ships it)") from None
    if not hasattr(mqtt_client, "CallbackAPIVersion"):
        raise MissingEnvironmentError("paho-mqtt 1.x is installed, the toolchain needs 2.x: "
                                      "pip install 'paho-mqtt>=2,<3'")
    return mqtt_client


def tls_context(credentials: Optional[BrokerCredentials]) -> ssl.SSLContext:
    """A client TLS context that verifies the broker (and its host name) against ``ca_pem`` or the system's CAs.

    Raises:
        BadInputError: ``ca_pem`` is not a certificate OpenSSL can load.
    """
    ca_pem = credentials.ca_pem if credentials is not None else ""
    try:
        context = ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()
    except (ssl.SSLError, ValueError) as exc:
        raise BadInputError(f"broker.ca in the credentials file is not a certificate OpenSSL can load "
                            f"({scrub(exc)}): paste the CA certificate in PEM form") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def make_client(config: PublishConfig, credentials: Optional[BrokerCredentials], *, client_id: str,
                clean_session: bool = True, context: Optional[ssl.SSLContext] = None) -> Any:
    """A paho client (MQTT 3.1.1, callback API 2) set up for ``config``: login, TLS, timeouts. Not connected."""
    mqtt = import_paho()
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         clean_session=clean_session, protocol=mqtt.MQTTv311)
    client.connect_timeout = config.connect_timeout_s
    if credentials is not None and credentials.username:
        client.username_pw_set(credentials.username, credentials.password or None)
    if config.tls:
        client.tls_set_context(context if context is not None else tls_context(credentials))
    return client


def describe_connect_error(config: PublishConfig, exc: BaseException) -> str:
    """What went wrong when connecting to the broker, and what to do; no credentials in it."""
    where = f"the broker {config.display_url}"
    text = scrub(exc)
    if isinstance(exc, ssl.SSLCertVerificationError) or isinstance(exc, ssl.CertificateError):
        detail = scrub(getattr(exc, "verify_message", "") or text)
        return (f"TLS: {where} presented a certificate this unit does not trust ({detail}): set ca in the broker "
                "table of the credentials file to the CA that signed the broker's certificate, and check the "
                "certificate names the host in the URL")
    if isinstance(exc, ssl.SSLError):
        return (f"TLS handshake with {where} failed ({text}): check the broker has a TLS listener on port "
                f"{config.port} (mqtts://) and its certificate")
    if isinstance(exc, ConnectionRefusedError):
        return (f"{where} refused the connection on {config.host}:{config.port}: is the broker running and "
                "listening on that port?")
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the broker host {config.host!r} ({text}): check the URL and the unit's DNS"
    if isinstance(exc, socket.timeout):
        return (f"connecting to {where} timed out after {config.connect_timeout_s:g} s: the link may be down or a "
                "firewall drops the port")
    return f"could not connect to {where} ({text}); retrying"


def describe_connack(config: PublishConfig, reason: Any, client_id: str) -> str:
    """The error for a broker that answered CONNECT with a refusal (``reason``: paho's ReasonCode)."""
    name = str(reason)
    where = f"the broker {config.display_url}"
    lowered = name.lower()
    if "user name or password" in lowered or "not authorized" in lowered:
        return (f"{where} refused the username/password (not authorised: {name}): fix the broker table of the "
                "credentials file")
    if "identifier" in lowered:
        return f"{where} refused the client id {client_id!r} ({name}): check the broker's client id rules"
    if "unavailable" in lowered:
        return f"{where} says it is unavailable ({name}); retrying"
    return f"{where} refused the connection ({name}); retrying"


class _Session:
    """One connection's state (only the publisher thread touches it)."""

    def __init__(self) -> None:
        self.connected = False
        self.refused = ""
        self.lost = ""
        self.inflight: Dict[int, int] = {}  # paho mid -> seq
        self.acked: List[int] = []
        self.cursor = 0  # highest seq published on this connection


class MqttPublisher:
    """Publishes a :class:`Spool` to the broker of ``config`` (see the module docstring).

    Args:
        spool: The spool to drain (its ``unit`` names the topics of :meth:`submit`).
        config: The broker and the knobs.
        client_id: The MQTT client id: stable per unit (:func:`toolchain.publish.config.client_id_for`).
        credentials: Username/password and CA; None for an anonymous broker with system CAs.
        clock: Monotonic clock for ``last_puback_age_s``.

    Raises:
        MissingEnvironmentError: paho-mqtt 2.x is not installed.
        BadInputError: the CA in ``credentials`` cannot be loaded.
    """

    def __init__(self, spool: Spool, config: PublishConfig, *, client_id: str,
                 credentials: Optional[BrokerCredentials] = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._mqtt = import_paho()
        self.spool = spool
        self.config = config
        self.client_id = client_id
        self._credentials = credentials
        if credentials is not None:
            register_secret(credentials.password)
            if credentials.password and not config.tls:
                _log.warning("the broker password goes over plain mqtt:// to %s: use mqtts:// where the link is "
                             "not private", config.display_url)
        self._context = tls_context(credentials) if config.tls else None
        self._clock = clock
        self._lock = threading.Lock()
        self._connected = False
        self._error = ""
        self._sent = 0
        self._in_flight = 0
        self._last_puback: Optional[float] = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._next_expire = 0.0
        self._random = random.Random()

    # ------------------------------------------------------------------------------------------- public

    def start(self) -> MqttPublisher:
        """Start the publisher thread (connects in the background)."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"mqtt-publisher-{self.spool.unit}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Disconnect cleanly and stop the thread; unsent messages stay in the spool for the next start."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                _log.warning("the MQTT publisher thread did not stop within %.1f s", timeout)
            else:
                self._thread = None

    def notify(self) -> None:
        """Tell the sender the spool has something new (call after :meth:`Spool.append`)."""
        self._wake.set()

    def submit(self, kind: str, body: Dict[str, Any]) -> Optional[int]:
        """Spool a ``kind`` message on this unit's topic and wake the sender; the seq, or None if it was lost."""
        topic = messages.topic(self.config.prefix, self.spool.unit, kind)
        seq = self.spool.append(kind, topic, body)
        self._wake.set()
        return seq

    def health(self) -> Dict[str, Any]:
        """The publisher's state for ``/healthz`` (no credentials in it)."""
        stats = self.spool.stats()
        with self._lock:
            connected, error, sent, in_flight = self._connected, self._error, self._sent, self._in_flight
            last = self._last_puback
        return {
            "broker": self.config.display_url,
            "connected": connected,
            "error": scrub(error),
            "spool_depth": stats.depth,
            "spool_bytes": stats.bytes,
            "oldest_unsent_age_s": None if stats.oldest_unsent_age_s is None else round(stats.oldest_unsent_age_s, 3),
            "evicted": dict(stats.evicted),
            "lost": stats.lost,
            "sent": sent,
            "in_flight": in_flight,
            "last_puback_age_s": None if last is None else round(max(0.0, self._clock() - last), 3),
            "last_seq": stats.last_seq,
            "spool_error": scrub(stats.error),
        }

    def wait_until_sent(self, timeout: float) -> bool:
        """Wait until the spool is empty (everything acknowledged); whether it became so within ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.spool.stats().depth == 0:
                return True
            time.sleep(0.05)
        return self.spool.stats().depth == 0

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._connected

    def __enter__(self) -> MqttPublisher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"MqttPublisher({self.config.display_url!r}, client_id={self.client_id!r})"

    # ------------------------------------------------------------------------------------------- thread

    def _set(self, *, connected: Optional[bool] = None, error: Optional[str] = None, in_flight: Optional[int] = None) -> None:
        with self._lock:
            if connected is not None:
                self._connected = connected
            if error is not None:
                if error and error != self._error:
                    _log.warning("%s", scrub(error))
                self._error = error
            if in_flight is not None:
                self._in_flight = in_flight

    def _run(self) -> None:
        delay = self.config.reconnect_min_s
        while not self._stop.is_set():
            try:
                was_connected = self._session()
            except Exception as exc:  # a bug or an unexpected paho error: report, back off, go on
                _log.exception("MQTT publisher session failed")
                self._set(connected=False, error=f"publisher error: {scrub(exc)}")
                was_connected = False
            if self._stop.is_set():
                break
            self._maybe_expire()
            if was_connected:
                delay = self.config.reconnect_min_s
            self._stop.wait(delay * self._random.uniform(0.8, 1.2))
            if not was_connected:
                delay = min(delay * 2, self.config.reconnect_max_s)
        self._set(connected=False, in_flight=0)

    def _maybe_expire(self) -> None:
        now = time.monotonic()
        if now >= self._next_expire:
            self._next_expire = now + EXPIRE_EVERY_S
            self.spool.expire()

    def _session(self) -> bool:
        """One connection, from CONNECT until it drops or stop; whether the broker accepted it."""
        mqtt = self._mqtt
        state = _Session()
        client = make_client(self.config, self._credentials, client_id=self.client_id, context=self._context)
        client.max_inflight_messages_set(self.config.window)

        def on_connect(_client: Any, _userdata: Any, _flags: Any, reason: Any, _properties: Any) -> None:
            if reason.is_failure:
                state.refused = describe_connack(self.config, reason, self.client_id)
            else:
                state.connected = True

        def on_disconnect(_client: Any, _userdata: Any, _flags: Any, reason: Any, _properties: Any) -> None:
            state.lost = str(reason)

        def on_publish(_client: Any, _userdata: Any, mid: int, _reason: Any, _properties: Any) -> None:
            seq = state.inflight.pop(mid, None)
            if seq is not None:
                state.acked.append(seq)

        client.on_connect, client.on_disconnect, client.on_publish = on_connect, on_disconnect, on_publish
        try:
            try:
                client.connect(self.config.host, self.config.port, keepalive=self.config.keepalive_s)
            except (OSError, ValueError) as exc:  # ssl.SSLError and socket errors are OSErrors
                self._set(connected=False, error=describe_connect_error(self.config, exc))
                return False
            return self._drive(client, state, mqtt.MQTT_ERR_SUCCESS)
        finally:
            self._apply_acks(state)
            self._set(connected=False, in_flight=0)
            try:
                client.disconnect()
            except Exception:  # noqa: S110 - already gone
                pass
            close = getattr(client, "_reset_sockets", None)  # free the socket pair now, not at garbage collection
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: S110
                    pass

    def _drive(self, client: Any, state: _Session, ok: int) -> bool:
        deadline = time.monotonic() + self.config.connect_timeout_s
        accepted = False
        more, next_look = True, 0.0
        while True:
            if self._stop.is_set():
                if accepted:
                    self._drain_and_disconnect(client, state, ok)
                return accepted
            rc = client.loop(timeout=0.0 if (accepted and more and len(state.inflight) < self.config.window)
                             else TICK_S)
            if state.refused:
                self._set(connected=False, error=state.refused)
                return False
            if rc != ok:
                if accepted:
                    why = self._mqtt.error_string(rc)
                    if state.lost and state.lost not in ("Unspecified error", "Success"):
                        why = f"{why} {state.lost}"
                    self._set(connected=False, error=f"lost the connection to the broker {self.config.display_url} "
                                                     f"({why}); reconnecting")
                else:
                    hint = "" if self.config.tls else " (a TLS-only port? use mqtts://)"
                    self._set(connected=False, error=f"the broker {self.config.display_url} closed the connection "
                                                     f"before accepting it{hint}; retrying")
                return accepted
            now = time.monotonic()
            if not state.connected:
                if now > deadline:
                    self._set(connected=False, error=f"the broker {self.config.display_url} did not answer CONNECT "
                                                     f"within {self.config.connect_timeout_s:g} s; retrying")
                    return False
                continue
            if not accepted:
                accepted = True
                self._set(connected=True, error="")
                _log.info("connected to the MQTT broker %s", self.config.display_url)
            if self._apply_acks(state):
                more = True
            if self._wake.is_set():
                self._wake.clear()
                more = True
            if now >= next_look:
                more = True
            room = self.config.window - len(state.inflight)
            if more and room > 0:
                entries = self.spool.pending(room, after_seq=state.cursor)
                next_look = now + 1.0
                more = len(entries) == room
                for entry in entries:
                    try:
                        info = client.publish(entry.topic, entry.payload, qos=self.config.qos)
                    except ValueError as exc:  # an invalid topic or payload can never be sent: do not block the rest
                        self.spool.discard(entry.seq, reason="unsendable")
                        _log.error("spool message %d cannot be published (%s): dropped and counted",
                                   entry.seq, scrub(exc))
                        state.cursor = entry.seq
                        continue
                    state.inflight[info.mid] = entry.seq
                    state.cursor = entry.seq
                    if info.rc != ok:
                        break  # the connection just dropped: the next loop() ends the session
                self._set(in_flight=len(state.inflight))
            self._maybe_expire()

    def _apply_acks(self, state: _Session) -> bool:
        if not state.acked:
            return False
        acked, state.acked = state.acked, []
        self.spool.mark_sent_many(acked)
        with self._lock:
            self._sent += len(acked)
            self._last_puback = self._clock()
            self._in_flight = len(state.inflight)
        return True

    def _drain_and_disconnect(self, client: Any, state: _Session, ok: int) -> None:
        until = time.monotonic() + STOP_DRAIN_S
        while state.inflight and time.monotonic() < until:
            if client.loop(timeout=TICK_S) != ok:
                return
        self._apply_acks(state)
        try:
            client.disconnect()
            for _ in range(5):
                if client.loop(timeout=TICK_S) != ok:
                    break
        except Exception:  # noqa: S110 - the connection went first
            pass
