"""Garbage collection: delete blobs no record references, and temporary files crashed writers left.

What counts as referenced (kept): every ``blob_refs`` row, every shard the decoded-image index points
into (ingest records shards there before the dataset version exists), and every sha256 that appears
anywhere in a record body.

The blob store may be a share that writers on other hosts use while gc runs, and a writer stores its
blobs first and commits the record that references them afterwards. The rule that keeps such a blob:

* **Grace period.** An unreferenced blob is deleted only when it has not been stored for ``--grace``
  (default 1 h): not published, and not freshened, which is what storing bytes that are already there
  does (:meth:`toolchain.blobs.BlobStore.freshen`). Ages are measured on the clock that stamps the
  files (the file server's, :func:`toolchain.sharedfs.filesystem_now`), so a host's clock skew does
  not shorten the grace period. Temporary files (in-flight writes) get the same grace period.
* **Candidates first, references second.** gc lists the blob files, then reads the references. A
  record committed before the read protects its blobs; one committed after it references blobs its
  writer stored (or freshened) shortly before, and those are younger than the grace period.
* **Checked again where it is deleted.** Each candidate is moved aside, its age read again, and put
  back when a writer stored it meanwhile (:func:`toolchain.sharedfs.retire`); a writer that comes
  after the move finds no blob and publishes its own copy.
* **gc does not dawdle.** When a pass takes longer than a quarter of the grace period since the
  references were read, it reads them again.

So nothing a live writer needs is deleted as long as a writer commits its record within three
quarters of the grace period of storing the blobs (seconds, for every toolchain command: ingest
indexes each shard as it is written, training stores the weights when it registers them). ``--grace
0`` gives up that protection: use it only when no writer runs.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolchain.blobs import BlobStore
from toolchain.errors import CorruptStoreError, UsageError
from toolchain.hashing import is_sha256
from toolchain.sharedfs import filesystem_now

if TYPE_CHECKING:  # the workspace sits above the registry: only its type is named here
    from toolchain.workspace import Workspace

DEFAULT_GRACE_SECONDS = 3600.0
REFS_REREAD_FRACTION = 0.25  # of the grace period: how old the references gc deletes by may get
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
    kept_recent: tuple[str, ...]  # unreferenced but stored within the grace period
    tmp_removed: tuple[tuple[str, int], ...]  # (file name, size)
    tmp_kept_recent: int
    seconds: float
    references_read: int = 1  # how often the references were read (more than once in a slow pass)
    restored: int = 0  # files a killed gc had moved aside, put back

    @property
    def bytes_removed(self) -> int:
        return sum(size for _, size in self.removed) + sum(size for _, size in self.tmp_removed)

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run, "grace_seconds": self.grace_seconds, "blobs_total": self.blobs_total,
            "referenced": self.referenced, "removed": [{"sha256": s, "size": n} for s, n in self.removed],
            "kept_recent": list(self.kept_recent), "tmp_removed": [{"file": f, "size": n} for f, n in self.tmp_removed],
            "tmp_kept_recent": self.tmp_kept_recent, "bytes_removed": self.bytes_removed,
            "references_read": self.references_read, "restored": self.restored, "seconds": round(self.seconds, 3),
        }


def referenced_blobs(workspace: Workspace) -> set[str]:
    """Every blob digest the registry still needs (see the module docstring)."""
    registry = workspace.registry
    keep = {b.sha256 for b in registry.blob_refs()}
    keep |= registry.indexed_shards()
    for record in registry.find():
        collect_digests(record.body, keep)
    return keep


def collect_digests(value: Any, out: set[str]) -> None:
    """Add every sha256 digest found anywhere in ``value`` (a record body: nested dicts and lists) to ``out``."""
    if isinstance(value, str):
        if is_sha256(value):
            out.add(value)
    elif isinstance(value, dict):
        for item in value.values():
            collect_digests(item, out)
    elif isinstance(value, (list, tuple)):
        for item in value:
            collect_digests(item, out)


class _References:
    """The referenced set, read again once it is older than a quarter of the grace period."""

    def __init__(self, workspace: Workspace, grace_seconds: float) -> None:
        self._workspace = workspace
        self._max_age = grace_seconds * REFS_REREAD_FRACTION
        self.reads = 0
        self._read()

    def _read(self) -> None:
        self._read_at = time.monotonic()  # the reading is as old as the moment it started
        self.keep = referenced_blobs(self._workspace)
        self.reads += 1

    def __contains__(self, sha: str) -> bool:
        if self._max_age > 0 and time.monotonic() - self._read_at > self._max_age:
            self._read()
        return sha in self.keep


def gc(workspace: Workspace, config: GcConfig = GcConfig()) -> GcReport:
    """Delete unreferenced blobs and temporary files not stored for the grace period (see the module docstring)."""
    started = time.perf_counter()
    blobs = workspace.blobs
    restored = 0 if config.dry_run else blobs.restore_aside()
    skew = _clock_skew(workspace)  # file time = this host's time + skew

    def cutoff() -> float:
        return time.time() + skew - config.grace_seconds

    files = list(blobs.files())  # listed before references are read (see the module docstring)
    references = _References(workspace, config.grace_seconds)
    if files and not references.keep and not config.dry_run and not config.force:
        raise CorruptStoreError(
            f"the registry references no blob but the store holds {len(files)}: this looks like the wrong or an empty "
            "registry for this blob store, and gc would delete everything. Check --workspace / the registry URI; "
            "`toolchain registry gc --dry-run` lists what would go, `--force` deletes anyway"
        )
    removed, recent, referenced = _sweep_blobs(blobs, files, references, cutoff, dry_run=config.dry_run)
    tmp_removed, tmp_recent = _sweep_temp(blobs, cutoff, dry_run=config.dry_run)
    return GcReport(
        dry_run=config.dry_run, grace_seconds=config.grace_seconds, blobs_total=len(files), referenced=referenced,
        removed=tuple(removed), kept_recent=tuple(recent), tmp_removed=tuple(tmp_removed), tmp_kept_recent=tmp_recent,
        seconds=time.perf_counter() - started, references_read=references.reads, restored=restored,
    )


def _sweep_blobs(blobs: BlobStore, files: list[tuple[str, Path]], references: _References, cutoff: Callable[[], float],
                 *, dry_run: bool) -> tuple[list[tuple[str, int]], list[str], int]:
    """Retire the unreferenced blobs not stored since the cutoff: ``(removed, kept as recent, referenced)``."""
    removed: list[tuple[str, int]] = []
    recent: list[str] = []
    referenced = 0
    for sha, path in files:
        if sha in references:
            referenced += 1
        elif dry_run:
            if blobs.wanted_since(sha) >= cutoff():
                recent.append(sha)
            else:
                removed.append((sha, _size(path)))
        else:
            outcome, size = blobs.retire(sha, cutoff=cutoff())
            if outcome == "removed":
                removed.append((sha, size))
            elif outcome == "kept":
                recent.append(sha)
    return removed, recent, referenced


def _sweep_temp(blobs: BlobStore, cutoff: Callable[[], float], *, dry_run: bool) -> tuple[list[tuple[str, int]], int]:
    """Retire temporary files (and ``.fresh`` markers) not written since the cutoff: ``(removed, kept as recent)``."""
    removed: list[tuple[str, int]] = []
    recent = 0
    for path in blobs.temp_files():
        if dry_run:
            try:
                info = path.stat()
            except FileNotFoundError:
                continue
            if info.st_mtime >= cutoff():
                recent += 1
            else:
                removed.append((path.name, info.st_size))
            continue
        outcome, size = blobs.retire_temp(path, cutoff=cutoff())
        if outcome == "removed":
            removed.append((path.name, size))
        elif outcome == "kept":
            recent += 1  # probably a write in flight
    return removed, recent


def _clock_skew(workspace: Workspace) -> float:
    """How far the clock that stamps the blob store's files is ahead of this host's (0 where it cannot be read)."""
    try:
        return filesystem_now(workspace.blobs.tmp) - time.time()
    except OSError:  # a read-only mount (a dry run from a host that may only read): ages by this host's clock
        return 0.0


def _size(path: Path) -> int:
    try:
        return int(path.stat().st_size)
    except FileNotFoundError:
        return 0
