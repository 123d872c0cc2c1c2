"""``toolchain quantize``: static post-training INT8 quantization of an exported ONNX to Q/DQ form.

TensorRT (10.1+) builds INT8 engines from explicit Q/DQ nodes, so the toolchain quantizes the ONNX
itself with ONNX Runtime and proves the result on the CPU before any device time is spent:

1. calibration images are drawn with a fixed seed from the calibration dataset's **train** split
   (never test; images that also sit in the evaluation test split are left out), prepared exactly
   as the FP32 graph expects;
2. ``quantize_static`` writes a QDQ model with symmetric INT8 activations and weights (every zero
   point 0, what TensorRT's explicit quantization requires), per-channel weight scales, biases left
   in float (TensorRT cannot parse an INT32 bias ``DequantizeLinear``) and the softmax output left
   in float; nodes named by ``keep_float`` (names or op types) stay entirely in float;
3. the result passes ``onnx.checker`` (full check) and a zero-point check;
4. FP32 and INT8 accuracy are measured on the model's dataset test split with ONNX Runtime (CPU),
   with sizes and batch-1 CPU latency; if the drop exceeds ``max_drop`` points nothing is
   registered and :class:`~toolchain.errors.QualityGateError` (exit 3) carries the numbers;
5. otherwise the INT8 ONNX becomes artifact ``<fp32 name>-int8@vN``, linked to the FP32 ONNX, the
   calibration dataset version and the model.

The same inputs and config give the same INT8 bytes; a run whose FP32 ONNX, calibration data,
config and code are unchanged returns the registered artifact instead of recomputing it.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.artifacts import Artifact, register_file, resolve_artifact
from toolchain.blobs import BlobStore
from toolchain.data.versions import DatasetVersion, load_dataset
from toolchain.errors import (
    BadInputError,
    InputNotFoundError,
    QualityGateError,
    UsageError,
    missing_extra,
)
from toolchain.models.recipe import Recipe, parse_recipe
from toolchain.progress import NullProgress, Progress
from toolchain.quantize.accuracy import (
    InputSpec,
    cpu_latency_ms,
    input_spec,
    ort_session,
    predict,
    prepare_images,
)
from toolchain.runtime.runners import padded_chunks
from toolchain.workspace import Workspace

__all__ = [
    "ARTIFACT_TYPE",
    "METHODS",
    "CalibrationReader",
    "QuantizeConfig",
    "QuantizeResult",
    "check_symmetric",
    "quantize_model",
    "quantize_onnx",
    "resolve_keep_float",
]

METHODS: tuple[str, ...] = ("minmax", "entropy", "percentile")
"""Calibration methods (ONNX Runtime's ``CalibrationMethod`` MinMax, Entropy, Percentile)."""

ARTIFACT_TYPE = "onnx-int8"
"""Artifact type of a quantized ONNX (the FP32 one is ``onnx``)."""

#: Images per calibration ``session.run`` when the graph's batch dimension is dynamic.
CALIBRATION_BATCH = 32
#: Batch-1 latency: runs timed (median reported) after this many warm-up runs.
LATENCY_RUNS = 50
LATENCY_WARMUP = 10

_EXTRA = "train"  # quantization needs onnx (ORT's quantizer imports it) and torch (eval_transform)
_METHOD_NAMES = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
_QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
_log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- config and result


@dataclass(frozen=True, kw_only=True)
class QuantizeConfig:
    """Options of ``toolchain quantize``.

    Attributes:
        onnx: The FP32 ONNX: artifact id, unique prefix, ``NAME@vN`` or the path ``export`` printed.
        calib: Dataset version whose **train** split calibrates (default: the model's dataset).
        samples: Calibration images (all train images when the split is smaller).
        method: ``minmax``, ``entropy`` or ``percentile``.
        per_channel: One weight scale per output channel (what TensorRT does for conv weights).
        keep_float: Node names or op types (e.g. ``Gemm`` for the classifier head) kept in float.
        max_drop: Largest accepted accuracy drop FP32 -> INT8, in points (1.0 = one percentage point).
        seed: Seed of the calibration sample.
    """

    onnx: str
    calib: str | None = None
    samples: int = 512
    method: str = "minmax"
    per_channel: bool = True
    keep_float: tuple[str, ...] = ()
    max_drop: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UsageError(f"--method must be one of {', '.join(METHODS)}, not '{self.method}'")
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1:
            raise UsageError(f"--samples must be a positive number of images, not {self.samples!r}")
        if not isinstance(self.max_drop, (int, float)) or not math.isfinite(self.max_drop):
            raise UsageError(f"--max-drop must be a finite number of accuracy points, not {self.max_drop!r}")
        if isinstance(self.keep_float, str):  # a lone name, not its characters
            object.__setattr__(self, "keep_float", (self.keep_float,))
        keep = tuple(str(k).strip() for k in self.keep_float)
        if any(not k for k in keep):
            raise UsageError("--keep-float takes node names or op types (e.g. Gemm); an empty one was given")
        object.__setattr__(self, "keep_float", tuple(dict.fromkeys(keep)))  # keep order, drop repeats

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "keep_float": list(self.keep_float)}


