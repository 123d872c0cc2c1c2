"""What a hand-off needs to know about a model, read from the model itself: its tensors and its metadata.

Files for other tools (DeepStream, Triton) are derived from the model's own metadata (classes, mean/std,
layout, input size: the ``metadata_props`` ``toolchain export`` writes into the graph) and from the graph's
inputs and outputs; nothing is restated by hand. A model without that metadata is refused with what to do.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolchain.errors import BadInputError

LAYOUTS = ("float-nchw", "uint8-nhwc")

# ONNX element type (numpy dtype name) -> Triton data type; only types a classifier's I/O can have.
_TRITON_TYPES = {
    "float32": "TYPE_FP32", "float16": "TYPE_FP16", "uint8": "TYPE_UINT8", "int8": "TYPE_INT8",
    "int32": "TYPE_INT32", "int64": "TYPE_INT64", "bool": "TYPE_BOOL", "float64": "TYPE_FP64",
}
# ONNX Runtime's type strings -> numpy dtype names.
_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8", "tensor(int8)": "int8",
    "tensor(int32)": "int32", "tensor(int64)": "int64", "tensor(bool)": "bool", "tensor(double)": "float64",
}


@dataclass(frozen=True, kw_only=True)
class Tensor:
    """One graph input or output.

    Attributes:
        name: The tensor's name in the graph (TensorRT keeps ONNX names for its bindings).
        dtype: numpy dtype name (``float32``, ``uint8``...).
        shape: Dimensions; a symbolic (dynamic) dimension is ``-1``.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def dynamic_batch(self) -> bool:
        return bool(self.shape) and self.shape[0] == -1

    @property
    def triton_type(self) -> str:
        if self.dtype not in _TRITON_TYPES:
            raise BadInputError(f"tensor {self.name} has type {self.dtype}, which the hand-off does not map to Triton")
        return _TRITON_TYPES[self.dtype]


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """A single-input classifier: its tensors and the preprocessing it was trained with.

    Attributes:
        input: The image input.
        output: The class-probability output (``output_name`` of the metadata, or the only output).
        outputs: Every graph output.
        classes: Class names, in output order.
        mean, std: Per-channel normalisation on the 0..1 scale (``(x / 255 - mean) / std``).
        layout: ``float-nchw`` (the graph takes normalised floats) or ``uint8-nhwc`` (raw RGB frames; the graph
            normalises them itself).
        size: Square input side.
        opset: The graph's ONNX opset.
    """

    input: Tensor
    output: Tensor
    outputs: tuple[Tensor, ...]
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    layout: str
    size: int
    opset: int

    @property
    def fixed_batch(self) -> int | None:
        """The batch a fixed-batch graph takes, or None for a dynamic batch."""
        return None if self.input.dynamic_batch else self.input.shape[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "input": {"name": self.input.name, "dtype": self.input.dtype, "shape": list(self.input.shape)},
            "output": {"name": self.output.name, "dtype": self.output.dtype, "shape": list(self.output.shape)},
            "classes": list(self.classes), "mean": list(self.mean), "std": list(self.std), "layout": self.layout,
            "size": self.size, "opset": self.opset,
        }


