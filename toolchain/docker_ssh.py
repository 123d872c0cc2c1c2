"""The Docker SDK's ssh:// transport through the system ``ssh`` client, with the options toolchain insists on.

The SDK (``use_ssh_client=True``) runs ``ssh [-l USER] [-p PORT] -- HOST docker system dial-stdio`` for each
connection, so ``~/.ssh/config`` (Host aliases, User, IdentityFile, ProxyJump, ControlMaster), the agent
and known_hosts apply as they do for the operator's own ``ssh``. This adapter keeps that, and changes three
things:

- every ``ssh`` gets :data:`SSH_OPTIONS`: ``BatchMode=yes`` (keys from the agent or an IdentityFile only,
  never a password or passphrase prompt that would hang a rollout), ``StrictHostKeyChecking=yes`` (a unit
  whose host key is unknown or changed is refused, whatever the config says; options on the command line
  win over the config), and keepalives, so a link that dies silently ends the connection within ~30 s
  instead of hanging a transfer;
- connections are kept and reused (the SDK opened a new ``ssh``, handshake and all, for every API call);
  one whose ``ssh`` has exited (the link dropped) is never reused;
- ``ssh``'s own words go nowhere (not onto the console between toolchain's lines, where they would show
  an identity file's path): when a unit cannot be reached, :func:`toolchain.docker_engine.ssh_says` asks
  again and reports what ssh said, redacted.

Imported only for ssh:// URLs (it needs ``docker[ssh]``, whose transport module imports paramiko).
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from typing import Any
from urllib.parse import urlparse

from docker.transport import sshconn

SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "ServerAliveInterval=10",
               "-o", "ServerAliveCountMax=3")
"""Given to every ``ssh`` toolchain runs, before anything from the config (the first value ssh reads wins)."""


def ssh_args(url: str, *, connect_timeout: float = 30.0) -> list[str]:
    """``ssh OPTIONS [-l USER] [-p PORT] -- HOST`` for an ``ssh://[USER@]HOST[:PORT]`` URL (the command follows)."""
    parts = urlparse(url)
    args = ["ssh", *SSH_OPTIONS, "-o", f"ConnectTimeout={max(1, int(connect_timeout))}"]
    if parts.username:
        args += ["-l", parts.username]
    if parts.port:
        args += ["-p", str(parts.port)]
    return [*args, "--", parts.hostname or ""]


class _ResponseFile:
    """The pipe from ssh as one HTTP response's file: ``close()`` ends the response only, not the connection.

    (The SDK handed http.client the pipe itself, which closed it with the first response, so a connection was
    never reused.) ``channel`` is the socket, where the SDK looks for it (``_get_raw_response_socket``).
    """

    def __init__(self, stream: Any, channel: _SshSocket) -> None:
        self._stream, self.channel, self.closed = stream, channel, False

    def close(self) -> None:
        self.closed = True

    def flush(self) -> None:  # nothing to flush in a read pipe (which the connection may have closed already)
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _SshSocket(sshconn.SSHSocket):
    """One ``ssh HOST docker system dial-stdio`` process, spoken to through its stdin and stdout."""

    def __init__(self, url: str) -> None:  # not the SDK's: it splits HOST:PORT itself, and fails on IPv6
        socket.socket.__init__(self, socket.AF_INET, socket.SOCK_STREAM)
        self.url = url
        self.proc: subprocess.Popen[bytes] | None = None

    def connect(self, **kwargs: Any) -> None:
        env = dict(os.environ)
        env.pop("LD_LIBRARY_PATH", None)  # as the SDK does: ssh is a system binary
        env.pop("SSL_CERT_FILE", None)
        # A session of its own: no terminal to prompt on, and the user's Ctrl-C stops toolchain, which closes it.
        self.proc = subprocess.Popen([*ssh_args(self.url), "docker system dial-stdio"], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> Any:
        """ssh's stdout for one response (http.client closes it after each): the pipe itself stays open for the next."""
        if self.proc is None:
            self.connect()
        assert self.proc is not None and self.proc.stdout is not None
        return _ResponseFile(self.proc.stdout, self)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            for stream in (proc.stdin, proc.stdout):
                try:
                    if stream is not None:
                        stream.close()
                except OSError:  # a pipe to an ssh that already died
                    pass
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        socket.socket.close(self)


class _SshConnection(sshconn.SSHConnection):
    def __init__(self, url: str, timeout: float) -> None:
        super().__init__(ssh_transport=None, timeout=timeout, host=urlparse(url).netloc)
        self.url = url

    def connect(self) -> None:
        sock = _SshSocket(self.url)
        sock.connect()
        self.sock = sock


class _SshConnectionPool(sshconn.SSHConnectionPool):
    def __init__(self, url: str, timeout: float, maxsize: int) -> None:
        super().__init__(ssh_client=None, timeout=timeout, maxsize=maxsize, host=urlparse(url).netloc)
        self.url = url

    def _new_conn(self) -> _SshConnection:
        return _SshConnection(self.url, self.timeout)

    def _get_conn(self, timeout: Any = None) -> Any:
        conn = super()._get_conn(timeout)
        sock = getattr(conn, "sock", None)
        if isinstance(sock, _SshSocket) and not sock.alive():  # its ssh exited (the link dropped): a fresh one
            conn.close()
            conn = self._new_conn()
        return conn


class SshAdapter(sshconn.SSHHTTPAdapter):
    """The requests adapter of an ssh:// engine: one pool of kept ``ssh`` connections (see the module docstring)."""

    def __init__(self, url: str, *, timeout: float, max_pool_size: int = 10) -> None:
        super().__init__(url, timeout, max_pool_size=max_pool_size, shell_out=True)
        self.url = url
        self._pool: _SshConnectionPool | None = None
        self._pool_lock = threading.Lock()

    def get_connection(self, url: Any, proxies: Any = None) -> _SshConnectionPool:
        with self._pool_lock:
            if self._pool is None:
                self._pool = _SshConnectionPool(self.url, self.timeout, self.max_pool_size)
            return self._pool

    def close(self) -> None:
        super().close()
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


def ssh_client(url: str, *, timeout: float) -> Any:
    """A ``docker.DockerClient`` for an ssh:// engine over :class:`SshAdapter`, at the engine's own API version.

    The SDK would ask the engine for its version over its own transport while constructing the client; here
    the client is made at the SDK's minimum version first, only to ask it over this adapter.
    """
    import docker
    from docker.constants import MINIMUM_DOCKER_API_VERSION

    adapter = SshAdapter(url, timeout=timeout)

    def client_at(version: str) -> Any:
        client = docker.DockerClient(base_url=url, version=version, timeout=timeout, use_ssh_client=True)
        client.api.mount("http+docker://ssh", adapter)
        return client

    try:
        version = str(client_at(MINIMUM_DOCKER_API_VERSION).api.version(api_version=False)["ApiVersion"])
        return client_at(version)
    except BaseException:
        adapter.close()
        raise
