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
  and a database that is not a toolchain registry, or has a newer schema, is refused before anything is written.

Failures of the database itself (server gone, connection lost) are :class:`toolchain.errors.MissingEnvironmentError`
(exit 5) saying what to check; messages quote the store's location with credentials redacted.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence

from toolchain.registry.records import (
    Alias,
    AliasChange,
    BlobRef,
    CachedImage,
    Link,
    NewRecord,
    Record,
    Version,
)


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
    def alias_history(self, *, kind: str, name: str, alias: str | None = None) -> list[AliasChange]:
        """Every change of the aliases of ``name``, oldest first."""

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
