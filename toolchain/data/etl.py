"""Extract + transform in worker processes: read bytes, hash, decode only unseen images, write shards.

Workers write shards straight into the blob store and hand back only small metadata, so no pixel
data crosses process boundaries. The parent records each finished shard in the registry's image
index at once: that index is the checkpoint a rerun after a crash resumes from.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor, as_completed
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from toolchain.blobs import BlobStore
from toolchain.data.decode import DecodeLimits, Decoded, Rejected, decode_image
from toolchain.data.shards import write_shard
from toolchain.data.sources import read_uri
from toolchain.hashing import sha256_bytes
from toolchain.parallel import worker_context
from toolchain.registry import CachedImage


@dataclass(frozen=True, kw_only=True)
class ItemOutcome:
    """What happened to one lake item: its digest, or why it was refused."""

    index: int
    sha256: str | None
    reason: str | None = None
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class ChunkOutcome:
    """Result of one worker task."""

    items: tuple[ItemOutcome, ...]
    new_images: tuple[CachedImage, ...]
    shard: str | None


@dataclass(frozen=True, kw_only=True)
class WorkerSetup:
    """Everything a worker needs, sent once per process."""

    blob_root: str
    known: frozenset[str]
    image_size: int
    limits: DecodeLimits


_state: dict[str, object] = {}


def _init_worker(setup: WorkerSetup) -> None:
    import cv2

    cv2.setNumThreads(1)  # parallelism comes from the worker processes
    _state["setup"] = setup
    _state["blobs"] = BlobStore(Path(setup.blob_root))


def process_chunk(chunk: Sequence[tuple[int, str]]) -> ChunkOutcome:
    """Read, hash and (for unseen images) decode a chunk of ``(index, uri)``; write one shard."""
    setup: WorkerSetup = _state["setup"]  # type: ignore[assignment]
    blobs: BlobStore = _state["blobs"]  # type: ignore[assignment]
    outcomes: list[ItemOutcome] = []
    fresh: dict[str, tuple[int, Decoded]] = {}
    arrays = []
    for index, uri in chunk:
        try:
            data = read_uri(uri)
        except Exception as exc:  # noqa: BLE001 - unreadable file: quarantine, never abort
            outcomes.append(ItemOutcome(index=index, sha256=None, reason="unreadable", detail=f"{type(exc).__name__}: {exc}"[:200]))
            continue
        sha = sha256_bytes(data)
        if sha in setup.known or sha in fresh:
            outcomes.append(ItemOutcome(index=index, sha256=sha))
            continue
        decoded = decode_image(data, setup.image_size, setup.limits)
        if isinstance(decoded, Rejected):
            outcomes.append(ItemOutcome(index=index, sha256=sha, reason=decoded.reason, detail=decoded.detail))
            continue
        fresh[sha] = (len(arrays), decoded)
        arrays.append(decoded.array)
        outcomes.append(ItemOutcome(index=index, sha256=sha))
    shard = write_shard(blobs, arrays) if arrays else None
    images = tuple(
        CachedImage(
            content_sha256=sha, shard_sha256=shard or "", row=row, width=d.width, height=d.height, phash=d.phash,
            pixel_sha256=d.pixel_sha256,
        )
        for sha, (row, d) in fresh.items()
    )
    return ChunkOutcome(items=tuple(outcomes), new_images=images, shard=shard)


def run_chunks(setup: WorkerSetup, chunks: Sequence[Sequence[tuple[int, str]]], workers: int) -> Iterator[ChunkOutcome]:
    """Process chunks, in ``workers`` processes when there is enough work, yielding as they finish."""
    if workers <= 1 or len(chunks) <= 1:
        _init_worker(setup)
        for chunk in chunks:
            yield process_chunk(chunk)
        return
    # A worker that dies raises BrokenProcessPool here instead of hanging the ingest.
    with ProcessPoolExecutor(
        max_workers=min(workers, len(chunks)), mp_context=worker_context(), initializer=_init_worker, initargs=(setup,)
    ) as pool:
        pending = [pool.submit(process_chunk, chunk) for chunk in chunks]
        try:
            for future in as_completed(pending):
                yield future.result()
        finally:
            for future in pending:
                future.cancel()
