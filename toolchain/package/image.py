"""Build the roadside runtime image for a target through the Docker Engine API and record it.

Steps: resolve the reference to the build for the target (``MODEL@ALIAS --target T`` through the
registry's per-target aliases, or a build id), re-hash the engine blob (nothing is shipped from a blob
that fails verification), lay out the build context (bundle, toolchain package, vendored pure-python
dependencies), build ``Dockerfile.jetson`` with the target's base image, label the image with what it
carries and where it came from (so a unit's ``docker inspect`` prints the lineage), optionally
``docker save`` it, and commit an ``image`` record linked to the build.

Jetson and ``aarch64-cpu`` images are ``linux/arm64``: they are built on an engine that runs arm64
binaries, decided by running ``uname -m`` in the base image (an arm64 unit, or this x86-64 workstation
with qemu-user registered: ``scripts/binfmt_up arm64``, then an emulated build, recorded as such). The
vendored wheels are fetched for the image's Python and CPU. Only the runtime files ship
(:mod:`toolchain.package.runtime_files`); targets whose Python the runtime cannot run on are refused.
"""

from __future__ import annotations

import dataclasses

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolchain import __version__
from toolchain.errors import BadInputError, InputNotFoundError, MissingEnvironmentError, UsageError
from toolchain.codeversion import code_version
from toolchain.hashing import digest_json, sha256_file
from toolchain.images.save import save_image
from toolchain.images.tags import slug, split_tag
from toolchain.progress import NullProgress, Progress
from toolchain.registry import NewRecord, Record
from toolchain.serve.bundle import build_info, model_from_build, write_bundle
from toolchain.package.runtime_files import MIN_RUNTIME_PYTHON, PACKAGE, copy_runtime, runtime_files
from toolchain.release import resolve_build, verify_engine
from toolchain.targets.profile import Target, load_target
from toolchain.workspace import Workspace

REPO_ROOT = Path(__file__).resolve().parents[2]  # the git checkout, when run from one (scripts, tests)
# The runtime image's Dockerfile ships inside the package (wheel and sdist), so `package` works from any
# install; the repository root's Dockerfile.jetson is a symlink to it (one source).
DOCKERFILE = Path(__file__).resolve().with_name("Dockerfile.jetson")
# Pure-python dependencies of `toolchain serve` that runtime base images lack (numpy, PyAV, OpenCV and ONNX
# Runtime or TensorRT come with the base image): the ranges scripts/lock_vendor resolves.
VENDORED = ("click>=8.1,<9", "rich>=13.7,<16", "paho-mqtt>=2.1,<3")  # paho: serve --publish (2.1: the last for 3.8)
# What is installed for VENDORED: every wheel pinned by version and sha256 (scripts/lock_vendor writes it).
VENDOR_LOCK = Path(__file__).resolve().with_name("vendor-requirements.txt")
# Compiled runtime dependencies, by import name: vendored as binary wheels for the image's platform
# and Python when the base image lacks them (a plain python image); L4T/Debian bases that have them
# are used as they are. OpenCV: the vehicle pipeline's motion finder (MOG2 background subtraction).
BINARY = {"numpy": "numpy<3", "onnxruntime": "onnxruntime", "av": "av", "cv2": "opencv-python-headless>=4.9,<6"}
# The versions of BINARY vendored per image Python (by import name, as BINARY): manylinux wheels of each
# exist for x86_64 and aarch64 on a glibc >= 2.28 (JetPack 5 and 6, Debian bookworm). Pinned by version, not
# by hash (the wheel differs per Python and platform); each wheel's sha256 is recorded as it is installed. A
# Python not listed here, or an older glibc (ONNX Runtime has no newer wheels for it), gets BINARY's ranges.
# OpenCV: 5.1 (the workstation's, so `count` and `serve` run the same background subtraction) from Python 3.9;
# on 3.8, 4.11 (cp37-abi3, built against numpy 2 and running on numpy 1.x): OpenCV 4.12 and later require
# numpy >= 2 under a marker pip judges against the workstation's Python, not the image's, so they would not
# resolve beside numpy 1.24 (the last numpy for 3.8).
BINARY_PINS: dict[str, dict[str, str]] = {
    "3.8": {"numpy": "1.24.4", "onnxruntime": "1.19.2", "av": "12.3.0", "cv2": "4.11.0.86"},
    "3.9": {"numpy": "2.0.2", "onnxruntime": "1.19.2", "av": "14.2.0", "cv2": "5.1.0.95"},
    "3.10": {"numpy": "2.2.6", "onnxruntime": "1.23.2", "av": "14.2.0", "cv2": "5.1.0.95"},
    "3.11": {"numpy": "2.2.6", "onnxruntime": "1.23.2", "av": "14.2.0", "cv2": "5.1.0.95"},
    "3.12": {"numpy": "2.2.6", "onnxruntime": "1.23.2", "av": "14.2.0", "cv2": "5.1.0.95"},
}
BINARY_PINS_GLIBC = (2, 28)
# What must come with the base image itself (NVIDIA's L4T images; pycuda has no wheels to vendor).
REQUIRED_FROM_BASE = {"tensorrt": ("tensorrt", "pycuda"), "onnxruntime": ()}
_PROBE = ("import importlib.util, json, platform, sys; print(json.dumps({'python': '%d.%d' % sys.version_info[:2], "
          "'libc': platform.libc_ver(), 'missing': [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]}))")