@dataclass(frozen=True, kw_only=True)
class QuantizeResult:
    """What ``toolchain quantize`` made and measured.

    Accuracies are fractions (0..1) of the model's dataset test split, like ``evaluate``'s;
    ``accuracy_drop`` is in points: ``100 * (accuracy_fp32 - accuracy_int8)``.
    """

    artifact: str  # id of the INT8 artifact
    ref: str  # NAME@vN
    path: str  # the INT8 .onnx in the blob store
    fp32: str  # id of the FP32 artifact
    model: str  # id of the model record
    accuracy_fp32: float
    accuracy_int8: float
    accuracy_drop: float
    agreement: float  # fraction of test images where FP32 and INT8 predict the same class
    test_images: int
    size_fp32: int  # bytes
    size_int8: int
    latency_fp32_ms: float  # ONNX Runtime CPU, 1 thread, batch 1, median
    latency_int8_ms: float
    passed: bool
    max_drop: float
    calibration: str  # dataset version id
    calibration_ref: str
    samples: int  # calibration images actually used
    method: str
    per_channel: bool
    keep_float: tuple[str, ...]
    excluded_nodes: tuple[str, ...] = ()  # keep_float resolved to node names
    preprocessed: bool = True  # ORT's quant_pre_process ran (else the FP32 graph was quantized as is)
    cached: bool = False

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["keep_float"] = list(self.keep_float)
        data["excluded_nodes"] = list(self.excluded_nodes)
        return data


# --------------------------------------------------------------------------- calibration data


