"""Content hashing and canonical JSON: the identity of every blob and record."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, BinaryIO

_CHUNK = 1 << 20


def canonical_json(value: Any) -> str:
    """Serialise ``value`` so that equal values always give equal text (sorted keys, no spaces)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def digest_json(value: Any) -> str:
    """sha256 hex digest of the canonical JSON of ``value``."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def sha256_bytes(data: bytes) -> str:
    """sha256 hex digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_stream(stream: BinaryIO) -> str:
    """sha256 hex digest of everything left in a binary stream."""
    h = hashlib.sha256()
    for block in iter(lambda: stream.read(_CHUNK), b""):
        h.update(block)
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    """sha256 hex digest of a file's bytes."""
    with open(path, "rb") as f:
        return sha256_stream(f)


def is_sha256(text: str) -> bool:
    """True when ``text`` is a full lowercase sha256 hex digest."""
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def is_hex_prefix(text: str) -> bool:
    """True when ``text`` could be a digest prefix (hex only, 4 to 64 characters)."""
    return 4 <= len(text) <= 64 and all(c in "0123456789abcdef" for c in text)
