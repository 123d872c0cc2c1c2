"""The payload schema of the published counts, and their topics.

Every message is one compact JSON object (no spaces: bytes cost money on 4G) with an envelope and a body,
side by side at the top level::

    {"schema":"toolchain.counts/1","unit":"rsu-17","seq":4211,"kind":"crossing","time":1796630400.125,
     "camera":"north","line":"stop-line","direction":"in","class":"truck","score":0.93,"track":88,...}

Envelope: ``schema`` (:data:`SCHEMA`; a consumer refuses a major version it does not know), ``unit`` (the unit
id), ``seq`` (per unit, strictly increasing, assigned by the spool and never reused, even across restarts: the
key consumers de-duplicate on), ``kind`` (one of :data:`KINDS`) and ``time`` (unix seconds when the message was
made). Body by kind:

* ``crossing``: whatever the caller gives (camera, line, direction, class, score, track, frame, latency_s...).
* ``interval``: ``start``, ``end`` (unix seconds) and ``counts``, a list of ``{camera, line, direction, class,
  count}`` with every known combination, zeros included (see :mod:`toolchain.publish.intervals`).
* ``frame``: a per-frame summary (rate limited by the caller).

Topics: ``{prefix}/{unit}/{kind}``. Standard library only, Python 3.8 compatible.
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict

from toolchain.errors import BadInputError

SCHEMA = "toolchain.counts/1"
"""The schema name and major version of every message."""

SCHEMA_FAMILY = "toolchain.counts/"

KINDS = ("crossing", "interval", "frame")
"""The message kinds; each has its own topic."""

ENVELOPE = ("schema", "unit", "seq", "kind", "time")
"""The keys every message carries; a body may not use them."""

_TOPIC_FORBIDDEN = ("+", "#", "\x00")


def check_unit(unit: str) -> str:
    """``unit`` if it can be a topic level (non-empty, no ``/``, ``+``, ``#``); else :class:`BadInputError`."""
    if not isinstance(unit, str) or not unit.strip():
        raise BadInputError("the unit id is empty: give the unit a name (it is a level of the MQTT topic)")
    bad = [ch for ch in ("/",) + _TOPIC_FORBIDDEN if ch in unit]
    if bad or unit.startswith("$"):
        raise BadInputError(f"unit id {unit!r} cannot be an MQTT topic level (it may not contain '/', '+', '#' "
                            "or start with '$'): rename the unit")
    return unit


def check_prefix(prefix: str) -> str:
    """``prefix`` if it is a valid MQTT topic (no wildcards, not empty, not a ``$`` system topic)."""
    if not prefix or not prefix.strip("/"):
        raise BadInputError("the topic prefix is empty: give one, e.g. mqtt://broker/traffic/counts")
    bad = [ch for ch in _TOPIC_FORBIDDEN if ch in prefix]
    if bad:
        raise BadInputError(f"topic prefix {prefix!r} contains {', '.join(repr(ch) for ch in bad)}: wildcards "
                            "cannot be published to; use plain topic levels such as traffic/counts")
    if prefix.startswith("$"):
        raise BadInputError(f"topic prefix {prefix!r} starts with '$', which brokers reserve for their own "
                            "topics: choose another prefix")
    if len(prefix.encode("utf-8")) > 1024:
        raise BadInputError("the topic prefix is longer than 1024 bytes: shorten it")
    return prefix


def topic(prefix: str, unit: str, kind: str) -> str:
    """The topic of a ``kind`` message from ``unit``: ``{prefix}/{unit}/{kind}``."""
    check_kind(kind)
    return f"{check_prefix(prefix).rstrip('/')}/{check_unit(unit)}/{kind}"


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise BadInputError(f"unknown message kind {kind!r}: use one of {', '.join(KINDS)}")
    return kind


def build(kind: str, *, unit: str, seq: int, time: float, body: Dict[str, Any]) -> Dict[str, Any]:
    """The message: envelope first, then the body's keys.

    Raises:
        BadInputError: unknown kind, a body key that is an envelope key, or a non-dict body.
    """
    check_kind(kind)
    if not isinstance(body, dict):
        raise BadInputError(f"a {kind} message body must be a dict, not {type(body).__name__}")
    clash = sorted(key for key in body if key in ENVELOPE)
    if clash:
        raise BadInputError(f"a {kind} message body may not use the envelope keys {', '.join(clash)}: rename them")
    message: Dict[str, Any] = {"schema": SCHEMA, "unit": unit, "seq": int(seq), "kind": kind,
                               "time": round(float(time), 3)}
    message.update(body)
    return message


def encode(message: Dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON of ``message``.

    Raises:
        BadInputError: a value JSON cannot carry (NaN, infinity, an object that is not a number, string, list,
            dict, bool or None).
    """
    try:
        text = json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise BadInputError(f"a {message.get('kind', '')} message cannot be encoded as JSON ({exc}): send only "
                            "numbers (finite), strings, lists, dicts, booleans and null") from exc
    return text.encode("utf-8")


def decode(payload: bytes) -> Dict[str, Any]:
    """The message in ``payload``, checked: a JSON object of a known schema family with the envelope keys.

    Raises:
        BadInputError: not JSON, not an object, another schema or a missing/invalid envelope key.
    """
    try:
        message = json.loads(payload.decode("utf-8") if isinstance(payload, (bytes, bytearray)) else payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadInputError(f"the message is not UTF-8 JSON ({exc})") from exc
    if not isinstance(message, dict):
        raise BadInputError("the message is not a JSON object")
    schema = message.get("schema")
    if not isinstance(schema, str) or not schema.startswith(SCHEMA_FAMILY):
        raise BadInputError(f"the message's schema {schema!r} is not {SCHEMA}")
    if schema.split("/", 1)[1].split(".", 1)[0] != SCHEMA.split("/", 1)[1]:
        raise BadInputError(f"the message's schema {schema!r} is a major version this toolchain does not know: "
                            "upgrade the consumer")
    missing = [key for key in ENVELOPE if key not in message]
    if missing:
        raise BadInputError(f"the message lacks {', '.join(missing)}")
    seq, time = message["seq"], message["time"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise BadInputError(f"the message's seq {seq!r} is not a positive integer")
    if not isinstance(time, (int, float)) or isinstance(time, bool) or not math.isfinite(time):
        raise BadInputError(f"the message's time {time!r} is not a number")
    return message
