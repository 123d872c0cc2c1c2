"""A simulated fleet on loopback: unit engines (one ``dockerd`` each), a registry, and thin links to them.

Used by the Docker tests (tests/docker/) and scripts/bench_rollout. Everything is real: the engines are
Debian's dockerd (scripts/dockerd_up), the registry Debian's ``docker-registry`` (the CNCF distribution
registry), the links scripts/thin_link.py processes that limit the rate and count the bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.ports import free_port, free_ports
from tests.tls import new_ca, pem, server_certificate

ROOT = Path(__file__).resolve().parents[2]


def toolchain_json(workspace: Path, *args: str, timeout: float = 900) -> tuple[int, Any, str]:
    """``toolchain --workspace W --json ARGS...`` in a subprocess: exit code, the JSON document (or None), stderr."""
    run = subprocess.run([sys.executable, "-m", "toolchain", "--workspace", str(workspace), "--json", *args],
                         capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        payload = json.loads(run.stdout) if run.stdout.strip() else None
    except ValueError:
        payload = None
    return run.returncode, payload, run.stderr


def packaged_tiny_model(tmp_path: Path, model: str, docker_url: str, base_image: str) -> tuple[Path, Any, Any]:
    """A workspace with the tiny ONNX registered as ``model``, built for x86-64-cpu and packaged on the engine
    (tag ``toolchain/MODEL:test``): ``(workspace, build report, package report)``."""
    from tests.onnx_fixtures import register_tiny_onnx
    from toolchain.workspace import Workspace

    ws = tmp_path / "ws"
    with Workspace(ws) as workspace:
        register_tiny_onnx(workspace, tmp_path / "m", name=model)
    code, built, err = toolchain_json(ws, "build", model, "--target", "x86-64-cpu")
    assert code == 0, err
    code, image, err = toolchain_json(ws, "package", model, "--target", "x86-64-cpu", "--base-image", base_image,
                                      "--docker-host", docker_url, "--tag", f"toolchain/{model}:test")
    assert code == 0, err
    return ws, built, image


def health(port: int) -> int:
    """HTTP status of ``/healthz`` on the loopback port (0 when nothing answers)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def remove_images(client: Any, refs: list[str]) -> None:
    """Remove what a test packaged from the shared engine (the base image stays); missing ones are skipped."""
    import docker.errors

    for ref in refs:
        try:
            client.images.remove(ref, force=True)
        except docker.errors.DockerException:
            pass


def remove_deployed(client: Any, model: str, image_id: str) -> None:
    """Remove what deploying ``model`` left on a unit's engine: its containers, its credential volumes, its image."""
    for leftover in client.containers.list(all=True, filters={"name": f"toolchain-{model}"}):
        leftover.remove(force=True)
    for volume in client.volumes.list(filters={"label": f"org.toolchain.model={model}"}):
        volume.remove(force=True)
    remove_images(client, [image_id])


def mute_socket(path: Path) -> tuple[socket.socket, list[socket.socket]]:
    """A unix socket at ``path`` that accepts every connection and never says a word (a hung engine, a half-open
    link): the listening socket and the connections it holds, for the caller to close."""
    import threading

    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(sock.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return sock, held


def unit_ports(names: list[str]) -> dict[str, int]:
    """A service port per unit such that no two units' ``port`` and ``port + 1`` overlap and both are free now
    (units on one host share its network: a rollout's new container takes ``port + 1`` while the old one serves)."""
    return dict(zip(names, free_ports(len(names), span=2)))


def can_start_engines() -> str:
    """Why unit engines cannot be started here ("" when they can)."""
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        return "starting unit engines needs root and dockerd (apt-get install docker.io)"
    return ""


def start_engines(base: Path, names: list[str], dockerd_options: tuple[str, ...] = ()) -> dict[str, str]:
    """One dockerd per name under ``base/NAME`` (in parallel), started with ``dockerd_options``;
    ``{name: unix://.../docker.sock}``."""
    def one(name: str) -> str:
        run = subprocess.run([str(ROOT / "scripts" / "dockerd_up"), str(base / name), *dockerd_options],
                             capture_output=True, text=True, timeout=180)
        if run.returncode != 0:
            raise RuntimeError(f"could not start unit engine {name}: {run.stderr[-500:]}")
        return run.stdout.strip()

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(names, pool.map(one, names)))


