"""Copy blobs between two blob stores: content-addressed, re-hashed on the way, published atomically.

Each blob is streamed from the source into the destination's temporary area while it is hashed, and is
published under its name (by the destination store's own writer: a hard link that never replaces a blob) only when the bytes hash to
that name: an altered source blob is never published, and a copy killed half-way leaves at worst a
temporary file that ``gc`` removes. A blob the destination already holds is not rewritten (its name is
its content) but marked as wanted now (:meth:`BlobStore.freshen`, as storing it again would), so a ``gc``
on the destination does not take it for garbage before the record that refers to it is imported.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from toolchain.blobs import BlobStore
from toolchain.hashing import is_sha256
from toolchain.progress import NullProgress, Progress

_CHUNK = 1 << 20


@dataclass(frozen=True, kw_only=True)
class BlobTransfer:
    """What copying a set of blobs did.

    Attributes:
        copied: Blobs written to the destination.
        already_present: Blobs the destination already held.
        bytes_copied: Bytes written.
        missing: Required blobs the source lacks (nothing was written for them).
        altered: Source blobs whose bytes no longer hash to their name (never published).
    """

    copied: int = 0
    already_present: int = 0
    bytes_copied: int = 0
    missing: tuple[str, ...] = ()
    altered: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"copied": self.copied, "already_present": self.already_present, "bytes_copied": self.bytes_copied,
                "missing": list(self.missing), "altered": list(self.altered)}


class _Altered(Exception):
    """The bytes read did not hash to the blob's name (the writer then discards its temporary file)."""


def copy_blobs(source: BlobStore, destination: BlobStore, required: Iterable[str], optional: Iterable[str] = (), *,
               progress: Progress | None = None) -> BlobTransfer:
    """Copy blobs from ``source`` to ``destination``.

    Args:
        source: Where the blobs are.
        destination: Where they are to be (another directory).
        required: Digests the registry references (blob refs, indexed shards): one the source lacks is
            reported as missing.
        optional: Digests that may name blobs (sha256s inside record bodies): copied when the source has
            them, passed over silently when not.
        progress: Told of each blob.
    """
    progress = progress or NullProgress()
    required_set = set(required)
    present_optional = {sha for sha in optional if is_sha256(sha) and source.has(sha)}
    wanted = sorted(sha for sha in required_set | present_optional if is_sha256(sha))
    copied = present = written = 0
    missing = sorted(sha for sha in required_set if not is_sha256(sha))  # a reference that cannot name a blob
    altered: list[str] = []
    progress.start("blobs", len(wanted))
    for sha in wanted:
        progress.advance()
        if destination.has(sha) and destination.freshen(sha):  # as storing it again would (gc spares it now)
            present += 1
            continue
        origin = source.path(sha)
        if not origin.is_file():
            if sha in required_set:
                missing.append(sha)
            continue  # an optional one gone meanwhile: as if it had never been there
        try:
            with open(origin, "rb") as handle, destination.writer() as writer:
                shutil.copyfileobj(handle, writer, _CHUNK)  # type: ignore[misc]
                if writer.hexdigest() != sha:
                    raise _Altered
        except _Altered:
            altered.append(sha)
            continue
        copied += 1
        written += writer.size
        progress.note(f"{written / 1e6:,.1f} MB")
    progress.finish()
    return BlobTransfer(copied=copied, already_present=present, bytes_copied=written, missing=tuple(missing),
                        altered=tuple(altered))
