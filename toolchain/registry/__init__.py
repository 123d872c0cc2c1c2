"""Registry of immutable records with lineage; stores picked by URI scheme."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from toolchain.errors import UsageError
from toolchain.registry.records import (
    RECORD_KINDS,
    Alias,
    AliasChange,
    BlobRef,
    CachedImage,
    Link,
    NewRecord,
    Record,
    Resolved,
    Version,
)
from toolchain.registry.store import RegistryStore

__all__ = [
    "POSTGRES_SCHEMES", "RECORD_KINDS", "Alias", "AliasChange", "BlobRef", "CachedImage", "Link", "NewRecord", "Record",
    "RegistryStore", "Resolved", "Version", "open_store",
]

POSTGRES_SCHEMES = ("postgresql", "postgres")


def open_store(uri: str) -> RegistryStore:
    """Open the registry store named by ``uri`` (its schema created or migrated forward on the way).

    Supported: ``sqlite:///absolute/path.db``, ``sqlite://relative/path.db``, ``sqlite://:memory:``,
    a bare filesystem path (treated as SQLite), and ``postgresql://[user[:password]@]host[:port]/database``
    (also ``postgres://``; any libpq URI parameter, e.g. ``?sslmode=require``), which needs the
    ``[postgres]`` extra.
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
    if parsed.scheme in POSTGRES_SCHEMES:
        from toolchain.extras import require

        require("postgres", needed_by=f"a {parsed.scheme}:// registry")
        from toolchain.registry.postgres_store import PostgresStore

        return PostgresStore(uri)
    raise UsageError(
        f"unsupported registry URI scheme '{parsed.scheme}://'; use sqlite:///path/to/registry.db or "
        "postgresql://USER@HOST:PORT/DATABASE"
    )