class CalibrationReader:
    """ONNX Runtime ``CalibrationDataReader`` over a fixed-seed sample of a dataset's **train** split.

    Yields ``{input name: batch}`` dicts prepared exactly as the FP32 graph expects. Implements
    ``__len__`` / ``set_range`` (in batches) so calibration can collect one batch at a time.

    Args:
        dataset: The calibration dataset version.
        blobs: The workspace's blob store.
        spec: The graph's input.
        recipe: The model's recipe (normalisation, input size).
        samples: Images wanted (capped at the train split's size).
        seed: Seed of the draw.
        exclude_sha256: Image contents to leave out (the evaluation test split's).
        batch: Images per batch when the graph's batch is dynamic.

    Attributes:
        indices: Manifest indices of the calibration images, in the order they are fed.
        touched: Manifest indices actually read from the shards so far.
        excluded: Train images left out because they are in ``exclude_sha256``.

    Raises:
        BadInputError: No usable train image.
    """

    def __init__(
        self, dataset: DatasetVersion, blobs: BlobStore, spec: InputSpec, recipe: Recipe, *, samples: int, seed: int,
        exclude_sha256: frozenset[str] = frozenset(), batch: int = CALIBRATION_BATCH,
    ) -> None:
        train = dataset.split_indices("train")
        entries = dataset.manifest.entries
        keep = np.array([entries[i].sha256 not in exclude_sha256 for i in train], dtype=bool)
        self.excluded = int((~keep).sum()) if len(train) else 0
        train = train[keep] if len(train) else train
        if len(train) == 0:
            raise BadInputError(
                f"dataset {dataset.ref} has no train images to calibrate with"
                + (f" ({self.excluded} are also in the evaluation test split and were left out)" if self.excluded else "")
                + "; pass --calib DATA with a train split"
            )
        rng = np.random.default_rng(seed)
        picked = np.sort(rng.choice(len(train), size=min(samples, len(train)), replace=False))
        self.indices: np.ndarray = train[picked]
        self.touched: list[int] = []
        self._dataset, self._blobs, self._spec, self._recipe = dataset, blobs, spec, recipe
        self._chunk = spec.chunk(batch)
        self._batches = [self.indices[i : i + self._chunk] for i in range(0, len(self.indices), self._chunk)]
        self._start, self._stop = 0, len(self._batches)
        self._position = 0

    def __len__(self) -> int:
        return len(self._batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        """Feed batches ``start_index .. end_index - 1`` next (ORT's strided calibration)."""
        self._start, self._stop = start_index, min(end_index, len(self._batches))
        self._position = self._start

    def rewind(self) -> None:
        self.set_range(0, len(self._batches))

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._position >= self._stop:
            return None
        indices = self._batches[self._position]
        self._position += 1
        self.touched.extend(int(i) for i in indices)
        pixels = self._dataset.layout.gather(self._blobs, indices)
        prepared = prepare_images(pixels, self._spec, self._recipe)
        batch, _ = next(padded_chunks(prepared, self._chunk, self._spec.batch is not None))
        return {self._spec.name: batch}

    def __iter__(self) -> CalibrationReader:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


# --------------------------------------------------------------------------- graph helpers


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise missing_extra("onnx", _EXTRA) from None
    return onnx


def _ort_quantization() -> Any:
    try:
        from onnxruntime import quantization
    except ImportError as exc:  # ORT's quantizer imports onnx (and sympy for shape inference)
        missing = getattr(exc, "name", None) or "onnx"
        raise missing_extra(missing, _EXTRA) from None
    return quantization


def resolve_keep_float(model: Any, keep_float: tuple[str, ...]) -> tuple[str, ...]:
    """Node names to exclude from quantization: each entry is a node name or an op type.

    Raises:
        UsageError: An entry names neither a node nor an op type of the graph.
    """
    names = [n.name for n in model.graph.node]
    by_type: dict[str, list[str]] = {}
    for node in model.graph.node:
        by_type.setdefault(node.op_type, []).append(node.name)
    resolved: list[str] = []
    unknown = []
    for entry in keep_float:
        if entry in names:
            resolved.append(entry)
        elif entry in by_type:
            resolved.extend(by_type[entry])
        else:
            unknown.append(entry)
    if unknown:
        raise UsageError(
            f"--keep-float {', '.join(unknown)}: no node or op type of that name in the graph; op types present: "
            f"{', '.join(sorted(by_type))} (node names are listed by Netron or `onnx.load(...).graph.node`)"
        )
    return tuple(dict.fromkeys(resolved))


def _constant_values(model: Any) -> dict[str, np.ndarray]:
    """Initializers and ``Constant`` node outputs by name."""
    numpy_helper = _onnx().numpy_helper
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attribute.t)
    return values


def check_symmetric(model: Any) -> int:
    """Check every ``QuantizeLinear`` / ``DequantizeLinear`` has zero point 0 (or none, which means 0).

    Returns:
        The number of Q/DQ nodes.

    Raises:
        BadInputError: A zero point is not 0, is computed at run time, or there is no Q/DQ node at all.
    """
    values = _constant_values(model)
    count = 0
    for node in model.graph.node:
        if node.op_type not in _QDQ_OPS:
            continue
        count += 1
        if len(node.input) < 3 or not node.input[2]:
            continue
        zero_point = values.get(node.input[2])
        if zero_point is None:
            raise BadInputError(
                f"{node.op_type} '{node.name}' takes its zero point from a computed tensor; TensorRT needs constant "
                "zero points of 0. Quantize with `toolchain quantize`, not another tool"
            )
        if np.any(zero_point != 0):
            raise BadInputError(
                f"{node.op_type} '{node.name}' has a non-zero zero point ({zero_point.ravel()[:4].tolist()}...): "
                "TensorRT's explicit quantization needs symmetric INT8. This is a bug in the quantizer settings; "
                "please report it"
            )
    if count == 0:
        raise BadInputError(
            "the quantized graph has no QuantizeLinear/DequantizeLinear node: nothing was quantized. "
            "Check --keep-float does not exclude every layer"
        )
    return count


