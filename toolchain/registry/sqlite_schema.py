"""The SQLite registry's schema: its migrations, and opening a database at the current version.

Version 1 is the schema the SQLite store had before versions were recorded (a ``meta`` table held
``schema_version = 1``); its statements are ``IF NOT EXISTS``, so a registry written then is adopted in
place, losing nothing. ``meta.schema_version`` is kept equal to the current version: a toolchain from
before ``schema_version`` existed reads it and refuses a newer schema instead of writing to it.
"""

from __future__ import annotations

import sqlite3

from toolchain import __version__
from toolchain.registry.schema import (
    SCHEMA_VERSION,
    VERSION_COLUMNS,
    VERSION_TABLE,
    Found,
    Migration,
    check_migrations,
    current_version,
    pending,
)
from toolchain.registry.stamps import now


def _immutable(table: str, what: str) -> tuple[str, str]:
    """Triggers that reject UPDATE and DELETE on ``table`` (SQLite has no TRUNCATE)."""
    return (
        (f"CREATE TRIGGER IF NOT EXISTS {table}_immutable BEFORE UPDATE ON {table} "
         f"BEGIN SELECT RAISE(ABORT, 'registry {what} are immutable'); END"),
        (f"CREATE TRIGGER IF NOT EXISTS {table}_undeletable BEFORE DELETE ON {table} "
         f"BEGIN SELECT RAISE(ABORT, 'registry {what} are immutable'); END"),
    )


_V1 = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS records (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        body TEXT NOT NULL,
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        toolchain_version TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS records_kind_name ON records(kind, name)",
    *_immutable("records", "records"),
    """CREATE TABLE IF NOT EXISTS links (
        record_id TEXT NOT NULL REFERENCES records(id),
        input_id TEXT NOT NULL REFERENCES records(id),
        role TEXT NOT NULL,
        PRIMARY KEY (record_id, input_id, role)
    )""",
    "CREATE INDEX IF NOT EXISTS links_input ON links(input_id)",
    """CREATE TABLE IF NOT EXISTS blob_refs (
        record_id TEXT NOT NULL REFERENCES records(id),
        sha256 TEXT NOT NULL,
        role TEXT NOT NULL,
        PRIMARY KEY (record_id, sha256, role)
    )""",
    """CREATE TABLE IF NOT EXISTS versions (
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        number INTEGER NOT NULL,
        record_id TEXT NOT NULL REFERENCES records(id),
        created_at TEXT NOT NULL,
        PRIMARY KEY (kind, name, number),
        UNIQUE (kind, name, record_id)
    )""",
    """CREATE TABLE IF NOT EXISTS aliases (
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        alias TEXT NOT NULL,
        target TEXT NOT NULL DEFAULT '',
        record_id TEXT NOT NULL REFERENCES records(id),
        PRIMARY KEY (kind, name, alias, target)
    )""",
    """CREATE TABLE IF NOT EXISTS alias_history (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        alias TEXT NOT NULL,
        target TEXT NOT NULL,
        old_record_id TEXT,
        new_record_id TEXT,
        at TEXT NOT NULL,
        by TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT ''
    )""",
    """CREATE TABLE IF NOT EXISTS image_index (
        transform TEXT NOT NULL,
        content_sha256 TEXT NOT NULL,
        shard_sha256 TEXT NOT NULL,
        row INTEGER NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        phash INTEGER NOT NULL,
        pixel_sha256 TEXT NOT NULL,
        PRIMARY KEY (transform, content_sha256)
    )""",
)

_V2 = (
    *_immutable("links", "lineage links"),
    *_immutable("blob_refs", "blob references"),
    *_immutable("versions", "versions"),
    *_immutable("alias_history", "alias history entries"),
    *_immutable("image_index", "image index entries"),
    "CREATE INDEX IF NOT EXISTS blob_refs_sha256 ON blob_refs(sha256)",
    "CREATE INDEX IF NOT EXISTS aliases_record ON aliases(record_id)",
)

_V3 = (
    """CREATE TABLE IF NOT EXISTS team_keys (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        created_at TEXT NOT NULL
    )""",
    *_immutable("team_keys", "team keys"),
)

MIGRATIONS = check_migrations((
    Migration(version=1, description="records, lineage links, blob refs, versions, aliases with history, image index",
              statements=_V1),
    Migration(version=2, description="links, blob refs, versions, alias history and image index immutable; "
                                     "indexes for gc and alias lookups", statements=_V2),
    Migration(version=3, description="team keys: random keys every workstation of a team reads alike, written once",
              statements=_V3),
))

ADOPTABLE = frozenset({"meta", "records", "links", "blob_refs", "versions", "aliases", "alias_history", "image_index"})
"""The tables of version 1: a database holding only these was written before ``schema_version`` existed."""

_CREATE_VERSION_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version INTEGER PRIMARY KEY, description TEXT NOT NULL, "
    "applied_at TEXT NOT NULL, toolchain_version TEXT NOT NULL)"
)


def inspect(conn: sqlite3.Connection) -> Found:
    """The tables of the database and the version its ``schema_version`` records."""
    tables = frozenset(
        row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%'"
        )
    )
    if VERSION_TABLE not in tables:
        return Found(tables=tables)
    columns = tuple(row[1] for row in conn.execute(f"PRAGMA table_info({VERSION_TABLE})"))
    version = 0
    if set(columns) == set(VERSION_COLUMNS):
        version = int(conn.execute(f"SELECT COALESCE(MAX(version), 0) FROM {VERSION_TABLE}").fetchone()[0])
    return Found(tables=tables, version_columns=columns, version=version)


def check(conn: sqlite3.Connection, where: str) -> int:
    """The database's schema version; raises before anything is written when it is not ours or newer."""
    return current_version(inspect(conn), where=where, adoptable=ADOPTABLE)


def migrate(conn: sqlite3.Connection, where: str) -> int:
    """Bring the database to :data:`SCHEMA_VERSION` (one ``BEGIN IMMEDIATE`` transaction); returns it.

    Concurrent first opens are safe: the version is read again under the write lock.
    """
    if check(conn, where) == SCHEMA_VERSION:
        return SCHEMA_VERSION  # the usual case: no write, no lock
    conn.execute("BEGIN IMMEDIATE")
    try:
        todo = pending(MIGRATIONS, check(conn, where))
        if todo:
            conn.execute(_CREATE_VERSION_TABLE)
        for migration in todo:
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(
                f"INSERT INTO {VERSION_TABLE}(version, description, applied_at, toolchain_version) VALUES (?,?,?,?)",
                (migration.version, migration.description, now(), __version__),
            )
        if todo:
            conn.execute(
                "INSERT INTO meta(key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return SCHEMA_VERSION
