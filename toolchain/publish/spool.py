"""The on-unit spool: every message to publish, kept on disk until the broker acknowledged it.

One SQLite file (``spool.db``) in WAL mode with ``synchronous=FULL``. Why FULL: in WAL mode ``NORMAL`` already
survives a killed process (a committed transaction is in the WAL file, which the kernel keeps), but not a power
cut, and roadside units lose power without warning; ``FULL`` fsyncs the WAL at every commit, so a message
:meth:`Spool.append` returned a seq for is on the disk. The cost is one fsync per append (and one per batch of
acknowledgements), a few milliseconds on a Jetson's eMMC, against crossings a few per second at most,
intervals once a minute and per-frame messages rate limited to about 1 Hz.

Sequence numbers (``seq``) are per unit, strictly increasing and never reused, even after sent rows are deleted,
messages are evicted or the process restarts: the last seq issued is a row of the database, updated in the same
transaction as the insert. A corrupt database loses that row, so a side file ``<name>.seq`` holds a high-water
mark: before issuing a seq above it the spool raises it by :data:`SEQ_BLOCK` (temporary file, fsync, rename,
fsync of the folder), so every seq ever issued is at or below the mark on disk, at one extra write per
:data:`SEQ_BLOCK` appends. A fresh spool (after a corrupt one was moved aside) starts above the mark; consumers
see a gap, which is the truth: the corrupt file's unsent messages were not sent. Should the side file be gone
too, the fresh spool starts at the current time in milliseconds, above any seq a unit can have issued.

The bound: after each append, if the unsent bytes (topic + payload) exceed ``max_bytes``, the oldest per-event
messages (``crossing`` and ``frame``) are evicted first and ``interval`` messages are kept (they are the compact
totals a consumer can still reconcile with); intervals go, oldest first, only when no per-event message is left.
Messages older than ``max_age_s`` are evicted whatever their kind (at append and at :meth:`Spool.expire`). Every
eviction is counted by kind and reason, in the database (the counts survive restarts). A message that could not
be stored at all (disk full, I/O error) is counted as ``lost`` and the error is kept for ``/healthz``. The file
itself is larger than ``max_bytes`` by SQLite's page and index overhead (about 2x for small messages); deleted
rows' pages are reused, so it does not grow past its high-water size.

One process per spool: a lock file (``<name>.lock``, ``flock``) refuses a second one. Inside the process the
spool is thread-safe (one connection, one lock): the pipeline appends while the publisher thread reads and
deletes. Standard library only, Python 3.8 compatible.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from toolchain.errors import BadInputError
from toolchain.publish import messages
from toolchain.redaction import scrub

_log = logging.getLogger(__name__)

SEQ_BLOCK = 1000
"""How far ahead of the last issued seq the side file's high-water mark is raised at a time."""