def _opset(model: Any) -> int | None:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return None


@dataclass(frozen=True, kw_only=True)
class _Quantized:
    excluded_nodes: tuple[str, ...]
    preprocessed: bool
    qdq_nodes: int
    opset: int | None


def quantize_onnx(
    source: Path, output: Path, reader: Any, *, method: str = "minmax", per_channel: bool = True,
    keep_float: tuple[str, ...] = (), metadata: dict[str, str] | None = None,
) -> _Quantized:
    """Quantize an FP32 ONNX file to a symmetric INT8 QDQ ONNX file and verify it.

    Args:
        source: The FP32 ONNX.
        output: Where to write the INT8 ONNX.
        reader: A calibration data reader (``get_next``; ``__len__`` and ``set_range`` in batches).
        method: ``minmax``, ``entropy`` or ``percentile``.
        per_channel: Per-output-channel weight scales.
        keep_float: Node names or op types kept in float.
        metadata: Extra ``metadata_props`` for the INT8 model (the FP32 model's are kept).

    Raises:
        UsageError: Unknown method or ``keep_float`` entry; per-channel asked of an opset < 13 graph.
        BadInputError: The result fails ``onnx.checker`` or has a non-zero zero point.
    """
    if method not in METHODS:
        raise UsageError(f"--method must be one of {', '.join(METHODS)}, not '{method}'")
    onnx = _onnx()
    quantization = _ort_quantization()
    original = onnx.load(str(source))
    opset = _opset(original)
    if per_channel and opset is not None and opset < 13:
        raise UsageError(
            f"per-channel Q/DQ needs ONNX opset 13 or later, this graph is opset {opset}; re-export with "
            "`toolchain export MODEL --opset 13` (TensorRT 8.2+ parses it) or pass --no-per-channel"
        )
    with tempfile.TemporaryDirectory(prefix="toolchain-quantize-") as tmp:
        graph_path, preprocessed = Path(source), False
        try:
            prepared = Path(tmp) / "preprocessed.onnx"
            with contextlib.redirect_stdout(io.StringIO()):
                quantization.shape_inference.quant_pre_process(str(source), str(prepared))
            graph_path, preprocessed = prepared, True
        except Exception as exc:  # noqa: BLE001 - optional step: any failure means "quantize as is"
            _log.warning("quant_pre_process failed (%s); quantizing the graph without it", exc)
        model = onnx.load(str(graph_path))
        if preprocessed and keep_float:
            # Pre-processing may fuse or rename nodes; names the user took from the FP32 graph still count.
            present = {n.name for n in model.graph.node} | {n.op_type for n in model.graph.node}
            if any(k not in present for k in keep_float):
                graph_path, preprocessed, model = Path(source), False, original
        excluded = resolve_keep_float(model, keep_float)
        extra_options = {
            "ActivationSymmetric": True,  # zero point 0: TensorRT's explicit quantization is symmetric only
            "WeightSymmetric": True,
            "QuantizeBias": False,  # TensorRT cannot parse an INT32 bias DequantizeLinear; it fuses float bias
            "OpTypesToExcludeOutputQuantization": ["Softmax"],  # probabilities stay float (no 1/127 steps, ties)
            "CalibStridedMinMax": 1,  # collect one batch at a time: bounded memory, ragged last batch is fine
        }
        calibration = quantization.CalibrationMethod[_METHOD_NAMES[method]]
        if hasattr(reader, "rewind"):
            reader.rewind()
        with contextlib.redirect_stdout(io.StringIO()):  # ORT's calibrators print progress to stdout
            quantization.quantize_static(
                str(graph_path), str(output), reader,
                quant_format=quantization.QuantFormat.QDQ,
                activation_type=quantization.QuantType.QInt8,
                weight_type=quantization.QuantType.QInt8,
                per_channel=per_channel,
                calibrate_method=calibration,
                nodes_to_exclude=list(excluded),
                extra_options=extra_options,
            )
    quantized = onnx.load(str(output))
    props = {p.key: p.value for p in original.metadata_props}
    props.update({p.key: p.value for p in quantized.metadata_props})
    props.update(metadata or {})
    del quantized.metadata_props[:]
    for key in sorted(props):
        quantized.metadata_props.add(key=key, value=props[key])
    try:
        onnx.checker.check_model(quantized, full_check=True)
    except Exception as exc:  # onnx raises ValidationError / InferenceError
        raise BadInputError(
            f"the INT8 ONNX fails onnx.checker: {exc}. Try --keep-float with the op type named above, or report it"
        ) from exc
    qdq_nodes = check_symmetric(quantized)
    onnx.save(quantized, str(output))
    return _Quantized(excluded_nodes=excluded, preprocessed=preprocessed, qdq_nodes=qdq_nodes, opset=_opset(quantized))


