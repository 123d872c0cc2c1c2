"""A TensorRT calibration cache holding an INT8 (Q/DQ) ONNX's own activation scales, for DeepStream.

Why a Q/DQ model needs one at all: DeepStream's engine builder (``nvdsinfer_model_builder.cpp``) sets TensorRT's
INT8 flag for ``network-mode=1`` only when it has an ``int8-calib-file``; without one it logs "INT8 calibration
file not specified. Trying FP16 mode." and builds FP16, and TensorRT does not build an explicitly quantized
(Q/DQ) network without the INT8 flag (NVIDIA/TensorRT#4021). With the flag set, TensorRT uses the Q/DQ scales
and leaves the calibrator unused ("Calibrator won't be used in explicit precision mode", NVIDIA/TensorRT#1837).

So the file only has to exist and be readable, but it is not a dummy: it holds the scales the quantizer chose
for each activation, in TensorRT's cache format (a ``TRT-<version>-EntropyCalibration2`` header, then
``tensor: <float32 scale as 8 hex digits, big-endian>`` per line). Unverified on a device (nothing here runs
DeepStream or TensorRT).
"""

from __future__ import annotations

import struct
from pathlib import Path

from toolchain.errors import BadInputError

CACHE_FILE = "calibration.cache"


def tensorrt_version_number(version: str) -> int:
    """``NV_TENSORRT_VERSION`` of a version string: 8.5.2 -> 8502, 10.3.0 -> 100300 (the scheme changed at 9)."""
    parts = [int(p) for p in (version.split(".") + ["0", "0"])[:3] if p.isdigit()] + [0, 0, 0]
    major, minor, patch = parts[:3]
    return major * 10000 + minor * 100 + patch if major >= 9 else major * 1000 + minor * 100 + patch


def activation_scales(path: Path) -> dict[str, float]:
    """Tensor name -> per-tensor scale of every activation a QuantizeLinear quantizes in the ONNX at ``path``."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path), load_external_data=False)
    constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                constants[node.output[0]] = numpy_helper.to_array(value)
    scales: dict[str, float] = {}
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in constants:
            continue  # weights are quantized from initializers: TensorRT reads their scales from the graph
        scale = constants.get(node.input[1])
        if scale is None or scale.size != 1:
            continue  # per-channel activation scales do not fit a per-tensor cache
        scales[node.input[0]] = float(scale.reshape(()))
    return scales


def calibration_cache(path: Path, tensorrt: str) -> str:
    """The cache text for the Q/DQ ONNX at ``path`` and the target's TensorRT version.

    Raises:
        BadInputError: The ONNX quantizes no activation (it is not a Q/DQ INT8 model).
    """
    scales = activation_scales(path)
    if not scales:
        raise BadInputError(f"{path.name} quantizes no activation (no QuantizeLinear on a tensor): it is not an INT8 "
                            "Q/DQ ONNX from `toolchain quantize`")
    lines = [f"TRT-{tensorrt_version_number(tensorrt)}-EntropyCalibration2"]
    lines += [f"{name}: {struct.pack('>f', scale).hex()}" for name, scale in sorted(scales.items())]
    return "\n".join(lines) + "\n"
