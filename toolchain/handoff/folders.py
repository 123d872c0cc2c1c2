"""Writing a hand-off's folder: verified copies, and replacing a previous hand-off in one step.

A hand-off is assembled in a staging folder beside its destination and swapped into place when every file is
written and checked, so a reader (DeepStream, Triton polling its repository) sees the old folder or the new
one, never half of one and never none. A destination that holds files no hand-off wrote is refused rather than
replaced.

The swap is Linux's ``renameat2(..., RENAME_EXCHANGE)``: one system call exchanges the staging folder and the
destination, so the destination path names a complete folder at every instant (two renames, old away then new
in, leave a moment with no folder, and Triton in poll mode unloads a model whose folder it does not find). The
alternative, a versioned folder behind a symlink swapped with ``rename``, was not taken: the user's ``--out``
would become a symlink, and a container that bind-mounts it resolves the link once, at start, and keeps reading
the old version. Where the exchange is unavailable (not Linux, a kernel before 3.15, a C library without
``renameat2``, a file system that refuses the flag, such as NFS) the two renames remain, with their short gap.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from toolchain.errors import CorruptStoreError, UsageError
from toolchain.fileio import write_atomic

REPORT_FILE = "handoff.json"


def copy_verified(source: Path, destination: Path, sha256: str) -> Path:
    """Copy ``source`` to ``destination`` (atomically), refusing bytes that are not ``sha256`` (when given)."""
    data = source.read_bytes()
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        raise CorruptStoreError(f"{source} no longer matches its sha256 {sha256[:12]}...; run `toolchain registry "
                                "verify` and rebuild it")
    write_atomic(destination, data)
    return destination


def normal_permissions(root: Path) -> None:
    """Give ``root`` and everything under it the permissions a plain ``open``/``mkdir`` would (the umask's): the
    staging folder (mkdtemp) and atomic writes (mkstemp) start private, and a DeepStream or Triton container
    running as another user must read the hand-off."""
    umask = current_umask()
    paths = [root, *root.rglob("*")] if root.is_dir() else [root]
    for path in paths:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def current_umask() -> int:
    """The process's umask, read without changing it.

    ``os.umask`` can only be read by setting it, and setting it, even for an instant, changes the mode of
    whatever another thread creates in that instant. Linux (4.7 and later) reports it in ``/proc/self/status``
    (``Umask:``). Elsewhere (or where /proc is not mounted) a folder is made with mode 0777 inside a private
    temporary folder and its mode read back: the kernel applies the umask to it, as to every ``mkdir`` (a
    default ACL on the temporary folder would override the umask; system temporary folders have none).
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split(":", 1)[1].strip(), 8) & 0o777
    except (OSError, ValueError):
        pass
    with tempfile.TemporaryDirectory(prefix="toolchain-umask-") as private:
        probe = Path(private) / "probe"
        probe.mkdir(mode=0o777)
        return ~probe.stat().st_mode & 0o777


_AT_FDCWD = -100
_RENAME_EXCHANGE = 1 << 1  # <linux/fs.h>
_UNSUPPORTED = {errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP}


@functools.cache
def _renameat2() -> Any:
    """The C library's ``renameat2`` (glibc 2.28+, musl 1.2.2+), or None (not Linux, an older C library)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


def exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths in one step (``renameat2`` with ``RENAME_EXCHANGE``); False where that is unsupported.

    Raises:
        OSError: The exchange was refused for another reason (permissions, a missing path, ...).
    """
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), str(first), None, str(second))


@contextmanager
def staged_folder(destination: Path) -> Iterator[Path]:
    """A fresh folder beside ``destination``; on a clean exit it replaces ``destination`` in one step (see above).

    Raises:
        UsageError: ``destination`` is a file, or a folder holding files that no hand-off wrote.
    """
    destination = destination.absolute()
    if destination.exists() and not destination.is_dir():
        raise UsageError(f"{destination} is a file; --out takes a folder")
    if destination.is_dir() and any(destination.iterdir()) and not (destination / REPORT_FILE).is_file():
        raise UsageError(f"{destination} holds files that `toolchain handoff` did not write; choose a new or empty "
                         "folder (a previous hand-off there is replaced)")
    destination.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".staging", dir=destination.parent))
    try:
        yield stage
        normal_permissions(stage)
        if destination.is_dir() and exchange(stage, destination):
            return  # the previous hand-off is now at ``stage``, removed below
        _replace_in_two_steps(stage, destination)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _replace_in_two_steps(stage: Path, destination: Path) -> None:
    """Rename ``stage`` to ``destination``: at once where there is none (or an empty one); otherwise the old folder
    goes aside first, which leaves a moment with no folder (only where :func:`exchange` is unsupported)."""
    old = None
    if destination.exists() and any(destination.iterdir()):
        old = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".old", dir=destination.parent))
        old.rmdir()
        destination.rename(old)
    try:
        stage.rename(destination)  # replaces an empty folder in one step
    except OSError:
        if old is not None:
            old.rename(destination)  # the previous hand-off stays as it was
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
