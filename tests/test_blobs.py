from __future__ import annotations

import errno
import hashlib
import multiprocessing
import multiprocessing.connection
import os
import pwd
import shutil
import stat
import tempfile
import threading
import time
from pathlib import Path

import pytest

from toolchain.blobs import BlobStore, blob_dir
from toolchain.errors import CorruptStoreError, InputNotFoundError, UsageError
from toolchain.sharedfs import filesystem_now


def test_put_and_read_are_content_addressed(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    sha = blobs.put_bytes(b"hello")
    assert sha == hashlib.sha256(b"hello").hexdigest()
    assert blobs.path(sha) == tmp_path / "objects" / sha[:2] / sha[2:]
    assert blobs.read_bytes(sha) == b"hello"
    assert blobs.put_bytes(b"hello") == sha  # second write is a no-op
    assert list(blobs) == [sha]
    assert list(blobs.tmp.iterdir()) == []


def test_put_file_and_verify_detects_tampering(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "ws")
    src = tmp_path / "f.bin"
    src.write_bytes(b"x" * 3_000_000)
    sha = blobs.put_file(src)
    assert blobs.verify(sha)
    path = blobs.path(sha)
    path.chmod(0o644)
    path.write_bytes(b"tampered")
    assert not blobs.verify(sha)
    path.unlink()
    with pytest.raises(CorruptStoreError, match="verify"):
        blobs.require(sha)


def test_failed_write_leaves_no_blob_and_no_temp_file(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    with pytest.raises(RuntimeError):
        with blobs.writer() as w:
            w.write(b"partial")
            raise RuntimeError("crash")
    assert list(blobs) == []
    assert list(blobs.tmp.iterdir()) == []


def test_a_temp_file_gc_deleted_mid_write_is_a_clear_error(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    with pytest.raises(CorruptStoreError, match="--grace"):
        with blobs.writer() as w:
            w.write(b"a write that stalled past gc's grace period")
            for leftover in blobs.temp_files():
                leftover.unlink()  # what gc on another host does to a temp file it takes for a crashed writer's
    assert list(blobs) == []


def test_blob_dir_takes_a_path_or_a_file_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert blob_dir("shared/blobs") == tmp_path / "shared" / "blobs"  # relative to where the command runs
    assert blob_dir(f"file://{tmp_path}/with%20space") == tmp_path / "with space"
    assert blob_dir(str(tmp_path / "b")) == tmp_path / "b"
    for wrong in ("s3://bucket/blobs", "nfs://server/export", "  "):
        with pytest.raises(UsageError):
            blob_dir(wrong)


def test_a_store_that_must_exist_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="does not exist"):
        BlobStore(tmp_path / "unmounted", create=False)
    assert not (tmp_path / "unmounted").exists()
    (tmp_path / "mounted").mkdir()
    blobs = BlobStore(tmp_path / "mounted", create=False)
    assert blobs.read_bytes(blobs.put_bytes(b"x")) == b"x"


# --------------------------------------------------------------------------- a store shared by several hosts


def _age(path: Path, seconds: float) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


def _put_many(root: str, data: bytes, start: float) -> str:
    while time.time() < start:  # all at once
        pass
    return BlobStore(Path(root)).put_bytes(data)


def _watch(path: Path, stop: threading.Event, seen: list[tuple[int, str]]) -> None:
    """Read ``path`` whenever it exists; record (inode, sha256) of every read."""
    while not stop.is_set():
        try:
            with open(path, "rb") as f:
                seen.append((os.fstat(f.fileno()).st_ino, hashlib.sha256(f.read()).hexdigest()))
        except FileNotFoundError:
            continue


def test_concurrent_writers_of_the_same_blob_publish_it_once_and_readers_never_see_part_of_it(tmp_path: Path) -> None:
    data = os.urandom(4 << 20)
    sha = hashlib.sha256(data).hexdigest()
    blobs = BlobStore(tmp_path)
    stop, seen = threading.Event(), []
    reader = threading.Thread(target=_watch, args=(blobs.path(sha), stop, seen))
    reader.start()
    context = multiprocessing.get_context("spawn")
    start = time.time() + 1.5
    try:
        with context.Pool(8) as pool:
            assert pool.starmap(_put_many, [(str(tmp_path), data, start)] * 8) == [sha] * 8
        time.sleep(0.05)
    finally:
        stop.set()
        reader.join()
    assert seen, "the reader never saw the blob"
    assert {digest for _, digest in seen} == {sha}  # never a partial blob
    assert {inode for inode, _ in seen} == {os.stat(blobs.path(sha)).st_ino}  # never replaced once published
    assert list(blobs.temp_files()) == [] and blobs.verify(sha)


def test_a_slow_write_is_invisible_until_complete(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    chunk = os.urandom(1 << 16)
    sha = hashlib.sha256(chunk * 64).hexdigest()
    with blobs.writer() as w:
        for _ in range(64):
            w.write(chunk)
            assert not blobs.has(sha) and list(blobs) == []
    assert blobs.read_bytes(sha) == chunk * 64


def test_publishing_over_an_existing_blob_keeps_the_file_readers_have_open(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    sha = blobs.put_bytes(b"weights")
    with open(blobs.path(sha), "rb") as reader:
        with blobs.writer() as w:  # a second host wrote the same bytes and publishes after the first
            w.write(b"weights")
        assert os.fstat(reader.fileno()).st_ino == os.stat(blobs.path(sha)).st_ino
        assert reader.read() == b"weights"


def test_without_hard_links_publication_renames_but_never_over_a_blob(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")  # what link(2) says on a share without hard links

    monkeypatch.setattr(os, "link", no_links)
    blobs = BlobStore(tmp_path)
    sha = blobs.put_bytes(b"engine")
    inode = os.stat(blobs.path(sha)).st_ino
    assert blobs.put_bytes(b"engine") == sha and os.stat(blobs.path(sha)).st_ino == inode
    assert blobs.read_bytes(sha) == b"engine" and list(blobs.temp_files()) == []


def test_storing_an_existing_blob_marks_it_wanted_now(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    sha = blobs.put_bytes(b"shard")
    _age(blobs.path(sha), 7200)
    assert blobs.wanted_since(sha) < time.time() - 7000
    blobs.put_bytes(b"shard")
    assert blobs.wanted_since(sha) > time.time() - 60
    assert blobs.wanted_since("0" * 64) == 0.0


def test_another_users_blob_is_marked_wanted_by_a_marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blobs = BlobStore(tmp_path)
    sha = blobs.put_bytes(b"someone else's shard")
    _age(blobs.path(sha), 7200)

    def not_yours(path: object, *args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted", str(path))  # utime on a file of another user

    monkeypatch.setattr(os, "utime", not_yours)
    assert blobs.put_bytes(b"someone else's shard") == sha
    assert os.stat(blobs.path(sha)).st_mtime < time.time() - 7000  # the blob itself untouched
    assert blobs.wanted_since(sha) > time.time() - 60  # the marker tmp/SHA.fresh says it is wanted
    assert [p.name for p in blobs.temp_files()] == [f"{sha}.fresh"]
    monkeypatch.undo()
    assert blobs.retire(sha, cutoff=time.time() - 3600) == ("kept", 0)
    assert blobs.verify(sha)


def _second_user_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root, to become a second user (nobody) in a forked writer"
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        return "there is no user nobody"
    return None


def _put_as(uid: int, gid: int, root: str, blobs: list[bytes], answer: multiprocessing.connection.Connection) -> None:
    os.setgid(gid)
    os.setuid(uid)  # from here on this writer cannot touch root's files
    try:
        store = BlobStore(Path(root), create=False)
        answer.send([store.put_bytes(data) for data in blobs])
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        answer.send(repr(exc))


def _same_fanout(sha: str) -> bytes:
    """Bytes whose blob lands in the same ``objects/ab`` directory as ``sha``."""
    for i in range(100_000):
        data = f"another blob {i}".encode()
        if hashlib.sha256(data).hexdigest()[:2] == sha[:2]:
            return data
    raise AssertionError("no such bytes")


@pytest.mark.skipif(_second_user_unavailable() is not None, reason=str(_second_user_unavailable()))
def test_a_second_unix_user_adds_blobs_and_protects_the_first_users_from_gc() -> None:
    """A team share: the root is writable by the team; one user's blobs and directories, another user's writer."""
    nobody = pwd.getpwnam("nobody")
    base = Path(tempfile.mkdtemp(prefix="toolchain-shared-blobs-"))
    old_umask = os.umask(0o022)  # the first user's directories would be 0755, closed to the second user
    try:
        base.chmod(0o755)
        root = base / "blobs"
        root.mkdir()
        root.chmod(0o777)  # what the team's admin sets up (chgrp team; chmod 2775)
        blobs = BlobStore(root, create=False)
        first = b"shard written by the first user"
        sha = blobs.put_bytes(first)
        assert stat.S_IMODE(os.stat(blobs.path(sha).parent).st_mode) == 0o777  # the root's mode, not the umask's
        _age(blobs.path(sha), 7200)
        context = multiprocessing.get_context("fork")  # the code is loaded already: nobody need not read it
        receive, send = context.Pipe(duplex=False)
        second = _same_fanout(sha)
        writer = context.Process(target=_put_as, args=(nobody.pw_uid, nobody.pw_gid, str(root), [first, second], send))
        writer.start()
        assert receive.poll(60)
        assert receive.recv() == [sha, hashlib.sha256(second).hexdigest()]
        writer.join(10)
        assert os.stat(blobs.path(sha)).st_uid == 0 and os.stat(blobs.path(sha)).st_mtime < time.time() - 7000
        assert os.stat(blobs.tmp / f"{sha}.fresh").st_uid == nobody.pw_uid  # wanted now, by a marker
        assert blobs.retire(sha, cutoff=time.time() - 3600) == ("kept", 0) and blobs.verify(sha)
        assert blobs.verify(hashlib.sha256(second).hexdigest())
    finally:
        os.umask(old_umask)
        shutil.rmtree(base, ignore_errors=True)


def test_retire_deletes_only_what_is_still_stale_once_moved_aside(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    old, fresh = blobs.put_bytes(b"old orphan"), blobs.put_bytes(b"fresh orphan")
    _age(blobs.path(old), 7200)
    cutoff = time.time() - 3600
    assert blobs.retire(old, cutoff=cutoff) == ("removed", len(b"old orphan")) and not blobs.has(old)
    assert blobs.retire(old, cutoff=cutoff) == ("gone", 0)
    inode = os.stat(blobs.path(fresh)).st_ino
    assert blobs.retire(fresh, cutoff=cutoff) == ("kept", 0)
    assert os.stat(blobs.path(fresh)).st_ino == inode  # put back: the same file
    assert sorted(p.name for p in blobs.path(fresh).parent.iterdir()) == [fresh[2:]]  # nothing left aside


def test_a_writer_that_stores_a_blob_while_gc_retires_it_keeps_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The two interleavings of a writer storing bytes again and gc deleting the old copy."""
    import toolchain.blobs as blobs_module

    blobs = BlobStore(tmp_path)
    data = b"an orphan a writer is about to reference"
    sha = blobs.put_bytes(data)
    real_retire = blobs_module.retire

    def writer_during_retire(path: Path, *, stale):  # type: ignore[no-untyped-def]
        asked = []

        def stale_then_writer(info: os.stat_result) -> bool:
            verdict = stale(info)
            asked.append(verdict)
            if len(asked) == 2:  # the second look is after the move: the writer finds no blob, publishes its own
                assert blobs.put_bytes(data) == sha
            return verdict

        return real_retire(path, stale=stale_then_writer)

    _age(blobs.path(sha), 7200)
    monkeypatch.setattr(blobs_module, "retire", writer_during_retire)
    assert blobs.retire(sha, cutoff=time.time() - 3600) == ("removed", len(data))  # the old copy
    assert blobs.verify(sha)  # the writer's copy
    monkeypatch.undo()
    _age(blobs.path(sha), 7200)
    blobs.freshen(sha)  # before the move: gc reads the new time after it
    assert blobs.retire(sha, cutoff=time.time() - 3600) == ("kept", 0) and blobs.verify(sha)


def test_what_a_killed_gc_had_moved_aside_is_put_back(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    sha, other = blobs.put_bytes(b"moved aside, then gc was killed"), blobs.put_bytes(b"republished meanwhile")
    aside = blobs.path(sha).with_name(blobs.path(sha).name + ".gc-0123abcd")
    os.rename(blobs.path(sha), aside)
    assert list(blobs) == [other]  # an aside file is not a blob
    os.link(blobs.path(other), blobs.path(other).with_name(blobs.path(other).name + ".gc-89ef"))
    stale_tmp = blobs.tmp / "1-dead.part.gc-77"
    stale_tmp.write_bytes(b"half")
    assert blobs.restore_aside() == 3
    assert sorted(blobs) == sorted([sha, other]) and blobs.verify(sha) and blobs.verify(other)
    assert sorted(p.name for p in blobs.tmp.iterdir()) == ["1-dead.part"]
    assert all(".gc-" not in p.name for p in blobs.objects.rglob("*"))


def test_filesystem_now_is_the_clock_that_stamps_files(tmp_path: Path) -> None:
    before = time.time()
    now = filesystem_now(tmp_path)
    assert before - 2 < now < time.time() + 2 and list(tmp_path.iterdir()) == []
