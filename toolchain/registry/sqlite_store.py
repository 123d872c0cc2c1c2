"""SQLite registry store: the embedded default (WAL journal, busy timeout, immediate transactions).

Several processes may write at once: every write is one ``BEGIN IMMEDIATE`` transaction, so version
numbers are assigned without races and a crash mid-write leaves nothing half-done. The schema is
created and migrated by :mod:`toolchain.registry.sqlite_schema` when the store is opened.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from toolchain import __version__
from toolchain.errors import BadInputError, UsageError
from toolchain.hashing import canonical_json, digest_json
from toolchain.registry import sqlite_schema
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
from toolchain.registry.schema import SCHEMA_VERSION, VERSION_TABLE
from toolchain.registry.stamps import current_user, now, to_signed64, to_unsigned64
from toolchain.registry.store import (
    ImportOutcome,
    RecordImport,
    RegistryStore,
    alias_key,
    group_histories,
    history_to_append,
    image_outcome,
    record_outcome,
    version_outcome,
)

__all__ = ["SCHEMA_VERSION", "SqliteStore", "current_user"]  # current_user: where stages imported it from

class SqliteStore(RegistryStore):
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

    def schema_version(self) -> int:
        return int(self._query(f"SELECT COALESCE(MAX(version), 0) FROM {VERSION_TABLE}")[0][0])

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

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    # -- records -------------------------------------------------------------------------------
    @staticmethod
    def _record(row: sqlite3.Row) -> Record:
        return Record(
            id=row["id"],
            kind=row["kind"],
            name=row["name"],
            body=json.loads(row["body"]),
            created_at=row["created_at"],
            created_by=row["created_by"],
            toolchain_version=row["toolchain_version"],
        )

    @staticmethod
    def _version(row: sqlite3.Row) -> Version:
        return Version(kind=row["kind"], name=row["name"], number=row["number"], record_id=row["record_id"], created_at=row["created_at"])

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
            params.extend([id_prefix, id_prefix + "g"])  # hex digits sort below 'g'
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        return [self._record(r) for r in self._query(f"SELECT * FROM records {where} ORDER BY created_at, id", params)]

    def links_from(self, record_id: str) -> list[Link]:
        rows = self._query("SELECT * FROM links WHERE record_id = ? ORDER BY role, input_id", (record_id,))
        return [Link(record_id=r["record_id"], input_id=r["input_id"], role=r["role"]) for r in rows]

    def links_to(self, input_id: str) -> list[Link]:
        rows = self._query("SELECT * FROM links WHERE input_id = ? ORDER BY role, record_id", (input_id,))
        return [Link(record_id=r["record_id"], input_id=r["input_id"], role=r["role"]) for r in rows]

    def blob_refs(self, record_id: str | None = None) -> list[BlobRef]:
        if record_id is None:
            rows = self._query("SELECT * FROM blob_refs ORDER BY record_id, role, sha256")
        else:
            rows = self._query("SELECT * FROM blob_refs WHERE record_id = ? ORDER BY role, sha256", (record_id,))
        return [BlobRef(record_id=r["record_id"], sha256=r["sha256"], role=r["role"]) for r in rows]

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
        with self._transaction() as db:
            row = db.execute(
                "SELECT record_id FROM aliases WHERE kind = ? AND name = ? AND alias = ? AND target = ?",
                (kind, name, alias, target),
            ).fetchone()
            old = row["record_id"] if row else None
            if record_id is not None and db.execute("SELECT 1 FROM records WHERE id = ?", (record_id,)).fetchone() is None:
                raise BadInputError(f"cannot point alias '{alias}' at {record_id[:12]}: no such record")
            self._point(db, kind, name, alias, target, record_id)
            db.execute(
                "INSERT INTO alias_history(kind, name, alias, target, old_record_id, new_record_id, at, by, reason) "
                "VALUES (?,?,?,?,?,?,?,?,?)",
                (kind, name, alias, target, old, record_id, at, by, reason),
            )
        return AliasChange(
            kind=kind, name=name, alias=alias, target=target, old_record_id=old, new_record_id=record_id, at=at, by=by, reason=reason
        )

    def get_alias(self, *, kind: str, name: str, alias: str, target: str = "") -> str | None:
        rows = self._query(
            "SELECT record_id FROM aliases WHERE kind = ? AND name = ? AND alias = ? AND target = ?", (kind, name, alias, target)
        )
        return rows[0]["record_id"] if rows else None

    def aliases(self, *, kind: str | None = None, name: str | None = None, record_id: str | None = None) -> list[Alias]:
        clauses, params = [], []
        for column, value in (("kind", kind), ("name", name), ("record_id", record_id)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._query(f"SELECT * FROM aliases {where} ORDER BY kind, name, alias, target", params)
        return [Alias(kind=r["kind"], name=r["name"], alias=r["alias"], target=r["target"], record_id=r["record_id"]) for r in rows]

    def alias_history(self, *, kind: str | None = None, name: str | None = None, alias: str | None = None) -> list[AliasChange]:
        clauses, params = [], []
        for column, value in (("kind", kind), ("name", name), ("alias", alias)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        return [self._change(r) for r in self._query(f"SELECT * FROM alias_history {where} ORDER BY seq", params)]

    @staticmethod
    def _change(row: sqlite3.Row) -> AliasChange:
        return AliasChange(
            kind=row["kind"], name=row["name"], alias=row["alias"], target=row["target"],
            old_record_id=row["old_record_id"], new_record_id=row["new_record_id"], at=row["at"], by=row["by"],
            reason=row["reason"],
        )

    # -- decoded-image index -------------------------------------------------------------------
    @staticmethod
    def _cached(row: sqlite3.Row) -> CachedImage:
        return CachedImage(
            content_sha256=row["content_sha256"], shard_sha256=row["shard_sha256"], row=row["row"], width=row["width"],
            height=row["height"], phash=to_unsigned64(row["phash"]), pixel_sha256=row["pixel_sha256"],
        )

    def cached_images(self, transform: str, content_sha256s: Iterable[str] | None = None) -> dict[str, CachedImage]:
        if content_sha256s is None:
            rows = self._query("SELECT * FROM image_index WHERE transform = ?", (transform,))
            return {r["content_sha256"]: self._cached(r) for r in rows}
        wanted = list(dict.fromkeys(content_sha256s))
        found: dict[str, CachedImage] = {}
        for start in range(0, len(wanted), 500):
            batch = wanted[start : start + 500]
            marks = ",".join("?" * len(batch))
            rows = self._query(
                f"SELECT * FROM image_index WHERE transform = ? AND content_sha256 IN ({marks})", [transform, *batch]
            )
            found.update({r["content_sha256"]: self._cached(r) for r in rows})
        return found

    def add_cached_images(self, transform: str, images: Sequence[CachedImage]) -> None:
        with self._transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO image_index(transform, content_sha256, shard_sha256, row, width, height, phash, pixel_sha256) "
                "VALUES (?,?,?,?,?,?,?,?)",
                [
                    (transform, i.content_sha256, i.shard_sha256, i.row, i.width, i.height, to_signed64(i.phash), i.pixel_sha256)
                    for i in images
                ],
            )

    def indexed_shards(self) -> set[str]:
        return {r["shard_sha256"] for r in self._query("SELECT DISTINCT shard_sha256 FROM image_index")}

    def image_index_transforms(self) -> list[str]:
        return [r["transform"] for r in self._query("SELECT DISTINCT transform FROM image_index ORDER BY transform")]

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

    @staticmethod
    def _links(db: sqlite3.Connection, record_id: str) -> list[Link]:
        rows = db.execute("SELECT * FROM links WHERE record_id = ?", (record_id,)).fetchall()
        return [Link(record_id=r["record_id"], input_id=r["input_id"], role=r["role"]) for r in rows]

    @staticmethod
    def _blob_refs(db: sqlite3.Connection, record_id: str) -> list[BlobRef]:
        rows = db.execute("SELECT * FROM blob_refs WHERE record_id = ?", (record_id,)).fetchall()
        return [BlobRef(record_id=r["record_id"], sha256=r["sha256"], role=r["role"]) for r in rows]

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
        outcomes = [ImportOutcome.IDENTICAL] * len(changes)
        with self._transaction() as db:
            for (kind, name, alias, target), positions in group_histories(changes).items():
                rows = db.execute(
                    "SELECT * FROM alias_history WHERE kind = ? AND name = ? AND alias = ? AND target = ? ORDER BY seq",
                    (kind, name, alias, target),
                ).fetchall()
                missing = history_to_append([changes[i] for i in positions], [self._change(r) for r in rows], where=self.uri)
                for i in positions[len(positions) - len(missing):]:
                    outcomes[i] = ImportOutcome.CREATED
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

    @staticmethod
    def _point(db: sqlite3.Connection, kind: str, name: str, alias: str, target: str, record_id: str | None) -> None:
        """Point an alias at ``record_id`` (None: remove it), as its newest history entry says."""
        if record_id is None:
            db.execute("DELETE FROM aliases WHERE kind = ? AND name = ? AND alias = ? AND target = ?",
                       (kind, name, alias, target))
        else:
            db.execute(
                "INSERT INTO aliases(kind, name, alias, target, record_id) VALUES (?,?,?,?,?) "
                "ON CONFLICT(kind, name, alias, target) DO UPDATE SET record_id = excluded.record_id",
                (kind, name, alias, target, record_id),
            )

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
                        (transform, image.content_sha256, image.shard_sha256, image.row, image.width, image.height,
                         to_signed64(image.phash), image.pixel_sha256),
                    )
                    outcome = ImportOutcome.CREATED
                outcomes.append(outcome)
        return outcomes

    def close(self) -> None:
        with self._lock:
            self._conn.close()
