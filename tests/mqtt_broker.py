"""A throwaway MQTT broker on loopback for the publish tests: Debian's ``mosquitto`` (2.x) on a free port.

:class:`MqttBroker` writes a config into its folder and runs ``mosquitto -c`` there: anonymous, or with a
password file made by ``mosquitto_passwd``, optionally TLS-only with a CA and a server certificate (for
``127.0.0.1`` and ``localhost``) made for the test with ``cryptography``. :meth:`MqttBroker.restart` brings it
back on the same port (a broker outage); with ``persistence=True`` it keeps its sessions and queued messages
across restarts (saved at shutdown), so a subscriber with a persistent session misses nothing while the broker
is down. Use the :func:`mqtt_broker` fixture (a factory; every broker it made is stopped at the test's end).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import pytest

from tests.ports import free_port
from tests.services import skip_or_fail

MOSQUITTO = "/usr/sbin/mosquitto"


def _mosquitto() -> str:
    return shutil.which("mosquitto") or (MOSQUITTO if Path(MOSQUITTO).is_file() else "")


class MqttBroker:
    """A mosquitto process (see the module docstring).

    Args:
        directory: Its config, log, password file, certificates and persistence go here.
        password: ``(user, password)``: anonymous clients are refused and this login is the only one.
        tls: A TLS-only listener; :attr:`ca_pem` is the CA clients must trust.
        persistence: Keep sessions and queued messages across :meth:`restart`.
    """

    def __init__(self, directory: Path, *, password: Optional[Tuple[str, str]] = None, tls: bool = False,
                 persistence: bool = False) -> None:
        self.directory = Path(directory)
        self.password = password
        self.tls = tls
        self.persistence = persistence
        self.port = 0
        self.ca_pem = ""
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.log_path = self.directory / "mosquitto.log"

    @staticmethod
    def missing(*, tls: bool = False, password: bool = False) -> str:
        """Why a broker cannot run here ("" when it can)."""
        if not _mosquitto():
            return "no MQTT broker: apt-get install mosquitto (Debian's mosquitto 2.x)"
        if password and shutil.which("mosquitto_passwd") is None:
            return "no mosquitto_passwd: apt-get install mosquitto"
        if tls:
            try:
                import cryptography  # noqa: F401
            except ImportError:
                return "no cryptography package to make the test CA: pip install cryptography"
        return ""

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def _prepare(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        lines = [f"listener {self.port} 127.0.0.1", "user root", "log_dest stdout", "log_type error",
                 "log_type warning", "log_type notice", "log_type information", "connection_messages true",
                 "max_queued_messages 0", "max_inflight_messages 20"]
        if self.persistence:
            store = self.directory / "store"
            store.mkdir(exist_ok=True)
            lines += ["persistence true", f"persistence_location {store}/", "autosave_interval 1"]
        else:
            lines.append("persistence false")
        if self.password is not None:
            passwd = self.directory / "passwd"
            if not passwd.exists():
                passwd.touch(mode=0o600)
                subprocess.run(["mosquitto_passwd", "-b", str(passwd), *self.password], check=True,
                               capture_output=True, timeout=30)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        if self.tls:
            ca, cert, key = self._certificates()
            lines += [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}", "tls_version tlsv1.2",
                      "require_certificate false"]
        config = self.directory / "mosquitto.conf"
        config.write_text("\n".join(lines) + "\n")
        return config

    def _certificates(self) -> Tuple[Path, Path, Path]:
        ca_path, cert_path, key_path = (self.directory / name for name in ("ca.pem", "server.pem", "server.key"))
        if not ca_path.exists():
            ca_pem, cert_pem, key_pem = make_ca_and_server_cert()
            key_path.write_bytes(key_pem)
            key_path.chmod(0o600)
            cert_path.write_bytes(cert_pem)
            ca_path.write_bytes(ca_pem)
        self.ca_pem = ca_path.read_text()
        return ca_path, cert_path, key_path

    def start(self) -> MqttBroker:
        """Start it (a free port the first time, the same port after) and wait until it accepts connections."""
        if self.process is not None and self.process.poll() is None:
            return self
        if not self.port:
            self.port = free_port()
        config = self._prepare()
        deadline = time.monotonic() + 20
        while True:
            log = open(self.log_path, "ab")  # noqa: SIM115 - the broker's log while it runs
            self.process = subprocess.Popen([_mosquitto(), "-c", str(config)], stdout=log, stderr=subprocess.STDOUT,
                                            cwd=self.directory)
            log.close()
            if self._wait_listening(deadline):
                return self
            # The port may still be held by the previous process's sockets for a moment: try again until the deadline.
            if time.monotonic() > deadline:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"mosquitto did not listen on 127.0.0.1:{self.port}: {tail}")
            time.sleep(0.2)

    def _wait_listening(self, deadline: float) -> bool:
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    def stop(self) -> None:
        """Stop it (SIGTERM, so a persistent broker saves its state; SIGKILL after 10 s)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> MqttBroker:
        """Stop and start again on the same port."""
        self.stop()
        return self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> MqttBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def make_ca_and_server_cert(names: Tuple[str, ...] = ("localhost",),
                            addresses: Tuple[str, ...] = ("127.0.0.1",)) -> Tuple[bytes, bytes, bytes]:
    """``(CA certificate, server certificate, server key)`` as PEM: a fresh CA, and a server certificate it
    signed for ``names`` and ``addresses`` (:mod:`tests.tls`)."""
    from tests.tls import new_ca, pem, server_certificate

    ca = new_ca()
    cert, key = server_certificate(ca, (*names, *addresses))
    return pem(ca[1]), cert, key


