"""One unit's rollout: check, transfer, start new, wait for health, stop old; roll back on failure.

Containers are named per model on every unit: ``toolchain-<model>`` is the one serving,
``toolchain-<model>-next`` the release being checked, ``toolchain-<model>-previous`` the one it
replaced (stopped, kept for a rollback). The old container keeps serving until the new one is
healthy, so a failed release leaves the unit as it was.

Every step looks at what is on the unit before acting, so a rerun after a crash finishes the job: a
switch that was cut short (the old container stopped, the healthy new one still ``-next``) is finished
first, so the unit serves again whatever the rerun deploys; a unit that already runs the image healthily
with the same settings (cameras, env, mounts: the ``org.toolchain.config`` label) is ``unchanged``; a
healthy ``-next`` of the same image and settings is adopted and promoted; anything else left over is
removed and redone.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolchain.deploy.fleet import Unit
from toolchain.errors import BadInputError, MissingEnvironmentError, ToolchainError
from toolchain.images.load import ImageArchive
from toolchain.images.outcome import TransferStats
from toolchain.images.pull import PushedImage
from toolchain.images.tags import slug
from toolchain.images.transfer import transfer_image
from toolchain.redaction import scrub_data

# Results: ok ones first.
DEPLOYED, UNCHANGED = "deployed", "unchanged"
ROLLED_BACK, FAILED, REFUSED, UNREACHABLE, SKIPPED = "rolled-back", "failed", "refused", "unreachable", "skipped"
OK_RESULTS = (DEPLOYED, UNCHANGED)
STOP_TIMEOUT_S = 30
SERVICE_UID = 10001  # the non-root USER of Dockerfile.jetson (tests check they agree)
TMPFS = {"/tmp": "rw,nosuid,nodev,noexec,size=64m,mode=1777"}  # the only writable path of a read-only service


@dataclass(frozen=True, kw_only=True)
class Release:
    """What goes to the units of one target.

    Attributes:
        image_record: The ``image`` record id.
        image_id: The image's id (``sha256:`` of its config): checked on the unit after transfer.
        tag: The image's tag (given to it on the unit, ``docker ps``).
        model, build, target, artifact_sha256: Identity (container labels, deployment records).
        backend: ``tensorrt`` engines get the NVIDIA container runtime by default.
        archive: The image as archives for ``load`` transfers (made once, on first need); None when the
            release must already be on the unit (a rollback).
        pushed: Where ``package --push`` put the image, for ``pull`` transfers (by digest).
    """

    image_record: str
    image_id: str
    tag: str
    model: str
    build: str
    target: str
    artifact_sha256: str
    backend: str
    archive: ImageArchive | None = None
    pushed: PushedImage | None = None


@dataclass
class UnitResult:
    """What happened on one unit."""

    unit: str
    url: str
    target: str
    result: str
    message: str = ""
    canary: bool = False
    container: str = ""
    container_id: str = ""
    http_port: int | None = None
    previous_image: str = ""
    transferred: bool = False
    health: dict[str, Any] = field(default_factory=dict)
    started_at: str = ""
    seconds: float = 0.0
    architecture: str = ""
    emulated: bool = False
    transfer: TransferStats = field(default_factory=TransferStats)
    pruned: list[str] = field(default_factory=list)
    release: Release | None = None  # what a rollback switched to (not in the JSON: its identity is in the record)

    @property
    def ok(self) -> bool:
        return self.result in OK_RESULTS

    def to_json(self) -> dict[str, Any]:
        """The result as JSON, scrubbed of credentials (messages quote engine errors and health logs)."""
        return scrub_data({"unit": self.unit, "url": self.url, "target": self.target, "result": self.result, "ok": self.ok,
                "message": self.message, "canary": self.canary, "container": self.container,
                "container_id": self.container_id, "http_port": self.http_port, "previous_image": self.previous_image,
                "transferred": self.transferred, "health": self.health, "started_at": self.started_at,
                "seconds": round(self.seconds, 3), "architecture": self.architecture, "emulated": self.emulated,
                **self.transfer.to_json(), "pruned": list(self.pruned)})


def container_names(model: str) -> tuple[str, str, str]:
    """``(serving, previous, next)`` container names of ``model`` on a unit."""
    base = f"toolchain-{slug(model)}"
    return base, f"{base}-previous", f"{base}-next"


def _get(client: Any, name: str) -> Any | None:
    import docker.errors

    try:
        return client.containers.get(name)
    except docker.errors.NotFound:
        return None


def _state(container: Any) -> tuple[str, str, int]:
    """``(status, health status, restart count)`` fresh from the engine."""
    container.reload()
    state = container.attrs.get("State", {})
    health = (state.get("Health") or {}).get("Status", "")
    return str(state.get("Status", "")), str(health), int(container.attrs.get("RestartCount", 0) or 0)


def _link_state(container: Any) -> str:
    """The container's status, or "unknown" when the unit cannot be asked (the link is down)."""
    try:
        return _state(container)[0]
    except Exception:  # noqa: BLE001 - the message is about the transfer; the state is extra
        return "unknown"


