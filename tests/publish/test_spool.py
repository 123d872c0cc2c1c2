"""The spool: seq never reused, order, durability under SIGKILL, the bound and its eviction policy, a corrupt
file, a full disk."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, List

import pytest

from toolchain.errors import BadInputError
from toolchain.publish import messages
from toolchain.publish.spool import SEQ_BLOCK, Spool

ROOT = Path(__file__).resolve().parents[2]
UNIT = "rsu-1"
CROSSING = messages.topic("traffic", UNIT, "crossing")
INTERVAL = messages.topic("traffic", UNIT, "interval")


class Clock:
    def __init__(self, now: float = 1_796_630_400.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _spool(path: Path, **kwargs: object) -> Spool:
    options: Dict[str, object] = {"unit": UNIT, "max_bytes": 1 << 20, "max_age_s": 86400.0}
    options.update(kwargs)
    return Spool(path, **options)  # type: ignore[arg-type]


def _crossing(i: int) -> dict:
    return {"camera": "north", "line": "stop", "direction": "in", "class": "car", "score": 0.9, "track": i}


def _interval(i: int) -> dict:
    return {"start": 60.0 * i, "end": 60.0 * (i + 1), "counts": [
        {"camera": "north", "line": "stop", "direction": d, "class": c, "count": i}
        for d in ("in", "out") for c in ("car", "truck")]}


def test_seq_is_monotonic_across_reopen_and_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with _spool(path) as spool:
        assert [spool.append("crossing", CROSSING, _crossing(i)) for i in range(3)] == [1, 2, 3]
    with _spool(path) as spool:
        assert spool.append("crossing", CROSSING, _crossing(3)) == 4
        spool.mark_sent_many([1, 2, 3, 4])
        assert spool.stats().depth == 0
    with _spool(path) as spool:  # every row sent and deleted: the seq still goes on
        assert spool.append("interval", INTERVAL, _interval(0)) == 5
        assert spool.stats().last_seq == 5
        payload = messages.decode(spool.pending(10)[0].payload)
        assert (payload["unit"], payload["seq"], payload["kind"]) == (UNIT, 5, "interval")


def test_pending_is_in_seq_order_and_mark_sent_removes(tmp_path: Path) -> None:
    with _spool(tmp_path / "spool.db") as spool:
        for i in range(10):
            spool.append("interval" if i % 4 == 0 else "crossing", INTERVAL if i % 4 == 0 else CROSSING,
                         _interval(i) if i % 4 == 0 else _crossing(i))
        assert [e.seq for e in spool.pending(4)] == [1, 2, 3, 4]
        assert [e.seq for e in spool.pending(3, after_seq=4)] == [5, 6, 7]
        entry = spool.pending(1)[0]
        assert entry.kind == "interval" and entry.topic == INTERVAL and isinstance(entry.payload, bytes)
        before = spool.stats()
        second = spool.pending(1, after_seq=1)[0]
        spool.mark_sent(2)
        spool.mark_sent(2)  # twice (a resend's PUBACK): fine
        spool.mark_sent(999)
        after = spool.stats()
        assert after.depth == before.depth - 1 == 9
        assert after.bytes == before.bytes - len(CROSSING) - len(second.payload)
        assert [e.seq for e in spool.pending(3)] == [1, 3, 4]
        assert spool.stats().bytes == sum(len(e.payload) + len(e.topic) for e in spool.pending(100))


def test_a_second_process_on_the_same_spool_is_refused(tmp_path: Path) -> None:
    with _spool(tmp_path / "spool.db"):
        with pytest.raises(BadInputError, match="in use by another process"):
            _spool(tmp_path / "spool.db")
    _spool(tmp_path / "spool.db").close()  # released on close


CHILD = """
import sys, time
from pathlib import Path
from toolchain.publish.spool import Spool
spool = Spool(Path(sys.argv[1]), unit="rsu-1", max_bytes=1 << 24, max_age_s=86400)
mode = sys.argv[2]
count = 0
while True:
    seq = spool.append("crossing", "traffic/rsu-1/crossing", {"camera": "north", "track": count})
    count += 1
    print(seq, flush=True)
    if mode == "fifty" and count == 50:
        print("done", flush=True)
        time.sleep(60)