PLATFORMS = {"x86_64": "linux/amd64", "aarch64": "linux/arm64"}
_PathType = Path if TYPE_CHECKING else type(Path())  # the concrete class (PosixPath) can be subclassed


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
        stand_in_base: Assemble a TensorRT target's image over a base that lacks TensorRT/pycuda (a stand-in
            arm64 Debian, to prove the assembly); the image cannot run the engine, and says so.
        push: Push the image to this registry (``HOST[:PORT]``) and record its digest, which units pull.
        credentials: A credentials file whose ``[registries."HOST:PORT"]`` table logs in to ``push`` (and gives a
            private CA for reading the manifest back); without one, what ``docker login`` stored.
        deepstream: Put a DeepStream nvinfer config (``config_infer_primary.txt``) and ``labels.txt`` next to
            the engine in ``/opt/toolchain/model`` (TensorRT targets; :mod:`toolchain.handoff`).
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
    stand_in_base: bool = False
    push: str | None = None
    credentials: Path | None = None
    deepstream: bool = False

    def __post_init__(self) -> None:
        if self.push is not None:
            from toolchain.images.registries import check_registry

            check_registry(self.push)
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
    emulated: bool = False
    push: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "image_id": self.image_id, "tags": list(self.tags), "target": self.target,
                "platform": self.platform, "build": self.build, "model": self.model, "labels": self.labels,
                "cached": self.cached, "save": self.save, "warnings": list(self.warnings), "seconds": round(self.seconds, 3),
                "emulated": self.emulated, "push": self.push}


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
    name = slug(model)
    return f"toolchain/{name}:{target.name}-{build.id[:12]}"


class VendoredPath(_PathType):  # type: ignore[valid-type,misc]
    """The directory of vendored dependencies (a :class:`~pathlib.Path`) that also says what went into it.

    Attributes:
        sha256: Wheel file name -> sha256 of its bytes, for every wheel installed into the directory.
        lock_sha256: sha256 of the lock file (:data:`VENDOR_LOCK`) it was installed from.
    """

    sha256: dict[str, str]
    lock_sha256: str


def _vendored_path(path: Path, manifest: dict[str, Any]) -> VendoredPath:
    vendored = VendoredPath(path)
    vendored.sha256 = dict(manifest.get("sha256") or {})
    vendored.lock_sha256 = str(manifest.get("lock_sha256") or "")
    return vendored


def _project(name: str) -> str:
    """A distribution's normalised name (PEP 503), from a requirement or a wheel file name."""
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", name).group(0)).lower()  # type: ignore[union-attr]


