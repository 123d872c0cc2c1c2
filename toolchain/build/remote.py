"""Run a self-contained builder script in a container on a Docker Engine (a roadside unit or build host).

The steps: check the engine's architecture, find (or pull) the build image, create a container with no
network, copy the builder script, the request and the ONNX in, start it, wait with a timeout, copy
OUTDIR out (engine, log, result), check the engine's sha256 against what the builder computed on the
unit, and remove the container whatever happened. Engine-specific runtime options (the NVIDIA runtime
on Jetson) come from the caller.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolchain.errors import BadInputError, MissingEnvironmentError, QualityGateError
from toolchain.hashing import sha256_file
from toolchain.images.ensure import ensure_image

WORKDIR = "/toolchain-build"
# The most a build may send back from OUTDIR (the tar stream ``get_archive`` returns: engine, log, result,
# timing cache). An engine is tens to hundreds of MB; past this the transfer is stopped and nothing is kept,
# so a unit that misbehaves cannot fill the workstation's disk.
MAX_OUTPUT_BYTES = 8 << 30


@dataclass(frozen=True, kw_only=True)
class ContainerJob:
    """One builder run in a container.

    Attributes:
        image: The build image (must hold python3 and the builder's runtime).
        script: The builder script (copied in as ``builder.py``).
        request: The request JSON (written as ``request.json``).
        inputs: Files copied next to the request, by name.
        runtime: Docker runtime (``nvidia`` on Jetson), or None for the default.
        timeout_s: Seconds the build may run before the container is killed.
        architecture: The architecture the engine host must have (``x86_64``/``aarch64``).
        artifact_name: The file in OUTDIR that is the built engine/artifact.
        max_output_bytes: The most OUTDIR may send back (see :data:`MAX_OUTPUT_BYTES`).
    """

    image: str
    artifact_name: str
    script: Path
    request: Mapping[str, Any]
    inputs: Mapping[str, Path] = field(default_factory=dict)
    runtime: str | None = None
    timeout_s: float = 1800.0
    architecture: str = ""
    max_output_bytes: int = MAX_OUTPUT_BYTES


@dataclass(frozen=True, kw_only=True)
class ContainerOutcome:
    """What came back: the OUTDIR files (saved under ``out_dir``), the result, the exit code and logs."""

    out_dir: Path
    result: dict[str, Any]
    exit_code: int
    logs: str
    image_id: str
    seconds: float


def _tar(files: Mapping[str, bytes | Path]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, content in files.items():
            data = content.read_bytes() if isinstance(content, Path) else content
            info = tarfile.TarInfo(f"{WORKDIR.strip('/')}/{name}")
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _untar(chunks: Any, out_dir: Path, *, limit: int = MAX_OUTPUT_BYTES) -> None:
    """Extract the ``out`` folder from ``get_archive`` into ``out_dir`` (plain files only, flat, no path tricks).

    The stream is spooled to a temporary file in ``out_dir`` (never held whole in memory), at most
    ``limit`` bytes of it, then read back member by member.

    Raises:
        BadInputError: the stream is larger than ``limit`` (the partial file is removed, nothing is
            extracted), or it is not a readable tar archive.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, spool_name = tempfile.mkstemp(dir=out_dir, prefix=".get_archive-", suffix=".tar.part")
    spool = Path(spool_name)
    try:
        received = 0
        with os.fdopen(fd, "wb") as sink:
            for chunk in chunks:
                received += len(chunk)
                if received > limit:
                    raise BadInputError(
                        f"the unit sent back more than {_size(limit)} from the build's output folder; the transfer was "
                        "stopped and nothing was kept. A build writes one engine and a few small files: check the "
                        "builder on the unit (or, for an engine that large, raise ContainerJob.max_output_bytes)"
                    )
                sink.write(chunk)
        try:
            with tarfile.open(spool, mode="r:") as archive:  # plain tar, as the engine sends: nothing expands
                for member in archive:
                    if not member.isfile() or member.issparse():
                        continue
                    name = Path(member.name).name  # flat: OUTDIR holds plain files only
                    source = archive.extractfile(member)
                    if source is None or name in ("", ".", "..", spool.name):
                        continue
                    with open(out_dir / name, "wb") as target:
                        shutil.copyfileobj(source, target, 1 << 20)
        except tarfile.TarError as exc:
            raise BadInputError(f"the build's output from the unit is not a readable archive ({exc}); the transfer "
                                "was damaged or cut short, rerun the build") from exc
    finally:
        spool.unlink(missing_ok=True)
        close = getattr(chunks, "close", None)
        if close is not None:
            close()  # stop reading the engine's stream when we stopped early


def _size(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n} bytes"


def check_architecture(client: Any, architecture: str, image_id: str | None = None) -> bool:
    """Refuse an engine that cannot run the target's CPU binaries; True when it runs them emulated.

    An engine of another architecture passes when ``image_id`` runs there as ``architecture`` (qemu-user:
    ``uname -m`` in the image, :func:`toolchain.images.architecture.can_run`).
    """
    from toolchain.images.architecture import can_run

    fit = can_run(client, image_id, architecture)
    if fit.runs:
        return fit.emulated
    arch = fit.engine_architecture
    raise MissingEnvironmentError(
        f"the Docker engine runs on {arch}, the target needs {architecture}, and it cannot run {architecture} binaries: "
        "an engine or artifact built there would not run on the unit. Point --on at a unit of the target (or, for an "
        "emulated test build, register qemu-user on this engine's host: scripts/binfmt_up arm64)"
    )


def run_container(client: Any, image_id: str, *, command: list[str], files: Mapping[str, bytes | Path], fetch: str,
                  out_dir: Path, timeout_s: float, runtime: str | None = None, network_mode: str | None = None,
                  role: str = "build", max_output_bytes: int = MAX_OUTPUT_BYTES, what: str = "the job",
                  entrypoint: list[str] | None = None, archives: Sequence[bytes] = ()) -> tuple[int, str]:
    """Run ``command`` in a fresh container of ``image_id`` with ``files`` under :data:`WORKDIR`; bring the
    container's ``fetch`` folder back into ``out_dir``; remove the container whatever happened.

    No network unless ``network_mode`` names one (``host``: a bench reading the unit's cameras).
    ``archives`` are tar archives extracted at ``/`` before the start, as they are (their modes and owners
    kept: a secret file only the container's user may read). Returns ``(exit code, logs)``.

    Raises:
        MissingEnvironmentError: it did not finish in ``timeout_s`` (it is stopped).
        BadInputError: what came back is larger than ``max_output_bytes`` or not an archive.
    """
    import docker.errors

    container = client.containers.create(
        image_id, command=command, entrypoint=entrypoint, working_dir="/", network_disabled=network_mode is None,
        network_mode=network_mode, runtime=runtime, labels={"org.toolchain.role": role},
        environment={"PYTHONDONTWRITEBYTECODE": "1"},
    )
    try:
        container.put_archive("/", _tar(files))
        for archive in archives:
            container.put_archive("/", archive)
        container.start()
        try:
            status = container.wait(timeout=timeout_s)
        except Exception as exc:  # noqa: BLE001 - requests raises ReadTimeout/ConnectionError subclasses
            container.kill()
            raise MissingEnvironmentError(
                f"{what} on the unit did not finish in {timeout_s:.0f} s and was stopped; raise --timeout or check "
                "the unit's load"
            ) from exc
        code = int(status.get("StatusCode", 1))
        logs = container.logs(stdout=True, stderr=True).decode(errors="replace")
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            chunks, _ = container.get_archive(fetch)
            _untar(chunks, out_dir, limit=max_output_bytes)
        except docker.errors.NotFound:
            pass  # it failed before writing anything; its logs say why
    finally:
        try:
            container.remove(force=True)
        except docker.errors.DockerException:
            pass  # already gone (engine restarted); nothing of ours is left to clean
    return code, logs


def run_in_container(client: Any, job: ContainerJob, out_dir: Path) -> ContainerOutcome:
    """Run ``job`` on the engine behind ``client`` and bring OUTDIR back into ``out_dir``."""

    image = ensure_image(client, job.image)
    if job.architecture:
        check_architecture(client, job.architecture, image.id)
    started = time.perf_counter()
    files: dict[str, bytes | Path] = {"builder.py": job.script, "request.json": json.dumps(dict(job.request)).encode()}
    files.update(job.inputs)
    code, logs = run_container(
        client, image.id, command=["python3", f"{WORKDIR}/builder.py", f"{WORKDIR}/request.json", f"{WORKDIR}/out"],
        files=files, fetch=f"{WORKDIR}/out", out_dir=out_dir, timeout_s=job.timeout_s, runtime=job.runtime,
        max_output_bytes=job.max_output_bytes, what="the build")
    error_file = out_dir / "error.json"
    if code != 0:
        detail = json.loads(error_file.read_text())["error"]["message"] if error_file.is_file() else logs.strip()[-2000:]
        if code == 3:
            raise QualityGateError(f"the build on the unit failed its check: {detail}; nothing was registered")
        if code == 5:
            raise MissingEnvironmentError(f"the unit cannot build this: {detail}")
        raise BadInputError(f"the build on the unit failed (exit {code}): {detail}")
    result_file = out_dir / "result.json"
    if not result_file.is_file():
        raise BadInputError(f"the builder on the unit exited 0 but wrote no result.json; its output:\n{logs[-2000:]}")
    result = json.loads(result_file.read_text())
    engine = out_dir / job.artifact_name
    if not engine.is_file() or sha256_file(engine) != result.get("engine_sha256"):
        raise BadInputError(
            "the engine copied back from the unit does not match the sha256 the unit computed; the transfer was "
            "damaged or cut short, rerun the build"
        )
    return ContainerOutcome(out_dir=out_dir, result=result, exit_code=code, logs=logs, image_id=image.id,
                            seconds=time.perf_counter() - started)
