"""``toolchain registry copy --to URI``: a whole registry, with its blobs, into another store.

Everything a registry holds is copied: records with their lineage links and blob refs, versions, every
alias with its complete history, and the decoded-image index. Ids are unchanged and so are the stamps
(when and by whom each record and version was made, with which toolchain; when, by whom and why each
alias moved): the destination's ``import_*`` methods write rows as given instead of stamping them anew.
A team starts on a laptop's SQLite file and moves to the PostgreSQL server it shares (or back).

Where the blobs go: ``--blobs DIR``; else, when the destination is a workspace's own ``registry.db``,
that workspace's directory; else nowhere: the destination then refers to the blobs where they are (the
source's blob store, which its users name with ``--blobs`` / ``TOOLCHAIN_BLOBS``). When the destination's
blob store is another directory, every blob the registry needs (``gc``'s view: blob refs, image-index
shards, and digests inside record bodies the source holds) is copied, re-hashed and published atomically
first, so a record never reaches the destination before its blobs.

Rerunnable: blobs are published atomically, each batch of rows is one transaction, and importing what is
already there is a no-op, so a copy killed at any point is finished by running it again, with nothing
duplicated. A destination that holds other things is merged into; anything that contradicts it (a record
id with another body, NAME@vN taken by another record, an alias history that diverged) is found before
anything is written (blobs included) and stops the copy with
:class:`~toolchain.registry.store.RegistryConflictError` (exit 4); a contradiction another writer creates
while the copy runs stops it at the batch that meets it, which is not written.

The source is read in an order that stays consistent while others write to it: alias history, versions
and the image index first, records last (records are never deleted, so every record a version or an
alias change names is among them). What others add after the read is left for the next run.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from toolchain.blobs import BlobStore
from toolchain.errors import CorruptStoreError, InputNotFoundError, UsageError
from toolchain.progress import NullProgress, Progress
from toolchain.registry import open_store
from toolchain.registry.copy_blobs import BlobTransfer, copy_blobs
from toolchain.registry.gc import collect_digests
from toolchain.registry.records import (
    RECORD_KINDS,
    Alias,
    AliasChange,
    BlobRef,
    CachedImage,
    Version,
)
from toolchain.registry.store import (
    ImportOutcome,
    RecordImport,
    RegistryStore,
    alias_key,
    group_histories,
    history_to_append,
    record_outcome,
    version_outcome,
)

if TYPE_CHECKING:  # the workspace sits above the registry: only its type is named here
    from toolchain.workspace import Workspace

T = TypeVar("T")

DEFAULT_BATCH = 1000
TABLES = ("records", "links", "blob_refs", "versions", "alias_history", "aliases", "image_index", "team_keys")


@dataclass(frozen=True, kw_only=True)
class CopyConfig:
    """Options of ``toolchain registry copy``.

    Attributes:
        to: The destination registry's URI (it may carry a password: never printed).
        blobs: The destination's blob store directory (must exist); None: see the module docstring.
        batch_size: Rows per transaction.
    """

    to: str = field(repr=False)
    blobs: Path | None = None
    batch_size: int = DEFAULT_BATCH

    def __post_init__(self) -> None:
        if not self.to.strip():
            raise UsageError("--to needs the destination registry: postgresql://USER@HOST:PORT/DB or sqlite:///PATH/registry.db")
        if self.batch_size < 1:
            raise UsageError(f"the batch size must be at least 1, not {self.batch_size}")


@dataclass(frozen=True, kw_only=True)
class TableCount:
    """Rows of one table: written now, already there as they were, already there with the destination's own stamps."""

    copied: int = 0
    already_present: int = 0
    kept_destination: int = 0

    @classmethod
    def of(cls, outcomes: Iterable[ImportOutcome], weights: Iterable[int] | None = None) -> TableCount:
        """Counts of ``outcomes``, each standing for ``weights`` rows (default one)."""
        totals = dict.fromkeys(ImportOutcome, 0)
        for outcome, weight in zip(outcomes, weights if weights is not None else itertools.repeat(1)):
            totals[outcome] += weight
        return cls(copied=totals[ImportOutcome.CREATED], already_present=totals[ImportOutcome.IDENTICAL],
                   kept_destination=totals[ImportOutcome.KEPT])

    def to_json(self) -> dict[str, int]:
        return {"copied": self.copied, "already_present": self.already_present, "kept_destination": self.kept_destination}


