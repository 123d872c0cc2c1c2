"""Build the roadside runtime image for a target through the Docker Engine API and record it.

Steps: resolve the reference to the build for the target (``MODEL@ALIAS --target T`` through the
registry's per-target aliases, or a build id), re-hash the engine blob (nothing is shipped from a blob
that fails verification), lay out the build context (bundle, toolchain package, vendored pure-python
dependencies), build ``Dockerfile.jetson`` with the target's base image, label the image with what it
carries and where it came from (so a unit's ``docker inspect`` prints the lineage), optionally
``docker save`` it, and commit an ``image`` record linked to the build.

Jetson images are ``linux/arm64``: they can only be built on an arm64 engine (``--docker-host
ssh://user@jetson``); this x86-64 workstation has no arm64 base image and no emulation, so such a
build is refused here with that explanation.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolchain import __version__
from toolchain.errors import BadInputError, InputNotFoundError, MissingEnvironmentError, UsageError
from toolchain.fileio import atomic_output, write_atomic
from toolchain.hashing import digest_json, sha256_file
from toolchain.progress import NullProgress, Progress
from toolchain.registry import NewRecord, Record
from toolchain.serve.bundle import build_info, model_from_build, write_bundle
from toolchain.targets.profile import Target, load_target
from toolchain.workspace import Workspace

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = "Dockerfile.jetson"
# Pure-python dependencies of `toolchain serve` that runtime base images lack (numpy, PyAV and ONNX
# Runtime or TensorRT come with the base image).
VENDORED = ("click>=8.1,<9", "rich>=13.7,<16")
# Compiled runtime dependencies, by import name: vendored as binary wheels for the image's platform
# and Python when the base image lacks them (a plain python image); L4T/Debian bases that have them
# are used as they are.
BINARY = {"numpy": "numpy<3", "onnxruntime": "onnxruntime", "av": "av"}
# What must come with the base image itself (NVIDIA's L4T images; pycuda has no wheels to vendor).
REQUIRED_FROM_BASE = {"tensorrt": ("tensorrt", "pycuda"), "onnxruntime": ()}
_PROBE = ("import importlib.util, json, platform, sys; print(json.dumps({'python': '%d.%d' % sys.version_info[:2], "
          "'libc': platform.libc_ver(), 'missing': [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]}))")
PLATFORMS = {"x86_64": "linux/amd64", "aarch64": "linux/arm64"}


@dataclass(frozen=True, kw_only=True)
class PackageConfig:
    """Options of ``toolchain package``.

    Attributes:
        ref: ``MODEL@ALIAS``, ``NAME@vN``, or a build id (prefix).
        target: Target name or .toml path.
        tags: Image tags (default: ``toolchain/<model>:<target>-<build id prefix>``).
        base_image: Override the target profile's ``runtime_image``.
        save: Write a ``docker save`` tarball here (and ``<file>.sha256`` beside it).
        docker_host: Engine to build on (default ``$DOCKER_HOST``); Jetson images need an arm64 engine.
        insecure: Allow a plain tcp:// engine URL.
        dockerfile: Dockerfile to use (default: Dockerfile.jetson at the repository root).
        python_version: Python of the base image (the vendored wheels match it); default: asked of the image.
        http_port: Port the service listens on inside the container.
    """

    ref: str
    target: str
    tags: tuple[str, ...] = ()
    base_image: str | None = None
    save: Path | None = None
    docker_host: str | None = None
    insecure: bool = False
    dockerfile: Path | None = None
    python_version: str | None = None
    http_port: int = 8080

    def __post_init__(self) -> None:
        for tag in self.tags:
            if not tag or " " in tag or tag != tag.strip():
                raise UsageError(f"--tag {tag!r} is not an image reference (REPOSITORY[:TAG])")


@dataclass(frozen=True, kw_only=True)
class PackageResult:
    """A packaged image."""

    image: str  # image record id
    image_id: str  # the engine's image id (sha256:... of the image config)
    tags: tuple[str, ...]
    target: str
    platform: str
    build: str
    model: str
    labels: dict[str, str]
    cached: bool
    save: dict[str, Any] | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "image_id": self.image_id, "tags": list(self.tags), "target": self.target,
                "platform": self.platform, "build": self.build, "model": self.model, "labels": self.labels,
                "cached": self.cached, "save": self.save, "warnings": list(self.warnings), "seconds": round(self.seconds, 3)}


def resolve_build(workspace: Workspace, ref: str, target: Target) -> tuple[Record, tuple[str, ...]]:
    """The build ``ref`` stands for on ``target`` (per-target alias, version, or build id) and resolver warnings.

    Raises:
        InputNotFoundError: nothing of that name.
        BadInputError / MissingEnvironmentError: found, but no build matches the target.
    """
    from toolchain.registry.aliases import resolve_for_target

    errors: list[InputNotFoundError] = []
    for kind in ("build", "model", "artifact"):
        try:
            resolution = resolve_for_target(workspace, ref, target, kind=kind)
        except InputNotFoundError as exc:
            errors.append(exc)
            continue
        return resolution.build, resolution.warnings
    # The most useful message is the one about the kind that has aliases of that name.
    raise next((e for e in errors if "aliases of" in str(e)), errors[-1])


def verify_engine(workspace: Workspace, build: Record) -> Path:
    """Re-hash the build's blobs; the engine's path, or CorruptStoreError (nothing is shipped from a bad blob)."""
    from toolchain.registry.verify import verify_blobs

    blobs = list(dict.fromkeys([build.body["blob"], *(b.sha256 for b in workspace.registry.blob_refs(build.id))]))
    report = verify_blobs(workspace, blobs, scope=f"build {build.id[:12]}")
    if not report.passed:
        raise report.error()
    return workspace.blobs.path(build.body["blob"])


def lineage_label(workspace: Workspace, build: Record) -> list[dict[str, str]]:
    """The build's lineage as a compact list (kind, id, ref, role), for the image label."""
    from toolchain.registry.lineage import lineage_of

    tree = lineage_of(workspace, build)
    return [{"kind": r.kind, "id": r.id, "ref": ref, "role": ",".join(roles)} for r, ref, roles in tree.records]


