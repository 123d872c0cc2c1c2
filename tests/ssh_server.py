"""Throwaway OpenSSH servers on loopback, and an ``ssh`` client set up to trust them, for ssh:// unit tests.

A server is Debian's ``sshd`` (``openssh-server``) on a free port with a host key made for the test; it
lets in one user key (made for the test) as the current user, and that key's ``environment=`` option
points ``docker`` on the far side at the engine the test chose, so ``docker system dial-stdio`` (what the
Docker SDK runs over ssh) reaches it. The client side is a folder with an ``ssh`` wrapper that adds ``-F``
with the test's config (key, known hosts, strict host key checking); put it first on PATH. OpenSSH reads
``~`` from the password database, not ``$HOME``, so this is how a test keeps off root's own ``~/.ssh``.

:meth:`SshServer.new_host_key` restarts a server with a new host key on the same port (a reinstalled unit, or
someone in the middle); :func:`behind_bastion` writes a client whose unit is reached through a second sshd with
``ProxyJump``, as an operator's ``~/.ssh/config`` would.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.ports import free_port as _free_port

SSHD = "/usr/sbin/sshd"


def unavailable_reason() -> str:
    """Why no sshd can be started here ("" when one can)."""
    if not Path(SSHD).is_file() or shutil.which("ssh-keygen") is None or shutil.which("ssh") is None:
        return "no OpenSSH server/client: apt-get install openssh-server openssh-client"
    return ""


def _keygen(path: Path) -> None:
    for old in (path, path.with_name(path.name + ".pub")):
        old.unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "toolchain-test", "-f", str(path)], check=True)


def _user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


@dataclass
class SshClient:
    """A client set-up: ``path_dir`` holds an ``ssh`` that always reads ``config``; ``known_hosts`` is its pins."""

    root: Path
    config: Path
    known_hosts: Path
    path_dir: Path

    def env(self) -> dict[str, str]:
        """The environment of a client that uses this config (wrapper first on PATH)."""
        return {**os.environ, "PATH": f"{self.path_dir}{os.pathsep}{os.environ.get('PATH', '')}"}

    def pin(self, host: str, port: int, public_key: Path) -> None:
        """Add ``[host]:port``'s host key to the known hosts (what an operator does once, after checking it)."""
        kind, key = public_key.read_text().split()[:2]
        with open(self.known_hosts, "a") as out:
            out.write(f"[{host}]:{port} {kind} {key}\n")


def write_client(root: Path, config_text: str) -> SshClient:
    """An ``ssh`` wrapper under ``root/bin`` that runs the system client with ``-F root/ssh_config``."""
    root.mkdir(parents=True, exist_ok=True)
    known_hosts = root / "known_hosts"
    known_hosts.touch()
    config = root / "ssh_config"
    config.write_text(config_text.replace("@KNOWN_HOSTS@", str(known_hosts)))
    path_dir = root / "bin"
    path_dir.mkdir(exist_ok=True)
    wrapper = path_dir / "ssh"
    wrapper.write_text(f'#!/bin/sh\nexec {shutil.which("ssh")} -F {config} "$@"\n')
    wrapper.chmod(0o755)
    return SshClient(root=root, config=config, known_hosts=known_hosts, path_dir=path_dir)


_STRICT = """    IdentitiesOnly yes
    UserKnownHostsFile @KNOWN_HOSTS@
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    LogLevel ERROR
"""


@dataclass
class SshServer:
    """A running sshd, and a client (``path_dir``, ``known_hosts``) that reaches it directly."""

    root: Path
    port: int
    process: subprocess.Popen[bytes]
    client: SshClient
    user: str

    @property
    def path_dir(self) -> Path:
        return self.client.path_dir

    @property
    def known_hosts(self) -> Path:
        return self.client.known_hosts

    @property
    def host_key(self) -> Path:
        return self.root / "host_key.pub"

    @property
    def user_key(self) -> Path:
        return self.root / "user_key"

    def url(self, port: int | None = None) -> str:
        return f"ssh://{self.user}@127.0.0.1:{port or self.port}"

    def env(self) -> dict[str, str]:
        """The environment of a client that reaches this server (wrapper first on PATH)."""
        return self.client.env()

    def forget_host_key(self) -> None:
        """Empty the client's known hosts: the server's key is then unknown, and strict checking refuses it."""
        self.known_hosts.write_text("")

    def logins(self) -> int:
        """How many logins the server accepted so far (from its log)."""
        return (self.root / "sshd.log").read_text(errors="replace").count("Accepted publickey")

    def new_host_key(self) -> None:
        """Restart the server on its port with a freshly made host key; the client's pin is left as it was."""
        self.stop()
        _keygen(self.root / "host_key")
        self.process = _run_sshd(self.root, self.port)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _run_sshd(root: Path, port: int) -> subprocess.Popen[bytes]:
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    log = open(root / "sshd.log", "ab")  # noqa: SIM115 - the server's log for as long as it runs
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(root / "sshd_config")], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited: {(root / 'sshd.log').read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"sshd did not listen on {port}: {(root / 'sshd.log').read_text()[-2000:]}")


