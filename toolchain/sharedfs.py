"""File operations that stay correct when several hosts use one directory at once (an NFS or SMB share).

* :func:`publish` gives a finished file its final name without ever replacing a file already there
  (``link``, which fails when the name exists). A reader finds either no file or the whole one, and a
  name, once published, keeps its inode: a reader that has it open or memory-mapped on another host is
  never pulled from under (a rename over it would be, on NFSv3: ``ESTALE`` / ``SIGBUS``).
* :func:`retire` deletes a file only if it is still stale after it has been moved aside, and puts it
  back otherwise, so a writer that refreshed it at the last moment keeps it (see the caller's rule).
* :func:`filesystem_now` reads the clock that stamps the files (the file server's), so an age computed
  on one host is not off by that host's clock skew.

Standard library only.
"""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Literal

ASIDE_MARK = ".gc-"
"""Infix of a file :func:`retire` has moved aside (``NAME.gc-TOKEN``); :func:`restore_aside` puts leftovers back."""

# link(2) fails with these where the filesystem has no hard links (some SMB mounts, FAT).
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})

Outcome = Literal["removed", "kept", "gone"]


def publish(src: Path, dest: Path) -> bool:
    """Give the complete file ``src`` the name ``dest`` unless ``dest`` exists.

    Returns:
        True when ``src`` was published as ``dest``; False when ``dest`` already existed (it is left
        alone). ``src`` may remain under its own name either way: callers remove it.
    """
    try:
        os.link(src, dest)
        return True
    except FileExistsError:  # also what a retransmitted NFS LINK that did succeed answers: the file is there
        return False
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
    # No hard links here: rename, and only onto a free name. Two writers of the same bytes can still both
    # get past the check; the second then replaces an identical file, never a different one.
    if os.path.lexists(dest):
        return False
    os.rename(src, dest)
    return True


def fsync_dir(directory: Path) -> None:
    """Make a new directory entry durable where the filesystem allows it (NFS and SMB commit it already)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a directory; the entry is then as durable as they make it
        pass
    finally:
        os.close(fd)


def retire(path: Path, *, stale: Callable[[os.stat_result], bool]) -> tuple[Outcome, int]:
    """Delete ``path`` if ``stale`` still says so once the file has been moved aside.

    ``stale`` is asked twice: before the move (a fresh file stays where it is) and after it. Moving the
    file aside first means a writer that refreshes it (``utime`` on the name) either did so
    before the move, and ``stale`` sees the new time, or after it, and finds no file and publishes its own.

    Returns:
        ``("removed", size)``, ``("kept", 0)`` when it was fresh after all (it is put back), or
        ``("gone", 0)`` when someone else removed or moved it first.
    """
    try:
        if not stale(os.stat(path)):  # fresh already: not even moved aside for a moment (a reader may be opening it)
            return "kept", 0
    except FileNotFoundError:
        return "gone", 0
    aside = path.with_name(f"{path.name}{ASIDE_MARK}{uuid.uuid4().hex}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return "gone", 0
    try:
        stat = os.stat(aside)  # the rename invalidates cached attributes: this is the time as of now
    except FileNotFoundError:  # another process restored it (restore_aside)
        return "gone", 0
    if not stale(stat):
        _put_back(aside, path)
        return "kept", 0
    try:
        os.unlink(aside)
    except FileNotFoundError:
        return "gone", 0
    return "removed", stat.st_size


def restore_aside(directory: Path) -> int:
    """Put back files :func:`retire` moved aside in ``directory`` and never finished with (a killed gc).

    Returns:
        How many leftovers were found.
    """
    found = 0
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    for entry in entries:
        name, mark, _ = entry.name.partition(ASIDE_MARK)
        if mark and name and entry.is_file(follow_symlinks=False):
            found += 1
            _put_back(Path(entry.path), Path(directory) / name)
    return found


def _put_back(aside: Path, path: Path) -> None:
    try:
        publish(aside, path)  # a writer may have published the same bytes meanwhile: theirs stays
    except FileNotFoundError:  # someone else already put it back
        return
    aside.unlink(missing_ok=True)


def filesystem_now(directory: Path) -> float:
    """The current time by the clock that stamps files in ``directory`` (the file server's on a share)."""
    probe = directory / f"clock-{os.getpid()}-{uuid.uuid4().hex}.part"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        return os.fstat(fd).st_mtime
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)
