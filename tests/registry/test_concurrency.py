"""Several processes writing one registry at once lose nothing (on every store: SQLite and PostgreSQL)."""

from __future__ import annotations

import multiprocessing
from toolchain.registry import NewRecord, open_store


def _writer(uri: str, worker: int, count: int) -> None:
    with open_store(uri) as store:
        for i in range(count):
            store.commit(NewRecord(kind="dataset", name="shared", body={"worker": worker, "i": i}, version=True))


def test_concurrent_writers_get_unique_consecutive_versions(registry_uri: str) -> None:
    open_store(registry_uri).close()
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_writer, args=(registry_uri, w, 25)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with open_store(registry_uri) as store:
        versions = store.versions("dataset", "shared")
        assert [v.number for v in versions] == list(range(1, 101))
        assert len({v.record_id for v in versions}) == 100
