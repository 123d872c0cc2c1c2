"""What the SQL registry stores share: the reads, the row converters and the alias writes, written once.

:class:`~toolchain.registry.sqlite_store.SqliteStore` and :class:`~toolchain.registry.postgres_store.PostgresStore`
hold the same tables (:mod:`toolchain.registry.schema`), so the statements that read them, and those that move an
alias, are the same in both dialects. They are written here with ``?`` placeholders (SQLite's DB-API paramstyle);
a store whose driver wants another mark sets :attr:`SqlRegistryStore._PLACEHOLDER` and runs every statement of
this module through :meth:`SqlRegistryStore._sql` (the PostgreSQL store's ``_query`` does, for psycopg's ``%s``).

A concrete store keeps what differs between the databases: connections, locking and transactions (``_query``,
``_write``, ``_lock_alias``), schema creation and migration, ``commit`` and the ``import_*`` methods (row by row
in one immediate transaction on SQLite, set-based with advisory locks on PostgreSQL), and its upserts.
"""

from __future__ import annotations

import abc
import json
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from toolchain.errors import BadInputError
from toolchain.registry.records import (
    Alias,
    AliasChange,
    BlobRef,
    CachedImage,
    Link,
    Record,
    Version,
)
from toolchain.registry.schema import VERSION_TABLE
from toolchain.registry.stamps import now, to_signed64, to_unsigned64
from toolchain.registry.store import ImportOutcome, RegistryStore, history_to_append

T = TypeVar("T")

Row = Any
"""A result row, read by column name: an ``sqlite3.Row``, or the dict psycopg's ``dict_row`` makes."""

Db = Any
"""What runs statements inside a write transaction (DB-API ``execute``/``executemany`` whose results have
``fetchone``/``fetchall``): the ``sqlite3.Connection``, or a ``psycopg.Cursor``; it takes the driver's paramstyle."""


