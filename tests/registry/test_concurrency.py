"""Several processes writing one registry at once lose nothing."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from toolchain.registry import NewRecord, open_store


def _writer(path: str, worker: int, count: int) -> None:
    with open_store(path) as store:
        for i in range(count):
            store.commit(NewRecord(kind="dataset", name="shared", body={"worker": worker, "i": i}, version=True))


def test_concurrent_writers_get_unique_consecutive_versions(tmp_path: Path) -> None:
    path = str(tmp_path / "registry.db")
    open_store(path).close()
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_writer, args=(path, w, 25)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with open_store(path) as store:
        versions = store.versions("dataset", "shared")
        assert [v.number for v in versions] == list(range(1, 101))
        assert len({v.record_id for v in versions}) == 100
