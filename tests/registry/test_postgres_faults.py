"""A PostgreSQL registry that goes away, refuses the login or cannot be reached: exit 4 or 5 with what to check,
nothing half-written, the rerun completes, and the password never printed. Run against a real server."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import make_image_folder, run_main
from tests.postgres_server import PostgresServer
from toolchain.errors import MissingEnvironmentError
from toolchain.registry import NewRecord, open_store
from toolchain.registry.postgres_store import PostgresStore


def _no_secret(server: PostgresServer, *texts: str) -> None:
    for text in texts:
        assert server.app_password not in text and server.admin_password not in text


def _wait_for_lock_waiter(server: PostgresServer, database: str, timeout: float = 20) -> int:
    """The pid of the toolchain's backend once it waits for a lock in ``database``."""
    deadline = time.monotonic() + timeout
    with server.admin() as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = 'toolchain' "
                "AND wait_event_type = 'Lock'", (database,),
            ).fetchone()
            if row:
                return int(row[0])
            time.sleep(0.02)
    raise AssertionError("the write never reached the lock")


def test_a_connection_lost_mid_transaction_leaves_nothing_half_written(
    postgres_server: PostgresServer, postgres_database: str,
) -> None:
    uri = postgres_server.uri(postgres_database)
    with open_store(uri) as store:
        data, _, _ = store.commit(NewRecord(kind="dataset", name="d", body={"n": 1}, version=True))
        model = NewRecord(kind="model", name="m", body={"weights": "e" * 64}, links=((data.id, "train_data"),),
                          blobs=(("e" * 64, "weights"),), version=True)
        holder = postgres_server.admin(postgres_database)
        holder.autocommit = False
        holder.execute("LOCK TABLE versions IN ACCESS EXCLUSIVE MODE")  # the commit stops mid-transaction here
        outcome: dict[str, Any] = {}

        def write() -> None:
            try:
                outcome["result"] = store.commit(model)
            except Exception as exc:  # noqa: BLE001 - checked below
                outcome["error"] = exc

        writer = threading.Thread(target=write)
        writer.start()
        try:
            pid = _wait_for_lock_waiter(postgres_server, postgres_database)
            with postgres_server.admin() as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            writer.join(30)
        finally:
            holder.rollback()
            holder.close()
        error = outcome.get("error")
        assert isinstance(error, MissingEnvironmentError), outcome
        message = str(error)
        assert "lost the registry database postgresql://***@127.0.0.1" in message
        assert "nothing half-written" in message and "pg_isready -h 127.0.0.1" in message and "rerun" in message
        _no_secret(postgres_server, message)
        # The record, its links and blob refs were one transaction: none of it is there. The next call reconnects.
        assert store.find(kind="model") == [] and store.links_to(data.id) == []
        assert {b.record_id for b in store.blob_refs()} == set()
        record, version, created = store.commit(model)  # the rerun completes
        assert created and version is not None and version.number == 1
        assert [l.input_id for l in store.links_from(record.id)] == [data.id]


