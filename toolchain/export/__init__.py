"""``toolchain export``: registered torch model -> checked, simplified ONNX with a numeric parity gate."""

from toolchain.export.onnx_export import (
    BATCH_MODES,
    INPUT_LAYOUTS,
    INPUT_NAME,
    LOGITS_NAME,
    MAX_OPSET,
    MIN_OPSET,
    OUTPUT_NAME,
    ExportConfig,
    ExportResult,
    ParityError,
    export_model,
    read_metadata,
)
from toolchain.export.parity import REL_FLOOR, ParityReport, check_parity

__all__ = [
    "BATCH_MODES",
    "INPUT_LAYOUTS",
    "INPUT_NAME",
    "LOGITS_NAME",
    "MAX_OPSET",
    "MIN_OPSET",
    "OUTPUT_NAME",
    "REL_FLOOR",
    "ExportConfig",
    "ExportResult",
    "ParityError",
    "ParityReport",
    "check_parity",
    "export_model",
    "read_metadata",
]
