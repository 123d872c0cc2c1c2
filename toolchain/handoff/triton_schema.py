"""Triton's own config schema (``model_config.proto`` as compiled in ``tritonclient``) and the repository check.

``tritonclient`` (PyPI, no extra) ships ``tritonclient/grpc/model_config_pb2.py``, but importing it through the
package runs ``tritonclient/grpc/__init__.py``, which needs grpcio (``tritonclient[grpc]``, whose protobuf pin
would downgrade the one onnx uses). The generated module itself needs only protobuf, so it is loaded from its
file under a private name. Parsing uses ``google.protobuf.text_format``: an unknown field, a wrong enum value or
a malformed file is a parse error, exactly as Triton would refuse the file.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from toolchain.errors import BadInputError, MissingEnvironmentError
from toolchain.handoff.model import ModelInfo, Tensor
from toolchain.handoff.triton import CONFIG_FILE, PLATFORMS, VERSION

_MODULE = "toolchain_handoff_triton_model_config_pb2"
_NUMPY = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16, "TYPE_UINT8": np.uint8, "TYPE_INT8": np.int8,
          "TYPE_INT32": np.int32, "TYPE_INT64": np.int64, "TYPE_FP64": np.float64, "TYPE_BOOL": np.bool_}


@functools.lru_cache(maxsize=1)
def model_config_pb2() -> ModuleType:
    """tritonclient's ``model_config_pb2`` module.

    Raises:
        MissingEnvironmentError: tritonclient (or a protobuf new enough for its generated code) is not installed.
    """
    install = "pip install 'toolchain[handoff]'"
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        raise MissingEnvironmentError(f"tritonclient is not installed; Triton configs are checked with its schema. "
                                      f"Install it with: {install}")
    path = Path(next(iter(spec.submodule_search_locations))) / "grpc" / "model_config_pb2.py"
    if not path.is_file():
        raise MissingEnvironmentError(f"this tritonclient has no grpc/model_config_pb2.py; reinstall it: {install}")
    loader_spec = importlib.util.spec_from_file_location(_MODULE, path)
    assert loader_spec is not None and loader_spec.loader is not None
    module = importlib.util.module_from_spec(loader_spec)
    try:
        loader_spec.loader.exec_module(module)
    except ImportError as exc:
        raise MissingEnvironmentError(f"tritonclient's schema needs protobuf ({exc}); {install}") from exc
    except Exception as exc:
        raise MissingEnvironmentError(f"tritonclient's schema does not load with this protobuf ({exc}); upgrade it: "
                                      "pip install -U protobuf") from exc
    return module


def parse_config(path: Path) -> Any:
    """``config.pbtxt`` parsed into Triton's ``inference.ModelConfig``.

    Raises:
        BadInputError: The file does not parse with Triton's schema.
    """
    from google.protobuf import text_format

    pb2 = model_config_pb2()
    try:
        return text_format.Parse(path.read_text(), pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise BadInputError(f"{path} does not parse with Triton's model_config schema: {exc}") from exc


def check_repository(model_dir: Path, info: ModelInfo, *, name: str, kind: str, max_profile_batch: int | None,
                     compute_capability: str = "") -> Any:
    """Check ``REPO/NAME`` against the model: layout, platform, tensors, batching, labels, instances.

    Args:
        model_dir: ``REPO/NAME`` (or the folder that becomes it).
        name: ``NAME``: Triton requires the config's name to be its folder's.
        info: The model (from the ONNX the engine or artifact came from).
        kind: ``gpu`` or ``cpu`` (the target's instance kind).
        max_profile_batch: The engine's largest profile batch (TensorRT), which ``max_batch_size`` may not exceed.
        compute_capability: A plan's compute capability, which ``cc_model_filenames`` must map to it.

    Returns:
        The parsed ``ModelConfig``.

    Raises:
        BadInputError: Every disagreement, listed.
    """
    pb2 = model_config_pb2()
    config = parse_config(model_dir / CONFIG_FILE)
    problems: list[str] = []
    if config.name != name:
        problems.append(f"name {config.name!r} is not the folder's name {name!r} (Triton requires them equal)")
    files = {platform: file for platform, file in PLATFORMS.values()}
    if config.platform not in files:
        problems.append(f"platform {config.platform!r} is not one of {', '.join(files)}")
    elif not (model_dir / VERSION / files[config.platform]).is_file():
        problems.append(f"no {VERSION}/{files[config.platform]} for platform {config.platform}")
    batch = config.max_batch_size
    if batch < 0:
        problems.append("max_batch_size is negative")
    _check_tensors(problems, "input", list(config.input), [info.input], batch, pb2)
    _check_tensors(problems, "output", list(config.output), list(info.outputs), batch, pb2)
    if batch > 0 and not info.input.dynamic_batch:
        problems.append(f"max_batch_size {batch} for a model with a fixed batch of {info.input.shape[0]} (must be 0)")
    if batch == 0 and info.input.dynamic_batch:
        problems.append("max_batch_size 0 for a dynamic-batch model: Triton would send no batch dimension")
    if max_profile_batch is not None and batch > max_profile_batch:
        problems.append(f"max_batch_size {batch} exceeds the engine's profile max {max_profile_batch}")
    if config.HasField("dynamic_batching") != (batch > 0):
        problems.append("dynamic_batching must be set exactly when max_batch_size > 0")
    expected_kind = pb2.ModelInstanceGroup.Kind.Value("KIND_GPU" if kind == "gpu" else "KIND_CPU")
    if not config.instance_group or any(g.kind != expected_kind for g in config.instance_group):
        problems.append(f"instance_group must be {pb2.ModelInstanceGroup.Kind.Name(expected_kind)} for this target")
    if compute_capability and dict(config.cc_model_filenames) != {compute_capability: files["tensorrt_plan"]}:
        problems.append(f"cc_model_filenames must map {compute_capability} to {files['tensorrt_plan']}")
    labelled = [o for o in config.output if o.label_filename]
    if [o.name for o in labelled] != [info.output.name]:
        problems.append(f"exactly the class output {info.output.name} needs a label_filename")
    for output in labelled:
        labels_path = model_dir / output.label_filename
        labels = labels_path.read_text().splitlines() if labels_path.is_file() else None
        if labels != list(info.classes):
            problems.append(f"{output.label_filename} must list {list(info.classes)} one per line, has {labels}")
    if problems:
        raise BadInputError(f"{model_dir / CONFIG_FILE} does not match the model: " + "; ".join(problems))
    return config


def _check_tensors(problems: list[str], group: str, declared: list[Any], actual: list[Tensor], batch: int,
                   pb2: ModuleType) -> None:
    by_name = {t.name: t for t in actual}
    if sorted(d.name for d in declared) != sorted(by_name):
        problems.append(f"{group}s {[d.name for d in declared]} are not the model's {sorted(by_name)}")
        return
    for item in declared:
        tensor = by_name[item.name]
        if pb2.DataType.Name(item.data_type) != tensor.triton_type:
            problems.append(f"{group} {item.name} is {pb2.DataType.Name(item.data_type)}, the model's is {tensor.triton_type}")
        expected = list(tensor.shape[1:]) if batch > 0 else list(tensor.shape)
        if list(item.dims) != expected:
            problems.append(f"{group} {item.name} dims {list(item.dims)}, the model's are {expected}")


def run_repository(model_dir: Path, config: Any, feeds: dict[str, np.ndarray]) -> dict[int, np.ndarray]:
    """Run ``REPO/NAME/1/model.onnx`` with ONNX Runtime at the batch sizes the config declares (1 and
    ``max_batch_size``; the declared full shape when it is 0), shaped and typed by the config alone.

    Args:
        feeds: Per input, samples in the model's own layout (at least ``max_batch_size`` of them).

    Returns:
        Batch size -> the first output.
    """
    import onnxruntime as ort

    pb2 = model_config_pb2()
    session = ort.InferenceSession(str(model_dir / VERSION / "model.onnx"), providers=["CPUExecutionProvider"])
    sizes = sorted({1, config.max_batch_size}) if config.max_batch_size > 0 else [None]
    results = {}
    for size in sizes:
        inputs = {}
        for item in config.input:
            shape = [size, *item.dims] if size else list(item.dims)
            dtype = _NUMPY[pb2.DataType.Name(item.data_type)]
            sample = feeds[item.name][: shape[0]].astype(dtype)
            if list(sample.shape) != shape:
                raise BadInputError(f"{item.name}: the samples have shape {list(sample.shape)}, the config declares {shape}")
            inputs[item.name] = sample
        out = session.run(None, inputs)[0]
        declared = config.output[0]
        want = [size, *declared.dims] if size else list(declared.dims)
        if list(out.shape) != want:
            raise BadInputError(f"{config.output[0].name}: ONNX Runtime returned {list(out.shape)}, the config declares {want}")
        results[size or int(shape[0])] = out
    return results
