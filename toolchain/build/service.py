"""``toolchain build``: plan, then build where the engine can be built, verify, record, cache.

Where a build runs:

* CPU targets (ONNX Runtime), locally: the builder (:mod:`toolchain.build.onnxruntime_builder`) runs
  in-process when this machine has the target's architecture.
* TensorRT targets, locally: only when ``tensorrt`` imports here, a GPU is present, and its TensorRT
  version and compute capability are the target's (:func:`tensorrt_builder.probe`). Otherwise the build
  is refused with exit 5: engines are not portable across GPU architectures or TensorRT versions.
* Any target, ``--on URL``: the builder script runs in the target's build container on that Docker
  Engine (a roadside unit), see :mod:`toolchain.build.remote`.

The cache key is the plan's key (ONNX sha256, target, precision, TensorRT/L4T/SM, DLA core, shapes,
flags, builder version) plus what builds it (the local runtime, or the unit's build image id): the same
inputs built the same way are a cache hit. The engine file is stored as built (no header bytes), its
metadata in the ``build`` record.
"""

from __future__ import annotations

import contextlib
import json
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolchain.artifacts import resolve_artifact
from toolchain.build import onnxruntime_builder, tensorrt_builder
from toolchain.build.onnxruntime_builder import BuildFailure
from toolchain.build.plan import BuildPlan, onnx_input_fields, plan_build
from toolchain.errors import BadInputError, MissingEnvironmentError, QualityGateError, UsageError
from toolchain.hashing import digest_json
from toolchain.progress import NullProgress, Progress
from toolchain.registry import NewRecord, Record
from toolchain.targets.profile import Target, load_target, machine_architecture
from toolchain.workspace import Workspace

PRECISIONS = ("fp32", "fp16", "int8", "best")
TIMING_CACHE_TYPE = "tensorrt-timing-cache"


@dataclass(frozen=True, kw_only=True)
class BuildConfig:
    """Options of ``toolchain build``.

    Attributes:
        onnx: Artifact ref or path: an FP32 ONNX from export or an INT8 Q/DQ ONNX from quantize.
        target: Target name or .toml path.
        precision: fp32, fp16, int8 or best (see :func:`toolchain.build.plan.plan_build`).
        dla_core: DLA core (TensorRT targets with a DLA), or None for the GPU.
        allow_gpu_fallback_only: Keep a DLA build whose layers all fell back to the GPU (refused otherwise).
        workspace_mib: TensorRT memory pool limit.
        batch: (min, opt, max) batch of the optimisation profile, for a dynamic-batch ONNX.
        on: Docker Engine URL of the unit to build on (``ssh://user@unit``, ``unix://...``); None: here.
        build_image: Override the target's build image (remote builds).
        insecure: Allow plain tcp:// engine URLs.
        timeout_s: Seconds a remote build may take.
        verify_images: Random inputs the CPU builder compares the artifact on.
        atol: Largest absolute output difference accepted by that check (FP32).
    """

    onnx: str
    target: str
    precision: str = "best"
    dla_core: int | None = None
    allow_gpu_fallback_only: bool = False
    workspace_mib: int | None = None
    batch: tuple[int, int, int] | None = None
    on: str | None = None
    build_image: str | None = None
    insecure: bool = False
    timeout_s: float = 1800.0
    verify_images: int = 32
    atol: float = 1e-4

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}")
        if self.timeout_s <= 0:
            raise UsageError("--timeout must be positive")


@dataclass(frozen=True, kw_only=True)
class BuildResult:
    """A built (or cached) engine for one target."""

    build: str
    target: str
    backend: str
    precision: str
    path: Path
    cached: bool
    onnx: str
    where: str
    plan: dict[str, Any]
    verification: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def device(self) -> str:
        """``cpu``, ``gpu`` or ``dla:N``."""
        return str(self.plan.get("device", "gpu")) if self.backend == "tensorrt" else "cpu"

    def to_json(self) -> dict[str, Any]:
        return {
            "artifact": self.build, "build": self.build, "path": str(self.path), "target": self.target,
            "precision": self.precision, "backend": self.backend, "cached": self.cached, "onnx": self.onnx,
            "where": self.where, "device": self.device, "key": self.plan.get("key"),
            "verification": self.verification, "metadata": self.metadata, "seconds": round(self.seconds, 3),
        }


def build(workspace: Workspace, config: BuildConfig, progress: Progress | None = None) -> BuildResult:
    """Build (or find in the cache) the engine of ``config.onnx`` for ``config.target``."""
    with contextlib.ExitStack() as cleanup:
        return _build(workspace, config, progress or NullProgress(), cleanup)