def vendor_dependencies(workspace: Workspace, python_version: str, architecture: str, *, binary: tuple[str, ...] = (),
                        glibc: str = "2.17") -> VendoredPath:
    """The vendored dependencies for a base image's Python and platform (``pip install --target``, cached).

    Pure-python packages: exactly the lock file :data:`VENDOR_LOCK` (:data:`VENDORED` and what it needs,
    every wheel pinned by version and sha256), installed with ``pip install --require-hashes --no-deps``,
    so pip refuses any file whose digest is not the committed one. ``binary`` requirements (from
    :data:`BINARY`): manylinux wheels for ``architecture`` that the image's glibc can load, pinned by
    version (:data:`BINARY_PINS`, also as constraints on what they pull in) but not by hash; their own
    dependencies (ONNX Runtime's protobuf, sympy, flatbuffers ...) are resolved by pip at package time and
    not pinned. Every wheel is downloaded first and hashed, then installed from that file with
    ``--no-deps --no-index``: the returned :class:`VendoredPath` lists each wheel installed and its sha256
    (``package`` keeps them in the image record as ``vendored_sha256``), so what went into an image is
    known afterwards even where it was not fixed beforehand. pip resolves for the image's Python, not
    this interpreter's (except dependency markers, which it judges against this interpreter: the pins
    are chosen to resolve either way).

    The cache is keyed by the lock file's digest, the binary requirements and pins, the Python, the
    architecture and the glibc: a change of the lock file makes a new one.
    """
    lock = VENDOR_LOCK.read_bytes()
    lock_sha256 = hashlib.sha256(lock).hexdigest()
    new_glibc = tuple(int(p) for p in glibc.split(".")[:2]) >= BINARY_PINS_GLIBC
    # By distribution name (BINARY_PINS is by import name: cv2 is opencv-python-headless).
    pins = {_project(BINARY[m]): v for m, v in BINARY_PINS.get(python_version, {}).items()} if new_glibc else {}
    requested = tuple(f"{_project(r)}=={pins[_project(r)]}" if _project(r) in pins else r for r in binary)
    key = digest_json({"lock": lock_sha256, "binary": requested, "pins": pins, "python": python_version,
                       "arch": architecture, "glibc": glibc})[:16]
    cache = workspace.root / "cache" / "package-vendor" / key
    if (cache / ".complete").is_file():  # written before the directory is renamed into place: whole or absent
        return _vendored_path(cache, json.loads((cache / ".complete").read_text()))
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache.parent, prefix=f".{key}."))
    wheels = Path(tempfile.mkdtemp(dir=cache.parent, prefix=f".{key}.wheels."))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    target = ["--only-binary=:all:", "--python-version", python_version]
    pure = [*target, "--implementation", "py", "--platform", "any"]
    platforms = ["manylinux2014", "manylinux_2_17"] + (["manylinux_2_28"] if new_glibc else [])
    compiled = [*target, "--implementation", "cp",
                *(arg for tag in platforms for arg in ("--platform", f"{tag}_{architecture}"))]
    install = ["install", "--quiet", "--no-compile", "--no-deps", "--no-index", "--target", str(tmp), "--upgrade"]
    locked = {_project(line) for line in lock.decode().splitlines() if line[:1].isalnum()}
    steps: list[tuple[str, list[str]]] = []
    if binary:
        constraints = wheels / "constraints.txt"
        constraints.write_text("".join(f"{name}=={version}\n" for name, version in sorted(pins.items())))
        steps.append((", ".join(requested), [*pip, "download", "--quiet", *compiled, "--dest", str(wheels / "binary"),
                                             "-c", str(constraints), *requested]))
    steps.append((f"the locked {', '.join(sorted(locked))}",
                  [*pip, "download", "--quiet", "--require-hashes", "--no-deps", *pure, "--dest", str(wheels / "pure"),
                   "-r", str(VENDOR_LOCK)]))
    try:
        for what, command in steps:
            _pip(command, what, python_version, architecture)
        installed: dict[str, str] = {}
        if binary:
            # The locked packages come from the lock file even when a compiled wheel also asked for them.
            files = [w for w in sorted((wheels / "binary").glob("*.whl")) if _project(w.name) not in locked]
            _pip([*pip, *install, *compiled, *map(str, files)], ", ".join(requested), python_version, architecture)
            installed.update({w.name: sha256_file(w) for w in files})
        _pip([*pip, *install, "--require-hashes", "--find-links", str(wheels / "pure"), *pure, "-r", str(VENDOR_LOCK)],
             "the locked pure-python packages", python_version, architecture)
        installed.update({w.name: sha256_file(w) for w in sorted((wheels / "pure").glob("*.whl"))})
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(wheels, ignore_errors=True)
    for junk in [*tmp.glob("*.dist-info/RECORD"), *tmp.glob("*.dist-info/direct_url.json")]:
        junk.unlink()  # paths of this machine; not needed to import
    manifest = {"architecture": architecture, "python": python_version, "lock_sha256": lock_sha256, "sha256": installed}
    (tmp / ".complete").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    try:
        os.replace(tmp, cache)
    except OSError:  # another package run filled the cache first
        shutil.rmtree(tmp, ignore_errors=True)
        return _vendored_path(cache, json.loads((cache / ".complete").read_text()))
    return _vendored_path(cache, manifest)


