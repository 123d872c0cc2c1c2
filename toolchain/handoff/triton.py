"""A Triton model repository entry: ``REPO/NAME/config.pbtxt``, ``REPO/NAME/1/model.{onnx,plan}``, labels.

The config is written as protobuf text by :meth:`TritonConfig.render` (no dependency) and then parsed back with
Triton's own schema (:mod:`toolchain.handoff.triton_schema`) and checked against the model's tensors.

* ``platform``: ``tensorrt_plan`` for a TensorRT engine, ``onnxruntime_onnx`` for ONNX (CPU targets' ONNX
  Runtime artifacts, or an ONNX for a GPU target that has no engine yet).
* ``max_batch_size``: 0 for a fixed-batch model (then ``dims`` are the full shape, batch included); otherwise the
  largest batch (the engine's profile max, or ``--max-batch``) and ``dims`` without the batch dimension.
* ``dynamic_batching`` when the batch is dynamic: Triton then gathers requests into batches.
* ``instance_group``: ``KIND_GPU`` on GPU (Jetson) targets, ``KIND_CPU`` on CPU targets.
* ``cc_model_filenames``: the compute capability (``"8.7"``) a TensorRT plan was built for -> the plan; a plan
  does not load on another GPU architecture.
* ``label_filename`` on the class output: Triton's classification extension reads one label per line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from toolchain.errors import UsageError

PLATFORMS = {"onnx": ("onnxruntime_onnx", "model.onnx"), "plan": ("tensorrt_plan", "model.plan")}
LABELS_FILE = "labels.txt"
CONFIG_FILE = "config.pbtxt"
VERSION = "1"
QUEUE_DELAY_US = 100  # dynamic batching waits at most 0.1 ms for more requests: nothing against a 66 ms frame budget
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True, kw_only=True)
class TritonTensor:
    name: str
    data_type: str
    dims: tuple[int, ...]
    label_filename: str = ""


@dataclass(frozen=True, kw_only=True)
class TritonConfig:
    """What ``config.pbtxt`` says (see the module docstring)."""

    name: str
    platform: str
    max_batch_size: int
    inputs: tuple[TritonTensor, ...]
    outputs: tuple[TritonTensor, ...]
    instance_kind: str
    dynamic_batching: bool = False
    cc_model_filenames: dict[str, str] = field(default_factory=dict)
    comments: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise UsageError(f"--name {self.name!r}: a Triton model name is letters, digits, '_', '.' and '-'")

    @property
    def model_file(self) -> str:
        return next(file for platform, file in PLATFORMS.values() if platform == self.platform)

    def render(self) -> str:
        lines = [f"# {line}" if line else "#" for line in self.comments]
        lines += [f'name: "{self.name}"', f'platform: "{self.platform}"', f"max_batch_size: {self.max_batch_size}"]
        for group, tensors in (("input", self.inputs), ("output", self.outputs)):
            lines.append(f"{group} [")
            for i, tensor in enumerate(tensors):
                lines += ["  {", f'    name: "{tensor.name}"', f"    data_type: {tensor.data_type}",
                          f"    dims: [ {', '.join(map(str, tensor.dims))} ]"]
                if tensor.label_filename:
                    lines.append(f'    label_filename: "{tensor.label_filename}"')
                lines.append("  }," if i < len(tensors) - 1 else "  }")
            lines.append("]")
        if self.dynamic_batching:
            lines += ["dynamic_batching {", f"  max_queue_delay_microseconds: {QUEUE_DELAY_US}", "}"]
        lines += ["instance_group [", "  {", "    count: 1", f"    kind: {self.instance_kind}", "  }", "]"]
        for capability, file in sorted(self.cc_model_filenames.items()):
            lines += ["cc_model_filenames {", f'  key: "{capability}"', f'  value: "{file}"', "}"]
        return "\n".join(lines) + "\n"


def labels_text(classes: tuple[str, ...]) -> str:
    """Triton's label file: one class name per line, in output order."""
    return "".join(f"{c}\n" for c in classes)


def model_name(text: str) -> str:
    """A Triton model name from a record name (``highway-edgenet-onnx-int8`` stays as it is)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "model"
    return cleaned if cleaned[0].isalnum() else f"m{cleaned}"
