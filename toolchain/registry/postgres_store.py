"""PostgreSQL registry store: one registry a team shares (``--registry postgresql://user@host:port/db``).

Same contract as the SQLite store (:mod:`toolchain.registry.store`). Every write method is one
transaction in READ COMMITTED: a version number is allocated under a transaction-scoped advisory
lock on ``(kind, name)`` and an alias change under one on the alias, so concurrent writers on any
number of hosts get consecutive versions and a complete alias history; primary keys and unique
constraints back that up, and a transaction the server aborts for a serialization failure or a
deadlock is retried whole. A lost connection rolls the transaction in flight back (nothing
half-written) and is :class:`~toolchain.errors.MissingEnvironmentError`; the next call reconnects.

The reads and the alias writes are the SQLite store's, written once in :mod:`toolchain.registry.sql_store`;
this module holds the connection, the advisory locks, the retried transactions and the set-based writes.

psycopg is imported here only: the ``[postgres]`` extra is needed by those who use this store.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg

from toolchain import __version__
from toolchain.errors import BadInputError, UsageError
from toolchain.hashing import canonical_json, digest_json
from toolchain.registry import postgres_schema
from toolchain.registry.postgres_connection import (
    PostgresLocation,
    connect,
    operation_error,
)
from toolchain.registry.records import (
    RECORD_KINDS,
    AliasChange,
    BlobRef,
    CachedImage,
    Link,
    NewRecord,
    Record,
    Version,
)
from toolchain.registry.sql_store import SqlRegistryStore
from toolchain.registry.stamps import current_user, now
from toolchain.registry.store import (
    ImportOutcome,
    RecordImport,
    alias_key,
    group_histories,
    image_outcome,
    record_outcome,
    version_outcome,
)

T = TypeVar("T")
Row = dict[str, Any]

_ATTEMPTS = 8  # a transaction aborted for a serialization failure or deadlock is retried this often
_BATCH = 5000  # digests per cached_images query


def _backoff(attempt: int) -> float:
    return min(1.0, 0.01 * 2**attempt) * random.uniform(0.5, 1.5)


class PostgresStore(SqlRegistryStore):
    """Registry in a PostgreSQL database (tables in the connection's current schema).

    Args:
        uri: ``postgresql://[user[:password]@]host[:port]/database[?param=value...]`` (libpq's URI).
        connect_timeout_s: Seconds to wait for the server unless the URI sets ``connect_timeout``.
    """

    _PLACEHOLDER = "%s"  # psycopg's; the SQL shared with SQLite (sql_store.py) is written with "?"
    _IMAGE_BATCH = _BATCH

    def __init__(self, uri: str, *, connect_timeout_s: int = 10) -> None:
        self._location = PostgresLocation.parse(uri, connect_timeout_s=connect_timeout_s)
        self.uri = self._location.shown
        self._lock = threading.RLock()
        self._conn: psycopg.Connection[Row] | None = None
        try:
            with self._lock, self._translated():
                postgres_schema.migrate(self._connection(), self.uri)
        except BaseException:
            self.close()
            raise

    # -- connection and transactions -------------------------------------------------------------
    def _connection(self) -> psycopg.Connection[Row]:
        """The open connection; a new one when the last was lost (that call already failed)."""
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._location)
        return self._conn

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """psycopg's failures as toolchain errors that say what to check."""
        try:
            yield
        except (psycopg.OperationalError, psycopg.errors.InsufficientPrivilege, psycopg.errors.ReadOnlySqlTransaction,
                psycopg.InterfaceError) as exc:
            broken = self._conn is None or self._conn.closed or self._conn.broken
            if broken and self._conn is not None:
                self._conn.close()
            raise operation_error(self._location, exc, broken=broken) from exc

    def _write(self, work: Callable[[psycopg.Cursor[Row]], T]) -> T:
        """Run ``work`` in one transaction, retried whole when the server aborts it for a conflict."""
        with self._translated():
            for attempt in range(1, _ATTEMPTS + 1):
                try:
                    with self._lock:
                        conn = self._connection()
                        with conn.transaction(), conn.cursor() as cur:
                            return work(cur)
                except (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected):
                    if attempt == _ATTEMPTS:
                        raise
                    time.sleep(_backoff(attempt))
        raise AssertionError("unreachable")

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        """Rows of one read (``sql`` written with ``?``, as in :mod:`toolchain.registry.sql_store`), in autocommit."""
        with self._translated(), self._lock:
            return self._connection().execute(self._sql(sql), params).fetchall()

    def _in(self, column: str, values: list[str]) -> tuple[str, list[object]]:
        return f"{column} = ANY(?)", [values]

    @staticmethod
    def _lock_key(cur: psycopg.Cursor[Row], *parts: str) -> None:
        """Hold a transaction-scoped advisory lock on ``parts`` until commit or rollback."""
        cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", ("\x1f".join(parts),))

    # -- records -------------------------------------------------------------------------------
    def commit(self, new: NewRecord) -> tuple[Record, Version | None, bool]:
        if new.kind not in RECORD_KINDS:
            raise UsageError(f"unknown record kind '{new.kind}'; expected one of {', '.join(RECORD_KINDS)}")
        body_text = canonical_json(new.body)
        record_id = new.id or digest_json({"kind": new.kind, "body": new.body})

        def work(cur: psycopg.Cursor[Row]) -> tuple[Record, Version | None, bool]:
            created = False
            if cur.execute("SELECT 1 FROM records WHERE id = %s", (record_id,)).fetchone() is None:
                inputs = list(dict.fromkeys(input_id for input_id, _ in new.links))
                if inputs:
                    found = {r["id"] for r in cur.execute("SELECT id FROM records WHERE id = ANY(%s)", (inputs,))}
                    absent = [i for i in inputs if i not in found]
                    if absent:
                        raise BadInputError(f"lineage input {absent[0][:12]} is not in the registry")
                # A concurrent writer of the same record makes this wait for its commit, then do nothing.
                created = cur.execute(
                    "INSERT INTO records(id, kind, name, body, created_at, created_by, toolchain_version) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING RETURNING id",
                    (record_id, new.kind, new.name, body_text, now(), current_user(), __version__),
                ).fetchone() is not None
                if created and new.links:
                    cur.executemany(
                        "INSERT INTO links(record_id, input_id, role) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                        [(record_id, input_id, role) for input_id, role in new.links],
                    )
                if created and new.blobs:
                    cur.executemany(
                        "INSERT INTO blob_refs(record_id, sha256, role) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                        [(record_id, sha, role) for sha, role in new.blobs],
                    )
            row = cur.execute("SELECT * FROM records WHERE id = %s", (record_id,)).fetchone()
            assert row is not None
            if row["kind"] != new.kind:
                raise BadInputError(f"record {record_id[:12]} already exists as a {row['kind']}, not a {new.kind}")
            version = self._next_version(cur, new.kind, new.name, record_id) if new.version else None
            return self._record(row), version, created

        return self._write(work)

    def _next_version(self, cur: psycopg.Cursor[Row], kind: str, name: str, record_id: str) -> Version:
        """The version ``record_id`` has under ``name``, allocating the next number when it has none."""
        self._lock_key(cur, "version", kind, name)
        row = cur.execute(
            "SELECT * FROM versions WHERE kind = %s AND name = %s AND record_id = %s", (kind, name, record_id)
        ).fetchone()
        if row is None:
            row = cur.execute(
                "INSERT INTO versions(kind, name, number, record_id, created_at) "
                "SELECT %s, %s, COALESCE(MAX(number), 0) + 1, %s, %s FROM versions WHERE kind = %s AND name = %s "
                "RETURNING *",
                (kind, name, record_id, now(), kind, name),
            ).fetchone()
        assert row is not None
        return self._version(row)

    # -- aliases and the decoded-image index ------------------------------------------------------
    def _lock_alias(self, db: psycopg.Cursor[Row], kind: str, name: str, alias: str, target: str) -> None:
        self._lock_key(db, "alias", kind, name, alias, target)

    def add_cached_images(self, transform: str, images: Sequence[CachedImage]) -> None:
        rows = [self._image_row(transform, i) for i in images]
        if not rows:
            return
        self._write(lambda cur: cur.executemany(
            "INSERT INTO image_index(transform, content_sha256, shard_sha256, row, width, height, phash, pixel_sha256) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            rows,
        ))

    # -- importing another store's rows ----------------------------------------------------------
    # Each call is one transaction of a few set-based statements (unnest arrays), not a round trip per row.
    def import_records(self, items: Sequence[RecordImport]) -> list[ImportOutcome]:
        if not items:
            return []

        def work(cur: psycopg.Cursor[Row]) -> list[ImportOutcome]:
            ids = list(dict.fromkeys(item.record.id for item in items))
            existing = {r["id"]: self._record(r) for r in cur.execute("SELECT * FROM records WHERE id = ANY(%s)", (ids,))}
            first: dict[str, int] = {}  # id -> position of the item that writes it
            for index, item in enumerate(items):
                if item.record.id not in existing and item.record.id not in first:
                    first[item.record.id] = index
            self._check_inputs(cur, items, existing, first)
            new = [items[i] for i in first.values()]
            inserted: set[str] = set()
            if new:
                columns = [list(c) for c in zip(*(
                    (i.record.id, i.record.kind, i.record.name, canonical_json(i.record.body), i.record.created_at,
                     i.record.created_by, i.record.toolchain_version) for i in new))]
                inserted = {r["id"] for r in cur.execute(
                    "INSERT INTO records(id, kind, name, body, created_at, created_by, toolchain_version) "
                    "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], "
                    "%s::text[]) ON CONFLICT (id) DO NOTHING RETURNING id", columns)}
            links = [(l.record_id, l.input_id, l.role) for i in new if i.record.id in inserted for l in i.links]
            blobs = [(b.record_id, b.sha256, b.role) for i in new if i.record.id in inserted for b in i.blobs]
            if links:
                cur.execute("INSERT INTO links(record_id, input_id, role) SELECT * FROM unnest(%s::text[], %s::text[], "
                            "%s::text[]) ON CONFLICT DO NOTHING", [list(c) for c in zip(*links)])
            if blobs:
                cur.execute("INSERT INTO blob_refs(record_id, sha256, role) SELECT * FROM unnest(%s::text[], %s::text[], "
                            "%s::text[]) ON CONFLICT DO NOTHING", [list(c) for c in zip(*blobs)])
            # Present before this call, or written by another importer since it began: compare with what is there.
            raced = [rid for rid in first if rid not in inserted]
            if raced:
                existing.update({r["id"]: self._record(r)
                                 for r in cur.execute("SELECT * FROM records WHERE id = ANY(%s)", (raced,))})
            there = list(existing)
            their_links: dict[str, list[Link]] = {}
            their_blobs: dict[str, list[BlobRef]] = {}
            if there:
                for r in cur.execute("SELECT * FROM links WHERE record_id = ANY(%s)", (there,)):
                    their_links.setdefault(r["record_id"], []).append(self._link(r))
                for r in cur.execute("SELECT * FROM blob_refs WHERE record_id = ANY(%s)", (there,)):
                    their_blobs.setdefault(r["record_id"], []).append(self._blob_ref(r))
            outcomes = []
            for index, item in enumerate(items):
                rid = item.record.id
                if rid in existing:
                    outcomes.append(record_outcome(item, existing[rid], their_links.get(rid, []), their_blobs.get(rid, []),
                                                   where=self.uri))
                elif first[rid] == index:
                    outcomes.append(ImportOutcome.CREATED)
                else:  # the same record twice in one call: the second must agree with the first
                    earlier = items[first[rid]]
                    outcomes.append(record_outcome(item, earlier.record, earlier.links, earlier.blobs, where="this import"))
            return outcomes

        return self._write(work)

    def _check_inputs(self, cur: psycopg.Cursor[Row], items: Sequence[RecordImport], existing: dict[str, Record],
                      first: dict[str, int]) -> None:
        """Every link input of a record to write is in the store or written earlier in the same call."""
        outside = {l.input_id for i in first.values() for l in items[i].links} - existing.keys() - first.keys()
        found = set()
        if outside:
            found = {r["id"] for r in cur.execute("SELECT id FROM records WHERE id = ANY(%s)", (list(outside),))}
        for rid, index in first.items():
            for link in items[index].links:
                if link.input_id in existing or link.input_id in found or first.get(link.input_id, index) < index:
                    continue
                raise BadInputError(f"lineage input {link.input_id[:12]} of record {rid[:12]} is not in {self.uri}; "
                                    "import the records a record was made from before it")

    def import_versions(self, versions: Sequence[Version]) -> list[ImportOutcome]:
        if not versions:
            return []

        def work(cur: psycopg.Cursor[Row]) -> list[ImportOutcome]:
            names = sorted({(v.kind, v.name) for v in versions})
            for kind, name in names:  # the lock commit() takes to number a version; in one order: no deadlock
                self._lock_key(cur, "version", kind, name)
            rows = cur.execute(
                "SELECT v.* FROM versions v JOIN unnest(%s::text[], %s::text[]) AS k(kind, name) "
                "ON v.kind = k.kind AND v.name = k.name",
                ([k for k, _ in names], [n for _, n in names]),
            ).fetchall()
            by_number = {(r["kind"], r["name"], r["number"]): self._version(r) for r in rows}
            by_record = {(r["kind"], r["name"], r["record_id"]): self._version(r) for r in rows}
            outcomes, new = [], []
            for v in versions:
                outcome = version_outcome(v, by_number.get((v.kind, v.name, v.number)),
                                          by_record.get((v.kind, v.name, v.record_id)), where=self.uri)
                if outcome is None:
                    by_number[(v.kind, v.name, v.number)] = by_record[(v.kind, v.name, v.record_id)] = v
                    new.append(v)
                    outcome = ImportOutcome.CREATED
                outcomes.append(outcome)
            if new:
                wanted = list({v.record_id for v in new})
                found = {r["id"] for r in cur.execute("SELECT id FROM records WHERE id = ANY(%s)", (wanted,))}
                for v in new:
                    if v.record_id not in found:
                        raise BadInputError(f"{v.kind} {v.name}@v{v.number} is record {v.record_id[:12]}, which is not in "
                                            f"{self.uri}; import the records before their versions")
                cur.execute(
                    "INSERT INTO versions(kind, name, number, record_id, created_at) "
                    "SELECT * FROM unnest(%s::text[], %s::text[], %s::int[], %s::text[], %s::text[])",
                    [list(c) for c in zip(*((v.kind, v.name, v.number, v.record_id, v.created_at) for v in new))],
                )
            return outcomes

        return self._write(work)

    def import_alias_history(self, changes: Sequence[AliasChange]) -> list[ImportOutcome]:
        if not changes:
            return []
        groups = group_histories(changes)

        def work(cur: psycopg.Cursor[Row]) -> list[ImportOutcome]:
            for key in sorted(groups):  # the lock set_alias() takes; in one order: no deadlock
                self._lock_alias(cur, *key)
            outcomes = self._history_outcomes(cur, changes, groups)
            # Appended in the given order, which may interleave aliases: `alias NAME --history` lists them by it.
            new = [c for c, outcome in zip(changes, outcomes) if outcome is ImportOutcome.CREATED]
            if not new:
                return outcomes
            pointed = list({c.new_record_id for c in new if c.new_record_id is not None})
            found = {r["id"] for r in cur.execute("SELECT id FROM records WHERE id = ANY(%s)", (pointed,))}
            for change in new:
                if change.new_record_id is not None and change.new_record_id not in found:
                    raise BadInputError(f"a change of {change.name}@{change.alias} points at record "
                                        f"{change.new_record_id[:12]}, which is not in {self.uri}; import the records "
                                        "before the aliases")
            cur.executemany(
                "INSERT INTO alias_history(kind, name, alias, target, old_record_id, new_record_id, at, by, reason) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [(c.kind, c.name, c.alias, c.target, c.old_record_id, c.new_record_id, c.at, c.by, c.reason) for c in new],
            )
            for key, last in {alias_key(c): c for c in new}.items():
                self._point(cur, *key, last.new_record_id)
            return outcomes

        return self._write(work)

    def import_image_index(self, transform: str, images: Sequence[CachedImage]) -> list[ImportOutcome]:
        if not images:
            return []

        def work(cur: psycopg.Cursor[Row]) -> list[ImportOutcome]:
            digests = list(dict.fromkeys(i.content_sha256 for i in images))

            def read(wanted: list[str]) -> dict[str, CachedImage]:
                found: dict[str, CachedImage] = {}
                for start in range(0, len(wanted), _BATCH):
                    rows = cur.execute("SELECT * FROM image_index WHERE transform = %s AND content_sha256 = ANY(%s)",
                                       (transform, wanted[start : start + _BATCH]))
                    found.update({r["content_sha256"]: self._cached(r) for r in rows})
                return found

            existing = read(digests)
            first: dict[str, CachedImage] = {}
            for image in images:
                if image.content_sha256 not in existing:
                    first.setdefault(image.content_sha256, image)
            inserted: set[str] = set()
            if first:
                rows = [self._image_row(transform, i) for i in first.values()]
                inserted = {r["content_sha256"] for r in cur.execute(
                    "INSERT INTO image_index(transform, content_sha256, shard_sha256, row, width, height, phash, pixel_sha256) "
                    "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::int[], %s::int[], %s::int[], %s::bigint[], "
                    "%s::text[]) ON CONFLICT DO NOTHING RETURNING content_sha256",
                    [list(c) for c in zip(*rows)],
                )}
                existing.update(read([d for d in first if d not in inserted]))  # indexed by another writer meanwhile
            outcomes = []
            for image in images:
                digest = image.content_sha256
                if digest in inserted and first[digest] is image:
                    outcomes.append(ImportOutcome.CREATED)
                    continue
                # Indexed before (or by another writer meanwhile), or a repeat of an image written in this call.
                outcome = image_outcome(image, existing[digest] if digest in existing else first[digest])
                assert outcome is not None
                outcomes.append(outcome)
            return outcomes

        return self._write(work)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
