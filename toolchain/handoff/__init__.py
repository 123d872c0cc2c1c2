"""Hand-off to NVIDIA's video stack: DeepStream nvinfer configs and Triton model repositories from any build.

``toolchain handoff`` (:func:`handoff`) and the package step (:func:`write_deepstream_files`) use the same
writers; every value is derived from the model's own metadata and tensors and checked after it is written.
Counting lines become an nvdsanalytics config beside the nvinfer one (:mod:`toolchain.handoff.nvdsanalytics`).
"""

from toolchain.handoff.deepstream_files import DeepStreamHandoff, DeepStreamOptions
from toolchain.handoff.nvdsanalytics import AnalyticsOptions
from toolchain.handoff.service import FORMATS, HandoffConfig, HandoffResult, handoff, write_deepstream_files

__all__ = ["FORMATS", "AnalyticsOptions", "DeepStreamHandoff", "DeepStreamOptions", "HandoffConfig", "HandoffResult",
           "handoff", "write_deepstream_files"]
