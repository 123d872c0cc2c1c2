"""The contract every registry store must pass: the same tests on SQLite (file and memory) and PostgreSQL.

The PostgreSQL parametrisation runs against a real server (``tests/postgres_server.py``) and skips, saying
how to install one, where none can be started.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from toolchain.errors import BadInputError, UsageError
from toolchain.registry import CachedImage, NewRecord, RegistryStore, open_store
from toolchain.registry.schema import SCHEMA_VERSION


@pytest.fixture(params=["sqlite-file", "sqlite-memory", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RegistryStore]:
    if request.param == "postgres":
        uri = request.getfixturevalue("postgres_uri")
    else:
        uri = f"sqlite:///{tmp_path / 'registry.db'}" if request.param == "sqlite-file" else "sqlite://:memory:"
    with open_store(uri) as s:
        yield s


def test_commit_is_content_addressed_and_idempotent(store: RegistryStore) -> None:
    record, version, created = store.commit(NewRecord(kind="run", name="r", body={"lr": 0.1}))
    assert created and version is None and len(record.id) == 64
    again, _, created_again = store.commit(NewRecord(kind="run", name="r", body={"lr": 0.1}))
    assert not created_again and again == record
    other, _, _ = store.commit(NewRecord(kind="run", name="r", body={"lr": 0.2}))
    assert other.id != record.id
    assert store.get(record.id) == record
    assert store.get("0" * 64) is None


def test_versions_are_numbered_per_name_and_reused_for_same_record(store: RegistryStore) -> None:
    _, v1, _ = store.commit(NewRecord(kind="dataset", name="d", body={"n": 1}, version=True))
    _, v2, _ = store.commit(NewRecord(kind="dataset", name="d", body={"n": 2}, version=True))
    _, v1_again, _ = store.commit(NewRecord(kind="dataset", name="d", body={"n": 1}, version=True))
    _, other, _ = store.commit(NewRecord(kind="dataset", name="e", body={"n": 1}, version=True))
    assert (v1.number, v2.number, v1_again.number, other.number) == (1, 2, 1, 1)
    assert [v.number for v in store.versions("dataset", "d")] == [1, 2]
    assert store.version_of("dataset", "e", v1.record_id).number == 1


def test_explicit_id_and_kind_mismatch(store: RegistryStore) -> None:
    rid = "ab" * 32
    record, _, _ = store.commit(NewRecord(kind="dataset", name="d", id=rid, body={"x": 1}))
    assert record.id == rid
    with pytest.raises(BadInputError):
        store.commit(NewRecord(kind="model", name="d", id=rid, body={"x": 1}))
    with pytest.raises(UsageError):
        store.commit(NewRecord(kind="nonsense", name="d", body={}))


def test_lineage_links_and_blob_refs(store: RegistryStore) -> None:
    data, _, _ = store.commit(NewRecord(kind="dataset", name="d", body={"n": 1}, blobs=(("f" * 64, "manifest"),)))
    run, _, _ = store.commit(NewRecord(kind="run", name="r", body={"n": 1}, links=((data.id, "train_data"),)))
    assert [(l.input_id, l.role) for l in store.links_from(run.id)] == [(data.id, "train_data")]
    assert [l.record_id for l in store.links_to(data.id)] == [run.id]
    assert [(b.sha256, b.role) for b in store.blob_refs(data.id)] == [("f" * 64, "manifest")]
    with pytest.raises(BadInputError):
        store.commit(NewRecord(kind="run", name="r", body={"n": 2}, links=(("9" * 64, "train_data"),)))


def test_find_by_kind_name_and_prefix(store: RegistryStore) -> None:
    a, _, _ = store.commit(NewRecord(kind="model", name="m", body={"a": 1}))
    store.commit(NewRecord(kind="model", name="n", body={"a": 2}))
    assert {r.name for r in store.find(kind="model")} == {"m", "n"}
    assert [r.id for r in store.find(kind="model", name="m")] == [a.id]
    assert [r.id for r in store.find(id_prefix=a.id[:6])] == [a.id]


def test_alias_history(store: RegistryStore) -> None:
    one, _, _ = store.commit(NewRecord(kind="model", name="m", body={"v": 1}, version=True))
    two, _, _ = store.commit(NewRecord(kind="model", name="m", body={"v": 2}, version=True))
    store.set_alias(kind="model", name="m", alias="production", target="jetson-orin-nano", record_id=one.id, by="ann")
    store.set_alias(kind="model", name="m", alias="production", target="jetson-orin-nano", record_id=two.id, by="bob", reason="v2 passed")
    assert store.get_alias(kind="model", name="m", alias="production", target="jetson-orin-nano") == two.id
    assert store.get_alias(kind="model", name="m", alias="production") is None  # other target
    history = store.alias_history(kind="model", name="m")
    assert [(h.old_record_id, h.new_record_id, h.by) for h in history] == [(None, one.id, "ann"), (one.id, two.id, "bob")]
    store.set_alias(kind="model", name="m", alias="production", target="jetson-orin-nano", record_id=None, by="ann")
    assert store.get_alias(kind="model", name="m", alias="production", target="jetson-orin-nano") is None
    with pytest.raises(BadInputError):
        store.set_alias(kind="model", name="m", alias="x", target="", record_id="1" * 64, by="ann")


def test_image_index_round_trip_including_high_bit_hashes(store: RegistryStore) -> None:
    images = [
        CachedImage(content_sha256=f"{i:064x}", shard_sha256="e" * 64, row=i, width=10 + i, height=20, phash=(1 << 63) + i,
                    pixel_sha256="d" * 64)
        for i in range(3)
    ]
    store.add_cached_images("t1", images)
    store.add_cached_images("t1", images[:1])  # idempotent
    assert store.cached_images("t1") == {i.content_sha256: i for i in images}
    assert set(store.cached_images("t1", [images[0].content_sha256, "x"])) == {images[0].content_sha256}
    assert store.cached_images("t2") == {}


# Every immutable table, and a column to try to change in it (aliases are the one mutable table: they move).
IMMUTABLE = {"records": "body", "links": "role", "blob_refs": "role", "versions": "number", "alias_history": "reason",
             "image_index": "row"}


def _raw_connection(uri: str) -> tuple[Any, type[Exception]]:
    """A plain driver connection to the store's database, bypassing the toolchain."""
    if uri.startswith("postgresql://"):
        import psycopg

        return psycopg.connect(uri, autocommit=True), psycopg.Error
    return sqlite3.connect(uri[len("sqlite:///"):], isolation_level=None), sqlite3.DatabaseError


