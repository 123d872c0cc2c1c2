"""The documented keys of a Gst-nvinfer config's ``[property]`` group, their value types, and a checker.

The table follows NVIDIA's Gst-nvinfer documentation ("Gst-nvinfer File Configuration Specifications") and the
key names its property parser defines (``gstnvinfer_property_parser.h``), read through how that parser reads each
key from the GLib key file: ``g_key_file_get_integer`` / ``_double`` / ``_boolean`` / ``_string`` and their
``_list`` forms (lists separated by ``;``; booleans ``1``/``0``/``true``/``false``). A key the parser does not know
is only warned about by nvinfer ("Unknown key"), then ignored: a misspelt key silently does nothing, which is
why a generated config is checked against this table. Keys for detectors, segmentation and other model formats
are listed so the checker knows them; a classifier hand-off uses a few.
"""

from __future__ import annotations

import configparser
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolchain.errors import BadInputError

INT, FLOAT, BOOL, STRING, PATH, INT_LIST, FLOAT_LIST, STRING_LIST = (
    "int", "float", "bool", "string", "path", "int-list", "float-list", "string-list")


@dataclass(frozen=True, kw_only=True)
class Property:
    """One ``[property]`` key: its value type and the values nvinfer accepts (None: any of the type)."""

    type: str
    choices: tuple[int, ...] | None = None
    minimum: float | None = None
    length: int | None = None  # exact list length
    max_length: int | None = None


PROPERTIES: dict[str, Property] = {
    # element and runtime
    "gie-unique-id": Property(type=INT, minimum=1),
    "process-mode": Property(type=INT, choices=(1, 2)),  # 1 primary (full frame), 2 secondary (objects)
    "interval": Property(type=INT, minimum=0),
    "labelfile-path": Property(type=PATH),
    "gpu-id": Property(type=INT, minimum=0),
    "secondary-reinfer-interval": Property(type=INT, minimum=0),
    "output-tensor-meta": Property(type=BOOL),
    "disable-output-host-copy": Property(type=BOOL),
    "enable-dla": Property(type=BOOL),
    "use-dla-core": Property(type=INT, minimum=0),
    "batch-size": Property(type=INT, minimum=1),
    "tensor-meta-pool-size": Property(type=INT, minimum=1),
    "network-mode": Property(type=INT, choices=(0, 1, 2, 3)),  # 0 FP32, 1 INT8, 2 FP16, 3 best
    "model-engine-file": Property(type=PATH),
    "int8-calib-file": Property(type=PATH),
    "workspace-size": Property(type=INT, minimum=0),
    # model
    "output-blob-names": Property(type=STRING_LIST),
    "is-classifier": Property(type=BOOL),  # legacy: network-type
    "network-type": Property(type=INT, choices=(0, 1, 2, 3, 100)),  # detector, classifier, segmentation, instance seg., other
    "force-implicit-batch-dim": Property(type=BOOL),
    "infer-dims": Property(type=INT_LIST, length=3),  # c;h;w
    "output-io-formats": Property(type=STRING),
    "layer-device-precision": Property(type=STRING),
    "onnx-file": Property(type=PATH),
    "model-file": Property(type=PATH),
    "proto-file": Property(type=PATH),
    "uff-file": Property(type=PATH),
    "uff-input-order": Property(type=INT, choices=(0, 1)),
    "input-dims": Property(type=INT_LIST, length=4),  # legacy: uff-input-dims
    "uff-input-dims": Property(type=INT_LIST, length=4),
    "uff-input-blob-name": Property(type=STRING),
    "tlt-encoded-model": Property(type=PATH),
    "tlt-model-key": Property(type=STRING),
    # preprocessing
    "model-color-format": Property(type=INT, choices=(0, 1, 2)),  # 0 RGB, 1 BGR, 2 GRAY
    "net-scale-factor": Property(type=FLOAT),
    "offsets": Property(type=FLOAT_LIST, max_length=4),
    "mean-file": Property(type=PATH),
    "maintain-aspect-ratio": Property(type=BOOL),
    "symmetric-padding": Property(type=BOOL),
    "scaling-filter": Property(type=INT, minimum=0),
    "scaling-compute-hw": Property(type=INT, choices=(0, 1, 2)),
    "network-input-order": Property(type=INT, choices=(0, 1)),  # 0 NCHW, 1 NHWC
    "input-tensor-from-meta": Property(type=BOOL),
    "crop-objects-to-roi-boundary": Property(type=BOOL),
    # custom code
    "custom-lib-path": Property(type=PATH),
    "parse-bbox-func-name": Property(type=STRING),
    "parse-bbox-instance-mask-func-name": Property(type=STRING),
    "engine-create-func-name": Property(type=STRING),
    "parse-classifier-func-name": Property(type=STRING),
    "custom-network-config": Property(type=STRING),
    "parse-func": Property(type=INT, minimum=0),
    # detectors
    "num-detected-classes": Property(type=INT, minimum=0),
    "enable-dbscan": Property(type=BOOL),
    "cluster-mode": Property(type=INT, choices=(0, 1, 2, 3, 4)),
    "filter-out-class-ids": Property(type=INT_LIST),
    # classifiers
    "classifier-type": Property(type=STRING),
    "classifier-threshold": Property(type=FLOAT, minimum=0.0),
    "classifier-async-mode": Property(type=BOOL),
    # segmentation
    "segmentation-threshold": Property(type=FLOAT, minimum=0.0),
    "segmentation-output-order": Property(type=INT, choices=(0, 1)),
    "output-instance-mask": Property(type=BOOL),
    # secondary mode: which objects
    "input-object-min-width": Property(type=INT, minimum=0),
    "input-object-min-height": Property(type=INT, minimum=0),
    "input-object-max-width": Property(type=INT, minimum=0),
    "input-object-max-height": Property(type=INT, minimum=0),
    "operate-on-gie-id": Property(type=INT, minimum=-1),
    "operate-on-class-ids": Property(type=INT_LIST),
}
"""Every documented ``[property]`` key -> how nvinfer reads it."""

