from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from toolchain.blobs import BlobStore
from toolchain.errors import CorruptStoreError


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
