"""Static post-training INT8 quantization of exported ONNX models to symmetric Q/DQ (for TensorRT).

``quantize_model(workspace, QuantizeConfig(onnx=...))`` calibrates on the train split, checks the
INT8 accuracy against FP32 on the test split (``max_drop`` gate, exit 3) and registers the result.
onnx and torch are imported only when a model is quantized.
"""

from toolchain.quantize.static import (
    ARTIFACT_TYPE,
    METHODS,
    CalibrationReader,
    QuantizeConfig,
    QuantizeResult,
    check_symmetric,
    quantize_model,
    quantize_onnx,
    resolve_keep_float,
)

__all__ = [
    "ARTIFACT_TYPE",
    "METHODS",
    "CalibrationReader",
    "QuantizeConfig",
    "QuantizeResult",
    "check_symmetric",
    "quantize_model",
    "quantize_onnx",
    "resolve_keep_float",
]
