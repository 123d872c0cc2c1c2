"""Tiny ONNX classifiers made with onnx.helper for build tests: an FP32 one and an explicitly
quantized (Q/DQ, symmetric INT8) one, fixed or dynamic batch. No training, no downloads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

INPUT = "images"
OUTPUT = "probabilities"


def _weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "conv_w": (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32),
        "conv_b": (rng.standard_normal(8) * 0.1).astype(np.float32),
        "fc_w": (rng.standard_normal((2, 8)) * 0.3).astype(np.float32),
        "fc_b": (rng.standard_normal(2) * 0.1).astype(np.float32),
    }


def write_onnx(path: Path, *, batch: int | str = 1, size: int = 16, opset: int = 17, qdq: bool = False,
               seed: int = 0) -> Path:
    """Conv 3->8, ReLU, global average pool, Gemm 8->2, Softmax on a float NCHW input.

    With ``qdq`` the activation entering the Conv and the Conv weights go through symmetric INT8
    QuantizeLinear/DequantizeLinear pairs (zero point 0), the form TensorRT's explicit quantization reads.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = _weights(seed)
    initializers = [numpy_helper.from_array(v, k) for k, v in weights.items()]
    nodes = []
    conv_in, conv_w = INPUT, "conv_w"
    if qdq:
        w_scale = np.float32(np.abs(weights["conv_w"]).max() / 127.0)
        initializers += [
            numpy_helper.from_array(np.array(0.03, dtype=np.float32), "x_scale"),
            numpy_helper.from_array(np.array(w_scale, dtype=np.float32), "w_scale"),
            numpy_helper.from_array(np.array(0, dtype=np.int8), "zero"),
        ]
        nodes += [
            helper.make_node("QuantizeLinear", [INPUT, "x_scale", "zero"], ["x_q"]),
            helper.make_node("DequantizeLinear", ["x_q", "x_scale", "zero"], ["x_dq"]),
            helper.make_node("QuantizeLinear", ["conv_w", "w_scale", "zero"], ["w_q"]),
            helper.make_node("DequantizeLinear", ["w_q", "w_scale", "zero"], ["w_dq"]),
        ]
        conv_in, conv_w = "x_dq", "w_dq"
    nodes += [
        helper.make_node("Conv", [conv_in, conv_w, "conv_b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], [OUTPUT], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [batch, 2])], initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def record_body(path: Path, *, batch: int | str = 1, size: int = 16, opset: int = 17, qdq: bool = False) -> dict[str, Any]:
    """The record body ``toolchain export`` (or, with ``qdq``, ``toolchain quantize``) would register for ``path``."""
    from toolchain.hashing import sha256_file

    body: dict[str, Any] = {
        "type": "onnx-int8" if qdq else "onnx",
        "blob": sha256_file(path),
        "opset": opset,
        "input": "float-nchw",
        "batch": "dynamic" if isinstance(batch, str) else str(batch),
    }
    if qdq:  # quantize records carry no input fields: the build reads them from the file
        body.update({"qdq_nodes": 4, "symmetric": True})
    else:
        body.update({"input_name": INPUT, "input_shape": [batch, 3, size, size], "input_dtype": "float32"})
    return body