def _pip(command: list[str], what: str, python_version: str, architecture: str) -> None:
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0:
        raise MissingEnvironmentError(
            f"pip could not fetch the runtime's dependencies ({what}) for Python {python_version} on {architecture}: "
            f"{run.stderr.strip()[-800:]}. Check the package index, or use a base image that has them"
            + (" (a hash mismatch means the index serves other bytes than scripts/lock_vendor saw: rerun it and "
               "review the change)" if "hash" in run.stderr.lower() else "")
        )


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


def check_runtime_python(target: Target, config: PackageConfig) -> None:
    """Refuse a target whose Python the runtime cannot run on (JetPack 4.6's 3.6), saying what to use instead."""
    if config.base_image or not target.python_version or target.python_version >= MIN_RUNTIME_PYTHON:
        return
    needed = ".".join(map(str, MIN_RUNTIME_PYTHON))
    raise MissingEnvironmentError(
        f"target {target.name} runs Python {target.python} (JetPack {target.jetpack or '?'}), and the runtime needs "
        f"Python {needed} or newer (its TensorRT bindings exist only for the JetPack's own Python). Upgrade the unit to "
        f"JetPack 5.1 or later (a jetson-xavier-nx / jetson-orin-* target), or pass --base-image with an image that has "
        f"python3 >= {needed} and TensorRT bindings for it"
    )


def engine_runs(client: Any, base: Any, target: Target, base_image: str) -> dict[str, Any]:
    """Whether the engine runs the target's CPU binaries, read by running ``uname -m`` in the base image.

    An x86-64 engine with qemu-user registered (``scripts/binfmt_up``) runs arm64 images, emulated: decided by
    this probe (:func:`toolchain.images.architecture.can_run`, on an engine of the target's CPU too: the base
    image is the user's), never by a flag. Returns ``{"architecture", "engine_architecture", "emulated"}``.

    Raises:
        BadInputError: the base image is for another architecture than the target's.
        MissingEnvironmentError: the engine cannot run the image's binaries.
    """
    from toolchain.images.architecture import can_run
    from toolchain.runtime.machine import normalize_architecture

    image_arch = normalize_architecture(str(base.attrs.get("Architecture", "")))
    if image_arch and image_arch != target.architecture:
        raise BadInputError(f"the base image {base_image} is {image_arch}, target {target.name} is {target.architecture}: "
                            "pass --base-image with an image for the target's CPU")
    fit = can_run(client, base.id, target.architecture, probe_native=True)
    detail = f"uname -m in the base image gave {fit.ran or 'nothing (exec format error?)'}"
    if not fit.runs:
        how = ("register qemu-user for it here (`scripts/binfmt_up arm64`: qemu-user-static and binfmt-support), or "
               "build on an arm64 engine (--docker-host ssh://user@jetson)" if target.architecture == "aarch64"
               else "build on an engine of that architecture (--docker-host)")
        raise MissingEnvironmentError(
            f"the Docker engine ({fit.engine_architecture}) cannot run {target.architecture} binaries "
            f"({detail[:200]}): {how}"
        )
    return {"architecture": fit.ran, "engine_architecture": fit.engine_architecture, "emulated": fit.emulated}