@pytest.fixture
def mqtt_broker(tmp_path: Path) -> Iterator[Callable[..., MqttBroker]]:
    """A factory: ``mqtt_broker(name, password=..., tls=..., persistence=..., start=True)`` makes a broker under
    ``tmp_path/name``; skips (or fails, where ``TOOLCHAIN_TEST_REQUIRE_MQTT`` is set) when mosquitto is missing."""
    made: List[MqttBroker] = []

    def make(name: str = "broker", *, password: Optional[Tuple[str, str]] = None, tls: bool = False,
             persistence: bool = False, start: bool = True) -> MqttBroker:
        reason = MqttBroker.missing(tls=tls, password=password is not None)
        if reason:
            skip_or_fail("mqtt", reason)
        broker = MqttBroker(tmp_path / name, password=password, tls=tls, persistence=persistence)
        made.append(broker)
        if start:
            broker.start()
        else:
            broker.port = free_port()
            if tls:
                broker._prepare()
        return broker

    yield make
    for broker in made:
        broker.stop()


class Subscriber:
    """A :func:`toolchain.publish.tail.tail` in a thread that keeps every message it gets, duplicates included.

    ``client_id`` asks for a persistent session: with a ``persistence=True`` broker it misses nothing across
    broker restarts once :meth:`wait_ready` returned.
    """

    def __init__(self, config: Any, *, credentials: Any = None, client_id: Optional[str] = "toolchain-test-sub") -> None:
        self.config, self.credentials, self.client_id = config, credentials, client_id
        self.messages: List[Dict[str, Any]] = []
        self.errors: List[str] = []
        self.ready = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self, timeout: float = 15.0) -> Subscriber:
        from toolchain.publish.tail import tail

        def on_ready() -> None:
            with self._lock:
                self.ready += 1

        self._thread = threading.Thread(target=tail, args=(self.config,), daemon=True, kwargs=dict(
            credentials=self.credentials, on_message=self._got, stop=self._stop, dedupe=False,
            client_id=self.client_id, on_ready=on_ready, on_error=self.errors.append))
        self._thread.start()
        self.wait(lambda: self.ready >= 1, timeout, "the subscriber did not subscribe")
        return self

    def _got(self, message: Dict[str, Any]) -> None:
        with self._lock:
            self.messages.append(message)

    def seqs(self) -> List[int]:
        """Every seq received, in arrival order, duplicates included."""
        with self._lock:
            return [m["seq"] for m in self.messages]

    def unique_in_order(self) -> List[int]:
        """The seqs after de-duplication, in arrival order (what a consumer keeps)."""
        from toolchain.publish.tail import Deduplicator

        dedupe = Deduplicator()
        with self._lock:
            return [m["seq"] for m in self.messages if not dedupe.is_duplicate(m["unit"], m["seq"])]

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} within {timeout} s (errors: {self.errors[-3:]})")
            time.sleep(0.02)

    def wait_for_seqs(self, expected: Iterable[int], timeout: float) -> None:
        wanted = set(expected)
        self.wait(lambda: wanted <= set(self.seqs()), timeout,
                  f"the subscriber did not get {len(wanted)} messages (missing {sorted(wanted - set(self.seqs()))[:20]})")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it holds; AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} (not within {timeout} s)")
        time.sleep(0.02)