@dataclass(frozen=True, kw_only=True)
class CopyReport:
    """What ``toolchain registry copy`` did.

    Attributes:
        source: The source registry (credentials redacted).
        destination: The destination registry (credentials redacted).
        source_blobs: The source's blob store directory.
        destination_blobs: The blob store the destination's records refer to.
        tables: Row counts per table (:data:`TABLES`).
        blobs: What the blob copy did; None when both registries use the same blob store (nothing to copy).
        seconds: Wall time.
    """

    source: str
    destination: str
    source_blobs: str
    destination_blobs: str
    tables: Mapping[str, TableCount]
    blobs: BlobTransfer | None
    seconds: float

    @property
    def complete(self) -> bool:
        """Whether every blob the registry needs reached the destination's blob store."""
        return self.blobs is None or not (self.blobs.missing or self.blobs.altered)

    def use_hint(self) -> str:
        """The global options that open the copy (the URI redacted: the user has the real one)."""
        return f"toolchain --registry '{self.destination}' --blobs {self.destination_blobs} registry verify"

    def to_json(self) -> dict[str, Any]:
        return {
            "source": {"registry": self.source, "blobs": self.source_blobs},
            "destination": {"registry": self.destination, "blobs": self.destination_blobs},
            "tables": {name: self.tables[name].to_json() for name in TABLES},
            "blobs": {"shared": self.blobs is None, **(self.blobs or BlobTransfer()).to_json()},
            "complete": self.complete,
            "seconds": round(self.seconds, 3),
        }

    def error(self) -> CorruptStoreError:
        """The error when blobs could not be copied (exit 4): everything else was."""
        assert self.blobs is not None
        bad = [*(f"{s[:12]} missing" for s in self.blobs.missing), *(f"{s[:12]} altered" for s in self.blobs.altered)]
        return CorruptStoreError(
            f"{len(bad)} blobs the registry needs could not be copied from {self.source_blobs} ({', '.join(bad[:5])}"
            f"{' ...' if len(bad) > 5 else ''}); every row and every other blob was copied to {self.destination}. "
            "See which records use them with `toolchain registry verify` on the source, restore them (or rerun the "
            "stages that made them), then rerun this copy: it copies only what is missing"
        )


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """Everything a registry holds (see the module docstring for the order it is read in).

    Attributes:
        alias_history: Every alias change, oldest first.
        aliases: Where aliases point now.
        versions: Every version.
        image_index: ``(transform, entries)`` per transform.
        records: Every record with its links and blob refs, each after the records it was made from.
        team_keys: The team's keys by name (they name credential volumes on units; a copy keeps them, so a
            team that moves its registry does not restart its units).
    """

    alias_history: tuple[AliasChange, ...]
    aliases: tuple[Alias, ...]
    versions: tuple[Version, ...]
    image_index: tuple[tuple[str, tuple[CachedImage, ...]], ...]
    records: tuple[RecordImport, ...]
    team_keys: Mapping[str, bytes] = field(default_factory=dict, repr=False)

    @property
    def empty(self) -> bool:
        return not (self.records or self.alias_history or self.image_index)

    def required_blobs(self) -> set[str]:
        """Blobs the registry references: blob refs and image-index shards (what ``registry verify`` checks)."""
        shards = {image.shard_sha256 for _, images in self.image_index for image in images}
        return {ref.sha256 for item in self.records for ref in item.blobs} | shards

    def mentioned_digests(self) -> set[str]:
        """sha256s inside record bodies (``gc`` keeps a blob of that name; not every one names a blob)."""
        found: set[str] = set()
        for item in self.records:
            collect_digests(item.record.body, found)
        return found


def read_snapshot(store: RegistryStore) -> Snapshot:
    """Everything ``store`` holds, records ordered inputs first."""
    history = tuple(store.alias_history())
    aliases = tuple(store.aliases())
    versions = tuple(v for kind in RECORD_KINDS for v in store.versions(kind))
    index = tuple(
        (transform, tuple(sorted(store.cached_images(transform).values(), key=lambda i: (i.shard_sha256, i.row))))
        for transform in store.image_index_transforms()
    )
    refs: dict[str, list[BlobRef]] = {}
    for ref in store.blob_refs():
        refs.setdefault(ref.record_id, []).append(ref)
    items = [RecordImport(record=r, links=tuple(store.links_from(r.id)), blobs=tuple(refs.get(r.id, ())))
             for r in store.find()]
    return Snapshot(alias_history=history, aliases=aliases, versions=versions, image_index=index,
                    records=inputs_first(items, where=store.uri), team_keys=store.team_keys())


