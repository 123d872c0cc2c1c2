"""An image as the archives ``docker load`` transfers send: the whole tarball, or it without the layers a unit holds.

:class:`TarballArchive` is the :class:`toolchain.images.load.ImageArchive` of one image: ``full()`` is its
``docker save`` tarball, found (or made) by the caller's function the first time it is needed and checked
there; a tarball that fails its check is refused for every later caller without being read again.
``partial(k)`` is the same image without its first ``k`` layer files (:mod:`toolchain.images.layers`), written
once per ``k``; ``gzipped(path)`` one of those compressed. Every file is made once, under a lock, so the units of
a deployment share them; they are written into ``work``, which the caller owns and removes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from toolchain.errors import BadInputError


class TarballArchive:
    """The archives of one image, made on first need (thread-safe).

    Args:
        find_full: Returns the image's checked ``docker save`` tarball (raises ``BadInputError`` when it fails its
            check: that answer is kept and given to every later caller).
        work: A folder for the partial and compressed archives.
    """

    def __init__(self, find_full: Callable[[], Path], work: Path) -> None:
        self._find_full, self.work = find_full, work
        self._lock = threading.Lock()
        self._path: Path | None = None
        self._error: Exception | None = None
        self._layers: Any = None
        self._partial: dict[int, Path] = {}
        self._gzipped: dict[Path, Path] = {}

    def full(self) -> Path:
        with self._lock:
            if self._error is not None:
                raise self._error
            if self._path is None:
                try:
                    self._path = self._find_full()
                except BadInputError as exc:  # a bad tarball stays bad: refuse it without re-reading it
                    self._error = exc
                    raise
            return self._path

    def layers(self) -> Any:
        from toolchain.images.layers import read_layers

        path = self.full()
        with self._lock:
            if self._layers is None:
                self._layers = read_layers(path)
            return self._layers

    def gzipped(self, path: Path) -> Path:
        """``path`` gzip-compressed (level 1: fast, and about a third of the bytes of the image's layers)."""
        import gzip
        import shutil

        from toolchain.fileio import atomic_output

        with self._lock:
            if path not in self._gzipped:
                destination = self.work / f"{path.name}.gz"
                with open(path, "rb") as source, atomic_output(destination) as raw, \
                        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as out:
                    shutil.copyfileobj(source, out, 1 << 20)
                self._gzipped[path] = destination
            return self._gzipped[path]

    def partial(self, skip: int) -> Path:
        from toolchain.images.layers import write_partial

        layers = self.layers()
        with self._lock:
            if skip not in self._partial:
                destination = self.work / f"image-without-{skip}-layers.tar"
                write_partial(layers, skip, destination)
                self._partial[skip] = destination
            return self._partial[skip]