def start_sshd(root: Path, *, docker_host: str) -> SshServer:
    """Start sshd under ``root`` (keys, config, log); ``docker`` in its sessions talks to ``docker_host``."""
    root.mkdir(parents=True, exist_ok=True)
    host_key, user_key = root / "host_key", root / "user_key"
    _keygen(host_key)
    _keygen(user_key)
    authorized = root / "authorized_keys"
    authorized.write_text(f'environment="DOCKER_HOST={docker_host}" {(root / "user_key.pub").read_text().strip()}\n')
    authorized.chmod(0o600)
    port = _free_port()
    (root / "sshd_config").write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {root / 'sshd.pid'}
AuthorizedKeysFile {authorized}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitUserEnvironment yes
AllowTcpForwarding yes
StrictModes no
UsePAM no
""")
    process = _run_sshd(root, port)
    client = write_client(root / "client", f"Host 127.0.0.1\n    IdentityFile {user_key}\n{_STRICT}")
    client.pin("127.0.0.1", port, root / "host_key.pub")
    return SshServer(root=root, port=port, process=process, client=client, user=_user())


@dataclass
class SshAgent:
    """A running ``ssh-agent`` holding keys; ``env()`` points clients at it (``SSH_AUTH_SOCK``)."""

    pid: int
    socket: Path

    def env(self, base: dict[str, str]) -> dict[str, str]:
        return {**base, "SSH_AUTH_SOCK": str(self.socket), "SSH_AGENT_PID": str(self.pid)}

    def stop(self) -> None:
        subprocess.run(["ssh-agent", "-k"], env=self.env(dict(os.environ)), capture_output=True, timeout=10)


def start_agent(root: Path, *keys: Path) -> SshAgent:
    """An ``ssh-agent`` on a socket under ``root`` with ``keys`` added (what an operator's session has)."""
    root.mkdir(parents=True, exist_ok=True)
    sock = root / "agent.sock"
    out = subprocess.run(["ssh-agent", "-s", "-a", str(sock)], capture_output=True, text=True, check=True, timeout=10)
    pid = int(out.stdout.split("SSH_AGENT_PID=")[1].split(";")[0])
    agent = SshAgent(pid=pid, socket=sock)
    for key in keys:
        subprocess.run(["ssh-add", "-q", str(key)], env=agent.env(dict(os.environ)), check=True, capture_output=True,
                       timeout=10)
    return agent


def agent_client(root: Path, server: SshServer) -> SshClient:
    """A client of ``server`` that names no key file: its key must come from the agent."""
    config = _STRICT.replace("IdentitiesOnly yes", "IdentitiesOnly no")  # "yes" would pass over the agent's keys
    return _pinned(write_client(root, f"Host 127.0.0.1\n{config}"), server)


def behind_bastion(root: Path, bastion: SshServer, unit: SshServer, *, alias: str = "gantry-behind") -> SshClient:
    """A client whose ``ssh://alias`` is ``unit`` reached through ``bastion`` (``ProxyJump``), as in ~/.ssh/config.

    Both servers' host keys are pinned; each is logged into with its own user key. The URL names only the alias:
    user, port and the way there come from the config.
    """
    return _pinned(write_client(root, f"""Host test-bastion
    HostName 127.0.0.1
    Port {bastion.port}
    User {bastion.user}
    IdentityFile {bastion.user_key}

Host {alias}
    HostName 127.0.0.1
    Port {unit.port}
    User {unit.user}
    IdentityFile {unit.user_key}
    ProxyJump test-bastion

Host *
{_STRICT}"""), bastion, unit)


def fleet_client(root: Path, units: dict[str, SshServer]) -> SshClient:
    """One client for many units: ``ssh://ALIAS`` reaches ``units[ALIAS]`` with its own key, every host key pinned
    (an operator's ~/.ssh/config with a ``Host`` block per roadside unit)."""
    blocks = "".join(f"""Host {alias}
    HostName 127.0.0.1
    Port {server.port}
    User {server.user}
    IdentityFile {server.user_key}

""" for alias, server in units.items())
    return _pinned(write_client(root, f"{blocks}Host *\n{_STRICT}"), *units.values())


def _pinned(client: SshClient, *servers: SshServer) -> SshClient:
    for server in servers:
        client.pin("127.0.0.1", server.port, server.host_key)
    return client