"""


def _run_child(path: Path, mode: str, lines: int) -> List[int]:
    """Append in a child process, SIGKILL it after ``lines`` appends returned; the seqs it reported."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), mode], stdout=subprocess.PIPE, text=True,
                             cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    reported: List[int] = []
    try:
        assert child.stdout is not None
        while len(reported) < lines:
            line = child.stdout.readline()
            if line.strip() == "done" or not line:
                break
            reported.append(int(line))
        os.kill(child.pid, signal.SIGKILL)  # no chance to close, commit or checkpoint anything
    finally:
        child.kill()
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    return reported


def test_an_appended_message_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    reported = _run_child(path, "fifty", 1000)  # killed right after its 50 appends returned
    assert reported == list(range(1, 51))
    reported += _run_child(path, "loop", 300)  # killed while it keeps appending
    assert len(reported) >= 350
    with _spool(path) as spool:
        stored = [e.seq for e in spool.pending(100000)]
        assert set(reported) <= set(stored), sorted(set(reported) - set(stored))[:10]
        assert stored == list(range(1, len(stored) + 1))  # no gap, no duplicate
        assert spool.append("crossing", CROSSING, _crossing(0)) == len(stored) + 1
        assert spool.stats().lost == 0 and spool.stats().error == ""


def test_over_the_bound_the_oldest_crossings_go_first_and_intervals_stay(tmp_path: Path) -> None:
    sizes: Dict[int, int] = {}
    kinds: Dict[int, str] = {}
    with _spool(tmp_path / "spool.db", max_bytes=6000) as spool:
        for i in range(120):
            kind = "interval" if i % 10 == 0 else "crossing"
            seq = spool.append(kind, INTERVAL if kind == "interval" else CROSSING,
                               _interval(i) if kind == "interval" else _crossing(i))
            assert seq is not None
            kinds[seq] = kind
            stats = spool.stats()
            assert stats.bytes <= 6000
        entries = spool.pending(1000)
        for entry in entries:
            sizes[entry.seq] = len(entry.payload) + len(entry.topic)
        kept = {e.seq for e in entries}
        missing = set(kinds) - kept
        stats = spool.stats()
        assert all(kinds[s] == "crossing" for s in missing)
        assert {s for s in kinds if kinds[s] == "interval"} <= kept  # every interval kept
        crossings = sorted(s for s in kinds if kinds[s] == "crossing")
        assert sorted(missing) == crossings[:len(missing)]  # exactly the oldest crossings
        assert stats.evicted == {"crossing": len(missing), "interval": 0, "frame": 0}
        assert stats.evicted_by_reason["bytes"] == {"crossing": len(missing)}
        assert stats.depth == len(kept) and stats.bytes == sum(sizes.values())

        # Only intervals left over the bound: then the oldest intervals go.
        spool.mark_sent_many(s for s in kept if kinds[s] == "crossing")
        for i in range(40):
            spool.append("interval", INTERVAL, _interval(i))
        stats = spool.stats()
        assert stats.evicted["interval"] > 0 and stats.bytes <= 6000
        seqs = [e.seq for e in spool.pending(1000)]
        assert seqs == sorted(seqs) and seqs[-1] == stats.last_seq  # the newest kept, the oldest gone
    with _spool(tmp_path / "spool.db", max_bytes=6000) as spool:  # the counts are in the file
        assert spool.stats().evicted == stats.evicted


def test_messages_past_max_age_are_evicted_whatever_their_kind(tmp_path: Path) -> None:
    clock = Clock()
    with _spool(tmp_path / "spool.db", max_age_s=3600.0, clock=clock) as spool:
        spool.append("crossing", CROSSING, _crossing(0))
        spool.append("interval", INTERVAL, _interval(0))
        clock.now += 1800
        spool.append("crossing", CROSSING, _crossing(1))
        assert spool.stats().oldest_unsent_age_s == 1800.0
        clock.now += 1801  # the first two are now older than an hour
        spool.append("frame", messages.topic("traffic", UNIT, "frame"), {"frame": 1})
        assert [e.seq for e in spool.pending(10)] == [3, 4]
        stats = spool.stats()
        assert stats.evicted == {"crossing": 1, "interval": 1, "frame": 0}
        assert stats.evicted_by_reason["age"] == {"crossing": 1, "interval": 1}
        clock.now += 3601
        assert spool.expire() == 2  # without an append (the idle publisher calls it)
        assert spool.stats().depth == 0 and spool.stats().oldest_unsent_age_s is None
        assert spool.stats().evicted == {"crossing": 2, "interval": 1, "frame": 1}


