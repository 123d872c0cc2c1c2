"""Run a handed-off model the way the other tool feeds it, and the source model the way it was trained.

For DeepStream: frames (uint8 RGB at the model's input size, as nvinfer scales them) go through the config's
``net-scale-factor``/``offsets`` into the handed-off ONNX, and through the model's own preprocessing into the
source ONNX; the class probabilities are compared. For a TensorRT engine the source ONNX stands in for the
engine (nothing here runs TensorRT). The same run shows whether probabilities collapse to 1.0 (every
frame's top probability exactly 1.0 in float32, as when 0..255 pixels reach a model trained on normalised ones).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.handoff.model import ModelInfo
from toolchain.handoff.preprocessing import nvinfer_input, reference_input

FRAMES = 24


@dataclass(frozen=True, kw_only=True)
class ModelCheck:
    """The handed-off model against the source model on the same frames.

    Attributes:
        frames: Frames compared.
        max_probability_error: Largest difference of any class probability.
        top1_agreement: Share of frames with the same top class.
        saturated_fraction: Share of frames whose top probability is exactly 1.0 the way the tool feeds them.
        reference_saturated_fraction: The same with the model's own preprocessing.
        probability_sums: Smallest and largest per-frame sum of probabilities (1 for a softmax).
    """

    frames: int
    max_probability_error: float
    top1_agreement: float
    saturated_fraction: float
    reference_saturated_fraction: float
    probability_sums: tuple[float, float]

    @property
    def collapsed(self) -> bool:
        """Every frame at probability 1.0 while the model's own preprocessing gives real probabilities."""
        return self.saturated_fraction == 1.0 and self.reference_saturated_fraction < 1.0

    def to_json(self) -> dict[str, Any]:
        return {"frames": self.frames, "max_probability_error": self.max_probability_error,
                "top1_agreement": self.top1_agreement, "saturated_fraction": self.saturated_fraction,
                "reference_saturated_fraction": self.reference_saturated_fraction,
                "probability_sums": list(self.probability_sums), "collapsed": self.collapsed}


def sample_frames(size: int, count: int = FRAMES, seed: int = 0) -> np.ndarray:
    """``count`` uint8 RGB frames ``(n, size, size, 3)``: one holding every value 0..255 in every channel, then
    smooth random scenes (a coarse random grid, upsampled), the rest bright and dark ones."""
    rng = np.random.default_rng(seed)
    ramp = np.resize(np.arange(256, dtype=np.uint8), size * size).reshape(size, size)
    frames = [np.stack([ramp, np.roll(ramp, 85), np.roll(ramp, 170)], axis=-1)]
    cells = max(2, size // 8)
    for i in range(count - 1):
        coarse = rng.integers(0, 256, size=(cells, cells, 3)).astype(np.float32)
        if i % 3 == 1:
            coarse = coarse * 0.3 + 170  # bright
        elif i % 3 == 2:
            coarse = coarse * 0.3  # dark
        repeat = -(-size // cells)
        frame = np.kron(coarse, np.ones((repeat, repeat, 1), np.float32))[:size, :size]
        frames.append(np.clip(frame + rng.normal(0, 6, frame.shape), 0, 255).astype(np.uint8))
    return np.stack(frames)


def model_input(info: ModelInfo, frames: np.ndarray) -> np.ndarray:
    """What the source model takes for ``frames``: its own preprocessing (uint8 frames as they are for a uint8 graph)."""
    if info.layout == "uint8-nhwc":
        return frames
    planar = frames.transpose(3, 0, 1, 2).reshape(3, -1).astype(np.float32)
    normalised = reference_input(info.mean, info.std, planar)
    return np.ascontiguousarray(normalised.reshape(3, *frames.shape[:3]).transpose(1, 0, 2, 3))


def nvinfer_feed(frames: np.ndarray, scale: float, offsets: Sequence[float]) -> np.ndarray:
    """What nvinfer writes for ``frames``: float32 planar ``scale * (x - offset[c])``."""
    planar = frames.transpose(3, 0, 1, 2).reshape(3, -1)
    fed = nvinfer_input(scale, offsets, planar)
    return np.ascontiguousarray(fed.reshape(3, *frames.shape[:3]).transpose(1, 0, 2, 3))


def run_onnx(path: Path, inputs: np.ndarray, *, batch: int | None = None) -> np.ndarray:
    """The first output of the ONNX at ``path`` on ``inputs``, in chunks of its fixed ``batch`` when it has one
    (the last chunk padded by repeating its last item, and the padding dropped)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    step = batch or len(inputs)
    results = []
    for start in range(0, len(inputs), step):
        chunk = inputs[start:start + step]
        real = len(chunk)
        if batch and real < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - real, axis=0)])
        results.append(session.run(None, {name: chunk})[0][:real])
    return np.concatenate(results)


def compare_models(info: ModelInfo, source: Path, handed_off: Path, *, scale: float, offsets: Sequence[float],
                   frames: np.ndarray | None = None) -> ModelCheck:
    """Class probabilities of ``handed_off`` fed as nvinfer feeds it vs ``source`` with its own preprocessing."""
    frames = sample_frames(info.size) if frames is None else frames
    reference = run_onnx(source, model_input(info, frames), batch=info.fixed_batch).astype(np.float64)
    got = run_onnx(handed_off, nvinfer_feed(frames, scale, offsets), batch=info.fixed_batch).astype(np.float64)
    sums = got.sum(axis=1)
    return ModelCheck(
        frames=len(frames),
        max_probability_error=float(np.abs(got - reference).max()),
        top1_agreement=float((got.argmax(1) == reference.argmax(1)).mean()),
        saturated_fraction=float((got.max(axis=1) >= 1.0).mean()),
        reference_saturated_fraction=float((reference.max(axis=1) >= 1.0).mean()),
        probability_sums=(float(sums.min()), float(sums.max())),
    )
