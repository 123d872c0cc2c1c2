from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from toolchain.blobs import BlobStore, blob_dir
from toolchain.errors import CorruptStoreError, InputNotFoundError, UsageError


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


def test_clean_tmp_removes_leftovers_of_killed_writers(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    (blobs.tmp / "123-abc.part").write_bytes(b"half")
    assert blobs.clean_tmp() == 1


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
