"""Connect to a Docker Engine by URL (a roadside unit, a build host, or this machine) with the docker SDK.

URLs: ``unix:///path/docker.sock``, ``ssh://user@unit`` (through the system ``ssh`` client, so keys and
``~/.ssh/config`` apply), ``tcp://host:2376`` with TLS (``DOCKER_CERT_PATH`` holding ca.pem, cert.pem,
key.pem, as the docker CLI uses). Plain unencrypted ``tcp://`` gives anyone on the network root on the
unit, so it is refused unless ``insecure=True`` (``--insecure``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from toolchain.errors import MissingEnvironmentError, UsageError, missing_extra

SCHEMES = ("unix", "ssh", "tcp", "https", "npipe")


def engine_url(url: str | None) -> str:
    """The engine URL to use: ``url``, else ``$DOCKER_HOST``, else the default local socket."""
    return url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def redact(url: str) -> str:
    """The URL as records and logs keep it: :func:`toolchain.redaction.redact_url`, the one rule for every URL."""
    from toolchain.redaction import redact_url

    return redact_url(url)


def connect(url: str | None = None, *, insecure: bool = False, timeout: float = 120.0) -> Any:
    """A ``docker.DockerClient`` for ``url`` that has answered a ping.

    Raises:
        UsageError: An unknown scheme, or plain tcp:// without TLS and without ``insecure``.
        MissingEnvironmentError: The docker SDK is missing, or the engine cannot be reached.
    """
    try:
        import docker
        import docker.errors
        import docker.tls
    except ImportError as exc:
        raise missing_extra("the docker SDK", "deploy") from exc
    url = engine_url(url)
    scheme = urlparse(url).scheme
    if scheme not in SCHEMES:
        raise UsageError(f"unsupported Docker Engine URL {redact(url)!r}: use unix://, ssh://user@host or tcp:// with TLS")
    kwargs: dict[str, Any] = {"base_url": url, "timeout": timeout}
    if scheme == "ssh":
        _check_ssh_support()
        kwargs["use_ssh_client"] = True
    if scheme in ("tcp", "https"):
        cert_dir = os.environ.get("DOCKER_CERT_PATH")
        if cert_dir:
            certs = Path(cert_dir)
            kwargs["tls"] = docker.tls.TLSConfig(
                client_cert=(str(certs / "cert.pem"), str(certs / "key.pem")), ca_cert=str(certs / "ca.pem"), verify=True,
            )
            kwargs["base_url"] = url.replace("tcp://", "https://", 1)
        elif not insecure:
            raise UsageError(
                f"{redact(url)} is plain, unencrypted tcp: anyone on that network could control the unit. Use ssh://user@unit, "
                "or TLS (set DOCKER_CERT_PATH to a folder with ca.pem, cert.pem, key.pem), or pass --insecure on a closed test network"
            )
    try:
        client = docker.DockerClient(**kwargs)
        client.ping()
    except (docker.errors.DockerException, OSError) as exc:
        from toolchain.redaction import scrub

        why = scrub(exc)
        if scheme == "ssh":
            said = ssh_says(url, timeout=min(timeout, 20.0))
            why = f"{why}; ssh said: {said}" if said else why
        raise MissingEnvironmentError(
            f"cannot reach the Docker engine at {redact(url)}: {why}. Check that the unit is up, that dockerd runs there, "
            "and that you can `docker -H URL info` from here"
        ) from exc
    return client


def _check_ssh_support() -> None:
    """ssh:// engines need the SDK's ssh transport (it imports paramiko) and the system OpenSSH client."""
    try:
        import paramiko  # noqa: F401 - docker.transport.sshconn imports it even when the system ssh client is used
    except ImportError as exc:  # docker[ssh], in the [deploy] extra
        raise missing_extra("paramiko (the Docker SDK's ssh:// support)", "deploy") from exc
    if shutil.which("ssh") is None:
        raise MissingEnvironmentError("ssh:// units are reached through the system OpenSSH client, and `ssh` is not on "
                                      "PATH: install it (apt-get install openssh-client)")


def ssh_says(url: str, *, timeout: float = 20.0) -> str:
    """Why ``ssh`` cannot run ``docker`` on the unit of an ssh:// URL: its last words, redacted ("" when it can).

    The SDK starts ``ssh HOST docker system dial-stdio`` with stderr on our console and reports only a broken
    connection; this asks the same way, non-interactively (keys and ~/.ssh/config apply, no password prompt),
    and keeps what ssh or the far side said: a host key that changed, a refused key, no ``docker`` there.
    """
    from toolchain.redaction import scrub

    parts = urlparse(url)
    args = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(1, int(timeout))}"]
    if parts.username:
        args += ["-l", parts.username]
    if parts.port:
        args += ["-p", str(parts.port)]
    args += ["--", parts.hostname or "", "docker version --format '{{.Server.Version}}'"]
    try:
        done = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout + 5)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return scrub(exc)
    if done.returncode == 0:
        return ""
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip() and not line.startswith("@@@")]
    return scrub(" / ".join(lines[-3:])) or f"exit status {done.returncode}"


def engine_architecture(client: Any) -> str:
    """The engine host's CPU architecture in target terms (``x86_64`` / ``aarch64``)."""
    from toolchain.targets.profile import normalize_architecture

    return normalize_architecture(str(client.info().get("Architecture", "")))


def runs_as(client: Any, image_id: str) -> str:
    """The CPU architecture the engine runs ``image_id``'s binaries as: ``uname -m`` in a throwaway container.

    An x86-64 engine with qemu-user registered for arm64 (``scripts/binfmt_up arm64``) runs an arm64 image
    as ``aarch64``, emulated; one without says nothing (exec format error). Empty when it cannot run it.
    This probe, never a flag or a fleet file, decides what a unit can run.
    """
    import docker.errors

    from toolchain.runtime.machine import normalize_architecture

    try:
        out = client.containers.run(image_id, ["-m"], entrypoint=["uname"], network_disabled=True, remove=True,
                                    user="10001:10001")
    except docker.errors.DockerException:
        return ""
    return normalize_architecture(out.decode(errors="replace").strip())