def image_labels(workspace: Workspace, build: Record, target: Target, info: dict[str, str]) -> dict[str, str]:
    """The org.toolchain.* label values (also passed as build args to the Dockerfile's LABEL lines)."""
    return {
        "org.toolchain.role": "serve",
        "org.toolchain.model": info["model"],
        "org.toolchain.artifact": build.id,
        "org.toolchain.artifact_sha256": info["artifact_sha256"],
        "org.toolchain.onnx_sha256": info["onnx_sha256"],
        "org.toolchain.target": target.name,
        "org.toolchain.toolchain_version": __version__,
        "org.toolchain.lineage": json.dumps(lineage_label(workspace, build), separators=(",", ":")),
    }


def default_tag(model: str, target: Target, build: Record) -> str:
    from toolchain.deploy.unit import slug

    name = slug(model)
    return f"toolchain/{name}:{target.name}-{build.id[:12]}"


def vendor_dependencies(workspace: Workspace, python_version: str, architecture: str, *, binary: tuple[str, ...] = (),
                        glibc: str = "2.17") -> Path:
    """The vendored dependencies for a base image's Python and platform (``pip install --target``, cached).

    Pure-python packages (:data:`VENDORED`) always; ``binary`` requirements (from :data:`BINARY`) as
    manylinux wheels for ``architecture`` that the image's glibc can load. pip resolves for the
    image's Python, not this interpreter's.
    """
    key = digest_json({"requirements": VENDORED, "binary": binary, "python": python_version, "arch": architecture,
                       "glibc": glibc})[:16]
    cache = workspace.root / "cache" / "package-vendor" / key
    if (cache / ".complete").is_file():
        return cache
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache.parent, prefix=f".{key}."))
    common = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
              "--only-binary=:all:", "--python-version", python_version, "--target", str(tmp), "--upgrade"]
    commands = [[*common, "--implementation", "py", "--platform", "any", *VENDORED]]
    if binary:
        platforms = ["manylinux2014", "manylinux_2_17"]
        if tuple(int(p) for p in glibc.split(".")[:2]) >= (2, 28):
            platforms.append("manylinux_2_28")
        flags = [arg for tag in platforms for arg in ("--platform", f"{tag}_{architecture}")]
        commands.append([*common, "--implementation", "cp", *flags, *binary])
    for command in commands:
        run = subprocess.run(command, capture_output=True, text=True)
        if run.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise MissingEnvironmentError(
                f"pip could not fetch the runtime's dependencies ({', '.join(command[command.index(str(tmp)) + 2:])}) "
                f"for Python {python_version} on {architecture}: {run.stderr.strip()[-800:]}. Check the package "
                "index, or use a base image that has them"
            )
    for junk in tmp.glob("*.dist-info/RECORD"):
        junk.unlink()  # paths of this machine; not needed to import
    (tmp / ".complete").write_text(architecture)
    try:
        os.replace(tmp, cache)
    except OSError:  # another package run filled the cache first
        shutil.rmtree(tmp, ignore_errors=True)
    return cache


