"""Tiny 2-class classifiers built with onnx.helper, shaped like `toolchain export` / `quantize` output, and
registered (with a stand-in TensorRT build) the way the toolchain registers them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.artifacts import Artifact, register_file
from toolchain.registry import NewRecord, Record
from toolchain.workspace import Workspace

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
CLASSES = ("car", "truck")


def write_classifier(path: Path, *, size: int = 16, batch: int | str = "batch", layout: str = "float-nchw",
                     head: str = "softmax", qdq: bool = False, metadata: bool = True, mean: tuple[float, ...] = MEAN,
                     std: tuple[float, ...] = STD, opset: int = 17, seed: int = 0) -> Path:
    """Conv 3->4 + ReLU + global average pool + Gemm 4->2, then ``head``: ``softmax`` (axis 1), ``softmax0``
    (over the batch axis), ``logits`` (none) or ``sigmoid`` (a one-unit head). ``layout="uint8-nhwc"`` takes raw
    frames and normalises them in the graph as export's uint8 wrapper does; ``qdq`` adds Q/DQ pairs (INT8)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    classes = 1 if head == "sigmoid" else 2
    conv_w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.5
    init = [
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32) * 0.1, "conv_b"),
        numpy_helper.from_array(rng.standard_normal((classes, 4)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(rng.standard_normal(classes).astype(np.float32) * 0.1, "fc_b"),
    ]
    nodes = []
    x = "images"
    if layout == "uint8-nhwc":
        init += [numpy_helper.from_array(np.array(255.0, np.float32), "c255"),
                 numpy_helper.from_array(np.asarray(mean, np.float32).reshape(1, 3, 1, 1), "mean"),
                 numpy_helper.from_array(np.asarray(std, np.float32).reshape(1, 3, 1, 1), "std")]
        nodes += [helper.make_node("Cast", [x], ["as_float"], to=TensorProto.FLOAT, name="cast"),
                  helper.make_node("Transpose", ["as_float"], ["nchw"], perm=[0, 3, 1, 2], name="to_nchw"),
                  helper.make_node("Div", ["nchw", "c255"], ["unit"], name="div255"),
                  helper.make_node("Sub", ["unit", "mean"], ["centred"], name="sub_mean"),
                  helper.make_node("Div", ["centred", "std"], ["normalised"], name="div_std")]
        x = "normalised"
    if qdq:
        scale = np.float32(3.0 / 127)
        w_scale = np.float32(np.abs(conv_w).max() / 127)
        init += [numpy_helper.from_array(np.array(scale, np.float32), "x_scale"),
                 numpy_helper.from_array(np.array(0, np.int8), "x_zero"),
                 numpy_helper.from_array(np.round(conv_w / w_scale).astype(np.int8), "conv_w_q"),
                 numpy_helper.from_array(np.array(w_scale, np.float32), "w_scale"),
                 numpy_helper.from_array(np.array(0, np.int8), "w_zero")]
        nodes += [helper.make_node("QuantizeLinear", [x, "x_scale", "x_zero"], ["x_q"], name="q_in"),
                  helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero"], ["x_dq"], name="dq_in"),
                  helper.make_node("DequantizeLinear", ["conv_w_q", "w_scale", "w_zero"], ["conv_w"], name="dq_w")]
        x = "x_dq"
    else:
        init.append(numpy_helper.from_array(conv_w, "conv_w"))
    nodes += [
        helper.make_node("Conv", [x, "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits" if head != "logits" else "probabilities"],
                         transB=1, name="fc"),
    ]
    if head in ("softmax", "softmax0"):
        nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1 if head == "softmax" else 0,
                                      name="softmax"))
    elif head == "sigmoid":
        nodes.append(helper.make_node("Sigmoid", ["logits"], ["probabilities"], name="sigmoid"))
    in_shape = [batch, size, size, 3] if layout == "uint8-nhwc" else [batch, 3, size, size]
    in_type = TensorProto.UINT8 if layout == "uint8-nhwc" else TensorProto.FLOAT
    graph = helper.make_graph(nodes, "tiny_classifier", [helper.make_tensor_value_info("images", in_type, in_shape)],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [batch, classes])],
                              initializer=init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tests")
    model.ir_version = 8
    if metadata:
        for key, value in export_metadata(size=size, layout=layout, batch=batch, mean=mean, std=std).items():
            model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString(deterministic=True))
    return path


def export_metadata(*, size: int, layout: str, batch: int | str, mean: tuple[float, ...] = MEAN,
                    std: tuple[float, ...] = STD) -> dict[str, str]:
    """The metadata_props `toolchain export` writes (lists as JSON strings)."""
    return {"classes": json.dumps(list(CLASSES)), "input_size": str(size), "mean": json.dumps(list(mean)),
            "std": json.dumps(list(std)), "input_layout": layout, "input_name": "images", "output_name": "probabilities",
            "batch": "dynamic" if isinstance(batch, str) else str(batch)}


def register_classifier(workspace: Workspace, tmp: Path, *, name: str = "tiny-edgenet-onnx", **kwargs: Any) -> Artifact:
    """:func:`write_classifier` registered as export (or, with ``qdq=True``, quantize) registers it."""
    path = write_classifier(tmp / f"{name}.onnx", **kwargs)
    size, batch, layout = kwargs.get("size", 16), kwargs.get("batch", "batch"), kwargs.get("layout", "float-nchw")
    shape = [batch, size, size, 3] if layout == "uint8-nhwc" else [batch, 3, size, size]
    body: dict[str, Any] = {"format": "onnx", "opset": kwargs.get("opset", 17), "input": layout,
                            "batch": "dynamic" if isinstance(batch, str) else str(batch)}
    if kwargs.get("qdq"):
        body["qdq_nodes"] = 3  # an INT8 record, like quantize's: the input fields are read from the file
    else:
        body |= {"input_name": "images", "output_name": "probabilities", "input_shape": shape,
                 "input_dtype": "uint8" if layout == "uint8-nhwc" else "float32",
                 "metadata": export_metadata(size=size, layout=layout, batch=batch)}
    return register_file(workspace, path, name=name, type="onnx-int8" if kwargs.get("qdq") else "onnx", body=body)


def register_tensorrt_build(workspace: Workspace, onnx: Artifact, tmp: Path, *, target: str = "jetson-orin-nano",
                            precision: str = "fp16", max_batch: int = 8, dla_core: int | None = None) -> Record:
    """A `build` record of a TensorRT engine for ``target`` (the bytes stand in for a plan: nothing here builds one)."""
    engine = tmp / "stand-in.plan"
    engine.write_bytes(b"a TensorRT plan stands in here " + onnx.id.encode())
    blob = workspace.blobs.put_file(engine)
    size = 16
    record, _, _ = workspace.registry.commit(NewRecord(kind="build", name=f"{onnx.record.name}-{target}", body={
        "blob": blob, "format": "tensorrt-plan", "target": target, "backend": "tensorrt", "architecture": "aarch64",
        "precision": precision, "tensorrt_version": "10.3.0", "compute_capability": "8.7", "jetpack": "6.2",
        "l4t": "36.4", "dla_core": dla_core, "onnx": onnx.id, "onnx_sha256": onnx.record.body["blob"],
        "input": "float-nchw", "batch": "dynamic",
        "shapes": {"min": [1, 3, size, size], "opt": [1, 3, size, size], "max": [max_batch, 3, size, size]},
    }, links=((onnx.id, "onnx"),), blobs=((blob, "engine"),)))
    return record
