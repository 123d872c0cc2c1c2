"""The contract every registry store must pass: the same tests on SQLite (file and memory) and PostgreSQL.

The PostgreSQL parametrisation runs against a real server (``tests/postgres_server.py``) and skips, saying
how to install one, where none can be started.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from toolchain.errors import BadInputError, UsageError
from toolchain.registry import (
    Alias,
    AliasChange,
    BlobRef,
    CachedImage,
    Link,
    NewRecord,
    Record,
    RegistryStore,
    Version,
    open_store,
)
from toolchain.registry.schema import SCHEMA_VERSION
from toolchain.registry.store import ImportOutcome, RecordImport, RegistryConflictError


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


# -- importing another store's rows exactly (toolchain registry copy) -------------------------------------------------

def _stamped(kind: str, name: str, body: dict[str, Any], *, at: str = "2021-03-04T05:06:07.089+00:00",
             by: str = "ann@laptop", version: str = "0.9.0", rid: str | None = None) -> Record:
    from toolchain.hashing import digest_json

    return Record(id=rid or digest_json({"kind": kind, "body": body}), kind=kind, name=name, body=body, created_at=at,
                  created_by=by, toolchain_version=version)


def _item(record: Record, inputs: tuple[tuple[Record, str], ...] = (), blobs: tuple[tuple[str, str], ...] = ()) -> RecordImport:
    return RecordImport(record=record, links=tuple(Link(record_id=record.id, input_id=i.id, role=r) for i, r in inputs),
                        blobs=tuple(BlobRef(record_id=record.id, sha256=s, role=r) for s, r in blobs))


def test_imported_records_keep_their_ids_stamps_links_and_blob_refs_and_a_repeat_writes_nothing(store: RegistryStore) -> None:
    data = _stamped("dataset", "d", {"n": 1}, rid="ab" * 32)
    run = _stamped("run", "r", {"lr": 0.1, "text": "é ü \u0000 end"}, at="2021-03-04T05:07:00.000+00:00", by="bob@ci")
    items = [_item(data, blobs=(("f" * 64, "manifest"), ("e" * 64, "shard"))), _item(run, inputs=((data, "train_data"),))]
    assert store.import_records(items) == [ImportOutcome.CREATED] * 2
    assert store.get(data.id) == data and store.get(run.id) == run  # stamps as given, not now() and this user
    assert [(l.input_id, l.role) for l in store.links_from(run.id)] == [(data.id, "train_data")]
    assert {(b.sha256, b.role) for b in store.blob_refs(data.id)} == {("f" * 64, "manifest"), ("e" * 64, "shard")}
    assert store.import_records(items) == [ImportOutcome.IDENTICAL] * 2
    # The same content made elsewhere at another time: the store keeps its own, first stamps.
    restamped = _item(replace(run, created_at="2030-01-01T00:00:00.000+00:00", created_by="eve@other"),
                      inputs=((data, "train_data"),))
    assert store.import_records([restamped]) == [ImportOutcome.KEPT]
    assert store.get(run.id) == run
    assert len(store.find()) == 2 and len(store.blob_refs()) == 2 and len(store.links_to(data.id)) == 1
    # A committed record then reads as content-addressed as ever: commit finds the imported one.
    again, _, created = store.commit(NewRecord(kind="run", name="r", body=run.body))
    assert not created and again == run


def test_importing_a_record_that_contradicts_the_store_is_a_conflict_and_writes_nothing_of_the_call(store: RegistryStore) -> None:
    data = _stamped("dataset", "d", {"n": 1})
    store.import_records([_item(data, blobs=(("f" * 64, "manifest"),))])
    fresh = _stamped("run", "fresh", {"n": 2})
    for changed in (replace(data, body={"n": 2}), replace(data, name="other"), replace(data, kind="model")):
        with pytest.raises(RegistryConflictError, match=f"record {data.id[:12]}.*already in"):
            store.import_records([_item(fresh), _item(changed, blobs=(("f" * 64, "manifest"),))])
    with pytest.raises(RegistryConflictError, match="blob refs"):
        store.import_records([_item(fresh), _item(data, blobs=(("0" * 64, "manifest"),))])
    with pytest.raises(RegistryConflictError, match="lineage links"):
        store.import_records([_item(fresh), _item(data, inputs=((fresh, "parent"),), blobs=(("f" * 64, "manifest"),))])
    assert store.get(fresh.id) is None  # the whole call was one transaction
    assert store.get(data.id) == data and store.blob_refs(data.id)[0].sha256 == "f" * 64


def test_an_imported_record_needs_its_inputs_first(store: RegistryStore) -> None:
    data = _stamped("dataset", "d", {"n": 1})
    run = _stamped("run", "r", {"n": 1})
    with pytest.raises(BadInputError, match=f"lineage input {data.id[:12]}"):
        store.import_records([_item(run, inputs=((data, "train_data"),)), _item(data)])  # input after its user
    assert store.find() == []
    assert store.import_records([_item(data), _item(run, inputs=((data, "train_data"),))]) == [ImportOutcome.CREATED] * 2
    with pytest.raises(BadInputError, match="does not know"):
        _item(_stamped("nonsense", "x", {}))
    with pytest.raises(BadInputError, match="must belong to it"):
        RecordImport(record=run, links=(Link(record_id=data.id, input_id=data.id, role="x"),))


def test_imported_versions_keep_their_numbers_and_times_and_numbering_continues_after_them(store: RegistryStore) -> None:
    one, two, three = (_stamped("dataset", "d", {"n": n}) for n in (1, 2, 3))
    store.import_records([_item(one), _item(two), _item(three)])
    versions = [Version(kind="dataset", name="d", number=n, record_id=r.id, created_at=f"2021-0{n}-01T00:00:00.000+00:00")
                for n, r in ((1, one), (2, two))]
    assert store.import_versions(versions) == [ImportOutcome.CREATED] * 2
    assert store.versions("dataset", "d") == versions
    assert store.import_versions(versions) == [ImportOutcome.IDENTICAL] * 2
    assert store.import_versions([replace(versions[0], created_at="2030-01-01T00:00:00.000+00:00")]) == [ImportOutcome.KEPT]
    with pytest.raises(RegistryConflictError, match="d@v2 is .* here but"):
        store.import_versions([Version(kind="dataset", name="d", number=2, record_id=three.id, created_at="x")])
    with pytest.raises(RegistryConflictError, match="already d@v1"):
        store.import_versions([Version(kind="dataset", name="d", number=3, record_id=one.id, created_at="x")])
    with pytest.raises(BadInputError, match="not in"):
        store.import_versions([Version(kind="dataset", name="d", number=3, record_id="9" * 64, created_at="x")])
    assert store.versions("dataset", "d") == versions
    _, next_version, _ = store.commit(NewRecord(kind="dataset", name="d", body={"n": 3}, version=True))
    assert next_version.number == 3 and next_version.record_id == three.id


def _change(alias: str, old: Record | None, new: Record | None, at: str, *, target: str = "", by: str = "ann",
            reason: str = "") -> AliasChange:
    return AliasChange(kind="model", name="m", alias=alias, target=target, old_record_id=old.id if old else None,
                       new_record_id=new.id if new else None, at=at, by=by, reason=reason)


def test_imported_alias_histories_keep_who_when_why_and_point_the_alias_where_they_end(store: RegistryStore) -> None:
    one, two = _stamped("model", "m", {"v": 1}), _stamped("model", "m", {"v": 2})
    store.import_records([_item(one), _item(two)])
    production = [_change("production", None, one, "2021-01-01T00:00:00.000+00:00", target="jetson-orin-nano"),
                  _change("production", one, two, "2021-01-03T00:00:00.000+00:00", target="jetson-orin-nano",
                          by="bob", reason="v2 passed the gate")]
    staging = [_change("staging", None, two, "2021-01-02T00:00:00.000+00:00"),
               _change("staging", two, None, "2021-01-04T00:00:00.000+00:00", reason="retired")]
    interleaved = [production[0], staging[0], production[1], staging[1]]
    assert store.import_alias_history(interleaved[:3]) == [ImportOutcome.CREATED] * 3
    assert store.get_alias(kind="model", name="m", alias="staging") == two.id
    # Rerun with the rest (an interrupted copy finished): only what is missing is appended.
    assert store.import_alias_history(interleaved) == [ImportOutcome.IDENTICAL] * 3 + [ImportOutcome.CREATED]
    assert store.alias_history(kind="model", name="m", alias="production") == production
    assert store.alias_history(kind="model", name="m", alias="staging") == staging
    assert store.alias_history() == interleaved  # every change of every alias, oldest first
    assert store.get_alias(kind="model", name="m", alias="production", target="jetson-orin-nano") == two.id
    assert store.get_alias(kind="model", name="m", alias="staging") is None  # the history ends with its removal
    assert store.import_alias_history(interleaved) == [ImportOutcome.IDENTICAL] * 4
    # The alias moved on here since: an older history changes nothing.
    store.set_alias(kind="model", name="m", alias="production", target="jetson-orin-nano", record_id=one.id, by="carol")
    assert store.import_alias_history(production) == [ImportOutcome.IDENTICAL] * 2
    assert store.get_alias(kind="model", name="m", alias="production", target="jetson-orin-nano") == one.id


def test_an_alias_history_that_diverges_from_the_store_is_a_conflict_and_writes_nothing(store: RegistryStore) -> None:
    one, two = _stamped("model", "m", {"v": 1}), _stamped("model", "m", {"v": 2})
    store.import_records([_item(one), _item(two)])
    store.import_alias_history([_change("production", None, one, "2021-01-01T00:00:00.000+00:00")])
    other = [_change("candidate", None, two, "2021-01-01T00:00:00.000+00:00")]
    diverged = [_change("production", None, two, "2021-01-01T00:00:00.000+00:00")]
    with pytest.raises(RegistryConflictError, match="diverges .* at change 1"):
        store.import_alias_history(other + diverged)
    assert store.alias_history(kind="model", name="m", alias="candidate") == []
    assert store.get_alias(kind="model", name="m", alias="production") == one.id
    with pytest.raises(BadInputError, match="not in"):
        store.import_alias_history([_change("candidate", None, _stamped("model", "m", {"v": 3}), "2021-01-01")])
    assert store.aliases(name="m") == [Alias(kind="model", name="m", alias="production", target="", record_id=one.id)]


def test_imported_image_index_entries_keep_the_stores_own_and_list_their_transforms(store: RegistryStore) -> None:
    images = [CachedImage(content_sha256=f"{i:064x}", shard_sha256="e" * 64, row=i, width=10, height=20,
                          phash=(1 << 63) + i, pixel_sha256="d" * 64) for i in range(3)]
    assert store.import_image_index("t1", images[:2]) == [ImportOutcome.CREATED] * 2
    moved = replace(images[1], shard_sha256="c" * 64, row=9)  # the same image decoded into another shard elsewhere
    assert store.import_image_index("t1", [images[0], moved, images[2]]) == [
        ImportOutcome.IDENTICAL, ImportOutcome.KEPT, ImportOutcome.CREATED]
    assert store.cached_images("t1") == {i.content_sha256: i for i in images}
    store.import_image_index("t0", images[:1])
    assert store.image_index_transforms() == ["t0", "t1"]
    assert store.indexed_shards() == {"e" * 64}


def test_a_team_key_is_written_once_and_read_alike_by_every_caller(store: RegistryStore) -> None:
    first = store.team_key("credentials-volume")
    assert len(first) == 32
    assert store.team_key("credentials-volume") == first
    # A racing workstation that offers its own key reads the one stored first.
    assert store.team_key("credentials-volume", offer=b"\x01" * 32) == first
    assert store.team_key("other", offer=b"\x02" * 32) == b"\x02" * 32
    assert store.team_keys() == {"credentials-volume": first, "other": b"\x02" * 32}


def test_a_team_key_is_the_same_through_a_second_connection(registry_uri: str) -> None:
    with open_store(registry_uri) as one, open_store(registry_uri) as two:
        assert one.team_key("k") == two.team_key("k")


def test_team_keys_are_never_changed(store: RegistryStore) -> None:
    store.team_key("k", offer=b"\x03" * 32)
    with pytest.raises(Exception, match="immutable"):
        store._write(lambda db: db.execute(store._sql("UPDATE team_keys SET value = ? WHERE name = ?"), ("00", "k")))  # type: ignore[attr-defined]
    assert store.team_key("k") == b"\x03" * 32