def _health_log(container: Any) -> str:
    log = ((container.attrs.get("State") or {}).get("Health") or {}).get("Log") or []
    return str(log[-1].get("Output", "")).strip()[-600:] if log else ""


def _logs_tail(container: Any, lines: int = 15) -> str:
    try:
        return container.logs(tail=lines).decode(errors="replace").strip()[-1500:]
    except Exception:  # noqa: BLE001 - logs are a courtesy in an error message
        return ""


def _stopped_or_restarted(container: Any, status: str, restarts: int) -> str:
    """How the container failed to stay up, for a message. A container running again after a restart has its
    exit code reset to 0 by Docker, so the code is given only while it is stopped (exited, dead, restarting)."""
    code = (container.attrs.get("State") or {}).get("ExitCode")
    exited = f" (exit code {code})" if status in ("exited", "dead", "restarting") and code is not None else ""
    if restarts > 0:
        return f"the container restarted {restarts} time(s){exited}: it keeps exiting"
    return f"the container {status}{exited}"


def wait_healthy(container: Any, timeout_s: float, *, poll_s: float = 1.0) -> tuple[bool, str]:
    """Wait for the container's HEALTHCHECK to say healthy; ``(ok, why not)``.

    Fails at once when the container exits, restarts (crash loop) or is reported unhealthy.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        status, health, restarts = _state(container)
        if health == "healthy":
            return True, ""
        if status in ("exited", "dead") or restarts > 0:
            return False, f"{_stopped_or_restarted(container, status, restarts)}: {_logs_tail(container)}"
        if health == "unhealthy":
            return False, f"its health check failed: {_health_log(container)}"
        if not health:
            return False, "the image has no HEALTHCHECK; package it with `toolchain package` (Dockerfile.jetson)"
        if time.monotonic() >= deadline:
            return False, f"not healthy after {timeout_s:.0f} s: {_health_log(container) or _logs_tail(container)}"
        time.sleep(poll_s)


_LOAD_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _unit_lock(url: str) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOAD_LOCKS.setdefault(url, threading.Lock())


def registry_login(credentials: Path | None, *registries: str) -> Any:
    """The login (a :class:`toolchain.serve.credentials.RegistryCredential`) the credentials file gives for the
    first of ``registries`` it names (the registry as the unit reaches it, then as it was pushed to); or None.

    Raises:
        InputNotFoundError / BadInputError: the file is missing or malformed.
    """
    if credentials is None:
        return None
    from toolchain.serve.credentials import load_registry_credentials

    logins = load_registry_credentials(credentials)
    return next((logins[name] for name in registries if name and name in logins), None)


def deliver_release_image(client: Any, unit: Unit, release: Release, note: Callable[[str], None] | None = None
                          ) -> TransferStats:
    """Put the release's image on the unit, sending only what it lacks (:mod:`toolchain.images.transfer`).

    Raises:
        MissingEnvironmentError: the transfer failed, or what arrived is not the packaged image.
    """
    login = registry_login(unit.credentials, unit.registry, release.pushed.registry) \
        if unit.transfer == "pull" and release.pushed is not None else None
    return transfer_image(client, transport=unit.transfer, image_id=release.image_id, tag=release.tag,
                          archive=release.archive, pushed=release.pushed, registry=unit.registry,
                          attempts=unit.transfer_attempts, compress=unit.compress, note=note, login=login,
                          credentials=str(unit.credentials or ""))


def _port_of(container: Any | None) -> int | None:
    if container is None:
        return None
    value = (container.attrs.get("Config", {}).get("Labels") or {}).get("org.toolchain.http_port")
    return int(value) if value and value.isdigit() else None


def _command(unit: Unit) -> list[str]:
    command: list[str] = []
    for camera in unit.cameras:
        command += ["--source", camera]
    if unit.loop:
        command.append("--loop")
    for line in unit.lines:
        command += ["--line", line]
    if unit.publish is not None:
        command += unit.publish.serve_args(unit.name)
    return command + list(unit.serve_args)


def _runtime(unit: Unit, release: Release) -> str | None:
    return unit.runtime if unit.runtime is not None else ("nvidia" if release.backend == "tensorrt" else None)


def container_config(unit: Unit, release: Release, credentials_volume: str = "") -> str:
    """Digest of what a service container is made of (image and the unit's settings, not its alternating port).

    Stored as the ``org.toolchain.config`` label: a container whose label differs (the fleet file changed its
    cameras, env, mounts, limits, credentials...) is replaced, not kept as ``unchanged``. The credentials
    enter only as their volume's name, a keyed digest that does not reveal them.
    """
    settings = {"image": release.image_id, "command": _command(unit), "env": sorted(unit.env), "network": unit.network,
                "runtime": _runtime(unit, release), "mounts": list(unit.mounts), "credentials": credentials_volume,
                "http_host": unit.http_host, "limits": list(unit.limits()), "read_only": unit.read_only,
                "log": [unit.log_driver, unit.log_max_size, unit.log_max_file]}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def unit_credentials(unit: Unit) -> str | None:
    """The credentials file ``serve`` reads on this unit (JSON: only this unit's cameras, and the broker's login
    when the unit publishes), or None.

    Raises:
        InputNotFoundError / BadInputError: the fleet's credentials file is missing or malformed, or names
            none of the unit's cameras (and has no broker login for a unit that publishes).
    """
    if unit.credentials is None:
        return None
    from toolchain.serve.credentials import load_credential_tables, to_json
    from toolchain.runtime.sources import camera_name

    tables = load_credential_tables(unit.credentials)  # one read of the file for all three tables
    broker = tables.broker if unit.publish is not None else None
    names = [camera_name(camera, i)[0] for i, camera in enumerate(unit.cameras)]
    mine = {name: tables.cameras[name] for name in names if name in tables.cameras}
    if not mine and broker is None and unit.transfer == "pull" and tables.registries:
        return None  # the file only logs the unit's engine in to the registry (never given to the unit's service)
    if not mine and broker is None:
        raise BadInputError(f"{unit.credentials} has credentials for none of {unit.name}'s cameras ({', '.join(names)}); "
                            "key them [cameras.NAME] by the NAME of each `NAME=URL` camera")
    return to_json(mine, broker)


def spool_volume_name(release: Release) -> str:
    """The unit's publishing spool volume: one per model, so unsent messages outlive upgrades and rollbacks."""
    return f"toolchain-{slug(release.model)}-spool"


def credentials_volume_name(release: Release, payload: str, key: bytes) -> str:
    """Name of the volume holding ``payload``: keyed by an HMAC, so equal secrets reuse it and the name reveals nothing."""
    digest = hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()[:20]
    return f"toolchain-{slug(release.model)}-credentials-{digest}"


def ensure_credentials_volume(client: Any, release: Release, name: str, payload: str) -> None:
    """Put ``payload`` into volume ``name`` as ``cameras.json`` (mode 0400, owned by the service user).

    A short-lived container of the release's image (never started, no network) has the volume mounted
    read-write only while the file is copied in; the service container mounts it read-only. Nothing of
    the secret reaches a command line, an environment variable or a label.
    """
    from toolchain.serve.credentials import CONTAINER_PATH, container_archive

    client.volumes.create(name=name, labels={"org.toolchain.role": "credentials",
                                             "org.toolchain.model": slug(release.model)})
    archive = container_archive(payload, uid=SERVICE_UID, gid=SERVICE_UID, path=CONTAINER_PATH.rsplit("/", 1)[1])
    writer = client.containers.create(release.image_id, entrypoint=["true"], command=[], network_disabled=True,
                                      user="0", labels={"org.toolchain.role": "credentials-writer"},
                                      volumes={name: {"bind": "/secrets", "mode": "rw"}})
    try:
        if not writer.put_archive("/secrets", archive):
            raise MissingEnvironmentError(f"the unit's engine did not accept the credentials file into volume {name}")
    finally:
        writer.remove(force=True)


def ensure_spool_volume(client: Any, release: Release) -> str:
    """The model's spool volume on this engine, made (labelled) if missing; its name."""
    import docker.errors

    name = spool_volume_name(release)
    try:
        client.volumes.get(name)
    except docker.errors.NotFound:
        client.volumes.create(name=name, labels={"org.toolchain.role": "spool", "org.toolchain.model": release.model})
    return name


def prune_credentials_volumes(client: Any, release: Release) -> None:
    """Remove this model's credential volumes that no container uses any more (best effort)."""
    import docker.errors

    for volume in client.volumes.list(filters={"label": ["org.toolchain.role=credentials",
                                                         f"org.toolchain.model={slug(release.model)}"]}):
        try:
            volume.remove()
        except docker.errors.APIError:
            pass  # in use by the serving or the -previous container: kept for a rollback


def _config_of(container: Any | None) -> str:
    if container is None:
        return ""
    return str((container.attrs.get("Config", {}).get("Labels") or {}).get("org.toolchain.config", ""))


def lockdown(client: Any, unit: Unit, info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The container options that lock the service down: no capabilities, no privilege gain, a read-only root
    (a small tmpfs /tmp), memory/CPU/pids limits (CPUs clamped to what the unit has) and a rotating log.

    The non-root user comes from the image (``USER`` in Dockerfile.jetson).

    Args:
        info: The engine's ``/info`` when the caller already asked for it (a deploy asks once per unit: each ask
            is a round trip over the unit's link); else it is asked here.
    """
    from docker.types import LogConfig

    memory_mb, cpus, pids = unit.limits()
    try:
        unit_cpus = float((client.info() if info is None else info).get("NCPU") or cpus)
    except Exception:  # noqa: BLE001 - the limit stays as asked
        unit_cpus = cpus
    return {
        "cap_drop": ["ALL"], "security_opt": ["no-new-privileges:true"], "read_only": unit.read_only,
        "tmpfs": dict(TMPFS), "mem_limit": f"{memory_mb}m", "memswap_limit": f"{memory_mb}m",
        "nano_cpus": int(min(cpus, unit_cpus) * 1e9), "pids_limit": pids,
        "log_config": LogConfig(type=unit.log_driver, config={"max-size": unit.log_max_size,
                                                              "max-file": str(unit.log_max_file)}),
    }


def _create(client: Any, unit: Unit, release: Release, name: str, port: int, deployment: str,
            credentials_volume: str = "", info: Mapping[str, Any] | None = None) -> Any:
    from toolchain.serve.credentials import CONTAINER_DIR, CONTAINER_PATH, ENV

    labels = {
        "org.toolchain.deployment": deployment, "org.toolchain.unit": unit.name, "org.toolchain.http_port": str(port),
        "org.toolchain.image_record": release.image_record,
        "org.toolchain.config": container_config(unit, release, credentials_volume),
        "org.toolchain.deployed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    environment = {**dict(unit.env), "TOOLCHAIN_SERVE_PORT": str(port), "TOOLCHAIN_SERVE_HOST": unit.http_host}
    volumes = list(unit.mounts)
    if credentials_volume:
        volumes.append(f"{credentials_volume}:{CONTAINER_DIR}:ro")
        environment[ENV] = CONTAINER_PATH  # where the file is, not what it holds
    if unit.publish is not None:
        from toolchain.serve.publishing import CONTAINER_SPOOL_DIR

        # Read-write, the only writable place besides /tmp: a named volume made on first use takes the image's
        # /var/lib/toolchain/spool (owned by the service user) as its start, and stays when containers go.
        volumes.append(f"{ensure_spool_volume(client, release)}:{CONTAINER_SPOOL_DIR}:rw")
    return client.containers.create(
        release.image_id, command=_command(unit), name=name, labels=labels, detach=True,
        environment=environment, network_mode=unit.network,
        runtime=_runtime(unit, release), restart_policy={"Name": "unless-stopped"}, volumes=volumes or None,
        stop_signal="SIGTERM",
        # docker-init (tini) as PID 1: a SIGTERM that arrives before serve installs its handler (while it
        # imports or loads the model) still stops the container at once instead of after the stop timeout.
        init=True,
        **lockdown(client, unit, info),
    )


def deploy_unit(unit: Unit, release: Release, *, deployment: str, insecure: bool = False, canary: bool = False,
                health_timeout_s: float | None = None, connect_timeout_s: float = 30.0,
                credentials_key: bytes = b"") -> UnitResult:
    """Roll ``release`` out to ``unit``; never raises for the unit's own problems (they are the result).

    Args:
        credentials_key: Key of the HMAC that names the unit's credentials volume (the workspace's).
    """
    def work(client: Any, result: UnitResult) -> None:
        _deploy(client, unit, release, result, deployment=deployment, credentials_key=credentials_key,
                health_timeout_s=health_timeout_s or unit.health_timeout_s)

    return _on_unit(unit, work, insecure=insecure, canary=canary, connect_timeout_s=connect_timeout_s)


def rollback_unit(unit: Unit, *, deployment: str, model: str | None = None, insecure: bool = False,
                  health_timeout_s: float | None = None, connect_timeout_s: float = 30.0,
                  credentials_key: bytes = b"") -> UnitResult:
    """Switch ``unit`` back to the release it served before the current one, from the images it kept
    (:mod:`toolchain.deploy.retention`): nothing is transferred, and the new container must pass the same
    health check as any rollout before the current one stops.

    Args:
        model: The model to roll back (default: the only one the unit serves).
    """
    def work(client: Any, result: UnitResult) -> None:
        release = result.release = _previous_release(client, unit, model, result)
        if release is not None:
            _deploy(client, unit, release, result, deployment=deployment, credentials_key=credentials_key,
                    health_timeout_s=health_timeout_s or unit.health_timeout_s)
            if result.ok:
                result.message = f"rolled back to {release.tag} ({release.image_id[:19]}); {result.message}"

    return _on_unit(unit, work, insecure=insecure, canary=False, connect_timeout_s=connect_timeout_s)


def _previous_release(client: Any, unit: Unit, model: str | None, result: UnitResult) -> Release | None:
    """The release to roll back to, built from the kept image's labels; None (with the result set) if none."""
    from toolchain.deploy.retention import history, previous_release
    from toolchain.targets.profile import load_target

    serving = [c for c in serving_containers(client) if c["name"].startswith("toolchain-")
               and not c["name"].endswith(("-previous", "-next"))]
    if model is not None:
        serving = [c for c in serving if c["name"] == container_names(model)[0]]
    if len(serving) != 1:
        result.result = FAILED if not serving else REFUSED
        result.message = (f"nothing of {model or 'the toolchain'} serves on {unit.name}: deploy a release first" if not serving
                          else f"{unit.name} serves {', '.join(c['model'] or c['name'] for c in serving)}: pass --model")
        return None
    current = serving[0]
    model_slug = current["name"][len("toolchain-"):]
    entry = previous_release(client, model_slug, current["image_id"])
    if entry is None:
        kept = len({e.image_id for e in history(client, model_slug)})
        result.result = FAILED
        result.message = (f"{unit.name} keeps no release of {model_slug} before the serving one ({kept} kept; the fleet's "
                          "retention sets how many): deploy the older release by name (`toolchain deploy NAME@vN`)")
        return None
    labels = client.api.inspect_image(entry.image_id).get("Config", {}).get("Labels") or {}
    previous = _get(client, container_names(model_slug)[1])
    record = (previous.labels.get("org.toolchain.image_record", "") if previous is not None
              and previous.attrs.get("Image") == entry.image_id else "")
    target = labels.get("org.toolchain.target") or unit.target
    return Release(image_record=record, image_id=entry.image_id, tag=entry.tag,
                   model=labels.get("org.toolchain.model") or model_slug, build=labels.get("org.toolchain.artifact", ""),
                   target=target, artifact_sha256=labels.get("org.toolchain.artifact_sha256", ""),
                   backend="tensorrt" if load_target(target).is_tensorrt else "onnxruntime")


def _on_unit(unit: Unit, work: Callable[[Any, UnitResult], None], *, insecure: bool, canary: bool,
             connect_timeout_s: float) -> UnitResult:
    """Connect to the unit's engine and run ``work``; the unit's problems become its result, never an exception."""
    from toolchain.docker_engine import connect, redact

    started = time.monotonic()
    result = UnitResult(unit=unit.name, url=redact(unit.url), target=unit.target, result=FAILED, canary=canary,
                        started_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    try:
        client = connect(unit.url, insecure=insecure, timeout=max(connect_timeout_s, 120.0))
    except MissingEnvironmentError as exc:
        result.result, result.message = UNREACHABLE, str(exc)
        result.seconds = time.monotonic() - started
        return result
    except ToolchainError as exc:  # plain tcp:// without --insecure, unknown scheme
        result.result, result.message = REFUSED, str(exc)
        result.seconds = time.monotonic() - started
        return result
    try:
        work(client, result)
    except ToolchainError as exc:
        result.result, result.message = FAILED, str(exc)
    except Exception as exc:  # noqa: BLE001 - an engine that breaks mid-way (connection lost) fails this unit only
        result.result, result.message = FAILED, f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
        result.seconds = time.monotonic() - started
    return result


def _deploy(client: Any, unit: Unit, release: Release, result: UnitResult, *, deployment: str, health_timeout_s: float,
            credentials_key: bytes = b"") -> None:
    from toolchain.images.architecture import can_run
    from toolchain.targets.profile import load_target

    architecture = load_target(unit.target).architecture
    if unit.target != release.target:
        result.result = REFUSED
        result.message = f"{unit.name} is a {unit.target} unit; the image is for {release.target}"
        return
    info = client.info()  # asked once per unit: the CPU here, the CPU count for the limits (each ask is a round trip)
    fit = can_run(client, None, architecture, info=info)  # before the transfer: the image is not on the unit yet
    arch = fit.engine_architecture
    result.architecture, result.emulated = arch, False
    if fit.runs is False:
        result.result = REFUSED
        result.message = (f"{unit.name} says it is {unit.target} ({architecture}) but its engine runs on {arch} and "
                          f"cannot run {architecture} binaries; fix its target in the fleet file")
        return
    serving_name, previous_name, next_name = container_names(release.model)
    _finish_interrupted_switch(client, serving_name, previous_name, next_name)
    payload = unit_credentials(unit)
    volume = credentials_volume_name(release, payload, credentials_key) if payload is not None else ""
    config = container_config(unit, release, volume)
    current = _get(client, serving_name)
    if current is not None:
        result.previous_image = str(current.attrs.get("Image", ""))
        status, health, _ = _state(current)
        if _config_of(current) == config and status == "running" and health == "healthy":
            leftover = _get(client, next_name)
            if leftover is not None:
                leftover.remove(force=True)
            result.result, result.message = UNCHANGED, "already serving this image, healthy"
            result.container, result.container_id, result.http_port = serving_name, current.id, _port_of(current)
            return

    try:
        with _unit_lock(unit.url):  # the image is loaded once per engine
            result.transfer = deliver_release_image(client, unit, release)
            result.transferred = result.transfer.transport != "none"
    except MissingEnvironmentError as exc:
        result.transfer = getattr(exc, "stats", result.transfer)
        state = _link_state(current) if current is not None else ""
        serves = (f": {serving_name} ({result.previous_image[:19]}) still serves" if state == "running" else
                  f": {serving_name} ({result.previous_image[:19]}) was not touched, so it still serves"
                  if state == "unknown" else "")
        raise MissingEnvironmentError(f"{exc}; nothing was changed on {unit.name}{serves}") from exc
    if not fit.native:
        # Another CPU than the engine's: what the engine actually runs is read by running the image (qemu-user
        # on an x86-64 engine runs arm64 images, emulated), never taken from the fleet file.
        fit = can_run(client, release.image_id, architecture, info=info)
        if not fit.runs:
            result.result = REFUSED
            result.message = (f"{unit.name}'s engine ({arch}) cannot run the {architecture} image (uname -m gave "
                              f"{fit.ran or 'nothing'}); nothing was changed")
            return
        result.architecture, result.emulated = architecture, fit.emulated

    candidate = _get(client, next_name)
    if candidate is not None:
        status, _, _ = _state(candidate)
        if not (_config_of(candidate) == config and status == "running"):
            candidate.remove(force=True)  # left by an interrupted run of another release or fleet entry: redo
            candidate = None
    # A crash-looping old container ("restarting") still grabs its port between crashes: keep off it too.
    current_port = _port_of(current) if current is not None and _state(current)[0] in ("running", "restarting") else None
    if candidate is None:
        port = unit.http_port + 1 if current_port == unit.http_port else unit.http_port
        if payload is not None:
            ensure_credentials_volume(client, release, volume, payload)
        candidate = _create(client, unit, release, next_name, port, deployment, volume, info)
        candidate.start()
    result.http_port = _port_of(candidate)
    healthy, why = wait_healthy(candidate, health_timeout_s)
    if not healthy:
        _, health_status, _ = _state(candidate)
        result.health = {"status": health_status, "log": _health_log(candidate)}
        candidate.remove(force=True)
        old_running = current is not None and _state(current)[0] == "running"
        result.result = ROLLED_BACK if old_running else FAILED
        result.message = f"the new container was not healthy ({why}); " + (
            f"removed it, {serving_name} ({result.previous_image[:19]}) still serves" if old_running
            else "removed it; no previous container to keep serving")
        return
    result.health = {"status": "healthy", "log": _health_log(candidate)}
    _promote(client, current, candidate, serving_name, previous_name, result)
    if result.ok:
        prune_credentials_volumes(client, release)
        _keep_history(client, unit, release, result)


def _keep_history(client: Any, unit: Unit, release: Release, result: UnitResult) -> None:
    """Tag the release in the unit's history and remove images beyond the unit's retention (best effort:
    the release serves either way; what could not be pruned is pruned after the next rollout)."""
    from toolchain.deploy.retention import prune, record_release

    try:
        record_release(client, slug(release.model), release.image_id)
        result.pruned = prune(client, slug(release.model), retention=unit.retention, keep={release.image_id},
                              model_label=release.model.split("@")[0])
    except Exception as exc:  # noqa: BLE001 - history is housekeeping; the rollout itself succeeded
        result.message += f"; the release history could not be updated ({type(exc).__name__}: {exc})"


def _finish_interrupted_switch(client: Any, serving_name: str, previous_name: str, next_name: str) -> None:
    """Finish a switch a crash cut short, so a rerun starts from a unit that serves.

    :func:`_promote` runs only once ``-next`` was healthy; it stops the old container, renames it
    ``-previous``, then renames ``-next``. A crash in between leaves a healthy, running ``-next`` and no
    running ``serving_name``: without this, a rerun of another release would remove the only container
    able to serve before its own candidate proved healthy.
    """
    candidate = _get(client, next_name)
    if candidate is None:
        return
    status, health, _ = _state(candidate)
    if status != "running" or health != "healthy":
        return
    current = _get(client, serving_name)
    if current is not None and _state(current)[0] in ("running", "restarting"):
        return  # the old one still serves: -next is an unfinished candidate, judged by the caller
    if current is not None:
        older = _get(client, previous_name)
        if older is not None:
            older.remove(force=True)
        current.rename(previous_name)
    candidate.rename(serving_name)


def _promote(client: Any, current: Any | None, candidate: Any, serving_name: str, previous_name: str,
             result: UnitResult) -> None:
    """Stop the old container, keep it as ``-previous``, name the new one ``serving_name``; undo on failure."""
    stopped = renamed = False
    try:
        if current is not None:
            current.stop(timeout=STOP_TIMEOUT_S)
            stopped = True
            older = _get(client, previous_name)
            if older is not None:
                older.remove(force=True)
            current.rename(previous_name)
            renamed = True
        candidate.rename(serving_name)
    except Exception as exc:  # noqa: BLE001 - put the old container back whatever went wrong
        undo: list[str] = []
        if current is not None and (renamed or stopped):
            try:
                if renamed:
                    current.rename(serving_name)
                if stopped:
                    current.start()
            except Exception as undo_exc:  # noqa: BLE001 - reported; the healthy new container is kept then
                undo.append(f"{type(undo_exc).__name__}: {undo_exc}")
        if undo or current is None:
            why = f" and the previous container could not be restored ({undo[0]})" if undo else ""
            result.result = FAILED
            result.message = (f"switching containers failed ({type(exc).__name__}: {exc}){why}; the new, healthy "
                              "container was left running as -next: rerun the deployment to finish the switch")
            return
        candidate.remove(force=True)
        result.result = ROLLED_BACK
        result.message = f"switching containers failed ({type(exc).__name__}: {exc}); the previous container serves again"
        return
    result.result = DEPLOYED
    result.container, result.container_id = serving_name, candidate.id
    result.message = "healthy; " + (f"previous container kept as {previous_name} (stopped)" if current is not None
                                    else "first deployment on this unit")


def _image_architecture(client: Any, image_id: str | None) -> str:
    from toolchain.runtime.machine import normalize_architecture

    try:
        return normalize_architecture(str(client.images.get(image_id).attrs.get("Architecture", ""))) if image_id else ""
    except Exception:  # noqa: BLE001 - an image gone from under a container: unknown
        return ""


def _publish_health(state: dict[str, Any]) -> dict[str, Any] | None:
    """Broker connectivity, spool depth and oldest unsent age from the container's last health check (the
    /healthz body the HEALTHCHECK printed), or None when the unit does not publish."""
    from toolchain.serve.healthcheck import publish_summary

    log = (state.get("Health") or {}).get("Log") or []
    return publish_summary(str(log[-1].get("Output", ""))) if log else None


def serving_containers(client: Any) -> list[dict[str, Any]]:
    """The toolchain service containers on a unit (any state), with their labels' lineage parsed."""
    rows = []
    for container in client.containers.list(all=True, filters={"label": "org.toolchain.role=serve"}):
        attrs = container.attrs
        labels = attrs.get("Config", {}).get("Labels") or {}
        state = attrs.get("State", {})
        try:
            lineage = json.loads(labels.get("org.toolchain.lineage", "[]"))
        except ValueError:
            lineage = []
        rows.append({
            "name": container.name, "id": container.id, "status": state.get("Status"),
            "health": (state.get("Health") or {}).get("Status", ""), "image_id": attrs.get("Image"),
            "image": (attrs.get("Config") or {}).get("Image"), "started_at": state.get("StartedAt"),
            "model": labels.get("org.toolchain.model"), "artifact": labels.get("org.toolchain.artifact"),
            "artifact_sha256": labels.get("org.toolchain.artifact_sha256"),
            "onnx_sha256": labels.get("org.toolchain.onnx_sha256"), "target": labels.get("org.toolchain.target"),
            "toolchain_version": labels.get("org.toolchain.toolchain_version"),
            "http_port": labels.get("org.toolchain.http_port"), "deployment": labels.get("org.toolchain.deployment"),
            "lineage": lineage, "architecture": _image_architecture(client, attrs.get("Image")),
            "publish": _publish_health(state),
        })
    return sorted(rows, key=lambda r: r["name"])
