"""Write and check a Triton model repository entry for a hand-off source.

``REPO/NAME/config.pbtxt``, ``REPO/NAME/1/model.plan`` (a TensorRT build) or ``1/model.onnx`` (a CPU build's
ONNX Runtime artifact, or an ONNX artifact), ``REPO/NAME/labels.txt``. The config's tensors are read from the
model file that goes into the repository (for a plan: from the ONNX it was built from, whose names and types
TensorRT keeps); the written config is parsed back with Triton's schema and checked against them, and an ONNX
repository's model is run with ONNX Runtime at the shapes and types the config declares.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.errors import BadInputError, UsageError
from toolchain.fileio import write_atomic
from toolchain.handoff.folders import copy_verified
from toolchain.handoff.model import ModelInfo, read_tensors
from toolchain.handoff.numerics import model_input, run_onnx, sample_frames
from toolchain.handoff.preprocessing import PreprocessingReport
from toolchain.handoff.source import Source
from toolchain.handoff.triton import (
    CONFIG_FILE,
    LABELS_FILE,
    PLATFORMS,
    VERSION,
    TritonConfig,
    TritonTensor,
    labels_text,
)
from toolchain.handoff.triton_schema import check_repository, run_repository

DEFAULT_ONNXRUNTIME_BATCH = 8  # ONNX Runtime takes any batch of a dynamic-batch model: Triton needs a cap


@dataclass(frozen=True, kw_only=True)
class TritonHandoff:
    model_dir: Path
    files: tuple[Path, ...]
    preprocessing: PreprocessingReport
    checks: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def write_triton(model_dir: Path, source: Source, info: ModelInfo, *, name: str,
                 max_batch: int | None = None) -> TritonHandoff:
    """Write ``model_dir`` (it becomes ``REPO/NAME``; ``name`` is the model's name) for ``source`` and check it.

    Raises:
        UsageError: ``max_batch`` against a fixed-batch model or beyond the engine's profile.
        BadInputError: The written repository disagrees with the model (a bug in the writer).
    """
    plan = source.is_tensorrt_engine
    platform, model_file = PLATFORMS["plan" if plan else "onnx"]
    version_dir = model_dir / VERSION
    version_dir.mkdir(parents=True, exist_ok=True)
    if source.engine_path is not None:
        copy_verified(source.engine_path, version_dir / model_file, source.engine_sha256)
    else:
        copy_verified(source.onnx_path, version_dir / model_file, str(source.onnx.body.get("blob", "")))
    if plan:
        inputs, outputs = (info.input,), info.outputs  # the engine's bindings carry the ONNX's names and types
    else:
        inputs, outputs, _ = read_tensors(version_dir / model_file)
    batch = _max_batch(source, info, max_batch)
    config = TritonConfig(
        name=name, platform=platform, max_batch_size=batch,
        inputs=tuple(TritonTensor(name=t.name, data_type=t.triton_type, dims=t.shape[1:] if batch else t.shape)
                     for t in inputs),
        outputs=tuple(TritonTensor(name=t.name, data_type=t.triton_type, dims=t.shape[1:] if batch else t.shape,
                                   label_filename=LABELS_FILE if t.name == info.output.name else "") for t in outputs),
        instance_kind="KIND_GPU" if source.target.is_tensorrt else "KIND_CPU", dynamic_batching=batch > 0,
        cc_model_filenames={source.compute_capability: model_file} if plan else {},
        comments=((f"Triton model written by `toolchain handoff` from {source.ref} for {source.target.name} "
                   f"({source.precision}); classes {', '.join(info.classes)}"),
                  "Clients send the model's own input: " + _input_contract(info)),
    )
    if any(-1 in t.dims for t in (*config.inputs, *config.outputs)):
        raise BadInputError(f"{info.input.name}: only the batch dimension may be dynamic for a Triton hand-off")
    write_atomic(model_dir / CONFIG_FILE, config.render())
    write_atomic(model_dir / LABELS_FILE, labels_text(info.classes))
    files = (model_dir / CONFIG_FILE, version_dir / model_file, model_dir / LABELS_FILE)
    parsed = check_repository(model_dir, info, name=name, kind="gpu" if source.target.is_tensorrt else "cpu",
                              max_profile_batch=source.max_batch if plan else None,
                              compute_capability=source.compute_capability if plan else "")
    checks: dict[str, Any] = {"schema": "tritonclient model_config_pb2", "parsed": True,
                              "max_batch_size": parsed.max_batch_size, "platform": parsed.platform}
    notes = []
    if plan:
        checks["run"] = None
        notes.append(f"model.plan runs only on a GPU of compute capability {source.compute_capability} with TensorRT "
                     f"{source.target.tensorrt}: not run here")
    else:
        checks["run"] = _run(model_dir, parsed, source, info)
        if source.backend == "onnxruntime":
            notes.append("model.onnx is the build's ONNX Runtime artifact (graph optimisations saved by ONNX Runtime "
                         f"{(source.record.body.get('runtime') or {}).get('version', '')}); Triton's ONNX Runtime backend "
                         "should be that version or newer")
    report = PreprocessingReport(exact=True, max_error=0.0, mode="model-input",
                                 notes=("Triton runs the model on the tensors clients send; nothing is approximated",))
    return TritonHandoff(model_dir=model_dir, files=files, preprocessing=report, checks=checks, notes=tuple(notes))


def _max_batch(source: Source, info: ModelInfo, requested: int | None) -> int:
    if info.fixed_batch is not None:
        if requested is not None:
            raise UsageError(f"the model has a fixed batch of {info.fixed_batch} (max_batch_size 0 with the full shape); "
                             "drop --max-batch or re-export with `toolchain export --batch dynamic`")
        return 0
    if requested is not None and requested < 1:
        raise UsageError("--max-batch must be at least 1")
    if source.is_tensorrt_engine:
        limit = source.max_batch or 1
        if requested is not None and requested > limit:
            raise UsageError(f"--max-batch {requested} exceeds the engine's optimisation profile (max {limit})")
        return requested or limit
    return requested or source.max_batch or DEFAULT_ONNXRUNTIME_BATCH


def _input_contract(info: ModelInfo) -> str:
    if info.layout == "uint8-nhwc":
        return f"uint8 RGB frames NHWC {info.size}x{info.size} (the graph normalises them)"
    return (f"float32 RGB NCHW {info.size}x{info.size}, (x/255 - mean)/std with mean {list(info.mean)} and std "
            f"{list(info.std)}")


def _run(model_dir: Path, config: Any, source: Source, info: ModelInfo) -> dict[str, Any]:
    """ONNX Runtime on ``REPO/NAME/1/model.onnx`` at the declared shapes, against the source ONNX."""
    count = max(config.max_batch_size, 1) if config.max_batch_size else (info.fixed_batch or 1)
    frames = sample_frames(info.size, count=max(count, 2))[:count]
    feed = model_input(info, frames)
    outputs = run_repository(model_dir, config, {info.input.name: feed})
    reference = run_onnx(source.onnx_path, feed, batch=info.fixed_batch)
    runs = []
    for size, out in sorted(outputs.items()):
        diff = float(np.abs(out.astype(np.float64) - reference[:size].astype(np.float64)).max())
        runs.append({"batch": size, "shape": list(out.shape), "max_abs_vs_source": diff})
    return {"runtime": "onnxruntime", "runs": runs, "max_abs_vs_source": max(r["max_abs_vs_source"] for r in runs)}
