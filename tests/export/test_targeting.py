from __future__ import annotations

import pytest

from toolchain.errors import BadInputError, UsageError
from toolchain.export.targeting import DEFAULT_OPSET, check_operators, plan_export
from toolchain.targets.profile import load_target


def test_opset_follows_the_target_unless_given() -> None:
    assert plan_export(None, None, "float-nchw") == (None, DEFAULT_OPSET)
    target, opset = plan_export("jetson-nano", None, "float-nchw")
    assert target is not None and target.name == "jetson-nano" and opset == 13
    assert plan_export("jetson-agx-orin", None, "uint8-nhwc")[1] == DEFAULT_OPSET
    assert plan_export("jetson-nano", 11, "float-nchw")[1] == 11


def test_refusals_say_what_to_do() -> None:
    with pytest.raises(UsageError, match="--opset 13"):
        plan_export("jetson-nano", 17, "float-nchw")
    with pytest.raises(UsageError, match="float-nchw"):
        plan_export("jetson-nano", None, "uint8-nhwc")


def test_operators_outside_the_parser_list_are_refused_for_tensorrt_only() -> None:
    nano = load_target("jetson-nano")
    check_operators(nano, ["Conv", "Relu", "GlobalAveragePool", "Gemm", "Softmax"])
    with pytest.raises(BadInputError, match="NonMaxSuppression"):
        check_operators(nano, ["Conv", "NonMaxSuppression"])
    check_operators(load_target("x86-64-cpu"), ["NonMaxSuppression"])  # ONNX Runtime runs any op
