"""Registry of immutable records with lineage; stores picked by URI scheme."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from toolchain.errors import UsageError
from toolchain.registry.records import RECORD_KINDS, Alias, AliasChange, BlobRef, CachedImage, Link, NewRecord, Record, Version
from toolchain.registry.store import RegistryStore

__all__ = [
    "RECORD_KINDS", "Alias", "AliasChange", "BlobRef", "CachedImage", "Link", "NewRecord", "Record", "RegistryStore",
    "Version", "open_store",
]


def open_store(uri: str) -> RegistryStore:
    """Open the registry store named by ``uri``.

    Supported: ``sqlite:///absolute/path.db``, ``sqlite://relative/path.db``, ``sqlite://:memory:``
    and a bare filesystem path (treated as SQLite).
    """
    parsed = urlparse(uri)
    if parsed.scheme in ("", "sqlite") or (len(parsed.scheme) == 1 and Path(uri).drive):
        from toolchain.registry.sqlite_store import SqliteStore

        if parsed.scheme == "sqlite":
            path = uri[len("sqlite://") :]
            if path.startswith("/") and path[1:] == ":memory:":
                path = ":memory:"
        else:
            path = uri
        return SqliteStore(path)
    raise UsageError(f"unsupported registry URI scheme '{parsed.scheme}://'; use sqlite:///path/to/registry.db")
