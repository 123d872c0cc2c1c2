"""``docker load`` through an engine's API, sending only the layers it lacks (or, where it will not take that,
all of them), counting every byte handed to the link.

The partial archive lists every layer and carries the files of only the missing ones
(:mod:`toolchain.images.layers`); it goes gzip-compressed unless asked not to. ``docker load`` reports its
errors in the response stream with no code, so the engine's own refusal messages are recognised here: a
refusal of a partial archive (an engine that opens layers it already holds) makes the caller send the full
one (:mod:`toolchain.images.transfer`), anything else reads as a link that dropped. ``docker load`` of a cut
archive loads nothing.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Protocol

from toolchain.images.outcome import LOAD_DELTA, LOAD_FULL, EngineRefused, TransferStats, refused_status

# What an engine says when it refuses an archive (as opposed to a body cut short by the link). `docker load`
# reports its errors in the response stream with no code, so for `load` these words are all there is.
_REFUSALS = ("no such file", "layers length", "mismatch", "invalid", "not found", "no space")


class ImageArchive(Protocol):
    """The release's image as archives (made on first need, shared by every unit of a deployment)."""

    def full(self) -> Path:
        """The whole ``docker save`` tarball (checked against the image record)."""

    def layers(self) -> Any:
        """Its :class:`toolchain.images.tarball.ImageLayers`."""

    def partial(self, skip: int) -> Path:
        """An archive without the first ``skip`` layer files."""

    def gzipped(self, path: Path) -> Path:
        """``path`` (one of the archives above) compressed with gzip, which ``docker load`` reads as well."""


class _Counting(io.RawIOBase):
    """A file read through ``requests``' upload, counting the bytes handed over (they crossed the link or died in it)."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self.count = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        self.count += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def fileno(self) -> int:  # requests sizes the body (Content-Length) by fstat and tell
        return self._file.fileno()

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._file.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def close(self) -> None:
        self._file.close()
        super().close()


def load_archive(client: Any, archive: ImageArchive, stats: TransferStats, *, delta: bool, compress: bool) -> None:
    """``docker load`` of the archive with only the layers the unit lacks (or all of them).

    Raises:
        EngineRefused: the engine answered, and will not load the archive.
        Exception: anything else (a link that dropped), for the caller to retry.
    """
    import docker.errors

    from toolchain.images.layers import held_chains, reusable
    from toolchain.images.tarball import is_compressed

    image = archive.layers()
    skip = reusable(image.diff_ids, held_chains(client)) if delta else 0
    path = archive.partial(skip) if skip else archive.full()
    if compress and not is_compressed(path):  # a compressed --image-tar goes as it is: docker load decompresses once
        path = archive.gzipped(path)
    stats.transport = LOAD_DELTA if skip else LOAD_FULL
    stats.layers_reused, stats.layers_sent = skip, len(image.diff_ids) - skip
    body = _Counting(path)
    try:
        # The low-level call returns the engine's answer as a stream; an error inside it is a refusal.
        response = client.api.load_image(body, quiet=True)
        for chunk in response:
            text = chunk if isinstance(chunk, dict) else {}
            if text.get("error"):
                message = str(text["error"])
                if any(word in message for word in _REFUSALS):
                    raise EngineRefused(message)
                raise ConnectionError(message)
    except docker.errors.APIError as exc:
        if refused_status(exc.status_code) or any(word in str(exc) for word in _REFUSALS):
            raise EngineRefused(str(exc.explanation or exc)) from exc
        raise
    finally:
        stats.bytes_sent += body.count
        body.close()
