"""Which activation produces a classifier's output: DeepStream's classifier reads it as probabilities.

Gst-nvinfer's built-in classifier parser (``network-type=1`` without ``parse-classifier-func-name``) takes each
output layer as "an array of probabilities" of ``numClasses`` = the layer's channel count, and reports the class
with the highest value above ``classifier-threshold``, with that value as its confidence. So the output must be a
softmax over the class axis with one value per class:

* a softmax over a single value (a one-unit "binary" head with a softmax) is always 1.0: every object gets class 0
  at probability 1.0;
* a one-unit sigmoid head gives ``numClasses`` = 1: only class 0 can ever be reported, and objects whose
  probability is below the threshold get no label at all;
* raw logits are not probabilities: the reported confidence is unbounded and the threshold compares logits.

:func:`output_activation` finds the operator behind the output (looking through Q/DQ pairs and reshapes);
:func:`require_softmax` refuses anything but a softmax over the class axis.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from toolchain.errors import BadInputError

# Operators that pass values through without changing what they mean (a Q/DQ pair, reshapes).
_PASS_THROUGH = frozenset({"Identity", "DequantizeLinear", "QuantizeLinear", "Reshape", "Flatten", "Squeeze"})


@dataclass(frozen=True, kw_only=True)
class Activation:
    """The operator that makes the output's values.

    Attributes:
        op: Operator type (``Softmax``, ``Sigmoid``, ``Gemm``...).
        node: The node's name (TensorRT names its layer after it).
        axis: The softmax axis, normalised to be non-negative (None for other operators).
    """

    op: str
    node: str
    axis: int | None = None

    def to_json(self) -> dict[str, object]:
        return {"op": self.op, "node": self.node, "axis": self.axis}


def output_activation(path: Path, output: str, rank: int) -> Activation:
    """The operator producing ``output`` (rank ``rank``) in the ONNX at ``path``."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    producers = {name: node for node in model.graph.node for name in node.output}
    opset = next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    name = output
    for _ in range(len(model.graph.node) + 1):
        node = producers.get(name)
        if node is None:
            raise BadInputError(f"{path.name}: no node produces {output}; the output is a graph input or constant")
        if node.op_type in _PASS_THROUGH and node.input:
            name = node.input[0]
            continue
        if node.op_type == "Softmax":
            default = -1 if opset >= 13 else 1  # the default axis changed in opset 13
            axis = next((int(a.i) for a in node.attribute if a.name == "axis"), default)
            return Activation(op="Softmax", node=node.name, axis=axis % rank)
        return Activation(op=node.op_type, node=node.name)
    raise BadInputError(f"{path.name}: the graph behind {output} loops")  # pragma: no cover - ONNX graphs are acyclic


def require_softmax(activation: Activation, output: str, classes: int) -> None:
    """Refuse an output DeepStream's classifier parser would misread (see the module docstring).

    Raises:
        BadInputError: The output is not a softmax over the class axis (axis 1 of ``(batch, classes)``).
    """
    if activation.op != "Softmax":
        raise BadInputError(
            f"output {output} is made by {activation.op} ({activation.node or 'unnamed'}), not a Softmax: nvinfer's "
            "classifier reads each output value as a probability and reports the largest above classifier-threshold, "
            "so logits would give unbounded confidences and a sigmoid head only ever class 0. Export the model with "
            "`toolchain export` (its graph ends in a Softmax over the classes)"
        )
    if activation.axis != 1:
        raise BadInputError(
            f"output {output}'s Softmax runs over axis {activation.axis}, not the class axis 1: over the batch axis "
            f"every value of a one-image batch is 1.0, so each object would get class 0 at probability 1.0 ({classes} "
            "classes); re-export the model"
        )
