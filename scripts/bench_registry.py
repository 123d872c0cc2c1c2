"""Registry operations per second on SQLite and on PostgreSQL, one writer and N concurrent writer processes.

Three operations, each timed on its own for ``--seconds`` (every process starts it at the same moment,
behind a barrier, and repeats it until the time is up; the rate is all processes' operations over the
time from that moment until the last one finished its last operation):

* **record write**: ``RegistryStore.commit`` of a model record with one lineage link and one blob ref,
  as the next version of one shared name (versions are allocated under a lock: the contended case);
* **alias move**: ``RegistryStore.set_alias`` of one shared alias (``bench@production``) to another
  version, appending to its history (also serialised: each move starts where the previous one left it);
* **resolve**: ``Workspace.resolve("bench@production")``, what every command does with a reference
  (alias, record, version: three reads).

SQLite is the embedded store as the toolchain opens it (WAL, ``synchronous=NORMAL``) in a temporary
directory. PostgreSQL is a throwaway cluster started like the test fixture (``tests/postgres_server.py``:
``initdb`` + ``pg_ctl``, loopback TCP, password auth), with its durability settings put back to
PostgreSQL's defaults (``fsync``, ``synchronous_commit`` and ``full_page_writes`` on), as a team's server
would run. Each process opens its own store (one connection) before the clock starts.

Usage: python scripts/bench_registry.py [--seconds 3] [--writers 8] [--out /tmp/bench_registry.md] [--skip-postgres]
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import platform
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.postgres_server import PostgresServer, start_server, unavailable_reason  # noqa: E402
from toolchain.registry import NewRecord, open_store  # noqa: E402
from toolchain.workspace import Workspace  # noqa: E402

OPERATIONS = ("record write", "alias move", "resolve")
NAME, ALIAS = "bench", "production"
DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}


def _seed(uri: str, count: int) -> list[str]:
    """Versions for the alias to move between, and an alias to resolve."""
    with open_store(uri) as store:
        ids = [store.commit(NewRecord(kind="model", name=NAME, body={"seed": i}, version=True))[0].id for i in range(count)]
        store.set_alias(kind="model", name=NAME, alias=ALIAS, target="", record_id=ids[0], by="bench")
    return ids


def _worker(uri: str, root: str, worker: int, seconds: float, targets: list[str], barrier: Any, times: Any) -> None:
    """Run the three phases; put ``(operation, worker, start, end, count)`` for each."""
    with Workspace(Path(root) / f"w{worker}", registry_uri=uri) as ws:
        store = ws.registry
        store.get(targets[0])  # connected before the clock starts
        parent = targets[0]

        def phase(operation: str, one: Any) -> None:
            barrier.wait()
            started = time.monotonic()
            deadline, count = started + seconds, 0
            while time.monotonic() < deadline:
                one(count)
                count += 1
            times.put((operation, worker, started, time.monotonic(), count))

        def write(i: int) -> None:
            store.commit(NewRecord(kind="model", name=NAME, body={"worker": worker, "i": i, "at": time.time_ns()},
                                   links=((parent, "parent"),), blobs=(("%064x" % (worker * 1_000_000 + i), "weights"),),
                                   version=True))

        def move(i: int) -> None:
            store.set_alias(kind="model", name=NAME, alias=ALIAS, target="", record_id=targets[(worker + i) % len(targets)],
                            by=f"bench{worker}", reason=str(i))

        def resolve(i: int) -> None:
            assert ws.resolve(f"{NAME}@{ALIAS}", kind="model").record.id in targets

        phase("record write", write)
        phase("alias move", move)
        phase("resolve", resolve)


def measure(uri: str, processes: int, seconds: float) -> dict[str, float]:
    """Operations per second of each operation with ``processes`` concurrent processes."""
    targets = _seed(uri, 8)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes, timeout=600)
    times = context.Queue()
    with tempfile.TemporaryDirectory(prefix="bench-registry-ws-") as root:
        workers = [context.Process(target=_worker, args=(uri, root, w, seconds, targets, barrier, times))
                   for w in range(processes)]
        for process in workers:
            process.start()
        rows = [times.get(timeout=1800) for _ in range(processes * len(OPERATIONS))]
        for process in workers:
            process.join(60)
            if process.exitcode != 0:
                raise SystemExit(f"a benchmark process failed (exit {process.exitcode}); see its traceback above")
    rates = {}
    for operation in OPERATIONS:
        mine = [r for r in rows if r[0] == operation]
        span = max(r[3] for r in mine) - min(r[2] for r in mine)
        rates[operation] = sum(r[4] for r in mine) / span
    done = {operation: sum(r[4] for r in rows if r[0] == operation) for operation in OPERATIONS}
    with open_store(uri) as store:  # nothing lost: every write and every move is there
        if len(store.versions("model", NAME)) != 8 + done["record write"]:
            raise SystemExit("record writes were lost: the store has fewer versions than were committed")
        if len(store.alias_history(kind="model", name=NAME, alias=ALIAS)) != 1 + done["alias move"]:
            raise SystemExit("alias moves were lost: the history is shorter than the moves made")
    return rates


def _durable(server: PostgresServer) -> str:
    """Put PostgreSQL's default durability back (the test cluster turns it off); its version string."""
    with server.admin() as conn:
        for name, value in DURABLE.items():
            conn.execute(f"ALTER SYSTEM SET {name} = {value}")
        conn.execute("SELECT pg_reload_conf()")
        time.sleep(0.5)
        for name, value in DURABLE.items():
            actual = conn.execute(f"SHOW {name}").fetchone()[0]
            if actual != value:
                raise SystemExit(f"could not set {name} = {value} on the benchmark server (it says {actual})")
        return str(conn.execute("SHOW server_version").fetchone()[0])


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _disk(path: str) -> str:
    """The filesystem type and mount point ``path`` lives on."""
    best = ("", "unknown")
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            _, mount, fstype, *_ = line.split()
            inside = mount == "/" or path == mount or path.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) > len(best[0]):
                best = (mount, fstype)
    except OSError:
        pass
    return f"{best[1]} ({best[0] or '?'})"


