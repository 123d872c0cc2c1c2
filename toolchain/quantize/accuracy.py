"""FP32 vs INT8 on the CPU: the input an ONNX expects, top-1 accuracy, model size and latency.

Everything here runs ONNX Runtime's CPU provider with one intra-op thread: the numbers are meant
to compare two graphs on the same machine in the same run, not to be fast. Images come from the
uint8 shards of a dataset version and are prepared exactly as the exported graph expects:
normalised float NCHW (``float-nchw``, via :func:`toolchain.train.batches.eval_transform`) or raw
uint8 NHWC (``uint8-nhwc``, where the graph normalises) at the model's input size.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.blobs import BlobStore
from toolchain.data.versions import DatasetVersion
from toolchain.errors import BadInputError, MissingEnvironmentError, missing_extra
from toolchain.models.recipe import Recipe
from toolchain.runtime.runners import padded_chunks

__all__ = [
    "INPUT_LAYOUTS",
    "InputSpec",
    "Predictions",
    "cpu_latency_ms",
    "input_spec",
    "ort_session",
    "predict",
    "prepare_images",
]

INPUT_LAYOUTS: tuple[str, ...] = ("float-nchw", "uint8-nhwc")
"""Input layouts the exporter writes (``--input``)."""

#: Images per ``session.run`` when the graph's batch dimension is dynamic.
EVAL_BATCH = 64


@dataclass(frozen=True, kw_only=True)
class InputSpec:
    """What an ONNX graph's single image input wants.

    Attributes:
        name: The graph input's name (``images`` from the exporter).
        layout: ``float-nchw`` (normalised) or ``uint8-nhwc`` (raw pixels).
        size: Square side in pixels.
        batch: The static batch size, or ``None`` when the batch dimension is dynamic.
        num_classes: Length of the (single) output's class dimension, when static.
    """

    name: str
    layout: str
    size: int
    batch: int | None
    num_classes: int | None

    def chunk(self, preferred: int = EVAL_BATCH) -> int:
        """Images per ``session.run``: the static batch, else ``preferred``."""
        return self.batch if self.batch is not None else preferred


def _static(dim: Any) -> int | None:
    return int(dim.dim_value) if dim.HasField("dim_value") and dim.dim_value > 0 else None


def input_spec(model: Any, layout: str, recipe: Recipe) -> InputSpec:
    """Read the image input of an ONNX model.

    Args:
        model: An ``onnx.ModelProto``.
        layout: The layout the artifact record says the graph takes (``float-nchw`` or ``uint8-nhwc``).
        recipe: The model's recipe; its ``input_size`` is used when the graph's spatial size is dynamic.

    Raises:
        BadInputError: The graph does not have exactly one input and one output, or its input
            does not fit ``layout``.
    """
    if layout not in INPUT_LAYOUTS:
        raise BadInputError(
            f"the ONNX artifact says its input layout is '{layout}', expected one of {', '.join(INPUT_LAYOUTS)}; "
            "re-export it with `toolchain export MODEL --input float-nchw`"
        )
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise BadInputError(
            f"expected a classifier with one image input and one output, the graph has {len(inputs)} inputs and "
            f"{len(model.graph.output)} outputs; quantize an ONNX made by `toolchain export`"
        )
    tensor = inputs[0].type.tensor_type
    dims = [_static(d) for d in tensor.shape.dim]
    if len(dims) != 4:
        raise BadInputError(f"input '{inputs[0].name}' has rank {len(dims)}, expected 4 ({layout}); re-export the model")
    spatial = dims[2:] if layout == "float-nchw" else dims[1:3]
    channels = dims[1] if layout == "float-nchw" else dims[3]
    if channels not in (None, 3):
        raise BadInputError(
            f"input '{inputs[0].name}' has {channels} channels where {layout} needs 3; the artifact's recorded "
            "input layout does not match the graph, re-export the model"
        )
    sizes = {s for s in spatial if s is not None}
    if len(sizes) > 1:
        raise BadInputError(f"input '{inputs[0].name}' is not square ({spatial}); re-export the model")
    out_dims = [_static(d) for d in model.graph.output[0].type.tensor_type.shape.dim]
    return InputSpec(
        name=inputs[0].name, layout=layout, size=sizes.pop() if sizes else recipe.input_size, batch=dims[0],
        num_classes=out_dims[-1] if out_dims else None,
    )


def prepare_images(images: np.ndarray, spec: InputSpec, recipe: Recipe) -> np.ndarray:
    """uint8 NHWC pixels from the shards -> the array the graph's input takes.

    ``float-nchw``: :func:`~toolchain.train.batches.eval_transform` (what torch evaluation and the
    exporter's parity check use). ``uint8-nhwc``: the pixels as they are, resized to the input size
    first when the dataset was stored at another size (the graph itself never resizes).
    """
    if spec.layout == "uint8-nhwc" and images.shape[1] == spec.size and images.shape[2] == spec.size:
        return np.ascontiguousarray(images, dtype=np.uint8)  # no torch needed
    try:
        import torch
    except ImportError:
        raise missing_extra("torch", "train") from None
    from toolchain.train.batches import eval_transform, resize_uint8

    if spec.layout == "float-nchw":
        sized = recipe if recipe.input_size == spec.size else recipe.with_overrides({"input_size": spec.size})
        with torch.no_grad():
            return eval_transform(torch.from_numpy(np.ascontiguousarray(images)), sized).numpy().astype(np.float32)
    return resize_uint8(images, spec.size)


def ort_session(path: Path, *, threads: int = 1) -> Any:
    """A CPU ``onnxruntime.InferenceSession`` with a fixed, small thread count (stable timings)."""
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - onnxruntime is a base dependency
        raise MissingEnvironmentError("onnxruntime is not installed; pip install toolchain") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True, kw_only=True)
class Predictions:
    """Outputs of one graph on one split."""

    labels: np.ndarray  # (N,) true class indices
    outputs: np.ndarray  # (N, C) the graph's output (probabilities from the exporter)

    @property
    def predicted(self) -> np.ndarray:
        return self.outputs.argmax(axis=1)

    @property
    def accuracy(self) -> float:
        return float((self.predicted == self.labels).mean()) if len(self.labels) else 0.0


def predict(
    session: Any, spec: InputSpec, recipe: Recipe, dataset: DatasetVersion, blobs: BlobStore,
    indices: np.ndarray, labels: np.ndarray, *, read_batch: int = 256,
) -> Predictions:
    """Run a session over the given manifest entries (batched when the graph's batch is dynamic).

    Args:
        session: An ``onnxruntime.InferenceSession``.
        spec: The graph's input.
        recipe: The model's recipe (normalisation).
        dataset: Where the pixels are.
        blobs: The workspace's blob store.
        indices: Manifest entry indices to run.
        labels: Their true class indices.
        read_batch: Images gathered from the shards at a time.
    """
    outputs = []
    chunk = spec.chunk()
    output_name = session.get_outputs()[0].name
    for start in range(0, len(indices), read_batch):
        pixels = dataset.layout.gather(blobs, indices[start : start + read_batch])
        prepared = prepare_images(pixels, spec, recipe)
        for batch, real in padded_chunks(prepared, chunk, spec.batch is not None):
            out = session.run([output_name], {spec.name: batch})[0]
            outputs.append(np.asarray(out, dtype=np.float32).reshape(len(batch), -1)[:real])
    merged = np.concatenate(outputs) if outputs else np.empty((0, 0), np.float32)
    return Predictions(labels=np.asarray(labels), outputs=merged)


def cpu_latency_ms(session: Any, feed: np.ndarray, spec: InputSpec, *, runs: int = 50, warmup: int = 10) -> float:
    """Median wall time of one ``session.run`` on ``feed`` (batch 1 unless the graph's batch is static)."""
    output_name = session.get_outputs()[0].name
    inputs = {spec.name: feed}
    for _ in range(warmup):
        session.run([output_name], inputs)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run([output_name], inputs)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)
