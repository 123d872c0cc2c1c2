"""SQLite registry store: the embedded default (WAL journal, busy timeout, immediate transactions).

Several processes may write at once: every write is one ``BEGIN IMMEDIATE`` transaction, so version
numbers are assigned without races and a crash mid-write leaves nothing half-done. The schema is
created and migrated by :mod:`toolchain.registry.sqlite_schema` when the store is opened. The reads and the
alias writes are the PostgreSQL store's, written once in :mod:`toolchain.registry.sql_store`.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from toolchain import __version__
from toolchain.errors import BadInputError, UsageError
from toolchain.hashing import canonical_json, digest_json
from toolchain.registry import sqlite_schema
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
from toolchain.registry.schema import SCHEMA_VERSION
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

__all__ = ["SCHEMA_VERSION", "SqliteStore", "current_user"]  # current_user: where stages imported it from

class SqliteStore(SqlRegistryStore):
    """Registry in one SQLite file.

    Args:
        path: Database file (created with its schema when missing), or ``:memory:``.
        busy_timeout_ms: How long a writer waits for another process's lock.
    """

    def __init__(self, path: Path | str, *, busy_timeout_ms: int = 60_000) -> None:
        self.path = str(path)
        self.uri = f"sqlite:///{self.path}"
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, isolation_level=None, timeout=busy_timeout_ms / 1000, check_same_thread=False)
        try:
            self._open(busy_timeout_ms)
        except BaseException:
            self._conn.close()
            raise

    def _open(self, busy_timeout_ms: int) -> None:
        self._conn.row_factory = sqlite3.Row
        self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        try:
            # Read before anything is written: another application's database, or one from a newer
            # toolchain, is refused untouched (even the journal mode below changes the file).
            sqlite_schema.check(self._conn, self.path)
        except sqlite3.DatabaseError as exc:
            if "not a database" not in str(exc):
                raise
            raise BadInputError(
                f"{self.path} is not an SQLite database ({exc}); nothing was written. Point --registry (or "
                "TOOLCHAIN_REGISTRY) at the registry's registry.db, or at a path where a new one may be created"
            ) from exc
        if self.path != ":memory:":
            self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.execute("PRAGMA foreign_keys = ON")
        with self._lock:
            sqlite_schema.migrate(self._conn, self.path)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                # Also when COMMIT itself failed (disk full, I/O error, a deferred constraint): otherwise the
                # connection stays inside the transaction and every later write fails.
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one ``BEGIN IMMEDIATE`` transaction (no other writer until it ends)."""
        with self._transaction() as db:
            return work(db)

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    # -- records -------------------------------------------------------------------------------
    def commit(self, new: NewRecord) -> tuple[Record, Version | None, bool]:
        if new.kind not in RECORD_KINDS:
            raise UsageError(f"unknown record kind '{new.kind}'; expected one of {', '.join(RECORD_KINDS)}")
        body_text = canonical_json(new.body)
        record_id = new.id or digest_json({"kind": new.kind, "body": new.body})
        with self._transaction() as db:
            existing = db.execute("SELECT * FROM records WHERE id = ?", (record_id,)).fetchone()
            created = existing is None
            if created:
                for input_id, _ in new.links:
                    if db.execute("SELECT 1 FROM records WHERE id = ?", (input_id,)).fetchone() is None:
                        raise BadInputError(f"lineage input {input_id[:12]} is not in the registry")
                db.execute(
                    "INSERT INTO records(id, kind, name, body, created_at, created_by, toolchain_version) VALUES (?,?,?,?,?,?,?)",
                    (record_id, new.kind, new.name, body_text, now(), current_user(), __version__),
                )
                db.executemany(
                    "INSERT OR IGNORE INTO links(record_id, input_id, role) VALUES (?,?,?)",
                    [(record_id, input_id, role) for input_id, role in new.links],
                )
                db.executemany(
                    "INSERT OR IGNORE INTO blob_refs(record_id, sha256, role) VALUES (?,?,?)",
                    [(record_id, sha, role) for sha, role in new.blobs],
                )
            elif existing["kind"] != new.kind:
                raise BadInputError(f"record {record_id[:12]} already exists as a {existing['kind']}, not a {new.kind}")
            version = None
            if new.version:
                row = db.execute(
                    "SELECT * FROM versions WHERE kind = ? AND name = ? AND record_id = ?", (new.kind, new.name, record_id)
                ).fetchone()
                if row is None:
                    number = db.execute(
                        "SELECT COALESCE(MAX(number), 0) + 1 FROM versions WHERE kind = ? AND name = ?", (new.kind, new.name)
                    ).fetchone()[0]
                    db.execute(
                        "INSERT INTO versions(kind, name, number, record_id, created_at) VALUES (?,?,?,?,?)",
                        (new.kind, new.name, number, record_id, now()),
                    )
                    row = db.execute(
                        "SELECT * FROM versions WHERE kind = ? AND name = ? AND number = ?", (new.kind, new.name, number)
                    ).fetchone()
                version = self._version(row)
            record = self._record(db.execute("SELECT * FROM records WHERE id = ?", (record_id,)).fetchone())
        return record, version, created

    # -- decoded-image index -------------------------------------------------------------------
    def add_cached_images(self, transform: str, images: Sequence[CachedImage]) -> None:
        with self._transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO image_index(transform, content_sha256, shard_sha256, row, width, height, phash, pixel_sha256) "
                "VALUES (?,?,?,?,?,?,?,?)",
                [self._image_row(transform, i) for i in images],
            )

    # -- importing another store's rows ----------------------------------------------------------
    def import_records(self, items: Sequence[RecordImport]) -> list[ImportOutcome]:
        with self._transaction() as db:
            return [self._import_record(db, item) for item in items]

    def _import_record(self, db: sqlite3.Connection, item: RecordImport) -> ImportOutcome:
        record = item.record
        row = db.execute("SELECT * FROM records WHERE id = ?", (record.id,)).fetchone()
        if row is not None:
            return record_outcome(item, self._record(row), self._links(db, record.id), self._blob_refs(db, record.id),
                                  where=self.uri)
        for input_id in dict.fromkeys(link.input_id for link in item.links):
            if db.execute("SELECT 1 FROM records WHERE id = ?", (input_id,)).fetchone() is None:
                raise BadInputError(f"lineage input {input_id[:12]} of record {record.id[:12]} is not in {self.uri}; "
                                    "import the records a record was made from before it")
        db.execute(
            "INSERT INTO records(id, kind, name, body, created_at, created_by, toolchain_version) VALUES (?,?,?,?,?,?,?)",
            (record.id, record.kind, record.name, canonical_json(record.body), record.created_at, record.created_by,
             record.toolchain_version),
        )
        db.executemany("INSERT OR IGNORE INTO links(record_id, input_id, role) VALUES (?,?,?)",
                       [(record.id, link.input_id, link.role) for link in item.links])
        db.executemany("INSERT OR IGNORE INTO blob_refs(record_id, sha256, role) VALUES (?,?,?)",
                       [(record.id, ref.sha256, ref.role) for ref in item.blobs])
        return ImportOutcome.CREATED

    def _links(self, db: sqlite3.Connection, record_id: str) -> list[Link]:
        return [self._link(r) for r in db.execute("SELECT * FROM links WHERE record_id = ?", (record_id,))]

    def _blob_refs(self, db: sqlite3.Connection, record_id: str) -> list[BlobRef]:
        return [self._blob_ref(r) for r in db.execute("SELECT * FROM blob_refs WHERE record_id = ?", (record_id,))]

    def import_versions(self, versions: Sequence[Version]) -> list[ImportOutcome]:
        outcomes = []
        with self._transaction() as db:
            for v in versions:
                by_number = db.execute("SELECT * FROM versions WHERE kind = ? AND name = ? AND number = ?",
                                       (v.kind, v.name, v.number)).fetchone()
                by_record = db.execute("SELECT * FROM versions WHERE kind = ? AND name = ? AND record_id = ?",
                                       (v.kind, v.name, v.record_id)).fetchone()
                outcome = version_outcome(v, by_number and self._version(by_number), by_record and self._version(by_record),
                                          where=self.uri)
                if outcome is None:
                    if db.execute("SELECT 1 FROM records WHERE id = ?", (v.record_id,)).fetchone() is None:
                        raise BadInputError(f"{v.kind} {v.name}@v{v.number} is record {v.record_id[:12]}, which is not in "
                                            f"{self.uri}; import the records before their versions")
                    db.execute("INSERT INTO versions(kind, name, number, record_id, created_at) VALUES (?,?,?,?,?)",
                               (v.kind, v.name, v.number, v.record_id, v.created_at))
                    outcome = ImportOutcome.CREATED
                outcomes.append(outcome)
        return outcomes

    def import_alias_history(self, changes: Sequence[AliasChange]) -> list[ImportOutcome]:
        with self._transaction() as db:
            outcomes = self._history_outcomes(db, changes, group_histories(changes))
            # Appended in the given order, which may interleave aliases: `alias NAME --history` lists them by it.
            new = [c for c, outcome in zip(changes, outcomes) if outcome is ImportOutcome.CREATED]
            for change in new:
                if change.new_record_id is not None and db.execute(
                        "SELECT 1 FROM records WHERE id = ?", (change.new_record_id,)).fetchone() is None:
                    raise BadInputError(f"a change of {change.name}@{change.alias} points at record "
                                        f"{change.new_record_id[:12]}, which is not in {self.uri}; import the records "
                                        "before the aliases")
                db.execute(
                    "INSERT INTO alias_history(kind, name, alias, target, old_record_id, new_record_id, at, by, reason) "
                    "VALUES (?,?,?,?,?,?,?,?,?)",
                    (change.kind, change.name, change.alias, change.target, change.old_record_id, change.new_record_id,
                     change.at, change.by, change.reason),
                )
            for key, last in {alias_key(c): c for c in new}.items():
                self._point(db, *key, last.new_record_id)
        return outcomes

    def import_image_index(self, transform: str, images: Sequence[CachedImage]) -> list[ImportOutcome]:
        outcomes = []
        with self._transaction() as db:
            for image in images:
                row = db.execute("SELECT * FROM image_index WHERE transform = ? AND content_sha256 = ?",
                                 (transform, image.content_sha256)).fetchone()
                outcome = image_outcome(image, row and self._cached(row))
                if outcome is None:
                    db.execute(
                        "INSERT INTO image_index(transform, content_sha256, shard_sha256, row, width, height, phash, "
                        "pixel_sha256) VALUES (?,?,?,?,?,?,?,?)",
                        self._image_row(transform, image),
                    )
                    outcome = ImportOutcome.CREATED
                outcomes.append(outcome)
        return outcomes

    def close(self) -> None:
        with self._lock:
            self._conn.close()
