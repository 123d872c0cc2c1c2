"""Garbage collection: delete blobs no record references, and temporary files crashed writers left.

What counts as referenced (kept): every ``blob_refs`` row, every shard the decoded-image index points
into (ingest records shards there before the dataset version exists), and every sha256 that appears
anywhere in a record body. A blob or temporary file younger than the grace period is kept even when
unreferenced: another process may have just written it and not yet committed the record that refers
to it (a write that finds its blob already stored refreshes the blob's mtime for the same reason).

Order matters for concurrent writers: blob files are listed first, references read second, and each
candidate's age is checked again just before it is deleted.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from toolchain.errors import CorruptStoreError, UsageError
from toolchain.hashing import is_sha256
from toolchain.workspace import Workspace

DEFAULT_GRACE_SECONDS = 3600.0
_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``2h``, ``1d`` -> seconds."""
    match = _DURATION_RE.match(text.strip().lower())
    if not match:
        raise UsageError(f"'{text}' is not a duration; use e.g. 3600, 30m, 2h or 1d")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True, kw_only=True)
class GcConfig:
    """Options of ``toolchain registry gc``."""

    dry_run: bool = False
    force: bool = False  # delete even when the registry references no blob at all (see gc)
    grace_seconds: float = DEFAULT_GRACE_SECONDS

    def __post_init__(self) -> None:
        if self.grace_seconds < 0:
            raise UsageError("--grace must not be negative")


@dataclass(frozen=True, kw_only=True)
class GcReport:
    """What ``gc`` deleted (or, with ``dry_run``, would delete)."""

    dry_run: bool
    grace_seconds: float
    blobs_total: int
    referenced: int
    removed: tuple[tuple[str, int], ...]  # (sha256, size)
    kept_recent: tuple[str, ...]  # unreferenced but younger than the grace period
    tmp_removed: tuple[tuple[str, int], ...]  # (file name, size)
    tmp_kept_recent: int
    seconds: float

    @property
    def bytes_removed(self) -> int:
        return sum(size for _, size in self.removed) + sum(size for _, size in self.tmp_removed)

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run, "grace_seconds": self.grace_seconds, "blobs_total": self.blobs_total,
            "referenced": self.referenced, "removed": [{"sha256": s, "size": n} for s, n in self.removed],
            "kept_recent": list(self.kept_recent), "tmp_removed": [{"file": f, "size": n} for f, n in self.tmp_removed],
            "tmp_kept_recent": self.tmp_kept_recent, "bytes_removed": self.bytes_removed,
            "seconds": round(self.seconds, 3),
        }


def referenced_blobs(workspace: Workspace) -> set[str]:
    """Every blob digest the registry still needs (see the module docstring)."""
    registry = workspace.registry
    keep = {b.sha256 for b in registry.blob_refs()}
    keep |= registry.indexed_shards()
    for record in registry.find():
        _collect_digests(record.body, keep)
    return keep


def _collect_digests(value: Any, out: set[str]) -> None:
    if isinstance(value, str):
        if is_sha256(value):
            out.add(value)
    elif isinstance(value, dict):
        for item in value.values():
            _collect_digests(item, out)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _collect_digests(item, out)


def gc(workspace: Workspace, config: GcConfig = GcConfig()) -> GcReport:
    """Delete unreferenced blobs and stale temporary files older than the grace period."""
    started = time.perf_counter()
    blobs = workspace.blobs
    files = list(blobs.files())  # listed before references are read (see the module docstring)
    keep = referenced_blobs(workspace)
    if files and not keep and not config.dry_run and not config.force:
        raise CorruptStoreError(
            f"the registry references no blob but the store holds {len(files)}: this looks like the wrong or an empty "
            "registry for this blob store, and gc would delete everything. Check --workspace / the registry URI; "
            "`toolchain registry gc --dry-run` lists what would go, `--force` deletes anyway"
        )
    removed: list[tuple[str, int]] = []
    recent: list[str] = []
    referenced = 0
    for sha, path in files:
        if sha in keep:
            referenced += 1
            continue
        try:
            stat = path.stat()  # age checked now, not when listed: a writer may have just reused it
        except FileNotFoundError:
            continue
        if time.time() - stat.st_mtime < config.grace_seconds:
            recent.append(sha)
            continue
        if config.dry_run or blobs.remove(sha):
            removed.append((sha, stat.st_size))
    tmp_removed: list[tuple[str, int]] = []
    tmp_recent = 0
    for path in blobs.temp_files():
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        if time.time() - stat.st_mtime < config.grace_seconds:
            tmp_recent += 1  # probably a write in flight
            continue
        if not config.dry_run:
            try:
                path.unlink()
            except FileNotFoundError:
                continue
        tmp_removed.append((path.name, stat.st_size))
    return GcReport(
        dry_run=config.dry_run, grace_seconds=config.grace_seconds, blobs_total=len(files), referenced=referenced,
        removed=tuple(removed), kept_recent=tuple(recent), tmp_removed=tuple(tmp_removed), tmp_kept_recent=tmp_recent,
        seconds=time.perf_counter() - started,
    )
