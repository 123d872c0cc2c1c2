"""The model bundle a container serves: the engine file plus ``model.json`` (how to feed and read it).

``toolchain package`` writes a bundle into the image from a ``build`` record; ``toolchain serve`` reads
one from a directory, or makes one in memory from a registry reference on a workstation. The bundle
holds everything serving needs (backend, input layout and size, normalisation, class names) so the
container needs no registry.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import field
from pathlib import Path
from typing import Any

from toolchain.errors import BadInputError, InputNotFoundError
from toolchain.fileio import write_atomic
from toolchain.runtime.compat import frozen_config

MANIFEST = "model.json"
SCHEMA = 1
DEFAULT_MEAN = (0.485, 0.456, 0.406)
DEFAULT_STD = (0.229, 0.224, 0.225)


@frozen_config
class ServingModel:
    """What ``serve`` needs to know about the engine it runs.

    Attributes:
        engine: Path of the engine file (ONNX Runtime model or TensorRT plan).
        backend: ``onnxruntime`` or ``tensorrt``.
        layout: Input layout (``float-nchw`` or ``uint8-nhwc``).
        size: Square input side.
        classes: Class names, in output order.
        mean, std: Normalisation on the 0..1 scale (float layout only).
        build: The ``build`` record body (TensorRT engines are checked against the device with it).
        info: Identity for labels, metrics and events: model, build id, target, sha256s.
    """

    engine: Path
    backend: str
    layout: str
    size: int
    classes: tuple[str, ...]
    mean: tuple[float, ...] = DEFAULT_MEAN
    std: tuple[float, ...] = DEFAULT_STD
    build: dict[str, Any] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)

    def manifest(self, engine_name: str) -> dict[str, Any]:
        """``model.json`` for a bundle whose engine file is called ``engine_name``."""
        return {
            "schema": SCHEMA, "engine": engine_name, "backend": self.backend, "layout": self.layout, "size": self.size,
            "classes": list(self.classes), "mean": list(self.mean), "std": list(self.std), "build": self.build,
            "info": dict(self.info),
        }


def _json_list(value: Any) -> list[Any] | None:
    """Export metadata keeps lists as JSON strings; test fixtures keep them as lists."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return list(value) if isinstance(value, (list, tuple)) else None


def model_from_build(build: dict[str, Any], onnx_body: dict[str, Any], engine: Path, info: dict[str, str]) -> ServingModel:
    """The serving description of an engine from its ``build`` record body and its ONNX artifact's body.

    Raises:
        BadInputError: the records lack the input size.
    """
    metadata = onnx_body.get("metadata") or {}
    layout = str(build.get("input") or onnx_body.get("input") or metadata.get("input_layout") or "float-nchw")
    shape = onnx_body.get("input_shape") or (build.get("shapes") or {}).get("opt") or []
    size = metadata.get("input_size")
    if size is None and len(shape) == 4:
        size = shape[3] if layout == "float-nchw" else shape[1]
    if size is None or not str(size).isdigit():
        raise BadInputError(f"the build {info.get('build', '')[:12]} does not record its input size; rebuild it from an "
                            "ONNX made by `toolchain export`")
    classes = _json_list(metadata.get("classes")) or []
    mean = _json_list(metadata.get("mean")) or list(DEFAULT_MEAN)
    std = _json_list(metadata.get("std")) or list(DEFAULT_STD)
    backend = str(build.get("backend") or "onnxruntime")
    return ServingModel(engine=engine, backend=backend, layout=layout, size=int(size), classes=tuple(map(str, classes)),
                        mean=tuple(map(float, mean)), std=tuple(map(float, std)), build=dict(build), info=dict(info))


def engine_file_name(backend: str) -> str:
    """The engine's name inside a bundle (TensorRT tools expect ``.plan``/``.engine``, ONNX Runtime ``.onnx``)."""
    return "model.plan" if backend == "tensorrt" else "model.onnx"


