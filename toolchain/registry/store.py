"""The registry store contract (an ABC, like MLflow's ``AbstractStore``).

Stores are picked by URI scheme in :func:`toolchain.registry.open_store`: SQLite (embedded, the
default) and PostgreSQL (a server a team shares). Every store must pass the contract test suite in
``tests/registry/test_store_contract.py`` and give the same guarantees:

* records, lineage links, blob refs, versions, alias history and the image index are immutable, and the
  database itself rejects an UPDATE or DELETE of them (triggers), not only this code;
* every write method is one transaction: a crash or a lost connection leaves nothing half-written, and
  rerunning the same call completes it (``commit`` and ``add_cached_images`` are idempotent);
* versions and alias changes are allocated without races between concurrent writers (processes and
  hosts): version numbers are consecutive and each alias change starts where the previous one left it;
* the schema is created and migrated forward by the store when it is opened (:mod:`toolchain.registry.schema`),
  and a database that is not a toolchain registry, or has a newer schema, is refused before anything is written;
* the ``import_*`` methods write rows exactly as another store holds them (ids, creation stamps, alias change
  times, who and why), for ``toolchain registry copy``: importing what is already there is a no-op, importing
  what contradicts it is a :class:`RegistryConflictError` and writes nothing of that call.

Failures of the database itself (server gone, connection lost) are :class:`toolchain.errors.MissingEnvironmentError`
(exit 5) saying what to check; messages quote the store's location with credentials redacted.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from toolchain.errors import BadInputError
from toolchain.hashing import canonical_json
from toolchain.registry.records import (
    RECORD_KINDS,
    Alias,
    AliasChange,
    BlobRef,
    CachedImage,
    Link,
    NewRecord,
    Record,
    Version,
)


class RegistryConflictError(BadInputError):
    """An import contradicts what the store already holds (same id, another body; NAME@vN taken; a diverged alias)."""


class ImportOutcome(str, enum.Enum):
    """What importing one row did."""

    CREATED = "created"
    """It was not there and was written, with the given stamps."""
    IDENTICAL = "identical"
    """It was there exactly as given: nothing was written."""
    KEPT = "kept"
    """It was there with the same content but the store's own stamps (a record or version another host made
    first, with its own time and user) or its own image-index entry for the image (a cache: either is valid);
    nothing was written."""


@dataclass(frozen=True, kw_only=True)
class RecordImport:
    """A record as another store holds it, with its lineage links and blob refs (the unit of :meth:`RegistryStore.import_records`)."""

    record: Record
    links: tuple[Link, ...] = ()
    blobs: tuple[BlobRef, ...] = ()

    def __post_init__(self) -> None:
        rid = self.record.id
        if self.record.kind not in RECORD_KINDS:
            raise BadInputError(
                f"record {rid[:12]} is of kind '{self.record.kind}', which this toolchain does not know "
                f"({', '.join(RECORD_KINDS)}); upgrade toolchain (pip install -U toolchain) to import it"
            )
        strays = [x for x in (*self.links, *self.blobs) if x.record_id != rid]
        if strays:
            raise BadInputError(f"links and blob refs imported with record {rid[:12]} must belong to it, not to "
                                f"{strays[0].record_id[:12]}")


def record_outcome(item: RecordImport, existing: Record, links: Iterable[Link], blobs: Iterable[BlobRef], *,
                   where: str) -> ImportOutcome:
    """Compare an imported record with the one a store already holds under its id.

    Content (kind, name, body, links, blob refs) must match; stamps may differ (the store keeps its own).

    Raises:
        RegistryConflictError: The content differs.
    """
    new = item.record
    differences = [
        what for what, same in (
            ("kind", existing.kind == new.kind),
            ("name", existing.name == new.name),
            ("body", canonical_json(existing.body) == canonical_json(new.body)),
            ("lineage links", {(l.input_id, l.role) for l in links} == {(l.input_id, l.role) for l in item.links}),
            ("blob refs", {(b.sha256, b.role) for b in blobs} == {(b.sha256, b.role) for b in item.blobs}),
        ) if not same
    ]
    if differences:
        raise RegistryConflictError(
            f"record {new.id[:12]} ({new.kind} {new.name or '(no name)'}) is already in {where} with another "
            f"{' and '.join(differences)} (there: {existing.kind} {existing.name or '(no name)'}, made {existing.created_at} "
            f"by {existing.created_by}); record ids name content, so the two registries disagree about what it is. "
            f"Nothing of this import was written: compare `toolchain registry show {new.id[:12]}` in both, and copy into "
            "an empty registry instead"
        )
    stamps = (existing.created_at, existing.created_by, existing.toolchain_version)
    same_stamps = stamps == (new.created_at, new.created_by, new.toolchain_version)
    return ImportOutcome.IDENTICAL if same_stamps else ImportOutcome.KEPT


def version_outcome(version: Version, by_number: Version | None, by_record: Version | None, *, where: str) -> ImportOutcome | None:
    """Compare an imported version with the store's version of the same number and of the same record (None: absent).

    Returns:
        None when the version is to be written, else what importing it amounts to.

    Raises:
        RegistryConflictError: The number belongs to another record, or the record has another number.
    """
    label = f"{version.kind} {version.name}@v{version.number}"
    if version.number < 1:
        raise BadInputError(f"{label}: version numbers start at 1")
    if by_number is not None and by_number.record_id != version.record_id:
        raise RegistryConflictError(
            f"{label} is {version.record_id[:12]} here but {by_number.record_id[:12]} in {where}: both registries "
            f"numbered their own versions of {version.name}. Nothing of this import was written; copy into an empty "
            "registry, or rename one of them"
        )
    if by_record is not None and by_record.number != version.number:
        raise RegistryConflictError(
            f"{label}: record {version.record_id[:12]} is already {version.name}@v{by_record.number} in {where}. "
            "Nothing of this import was written; copy into an empty registry"
        )
    if by_number is None:
        return None
    return ImportOutcome.IDENTICAL if by_number.created_at == version.created_at else ImportOutcome.KEPT


def alias_key(change: AliasChange | Alias) -> tuple[str, str, str, str]:
    """``(kind, name, alias, target)``: which alias a change or pointer is of."""
    return change.kind, change.name, change.alias, change.target


def _entry(change: AliasChange) -> tuple[str | None, str | None, str, str, str]:
    return change.old_record_id, change.new_record_id, change.at, change.by, change.reason


def history_to_append(changes: Sequence[AliasChange], existing: Sequence[AliasChange], *, where: str) -> list[AliasChange]:
    """The changes of one alias's complete history ``changes`` that a store holding ``existing`` lacks.

    ``existing`` must be a prefix of ``changes`` (the rest is returned), or ``changes`` a prefix of
    ``existing`` (the alias moved on in the store since: nothing to append).

    Raises:
        RegistryConflictError: The two histories diverge.
    """
    common = min(len(changes), len(existing))
    for index in range(common):
        if _entry(changes[index]) != _entry(existing[index]):
            kind, name, alias, target = alias_key(changes[0])
            here, there = changes[index], existing[index]
            raise RegistryConflictError(
                f"the history of {kind} {name}@{alias}" + (f" for {target}" if target else " (all targets)")
                + f" diverges from {where} at change {index + 1}: here {here.at} by {here.by} to "
                f"{(here.new_record_id or '(removed)')[:12]}, there {there.at} by {there.by} to "
                f"{(there.new_record_id or '(removed)')[:12]}. Nothing of this import was written; see "
                f"`toolchain registry alias {name} --history` in both, and copy into an empty registry"
            )
    return list(changes[len(existing):])


def group_histories(changes: Sequence[AliasChange]) -> dict[tuple[str, str, str, str], list[int]]:
    """Positions in ``changes`` by the alias the change is of, each alias's in the given order."""
    groups: dict[tuple[str, str, str, str], list[int]] = {}
    for index, change in enumerate(changes):
        groups.setdefault(alias_key(change), []).append(index)
    return groups


