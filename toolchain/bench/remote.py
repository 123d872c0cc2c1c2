"""``toolchain bench ARTIFACT --on URL``: the benchmark run inside the unit's runtime image, on its engine.

The image is the one ``package`` built for the artifact's target (or ``--image``); it runs
:mod:`toolchain.bench.onunit` with the same bundle, runner, preprocessing and pipeline as ``serve``, so
the numbers are what the unit will run. Sources are what the unit sees: a camera URL (the container
shares the unit's network), a local file (sent along into the container) or ``synthetic``. The report,
per-frame times and device facts come back as JSON; the plots are drawn here; the benchmark is
recorded with the unit's facts as read inside the container.

Under emulation (an x86-64 engine running the arm64 image through qemu-user) latency says nothing about
the hardware: such a run is recorded with ``emulated: true`` and gets no real-time verdict.

Camera secrets (``--credentials FILE``, by camera name as ``serve`` takes them) are checked here, then reach
the container the way they reach a deployed ``serve``: as the file ``serve`` reads
(:data:`toolchain.serve.credentials.CONTAINER_PATH`, mode 0400, owned by the image's user), copied in
before the start and gone with the container; never on its command line, in its environment, its labels or
the request. Only the cameras the sources name are sent.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from toolchain.bench.run import (
    BenchConfig,
    budget_for,
    plots_from_arrays,
    record_benchmark,
)
from toolchain.build.remote import WORKDIR
from toolchain.errors import (
    BadInputError,
    InputNotFoundError,
    MissingEnvironmentError,
    UsageError,
)
from toolchain.redaction import redact_url
from toolchain.runtime.sources import NETWORK_SCHEMES, camera_name
from toolchain.workspace import Workspace

IN_DIR = f"{WORKDIR}/in"
OUT_DIR = "/tmp/toolchain-bench-out"  # writable by the image's non-root user


def _image_for(workspace: Workspace, build: Any, image_ref: str | None) -> tuple[str, str | None]:
    """``(image reference on the engine, image record id or None)`` for ``build``."""
    if image_ref:
        return image_ref, None
    from toolchain.deploy.rollout import find_image_record

    record = find_image_record(workspace, build, str(build.body.get("target", "")))
    if record is None:
        raise MissingEnvironmentError(
            f"build {build.id[:12]} has no packaged image for {build.body.get('target')}: run `toolchain package "
            f"{build.id[:12]} --target {build.body.get('target')} --docker-host URL` first, or pass --image"
        )
    return str(record.body["image_id"]), record.id


def _ensure_image(client: Any, reference: str, image_record: str | None, workspace: Workspace
                  ) -> tuple[Any, dict[str, Any] | None]:
    """The image on the engine, and what bringing it there cost (None when the engine had it).

    An engine without it is sent its checked ``package --save`` tarball as ``deploy`` sends a release with
    ``transfer = "load"`` (:func:`toolchain.images.transfer.transfer_image`): only the layers the engine lacks,
    gzip-compressed, retried when the link drops, checked on arrival.
    """
    import docker.errors

    try:
        return client.images.get(reference), None
    except docker.errors.ImageNotFound:
        pass
    if image_record is None:
        raise MissingEnvironmentError(f"the engine has no image {reference}; load it there or pass --image with one it has")
    from toolchain.images.archive import TarballArchive
    from toolchain.images.transfer import transfer_image
    from toolchain.release import saved_image_tarball

    record = workspace.registry.get(image_record)
    tarball = saved_image_tarball(record) if record is not None else None  # a bad tarball: BadInputError here
    if record is None or tarball is None:
        raise MissingEnvironmentError(
            f"the engine has no image {reference[:19]} and no saved tarball of it is known: package it on that engine "
            "(`toolchain package ... --docker-host URL`) or with --save FILE"
        )
    with tempfile.TemporaryDirectory(prefix="toolchain-bench-image-") as work:
        stats = transfer_image(client, transport="load", image_id=reference, tag=str(record.body["tag"]),
                               archive=TarballArchive(lambda: tarball, Path(work)), pushed=None)
    return client.images.get(reference), stats.to_json()


def _sources(specs: tuple[str, ...]) -> tuple[list[str], dict[str, Path], bool]:
    """The sources as the container sees them, the local files to send along, and whether it needs a network.

    A camera's name (``NAME=URL``) stays with it, so the credentials file applies there as it does here.
    """
    seen, files, network = [], {}, False
    for i, spec in enumerate(specs):
        _, url = camera_name(spec, i)
        named = spec[: len(spec) - len(url)]  # "NAME=" or ""
        if url.startswith(NETWORK_SCHEMES):
            seen.append(spec)
            network = True
        elif url.startswith("synthetic"):
            seen.append(spec)
        else:
            spec = url
            path = Path(spec)
            if path.is_dir():
                raise UsageError(f"--source {spec} is a directory; with --on send a video file, a camera URL or synthetic")
            if not path.is_file():
                raise InputNotFoundError(f"--source {spec} does not exist here; with --on, a file is sent to the unit")
            name = f"{len(files)}-{path.name}"
            files[f"in/{name}"] = path
            seen.append(f"{named}{IN_DIR}/{name}")
    return seen, files, network


def _credentials(config: BenchConfig) -> str | None:
    """The credentials file the container gets (JSON, the named cameras only), or None without --credentials.

    Checked here as ``serve`` checks it, before anything reaches the unit.
    """
    if config.credentials is None:
        return None
    from toolchain.serve.credentials import load_credentials, to_json
    from toolchain.serve.service import with_credentials

    credentials = load_credentials(config.credentials)
    with_credentials([camera_name(spec, i) for i, spec in enumerate(config.stream_specs)], credentials)
    return to_json(credentials)


def _user_ids(image: Any) -> tuple[int, int]:
    """``(uid, gid)`` the image's containers run as (its ``USER``; root when it sets none)."""
    user = str((image.attrs.get("Config") or {}).get("User") or "0")
    uid, _, gid = user.partition(":")
    if not uid.isdigit() or not (gid or uid).isdigit():
        raise UsageError(f"the image runs as user {user!r}, not a numeric uid[:gid], so the camera credentials file "
                         "cannot be made readable to it alone; package the image with `toolchain package` (USER 10001)")
    return int(uid), int(gid or uid)


