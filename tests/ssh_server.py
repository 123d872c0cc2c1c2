"""A throwaway OpenSSH server on loopback, and an ``ssh`` client set up to trust it, for ssh:// unit tests.

The server is Debian's ``sshd`` (``openssh-server``) on a free port with a host key made for the test; it
lets in one user key (made for the test) as the current user, and that key's ``environment=`` option
points ``docker`` on the far side at the engine the test chose, so ``docker system dial-stdio`` (what the
Docker SDK runs over ssh) reaches it. The client side is a folder with an ``ssh`` wrapper that adds ``-F``
with the test's config (key, known hosts, strict host key checking); put it first on PATH. OpenSSH reads
``~`` from the password database, not ``$HOME``, so this is how a test keeps off root's own ``~/.ssh``.
"""

from __future__ import annotations

import os
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
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "toolchain-test", "-f", str(path)], check=True)


@dataclass
class SshServer:
    """A running sshd; ``path_dir`` holds the ``ssh`` wrapper clients put first on PATH."""

    root: Path
    port: int
    process: subprocess.Popen[bytes]
    path_dir: Path
    known_hosts: Path
    user: str

    def url(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The environment of a client that reaches this server (wrapper first on PATH)."""
        return {**os.environ, "PATH": f"{self.path_dir}{os.pathsep}{os.environ.get('PATH', '')}"}

    def forget_host_key(self) -> None:
        """Empty the client's known hosts: the server's key is then unknown, and strict checking refuses it."""
        self.known_hosts.write_text("")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


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
    config = root / "sshd_config"
    config.write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {root / 'sshd.pid'}
AuthorizedKeysFile {authorized}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitUserEnvironment yes
StrictModes no
UsePAM no
""")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    log = open(root / "sshd.log", "wb")  # noqa: SIM115 - the server's log for as long as it runs
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited: {(root / 'sshd.log').read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.1)
    else:
        process.kill()
        raise RuntimeError(f"sshd did not listen on {port}: {(root / 'sshd.log').read_text()[-2000:]}")

    public_host_key = (root / "host_key.pub").read_text().split()
    known_hosts = root / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {public_host_key[0]} {public_host_key[1]}\n")
    client_config = root / "ssh_config"
    client_config.write_text(f"""Host 127.0.0.1
    IdentityFile {user_key}
    IdentitiesOnly yes
    UserKnownHostsFile {known_hosts}
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    LogLevel ERROR
""")
    path_dir = root / "bin"
    path_dir.mkdir()
    wrapper = path_dir / "ssh"
    wrapper.write_text(f'#!/bin/sh\nexec {shutil.which("ssh")} -F {client_config} "$@"\n')
    wrapper.chmod(0o755)
    import pwd

    return SshServer(root=root, port=port, process=process, path_dir=path_dir, known_hosts=known_hosts,
                     user=pwd.getpwuid(os.getuid()).pw_name)
