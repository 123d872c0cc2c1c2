"""``toolchain deploy``: resolve the release per target, verify it, roll it out to a fleet, record each unit.

Order: canary units first (``canary = true`` in the fleet file, plus the first ``--canary N`` units);
when a canary fails, or no canary could be reached, the rest are skipped. Then the other units,
``--parallel K`` at a time (default :data:`DEFAULT_PARALLEL`). A unit that cannot be reached (nothing
listens, or its engine accepts but does not answer within ``docker_engine.PING_TIMEOUT_S``), refuses, or
whose release never gets healthy is reported and the others go on. Every
unit's outcome is committed as a ``deployment`` record (unit, image digest, artifact, result, time)
linked to the image and the build.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolchain.deploy.fleet import Fleet, Unit, load_fleet
from toolchain.deploy.unit import (
    FAILED, SKIPPED, UNREACHABLE, Release, UnitResult, deploy_unit, rollback_unit, serving_containers,
)
from toolchain.errors import BadInputError, InputNotFoundError, MissingEnvironmentError, UsageError
from toolchain.images.archive import TarballArchive
from toolchain.images.pull import PushedImage
from toolchain.progress import NullProgress, Progress
from toolchain.redaction import redact_url, scrub
from toolchain.registry import NewRecord, Record
from toolchain.release import checked_image_tarball, saved_image_tarball
from toolchain.targets.profile import load_target
from toolchain.workspace import Workspace

DEFAULT_PARALLEL = 8
"""Units deployed at once by default. Each unit costs the workstation one thread and one engine connection
and mostly waits (on the unit's link, its engine, its health check: tens of seconds), so 8 keeps 50 units
to about 7 rounds without 50 transfers at once sharing the workstation's own uplink (``load``) or the
registry's (``pull``); a hung unit holds one of the 8 for at most the connect timeout."""

QUEUED, STARTED = "queued", "deploying"
"""The live states of a unit before its result (``on_state``): waiting for a slot, and connecting /
transferring / waiting for health; then its result (``deployed``, ``rolled-back``, ``unreachable``...)."""

StateHook = Callable[[str, str, str], None]
"""``on_state(unit, state, detail)``: called from worker threads as a unit moves (see :data:`QUEUED`)."""


@dataclass(frozen=True, kw_only=True)
class DeployConfig:
    """Options of ``toolchain deploy``.

    Attributes:
        ref: ``MODEL@ALIAS`` (resolved per unit target to a build and its newest image), or an image record.
        fleet: The fleet file.
        canary: The first N units (fleet order) are canaries too.
        parallel: Units deployed at once.
        units: Only these units (default: all).
        insecure: Allow plain tcp:// engine URLs.
        image_tar: A ``docker save`` tarball of the image to load on units (default: the one
            ``package --save`` wrote, else exported from the engine that built the image).
        source_host: Engine holding the packaged image (default: where ``package`` built it, else $DOCKER_HOST).
        health_timeout_s: Override every unit's health timeout.
    """

    ref: str
    fleet: Path
    canary: int = 0
    parallel: int = DEFAULT_PARALLEL
    units: tuple[str, ...] = ()
    insecure: bool = False
    image_tar: Path | None = None
    source_host: str | None = None
    health_timeout_s: float | None = None

    def __post_init__(self) -> None:
        if self.parallel < 1:
            raise UsageError("--parallel must be at least 1")
        if self.canary < 0:
            raise UsageError("--canary must be >= 0")
        if self.health_timeout_s is not None and self.health_timeout_s <= 0:
            raise UsageError("--health-timeout must be positive (seconds)")


@dataclass
class DeployReport:
    """The outcome of one ``deploy`` run."""

    deployment: str
    ref: str
    fleet: str
    releases: dict[str, dict[str, Any]]
    units: list[UnitResult] = field(default_factory=list)
    stopped: str = ""
    action: str = "rollout"
    unrecorded: list[str] = field(default_factory=list)
    pending_file: str = ""
    record_error: str = ""

    @property
    def ok(self) -> bool:
        return all(u.ok for u in self.units)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for unit in self.units:
            counts[unit.result] = counts.get(unit.result, 0) + 1
        return counts

    def to_json(self) -> dict[str, Any]:
        return {"deployment": self.deployment, "action": self.action, "ref": self.ref, "fleet": self.fleet, "ok": self.ok,
                "counts": self.counts(), "stopped": self.stopped, "releases": self.releases,
                "bytes_sent": sum(u.transfer.bytes_sent for u in self.units),
                "units": [u.to_json() for u in self.units],
                "unrecorded": list(self.unrecorded), "pending_file": self.pending_file, "record_error": self.record_error}

    def recording_problem(self) -> str:
        """What to tell the user when some units' deployment records could not be written, else ""."""
        if not self.unrecorded:
            return ""
        return (f"the registry did not take the deployment records of {', '.join(self.unrecorded)} "
                f"({self.record_error}); the units are as reported above. Their records are saved in "
                f"{self.pending_file} and are written by the next `toolchain deploy` or `toolchain deploy status` "
                "with this workspace once the registry answers")


def find_image_record(workspace: Workspace, build: Record, target: str) -> Record | None:
    """The image to ship for ``build`` on ``target``: the newest packaged from it, passing over images that
    already failed their health check on a unit (rolled back) while another exists; name an image record
    to deploy such an image anyway.
    """
    images = []
    for link in workspace.registry.links_to(build.id):
        record = workspace.registry.get(link.record_id)
        if record is not None and record.kind == "image" and record.body.get("target") == target:
            images.append(record)
    if not images:
        return None

    def rolled_back(image: Record) -> bool:
        for link in workspace.registry.links_to(image.id):
            other = workspace.registry.get(link.record_id)
            if other is not None and other.kind == "deployment" and other.body.get("result") == "rolled-back":
                return True
        return False

    images.sort(key=lambda r: (not rolled_back(r), r.created_at, r.id))
    return images[-1]


def _image_ref(workspace: Workspace, ref: str) -> Record | None:
    from toolchain.registry.ops import resolve_record

    try:
        return resolve_record(workspace, ref, kind="image").record
    except InputNotFoundError:
        return None


def _release_archive(image: Record, config: DeployConfig, work: Path) -> TarballArchive:
    """The image's archives for ``load`` transfers (:class:`toolchain.images.archive.TarballArchive`), made once
    each for every unit of the deployment. The whole tarball is ``--image-tar``, the one ``package --save`` wrote,
    or one exported now, checked by :func:`toolchain.release.checked_image_tarball` before any unit loads it."""
    return TarballArchive(lambda: _find_or_make_tarball(image, config, work), work)


def _find_or_make_tarball(image: Record, config: DeployConfig, work: Path) -> Path:
    """The image's checked ``docker save`` tarball: ``--image-tar``, the one ``package --save`` wrote, or one
    exported now from the engine that built it."""
    if config.image_tar is not None:
        return checked_image_tarball(config.image_tar, None, image)
    saved_tarball = saved_image_tarball(image)
    if saved_tarball is not None:
        return saved_tarball
    from toolchain.docker_engine import connect
    from toolchain.images.save import save_image

    host = config.source_host or image.body.get("docker_host") or None
    client = connect(host, insecure=config.insecure)
    try:
        import docker.errors

        try:
            held = client.images.get(image.body["image_id"])
        except docker.errors.ImageNotFound as exc:
            raise MissingEnvironmentError(
                f"the engine {host or '$DOCKER_HOST'} no longer has image {image.body['image_id'][:19]}; repackage "
                "it (`toolchain package`), pass --image-tar with its saved tarball, or --from the engine that has it"
            ) from exc
        saved = save_image(held, work / "image.tar", image.body["tag"])
    finally:
        client.close()
    return checked_image_tarball(Path(saved["path"]), saved["sha256"], image)


def latest_push(workspace: Workspace, image_record: str) -> PushedImage | None:
    """Where the image was last pushed (``package --push``), as units pull it: by digest."""
    pushes = [record for link in workspace.registry.links_to(image_record)
              if (record := workspace.registry.get(link.record_id)) is not None and record.kind == "push"]
    if not pushes:
        return None
    body = max(pushes, key=lambda r: (r.created_at, r.id)).body
    return PushedImage(registry=body["registry"], repository=body["repository"], digest=body["digest"],
                       manifest_size=int(body.get("manifest_size") or 0), config_size=int(body.get("config_size") or 0),
                       layers=tuple((str(d), int(s)) for d, s in body.get("layers") or ()))


def prepare_releases(workspace: Workspace, config: DeployConfig, targets: list[str], work: Path
                     ) -> tuple[dict[str, Release], dict[str, dict[str, Any]]]:
    """The release for each target, after blob verification; and a JSON description of each."""
    from toolchain.release import resolve_build, verify_engine

    image_named = _image_ref(workspace, config.ref)
    releases: dict[str, Release] = {}
    described: dict[str, dict[str, Any]] = {}
    for target_name in targets:
        target = load_target(target_name)
        if image_named is not None:
            image = image_named
            if image.body.get("target") != target.name:
                raise BadInputError(f"image {image.id[:12]} is for {image.body.get('target')}, but the fleet has "
                                    f"{target.name} units; deploy with --unit, or MODEL@ALIAS to pick per target")
            build = workspace.registry.get(image.body["build"])
            if build is None:
                raise InputNotFoundError(f"image {image.id[:12]}'s build {image.body['build'][:12]} is not in the registry")
        else:
            build, _ = resolve_build(workspace, config.ref, target)
            image = find_image_record(workspace, build, target.name)
            if image is None:
                raise MissingEnvironmentError(
                    f"{config.ref} is build {build.id[:12]} for {target.name}, which has not been packaged: run "
                    f"`toolchain package {config.ref} --target {target.name}` first"
                )
        verify_engine(workspace, build)  # nothing is deployed from a blob that fails verification
        body = image.body
        releases[target.name] = Release(
            image_record=image.id, image_id=body["image_id"], tag=body["tag"], model=body["model"], build=build.id,
            target=target.name, artifact_sha256=body["artifact_sha256"], backend=body.get("backend", "onnxruntime"),
            archive=_release_archive(image, config, work), pushed=latest_push(workspace, image.id),
        )
        described[target.name] = {"image": image.id, "image_id": body["image_id"], "tag": body["tag"],
                                  "model": body["model"], "build": build.id, "artifact_sha256": body["artifact_sha256"]}
    return releases, described


RECORD_ATTEMPTS = 4
"""Tries to write one unit's deployment record before it is saved for later (the registry may be restarting)."""

RECORD_FIRST_WAIT_S = 0.5
"""Wait before the second try; it doubles for each try after (0.5 + 1 + 2 s in all)."""

PENDING_DIR = "deploy-pending"
"""Workspace folder of deployment records the registry did not take, written by the next deploy or status."""


def _deployment_body(report: DeployReport, result: UnitResult, release: Release | None, finished_at: str,
                     image_record: str) -> dict[str, Any]:
    body = {"deployment": report.deployment, "ref": report.ref, "action": report.action, **result.to_json(),
            "finished_at": finished_at}
    if release is not None:
        body.update({"image": image_record, "image_id": release.image_id, "tag": release.tag,
                     "model": release.model, "build": release.build, "artifact_sha256": release.artifact_sha256})
    return body


def _deployment_record(workspace: Workspace, report: DeployReport, result: UnitResult, release: Release | None,
                       finished_at: str) -> NewRecord:
    image_record = ""
    links: tuple[tuple[str, str], ...] = ()
    if release is not None:
        image_record = release.image_record or _image_record_of(workspace, release.image_id)
        links = tuple((record_id, role) for record_id, role in ((image_record, "image"), (release.build, "build"))
                      if record_id and workspace.registry.get(record_id) is not None)
    return NewRecord(kind="deployment", name=result.unit, body=_deployment_body(report, result, release, finished_at,
                                                                                image_record), links=links)


def _image_record_of(workspace: Workspace, image_id: str) -> str:
    """The newest image record of ``image_id`` in this registry, or "" (a unit may run images from elsewhere)."""
    matches = [r for r in workspace.registry.find(kind="image") if r.body.get("image_id") == image_id]
    return max(matches, key=lambda r: (r.created_at, r.id)).id if matches else ""


def _with_retries(work: Callable[[], Any]) -> Any:
    """``work()``, tried :data:`RECORD_ATTEMPTS` times with doubling waits while it raises (the last failure is raised)."""
    attempts, first_wait_s = RECORD_ATTEMPTS, RECORD_FIRST_WAIT_S
    for attempt in range(1, attempts + 1):
        try:
            return work()
        except Exception:  # noqa: BLE001 - any registry failure is worth another try; the last one is raised
            if attempt == attempts:
                raise
            time.sleep(first_wait_s * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def record_results(workspace: Workspace, report: DeployReport, release_of: Callable[[UnitResult], Release | None]) -> None:
    """Write one ``deployment`` record per unit of ``report``, each retried; never raises.

    Called once every unit has its result, so a registry that fails mid-rollout loses no unit's outcome:
    records it still refuses after the retries are saved to ``WORKSPACE/deploy-pending/DEPLOYMENT.json``
    (:func:`write_pending_records` commits them later) and named in ``report.unrecorded``.
    """
    finished_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    pending: list[dict[str, Any]] = []
    for result in report.units:
        release = release_of(result)
        try:
            new = _with_retries(lambda: _deployment_record(workspace, report, result, release, finished_at))
            _with_retries(lambda: workspace.registry.commit(new))
        except Exception as exc:  # noqa: BLE001 - the unit's outcome is kept on disk and reported instead
            report.unrecorded.append(result.unit)
            report.record_error = f"{type(exc).__name__}: {scrub(exc)}"
            pending.append(_pending_entry(report, result, release, finished_at))
    if pending:
        report.pending_file = str(_save_pending(workspace, report.deployment, pending))


def _pending_entry(report: DeployReport, result: UnitResult, release: Release | None, finished_at: str) -> dict[str, Any]:
    """A record the registry refused, as data: its body, and the ids its links would name (checked when written)."""
    image_record = release.image_record if release is not None else ""
    links = [[record_id, role] for record_id, role in ((image_record, "image"), (release.build, "build")) if record_id] \
        if release is not None else []
    return {"name": result.unit, "body": _deployment_body(report, result, release, finished_at, image_record),
            "links": links}


def _save_pending(workspace: Workspace, deployment: str, entries: list[dict[str, Any]]) -> Path:
    folder = workspace.root / PENDING_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{deployment}.json"
    tmp = folder / f".{path.name}.{uuid.uuid4().hex}"
    with open(tmp, "w", encoding="utf-8") as out:
        json.dump(entries, out, indent=1, sort_keys=True)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    return path


def write_pending_records(workspace: Workspace) -> list[str]:
    """Commit the deployment records an earlier deploy saved for later; returns the units written.

    A file is removed only after all its records are in (committing is idempotent, so a crash in between
    writes nothing twice); a registry that still refuses leaves the file for the next try.
    """
    folder = workspace.root / PENDING_DIR
    written: list[str] = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
            for entry in entries:
                links = tuple((record_id, role) for record_id, role in entry["links"]
                              if workspace.registry.get(record_id) is not None)
                workspace.registry.commit(NewRecord(kind="deployment", name=entry["name"], body=entry["body"],
                                                    links=links))
                written.append(entry["name"])
        except Exception:  # noqa: BLE001 - still refused (or unreadable): kept for the next try, never lost
            continue
        path.unlink()
    return written


def _summary(result: UnitResult) -> str:
    """A unit's result in a few words for the live view: what it sent, or why it failed."""
    if result.ok:
        moved = result.transfer
        return f"{moved.bytes_sent / 1e6:.2f} MB {moved.transport}" if moved.transport != "none" else "nothing sent"
    return result.message.split(". Check that")[0][:200]


def _state(on_state: StateHook | None, unit: str, state: str, detail: str = "") -> None:
    if on_state is not None:
        try:
            on_state(unit, state, detail)
        except Exception:  # noqa: BLE001 - a display that fails never stops a rollout
            pass


def _run_units(report: DeployReport, batch: list[Unit], parallel: int, one: Callable[[Unit], UnitResult],
               progress: Progress, on_unit: Callable[[UnitResult], None] | None,
               on_state: StateHook | None = None) -> list[UnitResult]:
    """Run ``one`` on each unit, ``parallel`` at a time; each result goes into ``report`` (recorded afterwards).

    A unit's own problems are its result (``deploy_unit`` never raises for them); should ``one`` raise all
    the same, that unit fails with the error and the others go on.
    """
    done = []

    def guarded(unit: Unit) -> UnitResult:
        _state(on_state, unit.name, STARTED)
        started = time.monotonic()
        try:
            result = one(unit)
        except Exception as exc:  # noqa: BLE001 - one unit's surprise is that unit's failure, not the fleet's
            result = UnitResult(unit=unit.name, url=redact_url(unit.url), target=unit.target, result=FAILED,
                                message=f"{type(exc).__name__}: {scrub(exc)}", seconds=time.monotonic() - started)
        _state(on_state, unit.name, result.result, _summary(result))
        return result

    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="deploy") as pool:
        futures = {pool.submit(guarded, unit): unit for unit in batch}
        for future in as_completed(futures):
            result = future.result()
            report.units.append(result)
            done.append(result)
            progress.advance()
            sent = f", {result.transfer.bytes_sent / 1e6:.2f} MB sent" if result.transfer.bytes_sent else ""
            progress.note(f"{result.unit}: {result.result}{sent}")
            if on_unit is not None:
                on_unit(result)
    return done


def deploy(workspace: Workspace, config: DeployConfig, progress: Progress | None = None,
           on_unit: Callable[[UnitResult], None] | None = None, on_state: StateHook | None = None) -> DeployReport:
    """Roll ``config.ref`` out to the fleet; returns every unit's result (see :class:`DeployReport`).

    ``on_state(unit, state, detail)`` follows each unit live: ``queued``, ``deploying``, then its result.
    """
    progress = progress or NullProgress()
    fleet = load_fleet(config.fleet)
    units = _select(fleet, config.units)
    write_pending_records(workspace)
    canaries = {u.name for u in units if u.canary} | {u.name for u in units[: config.canary]}
    with tempfile.TemporaryDirectory(prefix="toolchain-deploy-") as tmp:
        releases, described = prepare_releases(workspace, config, sorted({u.target for u in units}), Path(tmp))
        report = DeployReport(deployment=uuid.uuid4().hex[:16], ref=config.ref, fleet=str(fleet.path), releases=described)
        key = credentials_key(workspace) if any(u.credentials is not None for u in units) else b""
        progress.start(f"deploy {config.ref} to {len(units)} unit(s)", len(units))
        for unit in units:
            _state(on_state, unit.name, QUEUED, "canary" if unit.name in canaries else "")

        def one(unit: Unit) -> UnitResult:
            return deploy_unit(unit, releases[unit.target], deployment=report.deployment, insecure=config.insecure,
                               canary=unit.name in canaries, health_timeout_s=config.health_timeout_s,
                               credentials_key=key)

        def run(batch: list[Unit]) -> list[UnitResult]:
            return _run_units(report, batch, config.parallel, one, progress, on_unit, on_state)

        first = [u for u in units if u.name in canaries]
        rest = [u for u in units if u.name not in canaries]
        if first:
            outcome = run(first)
            failed = [r for r in outcome if not r.ok and r.result != UNREACHABLE]
            if failed or not any(r.ok for r in outcome):
                why = (f"canary {failed[0].unit} {failed[0].result}: {failed[0].message}" if failed
                       else "no canary could be reached")
                report.stopped = f"rollout stopped: {why}"
                for unit in rest:
                    skipped = UnitResult(unit=unit.name, url=redact_url(unit.url), target=unit.target, result=SKIPPED,
                                         message=report.stopped)
                    report.units.append(skipped)
                    _state(on_state, unit.name, SKIPPED, report.stopped)
                    if on_unit is not None:
                        on_unit(skipped)
                rest = []
        if rest:
            run(rest)
        progress.finish()
    order = {u.name: i for i, u in enumerate(units)}
    report.units.sort(key=lambda r: order[r.unit])
    record_results(workspace, report, lambda r: releases[r.target])
    return report


@dataclass(frozen=True, kw_only=True)
class RollbackConfig:
    """Options of ``toolchain deploy rollback``.

    Attributes:
        fleet: The fleet file.
        units: Only these units (default: all).
        model: The model to roll back (default: the one each unit serves).
        parallel: Units at once.
        insecure: Allow plain tcp:// engine URLs.
        health_timeout_s: Override every unit's health timeout.
    """

    fleet: Path
    units: tuple[str, ...] = ()
    model: str | None = None
    parallel: int = DEFAULT_PARALLEL
    insecure: bool = False
    health_timeout_s: float | None = None

    def __post_init__(self) -> None:
        if self.parallel < 1:
            raise UsageError("--parallel must be at least 1")
        if self.health_timeout_s is not None and self.health_timeout_s <= 0:
            raise UsageError("--health-timeout must be positive (seconds)")


def rollback(workspace: Workspace, config: RollbackConfig, progress: Progress | None = None,
             on_unit: Callable[[UnitResult], None] | None = None, on_state: StateHook | None = None) -> DeployReport:
    """Switch each unit back to the release it served before, from the images it kept: nothing is sent."""
    progress = progress or NullProgress()
    fleet = load_fleet(config.fleet)
    units = _select(fleet, config.units)
    write_pending_records(workspace)
    report = DeployReport(deployment=uuid.uuid4().hex[:16], ref="previous", fleet=str(fleet.path), releases={},
                          action="rollback")
    key = credentials_key(workspace) if any(u.credentials is not None for u in units) else b""
    progress.start(f"roll back {len(units)} unit(s)", len(units))
    for unit in units:
        _state(on_state, unit.name, QUEUED)

    def one(unit: Unit) -> UnitResult:
        return rollback_unit(unit, deployment=report.deployment, model=config.model, insecure=config.insecure,
                             health_timeout_s=config.health_timeout_s, credentials_key=key)

    _run_units(report, units, config.parallel, one, progress, on_unit, on_state)
    progress.finish()
    order = {u.name: i for i, u in enumerate(units)}
    report.units.sort(key=lambda r: order[r.unit])
    record_results(workspace, report, lambda r: r.release)
    return report


CREDENTIALS_KEY = "credentials-volume"
"""The team key (in the registry) whose HMAC names credential volumes on units."""


def credentials_key(workspace: Workspace) -> bytes:
    """The key that names credential volumes: the same for every workstation sharing this workspace's registry.

    Kept in the registry as a team key (written once, never printed), so a CI job and a laptop on one registry
    name a unit's credentials volume alike: the second sees ``unchanged`` and restarts nothing. A workspace
    from before team keys (``keys/credentials.key``) offers its key, so the first workstation to upgrade keeps
    its units' volume names; when the registry already holds one, the registry's stands.
    """
    legacy = workspace.root / "keys" / "credentials.key"
    offer = None
    if legacy.is_file():
        offer = legacy.read_bytes()
        if len(offer) != 32:
            raise BadInputError(f"{legacy} is not a 32-byte key (cut short?); remove it and deploy again")
    return workspace.registry.team_key(CREDENTIALS_KEY, offer=offer)


def _select(fleet: Fleet, names: tuple[str, ...]) -> list[Unit]:
    if not names:
        return list(fleet.units)
    return [fleet.unit(name) for name in names]


def fleet_status(workspace: Workspace | None, fleet_path: Path, *, units: tuple[str, ...] = (), insecure: bool = False,
                 parallel: int = 4) -> list[dict[str, Any]]:
    """What runs on each unit (from its engine and the containers' labels) and its last recorded deployment."""
    from toolchain.docker_engine import connect, redact

    fleet = load_fleet(fleet_path)
    selected = _select(fleet, units)

    def one(unit: Unit) -> dict[str, Any]:
        row: dict[str, Any] = {"unit": unit.name, "url": redact(unit.url), "target": unit.target, "reachable": False,
                               "architecture": "", "containers": [], "error": ""}
        try:
            client = connect(unit.url, insecure=insecure, timeout=30)
        except Exception as exc:  # noqa: BLE001 - an unreachable unit is a row, not a failure of the command
            row["error"] = scrub(exc)
            return row
        try:
            row["reachable"] = True
            from toolchain.docker_engine import engine_architecture

            row["containers"] = serving_containers(client)
            try:
                row["architecture"] = engine_architecture(client)
            except Exception:  # noqa: BLE001 - the containers are what the row is for; the CPU is extra
                row["architecture"] = ""
            for container in row["containers"]:  # an arm64 image on an x86-64 engine runs under qemu-user
                container["emulated"] = bool(container["architecture"]) and container["architecture"] != row["architecture"]
        except Exception as exc:  # noqa: BLE001 - an engine failing mid-way is this unit's row, the others go on
            row["error"] = f"{type(exc).__name__}: {scrub(exc)}"
        finally:
            client.close()
        return row

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        rows = list(pool.map(one, selected))
    if workspace is not None:
        write_pending_records(workspace)
        for row in rows:
            recorded = workspace.registry.find(kind="deployment", name=row["unit"])
            if recorded:
                last = max(recorded, key=lambda r: (r.created_at, r.id))
                row["last_deployment"] = {k: last.body.get(k) for k in
                                          ("deployment", "action", "ref", "result", "message", "image", "image_id", "tag",
                                           "finished_at", "artifact_sha256", "transport", "bytes_sent", "layers_sent",
                                           "layers_reused", "transfer_s")}
                row["last_deployment"]["record"] = last.id
    return rows