def inputs_first(items: Sequence[RecordImport], *, where: str) -> tuple[RecordImport, ...]:
    """``items`` reordered so that every record comes after the records it was made from (otherwise kept in order).

    Records are read oldest first, which is almost always that order already; clocks of different hosts
    can disagree, lineage cannot.
    """
    position = {item.record.id: i for i, item in enumerate(items)}
    waiting: list[int] = []
    users: dict[str, list[int]] = {}
    ready: list[int] = []
    for i, item in enumerate(items):
        inputs = {link.input_id for link in item.links if link.input_id in position}
        waiting.append(len(inputs))
        for input_id in inputs:
            users.setdefault(input_id, []).append(i)
        if not inputs:
            ready.append(i)
    heapq.heapify(ready)
    ordered: list[RecordImport] = []
    while ready:
        i = heapq.heappop(ready)
        ordered.append(items[i])
        for user in users.get(items[i].record.id, ()):
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready, user)
    if len(ordered) != len(items):
        stuck = next(item.record.id for i, item in enumerate(items) if waiting[i])
        raise CorruptStoreError(
            f"the lineage links of {where} form a cycle (through record {stuck[:12]}), which the registry never makes; "
            "nothing was copied. Check the source with `toolchain registry lineage` and restore it from a backup"
        )
    return tuple(ordered)


def copy_registry(source: Workspace, config: CopyConfig, *, progress: Progress | None = None) -> CopyReport:
    """Copy the registry of ``source`` (and its blobs, where the destination keeps them elsewhere) into ``config.to``.

    Raises:
        InputNotFoundError: The source registry is empty (the wrong workspace?).
        UsageError: The destination is the source.
        RegistryConflictError: The destination holds something that contradicts the source.
        BadInputError, MissingEnvironmentError: From opening or writing the destination store.
    """
    started = time.perf_counter()
    progress = progress or NullProgress()
    snapshot = read_snapshot(source.registry)
    if snapshot.empty:
        raise InputNotFoundError(
            f"the registry {source.registry.uri} holds nothing to copy; name the workspace to copy with --workspace "
            "(or its registry with --registry) before the subcommand: toolchain --workspace DIR registry copy --to URI"
        )
    named_blobs = BlobStore(config.blobs, create=False) if config.blobs is not None else None  # checked first
    with open_store(config.to) as destination:
        if _same_store(source.registry, destination):
            raise UsageError(f"--to names the registry being copied ({destination.uri}); name another store")
        check_conflicts(destination, snapshot, progress=progress)
        blob_store = _destination_blobs(source, destination, named_blobs)
        transfer = None
        if blob_store is not None:
            transfer = copy_blobs(source.blobs, blob_store, snapshot.required_blobs(), snapshot.mentioned_digests(),
                                  progress=progress)
        tables = _import_rows(destination, snapshot, config.batch_size, progress)
        destination_uri = destination.uri
    return CopyReport(
        source=source.registry.uri, destination=destination_uri, source_blobs=str(source.blobs.root),
        destination_blobs=str((blob_store or source.blobs).root), tables=tables, blobs=transfer,
        seconds=time.perf_counter() - started,
    )


def _same_store(a: RegistryStore, b: RegistryStore) -> bool:
    from toolchain.registry.sqlite_store import SqliteStore

    if isinstance(a, SqliteStore) and isinstance(b, SqliteStore):
        return ":memory:" not in (a.path, b.path) and Path(a.path).resolve() == Path(b.path).resolve()
    return a.uri == b.uri


def _destination_blobs(source: Workspace, destination: RegistryStore, named: BlobStore | None) -> BlobStore | None:
    """The blob store the destination's records will refer to, or None when it is the source's."""
    from toolchain.registry.sqlite_store import SqliteStore

    store = named
    if store is None and isinstance(destination, SqliteStore) and Path(destination.path).name == "registry.db":
        store = BlobStore(Path(destination.path).parent.resolve())  # a workspace's own registry: its blobs beside it
    if store is None or store.root.resolve() == source.blobs.root.resolve():
        return None
    return store