def read_tensors(path: Path) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...], dict[str, str]]:
    """``(inputs, outputs, metadata_props)`` of an ONNX file, as ONNX Runtime loads it."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own exception types
        raise BadInputError(f"{path} does not load in ONNX Runtime ({exc}); pass an ONNX from export or quantize") from None

    def tensor(arg: Any) -> Tensor:
        dtype = _ORT_TYPES.get(arg.type)
        if dtype is None:
            raise BadInputError(f"tensor {arg.name} of {path.name} has type {arg.type}; a classifier's I/O is numeric")
        return Tensor(name=arg.name, dtype=dtype, shape=tuple(d if isinstance(d, int) and d > 0 else -1 for d in arg.shape))

    inputs = tuple(tensor(a) for a in session.get_inputs())
    outputs = tuple(tensor(a) for a in session.get_outputs())
    return inputs, outputs, dict(session.get_modelmeta().custom_metadata_map)


def model_info(path: Path, record_metadata: Mapping[str, Any] | None = None) -> ModelInfo:
    """Describe the classifier in the ONNX file at ``path``.

    The graph's own ``metadata_props`` win; the artifact record's ``metadata`` (what export stored beside the
    file) fills gaps.

    Raises:
        BadInputError: Not a single-input classifier, or the metadata lacks classes, mean/std or the input size.
    """
    import onnx

    inputs, outputs, props = read_tensors(path)
    meta: dict[str, Any] = {**(record_metadata or {}), **props}
    if len(inputs) != 1:
        raise BadInputError(f"{path.name} has {len(inputs)} inputs; the hand-off covers single-input image classifiers")
    missing = [k for k in ("classes", "mean", "std") if k not in meta]
    if missing:
        raise BadInputError(
            f"{path.name} carries no {', '.join(missing)} in its metadata, so its preprocessing and labels cannot be "
            "derived (and are never guessed): hand off an ONNX made by `toolchain export` (or quantized from one), or a "
            "build of it"
        )
    classes = tuple(str(c) for c in _listed(meta["classes"]))
    mean = tuple(float(v) for v in _listed(meta["mean"]))
    std = tuple(float(v) for v in _listed(meta["std"]))
    if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
        raise BadInputError(f"{path.name}: mean {list(mean)} and std {list(std)} must be three values each, std > 0")
    if len(classes) < 2:
        raise BadInputError(f"{path.name} lists {len(classes)} class(es); a classifier needs at least two")
    source = inputs[0]
    layout = str(meta.get("input_layout") or ("uint8-nhwc" if source.dtype == "uint8" else "float-nchw"))
    if layout not in LAYOUTS:
        raise BadInputError(f"{path.name}: input layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    expected_dtype = "uint8" if layout == "uint8-nhwc" else "float32"
    if source.dtype != expected_dtype or len(source.shape) != 4:
        raise BadInputError(f"{path.name}: input {source.name} is {source.dtype} {list(source.shape)}, not a {layout} image")
    spatial = source.shape[1:3] if layout == "uint8-nhwc" else source.shape[2:4]
    channels = source.shape[3] if layout == "uint8-nhwc" else source.shape[1]
    size = int(meta.get("input_size") or spatial[0])
    if channels != 3 or tuple(spatial) != (size, size):
        raise BadInputError(f"{path.name}: input {list(source.shape)} is not a 3-channel {size}x{size} {layout} image")
    output = _class_output(path, outputs, str(meta.get("output_name") or ""), len(classes))
    model = onnx.load(str(path), load_external_data=False)
    opset = next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return ModelInfo(input=source, output=output, outputs=outputs, classes=classes, mean=mean, std=std, layout=layout,
                     size=size, opset=opset)


def _class_output(path: Path, outputs: tuple[Tensor, ...], named: str, classes: int) -> Tensor:
    chosen = [o for o in outputs if o.name == named] if named else list(outputs)
    if len(chosen) != 1:
        names = ", ".join(o.name for o in outputs)
        raise BadInputError(f"{path.name}: cannot tell the class output among {names or 'no outputs'}"
                            + (f" (the metadata names {named!r})" if named else ""))
    output = chosen[0]
    if len(output.shape) != 2 or output.shape[1] != classes:
        raise BadInputError(
            f"{path.name}: output {output.name} has shape {list(output.shape)}, not (batch, {classes}) for its {classes} "
            "classes; DeepStream's and Triton's classifiers read one score per class"
        )
    return output


def _listed(value: Any) -> list[Any]:
    """Export writes lists as JSON strings; records made by hand hold lists."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise BadInputError(f"metadata value {value!r} is not a JSON list") from None
    if not isinstance(value, (list, tuple)):
        raise BadInputError(f"metadata value {value!r} is not a list")
    return list(value)