def _build(workspace: Workspace, config: BuildConfig, progress: Progress, cleanup: contextlib.ExitStack) -> BuildResult:
    started = time.perf_counter()
    target = load_target(config.target)
    onnx = resolve_artifact(workspace, config.onnx)
    if not onnx.type.startswith("onnx"):
        raise UsageError(f"{config.onnx} is a {onnx.type} artifact; build takes an ONNX from export or quantize")
    body = {**onnx.record.body, **onnx_input_fields(onnx.path)}
    plan = plan_build(target, body, precision=config.precision, dla_core=config.dla_core,
                      workspace_mib=config.workspace_mib, batch=config.batch,
                      allow_gpu_fallback_only=config.allow_gpu_fallback_only)
    image = config.build_image or target.build_image
    client = None
    if config.on:
        from toolchain.build.remote import check_architecture
        from toolchain.docker_engine import connect, redact
        from toolchain.images.ensure import ensure_image

        client = connect(config.on, insecure=config.insecure)
        cleanup.callback(client.close)
        build_image = ensure_image(client, image)
        emulated = check_architecture(client, target.architecture, build_image.id)
        builder_identity = f"image {build_image.id}"
        where = f"remote {redact(config.on)}" + (" (emulated)" if emulated else "")
    elif target.is_tensorrt:
        environment = _local_tensorrt(target, plan)
        builder_identity = f"local tensorrt {environment.get('tensorrt_version')}"
        where = "local"
    else:
        if target.architecture != machine_architecture():
            raise MissingEnvironmentError(
                f"target {target.name} is {target.architecture} but this machine is {machine_architecture()}; "
                f"build on a machine of that architecture, or on a unit: --on ssh://user@unit"
            )
        builder_identity = plan.runtime
        where = "local"
    key = digest_json({"plan": plan.key, "builder": builder_identity})
    cached = _cached(workspace, key)
    if cached is not None:
        return _result(workspace, cached, onnx.id, cached=True, started=started)

    progress.start(f"build {target.name} {plan.precision} ({where})", None)
    with tempfile.TemporaryDirectory(prefix="toolchain-build-") as tmp:
        work = Path(tmp)
        timing_cache = _timing_cache(workspace, target) if plan.is_tensorrt else None
        request, script, artifact_name, inputs = _request(plan, config, target, onnx.path, timing_cache)
        out_dir = work / "out"
        if client is not None:
            from toolchain.build.remote import ContainerJob, run_in_container

            outcome = run_in_container(client, ContainerJob(
                image=image, script=script, request=request, inputs=inputs, artifact_name=artifact_name,
                runtime="nvidia" if target.is_tensorrt else None, timeout_s=config.timeout_s,
                architecture=target.architecture,
            ), out_dir)
            result = outcome.result
        else:
            result = _run_local(plan, request, inputs, work, out_dir)
        engine = out_dir / artifact_name
        _check_result(target, plan, result, engine)
        record = _register(workspace, plan, target, onnx, result, engine, out_dir, key=key, where=where, image=image,
                           started=started)
    progress.finish()
    return _result(workspace, record, onnx.id, cached=False, started=started)


def _local_tensorrt(target: Target, plan: BuildPlan) -> dict[str, Any]:
    """The local TensorRT environment when it can build for ``target``; else exit 5 with the reason."""
    how = ("Build on the device itself (install toolchain there), or from here on the unit: "
           f"`toolchain build ONNX --target {target.name} --on ssh://user@unit`, which runs the build in the "
           f"target's L4T container ({target.build_image}).")
    environment = tensorrt_builder.probe()
    if environment is None:
        raise MissingEnvironmentError(
            f"target {target.name} needs a TensorRT {target.tensorrt} engine for a GPU of compute capability "
            f"{target.gpu_compute_capability}, and this machine has no TensorRT with a GPU. Engines are not portable "
            f"across GPU architectures or TensorRT versions. {how}"
        )
    here_sm = str(environment.get("compute_capability", ""))
    same_trt = tensorrt_builder.version_matches(target.tensorrt, str(environment.get("tensorrt_version", "")))
    if not same_trt or here_sm != target.gpu_compute_capability:
        raise MissingEnvironmentError(
            f"this machine has TensorRT {environment.get('tensorrt_version')} on SM {here_sm} "
            f"({environment.get('device_name')}); target {target.name} needs TensorRT {target.tensorrt} on SM "
            f"{target.gpu_compute_capability}. An engine built here would not load there (engines are not portable "
            f"across GPU architectures or TensorRT versions). {how}"
        )
    if plan.dla_core is not None and plan.dla_core >= int(environment.get("num_dla_cores") or 0):
        raise UsageError(f"--dla {plan.dla_core}: this device reports {environment.get('num_dla_cores', 0)} DLA cores")
    return environment