def stop_engine(directory: Path) -> None:
    """Stop the dockerd that scripts/dockerd_up started in ``directory`` (SIGTERM, then SIGKILL)."""
    pid_file = directory / "dockerd.pid"
    if not pid_file.is_file():
        return
    pid = int(pid_file.read_text().strip())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(150):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


def stop_engines(base: Path, names: list[str]) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda name: stop_engine(base / name), names))


class Registry:
    """Debian's ``docker-registry`` serving a temp directory: plain HTTP on a loopback port by default.

    ``auth=(user, password)`` adds htpasswd (bcrypt) authentication; ``tls=True`` serves HTTPS with a
    certificate from a CA this object makes (:attr:`ca_pem`), on a non-loopback address of this machine by
    default: Docker treats every loopback registry as insecure (it skips certificate checks there), so only
    an address off loopback shows what an engine makes of the certificate. :meth:`install_ca` puts the CA
    where every dockerd on this machine looks for it (``/etc/docker/certs.d/HOST:PORT/ca.crt``), and
    :meth:`restart` can serve an expired certificate, or one from a CA nobody trusts.
    """

    CERTS_D = Path("/etc/docker/certs.d")

    def __init__(self, directory: Path, *, auth: tuple[str, str] | None = None, tls: bool = False,
                 host: str = "") -> None:
        self.directory = directory
        self.auth, self.tls = auth, tls
        self.host = host or (self.lan_address() if tls else "127.0.0.1")
        self.port = free_port()
        self.address = f"{self.host}:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.certificate = "valid"  # what start() serves: "valid", "expired" or "unknown-ca"
        self.ca_pem = ""
        self._ca: Any = None
        self._installed: Path | None = None

    @staticmethod
    def missing(*, tls: bool = False, auth: bool = False) -> str:
        if not shutil.which("docker-registry"):
            return "no docker-registry (apt-get install docker-registry)"
        if auth:
            try:
                import bcrypt  # noqa: F401 - the htpasswd file's hashes
            except ImportError:
                return "no bcrypt for the registry's htpasswd file (pip install bcrypt)"
        if tls and os.geteuid() != 0:
            return "a TLS registry needs root to put its CA in /etc/docker/certs.d for the engines"
        if tls and not Registry.lan_address():
            return "a TLS registry needs an address off loopback (Docker skips certificate checks on loopback)"
        return ""

    @staticmethod
    def lan_address() -> str:
        """An IPv4 address of this machine that is not loopback ("" when it has none)."""
        try:
            shown = subprocess.run(["ip", "-o", "-4", "addr", "show", "scope", "global"], capture_output=True,
                                   text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""
        for line in shown.splitlines():
            parts = line.split()
            if "inet" in parts:
                return parts[parts.index("inet") + 1].split("/")[0]
        return ""

    # -- TLS material ---------------------------------------------------------------------------------------------
    def install_ca(self) -> Path:
        """Put the CA where every dockerd here trusts it for this registry (read per connection: no restart)."""
        directory = self.CERTS_D / self.address
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "ca.crt").write_text(self.ca_pem)
        self._installed = directory
        return directory / "ca.crt"

    def remove_ca(self) -> None:
        if self._installed is not None:
            shutil.rmtree(self._installed, ignore_errors=True)
            self._installed = None

    # -- the process ----------------------------------------------------------------------------------------------
    def _config(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        extra_http = ""
        extra = ""
        if self.tls:
            if self._ca is None:
                self._ca = new_ca("toolchain test registry CA")
                self.ca_pem = pem(self._ca[1]).decode()
            ca = self._ca if self.certificate != "unknown-ca" else new_ca("a CA nobody trusts")
            cert, key = server_certificate(ca, [self.host], expired=self.certificate == "expired")
            (self.directory / "server.crt").write_bytes(cert)
            (self.directory / "server.key").write_bytes(key)
            extra_http = (f"  tls:\n    certificate: {self.directory / 'server.crt'}\n"
                          f"    key: {self.directory / 'server.key'}\n")
        if self.auth is not None:
            import bcrypt

            user, password = self.auth
            hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
            (self.directory / "htpasswd").write_text(f"{user}:{hashed}\n")
            extra = f"auth:\n  htpasswd:\n    realm: toolchain-test\n    path: {self.directory / 'htpasswd'}\n"
        config = self.directory / "config.yml"
        config.write_text(f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {self.directory / 'data'}
  delete:
    enabled: true
http:
  addr: {self.address}
{extra_http}{extra}""")
        return config

    def start(self, certificate: str = "") -> Registry:
        """Start serving (with ``certificate``: "valid", "expired" or "unknown-ca", for a TLS registry)."""
        self.certificate = certificate or self.certificate
        config = self._config()
        log = open(self.directory / "registry.log", "ab")  # noqa: SIM115 - the process owns it
        self.process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    return self
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.2)
        raise RuntimeError(f"docker-registry did not start: {(self.directory / 'registry.log').read_text()[-500:]}")

    def restart(self, certificate: str = "") -> Registry:
        """Stop, then start on the same address and storage (with another certificate, say)."""
        self.stop(keep_ca=True)
        return self.start(certificate)

    def stop(self, *, keep_ca: bool = False) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        if not keep_ca:
            self.remove_ca()


class ThinLink:
    """A scripts/thin_link.py process: ``links`` maps a name to ``(listen, target)`` addresses."""

    def __init__(self, directory: Path, links: dict[str, tuple[str, str]], *, rate: str = "2mbit", cut_after: int = 0,
                 cut_link: str = "", cut_direction: str = "up", down_after_cut: bool = False) -> None:
        self.directory, self.links, self.rate = directory, links, rate
        self.cut_after, self.cut_link, self.down_after_cut = cut_after, cut_link, down_after_cut
        self.cut_direction = cut_direction  # "down": cut after bytes from the target (a pull from a registry)
        self.stats_path = directory / f"link-stats-{os.getpid()}-{id(self)}.json"
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> ThinLink:
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, str(ROOT / "scripts" / "thin_link.py"), "--rate", self.rate, "--stats",
                   str(self.stats_path)]
        for name, (listen, target) in self.links.items():
            command += ["--link", f"{name}:{listen}={target}"]
        if self.cut_after:
            command += ["--cut-after", str(self.cut_after), "--cut-direction", self.cut_direction]
            command += ["--cut-link", self.cut_link] if self.cut_link else []
        if self.down_after_cut:
            command.append("--down-after-cut")
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"thin_link.py did not start (exit {self.process.poll()})")
        return self

    def stats(self) -> dict[str, Any]:
        return json.loads(self.stats_path.read_text()) if self.stats_path.is_file() else {}

    def stop(self) -> dict[str, Any]:
        """Stop the link; each link's final ``{"up", "down", "connections", "cut"}``."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        return self.stats()

    def __enter__(self) -> ThinLink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def unix_link(directory: Path, engine_url: str) -> tuple[str, str, str]:
    """``(listen, target, url)`` of a link in front of a unit engine's socket: the unit's URL goes to ``url``."""
    socket_path = engine_url.removeprefix("unix://")
    proxy = Path(socket_path).with_name("link.sock")
    return f"unix:{proxy}", f"unix:{socket_path}", f"unix://{proxy}"


def write_fleet(path: Path, units: dict[str, str], *, ports: dict[str, int], extra: str = "", defaults: str = "") -> Path:
    """A fleet file of x86-64-cpu units (name -> engine URL) serving a synthetic camera."""
    text = f"""[defaults]
target = "x86-64-cpu"
cameras = ["synthetic:64x64@5"]
health_timeout_s = 120
{defaults}
"""
    for name, url in units.items():
        text += f"""
[[unit]]
name = "{name}"
url = "{url}"
http_port = {ports[name]}
{extra}
"""
    path.write_text(text)
    return path
