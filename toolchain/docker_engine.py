"""Connect to a Docker Engine by URL (a roadside unit, a build host, or this machine) with the docker SDK.

URLs: ``unix:///path/docker.sock``, ``ssh://user@unit`` (through the system ``ssh`` client, so keys, the
agent, known_hosts and ``~/.ssh/config`` with ProxyJump apply; always in batch mode with strict host key
checking: :mod:`toolchain.docker_ssh`), ``tcp://host:2376`` with TLS (``DOCKER_CERT_PATH`` holding ca.pem, cert.pem,
key.pem, as the docker CLI uses). Plain unencrypted ``tcp://`` gives anyone on the network root on the
unit, so it is refused unless ``insecure=True`` (``--insecure``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from toolchain.errors import MissingEnvironmentError, UsageError, missing_extra

SCHEMES = ("unix", "ssh", "tcp", "https", "npipe")
PING_TIMEOUT_S = 30.0
"""How long an engine has to answer its first requests (version, ping) before it is judged unreachable: an
engine whose socket accepts but never answers (a hung dockerd, a half-open link) fails in this time, not
``timeout`` (which later requests, such as a long load, keep)."""


def engine_url(url: str | None) -> str:
    """The engine URL to use: ``url``, else ``$DOCKER_HOST``, else the default local socket."""
    return url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def redact(url: str) -> str:
    """The URL as records and logs keep it: :func:`toolchain.redaction.redact_url`, the one rule for every URL."""
    from toolchain.redaction import redact_url

    return redact_url(url)


def connect(url: str | None = None, *, insecure: bool = False, timeout: float = 120.0,
            ping_timeout: float | None = None) -> Any:
    """A ``docker.DockerClient`` for ``url`` that has answered a ping within ``ping_timeout`` seconds (default
    :data:`PING_TIMEOUT_S`, at most ``timeout``; ssh:// units are bounded by ssh's ConnectTimeout instead).

    Raises:
        UsageError: An unknown scheme, or plain tcp:// without TLS and without ``insecure``.
        MissingEnvironmentError: The docker SDK is missing, or the engine cannot be reached (for ssh://: what ssh
            said, and for a host key that changed or is not pinned, which known_hosts entry to check and fix).
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
    first_s = min(timeout, PING_TIMEOUT_S if ping_timeout is None else ping_timeout)
    kwargs: dict[str, Any] = {"base_url": url, "timeout": first_s}
    if scheme == "ssh":
        _check_ssh_support()
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
        if scheme == "ssh":
            from toolchain.docker_ssh import ssh_client

            client = ssh_client(url, timeout=timeout)
        else:
            client = docker.DockerClient(**kwargs)
        client.ping()
        client.api.timeout = timeout
    except (docker.errors.DockerException, OSError) as exc:
        from toolchain.redaction import scrub

        why = scrub(exc)
        if scheme != "ssh" and "timed out" in why.lower():
            why = f"no answer within {first_s:g} s (the engine accepts connections but does not answer)"
        if scheme == "ssh":
            said, host_key = _ssh_diagnosis(url, timeout=min(timeout, 20.0))
            if host_key:  # not a link problem: ssh refused the unit, and says which known_hosts entry to fix
                raise MissingEnvironmentError(f"refused the unit at {redact(url)}: {said}") from exc
            why = f"ssh said: {said}" if said else why
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
    """Why ``ssh`` cannot run ``docker`` on the unit of an ssh:// URL, redacted ("" when it can).

    The SDK's connections keep ssh's stderr to themselves and report only a broken connection; this asks the
    same way (the same options: batch mode, strict host key checking; keys and ~/.ssh/config apply) and
    keeps what ssh or the far side said: a host key that changed or is unknown (explained, naming the
    known_hosts file to fix), a refused key, no ``docker`` there. Identity file paths are masked.
    """
    return _ssh_diagnosis(url, timeout=timeout)[0]


_CHANGED = re.compile(r"REMOTE HOST IDENTIFICATION HAS CHANGED|Host key for \S+ has changed")
_CHANGED_HOST = re.compile(r"Host key for (\S+) has changed")
_OFFENDING = re.compile(r"Offending (\S+) key in (.+):(\d+)")
_SENT = re.compile(r"fingerprint for the (\S+) key sent by the remote host is\s+(\S+?)\.?\s*$", re.MULTILINE)
_UNKNOWN = re.compile(r"No (\S+) host key is known for (\S+) and you have requested strict checking")
_KEY_PATH = re.compile(r"""(Load key |Permissions 0?\d+ for |[Ii]dentity file |no such identity: )(["']?)([^"'\s:<]+)""")


def _ssh_diagnosis(url: str, *, timeout: float) -> tuple[str, bool]:
    """``(what ssh says, whether it refused the unit's host key)``; ``("", False)`` when ssh gets through."""
    from toolchain.docker_ssh import ssh_args
    from toolchain.redaction import scrub

    args = ssh_args(url, connect_timeout=timeout)
    try:
        done = subprocess.run([*args, "docker version --format '{{.Server.Version}}'"], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout + 5, start_new_session=True)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return scrub(exc), False
    if done.returncode == 0:
        return "", False
    config = _ssh_config(args)
    text, host_key = _explain_ssh(done.stderr, config)
    return scrub(_mask_identity_files(text, config)) or f"exit status {done.returncode}", host_key


def _mask_identity_files(text: str, config: dict[str, list[str]]) -> str:
    """``text`` without the paths of the private keys (and certificates) ssh would use, or complained about."""
    for path in config.get("identityfile", []) + config.get("certificatefile", []):
        for form in {path, os.path.expanduser(path)}:
            if len(form) > 3:
                text = text.replace(form, "<identity file>")
    return _KEY_PATH.sub(lambda m: f"{m.group(1)}{m.group(2)}<identity file>", text)


def _ssh_config(args: list[str]) -> dict[str, list[str]]:
    """What ``ssh -G`` says the connection of ``args`` would use (key -> values); {} when it cannot tell."""
    try:
        done = subprocess.run([args[0], "-G", *args[1:]], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    config: dict[str, list[str]] = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition(" ")
        if value:
            config.setdefault(key.lower(), []).append(value.strip())
    return config


def _explain_ssh(stderr: str, config: dict[str, list[str]]) -> tuple[str, bool]:
    """ssh's stderr as one line; a refused host key as an explanation of what to check and which file to fix."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and not line.startswith("@@@")]
    files = " ".join(config.get("userknownhostsfile", [])).split() or ["~/.ssh/known_hosts"]
    known = " or ".join(files)
    if _CHANGED.search(stderr):
        offending, sent = _OFFENDING.search(stderr), _SENT.search(stderr)
        where = f"{offending.group(2)} (line {offending.group(3)})" if offending else known
        presents = f"now presents the {sent.group(1)} key {sent.group(2)}" if sent else "presents another key"
        changed = _CHANGED_HOST.search(stderr)  # the unit, or the bastion on the way (ProxyJump)
        host, port = (config.get("hostname") or ["HOST"])[0], (config.get("port") or ["22"])[0]
        name = changed.group(1) if changed else host if port == "22" else f"[{host}]:{port}"
        fix = offending.group(2) if offending else files[0]
        return (f"the ssh host key of {name} has changed (Host key verification failed): it {presents}, but {where} pins "
                f"another, so ssh refused it and nothing was sent. If the unit was reinstalled or its key rotated, "
                f"check that fingerprint on the unit itself (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then "
                f"replace the old entry in {fix} (ssh-keygen -f \"{fix}\" -R \"{name}\", then add the new key); "
                "otherwise someone may be intercepting the link"), True
    unknown = _UNKNOWN.search(stderr)
    if unknown:
        name = unknown.group(2)
        host, _, port = name.strip("[").partition("]:")
        scan = f"ssh-keyscan -p {port} {host}" if port else f"ssh-keyscan {name}"
        return (f"the ssh host key of {name} is not pinned (Host key verification failed: no {unknown.group(1)} key for it "
                f"in {known}); toolchain reaches only units whose host key is known. Add it to "
                f"{files[0]} once you have checked its fingerprint on the unit (`{scan}` prints it, "
                "`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the unit shows the one to expect)"), True
    return " / ".join(lines[-3:]), False


def engine_architecture(client: Any, info: Mapping[str, Any] | None = None) -> str:
    """The engine host's CPU architecture in target terms (``x86_64`` / ``aarch64``).

    Args:
        info: The engine's ``/info`` when the caller already asked for it (each ask is a round trip to the unit).
    """
    from toolchain.targets.profile import normalize_architecture

    return normalize_architecture(str((client.info() if info is None else info).get("Architecture", "")))


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