def _request(plan: BuildPlan, config: BuildConfig, target: Target, onnx_path: Path,
             timing_cache: Path | None) -> tuple[dict[str, Any], Path, str, dict[str, Path]]:
    """The builder request, its script, the artifact's file name and the input files, by name."""
    inputs = {"model.onnx": onnx_path}
    if plan.is_tensorrt:
        if timing_cache is not None:
            inputs["timing.cache"] = timing_cache
        request = plan.request(onnx="model.onnx", timing_cache="timing.cache" if timing_cache else None)
        return request, Path(tensorrt_builder.__file__), tensorrt_builder.ENGINE_NAME, inputs
    request = {"onnx": "model.onnx", "precision": plan.precision, "verify_images": config.verify_images,
               "atol": config.atol, "expect": {"architecture": target.architecture}, "key": plan.key}
    return request, Path(onnxruntime_builder.__file__), onnxruntime_builder.ARTIFACT_NAME, inputs


def _run_local(plan: BuildPlan, request: dict[str, Any], inputs: dict[str, Path], work: Path, out_dir: Path) -> dict[str, Any]:
    """Run the builder in-process, in a work folder laid out as in the container."""
    request_dir = work / "in"
    request_dir.mkdir()
    for name, source in inputs.items():
        (request_dir / name).symlink_to(source.resolve())
    (request_dir / "request.json").write_text(json.dumps(request))
    if plan.is_tensorrt:  # pragma: no cover - needs TensorRT and a GPU (tests marked tensorrt)
        try:
            return tensorrt_builder.build(request, request_dir, out_dir)
        except tensorrt_builder.BuilderError as failure:
            error = {tensorrt_builder.EXIT_ENVIRONMENT: MissingEnvironmentError, tensorrt_builder.EXIT_USAGE: UsageError}
            raise error.get(failure.code, BadInputError)(f"TensorRT build failed: {failure.message}") from failure
    try:
        return onnxruntime_builder.build(request, request_dir, out_dir)
    except BuildFailure as failure:
        if failure.code == onnxruntime_builder.EXIT_MISMATCH:
            raise QualityGateError(f"{failure}; nothing was registered") from failure
        if failure.code == onnxruntime_builder.EXIT_WRONG_MACHINE:
            raise MissingEnvironmentError(str(failure)) from failure
        raise BadInputError(str(failure)) from failure


def _check_result(target: Target, plan: BuildPlan, result: dict[str, Any], engine: Path) -> None:
    """Refuse an engine whose metadata says it was built for something other than the target."""
    if not engine.is_file():
        raise BadInputError(f"the builder reported success but wrote no {engine.name}; rerun the build")
    if plan.is_tensorrt:
        same_trt = tensorrt_builder.version_matches(target.tensorrt, str(result.get("tensorrt_version", "")))
        if not same_trt or str(result.get("compute_capability")) != target.gpu_compute_capability:
            raise MissingEnvironmentError(
                f"the unit built with TensorRT {result.get('tensorrt_version')} on SM {result.get('compute_capability')}, "
                f"not the target's TensorRT {target.tensorrt} on SM {target.gpu_compute_capability}; the engine was not "
                f"registered. Use a unit (or --build-image) that matches {target.name}, or a target profile for that unit"
            )
    elif result.get("architecture") != target.architecture:
        raise MissingEnvironmentError(
            f"the artifact was built on {result.get('architecture')}, target {target.name} is {target.architecture}"
        )


