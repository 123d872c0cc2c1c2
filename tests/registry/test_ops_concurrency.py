"""Several processes moving aliases and committing records at once lose nothing (on SQLite and PostgreSQL)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from toolchain.registry import NewRecord
from toolchain.registry.aliases import AliasConfig, alias_history, set_alias
from toolchain.workspace import Workspace

WORKERS = 4
ROUNDS = 15


def _worker(root: str, registry_uri: str, worker: int, start: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    start.wait(30)
    with Workspace(Path(root), registry_uri=registry_uri) as ws:
        for i in range(ROUNDS):
            # A new model version, then point the shared alias at it (two transactions, interleaved
            # with the other processes'), alternating between a per-target and the all-targets alias.
            sha = ws.blobs.put_bytes(f"weights {worker} {i}".encode())
            ws.registry.commit(NewRecord(kind="model", name="cls", body={"worker": worker, "i": i, "weights": sha},
                                         blobs=((sha, "weights"),), version=True))
            target = "jetson-orin-nano" if i % 2 else ""
            set_alias(ws, AliasConfig(name="cls", alias="production", to=f"cls@{_latest_own(ws, worker, i)}",
                                      target=target, reason=f"{worker}:{i}"), by=f"worker{worker}@test")


def _latest_own(ws: Workspace, worker: int, i: int) -> str:
    for version in ws.registry.versions("model", "cls"):
        record = ws.registry.get(version.record_id)
        if record and record.body["worker"] == worker and record.body["i"] == i:
            return f"v{version.number}"
    raise AssertionError("own version missing")


def test_concurrent_alias_moves_and_commits_keep_a_complete_history(tmp_path: Path, registry_uri: str) -> None:
    root = tmp_path / "ws"
    Workspace(root, registry_uri=registry_uri).close()
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    procs = [context.Process(target=_worker, args=(str(root), registry_uri, w, start)) for w in range(WORKERS)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with Workspace(root, registry_uri=registry_uri) as ws:
        versions = ws.registry.versions("model", "cls")
        assert [v.number for v in versions] == list(range(1, WORKERS * ROUNDS + 1))
        history = alias_history(ws, name="cls", alias="production")
        assert len(history) == WORKERS * ROUNDS
        assert sorted(r["reason"] for r in history) == sorted(f"{w}:{i}" for w in range(WORKERS) for i in range(ROUNDS))
        # Each change starts where the previous change of the same alias row left it: no lost update.
        for target in ("", "jetson-orin-nano"):
            rows = [r for r in history if r["target"] == target]
            assert rows[0]["from"] is None
            assert all(b["from"] == a["to"] for a, b in zip(rows, rows[1:]))
            assert ws.registry.get_alias(kind="model", name="cls", alias="production", target=target) == rows[-1]["to"]
        assert {r["by"] for r in history} == {f"worker{w}@test" for w in range(WORKERS)}
        assert all(ws.blobs.verify(b.sha256) for b in ws.registry.blob_refs())
