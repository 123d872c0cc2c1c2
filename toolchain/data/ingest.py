"""``data ingest``: turn a labelled image lake into an immutable, split, versioned dataset.

Extract/transform runs in worker processes (:mod:`toolchain.data.etl`); this module validates the
whole lake (labels, duplicates, near-duplicates), assigns splits, and loads the version into the
workspace in one registry transaction, so a partial version is never listed.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from toolchain.data.decode import DecodeLimits, transform_id
from toolchain.data.etl import ChunkOutcome, WorkerSetup, run_chunks
from toolchain.data.manifest import Manifest, ManifestEntry
from toolchain.data.neardup import UnionFind, hamming, near_duplicate_pairs
from toolchain.data.shards import ShardLayout
from toolchain.data.sources import SourceItem, list_source, local_path
from toolchain.data.splits import SPLITS, SplitFractions, assign_clusters
from toolchain.errors import BadInputError, CorruptStoreError, UsageError
from toolchain.hashing import canonical_json
from toolchain.extras import require
from toolchain.parallel import default_workers
from toolchain.progress import NullProgress, Progress
from toolchain.registry import NewRecord
from toolchain.workspace import Workspace

GROUP_BY = ("sequence", "camera", "none")


@dataclass(frozen=True, kw_only=True)
class IngestConfig:
    """Options of ``toolchain data ingest`` (stored inside the dataset record)."""

    source: str
    name: str
    image_size: int = 128
    split: SplitFractions = field(default_factory=SplitFractions)
    group_by: str = "sequence"
    classes: tuple[str, ...] | None = None
    allow_roots: tuple[str, ...] = ()
    near_duplicate_distance: int = 4
    max_group_size: int = 256
    min_side: int = 16
    max_pixels: int = 64_000_000
    workers: int = 0
    shard_size: int = 512

    def __post_init__(self) -> None:
        if not self.name or "@" in self.name or "/" in self.name:
            raise UsageError(f"--name '{self.name}' must be a plain name without '@' or '/'")
        if not 8 <= self.image_size <= 1024:
            raise UsageError(f"--image-size {self.image_size} must be between 8 and 1024 pixels")
        if self.group_by not in GROUP_BY:
            raise UsageError(f"--group-by must be one of {', '.join(GROUP_BY)}")
        if not 0 <= self.near_duplicate_distance <= 32:
            raise UsageError("--near-dup-distance must be between 0 and 32 bits")
        if self.max_group_size < 2:
            raise UsageError("--max-group-size must be at least 2")
        if self.shard_size < 1:
            raise UsageError("shard size must be at least 1")

    def header(self, classes: Sequence[str]) -> dict[str, Any]:
        """The parameters that define the dataset's content (part of its digest)."""
        return {
            "image_size": self.image_size,
            "transform": transform_id(self.image_size),
            "split": self.split.as_list(),
            "group_by": self.group_by,
            "near_duplicate_distance": self.near_duplicate_distance,
            "max_group_size": self.max_group_size,
            "classes": list(classes),
        }

    def to_json(self) -> dict[str, Any]:
        value = asdict(self)
        value["split"] = self.split.as_list()
        return value


@dataclass(frozen=True, kw_only=True)
class Quarantined:
    """A lake entry left out of the dataset, and why."""

    uri: str
    label: str
    reason: str
    detail: str


@dataclass(frozen=True, kw_only=True)
class IngestResult:
    """Summary of one ingest (what ``--json`` prints)."""

    version: str
    name: str
    number: int
    created: bool
    classes: tuple[str, ...]
    counts: dict[str, dict[str, int]]
    quarantined: tuple[Quarantined, ...]
    listed: int
    decoded: int
    reused: int
    duplicates: int
    near_duplicate_groups: int
    groups: int
    largest_group: int
    near_duplicate_links_skipped: int
    parent: str | None
    seconds: float
    timings: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        reasons = Counter(q.reason for q in self.quarantined)
        return {
            "version": self.version,
            "name": self.name,
            "ref": f"{self.name}@v{self.number}",
            "number": self.number,
            "created": self.created,
            "classes": list(self.classes),
            "counts": self.counts,
            "quarantined": {
                "count": len(self.quarantined),
                "reasons": dict(sorted(reasons.items())),
                "items": [asdict(q) for q in self.quarantined],
            },
            "listed": self.listed,
            "decoded": self.decoded,
            "reused": self.reused,
            "duplicates": self.duplicates,
            "near_duplicate_groups": self.near_duplicate_groups,
            "groups": self.groups,
            "largest_group": self.largest_group,
            "near_duplicate_links_skipped": self.near_duplicate_links_skipped,
            "parent": self.parent,
            "seconds": round(self.seconds, 3),
            "timings": self.timings,
            "images_per_second": round(self.listed / self.seconds, 1) if self.seconds > 0 else None,
        }