def write_bundle(model: ServingModel, directory: Path, *, sha256: str | None = None) -> Path:
    """Copy the engine into ``directory`` and write ``model.json`` next to it (atomically); returns the directory.

    ``model.json`` records the engine's sha256 (``engine_sha256``): :func:`load_bundle` re-hashes the
    engine against it at every start.

    Args:
        sha256: The engine's verified digest: the bytes copied are checked against it, so a blob that changed
            after its verification is never bundled.

    Raises:
        CorruptStoreError: the engine's bytes do not match ``sha256``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    name = engine_file_name(model.backend)
    data = model.engine.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and digest != sha256:
        from toolchain.errors import CorruptStoreError

        raise CorruptStoreError(f"the engine {model.engine} changed after it was verified (sha256 is no longer "
                                f"{sha256[:12]}...); run `toolchain registry verify` and rebuild it")
    write_atomic(directory / name, data)
    write_atomic(directory / MANIFEST, json.dumps({**model.manifest(name), "engine_sha256": digest}, indent=2,
                                                  sort_keys=True))
    return directory


def load_bundle(directory: Path) -> ServingModel:
    """Read a bundle written by :func:`write_bundle`, after re-hashing its engine.

    The engine must hash to ``model.json``'s ``engine_sha256``; a bundle written before that field
    existed is checked against ``info.artifact_sha256`` (the engine blob's digest) when it has one.

    Raises:
        InputNotFoundError: no ``model.json`` or engine file.
        BadInputError: the manifest is unreadable or of another schema.
        CorruptStoreError: the engine's bytes are not the ones packaged.
    """
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise InputNotFoundError(f"{directory} has no {MANIFEST}: pass a bundle made by `toolchain package`, or a registry "
                                 "reference to a build on a workstation")
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError as exc:
        raise BadInputError(f"{manifest_path} is not valid JSON ({exc}); repackage the image") from exc
    if manifest.get("schema") != SCHEMA:
        raise BadInputError(f"{manifest_path} has schema {manifest.get('schema')}, this toolchain reads {SCHEMA}; "
                            "serve it with the toolchain version that packaged it")
    engine = directory / str(manifest.get("engine", ""))
    if not engine.is_file():
        raise InputNotFoundError(f"the bundle's engine {engine} is missing; repackage the image")
    _check_engine(engine, manifest, manifest_path)
    return ServingModel(
        engine=engine, backend=str(manifest["backend"]), layout=str(manifest["layout"]), size=int(manifest["size"]),
        classes=tuple(manifest.get("classes") or ()), mean=tuple(manifest.get("mean") or DEFAULT_MEAN),
        std=tuple(manifest.get("std") or DEFAULT_STD), build=dict(manifest.get("build") or {}),
        info={str(k): str(v) for k, v in (manifest.get("info") or {}).items()},
    )


def _check_engine(engine: Path, manifest: dict[str, Any], manifest_path: Path) -> None:
    """Re-hash the bundle's engine against the digest its manifest records (CorruptStoreError when it differs)."""
    from toolchain.errors import CorruptStoreError
    from toolchain.hashing import is_sha256, sha256_file

    expected = manifest.get("engine_sha256")
    if expected is None:  # a bundle from before engine_sha256: the build's blob digest is the engine's
        fallback = str((manifest.get("info") or {}).get("artifact_sha256") or "")
        if not is_sha256(fallback):
            return
        expected = fallback
    if not isinstance(expected, str) or not is_sha256(expected):
        raise CorruptStoreError(f"{manifest_path} records no valid engine sha256 ({expected!r}); repackage the image "
                                "(`toolchain package`)")
    actual = sha256_file(engine)
    if actual != expected:
        raise CorruptStoreError(f"the bundle's engine {engine} does not match the sha256 in {manifest_path} "
                                f"({expected[:12]}..., the file hashes to {actual[:12]}...): it was altered or cut short. "
                                "Repackage the image (`toolchain package`) and deploy it again")


def model_from_registry(workspace: Any, ref: str, *, target: str | None = None) -> ServingModel:
    """The serving description of a registered build (workstation use: ``toolchain serve BUILD``).

    ``ref`` names a build (id prefix, NAME) or, with ``target``, anything ``registry resolve`` takes
    (``MODEL@ALIAS``). The engine blob is re-hashed first.
    """
    from toolchain.hashing import sha256_file
    from toolchain.registry.ops import resolve_record

    if target:
        from toolchain.registry.aliases import resolve_for_target

        record = None
        for kind in ("build", "model", "artifact"):
            try:
                record = resolve_for_target(workspace, ref, target, kind=kind).build
                break
            except InputNotFoundError:
                continue
        if record is None:
            raise InputNotFoundError(f"nothing named {ref} resolves to a build for {target}; see `toolchain registry "
                                     f"resolve {ref} --target {target}`")
    else:
        record = resolve_record(workspace, ref, kind="build").record
    body = record.body
    engine = workspace.blobs.path(body["blob"])
    if not engine.is_file() or sha256_file(engine) != body["blob"]:
        from toolchain.errors import CorruptStoreError

        raise CorruptStoreError(f"the engine blob of build {record.id[:12]} is missing or altered; run `toolchain registry "
                                "verify` and rebuild it")
    onnx = workspace.registry.get(body.get("onnx", "")) if body.get("onnx") else None
    info = build_info(record, onnx, workspace)
    return model_from_build(body, onnx.body if onnx else {}, engine, info)


def build_info(build: Any, onnx: Any, workspace: Any = None) -> dict[str, str]:
    """The identity of a build as flat strings (labels, metrics, events).

    The model is named ``NAME@vN`` (an INT8 ONNX record holds only the model's id: ``workspace`` turns
    it into its name and version), else the id, else the ONNX's or the build's name.
    """
    body = build.body
    onnx_body = onnx.body if onnx is not None else {}
    model = str(onnx_body.get("model_ref") or _model_ref(workspace, str(onnx_body.get("model") or ""))
                or (onnx.name if onnx is not None else "") or build.name)
    return {
        "model": model, "build": build.id, "build_name": build.name, "artifact_sha256": str(body.get("blob", "")),
        "onnx": str(body.get("onnx", "")), "onnx_sha256": str(body.get("onnx_sha256", "")),
        "target": str(body.get("target", "")), "precision": str(body.get("precision", "")),
        "backend": str(body.get("backend", "")),
    }


def _model_ref(workspace: Any, model_id: str) -> str:
    """``NAME@vN`` of a model record id (the id itself when it cannot be looked up)."""
    if not model_id or workspace is None:
        return model_id
    record = workspace.registry.get(model_id)
    if record is None:
        return model_id
    version = workspace.registry.version_of("model", record.name, record.id)
    return f"{record.name}@v{version.number}" if version else record.name or model_id
