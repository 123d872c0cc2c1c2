"""The PostgreSQL registry's schema: its migrations, and opening a database at the current version.

The tables live in the connection's current schema (the first of ``search_path`` that exists, usually
``public``; pick another with ``?options=-csearch_path%3DNAME`` in the URI). They mirror the SQLite
store's, version for version; text columns use the "C" collation so ids, names and timestamps sort
bytewise, as in SQLite. Immutability is enforced by triggers that reject UPDATE, DELETE and TRUNCATE.

Migrations run in one transaction under an advisory lock, so hosts opening a new registry at once
create it once. Objects that belong to extensions (``pg_stat_statements``' views) do not make a
database foreign; any other table in an unversioned schema does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from toolchain import __version__
from toolchain.errors import BadInputError
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

if TYPE_CHECKING:
    import psycopg

_MIGRATION_LOCK = int.from_bytes(b"toolchn1", "big")  # pg_advisory_xact_lock key held while migrating
_T = 'TEXT COLLATE "C" NOT NULL'

_REJECT_CHANGE = """CREATE FUNCTION registry_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'registry % are immutable: % refused', TG_ARGV[0], TG_OP
        USING ERRCODE = 'integrity_constraint_violation',
              HINT = 'registry records and their links, blob refs, versions, alias history and image index '
                     'entries are never changed; commit a new record instead';
END
$$"""


def _immutable(table: str, what: str) -> tuple[str, str]:
    """Triggers that reject UPDATE, DELETE (per row) and TRUNCATE on ``table``."""
    return (
        (f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table} "
         f"FOR EACH ROW EXECUTE FUNCTION registry_reject_change('{what}')"),
        (f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
         f"FOR EACH STATEMENT EXECUTE FUNCTION registry_reject_change('{what}')"),
    )


_V1 = (
    f"""CREATE TABLE records (
        id {_T} PRIMARY KEY,
        kind {_T},
        name {_T} DEFAULT '',
        body TEXT NOT NULL,
        created_at {_T},
        created_by TEXT NOT NULL,
        toolchain_version TEXT NOT NULL
    )""",
    "CREATE INDEX records_kind_name ON records(kind, name)",
    _REJECT_CHANGE,
    *_immutable("records", "records"),
    f"""CREATE TABLE links (
        record_id {_T} REFERENCES records(id),
        input_id {_T} REFERENCES records(id),
        role {_T},
        PRIMARY KEY (record_id, input_id, role)
    )""",
    "CREATE INDEX links_input ON links(input_id)",
    f"""CREATE TABLE blob_refs (
        record_id {_T} REFERENCES records(id),
        sha256 {_T},
        role {_T},
        PRIMARY KEY (record_id, sha256, role)
    )""",
    f"""CREATE TABLE versions (
        kind {_T},
        name {_T},
        number INTEGER NOT NULL CHECK (number > 0),
        record_id {_T} REFERENCES records(id),
        created_at {_T},
        PRIMARY KEY (kind, name, number),
        UNIQUE (kind, name, record_id)
    )""",
    f"""CREATE TABLE aliases (
        kind {_T},
        name {_T},
        alias {_T},
        target {_T} DEFAULT '',
        record_id {_T} REFERENCES records(id),
        PRIMARY KEY (kind, name, alias, target)
    )""",
    f"""CREATE TABLE alias_history (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        kind {_T},
        name {_T},
        alias {_T},
        target {_T},
        old_record_id TEXT COLLATE "C",
        new_record_id TEXT COLLATE "C",
        at {_T},
        by TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX alias_history_name ON alias_history(kind, name, alias)",
    f"""CREATE TABLE image_index (
        transform {_T},
        content_sha256 {_T},
        shard_sha256 {_T},
        row INTEGER NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        phash BIGINT NOT NULL,
        pixel_sha256 {_T},
        PRIMARY KEY (transform, content_sha256)
    )""",
)

_V2 = (
    *_immutable("links", "lineage links"),
    *_immutable("blob_refs", "blob references"),
    *_immutable("versions", "versions"),
    *_immutable("alias_history", "alias history entries"),
    *_immutable("image_index", "image index entries"),
    "CREATE INDEX blob_refs_sha256 ON blob_refs(sha256)",
    "CREATE INDEX aliases_record ON aliases(record_id)",
)

_V3 = (
    f"""CREATE TABLE team_keys (
        name {_T} PRIMARY KEY,
        value {_T},
        created_at {_T}
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

_CREATE_VERSION_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version INTEGER PRIMARY KEY, description TEXT NOT NULL, "
    "applied_at TEXT NOT NULL, toolchain_version TEXT NOT NULL)"
)

# Relations of the current schema that no extension owns (tables, views, sequences, foreign tables).
_RELATIONS = """
SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
"""
_VERSION_COLUMNS_SQL = """
SELECT a.attname AS name FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
"""


def inspect(conn: psycopg.Connection[Any], where: str) -> Found:
    """The relations of the current schema and the version its ``schema_version`` records."""
    schema = conn.execute("SELECT current_schema() AS name").fetchone()
    if schema is None or schema["name"] is None:
        raise BadInputError(
            f"the registry database {where} has no schema to hold the registry: none of its search_path exists. "
            "Create one (CREATE SCHEMA toolchain AUTHORIZATION USER) and name it in the URI's "
            "options=-csearch_path%3Dtoolchain, or drop that option to use public"
        )
    tables = frozenset(row["name"] for row in conn.execute(_RELATIONS))
    if VERSION_TABLE not in tables:
        return Found(tables=tables)
    columns = tuple(row["name"] for row in conn.execute(_VERSION_COLUMNS_SQL, (VERSION_TABLE,)))
    version = 0
    if set(columns) == set(VERSION_COLUMNS):
        version = int(conn.execute(f"SELECT COALESCE(MAX(version), 0) AS v FROM {VERSION_TABLE}").fetchone()["v"])
    return Found(tables=tables, version_columns=columns, version=version)


def check(conn: psycopg.Connection[Any], where: str) -> int:
    """The database's schema version; raises before anything is written when it is not ours or newer."""
    return current_version(inspect(conn, where), where=where)


def migrate(conn: psycopg.Connection[Any], where: str) -> int:
    """Bring the database to :data:`SCHEMA_VERSION` in one transaction; returns it.

    ``conn`` is in autocommit mode with a dict row factory. A database already at the current version
    is only read (a role with SELECT alone can open it).
    """
    if check(conn, where) == SCHEMA_VERSION:
        return SCHEMA_VERSION
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        todo = pending(MIGRATIONS, check(conn, where))  # another host may have migrated while we waited
        if todo:
            conn.execute(_CREATE_VERSION_TABLE)
        for migration in todo:
            for statement in migration.statements:
                conn.execute(statement)  # no parameters: '%' in the trigger function is not a placeholder
            conn.execute(
                f"INSERT INTO {VERSION_TABLE}(version, description, applied_at, toolchain_version) VALUES (%s, %s, %s, %s)",
                (migration.version, migration.description, now(), __version__),
            )
    return SCHEMA_VERSION