def _chunks(items: Sequence[SourceItem], shard_size: int, workers: int) -> list[list[tuple[int, str]]]:
    # Small lakes still use every worker: shrink chunks so each gets a few.
    size = max(16, min(shard_size, math.ceil(len(items) / max(1, workers * 4))))
    return [[(i, items[i].uri) for i in range(start, min(start + size, len(items)))] for start in range(0, len(items), size)]


def _group_key(item: SourceItem, sha: str, group_by: str) -> str:
    if group_by == "sequence" and (item.sequence or item.group):
        return f"sequence:{item.sequence or item.group}"
    if group_by == "camera" and (item.camera or item.group):
        return f"camera:{item.camera or item.group}"
    return f"image:{sha}"


def _source_ref(uri: str, root: str) -> str:
    """The item's URI relative to the lake root when inside it, so moving the lake keeps the id."""
    path = local_path(uri)
    if path is not None and local_path(root) is not None:
        prefix = root.rstrip("/") + "/"
        return path[len(prefix):] if path.startswith(prefix) else path
    return uri[len(root):] if uri.startswith(root) else uri


def ingest(workspace: Workspace, config: IngestConfig, progress: Progress | None = None) -> IngestResult:
    """Ingest ``config.source`` into ``workspace`` as the next version of ``config.name``.

    Re-ingesting the same lake returns the existing version and decodes nothing; a grown lake
    decodes only new images. Safe to rerun after a crash and to run concurrently.
    """
    # Before any worker process starts: a worker that dies on a missing Pillow is a BrokenProcessPool.
    require("data", needed_by="data ingest")
    progress = progress or NullProgress()
    started = time.perf_counter()
    listing = list_source(config.source, allow_roots=config.allow_roots, classes=config.classes)
    timings = {"list": time.perf_counter() - started}
    mark = time.perf_counter()
    quarantined = [Quarantined(uri=r.uri, label=r.label, reason=r.reason, detail=r.detail) for r in listing.rejected]
    items = listing.items
    transform = transform_id(config.image_size)
    known = frozenset(workspace.registry.cached_images(transform).keys())
    workers = config.workers or default_workers()
    setup = WorkerSetup(
        blob_root=str(workspace.blobs.root), known=known, image_size=config.image_size,
        limits=DecodeLimits(min_side=config.min_side, max_pixels=config.max_pixels),
    )

    digests: dict[int, str] = {}
    decoded = 0
    progress.start(f"ingest {config.name}", len(items))
    outcome: ChunkOutcome
    for outcome in run_chunks(setup, _chunks(items, config.shard_size, workers), workers):
        if outcome.new_images:
            workspace.registry.add_cached_images(transform, outcome.new_images)  # the resume checkpoint
            decoded += len(outcome.new_images)
        for item in outcome.items:
            source = items[item.index]
            if item.reason is not None:
                quarantined.append(Quarantined(uri=source.uri, label=source.label, reason=item.reason, detail=item.detail))
            else:
                assert item.sha256 is not None
                digests[item.index] = item.sha256
        progress.advance(len(outcome.items))
    progress.finish()
    timings["decode"] = time.perf_counter() - mark
    mark = time.perf_counter()

    cache = workspace.registry.cached_images(transform, digests.values())
    missing = set(digests.values()) - cache.keys()
    if missing:
        raise CorruptStoreError(f"{len(missing)} decoded images are missing from the image index; rerun the ingest")

    # Exact duplicates and label conflicts by content digest.
    by_sha: dict[str, list[int]] = defaultdict(list)
    for index, sha in digests.items():
        by_sha[sha].append(index)
    unique: list[tuple[str, list[int]]] = []
    duplicates = 0
    for sha in sorted(by_sha):
        occurrences = sorted(by_sha[sha], key=lambda i: items[i].uri)
        labels = sorted({items[i].label for i in occurrences})
        if len(labels) > 1:
            for i in occurrences:
                quarantined.append(Quarantined(
                    uri=items[i].uri, label=items[i].label, reason="conflicting_labels",
                    detail=f"identical file is labelled {' and '.join(labels)}",
                ))
            continue
        duplicates += len(occurrences) - 1
        unique.append((sha, occurrences))

    # Same decoded pixels (re-encoded copies) under different labels.
    by_pixels: dict[str, list[int]] = defaultdict(list)
    for position, (sha, _) in enumerate(unique):
        by_pixels[cache[sha].pixel_sha256].append(position)
    dropped: set[int] = set()
    for positions in by_pixels.values():
        labels = sorted({items[unique[p][1][0]].label for p in positions})
        if len(labels) > 1:
            for p in positions:
                dropped.add(p)
                for i in unique[p][1]:
                    quarantined.append(Quarantined(
                        uri=items[i].uri, label=items[i].label, reason="conflicting_labels",
                        detail=f"same pixels are labelled {' and '.join(labels)}",
                    ))
    unique = [u for p, u in enumerate(unique) if p not in dropped]
    if not unique:
        reasons = Counter(q.reason for q in quarantined)
        raise BadInputError(
            f"no valid images in {config.source} ({len(quarantined)} quarantined: "
            f"{', '.join(f'{k} {v}' for k, v in reasons.most_common())}); check the path and the file formats"
        )

    classes = tuple(config.classes) if config.classes else tuple(sorted({items[occ[0]].label for _, occ in unique}))
    header = config.header(classes)

    # Groups: the user's grouping joined with near-duplicate clusters.
    n = len(unique)
    keys = [_group_key(items[occ[0]], sha, config.group_by) for sha, occ in unique]
    union = UnionFind(n)
    first_with_key: dict[str, int] = {}
    for position, (sha, occurrences) in enumerate(unique):
        for i in occurrences:
            key = _group_key(items[i], sha, config.group_by)
            if key in first_with_key:
                union.union(position, first_with_key[key])
            else:
                first_with_key[key] = position
    hashes = np.array([cache[sha].phash for sha, _ in unique], dtype=np.uint64)
    pairs = near_duplicate_pairs(hashes, config.near_duplicate_distance)
    # Closest pairs first; a link that would grow a group past the cap is skipped and counted, so a
    # chain of look-alike frames (same camera, same road) cannot swallow the whole dataset.
    distances = hamming(hashes[pairs[:, 0]], hashes[pairs[:, 1]]) if len(pairs) else np.empty(0, np.int64)
    near = UnionFind(n)
    skipped_links = 0
    for k in np.lexsort((pairs[:, 1], pairs[:, 0], distances)).tolist() if len(pairs) else []:
        a, b = int(pairs[k, 0]), int(pairs[k, 1])
        ra, rb = union.find(a), union.find(b)
        if ra == rb:
            near.union(a, b)
        elif union.size[ra] + union.size[rb] <= config.max_group_size:
            union.union(a, b)
            near.union(a, b)
        else:
            skipped_links += 1
    near_groups = sum(1 for members in near.components() if len(members) > 1)
    clusters = union.components()

    parent = _parent_version(workspace, config, header)
    inherited: dict[int, str] = {}
    if parent is not None:
        parent_splits = {e.sha256: e.split for e in parent[1].entries}
        inherited = {p: parent_splits[sha] for p, (sha, _) in enumerate(unique) if sha in parent_splits}
    splits, _ = assign_clusters(clusters, keys, config.split, inherited)
    cluster_key = [""] * n
    for members in clusters:
        representative = min(keys[i] for i in members)
        for i in members:
            cluster_key[i] = representative

    entries = []
    for position, (sha, occurrences) in enumerate(unique):
        cached = cache[sha]
        entries.append(ManifestEntry(
            sha256=sha, label=items[occurrences[0]].label, split=splits[position], group=cluster_key[position],
            source=_source_ref(items[occurrences[0]].uri, listing.root), width=cached.width, height=cached.height,
        ))
    timings["group_and_split"] = time.perf_counter() - mark
    mark = time.perf_counter()
    manifest = Manifest.build(header, entries)
    counts = manifest.counts(SPLITS, classes)

    # Load: blobs first, then one registry transaction.
    manifest_sha = workspace.blobs.put_bytes(manifest.to_bytes())
    shard_ids: dict[str, int] = {}
    rows = np.empty((len(manifest.entries), 2), dtype=np.int64)
    for index, entry in enumerate(manifest.entries):
        cached = cache[entry.sha256]
        rows[index] = (shard_ids.setdefault(cached.shard_sha256, len(shard_ids)), cached.row)
    layout = ShardLayout(shards=tuple(shard_ids), rows=rows)
    layout_sha = workspace.blobs.put_bytes(canonical_json(layout.to_json()).encode())
    quarantined.sort(key=lambda q: (q.reason, q.uri))
    quarantine_sha = workspace.blobs.put_bytes(
        "".join(canonical_json(asdict(q)) + "\n" for q in quarantined).encode()
    )
    reasons = Counter(q.reason for q in quarantined)
    body = {
        "manifest": manifest_sha,
        "layout": layout_sha,
        "quarantine": quarantine_sha,
        "header": header,
        "config": config.to_json(),
        "source": {"uri": config.source, "kind": listing.kind, "root": listing.root},
        "counts": counts,
        "quarantined": {"count": len(quarantined), "reasons": dict(sorted(reasons.items()))},
        "stats": {
            "images": len(manifest.entries),
            "listed": len(items) + len(listing.rejected),
            "duplicates": duplicates,
            "near_duplicate_groups": near_groups,
            "groups": len(clusters),
            "largest_group": max(len(c) for c in clusters),
            "near_duplicate_links_skipped": skipped_links,
        },
        "parent": parent[0] if parent else None,
    }
    blobs = [(manifest_sha, "manifest"), (layout_sha, "layout"), (quarantine_sha, "quarantine")]
    blobs += [(sha, "shard") for sha in shard_ids]
    record, version, created = workspace.registry.commit(NewRecord(
        kind="dataset", name=config.name, id=manifest_sha, body=body, blobs=tuple(blobs),
        links=((parent[0], "parent"),) if parent and parent[0] != manifest_sha else (), version=True,
    ))
    assert version is not None
    timings["load"] = time.perf_counter() - mark
    stats = record.body["stats"]
    return IngestResult(
        version=record.id, name=config.name, number=version.number, created=created, classes=classes, counts=counts,
        quarantined=tuple(quarantined), listed=len(items) + len(listing.rejected), decoded=decoded,
        reused=len(digests) - decoded, duplicates=duplicates, near_duplicate_groups=stats["near_duplicate_groups"],
        groups=stats["groups"], largest_group=stats["largest_group"],
        near_duplicate_links_skipped=stats["near_duplicate_links_skipped"], parent=body["parent"],
        seconds=time.perf_counter() - started, timings={k: round(v, 3) for k, v in timings.items()},
    )


def _parent_version(workspace: Workspace, config: IngestConfig, header: dict[str, Any]) -> tuple[str, Manifest] | None:
    """The latest version of this dataset made with the same size, transform, split and grouping."""
    same = ("image_size", "transform", "split", "group_by", "near_duplicate_distance", "max_group_size")
    for version in reversed(workspace.registry.versions("dataset", config.name)):
        record = workspace.registry.get(version.record_id)
        if record is None:
            continue
        if all(record.body["header"].get(k) == header[k] for k in same):
            manifest = Manifest.from_bytes(workspace.blobs.read_bytes(record.body["manifest"]))
            return record.id, manifest
    return None
