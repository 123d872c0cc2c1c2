"""Writing a hand-off's folder: verified copies, and replacing a previous hand-off in one step.

A hand-off is assembled in a staging folder beside its destination and renamed into place when every file is
written and checked, so a reader (DeepStream, Triton polling its repository) sees the old folder or the new
one, never half of one. A destination that holds files no hand-off wrote is refused rather than replaced.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
    umask = os.umask(0)
    os.umask(umask)
    paths = [root, *root.rglob("*")] if root.is_dir() else [root]
    for path in paths:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


@contextmanager
def staged_folder(destination: Path) -> Iterator[Path]:
    """A fresh folder beside ``destination``; on a clean exit it replaces ``destination`` (atomically renamed).

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
        old = None
        if destination.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".old", dir=destination.parent))
            old.rmdir()
            destination.rename(old)
        try:
            stage.rename(destination)
        except OSError:
            if old is not None:
                old.rename(destination)  # the previous hand-off stays as it was
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
