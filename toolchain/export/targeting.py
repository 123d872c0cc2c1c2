"""Fitting an export to a hardware target: opset, input layout, and operators its parser accepts."""

from __future__ import annotations

from collections.abc import Iterable

from toolchain.errors import BadInputError, UsageError
from toolchain.targets.profile import Target, check_opset, load_target, max_opset_for

DEFAULT_OPSET = 17

# Operators that TensorRT's ONNX parser has supported since 8.0 (onnx-tensorrt operators.md),
# limited to what classifiers like ours use. Conservative: an op missing here is refused for
# TensorRT targets rather than discovered on the roadside unit.
TENSORRT_OPERATORS = frozenset({
    "Add", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat", "Constant", "Conv", "DequantizeLinear",
    "Div", "Flatten", "Gather", "Gemm", "GlobalAveragePool", "HardSigmoid", "HardSwish", "Identity", "LeakyRelu",
    "MatMul", "MaxPool", "Mul", "Pad", "Pow", "QuantizeLinear", "ReduceMean", "Relu", "Reshape", "Resize", "Shape",
    "Sigmoid", "Slice", "Softmax", "Sqrt", "Squeeze", "Sub", "Tanh", "Transpose", "Unsqueeze",
})


def plan_export(target_name: str | None, opset: int | None, layout: str) -> tuple[Target | None, int]:
    """The target (if any) and the opset to export at: the user's, checked, or the target's best."""
    if target_name is None:
        return None, opset or DEFAULT_OPSET
    target = load_target(target_name)
    chosen = opset or min(DEFAULT_OPSET, max_opset_for(target))
    check_opset(target, chosen)
    if layout == "uint8-nhwc" and not target.uint8_input:
        raise UsageError(
            f"target {target.name} ({target.stack}) does not accept a uint8 network input; export with --input float-nchw"
        )
    return target, chosen


def check_operators(target: Target | None, operators: Iterable[str]) -> None:
    """Refuse a graph whose operators the target's TensorRT parser may not accept."""
    if target is None or not target.is_tensorrt:
        return
    unsupported = sorted(set(operators) - TENSORRT_OPERATORS)
    if unsupported:
        raise BadInputError(
            f"the exported graph uses {', '.join(unsupported)}, which target {target.name} ({target.stack}) may not "
            "parse; try a lower --opset (older opsets decompose some ops) or another recipe"
        )