def _find_dockerfile(config: PackageConfig) -> Path:
    if config.dockerfile is None and not DOCKERFILE.is_file():
        raise InputNotFoundError(f"{DOCKERFILE} is missing from the installed toolchain package; reinstall toolchain "
                                 "or pass --dockerfile with the toolchain's Dockerfile.jetson")
    path = Path(config.dockerfile) if config.dockerfile is not None else DOCKERFILE
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
    """Build (or find) the runtime image of ``config.ref`` for ``config.target`` and record it; push it if asked."""
    login = None
    if config.push is not None and config.credentials is not None:  # a malformed file fails before the build
        from toolchain.serve.credentials import load_registry_credentials

        login = load_registry_credentials(config.credentials).get(config.push)
    result = _build_or_find(workspace, config, progress or NullProgress())
    if config.push is None:
        return result
    from toolchain.docker_engine import connect
    from toolchain.images.push import push_image

    client = connect(config.docker_host, insecure=config.insecure)
    try:
        record = workspace.registry.get(result.image)
        assert record is not None  # committed above
        pushed = push_image(workspace, client, record, config.push, login=login,
                            credentials=str(config.credentials or ""))
    finally:
        client.close()
    body = pushed.body
    return dataclasses.replace(result, push={"record": pushed.id, "reference": body["reference"], "digest": body["digest"],
                                             "layers": len(body["layers"]),
                                             "bytes": sum(size for _, size in body["layers"]) + body["config_size"]})