class SqlRegistryStore(RegistryStore):
    """A :class:`RegistryStore` on a SQL database with the registry's tables; see the module docstring."""

    _PLACEHOLDER = "?"
    """The driver's parameter mark: ``?`` (qmark) or ``%s`` (format)."""

    _IMAGE_BATCH = 500
    """Digests per :meth:`cached_images` query."""

    # -- what a concrete store provides ------------------------------------------------------------
    @abc.abstractmethod
    def _query(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        """The rows of one read statement written with ``?`` placeholders, outside any write transaction."""

    @abc.abstractmethod
    def _write(self, work: Callable[[Db], T]) -> T:
        """Run ``work`` in one write transaction, given what runs its statements (see :data:`Db`)."""

    def _lock_alias(self, db: Db, kind: str, name: str, alias: str, target: str) -> None:
        """Serialize changes of one alias until the transaction ends; nothing to do where write transactions exclude
        each other already (SQLite's ``BEGIN IMMEDIATE``)."""

    def _in(self, column: str, values: list[str]) -> tuple[str, list[object]]:
        """A condition that ``column`` is one of ``values`` (``?`` placeholders), with its parameters."""
        return f"{column} IN ({','.join('?' * len(values))})", list(values)

    def _sql(self, sql: str) -> str:
        """``sql``, written with ``?`` placeholders, in the driver's paramstyle."""
        return sql if self._PLACEHOLDER == "?" else sql.replace("?", self._PLACEHOLDER)

    def schema_version(self) -> int:
        return int(self._query(f"SELECT COALESCE(MAX(version), 0) AS v FROM {VERSION_TABLE}")[0]["v"])

    # -- team keys -------------------------------------------------------------------------------
    def team_key(self, name: str, *, offer: bytes | None = None) -> bytes:
        if not name:
            raise ValueError("a team key needs a name")
        value = (offer if offer is not None else os.urandom(32)).hex()

        def work(db: Db) -> str:
            # Both databases take ON CONFLICT DO NOTHING: the first writer's key stands, a racing one reads it.
            db.execute(self._sql("INSERT INTO team_keys(name, value, created_at) VALUES (?, ?, ?) "
                                 "ON CONFLICT (name) DO NOTHING"), (name, value, now()))
            return str(db.execute(self._sql("SELECT value FROM team_keys WHERE name = ?"), (name,)).fetchone()["value"])

        existing = self._query("SELECT value FROM team_keys WHERE name = ?", (name,))
        return bytes.fromhex(existing[0]["value"] if existing else self._write(work))

    def team_keys(self) -> dict[str, bytes]:
        return {row["name"]: bytes.fromhex(row["value"]) for row in self._query("SELECT name, value FROM team_keys ORDER BY name")}

    # -- rows as records ---------------------------------------------------------------------------
    @staticmethod
    def _record(row: Row) -> Record:
        return Record(
            id=row["id"], kind=row["kind"], name=row["name"], body=json.loads(row["body"]), created_at=row["created_at"],
            created_by=row["created_by"], toolchain_version=row["toolchain_version"],
        )

    @staticmethod
    def _link(row: Row) -> Link:
        return Link(record_id=row["record_id"], input_id=row["input_id"], role=row["role"])

    @staticmethod
    def _blob_ref(row: Row) -> BlobRef:
        return BlobRef(record_id=row["record_id"], sha256=row["sha256"], role=row["role"])

    @staticmethod
    def _version(row: Row) -> Version:
        return Version(kind=row["kind"], name=row["name"], number=row["number"], record_id=row["record_id"],
                       created_at=row["created_at"])

    @staticmethod
    def _alias(row: Row) -> Alias:
        return Alias(kind=row["kind"], name=row["name"], alias=row["alias"], target=row["target"], record_id=row["record_id"])

    @staticmethod
    def _change(row: Row) -> AliasChange:
        return AliasChange(
            kind=row["kind"], name=row["name"], alias=row["alias"], target=row["target"],
            old_record_id=row["old_record_id"], new_record_id=row["new_record_id"], at=row["at"], by=row["by"],
            reason=row["reason"],
        )

    @staticmethod
    def _cached(row: Row) -> CachedImage:
        return CachedImage(
            content_sha256=row["content_sha256"], shard_sha256=row["shard_sha256"], row=row["row"], width=row["width"],
            height=row["height"], phash=to_unsigned64(row["phash"]), pixel_sha256=row["pixel_sha256"],
        )

    @staticmethod
    def _image_row(transform: str, image: CachedImage) -> tuple[object, ...]:
        """An ``image_index`` row's values in column order (the 64-bit phash as the signed integer stored)."""
        return (transform, image.content_sha256, image.shard_sha256, image.row, image.width, image.height,
                to_signed64(image.phash), image.pixel_sha256)

    # -- records -------------------------------------------------------------------------------
    def get(self, record_id: str) -> Record | None:
        rows = self._query("SELECT * FROM records WHERE id = ?", (record_id,))
        return self._record(rows[0]) if rows else None

    def find(self, *, kind: str | None = None, name: str | None = None, id_prefix: str | None = None) -> list[Record]:
        clauses, params = [], []
        if kind is not None:
            clauses.append("kind = ?")
            params.append(kind)
        if name is not None:
            clauses.append("name = ?")
            params.append(name)
        if id_prefix is not None:
            clauses.append("id >= ? AND id < ?")
            params.extend([id_prefix, id_prefix + "g"])  # hex digits sort below 'g' (PostgreSQL: the "C" collation)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        return [self._record(r) for r in self._query(f"SELECT * FROM records {where} ORDER BY created_at, id", params)]

    def links_from(self, record_id: str) -> list[Link]:
        rows = self._query("SELECT * FROM links WHERE record_id = ? ORDER BY role, input_id", (record_id,))
        return [self._link(r) for r in rows]

    def links_to(self, input_id: str) -> list[Link]:
        rows = self._query("SELECT * FROM links WHERE input_id = ? ORDER BY role, record_id", (input_id,))
        return [self._link(r) for r in rows]

    def blob_refs(self, record_id: str | None = None) -> list[BlobRef]:
        if record_id is None:
            rows = self._query("SELECT * FROM blob_refs ORDER BY record_id, role, sha256")
        else:
            rows = self._query("SELECT * FROM blob_refs WHERE record_id = ? ORDER BY role, sha256", (record_id,))
        return [self._blob_ref(r) for r in rows]

    # -- versions ------------------------------------------------------------------------------
    def versions(self, kind: str, name: str | None = None) -> list[Version]:
        if name is None:
            rows = self._query("SELECT * FROM versions WHERE kind = ? ORDER BY name, number", (kind,))
        else:
            rows = self._query("SELECT * FROM versions WHERE kind = ? AND name = ? ORDER BY number", (kind, name))
        return [self._version(r) for r in rows]

    def version_of(self, kind: str, name: str, record_id: str) -> Version | None:
        rows = self._query(
            "SELECT * FROM versions WHERE kind = ? AND name = ? AND record_id = ?", (kind, name, record_id)
        )
        return self._version(rows[0]) if rows else None

    # -- aliases -------------------------------------------------------------------------------
    def set_alias(
        self, *, kind: str, name: str, alias: str, target: str, record_id: str | None, by: str, reason: str = ""
    ) -> AliasChange:
        at = now()

        def work(db: Db) -> str | None:
            # Held until commit: the next change of this alias reads what this one wrote.
            self._lock_alias(db, kind, name, alias, target)
            row = db.execute(
                self._sql("SELECT record_id FROM aliases WHERE kind = ? AND name = ? AND alias = ? AND target = ?"),
                (kind, name, alias, target),
            ).fetchone()
            old = row["record_id"] if row else None
            if record_id is not None and db.execute(self._sql("SELECT 1 FROM records WHERE id = ?"),
                                                    (record_id,)).fetchone() is None:
                raise BadInputError(f"cannot point alias '{alias}' at {record_id[:12]}: no such record")
            self._point(db, kind, name, alias, target, record_id)
            db.execute(
                self._sql("INSERT INTO alias_history(kind, name, alias, target, old_record_id, new_record_id, at, by, "
                          "reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                (kind, name, alias, target, old, record_id, at, by, reason),
            )
            return old

        old = self._write(work)
        return AliasChange(
            kind=kind, name=name, alias=alias, target=target, old_record_id=old, new_record_id=record_id, at=at, by=by,
            reason=reason,
        )

    def _point(self, db: Db, kind: str, name: str, alias: str, target: str, record_id: str | None) -> None:
        """Point an alias at ``record_id`` (None: remove it), as its newest history entry says."""
        if record_id is None:
            db.execute(self._sql("DELETE FROM aliases WHERE kind = ? AND name = ? AND alias = ? AND target = ?"),
                       (kind, name, alias, target))
        else:
            db.execute(
                self._sql("INSERT INTO aliases(kind, name, alias, target, record_id) VALUES (?, ?, ?, ?, ?) "
                          "ON CONFLICT (kind, name, alias, target) DO UPDATE SET record_id = excluded.record_id"),
                (kind, name, alias, target, record_id),
            )

    def get_alias(self, *, kind: str, name: str, alias: str, target: str = "") -> str | None:
        rows = self._query(
            "SELECT record_id FROM aliases WHERE kind = ? AND name = ? AND alias = ? AND target = ?",
            (kind, name, alias, target),
        )
        return rows[0]["record_id"] if rows else None

    def aliases(self, *, kind: str | None = None, name: str | None = None, record_id: str | None = None) -> list[Alias]:
        where, params = _equal(("kind", kind), ("name", name), ("record_id", record_id))
        rows = self._query(f"SELECT * FROM aliases {where} ORDER BY kind, name, alias, target", params)
        return [self._alias(r) for r in rows]

    def alias_history(self, *, kind: str | None = None, name: str | None = None, alias: str | None = None) -> list[AliasChange]:
        where, params = _equal(("kind", kind), ("name", name), ("alias", alias))
        return [self._change(r) for r in self._query(f"SELECT * FROM alias_history {where} ORDER BY seq", params)]

    def _history_outcomes(self, db: Db, changes: Sequence[AliasChange],
                          groups: dict[tuple[str, str, str, str], list[int]]) -> list[ImportOutcome]:
        """For ``import_alias_history``: which of ``changes`` (grouped by alias) the store's histories lack (CREATED).

        Raises:
            RegistryConflictError: A history diverges from the store's.
        """
        outcomes = [ImportOutcome.IDENTICAL] * len(changes)
        for (kind, name, alias, target), positions in groups.items():
            rows = db.execute(
                self._sql("SELECT * FROM alias_history WHERE kind = ? AND name = ? AND alias = ? AND target = ? "
                          "ORDER BY seq"),
                (kind, name, alias, target),
            ).fetchall()
            missing = history_to_append([changes[i] for i in positions], [self._change(r) for r in rows], where=self.uri)
            for i in positions[len(positions) - len(missing):]:
                outcomes[i] = ImportOutcome.CREATED
        return outcomes

    # -- decoded-image index -------------------------------------------------------------------
    def cached_images(self, transform: str, content_sha256s: Iterable[str] | None = None) -> dict[str, CachedImage]:
        if content_sha256s is None:
            rows = self._query("SELECT * FROM image_index WHERE transform = ?", (transform,))
            return {r["content_sha256"]: self._cached(r) for r in rows}
        wanted = list(dict.fromkeys(content_sha256s))
        found: dict[str, CachedImage] = {}
        for start in range(0, len(wanted), self._IMAGE_BATCH):
            among, params = self._in("content_sha256", wanted[start : start + self._IMAGE_BATCH])
            rows = self._query(f"SELECT * FROM image_index WHERE transform = ? AND {among}", [transform, *params])
            found.update({r["content_sha256"]: self._cached(r) for r in rows})
        return found

    def indexed_shards(self) -> set[str]:
        return {r["shard_sha256"] for r in self._query("SELECT DISTINCT shard_sha256 FROM image_index")}

    def image_index_transforms(self) -> list[str]:
        return [r["transform"] for r in self._query("SELECT DISTINCT transform FROM image_index ORDER BY transform")]


def _equal(*pairs: tuple[str, str | None]) -> tuple[str, list[object]]:
    """A WHERE clause (empty: none) that each column given a value other than None equals it, with its parameters."""
    clauses, params = [], []
    for column, value in pairs:
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params