def test_a_corrupt_spool_is_moved_aside_and_seq_continues_above(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with _spool(path) as spool:
        for i in range(5):
            spool.append("crossing", CROSSING, _crossing(i))
    garbage = b"this is not an SQLite database " * 200
    path.write_bytes(garbage)
    with _spool(path) as spool:
        error = spool.stats().error
        assert f"spool file {path} was corrupt" in error and "messages in it were not sent" in error
        [aside] = [p for p in tmp_path.iterdir() if p.name.startswith("spool.db.corrupt-") and not p.name.endswith(("-wal", "-shm"))]
        assert f"moved aside to {aside}" in error
        assert aside.read_bytes() == garbage  # kept for forensics
        seq = spool.append("crossing", CROSSING, _crossing(5))
        assert seq is not None and seq == SEQ_BLOCK + 1  # above the high-water mark the old file reserved
        assert spool.stats().depth == 1 and spool.stats().error == error  # the start's error stays for /healthz
    # Corrupt again, and the side file gone too: the seq jumps to the time in milliseconds, still above.
    path.write_bytes(garbage)
    (tmp_path / "spool.db.seq").unlink()
    with _spool(path, clock=Clock(1_796_630_400.0)) as spool:
        assert spool.append("crossing", CROSSING, _crossing(6)) == 1_796_630_400_000 + 1
    with _spool(path) as spool:  # a clean reopen keeps no error
        assert spool.stats().error == ""


def test_a_full_disk_loses_the_message_counted_and_recovers(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    big = {"camera": "north", "blob": "x" * 3000}
    with _spool(path, max_bytes=1 << 24) as spool:
        spool.append("crossing", CROSSING, big)
        conn: sqlite3.Connection = spool._conn  # type: ignore[assignment]  # the test's way to fill the "disk"
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages + 6}")
        results = [spool.append("crossing", CROSSING, big) for _ in range(12)]
        assert None in results
        stored = [s for s in results if s is not None]
        lost = results.count(None)
        stats = spool.stats()
        assert stats.lost == lost and "is full" in stats.error and "free space" in stats.error
        assert [e.seq for e in spool.pending(100)] == [1, *stored]
        spool.mark_sent_many([1, *stored])  # the publisher sent them: their pages are free again
        seq = spool.append("crossing", CROSSING, big)
        assert seq is not None and seq == 13 + 1  # the lost messages' seqs are burned: a gap shows the loss
        assert spool.stats().error == "" and spool.stats().lost == lost
    with _spool(path) as spool:
        assert spool.stats().lost == lost  # saved with the next successful append


def test_threads_append_and_mark_sent_at_once(tmp_path: Path) -> None:
    with _spool(tmp_path / "spool.db") as spool:
        got: List[int] = []
        lock = threading.Lock()

        def writer() -> None:
            for i in range(100):
                seq = spool.append("crossing", CROSSING, _crossing(i))
                assert seq is not None
                with lock:
                    got.append(seq)

        def sender() -> None:
            for _ in range(50):
                spool.mark_sent_many(e.seq for e in spool.pending(10))

        threads = [threading.Thread(target=writer) for _ in range(3)] + [threading.Thread(target=sender)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(got) == list(range(1, 301))
        assert spool.stats().depth == len(spool.pending(1000))
        assert spool.stats().bytes == sum(len(e.payload) + len(e.topic) for e in spool.pending(1000))


def test_invalid_messages_are_refused_before_a_seq_is_used(tmp_path: Path) -> None:
    with _spool(tmp_path / "spool.db") as spool:
        with pytest.raises(BadInputError):
            spool.append("crossing", "traffic/+/crossing", _crossing(0))
        with pytest.raises(BadInputError):
            spool.append("crossing", CROSSING, {"seq": 1})
        assert spool.append("crossing", CROSSING, _crossing(0)) == 1
