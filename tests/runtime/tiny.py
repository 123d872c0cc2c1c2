"""Tiny models and controlled sources for runtime, bench and CLI tests (made in milliseconds)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from toolchain.runtime.runners import BaseRunner
from toolchain.runtime.sources import FrameSource, StreamError

CLASSES = ("car", "truck")


def make_tiny_onnx(path: Path, *, size: int = 16, batch: int | None = None, uint8: bool = False) -> Path:
    """A real ONNX classifier: per-channel mean of the image -> 2x3 linear layer -> Softmax, with export metadata."""
    import onnx
    from onnx import TensorProto, helper

    n = batch if batch is not None else "N"
    if uint8:
        x = helper.make_tensor_value_info("images", TensorProto.UINT8, [n, size, size, 3])
        nodes = [helper.make_node("Cast", ["images"], ["xf"], to=TensorProto.FLOAT),
                 helper.make_node("Transpose", ["xf"], ["x"], perm=[0, 3, 1, 2])]
    else:
        x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [n, 3, size, size])
        nodes = [helper.make_node("Identity", ["images"], ["x"])]
    weights = helper.make_tensor("w", TensorProto.FLOAT, [3, 2], [1.0, -1.0, 0.5, 0.25, -0.5, 1.0])
    nodes += [
        helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["m", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    y = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [n, 2])
    graph = helper.make_graph(nodes, "tiny", [x], [y], initializer=[weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in {"classes": json.dumps(list(CLASSES)), "input_size": str(size), "mean": "[0.5, 0.5, 0.5]",
                       "std": "[0.25, 0.25, 0.25]", "input_layout": "uint8-nhwc" if uint8 else "float-nchw"}.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


class CountingSource(FrameSource):
    """Frames whose pixels hold their index; ends after ``frames``, or breaks at ``break_at``."""

    def __init__(self, name: str = "counting", *, fps: float = 100.0, frames: int | None = None,
                 break_at: int | None = None, size: int = 8) -> None:
        super().__init__(name, fps=fps)
        self.frames, self.break_at, self.size = frames, break_at, size
        self.next = 0

    def open(self) -> None:
        self.next = 0

    def read(self) -> np.ndarray | None:
        if self.frames is not None and self.next >= self.frames:
            return None
        if self.break_at is not None and self.next >= self.break_at:
            raise StreamError(f"{self.name}: connection reset")
        frame = np.full((self.size, self.size, 3), self.next % 256, dtype=np.uint8)
        self.next += 1
        return frame


class SleepyRunner(BaseRunner):
    """A controlled runner: sleeps ``delays[call % len]`` seconds per batch, returns one-hot scores.

    A stand-in for a slow model in accounting tests (the boundary under control); it records batch sizes.
    """

    def __init__(self, delays: tuple[float, ...] = (0.0,)) -> None:
        super().__init__("sleepy")
        self.delays = delays
        self.calls = 0
        self.batch_sizes: list[int] = []

    def activate_impl(self) -> None:
        self.calls = 0

    def infer_impl(self, feed: np.ndarray) -> np.ndarray:
        time.sleep(self.delays[self.calls % len(self.delays)])
        self.calls += 1
        self.batch_sizes.append(len(feed))
        out = np.zeros((len(feed), 2), np.float32)
        out[:, 0] = 1.0
        return out