def check_conflicts(destination: RegistryStore, snapshot: Snapshot, *, progress: Progress | None = None) -> None:
    """Refuse, before anything is written, a copy that contradicts what ``destination`` holds.

    Reads only what the snapshot has in common with the destination (its ids, version names and aliases),
    so merging a laptop into a large shared registry reads little. The imports check again, inside their
    transactions, for what other writers change meanwhile.

    Raises:
        RegistryConflictError: A record id with another content, NAME@vN taken by another record (or the
            record numbered otherwise), or an alias whose history diverged.
    """
    progress = progress or NullProgress()
    where = destination.uri
    progress.start("checking the destination", len(snapshot.records) + len(snapshot.versions) + len(snapshot.alias_history))
    for item in snapshot.records:
        there = destination.get(item.record.id)
        if there is not None:
            record_outcome(item, there, destination.links_from(there.id), destination.blob_refs(there.id), where=where)
        progress.advance()
    names = {(v.kind, v.name) for v in snapshot.versions}
    theirs = [v for kind, name in sorted(names) for v in destination.versions(kind, name)]
    by_number = {(v.kind, v.name, v.number): v for v in theirs}
    by_record = {(v.kind, v.name, v.record_id): v for v in theirs}
    for v in snapshot.versions:
        version_outcome(v, by_number.get((v.kind, v.name, v.number)), by_record.get((v.kind, v.name, v.record_id)),
                        where=where)
        progress.advance()
    for (kind, name, alias, target), positions in group_histories(snapshot.alias_history).items():
        existing = [c for c in destination.alias_history(kind=kind, name=name, alias=alias) if c.target == target]
        history_to_append([snapshot.alias_history[i] for i in positions], existing, where=where)
        progress.advance(len(positions))
    progress.finish()


def _in_batches(rows: Sequence[T], size: int, label: str, progress: Progress,
                write: Callable[[Sequence[T]], list[ImportOutcome]]) -> list[ImportOutcome]:
    outcomes: list[ImportOutcome] = []
    progress.start(label, len(rows))
    for start in range(0, len(rows), size):
        batch = rows[start : start + size]
        outcomes.extend(write(batch))
        progress.advance(len(batch))
    progress.finish()
    return outcomes


def _import_team_keys(destination: RegistryStore, keys: Mapping[str, bytes]) -> list[ImportOutcome]:
    """Each team key into ``destination``; one it already has keeps its own value (its units were named with it)."""
    held = destination.team_keys()
    outcomes = []
    for name, value in sorted(keys.items()):
        if name in held:
            outcomes.append(ImportOutcome.IDENTICAL if held[name] == value else ImportOutcome.KEPT)
        else:
            stored = destination.team_key(name, offer=value)
            outcomes.append(ImportOutcome.CREATED if stored == value else ImportOutcome.KEPT)
    return outcomes


def _import_rows(destination: RegistryStore, snapshot: Snapshot, batch: int, progress: Progress) -> dict[str, TableCount]:
    """Every row of ``snapshot`` into ``destination``: records (inputs first), versions, alias histories, image index."""
    records = _in_batches(snapshot.records, batch, "records", progress, destination.import_records)
    versions = _in_batches(snapshot.versions, batch, "versions", progress, destination.import_versions)
    # One call: an alias's history must be imported whole (its changes are compared with the destination's).
    history = _in_batches(snapshot.alias_history, max(batch, len(snapshot.alias_history)), "alias history", progress,
                          destination.import_alias_history)
    images: list[ImportOutcome] = []
    for transform, entries in snapshot.image_index:
        images += _in_batches(entries, batch, f"image index {transform[:12]}", progress,
                              lambda rows, t=transform: destination.import_image_index(t, rows))
    keys = _import_team_keys(destination, snapshot.team_keys)
    # A record kept with the destination's stamps has the same links and blob refs: those are simply present.
    written = [ImportOutcome.CREATED if o is ImportOutcome.CREATED else ImportOutcome.IDENTICAL for o in records]
    moved = {alias_key(change) for change, outcome in zip(snapshot.alias_history, history) if outcome is ImportOutcome.CREATED}
    return {
        "records": TableCount.of(records),
        "links": TableCount.of(written, [len(item.links) for item in snapshot.records]),
        "blob_refs": TableCount.of(written, [len(item.blobs) for item in snapshot.records]),
        "versions": TableCount.of(versions),
        "alias_history": TableCount.of(history),
        "aliases": TableCount.of(ImportOutcome.CREATED if alias_key(a) in moved else ImportOutcome.IDENTICAL
                                 for a in snapshot.aliases),
        "image_index": TableCount.of(images),
        "team_keys": TableCount.of(keys),
    }