SCHEMA_VERSION = 1
EVICTABLE_FIRST = ("crossing", "frame")
"""Kinds evicted first when the spool is over its byte bound; ``interval`` is kept as long as possible."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS message (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS message_kind_seq ON message (kind, seq);
CREATE INDEX IF NOT EXISTS message_created ON message (created);
CREATE TABLE IF NOT EXISTS counter (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class SpoolEntry:
    """One unsent message: what to publish where, and when it was made (unix seconds)."""

    seq: int
    kind: str
    topic: str
    payload: bytes
    created: float


@dataclass(frozen=True)
class SpoolStats:
    """The spool's state for ``/healthz``.

    Attributes:
        depth: Unsent messages.
        bytes: Their topic + payload bytes (what ``max_bytes`` bounds).
        oldest_unsent_age_s: Age of the oldest unsent message; None when there is none.
        evicted: Messages evicted, by kind (every kind listed, zeros included), since the spool file was made.
        evicted_by_reason: The same by reason (``bytes``, ``age``) then kind.
        lost: Messages that could not be stored (disk full, I/O error, damaged file).
        last_seq: The last seq issued (0 before the first).
        error: The current problem, "" when none: the last failed write, or a corrupt file moved aside at start.
    """

    depth: int
    bytes: int
    oldest_unsent_age_s: Optional[float]
    evicted: Dict[str, int]
    lost: int
    last_seq: int
    error: str
    evicted_by_reason: Dict[str, Dict[str, int]] = field(default_factory=dict)

    def as_dict(self) -> Dict[str, Any]:
        return {"depth": self.depth, "bytes": self.bytes, "oldest_unsent_age_s": self.oldest_unsent_age_s,
                "evicted": dict(self.evicted), "evicted_by_reason": {k: dict(v) for k, v in self.evicted_by_reason.items()},
                "lost": self.lost, "last_seq": self.last_seq, "error": self.error}


def _is_corruption(exc: BaseException) -> bool:
    """A damaged or foreign file (``sqlite3.DatabaseError`` that is not an operational error such as a lock)."""
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)


def _describe_write_error(path: Path, exc: BaseException) -> str:
    text = scrub(exc)
    lowered = text.lower()
    if "full" in lowered or getattr(exc, "errno", None) == 28:
        return (f"the spool {path} is full (the disk or the spool's size limit): a message could not be stored and "
                f"is lost ({text}); free space on the unit's disk")
    if _is_corruption(exc):
        return (f"the spool file {path} is damaged ({text}): messages cannot be stored; restart the service, which "
                "moves the file aside and starts a new spool")
    return f"could not write the spool {path} ({text}): a message is lost; check the unit's disk"


class Spool:
    """The durable store of unsent messages (see the module docstring for the guarantees).

    Args:
        path: The SQLite file; its folder is made. ``<path>.seq`` and ``<path>.lock`` go beside it.
        unit: The unit id (the ``unit`` of every message).
        max_bytes: Bound on unsent topic + payload bytes.
        max_age_s: Unsent messages older than this are evicted.
        clock: Wall clock (unix seconds) for ``time``, ages and the corrupt file's name.

    Raises:
        BadInputError: the spool is in use by another process, the file is a newer schema, or it cannot be
            opened (permissions, missing volume).
    """

    def __init__(self, path: Path, *, unit: str, max_bytes: int, max_age_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.unit = messages.check_unit(unit)
        if max_bytes <= 0 or max_age_s <= 0:
            raise BadInputError("the spool's max_bytes and max_age_s must be above 0")
        self.max_bytes = int(max_bytes)
        self.max_age_s = float(max_age_s)
        self._clock = clock
        self._lock = threading.RLock()
        self._conn: Optional[sqlite3.Connection] = None
        self._lock_handle: Optional[Any] = None
        self._open_error = ""
        self._write_error = ""
        self._lost_unsaved = 0  # lost while the database could not be written; added at the next commit
        self._last_seq = 0
        self._reserved = 0
        self._bytes = 0
        self._depth = 0
        self.seq_path = self.path.with_name(self.path.name + ".seq")
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._open()

    # ----------------------------------------------------------------------------------------------- opening

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInputError(f"cannot make the spool folder {self.path.parent} ({exc}): check the volume "
                                "is mounted and writable") from None
        self._take_process_lock()
        try:
            self._open_locked()
        except BaseException:
            self._release_process_lock()
            raise

    def _open_locked(self) -> None:
        for stale in self.seq_path.parent.glob(f".{self.seq_path.name}.*.tmp"):  # a write cut short by a kill
            try:
                stale.unlink()
            except OSError:
                pass
        reserved, seq_state = self._read_seq_file()
        existed = self.path.exists()
        # The seq a new database starts above: the side file's mark; the time in milliseconds when that file is
        # unreadable, or missing while an earlier database existed (nothing else then bounds what was issued).
        time_floor = int(self._clock() * 1000)
        try:
            conn = self._connect_checked()
        except sqlite3.OperationalError as exc:
            raise BadInputError(f"cannot open the spool {self.path} ({scrub(exc)}): check the volume is mounted "
                                "and writable") from None
        except (sqlite3.DatabaseError, _Corrupt) as exc:
            aside = self._move_aside()
            self._open_error = (f"spool file {self.path} was corrupt ({scrub(exc)}); moved aside to {aside}; "
                                "messages in it were not sent")
            _log.error("%s", self._open_error)
            try:
                conn = self._connect_checked()
            except sqlite3.Error as again:
                raise BadInputError(f"cannot make a new spool {self.path} ({scrub(again)})") from None
            self._set_counter(conn, "last_seq", reserved if seq_state == "ok" else time_floor)
        else:
            if self._counter(conn, "last_seq") is None:
                floor = {"ok": reserved, "missing": time_floor if existed else 0}.get(seq_state, time_floor)
                self._set_counter(conn, "last_seq", floor)
        self._conn = conn
        self._last_seq = int(self._counter(conn, "last_seq") or 0)
        self._reserved = reserved if seq_state == "ok" else 0  # below the next seq: the mark is rewritten first
        row = conn.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM message").fetchone()
        self._depth, self._bytes = int(row[0]), int(row[1])

    def _connect_checked(self) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.path), timeout=10.0, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL").fetchone()
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA journal_size_limit=4194304")  # truncate the WAL back to 4 MiB after checkpoints
            check = conn.execute("PRAGMA quick_check").fetchone()
            if not check or check[0] != "ok":
                raise _Corrupt(f"quick_check: {check[0] if check else 'no answer'}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if version > SCHEMA_VERSION:
                raise BadInputError(f"the spool {self.path} was made by a newer toolchain (schema {version}): "
                                    "upgrade, or move the file away to start a new spool")
            if version == 0 and tables - {"message", "counter"}:
                raise BadInputError(f"{self.path} is an SQLite file but not a toolchain spool: point the spool "
                                    "somewhere else or move the file away")
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            return conn
        except BaseException:
            conn.close()
            raise

    @staticmethod
    def _set_counter(conn: sqlite3.Connection, name: str, value: int) -> None:
        conn.execute("INSERT OR REPLACE INTO counter (name, value) VALUES (?, ?)", (name, int(value)))

    @staticmethod
    def _counter(conn: sqlite3.Connection, name: str) -> Optional[int]:
        row = conn.execute("SELECT value FROM counter WHERE name = ?", (name,)).fetchone()
        return None if row is None else int(row[0])

    def _move_aside(self) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self._clock()))
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        number = 1
        while aside.exists():
            number += 1
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{number}")
        for suffix in ("", "-wal", "-shm"):
            source = Path(str(self.path) + suffix)
            if source.exists():
                os.replace(source, Path(str(aside) + suffix))  # -wal/-shm beside it: the copy opens as it was
        return aside

    def _take_process_lock(self) -> None:
        import fcntl

        handle = open(self.lock_path, "a+")  # noqa: SIM115 - held for the spool's lifetime
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise BadInputError(f"the spool {self.path} is in use by another process (lock {self.lock_path}): "
                                "run one publisher per spool, or give this one another spool path") from None
        self._lock_handle = handle

    def _release_process_lock(self) -> None:
        if self._lock_handle is not None:
            self._lock_handle.close()  # closing the file releases the flock
            self._lock_handle = None

    # --------------------------------------------------------------------------------------- seq high-water

    def _read_seq_file(self) -> Tuple[int, str]:
        """``(high-water mark, state)``; state ``ok``, ``missing`` or ``bad`` (unreadable, not a number)."""
        try:
            text = self.seq_path.read_text().strip()
        except FileNotFoundError:
            return 0, "missing"
        except OSError as exc:
            _log.warning("cannot read the spool's seq file %s (%s)", self.seq_path, scrub(exc))
            return 0, "bad"
        try:
            return max(0, int(text)), "ok"
        except ValueError:
            _log.warning("the spool's seq file %s is not a number; ignoring it", self.seq_path)
            return 0, "bad"

    def _reserve(self, seq: int) -> None:
        """Make sure the high-water mark on disk is at least ``seq`` before ``seq`` is issued."""
        if seq <= self._reserved:
            return
        mark = seq + SEQ_BLOCK - 1
        tmp = self.seq_path.with_name(f".{self.seq_path.name}.{os.getpid()}.tmp")
        fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, f"{mark}\n".encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(str(tmp), str(self.seq_path))
        try:
            dir_fd = os.open(str(self.seq_path.parent), os.O_RDONLY)
        except OSError:
            dir_fd = -1
        if dir_fd >= 0:
            try:
                os.fsync(dir_fd)
            except OSError:
                pass
            finally:
                os.close(dir_fd)
        self._reserved = mark

    # --------------------------------------------------------------------------------------------- writing

    def append(self, kind: str, topic: str, body: Dict[str, Any]) -> Optional[int]:
        """Store a ``kind`` message for ``topic`` with ``body``; its seq, or None when it could not be stored.

        None means the message is lost: it is counted (``stats().lost``) and the error is kept
        (``stats().error``) until a later append succeeds. Evicts past the bound in the same transaction.

        Raises:
            BadInputError: an unknown kind or a body that cannot be a message (envelope keys, NaN...): a bug in
                the caller, not a storage problem.
        """
        messages.check_kind(kind)
        if not topic or any(ch in topic for ch in ("+", "#", "\x00")):
            raise BadInputError(f"cannot spool a message for topic {topic!r}: a topic may not be empty or contain "
                                "'+' or '#' (use toolchain.publish.messages.topic)")
        with self._lock:
            conn = self._require_open()
            seq = self._last_seq + 1
            now = self._clock()
            payload = messages.encode(messages.build(kind, unit=self.unit, seq=seq, time=now, body=body))
            size = len(payload) + len(topic.encode("utf-8"))
            self._last_seq = seq  # a failed append burns its seq: consumers see the gap a loss leaves
            try:
                self._reserve(seq)
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.execute("INSERT INTO message (seq, kind, topic, payload, created, size) VALUES (?, ?, ?, ?, ?, ?)",
                                 (seq, kind, topic, sqlite3.Binary(payload), now, size))
                    conn.execute("UPDATE counter SET value = ? WHERE name = 'last_seq'", (seq,))
                    if self._lost_unsaved:
                        self._bump(conn, "lost", self._lost_unsaved)
                    evicted = self._evict(conn, now, extra_bytes=size)
                    conn.execute("COMMIT")
                except BaseException:
                    self._rollback(conn)
                    raise
            except (sqlite3.Error, OSError) as exc:
                self._lost_unsaved += 1
                self._write_error = _describe_write_error(self.path, exc)
                _log.error("%s", self._write_error)
                return None
            self._lost_unsaved = 0
            self._write_error = ""
            self._depth += 1 - evicted[0]
            self._bytes += size - evicted[1]
            return seq

    def expire(self) -> int:
        """Evict messages older than ``max_age_s`` now (the publisher calls this while idle); how many went."""
        with self._lock:
            conn = self._require_open()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    count, size = self._evict_by_age(conn, self._clock())
                    conn.execute("COMMIT")
                except BaseException:
                    self._rollback(conn)
                    raise
            except sqlite3.Error as exc:
                _log.warning("could not expire old spool messages (%s)", scrub(exc))
                return 0
            self._depth -= count
            self._bytes -= size
            return count

    def _evict(self, conn: sqlite3.Connection, now: float, *, extra_bytes: int) -> Tuple[int, int]:
        """Evict by age, then by bytes (``extra_bytes`` just inserted, not yet in ``self._bytes``)."""
        count, size = self._evict_by_age(conn, now)
        over = self._bytes + extra_bytes - size - self.max_bytes
        for kinds in (EVICTABLE_FIRST, ("interval",)):
            if over <= 0:
                break
            more_count, more_size = self._evict_oldest(conn, kinds, over)
            count, size, over = count + more_count, size + more_size, over - more_size
        return count, size

    def _evict_by_age(self, conn: sqlite3.Connection, now: float) -> Tuple[int, int]:
        cutoff = now - self.max_age_s
        oldest = conn.execute("SELECT MIN(created) FROM message").fetchone()[0]  # one step down the created index
        if oldest is None or oldest >= cutoff:
            return 0, 0  # the usual case: nothing expired (the GROUP BY below scans every row: 56 ms at 115k rows)
        rows = conn.execute("SELECT kind, COUNT(*), COALESCE(SUM(size), 0) FROM message WHERE created < ? GROUP BY kind",
                            (cutoff,)).fetchall()
        if not rows:
            return 0, 0
        conn.execute("DELETE FROM message WHERE created < ?", (cutoff,))
        for kind, count, _ in rows:
            self._bump(conn, f"evicted/age/{kind}", int(count))
        return sum(int(r[1]) for r in rows), sum(int(r[2]) for r in rows)

    def _evict_oldest(self, conn: sqlite3.Connection, kinds: Iterable[str], need: int) -> Tuple[int, int]:
        kinds = tuple(kinds)
        marks = ",".join("?" for _ in kinds)
        chosen: List[Tuple[int, str, int]] = []
        freed, after = 0, 0
        while freed < need:
            rows = conn.execute(f"SELECT seq, kind, size FROM message WHERE kind IN ({marks}) AND seq > ? "
                                "ORDER BY seq LIMIT 512", (*kinds, after)).fetchall()
            if not rows:
                break
            for seq, kind, size in rows:
                chosen.append((int(seq), kind, int(size)))
                freed += int(size)
                after = int(seq)
                if freed >= need:
                    break
        if not chosen:
            return 0, 0
        conn.execute(f"DELETE FROM message WHERE kind IN ({marks}) AND seq <= ?", (*kinds, chosen[-1][0]))
        per_kind: Dict[str, int] = {}
        for _, kind, _ in chosen:
            per_kind[kind] = per_kind.get(kind, 0) + 1
        for kind, count in per_kind.items():
            self._bump(conn, f"evicted/bytes/{kind}", count)
        _log.warning("spool over %d bytes: evicted the oldest %s", self.max_bytes,
                     ", ".join(f"{n} {k}" for k, n in sorted(per_kind.items())))
        return len(chosen), freed

    @staticmethod
    def _bump(conn: sqlite3.Connection, name: str, by: int) -> None:
        # No upsert (SQLite 3.24+): JetPack 4's Ubuntu 18.04 has 3.22.
        conn.execute("INSERT OR IGNORE INTO counter (name, value) VALUES (?, 0)", (name,))
        conn.execute("UPDATE counter SET value = value + ? WHERE name = ?", (int(by), name))

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    # ------------------------------------------------------------------------------------ reading, sending

    def pending(self, limit: int, after_seq: int = 0) -> List[SpoolEntry]:
        """Up to ``limit`` unsent messages with seq above ``after_seq``, in seq order."""
        with self._lock:
            conn = self._require_open()
            rows = conn.execute("SELECT seq, kind, topic, payload, created FROM message WHERE seq > ? ORDER BY seq "
                                "LIMIT ?", (int(after_seq), int(limit))).fetchall()
        return [SpoolEntry(seq=int(r[0]), kind=r[1], topic=r[2], payload=bytes(r[3]), created=float(r[4]))
                for r in rows]

    def mark_sent(self, seq: int) -> None:
        """The broker acknowledged ``seq``: delete it (a seq already gone is fine)."""
        self.mark_sent_many([seq])

    def mark_sent_many(self, seqs: Iterable[int]) -> int:
        """:meth:`mark_sent` for many seqs in one transaction (one fsync); how many rows went."""
        seqs = sorted({int(s) for s in seqs})
        if not seqs:
            return 0
        with self._lock:
            conn = self._require_open()
            count, size = 0, 0
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for start in range(0, len(seqs), 500):
                        chunk = seqs[start:start + 500]
                        marks = ",".join("?" for _ in chunk)
                        row = conn.execute(f"SELECT COUNT(*), COALESCE(SUM(size), 0) FROM message WHERE seq IN ({marks})",
                                           chunk).fetchone()
                        conn.execute(f"DELETE FROM message WHERE seq IN ({marks})", chunk)
                        count, size = count + int(row[0]), size + int(row[1])
                    conn.execute("COMMIT")
                except BaseException:
                    self._rollback(conn)
                    raise
            except sqlite3.Error as exc:
                # The rows stay: they are sent again later (a duplicate, never a loss).
                _log.warning("could not mark %d sent messages in the spool (%s)", len(seqs), scrub(exc))
                return 0
            self._depth -= count
            self._bytes -= size
            return count

    def discard(self, seq: int, *, reason: str) -> bool:
        """Remove an unsent message that can never be sent, counted as evicted for ``reason``; whether it was there."""
        with self._lock:
            conn = self._require_open()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    row = conn.execute("SELECT kind, size FROM message WHERE seq = ?", (int(seq),)).fetchone()
                    if row is not None:
                        conn.execute("DELETE FROM message WHERE seq = ?", (int(seq),))
                        self._bump(conn, f"evicted/{reason}/{row[0]}", 1)
                    conn.execute("COMMIT")
                except BaseException:
                    self._rollback(conn)
                    raise
            except sqlite3.Error as exc:
                _log.warning("could not discard spool message %d (%s)", seq, scrub(exc))
                return False
            if row is None:
                return False
            self._depth -= 1
            self._bytes -= int(row[1])
            return True

    # ---------------------------------------------------------------------------------------------- state

    def stats(self) -> SpoolStats:
        """Depth, bytes, age of the oldest unsent message, evictions, losses, last seq and the current error."""
        with self._lock:
            conn = self._require_open()
            counters: Dict[str, int] = {}
            oldest = None
            try:
                counters = {name: int(value) for name, value in conn.execute("SELECT name, value FROM counter")}
                oldest = conn.execute("SELECT MIN(created) FROM message").fetchone()[0]
            except sqlite3.Error as exc:
                _log.warning("could not read the spool's counters (%s)", scrub(exc))
            evicted = {kind: 0 for kind in messages.KINDS}
            by_reason: Dict[str, Dict[str, int]] = {"bytes": {}, "age": {}}
            for name, value in counters.items():
                if name.startswith("evicted/"):
                    _, reason, kind = name.split("/", 2)
                    evicted[kind] = evicted.get(kind, 0) + value
                    by_reason.setdefault(reason, {})[kind] = value
            error = "; ".join(e for e in (self._write_error, self._open_error) if e)
            return SpoolStats(depth=self._depth, bytes=self._bytes,
                              oldest_unsent_age_s=None if oldest is None else max(0.0, self._clock() - float(oldest)),
                              evicted=evicted, lost=counters.get("lost", 0) + self._lost_unsaved,
                              last_seq=self._last_seq, error=error, evicted_by_reason=by_reason)

    @property
    def last_seq(self) -> int:
        return self._last_seq

    def _require_open(self) -> sqlite3.Connection:
        if self._conn is None:
            raise BadInputError(f"the spool {self.path} is closed")
        return self._conn

    def close(self) -> None:
        """Close the database and release the process lock (idempotent)."""
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                finally:
                    self._conn = None
            self._release_process_lock()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Spool({str(self.path)!r}, unit={self.unit!r})"


class _Corrupt(Exception):
    """The file opened but failed SQLite's integrity check."""
