"""Content-addressed blob store: ``objects/ab/abcdef...`` named by sha256, safe to share between hosts.

The store is a directory: the workspace's own by default, or one named by ``--blobs DIR`` /
``$TOOLCHAIN_BLOBS`` (:func:`blob_dir`), which may be a share (NFS, SMB) that several workspaces and
hosts write at once. What makes that safe:

* **Publication is atomic and never replaces.** A blob is written to a uniquely named file in ``tmp/``
  (same filesystem), fsynced and closed (NFS close-to-open: the bytes are on the server), then linked
  to its name (:func:`toolchain.sharedfs.publish`); nothing is ever written in place under ``objects/``.
  So a reader on any host finds no blob or the whole blob, never part of one, and a blob's file is
  never swapped for another copy while someone has it open or memory-mapped. A crash leaves at worst
  a temporary file, which ``registry gc`` removes once it is older than its grace period.
* **Storing an existing blob refreshes it.** The blob is already there, so the writer only marks it
  as wanted now: it sets its mtime (``utime``), or, when the file belongs to another user and cannot be
  touched, replaces the marker ``tmp/SHA.fresh`` (:meth:`BlobStore.wanted_since` is the later of the two).
  ``registry gc`` (:mod:`toolchain.registry.gc`) spares a blob wanted within its grace period, which
  is what lets a writer store blobs first and commit the record that references them afterwards.
* **Every user of a team share can write.** Directories the store creates (``objects/``, ``tmp/``,
  ``objects/ab/``) get the permission bits of the store's root, not the creating user's umask: make
  the root group-writable and setgid for the team, and the rest follows.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from toolchain.errors import CorruptStoreError, InputNotFoundError, UsageError
from toolchain.hashing import is_sha256, sha256_file
from toolchain.sharedfs import (
    ASIDE_MARK,
    Outcome,
    fsync_dir,
    publish,
    restore_aside,
    retire,
)

_CHUNK = 1 << 20
FRESH_SUFFIX = ".fresh"
_PUBLISH_ATTEMPTS = 5


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
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        for directory in (self.tmp, self.objects):
            self._make_dir(directory)

    def _make_dir(self, path: Path) -> None:
        """Create a directory of the store with the store root's permission bits, appearing whole.

        On a team share the root is group-writable (and setgid); every directory under it must be too,
        whatever the umask of the user who happens to create it, or the next user cannot add blobs.
        The directory is made in ``tmp/`` and renamed into place, so nobody sees it before its mode is set.
        """
        if path.is_dir():
            return
        mode = stat.S_IMODE(os.stat(self.root).st_mode)
        staging = (self.tmp if path != self.tmp else self.root) / f".{os.getpid()}-{uuid.uuid4().hex}.dir"
        staging.mkdir()
        try:
            os.chmod(staging, mode)
            os.rename(staging, path)
        except OSError:
            if not path.is_dir():  # not simply another process that made it first
                raise
        finally:
            if staging.is_dir():
                staging.rmdir()

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

    # -- writing -------------------------------------------------------------------------------
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
            self._publish(tmp_path, stream.sha256)
        finally:
            handle.close()
            tmp_path.unlink(missing_ok=True)

    def _publish(self, tmp_path: Path, sha256: str) -> None:
        final = self.path(sha256)
        self._make_dir(final.parent)
        try:
            os.chmod(tmp_path, 0o444)
        except FileNotFoundError:
            raise self._temp_lost(tmp_path) from None
        for _ in range(_PUBLISH_ATTEMPTS):
            try:
                if publish(tmp_path, final):
                    fsync_dir(final.parent)
                    return
            except FileNotFoundError:
                raise self._temp_lost(tmp_path) from None
            if self.freshen(sha256):
                return
            # It was there when we linked and gone when we touched it: a gc removed it just now. Ours goes in.
        raise CorruptStoreError(
            f"blob {sha256[:12]} vanished {_PUBLISH_ATTEMPTS} times while it was being stored in {self.objects}; "
            "is a `toolchain registry gc --grace 0` running in a loop? Stop it and rerun the command"
        )

    def _temp_lost(self, tmp_path: Path) -> CorruptStoreError:
        return CorruptStoreError(
            f"the temporary file {tmp_path} was deleted while this blob was being written: a `toolchain registry gc` "
            "took it for a crashed writer's leftover (the write stalled longer than its --grace). Rerun the command; "
            "run gc with a longer --grace"
        )

    def freshen(self, sha256: str) -> bool:
        """Mark an existing blob as wanted now (a writer is about to reference it); False when it is missing.

        Sets the blob's mtime, or, for a file this user may not touch (another user's, read-only),
        replaces the marker ``tmp/SHA.fresh``. The marker is written before the blob is looked at
        again, so a ``gc`` that moves the blob aside after that look also finds the marker.
        """
        final = self.path(sha256)
        try:
            os.utime(final)
            return True
        except FileNotFoundError:
            return False
        except PermissionError:
            pass
        staging = self.tmp / f"{os.getpid()}-{uuid.uuid4().hex}.part"
        staging.touch()
        os.replace(staging, self._marker(sha256))  # a new file: its mtime is now, whoever owned the old one
        return final.is_file()

    def _marker(self, sha256: str) -> Path:
        return self.tmp / f"{sha256}{FRESH_SUFFIX}"

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

    # -- reading -------------------------------------------------------------------------------
    def read_bytes(self, sha256: str) -> bytes:
        return self.require(sha256).read_bytes()

    def verify(self, sha256: str) -> bool:
        """True when the blob exists and its bytes still hash to its name."""
        path = self.path(sha256)
        return path.is_file() and sha256_file(path) == sha256

    def __iter__(self) -> Iterator[str]:
        for sha, _ in self.files():
            yield sha

    def files(self) -> Iterator[tuple[str, Path]]:
        """Every blob file as ``(sha256, path)``, skipping anything that is not named like a blob."""
        for sub in self._fanout_dirs():
            for blob in sorted(sub.iterdir()):
                sha = sub.name + blob.name
                if is_sha256(sha) and blob.is_file():
                    yield sha, blob

    def _fanout_dirs(self) -> list[Path]:
        if not self.objects.is_dir():
            return []
        return [sub for sub in sorted(self.objects.iterdir()) if len(sub.name) == 2 and sub.is_dir()]

    def temp_files(self) -> Iterator[Path]:
        """Files in the temporary area: in-flight writes, leftovers of crashed writers, ``.fresh`` markers."""
        if self.tmp.is_dir():
            yield from sorted(p for p in self.tmp.iterdir() if p.is_file() and ASIDE_MARK not in p.name)

    # -- for gc ----------------------------------------------------------------------------------
    def wanted_since(self, sha256: str) -> float:
        """When the blob was last stored (published or freshened), as a file time; 0 when it is missing."""
        times = []
        for path in (self.path(sha256), self._marker(sha256)):
            try:
                times.append(path.stat().st_mtime)
            except FileNotFoundError:
                continue
        return max(times, default=0.0)

    def retire(self, sha256: str, *, cutoff: float) -> tuple[Outcome, int]:
        """Delete a blob not stored since ``cutoff`` (a file time), safely against a concurrent writer.

        Returns:
            ``("removed", size)``, ``("kept", 0)`` when it was stored again since ``cutoff``, or
            ``("gone", 0)`` when it no longer existed.
        """
        marker = self._marker(sha256)

        def stale(info: os.stat_result) -> bool:
            if info.st_mtime >= cutoff:
                return False
            try:  # read after the blob was moved aside (see freshen)
                return marker.stat().st_mtime < cutoff
            except FileNotFoundError:
                return True

        return retire(self.path(sha256), stale=stale)

    def retire_temp(self, path: Path, *, cutoff: float) -> tuple[Outcome, int]:
        """Delete a temporary file (or ``.fresh`` marker) not written since ``cutoff`` (a file time)."""
        return retire(path, stale=lambda info: info.st_mtime < cutoff)

    def restore_aside(self) -> int:
        """Put back what a killed ``gc`` had moved aside; returns how many files it found."""
        return sum(restore_aside(sub) for sub in [*self._fanout_dirs(), self.tmp])
