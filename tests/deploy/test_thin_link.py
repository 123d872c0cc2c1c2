"""scripts/thin_link.py, the tests' 4G router: its engine socket is owner-only, and a cut is counted to the byte."""

from __future__ import annotations

import json
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.ports import free_port as _free_port

ROOT = Path(__file__).resolve().parents[2]
MB = 1 << 20


@contextmanager
def _link(tmp_path: Path, *args: str, umask: int = -1) -> Iterator[subprocess.Popen[str]]:
    link = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "thin_link.py"), *args], stdout=subprocess.PIPE,
                            text=True, umask=umask)
    try:
        assert link.stdout is not None and link.stdout.readline().strip() == "ready"
        yield link
    finally:
        link.terminate()
        link.wait(timeout=20)


def test_the_engine_socket_proxy_is_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    engine = socket.socket(socket.AF_UNIX)
    engine.bind(str(tmp_path / "engine.sock"))
    engine.listen()
    proxy = tmp_path / "link.sock"
    with _link(tmp_path, "--rate", "0", "--link", f"unit:unix:{proxy}=unix:{tmp_path / 'engine.sock'}", umask=0):
        assert stat.S_ISSOCK(proxy.stat().st_mode)
        assert stat.S_IMODE(proxy.stat().st_mode) == 0o600, oct(proxy.stat().st_mode)
        with socket.socket(socket.AF_UNIX) as client:  # its owner (the tests run as root) still connects
            client.connect(str(proxy))
            client.sendall(b"GET /_ping HTTP/1.1\r\n\r\n")
            accepted, _ = engine.accept()
            with accepted:
                accepted.settimeout(10)
                assert accepted.recv(100).startswith(b"GET /_ping")
    engine.close()




def _read_all(connection: socket.socket) -> int:
    total = 0
    try:
        while chunk := connection.recv(1 << 16):
            total += len(chunk)
    except OSError:
        pass
    return total


def _settled(stats: Path, key: str, *, timeout: float = 30) -> int:
    """Wait until the link's ``key`` count stops moving (a connection stalled on a full socket); the count."""
    deadline, last, still_since = time.monotonic() + timeout, -1, time.monotonic()
    while time.monotonic() < deadline:
        now = json.loads(stats.read_text())["one"][key] if stats.is_file() else 0
        if now != last:
            last, still_since = now, time.monotonic()
        elif now > 0 and time.monotonic() - still_since > 1.0:
            return now
        time.sleep(0.1)
    raise AssertionError(f"the link's {key} count never settled (last {last})")


def test_a_cut_counts_the_chunks_in_flight_by_the_bytes_that_left(tmp_path: Path) -> None:
    """Three connections on one link: A's target and B's client have stopped reading, so each has a chunk in flight,
    part written; C pushes the link past --cut-after. After the cut, every byte counted is a byte that arrived:
    the ends that stopped read again, and get exactly what the link counted (no more, no less)."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)  # A's side fills up early
    server.bind(("127.0.0.1", 0))
    server.listen()
    release = threading.Event()
    received: dict[str, int] = {}
    handlers: list[threading.Thread] = []

    def handle(connection: socket.socket) -> None:
        with connection:
            role = connection.recv(1).decode()
            if role == "A":  # reads nothing until the cut
                release.wait(60)
            elif role == "B":  # floods its client, which reads nothing until the cut
                try:
                    connection.sendall(b"b" * (64 * MB))
                except OSError:
                    pass
            received[role] = 1 + _read_all(connection)

    def accept() -> None:
        for _ in range(3):
            connection, _ = server.accept()
            handlers.append(threading.Thread(target=handle, args=(connection,), daemon=True))
            handlers[-1].start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    front, stats = _free_port(), tmp_path / "stats.json"
    cut_after = 48 * MB
    with _link(tmp_path, "--rate", "0", "--stats", str(stats), "--cut-after", str(cut_after),
               "--link", f"one:tcp:127.0.0.1:{front}=tcp:127.0.0.1:{server.getsockname()[1]}") as link:
        def send(role: str, size: int) -> None:
            with socket.create_connection(("127.0.0.1", front)) as client:
                try:
                    client.sendall(role.encode() + b"x" * size)
                    time.sleep(30)  # keep the connection (and its unread replies) until the cut drops it
                except OSError:
                    pass

        sender_a = threading.Thread(target=send, args=("A", 32 * MB), daemon=True)
        sender_a.start()
        _settled(stats, "up")
        client_b = socket.socket()
        client_b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        client_b.connect(("127.0.0.1", front))
        client_b.sendall(b"B")
        _settled(stats, "down")
        before = json.loads(stats.read_text())["one"]
        assert before["up"] < cut_after and not before["cut"]
        send("C", 96 * MB)  # returns once the cut resets it
        deadline = time.monotonic() + 30
        while not json.loads(stats.read_text())["one"]["cut"] and time.monotonic() < deadline:
            time.sleep(0.1)
        release.set()
        got_b = _read_all(client_b)
        client_b.close()
        for thread in (acceptor, *handlers):
            thread.join(timeout=60)
        link.terminate()
        link.wait(timeout=20)
        counted = json.loads(stats.read_text())["one"]
    server.close()
    assert counted["cut"] and counted["connections"] == 3 and counted["up"] >= cut_after
    assert set(received) == {"A", "B", "C"}
    assert received["A"] > 1 and got_b > 0  # both stalled ends had data in flight
    assert counted["up"] == received["A"] + received["B"] + received["C"], (counted, received)
    assert counted["down"] == got_b, (counted, got_b)


def test_a_cut_can_count_the_bytes_coming_back_as_a_pull_from_a_registry_does(tmp_path: Path) -> None:
    """``--cut-direction down``: the link drops once 1 MB came from the target; the client got what was counted."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def source() -> None:
        connection, _ = server.accept()
        with connection:
            connection.recv(10)
            try:
                connection.sendall(b"l" * (8 * MB))
            except OSError:
                pass

    thread = threading.Thread(target=source, daemon=True)
    thread.start()
    front, stats = _free_port(), tmp_path / "stats.json"
    with _link(tmp_path, "--rate", "0", "--stats", str(stats), "--cut-after", str(MB), "--cut-direction", "down",
               "--down-after-cut", "--link", f"one:tcp:127.0.0.1:{front}=tcp:127.0.0.1:{server.getsockname()[1]}") \
            as link:
        with socket.create_connection(("127.0.0.1", front)) as client:
            client.sendall(b"GET /v2/")
            got = _read_all(client)
        thread.join(timeout=30)
        try:
            socket.create_connection(("127.0.0.1", front), timeout=5).close()
            refused = False
        except OSError:
            refused = True
        link.terminate()
        link.wait(timeout=20)
    server.close()
    counted = json.loads(stats.read_text())["one"]
    assert counted["cut"] and refused and counted["up"] == 8
    assert MB <= counted["down"] == got < 8 * MB
