"""What is handed off: a build (an engine for a target) or an ONNX artifact plus the target it is for.

A ``build`` record gives the engine (a TensorRT plan, or a CPU target's ONNX Runtime artifact), its target,
precision and batch profile, and links to the ONNX it was built from: that ONNX is the model's description
(metadata, tensors) and, for a plan, the stand-in that numeric checks run (nothing here runs TensorRT).
An ONNX artifact needs ``--target``; its precision and batch profile are planned by the same rules as
``toolchain build`` (:func:`toolchain.build.plan.plan_build`), so a hand-off that lets DeepStream build the
engine on the unit asks for what ``toolchain build`` would have built there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from toolchain.errors import BadInputError, InputNotFoundError, UsageError
from toolchain.hashing import sha256_file
from toolchain.registry import Record
from toolchain.targets.profile import Target, load_target
from toolchain.workspace import Workspace

PRECISIONS = ("fp32", "fp16", "int8", "best")


@dataclass(frozen=True, kw_only=True)
class Source:
    """A resolved hand-off source.

    Attributes:
        ref: How reports name it (a build's name and id prefix, or ``NAME@vN``).
        name: A plain name for files and Triton (the build's or artifact's record name).
        record: The build or ONNX artifact record.
        onnx: The ONNX artifact record (a build's input ONNX).
        onnx_path: That ONNX file.
        engine_path: The build's engine (None for an ONNX artifact).
        engine_sha256: Its blob digest (checked again when copied).
        backend: ``tensorrt`` or ``onnxruntime`` for a build; ``onnx`` for an ONNX artifact.
        target: The target.
        precision: fp32, fp16 or int8: the engine's, or what ``toolchain build`` plans for the ONNX.
        qdq: The ONNX is explicitly quantized (INT8 Q/DQ).
        max_batch: Largest batch of the (planned) TensorRT profile of a dynamic-batch model; None otherwise.
        dla_core: The DLA core a DLA engine was built for.
        compute_capability: The GPU compute capability a plan is bound to ("" otherwise).
    """

    ref: str
    name: str
    record: Record
    onnx: Record
    onnx_path: Path
    engine_path: Path | None
    engine_sha256: str
    backend: str
    target: Target
    precision: str
    qdq: bool
    max_batch: int | None
    dla_core: int | None = None
    compute_capability: str = ""

    @property
    def is_tensorrt_engine(self) -> bool:
        return self.backend == "tensorrt"

    def to_json(self) -> dict[str, object]:
        return {"ref": self.ref, "record": self.record.id, "kind": self.record.kind, "onnx": self.onnx.id,
                "backend": self.backend, "target": self.target.name, "precision": self.precision, "qdq": self.qdq,
                "engine_sha256": self.engine_sha256}


def resolve_source(workspace: Workspace, ref: str, *, target: str | None = None, precision: str = "best") -> Source:
    """Find what ``ref`` names (a build name, id or prefix, an ONNX artifact, or the path of either's file).

    Raises:
        InputNotFoundError: Nothing matches.
        UsageError: ``--target``/``--precision`` contradict a build, or an ONNX artifact without ``--target``.
    """
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    record = _find(workspace, ref)
    if record.kind == "build":
        return source_from_build(workspace, record, target=target, precision=precision)
    return _from_onnx(workspace, record, target=target, precision=precision)


def _find(workspace: Workspace, ref: str) -> Record:
    path = Path(ref)
    if ("/" in ref or os.sep in ref or path.suffix) and path.is_file():
        sha = sha256_file(path)
        owners = [workspace.registry.get(b.record_id) for b in workspace.registry.blob_refs() if b.sha256 == sha]
        for kind in ("build", "artifact"):
            found = [r for r in owners if r is not None and r.kind == kind and r.body.get("blob") == sha]
            if found:
                return found[0]
        raise InputNotFoundError(f"{ref} is not a registered build or ONNX artifact (sha256 {sha[:12]} is unknown to "
                                 "this workspace); pass the id or name `toolchain build` / `export` printed")
    builds = workspace.registry.find(kind="build", name=ref)  # builds are named, not versioned: the latest
    if builds:
        return max(builds, key=lambda r: r.created_at)
    for kind in ("build", "artifact"):
        try:
            return workspace.resolve(ref, kind=kind).record
        except InputNotFoundError:
            continue
    raise InputNotFoundError(f"{ref} is neither a build nor an ONNX artifact in {workspace.root}; list them with "
                             "`toolchain registry list --kind build` (or --kind artifact)")


def source_from_build(workspace: Workspace, build: Record, *, target: str | Target | None = None,
                      precision: str = "best") -> Source:
    """A build record as a hand-off source (its engine, target, precision and profile)."""
    body = build.body
    built_for = load_target(body["target"])
    if target is not None and load_target(target).name != built_for.name:
        raise UsageError(f"build {build.id[:12]} is for {built_for.name}, not {load_target(target).name}: hand off a "
                         f"build for that target, or the ONNX with --target {load_target(target).name}")
    if precision not in ("best", body.get("precision")):
        raise UsageError(f"build {build.id[:12]} is {body.get('precision')}; --precision applies to ONNX hand-offs "
                         "(a build's precision is fixed): drop it or hand off another build")
    onnx = workspace.registry.get(str(body.get("onnx") or ""))
    if onnx is None:
        raise BadInputError(f"build {build.id[:12]} names no ONNX it was built from; the hand-off reads the model's "
                            "metadata from it: rebuild with `toolchain build`")
    shapes = body.get("shapes") or {}
    backend = str(body.get("backend") or "onnxruntime")
    max_shape = shapes.get("max") or []
    plan = body.get("plan") or {}
    dynamic = bool(plan.get("dynamic_batch")) or str(body.get("batch", "")).lower() == "dynamic" \
        or (shapes.get("min") or [0])[0] != (shapes.get("max") or [0])[0]
    return Source(
        ref=f"{build.name} ({build.id[:12]})", name=build.name or build.id[:12], record=build, onnx=onnx,
        onnx_path=workspace.blobs.require(onnx.body["blob"]), engine_path=workspace.blobs.require(body["blob"]),
        engine_sha256=str(body["blob"]), backend=backend, target=built_for, precision=str(body.get("precision")),
        qdq=onnx.body.get("type") == "onnx-int8" or str(body.get("precision")) == "int8",
        max_batch=int(max_shape[0]) if backend == "tensorrt" and dynamic and max_shape else None,
        dla_core=body.get("dla_core"), compute_capability=str(body.get("compute_capability") or ""),
    )


def _from_onnx(workspace: Workspace, record: Record, *, target: str | None, precision: str) -> Source:
    from toolchain.build.plan import onnx_input_fields, plan_build

    kind = str(record.body.get("type", ""))
    if not kind.startswith("onnx"):
        raise UsageError(f"{record.name or record.id[:12]} is a {kind} artifact; hand off a build or an ONNX artifact")
    if target is None:
        raise UsageError("an ONNX artifact is handed off for a target: pass --target (e.g. --target jetson-orin-nano), "
                         "or hand off a build, which knows its target")
    profile = load_target(target)
    path = workspace.blobs.require(record.body["blob"])
    plan = plan_build(profile, {**record.body, **onnx_input_fields(path)}, precision=precision)
    version = workspace.registry.version_of("artifact", record.name, record.id)
    ref = f"{version.name}@v{version.number}" if version else (record.name or record.id[:12])
    return Source(
        ref=ref, name=record.name or record.id[:12], record=record, onnx=record, onnx_path=path, engine_path=None,
        engine_sha256="", backend="onnx", target=profile, precision=plan.precision, qdq=plan.qdq,
        max_batch=int(plan.max_shape[0]) if plan.is_tensorrt and plan.dynamic_batch else None,
        compute_capability=profile.gpu_compute_capability,
    )
