"""The contract every registry store must pass (run against each store implementation)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from toolchain.errors import BadInputError, UsageError
from toolchain.registry import CachedImage, NewRecord, RegistryStore, open_store


@pytest.fixture(params=["sqlite-file", "sqlite-memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RegistryStore]:
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


def test_records_are_immutable_in_sqlite(tmp_path: Path) -> None:
    import sqlite3

    with open_store(str(tmp_path / "r.db")) as s:
        record, _, _ = s.commit(NewRecord(kind="run", name="r", body={"a": 1}))
    conn = sqlite3.connect(tmp_path / "r.db")
    with pytest.raises(sqlite3.DatabaseError, match="immutable"):
        conn.execute("UPDATE records SET body = '{}' WHERE id = ?", (record.id,))
    with pytest.raises(sqlite3.DatabaseError, match="immutable"):
        conn.execute("DELETE FROM records WHERE id = ?", (record.id,))


def test_unknown_scheme_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="sqlite"):
        open_store("postgres://db/registry")


def test_a_failed_commit_leaves_the_sqlite_store_usable(tmp_path: Path) -> None:
    """COMMIT itself can fail (disk full, I/O error, a deferred constraint): the store must roll back, not
    stay inside a transaction that makes every later write fail."""
    import sqlite3

    from toolchain.registry.sqlite_store import SqliteStore

    with SqliteStore(tmp_path / "r.db") as store:
        with pytest.raises(sqlite3.IntegrityError):
            with store._transaction() as db:
                db.execute("PRAGMA defer_foreign_keys = ON")  # the violation surfaces at COMMIT
                db.execute("INSERT INTO links(record_id, input_id, role) VALUES ('x', 'y', 'z')")
        record, _, created = store.commit(NewRecord(kind="run", name="after", body={"n": 1}))
        assert created and store.get(record.id) is not None and store.links_from("x") == []
