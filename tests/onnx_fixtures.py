"""A tiny classifier ONNX made with onnx.helper (no training) and registered like `toolchain export` does."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from toolchain.artifacts import Artifact, register_file
from toolchain.workspace import Workspace


def write_tiny_onnx(path: Path, *, size: int = 16, batch: int | str = 1, opset: int = 17, seed: int = 0,
                    hidden: int = 0, softmax: bool = False) -> Path:
    """Conv 3->4 + ReLU + global average pool + Gemm 4->2 on a float NCHW input.

    ``hidden`` > 0 puts a Gemm 4->hidden + ReLU before the last one: megabytes of weights at no compute cost
    (a model as large as a real one, for transfer tests). ``softmax`` ends the graph in a Softmax over the
    classes, output ``probabilities``, as `toolchain export` does (what DeepStream's classifier needs).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "conv_w"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "conv_b"),
        numpy_helper.from_array(rng.standard_normal((2, hidden or 4)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(rng.standard_normal(2).astype(np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
    ]
    if hidden:
        weights += [numpy_helper.from_array(rng.standard_normal((hidden, 4)).astype(np.float32) * 0.1, "hidden_w"),
                    numpy_helper.from_array(np.zeros(hidden, np.float32), "hidden_b")]
        nodes += [helper.make_node("Gemm", ["f", "hidden_w", "hidden_b"], ["h"], transB=1),
                  helper.make_node("Relu", ["h"], ["hr"])]
    output = "probabilities" if softmax else "logits"
    nodes.append(helper.make_node("Gemm", ["hr" if hidden else "f", "fc_w", "fc_b"], ["z" if softmax else "logits"],
                                  transB=1))
    if softmax:
        nodes.append(helper.make_node("Softmax", ["z"], ["probabilities"], axis=1))
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [batch, 2])], initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def register_tiny_onnx(workspace: Workspace, tmp: Path, *, size: int = 16, batch: int | str = 1, opset: int = 17,
                       name: str = "tiny-onnx", seed: int = 0, hidden: int = 0,
                       normalization: tuple[list[float], list[float]] | None = None, softmax: bool = False) -> Artifact:
    """Register :func:`write_tiny_onnx` as an ONNX artifact with the body fields export writes.

    ``normalization`` adds the ``mean``/``std`` export records and ``softmax`` the Softmax export ends in (what a
    DeepStream hand-off derives its preprocessing and classifier settings from).
    """
    path = write_tiny_onnx(tmp / f"{name}.onnx", size=size, batch=batch, opset=opset, seed=seed, hidden=hidden,
                           softmax=softmax)
    return register_file(workspace, path, name=name, type="onnx", body={
        "format": "onnx", "opset": opset, "input": "float-nchw", "batch": str(batch),
        "input_name": "input", "output_name": "probabilities" if softmax else "logits", "input_shape": [batch, 3, size, size], "input_dtype": "float32",
        "metadata": {"classes": ["car", "truck"], "input_size": size,
                     **({"mean": normalization[0], "std": normalization[1]} if normalization else {})},
    })
