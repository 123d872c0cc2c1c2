"""Write and check a DeepStream hand-off: the nvinfer config, its labels, the model it names.

Which preprocessing, per target (stated in the config's comments and the report):

* **An ONNX for a Jetson target** (``onnx-file``; DeepStream builds the engine on the unit, which is also how it
  works where no engine can be built here): the normalisation goes into the graph
  (:mod:`toolchain.handoff.ingraph`), ``net-scale-factor=1`` and zero offsets. Exact. ``--preprocessing
  approximate`` keeps the graph as it is and uses the approximation instead (float-nchw models only).
* **A TensorRT engine built by the toolchain** (``model-engine-file``): its graph is fixed, so the
  approximation, with its worst-case error measured and written down. An engine with a uint8 input cannot be
  fed by nvinfer (it writes float32): hand off its ONNX instead.
* **CPU targets**: refused: nvinfer runs TensorRT on an NVIDIA GPU.

With counting lines (``--line``), ``config_nvdsanalytics.txt`` goes next to the nvinfer config
(:mod:`toolchain.handoff.nvdsanalytics`), and the report names the pipeline it belongs in: PGIE detector ->
nvtracker -> this classifier as SGIE -> nvdsanalytics.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolchain.errors import BadInputError, UsageError
from toolchain.fileio import write_atomic
from toolchain.handoff.activation import output_activation, require_softmax
from toolchain.handoff.calibration import CACHE_FILE, calibration_cache
from toolchain.handoff.deepstream import LABELS_FILE, NvinferConfig, config_file_name, labels_text, read_labels
from toolchain.handoff.folders import REPORT_FILE, copy_verified
from toolchain.handoff.ingraph import write_normalising_onnx, write_prelude_onnx
from toolchain.handoff.model import ModelInfo
from toolchain.handoff.numerics import compare_models
from toolchain.handoff.nvdsanalytics import ANALYTICS_FILE, AnalyticsOptions, write_analytics
from toolchain.handoff.nvinfer_properties import check_classifier_config
from toolchain.handoff.preprocessing import (
    PreprocessingReport,
    approximate_numbers,
    check_preprocessing,
    format_number,
    in_graph_numbers,
)
from toolchain.handoff.source import Source

MODES = ("primary", "secondary")
PREPROCESSING = ("auto", "in-graph", "approximate")
DEFAULT_ONNX_BATCH = 8  # the batch-size DeepStream builds a dynamic-batch ONNX for when nothing says otherwise


@dataclass(frozen=True, kw_only=True)
class DeepStreamOptions:
    """The DeepStream-specific choices of a hand-off.

    Attributes:
        mode: ``primary`` (whole frames) or ``secondary`` (objects a detector found).
        preprocessing: ``auto`` (in the graph for an ONNX, approximate for an engine), ``in-graph`` or ``approximate``.
        batch_size: Frames or objects per inference (default: the engine's profile max, the fixed batch, or 8).
        classifier_threshold: Top probability an object needs (exclusive) to be labelled; below 1.
        gie_id: This element's ``gie-unique-id`` (default 1 primary, 2 secondary).
        operate_on_gie_id: Secondary: the detector's ``gie-unique-id``.
        operate_on_class_ids: Secondary: the detector's classes to classify (empty: all).
        tensor_meta: Attach the probability vector to each object (``output-tensor-meta``).
        analytics: Counting lines to write as ``config_nvdsanalytics.txt`` (None: no file).
    """

    mode: str = "primary"
    preprocessing: str = "auto"
    batch_size: int | None = None
    classifier_threshold: float = 0.5
    gie_id: int | None = None
    operate_on_gie_id: int = 1
    operate_on_class_ids: tuple[int, ...] = ()
    tensor_meta: bool = False
    analytics: AnalyticsOptions | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UsageError(f"--mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.preprocessing not in PREPROCESSING:
            raise UsageError(f"--preprocessing {self.preprocessing!r} is not one of {', '.join(PREPROCESSING)}")
        if not 0.0 <= self.classifier_threshold < 1.0:
            raise UsageError(f"--classifier-threshold {self.classifier_threshold} must be at least 0 and below 1: "
                             "nvinfer labels an object only when its top probability is above it")
        if self.batch_size is not None and self.batch_size < 1:
            raise UsageError("--max-batch must be at least 1")
        if self.gie_id is not None and self.gie_id < 1:
            raise UsageError("--gie-id must be at least 1")
        if self.mode == "secondary" and self.operate_on_gie_id == self.unique_id:
            raise UsageError(f"--operate-on-gie-id {self.operate_on_gie_id} is this classifier's own id; give the "
                             "detector's gie-unique-id (or another --gie-id)")
        if any(c < 0 for c in self.operate_on_class_ids):
            raise UsageError("--operate-on-class-ids are the detector's class indices, 0 or more")

    @property
    def unique_id(self) -> int:
        return self.gie_id or (1 if self.mode == "primary" else 2)


@dataclass(frozen=True, kw_only=True)
class DeepStreamHandoff:
    """What was written into a folder and what the checks found."""

    config: Path
    files: tuple[Path, ...]
    preprocessing: PreprocessingReport
    checks: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    pipeline: tuple[str, ...] = ()


def write_deepstream(folder: Path, source: Source, info: ModelInfo, options: DeepStreamOptions, *,
                     engine_name: str | None = None) -> DeepStreamHandoff:
    """Write the nvinfer config, labels and model for ``source`` into ``folder``, then check them.

    Args:
        engine_name: The engine is already in ``folder`` under this name (the package step's bundle): it is
            referenced, not copied. None: the model is written here.

    Raises:
        UsageError: A CPU target; a choice the source rules out (see the module docstring).
        BadInputError: The model's output is not a softmax over its classes; a check failed.
    """
    target = source.target
    if not target.is_tensorrt:
        raise UsageError(f"target {target.name} runs ONNX Runtime on a CPU; DeepStream's nvinfer runs TensorRT on an "
                         "NVIDIA GPU. Hand off a Jetson build or the ONNX with --target jetson-..., or use --format triton")
    activation = output_activation(source.onnx_path, info.output.name, len(info.output.shape))
    require_softmax(activation, info.output.name, len(info.classes))
    folder.mkdir(parents=True, exist_ok=True)
    engine = source.engine_path is not None
    mode = _preprocessing_mode(source, info, options, engine)
    numbers = in_graph_numbers() if mode == "in-graph" else approximate_numbers(info.mean, info.std)
    files: list[Path] = []
    notes: list[str] = []
    if engine:
        model_key, model_file = "model-engine-file", engine_name or "model.plan"
        if engine_name is None:
            assert source.engine_path is not None
            files.append(copy_verified(source.engine_path, folder / model_file, source.engine_sha256))
        handed_off = source.onnx_path  # the engine's ONNX stands in for it in the numeric check
    else:
        model_key, model_file = "onnx-file", "model.onnx"
        if mode == "in-graph":
            write_normalising_onnx(source.onnx_path, info, folder / model_file)
        else:
            copy_verified(source.onnx_path, folder / model_file, str(source.onnx.body.get("blob", "")))
        files.append(folder / model_file)
        handed_off = folder / model_file
    calib = None
    if not engine and source.precision == "int8":
        calib = CACHE_FILE
        write_atomic(folder / calib, calibration_cache(folder / model_file, target.tensorrt))  # the graph DeepStream builds
        files.append(folder / calib)
        notes.append(f"{calib}: nvinfer sets TensorRT's INT8 flag only with an int8-calib-file; it holds the Q/DQ "
                     "activation scales, which TensorRT uses from the graph anyway (explicit quantization)")
    write_atomic(folder / LABELS_FILE, labels_text(info.classes))
    files.append(folder / LABELS_FILE)
    batch = _batch_size(source, info, options)
    config = NvinferConfig(
        model_key=model_key, model_file=model_file, int8_calib_file=calib, precision=source.precision,
        mode=options.mode, batch_size=batch, gie_unique_id=options.unique_id, operate_on_gie_id=options.operate_on_gie_id,
        operate_on_class_ids=options.operate_on_class_ids, infer_dims=(3, info.size, info.size),
        net_scale_factor=numbers.net_scale_factor, offsets=numbers.offsets, output_blob=info.output.name,
        classifier_threshold=options.classifier_threshold, tensor_meta=options.tensor_meta,
        dla_core=source.dla_core if engine else None,
        comments=_comments(source, info, mode, numbers.worst_case),
    )
    config_path = folder / config_file_name(options.mode)
    write_atomic(config_path, config.render())
    files.insert(0, config_path)
    report, checks = _check(config_path, source, info, mode, handed_off, batch)
    pipeline = pipeline_chain(options, config_path.name)
    if options.analytics is not None:
        analytics = write_analytics(
            folder, options.analytics, source=source.ref, pipeline=pipeline,
            class_ids=options.operate_on_class_ids if options.mode == "secondary" else ())
        files.insert(1, analytics.path)
        checks["nvdsanalytics"] = analytics.report
        notes.extend(analytics.notes)
        if options.mode == "primary":
            notes.append(f"{ANALYTICS_FILE}: line crossing counts tracked objects of a detector, and --mode primary "
                         "classifies whole frames, so DeepStream's counts on these lines get no class from this model: "
                         "hand off with --mode secondary (PGIE detector -> nvtracker -> this classifier -> nvdsanalytics)")
    if source.precision == "fp16":
        notes.append("network-mode=2 (FP16): TensorRT may compute the softmax in half precision, so top probabilities "
                     "above about 0.9998 read as 1.0 (the label is unaffected)")
    if mode == "approximate":
        exact_route = ("hand off the ONNX (DeepStream builds it on the unit, normalising in the graph)" if engine
                       else "use --preprocessing auto (the normalisation goes into the graph)")
        notes.append(f"one net-scale-factor for per-channel std {list(info.std)}: worst case {report.max_error:.4g} "
                     f"(normalised units); for exact preprocessing {exact_route}")
    notes.append("nvinfer scales frames/objects to the network size with its own scaler (scaling-filter=1, bilinear); "
                 "training used an antialiased bilinear resize, so downscaled inputs differ slightly")
    return DeepStreamHandoff(config=config_path, files=tuple(files), preprocessing=report, checks=checks,
                             notes=tuple(notes), pipeline=pipeline)


def pipeline_chain(options: DeepStreamOptions, config_name: str) -> tuple[str, ...]:
    """The DeepStream elements this hand-off's files belong in, in order (for ``handoff.json`` and the file's
    comments). Secondary: the detector finds vehicles, nvtracker gives them ids (nvinfer then classifies a tracked
    object again only when needed, and nvdsanalytics' line crossing needs the id), this classifier labels them,
    nvdsanalytics counts them on the lines."""
    mux = "nvstreammux (one source per camera: sink_N is stream N)"
    if options.mode == "primary":
        chain = [mux, f"nvinfer {config_name} (this classifier as PGIE, process-mode=1: whole frames)"]
        if options.analytics is not None:
            chain.append(f"nvdsanalytics config-file={ANALYTICS_FILE} (needs objects from a detector and nvtracker)")
        return tuple(chain)
    chain = [mux,
             f"nvinfer: your vehicle detector (PGIE, gie-unique-id={options.operate_on_gie_id})",
             "nvtracker (track ids: the classifier re-infers a tracked object only when needed; line crossing needs them)",
             f"nvinfer {config_name} (this classifier as SGIE, gie-unique-id={options.unique_id}, "
             f"operate-on-gie-id={options.operate_on_gie_id})"]
    if options.analytics is not None:
        chain.append(f"nvdsanalytics config-file={ANALYTICS_FILE} (the unit's lines; per object, "
                     "NvDsAnalyticsObjInfo.lcStatus names the line-crossing labels crossed)")
    chain.append("your probe or nvmsgconv: an object's crossing with its classifier label (NvDsClassifierMeta) is a "
                 "counted vehicle of that class")
    return tuple(chain)


def write_report(folder: Path, payload: dict[str, Any]) -> Path:
    """``handoff.json``: where the files came from and what was checked."""
    path = folder / REPORT_FILE
    write_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    return path


def _preprocessing_mode(source: Source, info: ModelInfo, options: DeepStreamOptions, engine: bool) -> str:
    if engine:
        if info.layout == "uint8-nhwc":
            raise UsageError(
                "this engine takes uint8 frames, but nvinfer always feeds float32 tensors: hand off its ONNX with "
                f"--target {source.target.name} (DeepStream builds it with the normalisation in the graph), or build "
                "from a float-nchw export"
            )
        if options.preprocessing == "in-graph":
            raise UsageError("--preprocessing in-graph changes the graph, and a built engine's graph is fixed: hand off "
                             f"its ONNX with --target {source.target.name} instead, or use auto/approximate")
        return "approximate"
    if options.preprocessing == "approximate":
        if info.layout == "uint8-nhwc":
            raise UsageError("--preprocessing approximate needs a float-nchw model; this one takes uint8 frames, so its "
                             "normalisation can only stay in the graph (auto/in-graph)")
        return "approximate"
    return "in-graph"


def _batch_size(source: Source, info: ModelInfo, options: DeepStreamOptions) -> int:
    fixed = info.fixed_batch
    if fixed is not None:
        if options.batch_size not in (None, fixed):
            raise UsageError(f"the model has a fixed batch of {fixed}; --max-batch {options.batch_size} cannot change it")
        return fixed
    limit = source.max_batch if source.engine_path is not None else None
    wanted = options.batch_size or source.max_batch or DEFAULT_ONNX_BATCH
    if limit is not None and wanted > limit:
        raise UsageError(f"--max-batch {wanted} exceeds the engine's optimisation profile (max {limit}); rebuild with "
                         f"`toolchain build --batch 1,1,{wanted}` or ask for less")
    return wanted


def _comments(source: Source, info: ModelInfo, mode: str, worst_case: float) -> tuple[str, ...]:
    how = ("normalisation (x/255 - mean)/std is inside model.onnx: net-scale-factor 1, offsets 0 (exact)"
           if mode == "in-graph" else
           f"offsets = 255*mean (exact), one net-scale-factor for std {list(info.std)}: worst case {format_number(worst_case)} "
           "in normalised units")
    return (
        f"Gst-nvinfer classifier config written by `toolchain handoff` from {source.ref}",
        (f"target {source.target.name} (TensorRT {source.target.tensorrt}, SM {source.target.gpu_compute_capability}), "
         f"{source.precision}; classes {', '.join(info.classes)}; input {info.size}x{info.size} RGB"),
        f"preprocessing: {how}",
        "Rerun `toolchain handoff` rather than editing: every value is derived from the model and checked.",
    )


def _check(config_path: Path, source: Source, info: ModelInfo, mode: str, handed_off: Path,
           batch: int) -> tuple[PreprocessingReport, dict[str, Any]]:
    """Read the written files back and check them: keys and types, labels, numbers, the model's probabilities."""
    values = check_classifier_config(config_path)
    problems = []
    if values.get("infer-dims") != [3, info.size, info.size]:
        problems.append(f"infer-dims {values.get('infer-dims')} is not 3;{info.size};{info.size}")
    if values.get("output-blob-names") != [info.output.name]:
        problems.append(f"output-blob-names {values.get('output-blob-names')} is not the class output {info.output.name}")
    if values.get("batch-size") != batch:
        problems.append(f"batch-size {values.get('batch-size')} is not {batch}")
    labels = read_labels(config_path.parent / values["labelfile-path"])
    if labels != [list(info.classes)]:
        problems.append(f"{values['labelfile-path']} reads as {labels}, not one line of {list(info.classes)}")
    if problems:
        raise BadInputError(f"{config_path} does not match the model: " + "; ".join(problems))
    scale, offsets = float(values["net-scale-factor"]), tuple(float(v) for v in values["offsets"])
    with tempfile.TemporaryDirectory(prefix="toolchain-handoff-") as tmp:
        prelude = write_prelude_onnx(info, Path(tmp) / "prelude.onnx") if mode == "in-graph" else None
        report = check_preprocessing(mean=info.mean, std=info.std, layout=info.layout, scale=scale, offsets=offsets,
                                     mode=mode, prelude=prelude)
    model = compare_models(info, source.onnx_path, handed_off, scale=scale, offsets=offsets)
    if model.collapsed:
        raise BadInputError(f"fed as this config feeds it, the model returns probability 1.0 on every frame while its "
                            f"own preprocessing does not ({model.to_json()}): the preprocessing is wrong")
    checks = {"config": {"keys": sorted(values), "documented": True}, "labels": labels[0], "model": model.to_json(),
              "stand_in": "the ONNX the engine was built from" if source.engine_path is not None else None}
    return report, checks
