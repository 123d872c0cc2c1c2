"""An ONNX that takes what Gst-nvinfer feeds with ``net-scale-factor=1`` and zero offsets, and normalises itself.

nvinfer computes ``y = net-scale-factor * (x - offsets[c])`` on 0..255 pixels with ONE scale for all channels
and writes float32 planar (NCHW) tensors; it never feeds uint8. A model trained with a per-channel std cannot
be fed exactly that way. When DeepStream builds the engine itself (an ``onnx-file`` hand-off), the model's own
normalisation goes into the graph instead, in front of the original input, with the same operations in the same
order as the model's preprocessing:

* float NCHW models: ``Div(x, 255) -> Sub(mean) -> Div(std)``, exactly ``(x / 255 - mean) / std`` as evaluation
  and export compute it (float32, per channel);
* uint8 NHWC models (``--input uint8-nhwc``, whose graph already normalises): a ``Transpose`` to NHWC in front;
  the graph's first ``Cast`` to float then receives float pixels, which are whole numbers 0..255 just as the
  uint8 ones were.

The new input keeps the original input's name and batch dimension; the metadata says what it takes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from toolchain.errors import BadInputError
from toolchain.fileio import write_atomic
from toolchain.handoff.model import ModelInfo

INPUT_CONTRACT = "float32 RGB NCHW on the 0..255 scale (nvinfer: net-scale-factor=1, offsets 0); normalised in the graph"


def prelude_nodes(info: ModelInfo, raw: str, normalised: str) -> tuple[list, list]:
    """``(nodes, initializers)`` turning the float 0..255 NCHW tensor ``raw`` into what the model's input took."""
    from onnx import helper, numpy_helper

    if info.layout == "uint8-nhwc":
        return [helper.make_node("Transpose", [raw], [normalised], perm=[0, 2, 3, 1], name="handoff_nchw_to_nhwc")], []
    shape = (1, 3, 1, 1)
    constants = [
        numpy_helper.from_array(np.array(255.0, dtype=np.float32), "handoff_255"),
        numpy_helper.from_array(np.asarray(info.mean, dtype=np.float32).reshape(shape), "handoff_mean"),
        numpy_helper.from_array(np.asarray(info.std, dtype=np.float32).reshape(shape), "handoff_std"),
    ]
    nodes = [
        helper.make_node("Div", [raw, "handoff_255"], ["handoff_unit"], name="handoff_div_255"),
        helper.make_node("Sub", ["handoff_unit", "handoff_mean"], ["handoff_centred"], name="handoff_sub_mean"),
        helper.make_node("Div", ["handoff_centred", "handoff_std"], [normalised], name="handoff_div_std"),
    ]
    return nodes, constants


def write_normalising_onnx(source: Path, info: ModelInfo, out: Path) -> Path:
    """Write ``source`` with its normalisation in the graph (see the module docstring) to ``out``.

    Raises:
        BadInputError: A uint8 model whose input feeds something other than a Cast to float (the graph would then
            see float pixels where it expects uint8).
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(source), load_external_data=False)
    graph = model.graph
    name = info.input.name
    internal = f"{name}_handoff_model_input"
    consumers = [node for node in graph.node if name in node.input]
    if info.layout == "uint8-nhwc":
        casts_to_float = all(node.op_type == "Cast" and any(a.name == "to" and a.i == TensorProto.FLOAT for a in node.attribute)
                             for node in consumers)
        if not consumers or not casts_to_float:
            raise BadInputError(f"{source.name}: its uint8 input {name} does not only feed Casts to float, so it cannot "
                                "take float pixels; hand off a float-nchw export (`toolchain export --input float-nchw`)")
    for node in consumers:
        for i, value in enumerate(node.input):
            if value == name:
                node.input[i] = internal
    nodes, constants = prelude_nodes(info, name, internal)
    for position, node in enumerate(nodes):
        graph.node.insert(position, node)
    graph.initializer.extend(constants)
    original = next(i for i in graph.input if i.name == name)
    batch = original.type.tensor_type.shape.dim[0]
    first = batch.dim_param or batch.dim_value
    new_input = helper.make_tensor_value_info(name, TensorProto.FLOAT, [first, 3, info.size, info.size])
    index = list(graph.input).index(original)
    graph.input.remove(original)
    graph.input.insert(index, new_input)
    entry = next((p for p in model.metadata_props if p.key == "input_layout"), None)
    if entry is not None:
        entry.value = "float-nchw-0-255"
    model.metadata_props.add(key="handoff_input", value=INPUT_CONTRACT)
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:  # pragma: no cover - a bug here
        raise BadInputError(f"the normalising graph derived from {source.name} failed onnx.checker: {exc}") from exc
    write_atomic(out, model.SerializeToString(deterministic=True))
    return out


def write_prelude_onnx(info: ModelInfo, out: Path) -> Path:
    """A graph of the prelude alone (float 0..255 NCHW in, the model's input out), to measure what it computes."""
    import onnx
    from onnx import TensorProto, helper

    nodes, constants = prelude_nodes(info, "pixels", "model_input")
    out_type = TensorProto.FLOAT
    out_shape = [-1, info.size, info.size, 3] if info.layout == "uint8-nhwc" else [-1, 3, info.size, info.size]
    graph = helper.make_graph(
        nodes, "handoff_prelude", [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["n", 3, info.size, info.size])],
        [helper.make_tensor_value_info("model_input", out_type, ["n", *out_shape[1:]])], initializer=constants,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="toolchain")
    model.ir_version = 7  # what opset 13 needs; any ONNX Runtime the toolchain installs reads it
    onnx.checker.check_model(model)
    write_atomic(out, model.SerializeToString(deterministic=True))
    return out
