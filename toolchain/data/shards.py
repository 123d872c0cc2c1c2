"""Image shards: ``.npy`` blobs of shape (N, S, S, 3) uint8, memory-mapped for training reads.

A shard is written once by an ingest worker and shared by every dataset version that contains its
images (a grown lake adds shards; it never rewrites old ones).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
import numpy as np

from toolchain.blobs import BlobStore
from toolchain.errors import CorruptStoreError


def write_shard(blobs: BlobStore, images: Sequence[np.ndarray]) -> str:
    """Stack images into one ``.npy`` blob; returns its sha256."""
    stacked = np.ascontiguousarray(np.stack(images).astype(np.uint8, copy=False))
    with blobs.writer() as writer:
        np.lib.format.write_array(writer, stacked, allow_pickle=False)
    assert writer.sha256 is not None
    return writer.sha256


@lru_cache(maxsize=512)
def _open_shard(path: str) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise CorruptStoreError(f"shard {path} is unreadable ({exc}); run `toolchain registry verify`") from exc
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise CorruptStoreError(f"shard {path} has shape {array.shape} {array.dtype}, expected (N, S, S, 3) uint8")
    return array


@dataclass(frozen=True, kw_only=True)
class ShardLayout:
    """Where each manifest entry's pixels live: ``rows[i] = (shard index, row)``."""

    shards: tuple[str, ...]
    rows: np.ndarray  # (N, 2) int64

    def to_json(self) -> dict[str, object]:
        return {"shards": list(self.shards), "rows": self.rows.tolist()}

    @classmethod
    def from_json(cls, value: dict[str, object]) -> ShardLayout:
        rows = np.asarray(value["rows"], dtype=np.int64).reshape(-1, 2)
        return cls(shards=tuple(value["shards"]), rows=rows)  # type: ignore[arg-type]

    def gather(self, blobs: BlobStore, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Pixels of the given manifest entries, as one (len(indices), S, S, 3) uint8 array."""
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) == 0:
            raise CorruptStoreError("no images selected")
        first = _open_shard(str(blobs.require(self.shards[self.rows[indices[0], 0]])))
        out = np.empty((len(indices), *first.shape[1:]), dtype=np.uint8)
        picked = self.rows[indices]
        for shard_index in np.unique(picked[:, 0]):
            where = np.nonzero(picked[:, 0] == shard_index)[0]
            shard = _open_shard(str(blobs.require(self.shards[shard_index])))
            out[where] = shard[picked[where, 1]]
        return out

