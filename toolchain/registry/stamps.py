"""What every registry store stamps and converts the same way (so two stores hold identical records)."""

from __future__ import annotations

import getpass
import socket
from datetime import datetime, timezone

_U64 = 1 << 64
_I64_LIMIT = 1 << 63


def now() -> str:
    """The current UTC time as ISO-8601 text with milliseconds (``created_at``, alias ``at``)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def current_user() -> str:
    """``user@host`` of this process, recorded as who made a record or moved an alias."""
    try:
        user = getpass.getuser()
    except Exception:  # no login name in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def to_signed64(value: int) -> int:
    """Map an unsigned 64-bit perceptual hash into a signed 64-bit column (SQLite INTEGER, PostgreSQL BIGINT)."""
    return value - _U64 if value >= _I64_LIMIT else value


def to_unsigned64(value: int) -> int:
    """The inverse of :func:`to_signed64`."""
    return value + _U64 if value < 0 else value