def table(results: dict[tuple[str, int], dict[str, float]], writers: int, info: dict[str, str]) -> str:
    columns = [("SQLite", 1), ("SQLite", writers), ("PostgreSQL", 1), ("PostgreSQL", writers)]
    present = [c for c in columns if c in results]
    head = " | ".join(f"{store}, {n} {'writer' if n == 1 else 'writers'}" for store, n in present)
    lines = [
        f"Registry operations per second ({info['date']}; {info['machine']}).",
        "",
        f"| operation | {head} |",
        "|---|" + "---:|" * len(present),
    ]
    for operation in OPERATIONS:
        cells = " | ".join(f"{results[c][operation]:,.0f}" for c in present)
        lines.append(f"| {operation} | {cells} |")
    lines += [
        "",
        (
            f"Record write: `commit` of a model record with a link and a blob ref as the next version of one name; "
            f"alias move: `set_alias` of one alias, appended to its history; resolve: `NAME@ALIAS` to its record "
            f"(three reads). {writers} writers are {writers} processes doing the same operation at once on the same "
            f"name and alias (the contended case), each operation for {info['seconds']} s. "
            f"SQLite {info['sqlite']} (WAL, synchronous=NORMAL) on {info['disk']}; PostgreSQL {info.get('postgres', '-')} "
            "on the same disk over loopback TCP, fsync, synchronous_commit and full_page_writes on (its defaults). "
            f"{info['load']}"
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="how long each operation is timed (default 3)")
    parser.add_argument("--writers", type=int, default=8, help="concurrent processes (default 8)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_registry.md"), help="markdown table to write")
    parser.add_argument("--skip-postgres", action="store_true", help="SQLite only (no PostgreSQL server here)")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.writers < 1:
        parser.error("--seconds must be positive and --writers at least 1")

    load_before = os.getloadavg()
    info = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{_cpu()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python "
                   f"{platform.python_version()}",
        "sqlite": sqlite3.sqlite_version, "seconds": f"{args.seconds:g}",
        "disk": _disk(tempfile.gettempdir()),
    }
    results: dict[tuple[str, int], dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-registry-") as tmp:
        for n in (1, args.writers):
            uri = f"sqlite:///{tmp}/registry-{n}.db"
            print(f"SQLite, {n} process(es)...", file=sys.stderr)
            results[("SQLite", n)] = measure(uri, n, args.seconds)
    if not args.skip_postgres:
        reason = unavailable_reason()
        if reason:
            raise SystemExit(f"cannot start PostgreSQL: {reason} (or pass --skip-postgres)")
        server = start_server()
        try:
            info["postgres"] = _durable(server)
            for n in (1, args.writers):
                print(f"PostgreSQL, {n} process(es)...", file=sys.stderr)
                results[("PostgreSQL", n)] = measure(server.uri(server.create_database("bench")), n, args.seconds)
        finally:
            server.remove()
    load_after = os.getloadavg()
    info["load"] = (f"Load average (1 min) {load_before[0]:.1f} before and {load_after[0]:.1f} after: other work on "
                    "the machine lowers these figures.")
    text = table(results, args.writers, info)
    print(text)
    args.out.write_text(text)
    print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