def run_bench_on(workspace: Workspace, config: BenchConfig, where: str, *, image: str | None = None,
                 insecure: bool = False, timeout_s: float | None = None) -> dict[str, Any]:
    """Benchmark ``config.artifact`` (a build) on the engine at ``where``, in its runtime image.

    Returns the bench JSON of a local run plus ``where`` (the engine URL, redacted), ``device`` (the
    unit's facts read in the container, and the engine's own architecture) and ``emulated``.
    """
    from toolchain.bench.subject import resolve_subject
    from toolchain.build.remote import run_container
    from toolchain.docker_engine import connect
    from toolchain.images.architecture import can_run

    if config.pure:
        raise UsageError("--pure is not available with --on; bench the stream path on the unit")
    if config.vehicles is not None and config.vehicles.finder != "motion":
        raise UsageError("--detector ONNX is not sent to a unit: bench --on finds vehicles by motion; bench the "
                         "detector here, or leave --detector out")
    subject = resolve_subject(workspace, config.artifact)
    if subject.record is None or subject.record.kind != "build":
        raise UsageError(f"{config.artifact} is not a build: --on runs a packaged build's image; build it for the unit's "
                         "target and package it first")
    build = subject.record
    reference, image_record = _image_for(workspace, build, image)
    sources, files, network = _sources(config.stream_specs)
    secrets = _credentials(config)
    request = {"sources": sources, "fps": config.fps, "loop": config.loop, "threads": config.threads,
               "pipeline": asdict(config.pipeline_config(budget_for(config, subject)))}
    if config.vehicles is not None:  # the vehicle pipeline, as the unit's serve --line runs it
        from toolchain.bench.onunit import vehicles_to_json

        request["vehicles"] = vehicles_to_json(config.vehicles)
    if secrets is not None:
        from toolchain.serve.credentials import CONTAINER_PATH

        request["credentials"] = CONTAINER_PATH  # where the file is, not what it holds
    client = connect(where, insecure=insecure)
    try:
        image_obj, transfer = _ensure_image(client, reference, image_record, workspace)
        labels = image_obj.labels or {}
        if labels.get("org.toolchain.artifact") not in (None, build.id):
            raise BadInputError(f"image {reference[:19]} carries build {labels['org.toolchain.artifact'][:12]}, not "
                                f"{build.id[:12]}; pass the image packaged from this build")
        target = str(build.body.get("target", ""))
        from toolchain.targets.profile import load_target

        arch = load_target(target).architecture
        # Probed on an engine of the target's CPU too: the image may be an --image given by hand.
        fit = can_run(client, image_obj.id, arch, probe_native=True)
        engine_arch = fit.engine_architecture
        if not fit.runs:
            raise MissingEnvironmentError(
                f"the engine at {redact_url(where)} ({engine_arch}) cannot run the {arch} image of {target} "
                f"(uname -m gave {fit.ran or 'nothing'}); bench on a unit of that target, or register qemu-user here "
                "(`scripts/binfmt_up arm64`) for an emulated run"
            )
        emulated = fit.emulated
        archives = []
        if secrets is not None:
            from toolchain.serve.credentials import container_archive

            uid, gid = _user_ids(image_obj)
            archives.append(container_archive(secrets, uid=uid, gid=gid))
        limit = timeout_s or (config.warmup_s + config.duration_s) * (20 if emulated else 3) + 120
        with tempfile.TemporaryDirectory(prefix="toolchain-bench-on-") as tmp:
            out = Path(tmp)
            runtime = "nvidia" if build.body.get("backend") == "tensorrt" else None
            code, logs = run_container(
                client, image_obj.id, entrypoint=["python3", "-m", "toolchain.bench.onunit"],
                command=[f"{WORKDIR}/request.json", OUT_DIR],
                files={"request.json": json.dumps(request).encode(), **files}, fetch=OUT_DIR, out_dir=out,
                timeout_s=limit, runtime=runtime, network_mode="host" if network else None, role="bench",
                max_output_bytes=256 << 20, what="the benchmark", archives=archives)
            if code != 0:
                error_file = out / "error.json"
                detail = (json.loads(error_file.read_text())["error"]["message"] if error_file.is_file()
                          else logs.strip()[-1500:])
                raise (MissingEnvironmentError if code == 5 else BadInputError)(
                    f"the benchmark on {redact_url(where)} failed (exit {code}): {detail}")
            result = json.loads((out / "report.json").read_text())
    finally:
        client.close()
    report = result["report"]
    if config.vehicles is not None and report.get("pipeline") != "vehicles":
        raise BadInputError(f"image {reference[:19]} ran frames, not the vehicle pipeline: its runtime predates "
                            "--line; package the build again with this toolchain and bench that image")
    device = {**result["device"], "engine_architecture": engine_arch, "emulated": emulated,
              "runner_device": result.get("runner_device", "")}
    if emulated:
        report["realtime"] = None  # latency under qemu-user says nothing about the hardware
        report["verdict"] = (f"no real-time verdict: the {arch} image ran emulated on an {engine_arch} engine (qemu-user), "
                             f"so its latency ({report['e2e_ms']['p99']} ms p99) does not represent {target} hardware")
    full = {"artifact": subject.ref, "artifact_id": build.id, "artifact_kind": subject.kind, "target": target,
            "runner": result.get("runner", ""), "size_mb": round(subject.size_bytes / 1e6, 3),
            "accuracy": subject.accuracy, "device": device, "where": redact_url(where), "emulated": emulated,
            "image": image_obj.id, "image_record": image_record, "image_transfer": transfer,
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "config": config.to_json(), **report}
    plots: dict[str, Path] = {}
    try:
        plots = plots_from_arrays(result["frames"], full, config.plots_dir)
    except MissingEnvironmentError as exc:
        full["plots_error"] = str(exc)
    full["plots"] = {name: str(path) for name, path in plots.items()}
    if config.record:
        full["benchmark"], blobs = record_benchmark(workspace, subject, full, plots, config.plots_dir)
    return full