def _build_or_find(workspace: Workspace, config: PackageConfig, progress: Progress) -> PackageResult:
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
    if config.deepstream and not target.is_tensorrt:
        raise UsageError(f"--deepstream: {target.name} runs ONNX Runtime, not TensorRT; DeepStream configs go with "
                         "Jetson (TensorRT) targets (`toolchain handoff --format triton` serves CPU builds)")
    labels = image_labels(workspace, build, target, info)
    tags = config.tags or (default_tag(info["model"], target, build),)
    dockerfile = _find_dockerfile(config)

    from toolchain.docker_engine import connect, redact

    check_runtime_python(target, config)
    client = connect(config.docker_host, insecure=config.insecure)
    try:
        from toolchain.images.ensure import ensure_image

        base = ensure_image(client, base_image, role="base image", option="--base-image")
        runs = engine_runs(client, base, target, base_image)
        emulated = runs["emulated"]
        # TensorRT images run the engine with TensorRT (from the L4T base), not ONNX Runtime.
        needed = tuple(BINARY) if not target.is_tensorrt else ("numpy", "av", "cv2")
        required = REQUIRED_FROM_BASE["tensorrt" if target.is_tensorrt else "onnxruntime"]
        probe = probe_base(client, base.id, (*needed, *required))
        lacking = [m for m in required if m in probe["missing"]]
        if lacking and not config.stand_in_base:
            raise MissingEnvironmentError(
                f"the base image {base_image} lacks {', '.join(lacking)}, which cannot be vendored: use the L4T image "
                f"matching the unit's JetPack ({target.runtime_image}), with pycuda installed on it (or pass "
                "--stand-in-base to assemble the image over a stand-in base that cannot run the engine)"
            )
        if lacking:
            warnings = (*warnings, f"stand-in base {base_image}: it lacks {', '.join(lacking)}, so this image proves the "
                                   "assembly only; it cannot run the engine (unverified until built on the L4T base)")
        probed_python = tuple(int(p) for p in str(probe["python"]).split(".")[:2])
        if probed_python < MIN_RUNTIME_PYTHON:
            raise MissingEnvironmentError(
                f"the base image {base_image} has Python {probe['python']}; the runtime needs Python "
                f"{'.'.join(map(str, MIN_RUNTIME_PYTHON))} or newer: use a base image with a newer python3"
            )
        python_version = config.python_version or str(probe["python"])
        binary = tuple(BINARY[m] for m in needed if m in probe["missing"])
        libc = probe.get("libc") or ["", ""]
        glibc = str(libc[1]) if libc and libc[0] == "glibc" and libc[1] else "2.17"
        dockerfile_text = dockerfile.read_text()
        key = digest_json({"build": build.id, "base": base.id, "dockerfile": sha256_file(dockerfile),
                           "stand_in": bool(lacking),
                           "toolchain": _runtime_digest(), "vendored": VENDORED, "binary": binary, "python": python_version,
                           "platform": platform, "labels": labels, "port": config.http_port,
                           **({"deepstream": code_version("handoff")} if config.deepstream else {})})
        existing = _existing_image(workspace, key, client)
        if existing is not None:
            image_obj = client.images.get(existing.body["image_id"])
            for tag in tags:
                image_obj.tag(*split_tag(tag))
            saved = save_image(image_obj, config.save, tags[0]) if config.save else existing.body.get("save")
            return PackageResult(image=existing.id, image_id=existing.body["image_id"], tags=tuple(tags),
                                 target=target.name, platform=platform, build=build.id, model=info["model"],
                                 labels=labels, cached=True, save=saved, warnings=warnings,
                                 seconds=time.perf_counter() - started, emulated=emulated)
        progress.start(f"package {info['model']} for {target.name} ({platform})", None)
        with tempfile.TemporaryDirectory(prefix="toolchain-package-") as tmp:
            context = Path(tmp)
            (context / "Dockerfile").write_text(dockerfile_text)
            (context / ".dockerignore").write_text("**/__pycache__\n**/*.pyc\n")
            write_bundle(model, context / "model", sha256=info["artifact_sha256"])  # the bytes shipped are the verified ones
            if config.deepstream:  # nvinfer's config and labels next to the engine, read by DeepStream on the unit
                from toolchain.handoff import write_deepstream_files

                write_deepstream_files(workspace, build, target, context / "model")
            copy_runtime(context / "runtime")  # the runtime files only (toolchain.package.runtime_files)
            shutil.copytree(vendored := vendor_dependencies(workspace, python_version, target.architecture, binary=binary, glibc=glibc),
                            context / "vendor",
                            ignore=shutil.ignore_patterns(".complete"))
            buildargs = {
                "BASE_IMAGE": base_image, "MODEL": info["model"], "ARTIFACT": build.id,
                "ARTIFACT_SHA256": info["artifact_sha256"], "ONNX_SHA256": info["onnx_sha256"], "TARGET": target.name,
                "TOOLCHAIN_VERSION": __version__, "LINEAGE": labels["org.toolchain.lineage"],
                "CREATED": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "REVISION": build.id,
                "HTTP_PORT": str(config.http_port),
            }
            make_world_readable(context)
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
            "engine_architecture": runs["engine_architecture"], "emulated": emulated, "stand_in_base": bool(lacking),
            "vendored_sha256": vendored.sha256,
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
                         seconds=time.perf_counter() - started, emulated=emulated)


def make_world_readable(context: Path) -> None:
    """Files 0644 and folders 0755 (atomic writes make 0600 temp files): the image's non-root user reads them,
    and they stay root-owned, so the service cannot change its own code or model."""
    for path in [context, *context.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)


def _record_name(model: str) -> str:
    return model.split("@")[0] or "model"


def _runtime_digest() -> str:
    """Digest of the toolchain files copied into the image (a change to them makes a new image)."""
    return digest_json([(str(p), sha256_file(PACKAGE / p)) for p in runtime_files()])


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
