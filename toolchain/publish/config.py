"""Where and how a unit publishes: the publish URL (:class:`PublishConfig`) and the broker's credentials.

The URL names the broker and the topic prefix only: ``mqtt://HOST[:PORT]/PREFIX`` (plain, port 1883) or
``mqtts://HOST[:PORT]/PREFIX`` (TLS, port 8883). The username, password and a private CA live in the unit's
credentials file, in its ``broker`` table (:func:`broker_credentials_from`), never in the URL: the URL is shown
in logs, ``/healthz`` and deploy records, the credentials file is not.

Standard library only, Python 3.8 compatible.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Dict, Optional
from urllib.parse import urlsplit

from toolchain.errors import BadInputError
from toolchain.publish.messages import check_prefix, check_unit
from toolchain.redaction import redact_url, register_secret

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
MIB = 1 << 20
DAY_S = 86400.0

_BROKER_KEYS = ("username", "password", "ca")


@dataclass(frozen=True)
class BrokerCredentials:
    """The broker login and, for ``mqtts://`` to a broker with a private CA, that CA's certificate (PEM text).

    ``ca_pem`` empty: the system's CAs verify the broker. Neither the username nor the password shows in
    ``repr`` (and so in no log line or traceback that prints the object).
    """

    username: str = ""
    password: str = ""
    ca_pem: str = ""

    def __repr__(self) -> str:
        user = "***" if self.username else "''"
        password = "***" if self.password else "''"
        ca = f"<{len(self.ca_pem)} characters>" if self.ca_pem else "''"
        return f"BrokerCredentials(username={user}, password={password}, ca_pem={ca})"

    __str__ = __repr__


def broker_credentials_from(document: Dict[str, Any]) -> Optional[BrokerCredentials]:
    """The ``broker`` table of a unit's credentials document, or None when it has none.

    ``{"cameras": {...}, "broker": {"username": "u", "password": "p", "ca": "-----BEGIN CERTIFICATE-----..."}}``:
    every key is optional; the password is registered with :func:`toolchain.redaction.register_secret` so it is
    masked in anything scrubbed afterwards.

    Raises:
        BadInputError: ``broker`` is not a table, a key is unknown (named, its value never shown), a value is
            not a string, a password without a username, or a ``ca`` that is not a PEM certificate.
    """
    if not isinstance(document, dict):
        raise BadInputError("the credentials document is not a table/object: check the credentials file")
    table = document.get("broker")
    if table is None:
        return None
    if not isinstance(table, dict):
        raise BadInputError("the credentials file's 'broker' entry must be a table with username, password and ca")
    unknown = sorted(str(key) for key in table if key not in _BROKER_KEYS)
    if unknown:
        raise BadInputError(f"unknown key(s) {', '.join(repr(k) for k in unknown)} in the credentials file's broker "
                            f"table: it takes only {', '.join(_BROKER_KEYS)}")
    values = {}
    for key in _BROKER_KEYS:
        value = table.get(key, "")
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise BadInputError(f"broker.{key} in the credentials file must be a string")
        values[key] = value
    register_secret(values["password"])
    if values["password"] and not values["username"]:
        raise BadInputError("broker.password is set but broker.username is not: MQTT sends a password only with a "
                            "username; add broker.username to the credentials file")
    ca = values["ca"].strip()
    if ca and "-----BEGIN CERTIFICATE-----" not in ca:
        raise BadInputError("broker.ca in the credentials file is not a PEM certificate: paste the CA certificate "
                            "text, from -----BEGIN CERTIFICATE----- to -----END CERTIFICATE-----")
    return BrokerCredentials(username=values["username"], password=values["password"], ca_pem=ca + "\n" if ca else "")


@dataclass(frozen=True)
class PublishConfig:
    """The parsed publish URL and the publishing knobs (:func:`parse_publish_url` makes one).

    Attributes:
        url: The URL as given (it never carries credentials: :func:`parse_publish_url` refuses them).
        host, port, tls: The broker; ``tls`` for ``mqtts://``.
        prefix: Topic prefix; messages go to ``{prefix}/{unit}/{kind}``.
        interval_s: Length of a counting interval (one ``interval`` message each).
        max_bytes: Bound on the spool's unsent message bytes (topic + payload); beyond it the oldest crossings go.
        max_age_s: Unsent messages older than this are dropped (counted).
        qos: 1 (at least once) or 2; 0 is refused: it cannot be acknowledged, so nothing could be kept until sent.
        keepalive_s: MQTT keepalive; a dead link is noticed within about 1.5 times this.
        frame_rate_limit_hz: At most this many per-frame messages per second (the pipeline applies it).
        window: Messages in flight (published, not yet acknowledged) at once.
        reconnect_min_s, reconnect_max_s: Reconnect backoff: doubles from min after each failure, capped at max.
        connect_timeout_s: How long a connection attempt (TCP, TLS and CONNACK) may take.
    """

    url: str
    host: str
    port: int
    tls: bool
    prefix: str
    interval_s: float = 60.0
    max_bytes: int = 64 * MIB
    max_age_s: float = 7 * DAY_S
    qos: int = 1
    keepalive_s: int = 30
    frame_rate_limit_hz: float = 1.0
    window: int = 20
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 30.0
    connect_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        check_prefix(self.prefix)
        if not self.host:
            raise BadInputError(f"the publish URL {redact_url(self.url)} names no broker host: use "
                                "mqtt://HOST[:PORT]/PREFIX")
        if not 0 < self.port < 65536:
            raise BadInputError(f"broker port {self.port} is out of range 1-65535")
        positive = {"interval_s": self.interval_s, "max_age_s": self.max_age_s, "reconnect_min_s": self.reconnect_min_s,
                    "reconnect_max_s": self.reconnect_max_s, "connect_timeout_s": self.connect_timeout_s,
                    "frame_rate_limit_hz": self.frame_rate_limit_hz}
        for name, value in positive.items():
            if not value > 0:
                raise BadInputError(f"publish setting {name} must be above 0 (got {value})")
        if self.max_bytes < 4096:
            raise BadInputError(f"publish setting max_bytes must be at least 4096 (got {self.max_bytes})")
        if self.qos not in (1, 2):
            raise BadInputError(f"publish setting qos must be 1 or 2 (got {self.qos}): QoS 0 is never acknowledged, "
                                "so the spool could not know a message arrived")
        if not 0 <= self.keepalive_s <= 65535:
            raise BadInputError(f"publish setting keepalive_s must be 0-65535 (got {self.keepalive_s})")
        if not 1 <= self.window <= 1000:
            raise BadInputError(f"publish setting window must be 1-1000 (got {self.window})")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise BadInputError("publish setting reconnect_max_s is below reconnect_min_s")

    @property
    def display_url(self) -> str:
        """The URL for logs and /healthz (it has no credentials; redacted all the same)."""
        return redact_url(self.url)

    def topic_filter(self, unit: str = "+") -> str:
        """The subscription filter for ``unit``'s messages (``+``: every unit's)."""
        if unit != "+":
            check_unit(unit)
        return f"{self.prefix.rstrip('/')}/{unit}/#"


def parse_publish_url(url: str, **overrides: Any) -> PublishConfig:
    """Parse ``mqtt://HOST[:PORT]/TOPIC-PREFIX`` or ``mqtts://...`` into a :class:`PublishConfig`.

    ``overrides`` set the other fields (``interval_s=30``, ``max_bytes=...``).

    Raises:
        BadInputError: another scheme, a username/password in the URL (they belong in the credentials file's
            ``broker`` table; the message never repeats them), no host, a bad port, an empty prefix or one with
            ``+``, ``#``, a query or a fragment.
        TypeError: an override that is not a field.
    """
    shown = redact_url(url)
    known = {f.name for f in fields(PublishConfig)} - {"url", "host", "port", "tls", "prefix"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"parse_publish_url() got unknown setting(s) {', '.join(unknown)}")
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in DEFAULT_PORTS:
        raise BadInputError(f"publish URL {shown} is not mqtt://HOST[:PORT]/PREFIX or mqtts://HOST[:PORT]/PREFIX")
    parts = urlsplit(url)
    if "@" in parts.netloc:
        raise BadInputError(f"publish URL {shown} carries a username/password: remove it from the URL and put them "
                            "in the credentials file's broker table (username, password)")
    if "?" in url or "#" in url:
        raise BadInputError(f"publish URL {shown} has a query or '#': the path is the topic prefix, which may not "
                            "contain '?', '+' or '#'")
    try:
        port = parts.port
    except ValueError as exc:
        raise BadInputError(f"publish URL {shown} has an invalid port ({exc})") from None
    host = parts.hostname or ""
    if not host:
        raise BadInputError(f"publish URL {shown} names no broker host: use {scheme.lower()}://HOST[:PORT]/PREFIX")
    prefix = parts.path.strip("/")
    if not prefix:
        raise BadInputError(f"publish URL {shown} has no topic prefix: add one, e.g. "
                            f"{scheme.lower()}://{parts.netloc}/traffic/counts")
    config = PublishConfig(url=url, host=host, port=port or DEFAULT_PORTS[scheme.lower()],
                           tls=scheme.lower() == "mqtts", prefix=prefix)
    return replace(config, **overrides) if overrides else config


def client_id_for(unit: str) -> str:
    """The MQTT client id of ``unit``'s publisher: stable, so a broker can tell one unit from another."""
    return f"toolchain-{check_unit(unit)}"
