"""CPU-target builds: an ONNX Runtime artifact with graph optimisations applied and saved, verified to
load and to match the input ONNX numerically, recorded with its metadata. Rebuilding with the same
inputs is a cache hit.

Graph optimisation level EXTENDED is used, not ALL: ALL adds layout transforms tuned to the build
machine's CPU features, which would make the artifact unsafe to copy to another CPU of the target.
"""

from __future__ import annotations

import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.artifacts import resolve_artifact
from toolchain.errors import BadInputError, MissingEnvironmentError, QualityGateError, UsageError
from toolchain.hashing import digest_json
from toolchain.registry import NewRecord
from toolchain.targets.profile import Target, check_opset, load_target
from toolchain.workspace import Workspace

PRECISIONS = ("fp32", "fp16", "int8", "best")


@dataclass(frozen=True, kw_only=True)
class BuildConfig:
    """Options of ``toolchain build``."""

    onnx: str  # artifact ref or path: an FP32 ONNX (fp32) or an INT8 Q/DQ ONNX (int8)
    target: str
    precision: str = "best"
    verify_images: int = 32
    atol: float = 1e-4

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}")


@dataclass(frozen=True, kw_only=True)
class BuildResult:
    """A built (or cached) engine artifact for one target."""

    build: str
    target: str
    precision: str
    path: Path
    cached: bool
    onnx: str
    verification: dict[str, Any]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "build": self.build, "target": self.target, "precision": self.precision, "path": str(self.path),
            "cached": self.cached, "onnx": self.onnx, "verification": self.verification, "seconds": round(self.seconds, 3),
        }


def _precision_for(target: Target, onnx_type: str, requested: str) -> str:
    precision = "int8" if onnx_type == "onnx-int8" else "fp32"
    if requested not in ("best", precision):
        hint = "quantize it first with `toolchain quantize`" if requested == "int8" else "pass the FP32 ONNX"
        raise UsageError(f"--precision {requested} needs a matching ONNX: this one is {precision}; {hint}")
    if precision not in target.precisions:
        raise UsageError(f"target {target.name} does not run {precision}; it supports {', '.join(target.precisions)}")
    return precision


def build_cpu(workspace: Workspace, config: BuildConfig) -> BuildResult:
    """Build the ONNX Runtime artifact of ``config.onnx`` for a CPU target, or return the cached one."""
    import onnxruntime as ort

    started = time.perf_counter()
    target = load_target(config.target)
    if target.is_tensorrt:
        raise MissingEnvironmentError(
            f"target {target.name} needs a TensorRT engine built on the device or in its L4T container; "
            "TensorRT builds are not implemented in this toolchain yet (use a CPU target: x86-64-cpu, aarch64-cpu)"
        )
    if target.architecture != platform.machine().replace("arm64", "aarch64"):
        raise MissingEnvironmentError(
            f"target {target.name} is {target.architecture} but this machine is {platform.machine()}; "
            "build on a machine of that architecture"
        )
    onnx_artifact = resolve_artifact(workspace, config.onnx)
    if not onnx_artifact.type.startswith("onnx"):
        raise UsageError(f"{config.onnx} is a {onnx_artifact.type} artifact; build takes an ONNX from export or quantize")
    body = onnx_artifact.record.body
    check_opset(target, int(body.get("opset", 0) or 0))
    precision = _precision_for(target, onnx_artifact.type, config.precision)
    key = digest_json({
        "onnx": body["blob"], "target": target.name, "precision": precision, "runtime": f"onnxruntime {ort.__version__}",
        "optimization": "extended", "architecture": target.architecture,
    })
    for record in workspace.registry.find(kind="build"):
        if record.body.get("key") == key and workspace.blobs.has(record.body["blob"]):
            return BuildResult(build=record.id, target=target.name, precision=precision,
                               path=workspace.blobs.path(record.body["blob"]), cached=True, onnx=onnx_artifact.id,
                               verification=record.body["verification"], seconds=time.perf_counter() - started)

    with tempfile.TemporaryDirectory(prefix="toolchain-build-") as tmp:
        out = Path(tmp) / "model.ort.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(out)
        ort.InferenceSession(str(onnx_artifact.path), sess_options=options, providers=["CPUExecutionProvider"])
        if not out.is_file():
            raise BadInputError(f"ONNX Runtime wrote no optimised model for {onnx_artifact.ref}")
        verification = _verify(onnx_artifact.path, out, config, precision)
        if not verification["passed"]:
            raise QualityGateError(
                f"the built artifact does not match {onnx_artifact.ref}: max abs {verification['max_abs']:.2e} "
                f"(<= {config.atol:g}), top-1 agreement {verification['top1_agreement']:.2%}; nothing was registered"
            )
        blob = workspace.blobs.put_file(out)
    build_body = {
        "key": key,
        "blob": blob,
        "format": "onnxruntime-optimized-onnx",
        "target": target.name,
        "architecture": target.architecture,
        "precision": precision,
        "runtime": {"name": "onnxruntime", "version": ort.__version__, "graph_optimization": "extended"},
        "onnx": onnx_artifact.id,
        "onnx_sha256": body["blob"],
        "input": body.get("input"),
        "batch": body.get("batch"),
        "opset": body.get("opset"),
        "device": platform.node(),
        "verification": verification,
        "build_seconds": round(time.perf_counter() - started, 3),
    }
    record, _, _ = workspace.registry.commit(NewRecord(
        kind="build", name=f"{onnx_artifact.record.name}-{target.name}", body=build_body,
        links=((onnx_artifact.id, "onnx"),), blobs=((blob, "engine"),),
    ))
    return BuildResult(build=record.id, target=target.name, precision=precision, path=workspace.blobs.path(blob),
                       cached=False, onnx=onnx_artifact.id, verification=verification,
                       seconds=time.perf_counter() - started)


def _verify(source: Path, built: Path, config: BuildConfig, precision: str) -> dict[str, Any]:
    """Run the input ONNX and the built artifact on the same random inputs and compare."""
    from toolchain.runtime.runners import OnnxRuntimeRunner

    with OnnxRuntimeRunner(source) as reference, OnnxRuntimeRunner(built) as candidate:
        shape = [d if isinstance(d, int) else 4 for d in reference.input_shape]
        rng = np.random.default_rng(0)
        is_uint8 = "uint8" in str(_input_type(source))
        outputs = []
        for _ in range(max(1, config.verify_images // max(1, shape[0]))):
            feed = (rng.integers(0, 256, shape, dtype=np.uint8) if is_uint8
                    else rng.standard_normal(shape).astype(np.float32))
            outputs.append((reference.infer(feed), candidate.infer(feed)))
    expected = np.concatenate([a for a, _ in outputs])
    actual = np.concatenate([b for _, b in outputs])
    max_abs = float(np.max(np.abs(expected - actual)))
    agreement = float(np.mean(expected.argmax(1) == actual.argmax(1)))
    atol = config.atol if precision == "fp32" else max(config.atol, 1e-3)
    return {"images": int(len(expected)), "max_abs": max_abs, "top1_agreement": agreement, "atol": atol,
            "passed": bool(max_abs <= atol and agreement == 1.0)}


def _input_type(path: Path) -> str:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return onnx.TensorProto.DataType.Name(model.graph.input[0].type.tensor_type.elem_type).lower()