# --------------------------------------------------------------------------- the stage


def _code_version() -> str:
    from toolchain.codeversion import code_version

    return code_version("quantize", "train")  # train: eval_transform prepares the calibration images


def _ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


def _cache_key(fp32: str, calibration: str, config: QuantizeConfig) -> dict[str, Any]:
    """What determines the INT8 bytes and figures (``max_drop`` only judges them)."""
    return {
        "fp32": fp32, "calibration": calibration, "samples": config.samples, "method": config.method,
        "per_channel": config.per_channel, "keep_float": list(config.keep_float), "seed": config.seed,
        "code_version": _code_version(), "onnxruntime": _ort_version(),
    }


def _gate_error(accuracy_fp32: float, accuracy_int8: float, drop: float, config: QuantizeConfig) -> QualityGateError:
    return QualityGateError(
        f"INT8 accuracy {accuracy_int8:.4f} vs FP32 {accuracy_fp32:.4f} on the test split: a drop of {drop:.2f} points "
        f"exceeds --max-drop {config.max_drop:g}; nothing was registered. Try --method entropy or percentile, more "
        "--samples, --keep-float Gemm (keep the classifier head in float), or raise --max-drop"
    )


def _result_from_record(artifact: Artifact, config: QuantizeConfig, *, cached: bool) -> QuantizeResult:
    body = artifact.record.body
    return QuantizeResult(
        artifact=artifact.id, ref=artifact.ref, path=str(artifact.path), fp32=body["fp32"], model=body["model"],
        accuracy_fp32=body["accuracy_fp32"], accuracy_int8=body["accuracy_int8"], accuracy_drop=body["accuracy_drop"],
        agreement=body["agreement"], test_images=body["test_images"], size_fp32=body["size_fp32"],
        size_int8=body["size_int8"], latency_fp32_ms=body["latency_fp32_ms"], latency_int8_ms=body["latency_int8_ms"],
        passed=body["accuracy_drop"] <= config.max_drop, max_drop=config.max_drop,
        calibration=body["calibration"], calibration_ref=body["calibration_ref"], samples=body["samples"],
        method=body["method"], per_channel=body["per_channel"], keep_float=tuple(body["keep_float"]),
        excluded_nodes=tuple(body["excluded_nodes"]), preprocessed=body["preprocessed"], cached=cached,
    )


def _find_cached(workspace: Workspace, fp32: str, key: dict[str, Any]) -> Artifact | None:
    for link in workspace.registry.links_to(fp32):
        if link.role != "fp32":
            continue
        record = workspace.registry.get(link.record_id)
        if record is None or record.kind != "artifact" or record.body.get("type") != ARTIFACT_TYPE:
            continue
        if record.body.get("key") == key and workspace.blobs.has(record.body["blob"]):
            version = workspace.registry.version_of("artifact", record.name, record.id)
            return Artifact(record=record, version=version, path=workspace.blobs.require(record.body["blob"]))
    return None


