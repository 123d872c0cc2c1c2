"""Content-addressed blob store: ``objects/ab/abcdef...`` named by sha256, written atomically.

Every write goes to a uniquely named temporary file in the store, is fsynced, then moved into place
with :func:`os.replace`. A crash leaves at worst an orphan temporary file (removed by ``gc``), never a
half-written blob under a real name.

The store is a directory: the workspace's own by default, or one named by ``--blobs DIR`` /
``$TOOLCHAIN_BLOBS`` (:func:`blob_dir`), which may be shared by several workspaces and hosts.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from toolchain.errors import CorruptStoreError, InputNotFoundError, UsageError
from toolchain.hashing import is_sha256, sha256_file

_CHUNK = 1 << 20


class BlobWriter(io.RawIOBase):
    """A writable stream that hashes what it writes; :attr:`sha256` is set once committed."""

    def __init__(self, handle: BinaryIO) -> None:
        super().__init__()
        self._handle = handle
        self._hash = hashlib.sha256()
        self.size = 0
        self.sha256: str | None = None

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(data).cast("B")
        self._handle.write(view)
        self._hash.update(view)
        self.size += len(view)
        return len(view)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def blob_dir(location: str | Path) -> Path:
    """The blob store directory named by ``--blobs`` / ``$TOOLCHAIN_BLOBS``: a path or a ``file://`` URL, made absolute.

    Raises:
        UsageError: Any other URL scheme (only directories are blob stores; mount a share to use one).
    """
    text = str(location).strip()
    if not text:
        raise UsageError("the blob store location is empty; pass --blobs DIR or unset TOOLCHAIN_BLOBS")
    scheme, sep, _ = text.partition("://")
    if sep and len(scheme) > 1:  # not a Windows drive letter
        if scheme.lower() != "file":
            raise UsageError(
                f"--blobs / TOOLCHAIN_BLOBS must be a directory or a file:// URL, not {scheme}://; mount the share "
                "(NFS, SMB) and pass its path"
            )
        text = unquote(urlsplit(text).path)
    return Path(text).expanduser().absolute()


class BlobStore:
    """Immutable blobs addressed by the sha256 of their bytes.

    Args:
        root: Directory that holds ``objects/`` and ``tmp/``.
        create: Create ``root`` when missing (a workspace's own store). A store named explicitly must
            exist: a share that is not mounted must not silently become an empty local store.
    """

    def __init__(self, root: Path, *, create: bool = True) -> None:
        self.root = Path(root)
        if not create and not self.root.is_dir():
            raise InputNotFoundError(
                f"the blob store {self.root} does not exist or is not a directory; create it (mkdir -p {self.root}) "
                "or mount the share it lives on, or fix --blobs / TOOLCHAIN_BLOBS"
            )
        self.objects = self.root / "objects"
        self.tmp = self.root / "tmp"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        """Where the blob ``sha256`` lives (whether or not it exists)."""
        if not is_sha256(sha256):
            raise InputNotFoundError(f"'{sha256}' is not a sha256 digest")
        return self.objects / sha256[:2] / sha256[2:]

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def require(self, sha256: str) -> Path:
        """Path of an existing blob, or a clear error when it is missing."""
        path = self.path(sha256)
        if not path.is_file():
            raise CorruptStoreError(
                f"blob {sha256[:12]} is missing from {self.objects}; "
                "run `toolchain registry verify` and re-create the record that needs it"
            )
        return path

    @contextmanager
    def writer(self) -> Iterator[BlobWriter]:
        """Stream bytes into a new blob; the digest is in ``writer.sha256`` after the block."""
        tmp_path = self.tmp / f"{os.getpid()}-{uuid.uuid4().hex}.part"
        handle = open(tmp_path, "wb")
        stream = BlobWriter(handle)
        try:
            yield stream
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            stream.sha256 = stream.hexdigest()
            self._commit(tmp_path, stream.sha256)
        except BaseException:
            handle.close()
            tmp_path.unlink(missing_ok=True)
            raise

    def _commit(self, tmp_path: Path, sha256: str) -> None:
        final = self.path(sha256)
        if final.is_file():
            tmp_path.unlink(missing_ok=True)
            # The caller is about to reference this blob: refresh its mtime so a concurrent ``gc``
            # (which spares blobs younger than its grace period) does not delete it first.
            try:
                os.utime(final)
            except OSError:  # another user's blob: its age then decides, as before
                pass
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp_path, 0o444)
        os.replace(tmp_path, final)

    def put_bytes(self, data: bytes) -> str:
        """Store ``data``; returns its sha256."""
        with self.writer() as w:
            w.write(data)
        assert w.sha256 is not None
        return w.sha256

    def put_file(self, src: Path) -> str:
        """Copy a file into the store; returns its sha256."""
        with open(src, "rb") as f, self.writer() as w:
            shutil.copyfileobj(f, w, _CHUNK)  # type: ignore[misc]
        assert w.sha256 is not None
        return w.sha256

    def read_bytes(self, sha256: str) -> bytes:
        return self.require(sha256).read_bytes()

    def verify(self, sha256: str) -> bool:
        """True when the blob exists and its bytes still hash to its name."""
        path = self.path(sha256)
        return path.is_file() and sha256_file(path) == sha256

    def __iter__(self) -> Iterator[str]:
        for sub in sorted(self.objects.iterdir()):
            if sub.is_dir():
                for blob in sorted(sub.iterdir()):
                    yield sub.name + blob.name

    def files(self) -> Iterator[tuple[str, Path]]:
        """Every blob file as ``(sha256, path)``, skipping anything that is not named like a blob."""
        if not self.objects.is_dir():
            return
        for sub in sorted(self.objects.iterdir()):
            if len(sub.name) != 2 or not sub.is_dir():
                continue
            for blob in sorted(sub.iterdir()):
                sha = sub.name + blob.name
                if is_sha256(sha) and blob.is_file():
                    yield sha, blob

    def remove(self, sha256: str) -> bool:
        """Delete one blob (for ``gc``); True when a file was removed.

        Empty ``objects/ab`` directories are left in place: removing one could race with a writer
        that has just created it and is about to move its blob in.
        """
        path = self.path(sha256)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def temp_files(self) -> Iterator[Path]:
        """Files in the temporary area (in-flight writes, or leftovers of crashed writers)."""
        if self.tmp.is_dir():
            yield from sorted(p for p in self.tmp.iterdir() if p.is_file())

    def clean_tmp(self) -> int:
        """Remove temporary files left by crashed writers. Returns how many were removed."""
        removed = 0
        for part in self.tmp.glob("*.part"):
            part.unlink(missing_ok=True)
            removed += 1
        return removed