def test_the_database_itself_rejects_changes_to_immutable_rows(registry_uri: str) -> None:
    with open_store(registry_uri) as s:
        data, _, _ = s.commit(NewRecord(kind="dataset", name="d", body={"n": 1}, version=True, blobs=(("f" * 64, "shard"),)))
        run, _, _ = s.commit(NewRecord(kind="run", name="r", body={"n": 1}, links=((data.id, "train_data"),)))
        s.set_alias(kind="dataset", name="d", alias="production", target="", record_id=data.id, by="ann")
        s.add_cached_images("t", [CachedImage(content_sha256="1" * 64, shard_sha256="f" * 64, row=0, width=1, height=1,
                                              phash=7, pixel_sha256="2" * 64)])
    conn, error = _raw_connection(registry_uri)
    try:
        for table, column in IMMUTABLE.items():
            statements = [f"UPDATE {table} SET {column} = {column}", f"DELETE FROM {table}"]
            if registry_uri.startswith("postgresql://"):
                statements.append(f"TRUNCATE {table} CASCADE")
            for statement in statements:
                with pytest.raises(error, match="immutable"):
                    conn.execute(statement)
        conn.execute("UPDATE aliases SET record_id = record_id")  # where an alias points is the one thing that moves
    finally:
        conn.close()
    with open_store(registry_uri) as s:
        assert s.get(run.id) == run and [l.input_id for l in s.links_from(run.id)] == [data.id]
        assert [v.record_id for v in s.versions("dataset", "d")] == [data.id] and s.cached_images("t")


def test_a_new_store_is_at_the_current_schema(registry_uri: str) -> None:
    with open_store(registry_uri) as s:
        assert s.schema_version() == SCHEMA_VERSION
    with open_store(registry_uri) as s:  # reopening migrates nothing
        assert s.schema_version() == SCHEMA_VERSION


def test_unknown_scheme_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="sqlite:///.*postgresql://"):
        open_store("mysql://db/registry")


def test_a_failed_commit_leaves_the_sqlite_store_usable(tmp_path: Path) -> None:
    """COMMIT itself can fail (disk full, I/O error, a deferred constraint): the store must roll back, not
    stay inside a transaction that makes every later write fail."""
    from toolchain.registry.sqlite_store import SqliteStore

    with SqliteStore(tmp_path / "r.db") as store:
        with pytest.raises(sqlite3.IntegrityError):
            with store._transaction() as db:
                db.execute("PRAGMA defer_foreign_keys = ON")  # the violation surfaces at COMMIT
                db.execute("INSERT INTO links(record_id, input_id, role) VALUES ('x', 'y', 'z')")
        record, _, created = store.commit(NewRecord(kind="run", name="after", body={"n": 1}))
        assert created and store.get(record.id) is not None and store.links_from("x") == []
