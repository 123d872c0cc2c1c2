"""Schema versions and migrations: old registries are migrated in place; foreign or newer databases are refused untouched."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.postgres_server import PostgresServer
from toolchain.errors import BadInputError
from toolchain.registry import NewRecord, open_store
from toolchain.registry.schema import SCHEMA_VERSION
from toolchain.registry.sqlite_store import SqliteStore

LEGACY_DUMP = Path(__file__).parent / "data" / "registry_v1.sql"
TABLES = ("records", "links", "blob_refs", "versions", "aliases", "alias_history", "image_index")
RUN = "cbf295fb7a9da1f51f697dc629d2b23a0792197e33bcb0936e8f17e0aa28efa9"
MODEL_V1 = "84e523de6b330fd21ea0af13605da682dc0f86cf59d636e37475ca3715b4740c"
MODEL_V2 = "0bfe0009fb400f22c9dbb293bf1fbcd30810b15918ef69b26ea977edaaf9dae7"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(path)
    try:
        return {table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall()) for table in TABLES}
    finally:
        conn.close()


def _objects(path: Path) -> set[tuple[str, str]]:
    conn = sqlite3.connect(path)
    try:
        return set(conn.execute("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchall())
    finally:
        conn.close()


@pytest.fixture
def legacy_db(tmp_path: Path) -> Path:
    """A registry.db as the store wrote it before schema versions were recorded (restored from its dump)."""
    path = tmp_path / "legacy" / "registry.db"
    path.parent.mkdir()
    conn = sqlite3.connect(path)
    conn.executescript(LEGACY_DUMP.read_text())
    conn.close()
    return path


# -- SQLite ------------------------------------------------------------------------------------

def test_a_registry_from_before_schema_versions_is_migrated_in_place_losing_nothing(legacy_db: Path, tmp_path: Path) -> None:
    before = _rows(legacy_db)
    assert "schema_version" not in {name for _, name in _objects(legacy_db)}
    with SqliteStore(legacy_db) as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert [(v.number, v.record_id) for v in store.versions("model", "edgenet")] == [(1, MODEL_V1), (2, MODEL_V2)]
        assert store.get_alias(kind="model", name="edgenet", alias="production", target="jetson-orin-nano") == MODEL_V2
        history = store.alias_history(kind="model", name="edgenet", alias="production")
        assert [(h.old_record_id, h.new_record_id, h.by, h.reason) for h in history] == [
            (None, MODEL_V1, "ann@ws1", "first"), (MODEL_V1, MODEL_V2, "bob@ws2", "v2 passed")]
        assert [(l.input_id, l.role) for l in store.links_from(MODEL_V1)] == [(RUN, "run"), ("a" * 64, "train_data")]
        assert {i.phash for i in store.cached_images("t128").values()} == {(1 << 63) + i for i in range(3)}
        assert store.indexed_shards() == {"b" * 64}
        # Writing goes on where the old code stopped.
        _, v3, _ = store.commit(NewRecord(kind="model", name="edgenet", body={"run": RUN, "weights": "9" * 64},
                                          links=((RUN, "run"),), version=True))
        assert v3 is not None and v3.number == 3
    after = _rows(legacy_db)
    assert {t: after[t] for t in TABLES if t not in ("records", "versions", "links")} == {
        t: before[t] for t in TABLES if t not in ("records", "versions", "links")}
    for table in ("records", "versions", "links"):
        assert set(before[table]) <= set(after[table]) and len(after[table]) == len(before[table]) + 1, table

    conn = sqlite3.connect(legacy_db)
    try:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
        assert [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY version")] == list(range(1, SCHEMA_VERSION + 1))
        with pytest.raises(sqlite3.DatabaseError, match="immutable"):  # version 2's rule now holds for links too
            conn.execute("DELETE FROM links")
    finally:
        conn.close()
    fresh = tmp_path / "fresh.db"
    SqliteStore(fresh).close()
    assert _objects(legacy_db) == _objects(fresh)  # the same schema as a registry made today


def test_the_code_before_schema_versions_would_refuse_a_migrated_registry(legacy_db: Path) -> None:
    """That code read meta.schema_version and refused anything above 1: the migration keeps meta in step."""
    SqliteStore(legacy_db).close()
    conn = sqlite3.connect(legacy_db)
    try:
        (value,) = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    finally:
        conn.close()
    assert int(value) > 1


def test_a_partly_created_old_registry_is_completed(tmp_path: Path) -> None:
    """The old code created its tables one statement at a time: a crash could leave some of them."""
    path = tmp_path / "registry.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.close()
    with SqliteStore(path) as store:
        _, version, _ = store.commit(NewRecord(kind="dataset", name="d", body={}, version=True))
        assert store.schema_version() == SCHEMA_VERSION and version is not None and version.number == 1


def test_another_applications_sqlite_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
    conn.execute("INSERT INTO users(email) VALUES ('ann@example.org')")
    conn.commit()
    conn.close()
    digest = _sha(path)
    with pytest.raises(BadInputError, match=r"not a toolchain registry: it holds users.*nothing was written"):
        open_store(str(path))
    assert _sha(path) == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]  # no journal, no WAL left behind


def test_a_schema_version_table_of_another_tool_is_not_ours(tmp_path: Path) -> None:
    path = tmp_path / "flyway.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_version (installed_rank INTEGER, version TEXT, script TEXT)")
    conn.close()
    digest = _sha(path)
    with pytest.raises(BadInputError, match="not a toolchain registry"):
        open_store(str(path))
    assert _sha(path) == digest


def test_a_file_that_is_not_sqlite_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a database, but long enough to have a header " * 10)
    digest = _sha(path)
    with pytest.raises(BadInputError, match="not an SQLite database"):
        open_store(str(path))
    assert _sha(path) == digest


def test_a_newer_sqlite_schema_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    with SqliteStore(path) as store:
        store.commit(NewRecord(kind="run", name="r", body={}))
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_version VALUES (?, 'from the future', 'x', '99.0')", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    digest = _sha(path)
    with pytest.raises(BadInputError, match=rf"schema version {SCHEMA_VERSION + 1}, newer than .*upgrade toolchain"):
        open_store(str(path))
    assert _sha(path) == digest


def test_concurrent_first_opens_create_the_schema_once(registry_uri: str) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_one() -> None:
        try:
            start.wait(10)
            with open_store(registry_uri) as store:
                store.commit(NewRecord(kind="dataset", name="d", body={"thread": threading.get_ident()}, version=True))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    with open_store(registry_uri) as store:
        assert [v.number for v in store.versions("dataset", "d")] == [1, 2, 3, 4]
        assert store.schema_version() == SCHEMA_VERSION
    if registry_uri.startswith("sqlite"):
        conn = sqlite3.connect(registry_uri[len("sqlite:///"):])
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY version")]
        conn.close()
    else:
        import psycopg

        with psycopg.connect(registry_uri) as conn:
            versions = [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY version")]
    assert versions == list(range(1, SCHEMA_VERSION + 1))


# -- PostgreSQL --------------------------------------------------------------------------------

def _pg_tables(uri: str) -> list[str]:
    import psycopg

    with psycopg.connect(uri) as conn:
        return [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename")]


def test_another_applications_postgres_database_is_refused_untouched(postgres_uri: str) -> None:
    import psycopg

    with psycopg.connect(postgres_uri, autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (id serial PRIMARY KEY, name text)")
    with pytest.raises(BadInputError, match=r"not a toolchain registry: it holds customers.*nothing was written") as info:
        open_store(postgres_uri)
    assert "***@127.0.0.1" in str(info.value) and postgres_uri.split(":")[2].split("@")[0] not in str(info.value)
    assert _pg_tables(postgres_uri) == ["customers"]


def test_a_newer_postgres_schema_is_refused_untouched(postgres_uri: str) -> None:
    import psycopg

    open_store(postgres_uri).close()
    with psycopg.connect(postgres_uri, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_version VALUES (%s, 'from the future', 'x', '99.0')", (SCHEMA_VERSION + 1,))
    tables = _pg_tables(postgres_uri)
    with pytest.raises(BadInputError, match="newer than this toolchain understands"):
        open_store(postgres_uri)
    assert _pg_tables(postgres_uri) == tables


def test_objects_of_extensions_do_not_make_a_database_foreign(postgres_server: PostgresServer, postgres_database: str) -> None:
    extension = postgres_server.bin_dir.parent.parent.parent.parent / "share" / "postgresql"
    if not list(extension.glob("*/extension/pg_stat_statements.control")):
        pytest.skip("pg_stat_statements is not installed with this PostgreSQL")
    with postgres_server.admin(postgres_database) as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements")  # views in public, owned by the extension
    with open_store(postgres_server.uri(postgres_database)) as store:
        assert store.schema_version() == SCHEMA_VERSION


def test_a_role_that_may_only_read_opens_a_current_registry_and_cannot_write(
    postgres_server: PostgresServer, postgres_database: str,
) -> None:
    uri = postgres_server.uri(postgres_database)
    with open_store(uri) as store:
        record, _, _ = store.commit(NewRecord(kind="model", name="m", body={"v": 1}, version=True))
    with postgres_server.admin(postgres_database) as conn:
        conn.execute("DROP ROLE IF EXISTS reader")
        conn.execute("CREATE ROLE reader LOGIN PASSWORD 'reader-pw-1'")
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader")
    reader = uri.replace(f"toolchain:{postgres_server.app_password}@", "reader:reader-pw-1@")
    try:
        with open_store(reader) as store:  # opening a current schema writes nothing
            assert store.get(record.id) == record
            with pytest.raises(BadInputError, match="refused reader.*grant") as info:
                store.commit(NewRecord(kind="model", name="m", body={"v": 2}, version=True))
            assert "reader-pw-1" not in str(info.value)
            assert [v.number for v in store.versions("model", "m")] == [1]  # still usable after the refusal
    finally:
        with postgres_server.admin(postgres_database) as conn:
            conn.execute("DROP OWNED BY reader")
            conn.execute("DROP ROLE reader")
