"""What ``toolchain bench`` measures: an artifact resolved to a runner, its preprocessing and classes.

An ARTIFACT may be a ``build`` record (a CPU-target ONNX Runtime artifact, or a TensorRT engine), an
ONNX artifact (export or INT8 quantize), a registered model (run by the torch reference runner), or
the path of any of their files (an unregistered ``.onnx`` file is read with its own metadata).
Preprocessing follows the artifact's metadata (input size, mean/std, layout) as evaluate does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolchain.errors import InputNotFoundError, MissingEnvironmentError, UsageError
from toolchain.hashing import sha256_file
from toolchain.registry import Record
from toolchain.runtime.preprocess import PreprocessConfig, Roi
from toolchain.runtime.runners import BaseRunner, ORT_PROVIDER_ALIASES, OnnxRuntimeRunner, TensorRTRunner, TorchRunner
from toolchain.runtime.runners import check_build_matches_machine
from toolchain.workspace import Workspace

RUNNERS = ("auto", "onnxruntime", "onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt", "torch", "torch-cuda")


@dataclass(frozen=True, kw_only=True)
class Subject:
    """An artifact ready to benchmark.

    Attributes:
        ref: How to name it in reports (``NAME@vN``, a short id, or the file name).
        kind: ``build``, ``onnx``, ``onnx-int8``, ``model`` or ``file``.
        record: Its registry record (None for an unregistered file).
        path: The file the runner loads (None for a model: its weights live in the registry).
        size_bytes: Size of what the runner loads.
        input_size, layout, mean, std: Preprocessing, from the artifact's metadata.
        classes: Class names.
        build: The build record body (for the machine check).
        target: The hardware target it was built for, if any.
        accuracy: Test-split accuracy from the latest recorded evaluation, if any.
    """

    ref: str
    kind: str
    record: Record | None
    path: Path | None
    size_bytes: int
    input_size: int
    layout: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...]
    build: Mapping[str, Any] | None = None
    target: str | None = None
    accuracy: float | None = None
    workspace_root: Path | None = field(default=None, compare=False)

    @property
    def is_tensorrt(self) -> bool:
        build = self.build or {}
        return bool(build.get("tensorrt_version")) or "tensorrt" in str(build.get("format", ""))

    def default_runner(self) -> str:
        if self.kind == "model":
            return "torch"
        return "tensorrt" if self.is_tensorrt else "onnxruntime"

    def preprocess_config(self, roi: Roi | None = None) -> PreprocessConfig:
        return PreprocessConfig(size=self.input_size, layout=self.layout, mean=self.mean, std=self.std, roi=roi)

    def make_runner(self, workspace: Workspace, runner: str, *, threads: int = 0) -> BaseRunner:
        """A runner for this artifact on this machine (checked against the build record when there is one)."""
        runner = self.default_runner() if runner == "auto" else runner
        if runner.startswith("torch"):
            if self.kind != "model":
                raise UsageError(f"--runner {runner} runs a registered model; {self.ref} is a {self.kind} "
                                 "(bench the model it came from, or use --runner onnxruntime)")
            from toolchain.models.registered import load_registered_model  # workstation only: needs torch

            module = load_registered_model(workspace, self.record.id if self.record else self.ref).module
            return TorchRunner(module, device="cuda" if runner == "torch-cuda" else "cpu", name=self.ref, threads=threads)
        if self.kind == "model":
            raise UsageError(f"{self.ref} is a registered model: bench it with --runner torch or torch-cuda, or export it")
        assert self.path is not None
        if runner == "tensorrt":
            if not self.is_tensorrt:
                raise UsageError(f"{self.ref} is not a TensorRT engine; build one with `toolchain build ONNX --target "
                                 "jetson-...`, or use --runner onnxruntime-tensorrt to let ONNX Runtime build it")
            return TensorRTRunner(self.path, build=self.build)
        if self.is_tensorrt:
            raise UsageError(f"{self.ref} is a TensorRT engine: use --runner tensorrt")
        if self.build:
            check_build_matches_machine(self.build)
        providers = ORT_PROVIDER_ALIASES[runner.removeprefix("onnxruntime").lstrip("-") or "cpu"]
        return OnnxRuntimeRunner(self.path, providers=providers, threads=threads)


def resolve_subject(workspace: Workspace, ref: str) -> Subject:
    """Find what ``ref`` names: a build, an ONNX artifact, a model, or a file (see the module docstring)."""
    path = Path(ref)
    if ("/" in ref or path.suffix) and path.is_file():
        return _from_file(workspace, path)
    builds = workspace.registry.find(kind="build", name=ref)  # builds are named, not versioned: take the latest
    if builds:
        latest = max(builds, key=lambda r: r.created_at)
        return _from_record(workspace, latest, f"{ref} ({latest.id[:8]})")
    for kind in ("build", "artifact", "model"):
        try:
            resolved = workspace.resolve(ref, kind=kind)
        except InputNotFoundError:
            continue
        return _from_record(workspace, resolved.record, _label(resolved.record, resolved.version))
    raise InputNotFoundError(
        f"{ref} is not a build, ONNX artifact or model in {workspace.root}, nor a file; see `toolchain build`, "
        "`toolchain export`, or pass the path of an .onnx file"
    )


def _label(record: Record, version: Any) -> str:
    return f"{version.name}@v{version.number}" if version is not None else (record.name or record.id[:12])


def _from_file(workspace: Workspace, path: Path) -> Subject:
    sha = sha256_file(path)
    owners = {b.record_id for b in workspace.registry.blob_refs() if b.sha256 == sha}
    records = [r for r in (workspace.registry.get(i) for i in owners) if r is not None]
    for kind in ("build", "artifact"):
        for record in records:
            if record.kind == kind:
                return _from_record(workspace, record, _label(record, workspace.registry.version_of(kind, record.name, record.id)), path=path)
    for record in workspace.registry.find(kind="model"):
        if record.body.get("weights") == sha:
            return _from_record(workspace, record, _label(record, workspace.registry.version_of("model", record.name, record.id)))
    if path.suffix.lower() != ".onnx":
        raise InputNotFoundError(
            f"{path} is not a registered build, artifact or model, and not an .onnx file; an engine must be registered "
            "(`toolchain build`) so it can be checked against this machine"
        )
    meta = _onnx_metadata(path)
    return _subject_from_metadata(ref=path.name, kind="file", record=None, path=path, meta=meta, layout=None)


def _onnx_metadata(path: Path) -> dict[str, str]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = dict(session.get_modelmeta().custom_metadata_map)
    first = session.get_inputs()[0]
    meta.setdefault("input_layout", "uint8-nhwc" if "uint8" in first.type else "float-nchw")
    if "input_size" not in meta:
        dims = [d for d in first.shape[1:] if isinstance(d, int)]
        meta["input_size"] = str(dims[-1] if meta["input_layout"] == "float-nchw" else dims[0]) if dims else "128"
    return meta


def _subject_from_metadata(*, ref: str, kind: str, record: Record | None, path: Path, meta: Mapping[str, str],
                           layout: str | None, build: Mapping[str, Any] | None = None, accuracy: float | None = None) -> Subject:
    def listed(key: str) -> list[Any]:  # export writes lists as JSON strings; records made by hand hold lists
        value = meta[key]
        return list(json.loads(value) if isinstance(value, str) else value)

    def vector(key: str, default: tuple[float, ...]) -> tuple[float, ...]:
        return tuple(float(v) for v in listed(key)) if key in meta else default

    return Subject(
        ref=ref, kind=kind, record=record, path=path, size_bytes=path.stat().st_size,
        input_size=int(meta.get("input_size", 128)), layout=layout or meta.get("input_layout", "float-nchw"),
        mean=vector("mean", (0.485, 0.456, 0.406)), std=vector("std", (0.229, 0.224, 0.225)),
        classes=tuple(map(str, listed("classes"))) if "classes" in meta else (),
        build=build, target=(build or {}).get("target"), accuracy=accuracy,
    )


def _from_record(workspace: Workspace, record: Record, label: str, path: Path | None = None) -> Subject:
    body = record.body
    if record.kind == "build":
        onnx = workspace.registry.get(body.get("onnx", "")) if body.get("onnx") else None
        meta = dict(onnx.body.get("metadata", {})) if onnx else {}
        blob_path = path or workspace.blobs.require(body["blob"])
        if not meta and not _is_tensorrt(body):
            meta = _onnx_metadata(blob_path)
        return _subject_from_metadata(ref=label, kind="build", record=record, path=blob_path, meta=meta,
                                      layout=body.get("input"), build=body,
                                      accuracy=_accuracy(workspace, onnx.id) if onnx else None)
    if record.kind == "artifact":
        kind = str(body.get("type", ""))
        if not kind.startswith("onnx"):
            raise UsageError(f"{label} is a {kind} artifact; bench takes a build, an ONNX artifact or a model")
        onnx_path = path or workspace.blobs.require(body["blob"])
        meta = dict(body.get("metadata", {}))
        if "input_size" not in meta:  # a record without it (a quantized ONNX): read it off the graph, never assume 128
            meta = {**_onnx_metadata(onnx_path), **meta}
        return _subject_from_metadata(ref=label, kind=kind, record=record, path=onnx_path, meta=meta,
                                      layout=body.get("input"), accuracy=_accuracy(workspace, record.id))
    if record.kind == "model":
        recipe = body.get("recipe", {})
        weights = workspace.blobs.require(body["weights"])
        return Subject(
            ref=label, kind="model", record=record, path=None, size_bytes=weights.stat().st_size,
            input_size=int(recipe.get("input_size", 128)), layout="float-nchw",
            mean=tuple(recipe.get("mean", (0.485, 0.456, 0.406))), std=tuple(recipe.get("std", (0.229, 0.224, 0.225))),
            classes=tuple(body.get("classes", ())),
            accuracy=_accuracy(workspace, record.id),
        )
    raise UsageError(f"{label} is a {record.kind} record; bench takes a build, an ONNX artifact or a model")


def _is_tensorrt(body: Mapping[str, Any]) -> bool:
    return bool(body.get("tensorrt_version")) or "tensorrt" in str(body.get("format", ""))


def _accuracy(workspace: Workspace, record_id: str) -> float | None:
    """Test-split accuracy of the latest evaluation recorded for ``record_id``."""
    evaluations = []
    for link in workspace.registry.links_to(record_id):
        if link.role != "model":
            continue
        record = workspace.registry.get(link.record_id)
        if record is not None and record.kind == "evaluation" and record.body.get("split") == "test":
            evaluations.append(record)
    if not evaluations:
        return None
    latest = max(evaluations, key=lambda r: r.created_at)
    value = latest.body.get("metrics", {}).get("accuracy")
    return float(value) if value is not None else None


def require_runner_available(name: str) -> None:
    """Raise MissingEnvironmentError early for a runner whose backend is absent (before sources open)."""
    if name in ("torch", "torch-cuda"):
        try:
            import torch
        except ImportError as exc:
            raise MissingEnvironmentError("--runner torch needs torch: pip install 'toolchain[train]'") from exc
        if name == "torch-cuda" and not torch.cuda.is_available():
            raise MissingEnvironmentError("--runner torch-cuda needs a CUDA GPU; none is visible to torch here")