def _register(workspace: Workspace, plan: BuildPlan, target: Target, onnx: Any, result: dict[str, Any], engine: Path,
              out_dir: Path, *, key: str, where: str, image: str, started: float) -> Record:
    blob = workspace.blobs.put_file(engine)  # hashes while it copies: the check below reads nothing again
    if blob != result.get("engine_sha256"):
        raise BadInputError("the built engine does not match the sha256 its builder reported; rerun the build "
                            "(nothing was registered)")
    blobs = [(blob, "engine")]
    log = out_dir / "build.log"
    log_blob = workspace.blobs.put_file(log) if log.is_file() else None
    if log_blob:
        blobs.append((log_blob, "build-log"))
    body = {
        "key": key,
        "blob": blob,
        "size": engine.stat().st_size,
        "format": "tensorrt-plan" if plan.is_tensorrt else result.get("format", "onnxruntime-optimized-onnx"),
        "backend": target.kind,
        "target": target.name,
        "architecture": target.architecture,
        "precision": plan.precision,
        "device": plan.device if plan.is_tensorrt else "cpu",
        "dla_core": plan.dla_core,
        "tensorrt_version": result.get("tensorrt_version", ""),
        "compute_capability": result.get("compute_capability", ""),
        "jetpack": target.jetpack,
        "l4t": target.l4t,
        "runtime": result.get("runtime") or {"name": "tensorrt", "version": result.get("tensorrt_version")},
        "device_name": result.get("device_name", platform.node()),
        "onnx": onnx.id,
        "onnx_sha256": plan.onnx_sha256,
        "input": onnx.record.body.get("input"),
        "input_name": plan.input_name,
        "input_dtype": plan.input_dtype,
        "shapes": {"min": list(plan.min_shape), "opt": list(plan.opt_shape), "max": list(plan.max_shape)},
        "batch": onnx.record.body.get("batch"),
        "opset": plan.opset,
        "flags": list(plan.flags),
        "layers": _layer_counts(result) if plan.is_tensorrt else None,
        "plan": plan.to_json(),
        "where": where,
        "build_image": image if where.startswith("remote") else "",
        "builder_result": result,
        "build_log": log_blob,
        "verification": result.get("verification", {}),
        "build_seconds": round(time.perf_counter() - started, 3),
    }
    record, _, _ = workspace.registry.commit(NewRecord(
        kind="build", name=f"{onnx.record.name}-{target.name}", body=body,
        links=((onnx.id, "onnx"),), blobs=tuple(blobs),
    ))
    cache_file = out_dir / "timing.cache"
    if plan.is_tensorrt and cache_file.is_file():  # pragma: no cover - written by TensorRT builds only
        _store_timing_cache(workspace, target, cache_file, record.id)
    return record


def _layer_counts(result: dict[str, Any]) -> dict[str, Any] | None:
    """How many engine layers run on the DLA and on the GPU, as the TensorRT builder read them back
    (``layer_placement``: engine inspector or build log), or None from a builder that did not report it."""
    placement = result.get("layer_placement")
    if not isinstance(placement, dict):
        return None
    return {"dla": placement.get("dla"), "gpu": placement.get("gpu"),
            "dla_transfers": placement.get("dla_transfers"), "source": placement.get("source")}


def _cached(workspace: Workspace, key: str) -> Record | None:
    for record in workspace.registry.find(kind="build"):
        if record.body.get("key") == key and workspace.blobs.has(record.body["blob"]):
            return record
    return None


def _result(workspace: Workspace, record: Record, onnx_id: str, *, cached: bool, started: float) -> BuildResult:
    body = record.body
    metadata = {k: body.get(k) for k in ("tensorrt_version", "compute_capability", "device_name", "dla_core",
                                         "jetpack", "l4t", "shapes", "flags", "layers", "onnx_sha256",
                                         "build_seconds")}
    return BuildResult(
        build=record.id, target=body["target"], backend=body.get("backend", "onnxruntime"), precision=body["precision"],
        path=workspace.blobs.path(body["blob"]), cached=cached, onnx=onnx_id, where=body.get("where", "local"),
        plan=body.get("plan", {}), verification=body.get("verification", {}), metadata=metadata,
        seconds=time.perf_counter() - started,
    )


def _timing_cache(workspace: Workspace, target: Target) -> Path | None:
    """The latest timing cache kept for ``target`` (TensorRT reuses layer timings across builds)."""
    versions = workspace.registry.versions("artifact", f"timing-cache-{target.name}")
    if not versions:
        return None
    record = workspace.registry.get(versions[-1].record_id)
    if record is None or not workspace.blobs.has(record.body["blob"]):
        return None
    return workspace.blobs.path(record.body["blob"])


def _store_timing_cache(workspace: Workspace, target: Target, cache_file: Path, build_id: str) -> None:  # pragma: no cover
    from toolchain.artifacts import register_file

    register_file(workspace, cache_file, name=f"timing-cache-{target.name}", type=TIMING_CACHE_TYPE,
                  body={"target": target.name, "tensorrt": target.tensorrt}, links=((build_id, "build"),))