_INT = re.compile(r"^[+-]?\d+$")


def _parse_value(key: str, raw: str, spec: Property) -> Any:
    """The value of ``key`` as nvinfer's key-file reader would read it; ValueError when it cannot."""
    text = raw.strip()
    if spec.type in (INT_LIST, FLOAT_LIST, STRING_LIST):
        items = [i.strip() for i in text.split(";")]
        if items and items[-1] == "":
            items.pop()  # GLib allows a trailing separator
        if spec.type == STRING_LIST:
            return items
        scalar = Property(type=INT if spec.type == INT_LIST else FLOAT)
        values = [_parse_value(key, i, scalar) for i in items]
        if spec.length is not None and len(values) != spec.length:
            raise ValueError(f"needs {spec.length} values separated by ';', has {len(values)}")
        if spec.max_length is not None and len(values) > spec.max_length:
            raise ValueError(f"takes at most {spec.max_length} values")
        return values
    if spec.type == INT:
        if not _INT.match(text):
            raise ValueError(f"{text!r} is not an integer")
        value: Any = int(text)
    elif spec.type == FLOAT:
        value = float(text)  # ValueError for text that is not a number
    elif spec.type == BOOL:
        if text not in ("1", "0", "true", "false"):
            raise ValueError(f"{text!r} is not a key-file boolean (1, 0, true or false)")
        return text in ("1", "true")
    else:
        if not text:
            raise ValueError("is empty")
        return text
    if spec.choices is not None and value not in spec.choices:
        raise ValueError(f"{value} is not one of {', '.join(map(str, spec.choices))}")
    if spec.minimum is not None and value < spec.minimum:
        raise ValueError(f"{value} is below {spec.minimum:g}")
    return value


def read_config(text: str) -> tuple[dict[str, Any], list[str]]:
    """``(properties, problems)``: the ``[property]`` group of a config, typed as nvinfer reads it, and every key or
    value it would ignore or refuse."""
    parser = configparser.RawConfigParser(delimiters=("=",), comment_prefixes=("#",), inline_comment_prefixes=None,
                                          strict=True, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive in a key file
    try:
        parser.read_string(text)
    except configparser.Error as exc:
        return {}, [f"not a key file: {exc}"]
    if not parser.has_section("property"):
        return {}, ["no [property] group (nvinfer requires it)"]
    values: dict[str, Any] = {}
    problems = []
    for key, raw in parser.items("property"):
        spec = PROPERTIES.get(key)
        if spec is None:
            problems.append(f"{key}: not a documented Gst-nvinfer property (nvinfer ignores it)")
            continue
        try:
            values[key] = _parse_value(key, raw, spec)
        except ValueError as exc:
            problems.append(f"{key}={raw}: {exc}")
    return values, problems


def check_classifier_config(path: Path) -> dict[str, Any]:
    """Check a generated classifier config: documented keys and types, what a classifier needs, files present.

    Returns:
        The typed ``[property]`` values.

    Raises:
        BadInputError: Any problem (listed); a generated config that fails is a bug in the generator.
    """
    values, problems = read_config(path.read_text())
    if not problems:
        problems += _classifier_problems(values, path.parent)
    if problems:
        raise BadInputError(f"{path} is not a valid Gst-nvinfer classifier config: " + "; ".join(problems))
    return values


def _classifier_problems(values: dict[str, Any], folder: Path) -> list[str]:
    problems = []
    if values.get("network-type") != 1:
        problems.append("network-type must be 1 (classifier)")
    if not ({"onnx-file", "model-engine-file"} & set(values)):
        problems.append("neither onnx-file nor model-engine-file names a model")
    for key, spec in PROPERTIES.items():
        if spec.type == PATH and key in values:
            target = Path(values[key])
            target = target if target.is_absolute() else folder / target  # nvinfer resolves against the config's folder
            if not target.is_file():
                problems.append(f"{key}={values[key]}: no such file next to the config")
    threshold = values.get("classifier-threshold")
    if threshold is not None and threshold >= 1.0:
        problems.append("classifier-threshold >= 1 labels nothing (a probability is at most 1 and must exceed it)")
    offsets = values.get("offsets")
    colours = 1 if values.get("model-color-format") == 2 else 3
    if offsets is not None and len(offsets) != colours:
        problems.append(f"offsets has {len(offsets)} values for {colours} channel(s)")
    dims = values.get("infer-dims")
    if dims is not None and dims[0] != colours:
        problems.append(f"infer-dims {dims} does not start with the {colours} channel(s) of model-color-format")
    if values.get("process-mode") == 2 and values.get("operate-on-gie-id") == values.get("gie-unique-id"):
        problems.append("a secondary classifier cannot operate on its own gie-unique-id")
    return problems
