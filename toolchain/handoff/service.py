"""``toolchain handoff``: files for NVIDIA's video stack (DeepStream nvinfer, Triton) from any build or ONNX.

:func:`handoff` resolves the source (:mod:`toolchain.handoff.source`), reads the model's own description
(:mod:`toolchain.handoff.model`), writes the files in a staging folder (:mod:`toolchain.handoff.deepstream_files`,
:mod:`toolchain.handoff.triton_files`), checks them, and moves the folder into place with a ``handoff.json``
saying where every file came from and what the checks measured. :func:`write_deepstream_files` is the same
DeepStream writer for the package step, next to an engine already in an image's model folder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolchain import __version__
from toolchain.errors import UsageError
from toolchain.handoff.deepstream_files import DeepStreamHandoff, DeepStreamOptions, write_deepstream, write_report
from toolchain.handoff.folders import REPORT_FILE, normal_permissions, staged_folder
from toolchain.handoff.model import ModelInfo, model_info
from toolchain.handoff.preprocessing import PreprocessingReport
from toolchain.handoff.source import Source, resolve_source, source_from_build
from toolchain.handoff.triton import model_name
from toolchain.handoff.triton_files import write_triton
from toolchain.registry import Record
from toolchain.targets.profile import Target
from toolchain.workspace import Workspace

FORMATS = ("deepstream", "triton")


@dataclass(frozen=True, kw_only=True)
class HandoffConfig:
    """Options of ``toolchain handoff``.

    Attributes:
        ref: A build (name, id or prefix), an ONNX artifact (``NAME@vN``, id), or the path of either's file.
        format: ``deepstream`` (an nvinfer config folder) or ``triton`` (a model repository).
        out: DeepStream: the folder to write. Triton: the repository; the model goes in ``OUT/NAME``.
        target: Target of an ONNX artifact (a build knows its own).
        precision: For an ONNX artifact: fp32, fp16, int8 or best (as ``toolchain build`` plans it).
        name: Triton model name (default: the source's record name).
        max_batch: Largest batch (Triton ``max_batch_size``, DeepStream ``batch-size``) of a dynamic-batch model.
        deepstream: DeepStream choices (mode, preprocessing, classifier settings, counting lines).
    """

    ref: str
    format: str
    out: Path
    target: str | None = None
    precision: str = "best"
    name: str | None = None
    max_batch: int | None = None
    deepstream: DeepStreamOptions = field(default_factory=DeepStreamOptions)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise UsageError(f"--format {self.format!r} is not one of {', '.join(FORMATS)}")
        if self.max_batch is not None and self.max_batch < 1:
            raise UsageError("--max-batch must be at least 1")
        if self.format != "deepstream" and self.deepstream.analytics is not None:
            raise UsageError("--line writes a DeepStream nvdsanalytics config: use it with --format deepstream")


@dataclass(frozen=True, kw_only=True)
class HandoffResult:
    """What ``toolchain handoff`` wrote and measured."""

    format: str
    out: Path
    files: tuple[Path, ...]
    preprocessing: PreprocessingReport
    source: Source
    model: ModelInfo
    checks: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    pipeline: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The document ``--json`` prints: ``format``, ``files``, ``preprocessing`` (``exact``, ``max_error``) and more
        (DeepStream: ``pipeline``, the elements the files belong in; ``checks.nvdsanalytics`` with lines)."""
        doc = {
            "format": self.format, "files": [str(f) for f in self.files], "preprocessing": self.preprocessing.to_json(),
            "out": str(self.out), "source": self.source.to_json(), "target": self.source.target.name,
            "precision": self.source.precision, "model": self.model.to_json(), "checks": self.checks,
            "notes": list(self.notes),
        }
        if self.pipeline:
            doc["pipeline"] = list(self.pipeline)
        return doc


def handoff(workspace: Workspace, config: HandoffConfig) -> HandoffResult:
    """Write and check the files ``config`` asks for (see the module docstring).

    Raises:
        UsageError: Contradicting options, a CPU target for DeepStream, a destination with foreign files.
        InputNotFoundError: The reference names nothing.
        BadInputError: The model lacks the metadata or output the tools need.
        MissingEnvironmentError: tritonclient/onnx missing (``[handoff]``).
    """
    source = resolve_source(workspace, config.ref, target=config.target, precision=config.precision)
    info = model_info(source.onnx_path, source.onnx.body.get("metadata"))
    if config.format == "deepstream":
        options = config.deepstream
        if config.max_batch is not None:
            options = dataclasses.replace(options, batch_size=config.max_batch)
        with staged_folder(config.out) as stage:
            written = write_deepstream(stage, source, info, options)
            _report(stage, config, source, info, written.preprocessing, written.checks, written.notes, written.files,
                    written.pipeline)
        final = config.out.absolute()
        files = tuple(final / f.relative_to(stage) for f in written.files) + (final / REPORT_FILE,)
        return HandoffResult(format="deepstream", out=final, files=files, preprocessing=written.preprocessing,
                             source=source, model=info, checks=written.checks, notes=written.notes,
                             pipeline=written.pipeline)
    if source.engine_path is None:
        # Triton's ONNX Runtime backend runs the ONNX as it is: FP32, or INT8 where it has Q/DQ nodes.
        if config.precision == "fp16":
            raise UsageError("Triton runs an ONNX with ONNX Runtime as it is (fp32, or int8 with Q/DQ nodes): for fp16, "
                             "build a TensorRT engine on the unit (`toolchain build --precision fp16 --on ...`) and hand "
                             "off the build")
        source = dataclasses.replace(source, precision="int8" if source.qdq else "fp32")
    name = config.name or model_name(source.name)
    repository = config.out.absolute()
    if repository.exists() and not repository.is_dir():
        raise UsageError(f"{repository} is a file; --out takes the model repository's folder")
    repository.mkdir(parents=True, exist_ok=True)
    with staged_folder(repository / name) as stage:
        triton = write_triton(stage, source, info, name=name, max_batch=config.max_batch)
        _report(stage, config, source, info, triton.preprocessing, triton.checks, triton.notes, triton.files)
    final = repository / name
    files = tuple(final / f.relative_to(stage) for f in triton.files) + (final / REPORT_FILE,)
    return HandoffResult(format="triton", out=repository, files=files, preprocessing=triton.preprocessing,
                         source=source, model=info, checks=triton.checks, notes=triton.notes)


def write_deepstream_files(workspace: Workspace, build: Record, target: Target | str, model_dir: Path, *,
                           engine_name: str = "model.plan",
                           options: DeepStreamOptions | None = None) -> DeepStreamHandoff:
    """Put a DeepStream nvinfer config (and its labels) next to a TensorRT engine already in ``model_dir``.

    For the package step: ``model_dir`` is the image's model folder with the build's engine in it as
    ``engine_name`` (``write_bundle`` writes ``model.plan``). The config refers to ``model.plan`` and ``labels.txt``
    by relative paths, which nvinfer resolves against the config's own folder: in the image,
    ``/opt/toolchain/model/config_infer_primary.txt`` -> ``/opt/toolchain/model/model.plan`` and
    ``/opt/toolchain/model/labels.txt``. Preprocessing is the approximation (the engine's graph is fixed), measured.

    Args:
        build: The ``build`` record whose engine is in ``model_dir``.
        target: Its target (checked against the build).
        engine_name: The engine's file name in ``model_dir``.
        options: DeepStream choices (default: a primary classifier).

    Returns:
        The config's path, every file written (config, labels, ``handoff.json``), the preprocessing report.

    Raises:
        UsageError: A CPU target or build (no DeepStream there), or a build of another target.
        BadInputError: The engine is not in ``model_dir``, or a check failed.
    """
    options = options or DeepStreamOptions()
    source = source_from_build(workspace, build, target=target)
    if not source.is_tensorrt_engine:
        raise UsageError(f"build {build.id[:12]} is a {source.backend} artifact for {source.target.name}; DeepStream runs "
                         "TensorRT engines (package Jetson builds with it)")
    info = model_info(source.onnx_path, source.onnx.body.get("metadata"))
    if not (model_dir / engine_name).is_file():
        from toolchain.errors import BadInputError

        raise BadInputError(f"{model_dir / engine_name} is missing: write the engine (write_bundle) before the config")
    written = write_deepstream(model_dir, source, info, options, engine_name=engine_name)
    for path in written.files:
        normal_permissions(path)
    report = write_report(model_dir, _payload("deepstream", source, info, written.preprocessing, written.checks,
                                              written.notes, written.files, model_dir, written.pipeline))
    normal_permissions(report)
    return DeepStreamHandoff(config=written.config, files=(*written.files, report), preprocessing=written.preprocessing,
                             checks=written.checks, notes=written.notes, pipeline=written.pipeline)


def _report(folder: Path, config: HandoffConfig, source: Source, info: ModelInfo, preprocessing: PreprocessingReport,
            checks: dict[str, Any], notes: tuple[str, ...], files: tuple[Path, ...],
            pipeline: tuple[str, ...] = ()) -> Path:
    return write_report(folder, _payload(config.format, source, info, preprocessing, checks, notes, files, folder,
                                         pipeline))


def _payload(fmt: str, source: Source, info: ModelInfo, preprocessing: PreprocessingReport, checks: dict[str, Any],
             notes: tuple[str, ...], files: tuple[Path, ...], folder: Path,
             pipeline: tuple[str, ...] = ()) -> dict[str, Any]:
    from toolchain.hashing import sha256_file

    payload = {
        "format": fmt, "toolchain_version": __version__, "source": source.to_json(), "model": info.to_json(),
        "files": {str(f.relative_to(folder)): sha256_file(f) for f in files},
        "preprocessing": preprocessing.to_json(), "checks": checks, "notes": list(notes),
    }
    if pipeline:
        payload["pipeline"] = list(pipeline)  # the DeepStream elements the files belong in, in order
    return payload