def quantize_model(workspace: Workspace, config: QuantizeConfig, *, progress: Progress | None = None) -> QuantizeResult:
    """Quantize a registered FP32 ONNX to INT8 Q/DQ, gate it on accuracy and register it.

    Args:
        workspace: The workspace holding the FP32 ONNX artifact, its model and the datasets.
        config: What to quantize and how.
        progress: Progress display.

    Returns:
        The registered INT8 artifact with its accuracy, size and latency figures.

    Raises:
        InputNotFoundError: The ONNX, its model or a dataset is not in the workspace.
        UsageError: The artifact is not an FP32 ONNX; an unknown ``keep_float`` entry.
        BadInputError: No test or train images; the graph does not match its model; the INT8
            graph fails verification.
        QualityGateError: The accuracy drop exceeds ``max_drop`` (nothing is registered); the
            error's ``result`` attribute holds the figures.
        MissingEnvironmentError: onnx or torch is not installed.
    """
    progress = progress or NullProgress()
    onnx = _onnx()
    fp32 = resolve_artifact(workspace, config.onnx)
    fp32_body = fp32.record.body
    if fp32.type == ARTIFACT_TYPE:
        raise UsageError(
            f"{fp32.ref} is already an INT8 ONNX; quantize the FP32 ONNX it was made from ({str(fp32_body['fp32'])[:12]})"
        )
    if fp32.type != "onnx":
        raise UsageError(f"{fp32.ref} is a '{fp32.type}' artifact, not an ONNX; pass the ONNX `toolchain export` printed")
    model_id = fp32_body.get("model")
    model_record = workspace.registry.get(model_id) if model_id else None
    if model_record is None or model_record.kind != "model":
        raise InputNotFoundError(
            f"the model behind {fp32.ref} ({str(model_id)[:12]}) is not in this workspace; export the model again "
            "with `toolchain export MODEL` in this workspace"
        )
    model_body = model_record.body
    recipe = parse_recipe(model_body["recipe"], source=f"model {model_record.id[:12]}")
    classes = list(model_body["classes"])
    fp32_model = onnx.load(str(fp32.path))
    spec = input_spec(fp32_model, str(fp32_body.get("input", "float-nchw")), recipe)
    del fp32_model
    if spec.num_classes is not None and spec.num_classes != len(classes):
        raise BadInputError(
            f"{fp32.ref} outputs {spec.num_classes} classes but its model {model_record.id[:12]} has {len(classes)}; "
            "re-export the model"
        )

    evaluation = load_dataset(workspace, model_body["dataset"])
    if list(evaluation.classes) != classes:
        raise BadInputError(
            f"dataset {evaluation.ref} has classes {list(evaluation.classes)} but the model predicts {classes}"
        )
    test_indices = evaluation.split_indices("test")
    if len(test_indices) == 0:
        raise BadInputError(
            f"dataset {evaluation.ref} has no test images, so the INT8 accuracy cannot be checked; "
            "re-ingest it with a test split"
        )
    class_index = {c: i for i, c in enumerate(classes)}
    test_labels = np.array([class_index[evaluation.manifest.entries[i].label] for i in test_indices], dtype=np.int64)
    calibration = load_dataset(workspace, config.calib) if config.calib else evaluation

    key = _cache_key(fp32.id, calibration.id, config)
    cached = _find_cached(workspace, fp32.id, key)
    if cached is not None:
        result = _result_from_record(cached, config, cached=True)
        if not result.passed:
            error = _gate_error(result.accuracy_fp32, result.accuracy_int8, result.accuracy_drop, config)
            error.result = result  # type: ignore[attr-defined]
            raise error
        return result

    test_sha256 = frozenset(evaluation.manifest.entries[i].sha256 for i in test_indices)
    reader = CalibrationReader(
        calibration, workspace.blobs, spec, recipe, samples=config.samples, seed=config.seed,
        exclude_sha256=test_sha256,
    )
    samples = len(reader.indices)
    if reader.excluded:
        progress.note(f"{reader.excluded} calibration images are in the test split and were left out")

    with tempfile.TemporaryDirectory(prefix="toolchain-int8-") as tmp:
        int8_path = Path(tmp) / f"{fp32.record.name or 'model'}-int8.onnx"
        progress.start(f"calibrating on {samples} train images ({config.method})", None)
        quantized = quantize_onnx(
            fp32.path, int8_path, reader, method=config.method, per_channel=config.per_channel,
            keep_float=config.keep_float,
            metadata={
                "precision": "int8",
                "quantization": json.dumps({
                    "method": config.method, "per_channel": config.per_channel, "symmetric": True,
                    "calibration_dataset": calibration.id, "samples": samples, "seed": config.seed,
                    "keep_float": list(config.keep_float),
                }, sort_keys=True),
            },
        )
        progress.finish()

        progress.start(f"FP32 vs INT8 on {len(test_indices)} test images", 2)
        fp32_session = ort_session(fp32.path)
        int8_session = ort_session(int8_path)
        fp32_pred = predict(fp32_session, spec, recipe, evaluation, workspace.blobs, test_indices, test_labels)
        progress.advance()
        int8_pred = predict(int8_session, spec, recipe, evaluation, workspace.blobs, test_indices, test_labels)
        progress.advance()
        progress.finish()

        progress.start("CPU latency, batch 1", 2)
        feed_images = evaluation.layout.gather(workspace.blobs, test_indices[: spec.batch or 1])
        feed, _ = next(padded_chunks(prepare_images(feed_images, spec, recipe), spec.chunk(1), spec.batch is not None))
        latency_fp32 = cpu_latency_ms(fp32_session, feed, spec, runs=LATENCY_RUNS, warmup=LATENCY_WARMUP)
        progress.advance()
        latency_int8 = cpu_latency_ms(int8_session, feed, spec, runs=LATENCY_RUNS, warmup=LATENCY_WARMUP)
        progress.advance()
        progress.finish()
        del fp32_session, int8_session

        accuracy_fp32, accuracy_int8 = fp32_pred.accuracy, int8_pred.accuracy
        drop = round(100.0 * (accuracy_fp32 - accuracy_int8), 6)
        figures = {
            "accuracy_fp32": round(accuracy_fp32, 6),
            "accuracy_int8": round(accuracy_int8, 6),
            "accuracy_drop": drop,
            "agreement": round(float((fp32_pred.predicted == int8_pred.predicted).mean()), 6),
            "max_abs_diff": round(float(np.abs(fp32_pred.outputs - int8_pred.outputs).max()), 6),
            "test_images": int(len(test_indices)),
            "size_fp32": fp32.path.stat().st_size,
            "size_int8": int8_path.stat().st_size,
            "latency_fp32_ms": round(latency_fp32, 4),
            "latency_int8_ms": round(latency_int8, 4),
            "latency_batch": spec.batch or 1,
        }
        body = {
            "fp32": fp32.id,
            "model": model_record.id,
            "calibration": calibration.id,
            "calibration_ref": calibration.ref,
            "samples": samples,
            "calibration_excluded": reader.excluded,
            "method": config.method,
            "per_channel": config.per_channel,
            "symmetric": True,
            "keep_float": list(config.keep_float),
            "excluded_nodes": list(quantized.excluded_nodes),
            "preprocessed": quantized.preprocessed,
            "qdq_nodes": quantized.qdq_nodes,
            "evaluation_dataset": evaluation.id,
            **figures,
            "input": fp32_body.get("input", spec.layout),
            "batch": fp32_body.get("batch", str(spec.batch) if spec.batch else "dynamic"),
            "opset": quantized.opset,
            "opset_fp32": fp32_body.get("opset"),
            "config": config.to_json(),
            "key": key,
        }
        if drop > config.max_drop:
            error = _gate_error(accuracy_fp32, accuracy_int8, drop, config)
            error.result = QuantizeResult(  # type: ignore[attr-defined]
                artifact="", ref="", path="", fp32=fp32.id, model=model_record.id,
                **{k: figures[k] for k in (
                    "accuracy_fp32", "accuracy_int8", "accuracy_drop", "agreement", "test_images", "size_fp32",
                    "size_int8", "latency_fp32_ms", "latency_int8_ms")},
                passed=False, max_drop=config.max_drop, calibration=calibration.id, calibration_ref=calibration.ref,
                samples=samples, method=config.method, per_channel=config.per_channel, keep_float=config.keep_float,
                excluded_nodes=quantized.excluded_nodes, preprocessed=quantized.preprocessed,
            )
            raise error
        artifact = register_file(
            workspace, int8_path, name=f"{fp32.record.name or 'model'}-int8", type=ARTIFACT_TYPE, body=body,
            links=((fp32.id, "fp32"), (calibration.id, "calibration_data"), (model_record.id, "model")),
        )
    return _result_from_record(artifact, config, cached=False)