def test_the_server_stopping_between_operations_is_exit_5_and_the_rerun_completes(
    postgres_server: PostgresServer, postgres_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    uri = postgres_server.uri(postgres_database)
    base = ["--workspace", tmp_path / "ws", "--registry", uri, "--json"]
    with open_store(uri) as store:
        store.commit(NewRecord(kind="model", name="m", body={"v": 1}, version=True))
        postgres_server.stop("fast")
        try:
            with pytest.raises(MissingEnvironmentError, match="lost the registry database") as info:
                store.versions("model", "m")
            _no_secret(postgres_server, str(info.value))
            down = run_main([*base, "registry", "list"], capsys)
            assert down.code == 5, down.err
            assert down.json()["error"]["type"] == "MissingEnvironmentError"
            assert "cannot reach the registry database" in down.err and "pg_isready" in down.err
            _no_secret(postgres_server, down.out, down.err)
        finally:
            postgres_server.start()
        assert [v.number for v in store.versions("model", "m")] == [1]  # the same store reconnects
    again = run_main([*base, "registry", "list"], capsys)
    assert again.code == 0, again.err
    assert [r["name"] for r in again.json()["records"]] == ["m"]


def test_the_database_going_away_mid_ingest_is_exit_5_and_the_rerun_completes(
    postgres_server: PostgresServer, postgres_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lake = tmp_path / "lake"
    make_image_folder(lake, per_class=4, seed=3)
    uri = postgres_server.uri(postgres_database)
    base = ["--workspace", tmp_path / "ws", "--registry", uri, "--blobs", tmp_path / "blobs"]
    (tmp_path / "blobs").mkdir()
    real_commit = PostgresStore.commit

    def commit_after_the_server_dropped_us(self: PostgresStore, new: NewRecord) -> Any:
        if new.kind == "dataset":  # the shards and the image index are written by now; the dataset is the last write
            assert postgres_server.terminate_connections(postgres_database) >= 1
        return real_commit(self, new)

    monkeypatch.setattr(PostgresStore, "commit", commit_after_the_server_dropped_us)
    failed = run_main([*base, "data", "ingest", lake, "--name", "cars", "--workers", "1"], capsys)
    assert failed.code == 5, failed.err
    assert "lost the registry database" in failed.err and "rerun the same command" in failed.err
    _no_secret(postgres_server, failed.out, failed.err)
    monkeypatch.setattr(PostgresStore, "commit", real_commit)
    listed = run_main([*base, "--json", "data", "list"], capsys)
    assert listed.code == 0 and listed.json() == {"datasets": []}  # no half-written dataset
    with open_store(uri) as store:
        assert store.find(kind="dataset") == [] and store.indexed_shards()  # the index written before the loss stays
    rerun = run_main([*base, "--json", "data", "ingest", lake, "--name", "cars", "--workers", "1"], capsys)
    assert rerun.code == 0, rerun.err
    assert rerun.json()["decoded"] == 0 and rerun.json()["reused"] == 8  # the rerun reused what the first run had finished
    with open_store(uri) as store:
        (version,) = store.versions("dataset", "cars")
        assert version.number == 1
    verified = run_main([*base, "--json", "registry", "verify"], capsys)
    assert verified.code == 0 and verified.json()["passed"], verified.out + verified.err
    assert not list((tmp_path / "ws").glob("objects/*/*"))  # blobs went to --blobs, not the workspace


def test_wrong_credentials_are_exit_4_and_write_nothing(
    postgres_server: PostgresServer, postgres_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    wrong = postgres_server.uri(postgres_database, password="not-the-password-42")
    result = run_main(["--workspace", tmp_path / "ws", "--registry", wrong, "--json", "registry", "list"], capsys)
    assert result.code == 4, result.err
    assert "refused the login as toolchain" in result.err and "PGPASSWORD" in result.err
    assert "not-the-password-42" not in result.out + result.err
    with postgres_server.admin(postgres_database) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0


def test_a_missing_database_says_how_to_create_it(postgres_server: PostgresServer, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    result = run_main(["--workspace", tmp_path / "ws", "--registry", postgres_server.uri("no_such_registry"),
                       "registry", "list"], capsys)
    assert result.code == 4, result.err
    assert "does not exist" in result.err and "createdb" in result.err
    _no_secret(postgres_server, result.out, result.err)


def test_an_unreachable_server_is_exit_5_saying_what_to_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("psycopg", reason="pip install 'toolchain[postgres]'")
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uri = f"postgresql://ann:hunter2-secret@127.0.0.1:{port}/registry"
    result = run_main(["--workspace", tmp_path / "ws", "--registry", uri, "--json", "registry", "list"], capsys)
    assert result.code == 5, result.err
    assert "cannot reach the registry database postgresql://***@127.0.0.1" in result.err
    assert f"pg_isready -h 127.0.0.1 -p {port}" in result.err
    assert "hunter2-secret" not in result.out + result.err
    assert not (tmp_path / "ws" / "registry.db").exists()


def test_transactions_the_server_aborts_for_conflicts_are_retried_whole(postgres_uri: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The store runs in READ COMMITTED, where its locks leave no conflicts; under SERIALIZABLE (forced here on
    its connections) the server aborts conflicting version allocations with real serialization failures,
    and each aborted transaction must be rerun whole, losing nothing and numbering nothing twice."""
    import psycopg

    from toolchain.registry import postgres_store

    retries: list[int] = []
    real_backoff = postgres_store._backoff
    monkeypatch.setattr(postgres_store, "_backoff", lambda attempt: retries.append(attempt) or real_backoff(attempt))
    stores = [open_store(postgres_uri) for _ in range(4)]
    for store in stores:
        store._connection().isolation_level = psycopg.IsolationLevel.SERIALIZABLE  # type: ignore[attr-defined]
    start = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def write(worker: int, store: Any) -> None:
        try:
            start.wait(10)
            for i in range(10):
                store.commit(NewRecord(kind="model", name="m", body={"worker": worker, "i": i}, version=True))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w, s)) for w, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for store in stores:
        store.close()
    assert not errors, errors
    assert retries, "no transaction was aborted: the test did not exercise the retry"
    with open_store(postgres_uri) as store:
        versions = store.versions("model", "m")
        assert [v.number for v in versions] == list(range(1, 41)) and len({v.record_id for v in versions}) == 40