def probe_base(client: Any, image_id: str, modules: tuple[str, ...]) -> dict[str, Any]:
    """Ask the base image for its Python version, its C library and which of ``modules`` it lacks."""
    import docker.errors

    try:
        out = client.containers.run(image_id, ["-c", _PROBE, *modules], entrypoint=["python3"], network_disabled=True,
                                    remove=True, stdout=True, stderr=False)
    except docker.errors.DockerException as exc:
        raise BadInputError(f"the base image {image_id[:19]} cannot run python3 ({exc}); the runtime needs a base "
                            "image with python3 (>= 3.8)") from exc
    try:
        return dict(json.loads(out.decode().strip().splitlines()[-1]))
    except (ValueError, IndexError) as exc:
        raise BadInputError(f"could not read the base image's answer {out[-200:]!r}") from exc


def copy_runtime(destination: Path) -> None:
    """Copy the toolchain package (sources and catalog files only) into ``destination/toolchain``."""
    package = Path(__file__).resolve().parents[1]
    shutil.copytree(package, destination / "toolchain",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", "*.so"))


def _find_dockerfile(config: PackageConfig) -> Path:
    path = config.dockerfile or REPO_ROOT / DOCKERFILE
    if not path.is_file():
        raise InputNotFoundError(f"{path} does not exist; pass --dockerfile with the toolchain's Dockerfile.jetson")
    return path


def _existing_image(workspace: Workspace, key: str, client: Any) -> Record | None:
    """An image record with this context key whose image the engine still has."""
    import docker.errors

    for record in reversed(workspace.registry.find(kind="image")):
        if record.body.get("key") != key:
            continue
        try:
            client.images.get(record.body["image_id"])
        except docker.errors.ImageNotFound:
            continue
        return record
    return None


def package(workspace: Workspace, config: PackageConfig, progress: Progress | None = None) -> PackageResult:
    """Build (or find) the runtime image of ``config.ref`` for ``config.target`` and record it."""
    progress = progress or NullProgress()
    started = time.perf_counter()
    target = load_target(config.target)
    build, warnings = resolve_build(workspace, config.ref, target)
    engine = verify_engine(workspace, build)
    onnx = workspace.registry.get(build.body.get("onnx", "")) if build.body.get("onnx") else None
    info = build_info(build, onnx, workspace)
    model = model_from_build(build.body, onnx.body if onnx else {}, engine, info)
    base_image = config.base_image or target.runtime_image
    platform = PLATFORMS.get(target.architecture)
    if platform is None:
        raise BadInputError(f"target {target.name} has architecture {target.architecture!r}; no image platform for it")
    labels = image_labels(workspace, build, target, info)
    tags = config.tags or (default_tag(info["model"], target, build),)
    dockerfile = _find_dockerfile(config)

    from toolchain.docker_engine import connect, engine_architecture, redact

    client = connect(config.docker_host, insecure=config.insecure)
    try:
        engine_arch = engine_architecture(client)
        if engine_arch != target.architecture:
            raise MissingEnvironmentError(
                f"target {target.name} needs a {platform} image and the Docker engine here runs on {engine_arch}. "
                + ("Jetson images are built on an arm64 engine: pass --docker-host ssh://user@jetson (a unit with the "
                   f"base image {base_image}). " if target.architecture == "aarch64" else "")
                + "This workstation has no arm64 base image and no emulation, so it cannot build one"
            )
        from toolchain.build.remote import ensure_image

        base = ensure_image(client, base_image)
        needed = tuple(BINARY) if not target.is_tensorrt else ("numpy", "av")
        required = REQUIRED_FROM_BASE["tensorrt" if target.is_tensorrt else "onnxruntime"]
        probe = probe_base(client, base.id, (*needed, *required))
        lacking = [m for m in required if m in probe["missing"]]
        if lacking:
            raise MissingEnvironmentError(
                f"the base image {base_image} lacks {', '.join(lacking)}, which cannot be vendored: use the L4T image "
                f"matching the unit's JetPack ({target.runtime_image}), with pycuda installed on it"
            )
        python_version = config.python_version or str(probe["python"])
        binary = tuple(BINARY[m] for m in needed if m in probe["missing"])
        libc = probe.get("libc") or ["", ""]
        glibc = str(libc[1]) if libc and libc[0] == "glibc" and libc[1] else "2.17"
        dockerfile_text = dockerfile.read_text()
        key = digest_json({"build": build.id, "base": base.id, "dockerfile": sha256_file(dockerfile),
                           "toolchain": _runtime_digest(), "vendored": VENDORED, "binary": binary, "python": python_version,
                           "platform": platform, "labels": labels, "port": config.http_port})
        existing = _existing_image(workspace, key, client)
        if existing is not None:
            image_obj = client.images.get(existing.body["image_id"])
            for tag in tags:
                image_obj.tag(*split_tag(tag))
            saved = save_image(image_obj, config.save, tags[0]) if config.save else existing.body.get("save")
            return PackageResult(image=existing.id, image_id=existing.body["image_id"], tags=tuple(tags),
                                 target=target.name, platform=platform, build=build.id, model=info["model"],
                                 labels=labels, cached=True, save=saved, warnings=warnings,
                                 seconds=time.perf_counter() - started)
        progress.start(f"package {info['model']} for {target.name} ({platform})", None)
        with tempfile.TemporaryDirectory(prefix="toolchain-package-") as tmp:
            context = Path(tmp)
            (context / "Dockerfile").write_text(dockerfile_text)
            (context / ".dockerignore").write_text("**/__pycache__\n**/*.pyc\n")
            write_bundle(model, context / "model", sha256=info["artifact_sha256"])  # the bytes shipped are the verified ones
            copy_runtime(context / "runtime")
            shutil.copytree(vendor_dependencies(workspace, python_version, target.architecture, binary=binary, glibc=glibc),
                            context / "vendor",
                            ignore=shutil.ignore_patterns(".complete"))
            buildargs = {
                "BASE_IMAGE": base_image, "MODEL": info["model"], "ARTIFACT": build.id,
                "ARTIFACT_SHA256": info["artifact_sha256"], "ONNX_SHA256": info["onnx_sha256"], "TARGET": target.name,
                "TOOLCHAIN_VERSION": __version__, "LINEAGE": labels["org.toolchain.lineage"],
                "CREATED": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "REVISION": build.id,
                "HTTP_PORT": str(config.http_port),
            }
            image_obj, log = _docker_build(client, context, tags[0], buildargs, platform)
        for tag in tags[1:]:
            image_obj.tag(*split_tag(tag))
        got = image_obj.labels or {}
        wrong = {k: v for k, v in labels.items() if got.get(k) != v}
        if wrong:
            raise BadInputError(f"the image's labels differ from what was asked ({', '.join(wrong)}); is {dockerfile} "
                                "the toolchain's Dockerfile.jetson?")
        saved = save_image(image_obj, config.save, tags[0]) if config.save else None
        body = {
            "key": key, "image_id": image_obj.id, "tags": list(tags), "tag": tags[0], "target": target.name,
            "platform": platform, "architecture": target.architecture, "base_image": base_image, "base_image_id": base.id,
            "build": build.id, "model": info["model"], "artifact_sha256": info["artifact_sha256"],
            "onnx_sha256": info["onnx_sha256"], "backend": model.backend, "labels": labels, "http_port": config.http_port,
            "python_version": python_version, "vendored": [*VENDORED, *binary], "toolchain_version": __version__,
            "docker_host": redact(config.docker_host or os.environ.get("DOCKER_HOST", "")),
            "size": int(image_obj.attrs.get("Size") or 0), "save": saved, "build_log_tail": log[-4000:],
            "created": buildargs["CREATED"],
        }
        record, _, _ = workspace.registry.commit(NewRecord(
            kind="image", name=f"{_record_name(info['model'])}-{target.name}", body=body, links=((build.id, "build"),),
        ))
    finally:
        client.close()
    progress.finish()
    return PackageResult(image=record.id, image_id=image_obj.id, tags=tuple(tags), target=target.name, platform=platform,
                         build=build.id, model=info["model"], labels=labels, cached=False, save=saved, warnings=warnings,
                         seconds=time.perf_counter() - started)


def split_tag(tag: str) -> tuple[str, str]:
    """``(repository, tag)`` of ``REPOSITORY[:TAG]`` (a registry host's port is not a tag)."""
    repository, sep, name = tag.rpartition(":")
    if not sep or "/" in name:
        return tag, "latest"
    return repository, name


def _record_name(model: str) -> str:
    return model.split("@")[0] or "model"


def _runtime_digest() -> str:
    """Digest of the toolchain sources copied into the image (a code change makes a new image)."""
    package = Path(__file__).resolve().parents[1]
    files = sorted(p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
    return digest_json([(str(p.relative_to(package)), sha256_file(p)) for p in files])


def _docker_build(client: Any, context: Path, tag: str, buildargs: dict[str, str], platform: str) -> tuple[Any, str]:
    """``docker build`` through the Engine API; the image and the build log, or BadInputError with the log's end."""
    import docker.errors

    try:
        image, chunks = client.images.build(path=str(context), dockerfile="Dockerfile", tag=tag, buildargs=buildargs,
                                            platform=platform, rm=True, forcerm=True, pull=False)
    except docker.errors.BuildError as exc:
        log = "".join(str(c.get("stream", c.get("error", ""))) for c in exc.build_log)
        raise BadInputError(f"the image build failed: {exc.msg}\n{log[-2000:]}") from exc
    except docker.errors.APIError as exc:
        raise MissingEnvironmentError(f"the Docker engine refused the build: {exc}") from exc
    log = "".join(str(c.get("stream", "")) for c in chunks if isinstance(c, dict))
    return image, log


def save_image(image: Any, destination: Path, tag: str) -> dict[str, Any]:
    """``docker save`` into ``destination`` (atomically) and ``destination.sha256``; returns path, sha256, size."""
    import hashlib

    import docker.errors

    destination = Path(destination).absolute()
    digest = hashlib.sha256()
    sidecar = destination.with_name(destination.name + ".sha256")
    try:
        with atomic_output(destination) as out:
            for chunk in image.save(named=tag):
                out.write(chunk)
                digest.update(chunk)
            sha = digest.hexdigest()
            write_atomic(sidecar, f"{sha}  {destination.name}\n")  # before the tarball appears beside it
    except (docker.errors.DockerException, OSError) as exc:
        raise MissingEnvironmentError(f"docker save of {tag} into {destination} failed: {exc}; check the engine and the "
                                      "free space there, then rerun (the image is cached: only the save is redone)") from exc
    return {"path": str(destination), "sha256": sha, "size": destination.stat().st_size, "sha256_file": str(sidecar)}


