"""The Gst-nvinfer ``[property]`` config of a classifier, and its labels file.

Settings that matter for a 2-class (car/truck) classifier, and why (the probabilities must not collapse to 1.0):

* ``output-blob-names`` names the Softmax output (``probabilities``): nvinfer's classifier parser reads each value
  as a probability and reports the largest above ``classifier-threshold``, with that value as the confidence.
* ``net-scale-factor``/``offsets`` reproduce the model's normalisation (in the graph: 1 and 0). With nvinfer's
  defaults (scale 1, no offsets) a model trained on normalised pixels sees 0..255 values, its logits blow up and
  the softmax returns exactly 1.0 for one class on every object: the classic "2-class ONNX always says
  class 0 at 1.0" (checked numerically by :mod:`toolchain.handoff.numerics`).
* ``classifier-threshold``: the top probability of 2 classes is at least 0.5, and nvinfer keeps it only when it
  is strictly above the threshold; 0.5 labels every object except exact ties, a higher value drops unsure ones.
  It must stay below 1.0.
* ``output-tensor-meta=1`` (``--tensor-meta``) attaches the whole probability vector to each object, for
  applications that want both probabilities rather than the label; it does not change the label.
* In FP16 (``network-mode=2``) TensorRT may run the softmax in half precision: top probabilities above about
  0.9998 then read as 1.0. The argmax is unaffected.

The labels file of a classifier is one line per output layer, its class names separated by ``;`` (nvinfer splits
each line at ``;``); a detector's is one name per line: ``car;truck`` is right here, two lines would be wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from toolchain.handoff.preprocessing import format_number

NETWORK_MODES = {"fp32": 0, "int8": 1, "fp16": 2}
PROCESS_MODES = {"primary": 1, "secondary": 2}
LABELS_FILE = "labels.txt"


def config_file_name(mode: str) -> str:
    """``config_infer_primary.txt`` / ``config_infer_secondary.txt``, as DeepStream's samples name them."""
    return f"config_infer_{mode}.txt"


@dataclass(frozen=True, kw_only=True)
class NvinferConfig:
    """Everything a classifier's ``[property]`` group says.

    Attributes:
        model_key: ``onnx-file`` (DeepStream builds the engine on the unit) or ``model-engine-file``.
        model_file: The model's path, relative to the config (nvinfer resolves it against the config's folder).
        labels_file: The labels file, relative to the config.
        int8_calib_file: A calibration cache, for an INT8 (Q/DQ) ONNX that DeepStream builds itself.
        precision: fp32, fp16 or int8 (``network-mode``).
        mode: primary or secondary (``process-mode``).
        batch_size: Frames (primary) or objects (secondary) per inference.
        gie_unique_id: This element's id.
        operate_on_gie_id: Secondary: the detector whose objects it classifies.
        operate_on_class_ids: Secondary: which of the detector's classes (empty: all).
        infer_dims: ``(c, h, w)`` of the input.
        net_scale_factor, offsets: Preprocessing.
        output_blob: The class-probability output.
        classifier_threshold: Lowest top probability that still labels an object (exclusive).
        tensor_meta: ``output-tensor-meta``.
        dla_core: The DLA core a DLA engine was built for.
        comments: Lines written at the top (where it came from, what was checked).
    """

    model_key: str
    model_file: str
    labels_file: str = LABELS_FILE
    int8_calib_file: str | None = None
    precision: str
    mode: str = "primary"
    batch_size: int = 1
    gie_unique_id: int = 1
    operate_on_gie_id: int = 1
    operate_on_class_ids: tuple[int, ...] = ()
    infer_dims: tuple[int, int, int]
    net_scale_factor: float
    offsets: tuple[float, ...]
    output_blob: str
    classifier_threshold: float = 0.5
    tensor_meta: bool = False
    dla_core: int | None = None
    comments: tuple[str, ...] = ()

    def properties(self) -> list[tuple[str, str]]:
        """``(key, value)`` pairs in the order written."""
        items = [("gpu-id", "0"), ("gie-unique-id", str(self.gie_unique_id)), (self.model_key, self.model_file)]
        if self.int8_calib_file:
            items.append(("int8-calib-file", self.int8_calib_file))
        items += [
            ("labelfile-path", self.labels_file),
            ("batch-size", str(self.batch_size)),
            ("network-mode", str(NETWORK_MODES[self.precision])),
            ("network-type", "1"),
            ("process-mode", str(PROCESS_MODES[self.mode])),
            ("model-color-format", "0"),  # RGB: what the model was trained on
            ("infer-dims", ";".join(map(str, self.infer_dims))),
            ("net-scale-factor", format_number(self.net_scale_factor)),
            ("offsets", ";".join(format_number(o) for o in self.offsets)),
            ("maintain-aspect-ratio", "0"),  # training resized whole images to a square, not letterboxed
            ("scaling-filter", "1"),  # bilinear, nearest to the antialiased bilinear resize of training
            ("output-blob-names", self.output_blob),
            ("classifier-threshold", format_number(self.classifier_threshold)),
            ("output-tensor-meta", "1" if self.tensor_meta else "0"),
        ]
        if self.mode == "secondary":
            items.append(("operate-on-gie-id", str(self.operate_on_gie_id)))
            if self.operate_on_class_ids:
                items.append(("operate-on-class-ids", ";".join(map(str, self.operate_on_class_ids))))
        if self.dla_core is not None:
            items += [("enable-dla", "1"), ("use-dla-core", str(self.dla_core))]
        return items

    def render(self) -> str:
        lines = [f"# {line}" if line else "#" for line in self.comments]
        lines += ["[property]", *(f"{key}={value}" for key, value in self.properties())]
        return "\n".join(lines) + "\n"


def labels_text(classes: tuple[str, ...]) -> str:
    """A classifier's labels file: one line, the class names in output order separated by ``;``."""
    bad = [c for c in classes if ";" in c or "\n" in c]
    if bad:
        from toolchain.errors import BadInputError

        raise BadInputError(f"class names {bad} contain ';' or a line break, which nvinfer's labels file cannot hold")
    return ";".join(classes) + "\n"


def read_labels(path: Path) -> list[list[str]]:
    """A labels file as nvinfer reads it: per non-empty line, the names between ``;``."""
    return [line.split(";") for line in path.read_text().splitlines() if line]