def image_outcome(image: CachedImage, existing: CachedImage | None) -> ImportOutcome | None:
    """None when the index entry is to be written, else what importing it amounts to."""
    if existing is None:
        return None
    return ImportOutcome.IDENTICAL if existing == image else ImportOutcome.KEPT


class RegistryStore(abc.ABC):
    """Immutable records with lineage, versions, aliases with history, and the image index."""

    uri: str
    """Where the store lives, safe to print (credentials redacted)."""

    # -- records -------------------------------------------------------------------------------
    @abc.abstractmethod
    def commit(self, new: NewRecord) -> tuple[Record, Version | None, bool]:
        """Insert a record with its links, blob refs and (optionally) the next version, atomically.

        Idempotent: committing a record whose id exists returns the existing record (and its
        existing version for that name, creating one only if it has none), with ``created=False``.

        Returns:
            ``(record, version or None, created)``.
        """

    @abc.abstractmethod
    def get(self, record_id: str) -> Record | None:
        """The record with exactly this id, or None."""

    @abc.abstractmethod
    def find(self, *, kind: str | None = None, name: str | None = None, id_prefix: str | None = None) -> list[Record]:
        """Records matching all given filters, oldest first."""

    @abc.abstractmethod
    def links_from(self, record_id: str) -> list[Link]:
        """The inputs a record was made from."""

    @abc.abstractmethod
    def links_to(self, input_id: str) -> list[Link]:
        """The records made from ``input_id``."""

    @abc.abstractmethod
    def blob_refs(self, record_id: str | None = None) -> list[BlobRef]:
        """Blobs referenced by one record, or by all records."""

    # -- versions ------------------------------------------------------------------------------
    @abc.abstractmethod
    def versions(self, kind: str, name: str | None = None) -> list[Version]:
        """Versions of a kind (optionally one name), ordered by name then number."""

    @abc.abstractmethod
    def version_of(self, kind: str, name: str, record_id: str) -> Version | None:
        """The version number ``record_id`` has under ``name``, if any."""

    # -- aliases -------------------------------------------------------------------------------
    @abc.abstractmethod
    def set_alias(
        self, *, kind: str, name: str, alias: str, target: str, record_id: str | None, by: str, reason: str = ""
    ) -> AliasChange:
        """Point (or with ``record_id=None`` remove) an alias and append the change to its history."""

    @abc.abstractmethod
    def get_alias(self, *, kind: str, name: str, alias: str, target: str = "") -> str | None:
        """The record id an alias points at, or None."""

    @abc.abstractmethod
    def aliases(self, *, kind: str | None = None, name: str | None = None, record_id: str | None = None) -> list[Alias]:
        """Aliases as they point now, filtered by kind, name and/or the record they point at."""

    @abc.abstractmethod
    def alias_history(self, *, kind: str | None = None, name: str | None = None, alias: str | None = None) -> list[AliasChange]:
        """Every change of the aliases (of one kind, name and/or alias when given), oldest first."""

    # -- decoded-image index (incremental ingest) ------------------------------------------------
    @abc.abstractmethod
    def cached_images(self, transform: str, content_sha256s: Iterable[str] | None = None) -> dict[str, CachedImage]:
        """Images already decoded with ``transform`` (all, or those among the given digests)."""

    @abc.abstractmethod
    def add_cached_images(self, transform: str, images: Sequence[CachedImage]) -> None:
        """Record images written to a shard; existing entries are kept."""

    @abc.abstractmethod
    def indexed_shards(self) -> set[str]:
        """sha256 of every shard blob the image index points into (``gc`` must keep them)."""

    @abc.abstractmethod
    def image_index_transforms(self) -> list[str]:
        """Every transform the image index holds entries for, sorted."""

    # -- team keys -----------------------------------------------------------------------------
    @abc.abstractmethod
    def team_key(self, name: str, *, offer: bytes | None = None) -> bytes:
        """The team's key called ``name``: the same bytes for every workstation that uses this registry.

        Written once and never changed: the first caller stores ``offer`` (default: 32 random bytes); a
        caller racing it, and every later one, reads what the first stored. Keys name things on units
        (credential volumes) without revealing what they hold; they are never printed, exported or mirrored.
        """

    @abc.abstractmethod
    def team_keys(self) -> dict[str, bytes]:
        """Every team key by name (``registry copy`` carries them, so names on units stay the same)."""

    # -- importing another store's rows (toolchain registry copy) --------------------------------
    @abc.abstractmethod
    def import_records(self, items: Sequence[RecordImport]) -> list[ImportOutcome]:
        """Insert records with their links and blob refs exactly as given (ids and stamps kept), in one transaction.

        A record's link inputs must be in the store already or come earlier in ``items``. A record whose id
        is present with the same content is left as it is (:attr:`ImportOutcome.IDENTICAL`, or
        :attr:`ImportOutcome.KEPT` when only its stamps differ).

        Returns:
            One outcome per item, in order.

        Raises:
            RegistryConflictError: An id is present with another kind, name, body, links or blob refs
                (nothing of the call is written).
            BadInputError: A link input is neither in the store nor earlier in ``items``.
        """

    @abc.abstractmethod
    def import_versions(self, versions: Sequence[Version]) -> list[ImportOutcome]:
        """Register versions with their numbers and times as given, in one transaction (their records must be here).

        Raises:
            RegistryConflictError: NAME@vN is another record here, or the record has another number under NAME.
            BadInputError: A version's record is not in the store.
        """

    @abc.abstractmethod
    def import_alias_history(self, changes: Sequence[AliasChange]) -> list[ImportOutcome]:
        """Give aliases their complete histories (each alias's changes oldest first), in one transaction.

        Per alias: when the store's history is a prefix of the given one, the missing changes are appended
        with their own times, who and why, and the alias is pointed where the last of them left it (or
        removed); when the given history is a prefix of the store's (the alias moved on here since),
        nothing changes.

        Returns:
            One outcome per change, in order (:attr:`ImportOutcome.CREATED` or :attr:`ImportOutcome.IDENTICAL`).

        Raises:
            RegistryConflictError: The histories diverge.
            BadInputError: A change points the alias at a record that is not in the store.
        """

    @abc.abstractmethod
    def import_image_index(self, transform: str, images: Sequence[CachedImage]) -> list[ImportOutcome]:
        """Add image-index entries, in one transaction; an image already indexed keeps its own entry.

        Returns:
            One outcome per image, in order.
        """

    # -- schema --------------------------------------------------------------------------------
    @abc.abstractmethod
    def schema_version(self) -> int:
        """The schema version of the database (after the migrations opening it applied)."""

    # -- lifecycle -----------------------------------------------------------------------------
    @abc.abstractmethod
    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> RegistryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
