"""gc against writers elsewhere: the clock of the file server, a slow pass, markers, a killed gc.

(The basic rules, what counts as referenced and the grace period, are in test_ops.py; the store
shared by two workspaces and eight writers is test_shared_hosts.py.)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import toolchain.registry.gc as gc_module
from toolchain.registry import NewRecord
from toolchain.registry.gc import GcConfig, gc
from toolchain.workspace import Workspace


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    workspace = Workspace(tmp_path / "ws")
    sha = workspace.blobs.put_bytes(b"referenced weights")
    workspace.registry.commit(NewRecord(kind="model", name="cls", body={"weights": sha}, blobs=((sha, "weights"),)))
    yield workspace
    workspace.close()


def _age(path: Path, seconds: float) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_ages_are_measured_on_the_file_servers_clock(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file server whose clock is 2 h behind this host stamps a fresh blob '2 h old' by this host's clock."""
    behind = 7200.0
    sha = ws.blobs.put_bytes(b"just written on another host")
    _age(ws.blobs.path(sha), behind)  # the server's stamp
    monkeypatch.setattr(gc_module, "filesystem_now", lambda directory: time.time() - behind)
    report = gc(ws, GcConfig())
    assert report.removed == () and report.kept_recent == (sha,) and ws.blobs.has(sha)
    _age(ws.blobs.path(sha), behind + 3700)  # now an hour old by the server's clock
    assert [s for s, _ in gc(ws, GcConfig()).removed] == [sha]


def test_a_slow_pass_reads_the_references_again(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer stores a blob, gc reads the references, the writer commits, and gc reaches the blob only
    after longer than the grace period: it must see the commit, not its old reading."""
    sha = ws.blobs.put_bytes(b"new shard")
    clock = {"now": time.monotonic()}
    monkeypatch.setattr(gc_module.time, "monotonic", lambda: clock["now"])
    real_read = gc_module.referenced_blobs
    reads = []

    def read_then_writer_commits_and_an_hour_passes(workspace: Workspace) -> set[str]:
        keep = real_read(workspace)
        if not reads:
            workspace.registry.commit(NewRecord(kind="dataset", name="d", body={"shard": sha}, blobs=((sha, "shard"),)))
            _age(workspace.blobs.path(sha), 3700)
            clock["now"] += 3700
        reads.append(len(keep))
        return keep

    monkeypatch.setattr(gc_module, "referenced_blobs", read_then_writer_commits_and_an_hour_passes)
    report = gc(ws, GcConfig())
    assert report.references_read == 2 and report.removed == () and ws.blobs.verify(sha)


def test_a_marker_left_by_another_users_writer_protects_the_blob_then_expires(
        ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    sha = ws.blobs.put_bytes(b"orphan of a crashed ingest")
    _age(ws.blobs.path(sha), 7200)

    def not_yours(path: object, *args: object, **kwargs: object) -> None:
        raise PermissionError(1, "Operation not permitted", str(path))

    monkeypatch.setattr(os, "utime", not_yours)
    ws.blobs.put_bytes(b"orphan of a crashed ingest")  # another user's writer, about to commit
    monkeypatch.undo()
    marker = ws.blobs.tmp / f"{sha}.fresh"
    report = gc(ws, GcConfig())
    assert report.kept_recent == (sha,) and report.tmp_kept_recent == 1 and marker.exists()
    _age(marker, 7200)  # the writer never committed
    report = gc(ws, GcConfig())
    assert [s for s, _ in report.removed] == [sha] and [f for f, _ in report.tmp_removed] == [marker.name]
    assert not ws.blobs.has(sha) and not marker.exists()


def test_gc_puts_back_what_a_killed_gc_moved_aside_before_judging_it(ws: Workspace) -> None:
    [(kept, path)] = list(ws.blobs.files())
    os.rename(path, path.with_name(path.name + ".gc-killed"))  # a referenced blob, moved aside by a killed gc
    orphan = ws.blobs.put_bytes(b"old orphan")
    _age(ws.blobs.path(orphan), 7200)
    os.rename(ws.blobs.path(orphan), ws.blobs.path(orphan).with_name(ws.blobs.path(orphan).name + ".gc-killed"))
    report = gc(ws, GcConfig())
    assert report.restored == 2 and [s for s, _ in report.removed] == [orphan]
    assert ws.blobs.verify(kept) and not ws.blobs.has(orphan)
    assert not any(".gc-" in p.name for p in ws.blobs.root.rglob("*"))


def test_dry_run_writes_nothing_and_deletes_nothing(ws: Workspace) -> None:
    orphan = ws.blobs.put_bytes(b"old orphan")
    _age(ws.blobs.path(orphan), 7200)
    before = sorted(p for p in ws.blobs.root.rglob("*"))
    report = gc(ws, GcConfig(dry_run=True))
    assert [s for s, _ in report.removed] == [orphan] and report.to_json()["bytes_removed"] == len(b"old orphan")
    assert sorted(p for p in ws.blobs.root.rglob("*")) == before
