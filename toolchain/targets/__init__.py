"""Hardware targets: one TOML profile per roadside device + software stack (TensorRT on Jetson,
ONNX Runtime on CPU), loaded and validated by :mod:`toolchain.targets.profile`.

Standard library only, so the roadside runtime can read a target without build-time dependencies.
"""

from toolchain.targets.profile import (
    ARCHITECTURES,
    DEFAULT_TARGET,
    KINDS,
    PRECISIONS,
    TARGETS_ENV,
    Target,
    check_opset,
    list_targets,
    load_target,
    max_opset_for,
    parse_target,
)

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_TARGET",
    "KINDS",
    "PRECISIONS",
    "TARGETS_ENV",
    "Target",
    "check_opset",
    "list_targets",
    "load_target",
    "max_opset_for",
    "parse_target",
]
