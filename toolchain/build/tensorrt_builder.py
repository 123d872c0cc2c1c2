#!/usr/bin/env python3
"""Build a TensorRT engine from an ONNX file, on the device it is for.

Self-contained on purpose: the standard library plus ``tensorrt`` (imported lazily), no toolchain
imports, Python 3.6 syntax (JetPack 4.6's L4T containers ship Python 3.6). The toolchain copies this
file into the target's L4T TensorRT container on the roadside unit and runs::

    python3 tensorrt_builder.py REQUEST.json OUTDIR     # build; paths in the request are relative to it
    python3 tensorrt_builder.py --probe                 # print this machine's TensorRT version and GPU

or, where ``tensorrt`` imports locally, calls :func:`build` in-process.

Request (JSON, made by ``toolchain.build.plan.BuildPlan.request``)::

    {"format": 1, "onnx": "model.onnx", "onnx_sha256": "...", "precision": "fp16",
     "strongly_typed": false, "fp16": true, "int8": false, "dla_core": null, "gpu_fallback": false,
     "workspace_mib": 1024, "profile": {"input": "images", "min": [1,3,224,224], "opt": [...], "max": [...]} | null,
     "timing_cache": "timing.cache" | null, "expect": {"tensorrt": "10.3.0", "compute_capability": "8.7"}}

Outputs in OUTDIR: ``engine.plan`` (the raw serialized engine, no header bytes, so trtexec and
DeepStream load it), ``build.log`` (TensorRT's messages, INFO and above), ``timing.cache`` (the
updated timing cache), ``result.json`` (versions, device, flags, the engine's I/O read back from the
deserialized engine, build time, engine sha256). On failure: ``error.json`` and ``build.log``.
Either way one JSON document on stdout: ``{"result": {...}}`` or ``{"error": {"code", "kind", "message"}}``.

Exit codes: 0 built; 1 TensorRT failed to build or load the engine (see build.log); 2 invalid
request; 4 bad input (missing or altered ONNX, parser errors); 5 wrong environment (no ``tensorrt``,
no GPU, a TensorRT version or GPU compute capability other than the target's, a DLA core the device
lacks). Engines are not portable across TensorRT versions or GPU architectures, which is why a
mismatch is refused instead of building an engine the device cannot load.

The GPU's compute capability is read through the CUDA driver API with ctypes (``libcuda.so.1``:
``cuInit``, ``cuDeviceGetName``, ``cuDeviceGetAttribute`` with ``CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR``
75 / ``_MINOR`` 76), falling back to the runtime API (``libcudart``, ``cudaDeviceGetAttribute``, same
attribute numbers): no pycuda or cuda-python is needed, and both libraries exist on Jetson
(``/usr/lib/aarch64-linux-gnu/tegra``) and in L4T containers started with the NVIDIA runtime.

TensorRT API differences handled (Python API docs of 8.2, 8.5, 8.6 and 10.x):

- network creation: ``EXPLICIT_BATCH`` before 10 (ignored, deprecated, from 10.0);
  ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` (9+) for Q/DQ INT8 when the request says so;
- workspace: ``config.set_memory_pool_limit(MemoryPoolType.WORKSPACE, bytes)`` where it exists
  (8.4+), else ``config.max_workspace_size`` (8.2, removed in 10);
- precision: ``BuilderFlag.FP16`` / ``BuilderFlag.INT8`` (explicit quantization from Q/DQ, no calibrator);
- DLA: ``config.default_device_type = DeviceType.DLA``, ``config.DLA_core``, ``BuilderFlag.GPU_FALLBACK``;
  the device's ``builder.num_DLA_cores`` is checked first;
- ``builder.create_optimization_profile`` / ``profile.set_shape`` / ``config.add_optimization_profile``;
- ``config.create_timing_cache`` / ``set_timing_cache`` / ``get_timing_cache().serialize()``;
- ``builder.build_serialized_network`` then ``Runtime.deserialize_cuda_engine`` to read the engine
  back: ``num_io_tensors`` / ``get_tensor_name`` / ``get_tensor_shape`` (8.5+) or ``num_bindings`` /
  ``get_binding_shape`` (8.2).

UNVERIFIED ON HARDWARE: every TensorRT call path in this file was written against NVIDIA's
documented Python API and has not been run with TensorRT (8.x or 10.x) on any Jetson or GPU by the
toolchain's authors. The request validation, the refusals without ``tensorrt`` and the ctypes CUDA
device query are tested; the tests marked ``tensorrt`` build real engines where TensorRT exists.
"""

import ctypes
import hashlib
import json
import os
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple  # noqa: F401  (used in type comments: Python 3.6 syntax)

REQUEST_FORMAT = 1
ENGINE_NAME = "engine.plan"
LOG_FILE = "build.log"
RESULT_FILE = "result.json"
ERROR_FILE = "error.json"
TIMING_CACHE_FILE = "timing.cache"

EXIT_OK = 0
EXIT_BUILD_FAILED = 1
EXIT_USAGE = 2
EXIT_BAD_INPUT = 4
EXIT_ENVIRONMENT = 5

PRECISIONS = ("fp32", "fp16", "int8")
_REQUEST_KEYS = {
    "format", "onnx", "onnx_sha256", "target", "precision", "strongly_typed", "fp16", "int8", "dla_core",
    "gpu_fallback", "workspace_mib", "profile", "timing_cache", "expect", "key",
}
_REQUIRED_KEYS = ("onnx", "precision", "strongly_typed", "fp16", "int8", "dla_core", "gpu_fallback",
                  "workspace_mib", "profile", "timing_cache", "expect")
_VERSION_RE = re.compile(r"^[0-9]+(\.[0-9]+){0,3}$")
_SM_RE = re.compile(r"^[1-9][0-9]?\.[0-9]$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

# CUDA attribute numbers, identical in the driver (CUdevice_attribute) and runtime (cudaDeviceAttr) APIs.
_ATTR_CC_MAJOR = 75
_ATTR_CC_MINOR = 76

_NOT_PORTABLE = (
    "TensorRT engines are not portable across TensorRT versions or GPU architectures: an engine built here "
    "would not load on the target device. Build on the device itself or in its L4T container "
    "(`toolchain build ... --on ssh://user@unit`), or on a machine with the target's TensorRT version and GPU"
)


class BuilderError(Exception):
    """A refusal or failure with the exit code the command-line form returns.

    Attributes:
        code: Exit code (1 build failed, 2 invalid request, 4 bad input, 5 wrong environment).
        kind: ``build_failed``, ``usage``, ``bad_input`` or ``environment``.
        message: What happened and what to do next.
    """

    _KINDS = {EXIT_BUILD_FAILED: "build_failed", EXIT_USAGE: "usage", EXIT_BAD_INPUT: "bad_input",
              EXIT_ENVIRONMENT: "environment"}

    def __init__(self, code, message):
        # type: (int, str) -> None
        super().__init__(message)
        self.code = code
        self.kind = self._KINDS.get(code, "error")
        self.message = message

    def to_json(self):
        # type: () -> Dict[str, Any]
        return {"error": {"code": self.code, "kind": self.kind, "message": self.message}}


# --------------------------------------------------------------------------- request


def _fail(message):
    # type: (str) -> BuilderError
    return BuilderError(EXIT_USAGE, "invalid build request: " + message)


def _is_int(value):
    # type: (Any) -> bool
    return isinstance(value, int) and not isinstance(value, bool)


def _shape(value, what):
    # type: (Any, str) -> List[int]
    if not isinstance(value, list) or not value or not all(_is_int(d) and d > 0 for d in value):
        raise _fail("profile.%s must be a non-empty list of positive integers, got %r" % (what, value))
    return list(value)


def validate_request(request):
    # type: (Any) -> Dict[str, Any]
    """Check a build request and return a normalised copy.

    Raises:
        BuilderError: (code 2) a missing, unknown or invalid field, or fields that contradict each other.
    """
    if not isinstance(request, dict):
        raise _fail("expected a JSON object, got %s" % type(request).__name__)
    unknown = sorted(set(request) - _REQUEST_KEYS)
    if unknown:
        raise _fail("unknown field(s) %s; this builder reads request format %d (make the request and this "
                    "script from the same toolchain version)" % (", ".join(unknown), REQUEST_FORMAT))
    missing = [k for k in _REQUIRED_KEYS if k not in request]
    if missing:
        raise _fail("missing field(s) %s" % ", ".join(missing))
    if request.get("format", REQUEST_FORMAT) != REQUEST_FORMAT:
        raise _fail("format %r is not %d; use this script from the toolchain that made the request"
                    % (request.get("format"), REQUEST_FORMAT))
    req = dict(request)
    if not isinstance(req["onnx"], str) or not req["onnx"].strip():
        raise _fail("onnx must be the ONNX file name")
    sha = req.get("onnx_sha256")
    if sha is not None and (not isinstance(sha, str) or not _SHA256_RE.match(sha)):
        raise _fail("onnx_sha256 must be a lowercase sha256 hex digest")
    if req["precision"] not in PRECISIONS:
        raise _fail("precision must be one of %s, got %r" % (", ".join(PRECISIONS), req["precision"]))
    for flag in ("strongly_typed", "fp16", "int8", "gpu_fallback"):
        if not isinstance(req[flag], bool):
            raise _fail("%s must be true or false, got %r" % (flag, req[flag]))
    precision = req["precision"]
    if req["strongly_typed"] and (req["fp16"] or req["int8"]):
        raise _fail("a strongly typed network takes its precision from the ONNX: fp16/int8 flags are not allowed with it")
    if req["strongly_typed"] and precision != "int8":
        raise _fail("strongly_typed is for Q/DQ INT8 ONNX (precision int8), not %s" % precision)
    if precision == "fp32" and (req["fp16"] or req["int8"]):
        raise _fail("precision fp32 takes neither the fp16 nor the int8 flag")
    if precision == "fp16" and (not req["fp16"] or req["int8"]):
        raise _fail("precision fp16 takes the fp16 flag and not the int8 flag")
    if precision == "int8" and not (req["int8"] or req["strongly_typed"]):
        raise _fail("precision int8 needs the int8 flag or a strongly typed network (explicit Q/DQ quantization)")
    dla = req["dla_core"]
    if dla is not None:
        if not _is_int(dla) or dla < 0:
            raise _fail("dla_core must be null or a DLA core number (0, 1), got %r" % (dla,))
        if precision == "fp32":
            raise _fail("the DLA runs FP16 and INT8 only; precision fp32 cannot use dla_core")
        if req["strongly_typed"]:
            raise _fail("DLA builds use the int8 + fp16 flags, not a strongly typed network")
    elif req["gpu_fallback"]:
        raise _fail("gpu_fallback applies to DLA builds only (dla_core is null)")
    workspace = req["workspace_mib"]
    if workspace is not None and (not _is_int(workspace) or workspace < 1):
        raise _fail("workspace_mib must be null or a positive integer, got %r" % (workspace,))
    profile = req["profile"]
    if profile is not None:
        if not isinstance(profile, dict) or set(profile) != {"input", "min", "opt", "max"}:
            raise _fail("profile must be null or an object with exactly input, min, opt and max")
        if not isinstance(profile["input"], str) or not profile["input"]:
            raise _fail("profile.input must be the ONNX input name")
        low, opt, high = (_shape(profile[k], k) for k in ("min", "opt", "max"))
        if not len(low) == len(opt) == len(high):
            raise _fail("profile min, opt and max must have the same rank")
        if not all(a <= b <= c for a, b, c in zip(low, opt, high)):
            raise _fail("profile must satisfy min <= opt <= max in every dimension, got %r, %r, %r" % (low, opt, high))
        req["profile"] = {"input": profile["input"], "min": low, "opt": opt, "max": high}
    cache = req["timing_cache"]
    if cache is not None and (not isinstance(cache, str) or not cache.strip()):
        raise _fail("timing_cache must be null or a file name")
    expect = req["expect"]
    if not isinstance(expect, dict) or set(expect) != {"tensorrt", "compute_capability"}:
        raise _fail("expect must be an object with exactly tensorrt and compute_capability")
    if not isinstance(expect["tensorrt"], str) or not _VERSION_RE.match(expect["tensorrt"]):
        raise _fail("expect.tensorrt must be a version such as '10.3.0', got %r" % (expect["tensorrt"],))
    if not isinstance(expect["compute_capability"], str) or not _SM_RE.match(expect["compute_capability"]):
        raise _fail("expect.compute_capability must be 'major.minor' such as '8.7', got %r"
                    % (expect["compute_capability"],))
    return req


# --------------------------------------------------------------------------- environment


def _load_library(names):
    # type: (Tuple[str, ...]) -> Any
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def _cuda_driver_device(index):
    # type: (int) -> Optional[Dict[str, Any]]
    lib = _load_library(("libcuda.so.1", "libcuda.so"))
    if lib is None or lib.cuInit(0) != 0:
        return None
    count = ctypes.c_int(0)
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value <= index:
        return None
    device = ctypes.c_int(0)
    if lib.cuDeviceGet(ctypes.byref(device), index) != 0:
        return None
    name = ctypes.create_string_buffer(256)
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    if (lib.cuDeviceGetName(name, 256, device) != 0
            or lib.cuDeviceGetAttribute(ctypes.byref(major), _ATTR_CC_MAJOR, device) != 0
            or lib.cuDeviceGetAttribute(ctypes.byref(minor), _ATTR_CC_MINOR, device) != 0):
        return None
    total = ctypes.c_size_t(0)
    memory = None
    if hasattr(lib, "cuDeviceTotalMem_v2") and lib.cuDeviceTotalMem_v2(ctypes.byref(total), device) == 0:
        memory = int(total.value) >> 20
    return {"name": name.value.decode("utf-8", "replace"), "compute_capability": "%d.%d" % (major.value, minor.value),
            "total_memory_mib": memory, "count": count.value, "via": "libcuda"}


def _cuda_runtime_device(index):
    # type: (int) -> Optional[Dict[str, Any]]
    lib = _load_library(("libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0",
                         "libcudart.so.10.2"))
    if lib is None:
        return None
    count = ctypes.c_int(0)
    if lib.cudaGetDeviceCount(ctypes.byref(count)) != 0 or count.value <= index:
        return None
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    if (lib.cudaDeviceGetAttribute(ctypes.byref(major), _ATTR_CC_MAJOR, index) != 0
            or lib.cudaDeviceGetAttribute(ctypes.byref(minor), _ATTR_CC_MINOR, index) != 0):
        return None
    # The runtime API's device name sits in cudaDeviceProp, whose layout changes across CUDA versions;
    # the name is its first field (char[256]), so a generous buffer reads it safely.
    props = ctypes.create_string_buffer(8192)
    name = ""
    if lib.cudaGetDeviceProperties(props, index) == 0:
        name = props.raw[:256].split(b"\0", 1)[0].decode("utf-8", "replace")
    return {"name": name, "compute_capability": "%d.%d" % (major.value, minor.value), "total_memory_mib": None,
            "count": count.value, "via": "libcudart"}


def cuda_device(index=0):
    # type: (int) -> Optional[Dict[str, Any]]
    """The CUDA GPU ``index``: ``name``, ``compute_capability`` (``"8.7"``), ``total_memory_mib``,
    ``count`` (visible GPUs) and ``via`` (which library answered); ``None`` without a driver or GPU."""
    try:
        return _cuda_driver_device(index) or _cuda_runtime_device(index)
    except (AttributeError, OSError):  # a library without the expected symbols
        return None


def _import_tensorrt():
    # type: () -> Any
    try:
        import tensorrt  # noqa: F401  (lazy: the module must import without it)
    except ImportError:
        return None
    return tensorrt


def _version_tuple(text):
    # type: (str) -> Tuple[int, ...]
    parts = []
    for part in str(text).split("."):
        digits = re.match(r"[0-9]+", part)
        if not digits:
            break
        parts.append(int(digits.group(0)))
    return tuple(parts)


def version_matches(expected, actual):
    # type: (str, str) -> bool
    """Whether TensorRT ``actual`` (``10.3.0.30``) is the ``expected`` release (``10.3.0`` or ``10.3``):
    every component ``expected`` names must be equal."""
    want, have = _version_tuple(expected), _version_tuple(actual)
    return bool(want) and have[:len(want)] == want


def _num_dla_cores(trt, logger):
    # type: (Any, Any) -> int
    return int(trt.Builder(logger).num_DLA_cores)


def probe():
    # type: () -> Optional[Dict[str, Any]]
    """This machine's TensorRT version, GPU name, compute capability and DLA core count, or ``None``
    when ``tensorrt`` does not import or there is no CUDA GPU."""
    trt = _import_tensorrt()
    if trt is None:
        return None
    device = cuda_device()
    if device is None:
        return None
    logger = trt.Logger(trt.Logger.ERROR)
    try:
        dla = _num_dla_cores(trt, logger)
    except Exception:  # TensorRT raises its own exception types when it cannot create a builder
        return None
    return {"tensorrt_version": str(trt.__version__), "device_name": device["name"],
            "compute_capability": device["compute_capability"], "num_dla_cores": dla,
            "total_memory_mib": device["total_memory_mib"]}


def check_environment(request):
    # type: (Dict[str, Any]) -> Tuple[Any, Dict[str, Any]]
    """Import TensorRT and find the GPU; refuse when either is missing or is not what the request expects.

    Returns:
        ``(tensorrt module, cuda_device())``.

    Raises:
        BuilderError: (code 5) no ``tensorrt``, no GPU, another TensorRT version or compute capability.
    """
    expect = request["expect"]
    wanted = "TensorRT %s on a GPU of compute capability %s" % (expect["tensorrt"], expect["compute_capability"])
    trt = _import_tensorrt()
    if trt is None:
        raise BuilderError(EXIT_ENVIRONMENT, (
            "the tensorrt Python package does not import here (python %s), and the target needs %s. Run this "
            "builder where TensorRT is installed: on the device or in its L4T TensorRT container "
            "(`toolchain build ... --on ssh://user@unit`)" % (sys.version.split()[0], wanted)))
    device = cuda_device()
    if device is None:
        raise BuilderError(EXIT_ENVIRONMENT, (
            "no CUDA GPU is visible here (no libcuda/libcudart answered, or no device), and the target needs %s. "
            "Run on the device (in its container start it with the NVIDIA runtime) or `--on` the unit" % wanted))
    problems = []
    if not version_matches(expect["tensorrt"], trt.__version__):
        problems.append("TensorRT %s here, %s expected" % (trt.__version__, expect["tensorrt"]))
    if device["compute_capability"] != expect["compute_capability"]:
        problems.append("GPU %s has compute capability %s, %s expected"
                        % (device["name"], device["compute_capability"], expect["compute_capability"]))
    if problems:
        raise BuilderError(EXIT_ENVIRONMENT, "this machine does not match the target (%s). %s"
                           % ("; ".join(problems), _NOT_PORTABLE))
    return trt, device


# --------------------------------------------------------------------------- files


def _sha256_file(path):
    # type: (Path) -> str
    digest = hashlib.sha256()
    with open(str(path), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomic(path, data):
    # type: (Path, bytes) -> None
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, str(path))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _write_json(path, value):
    # type: (Path, Any) -> None
    _write_atomic(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def _resolve(base, name):
    # type: (Path, str) -> Path
    path = Path(name)
    return path if path.is_absolute() else base / path


# --------------------------------------------------------------------------- TensorRT


def _make_logger(trt, lines):
    # type: (Any, List[str]) -> Any
    """A ``trt.ILogger`` that keeps INFO and more severe messages in ``lines`` (VERBOSE is dropped:
    it runs to megabytes) and echoes errors to stderr."""
    severity = trt.ILogger.Severity
    keep = int(severity.INFO)
    errors = int(severity.ERROR)

    class CaptureLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)

        def log(self, level, msg):
            if int(level) > keep:
                return
            name = getattr(level, "name", str(level).rsplit(".", 1)[-1])
            line = "[%s] [%s] %s" % (time.strftime("%H:%M:%S"), name, msg)
            lines.append(line)
            if int(level) <= errors:
                sys.stderr.write(line + "\n")

    return CaptureLogger()


_DTYPES = {"float": "float32", "half": "float16", "int8": "int8", "int32": "int32", "int64": "int64",
           "bool": "bool", "uint8": "uint8", "bf16": "bfloat16", "fp8": "float8", "int4": "int4"}


def _dtype(value):
    # type: (Any) -> str
    name = getattr(value, "name", str(value).rsplit(".", 1)[-1]).lower()
    return _DTYPES.get(name, name)


def _dims(value):
    # type: (Any) -> List[int]
    return [int(d) for d in value]


def engine_io(trt, engine):
    # type: (Any, Any) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]
    """``(inputs, outputs)`` of a deserialized engine: name, shape (-1 for dynamic), dtype, and the
    optimisation profile 0 shapes of dynamic inputs."""
    inputs, outputs = [], []  # type: List[Dict[str, Any]], List[Dict[str, Any]]
    if hasattr(engine, "num_io_tensors"):  # TensorRT 8.5+ (the binding API is removed in 10)
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            entry = {"name": name, "shape": _dims(engine.get_tensor_shape(name)),
                     "dtype": _dtype(engine.get_tensor_dtype(name))}  # type: Dict[str, Any]
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            if is_input and any(d < 0 for d in entry["shape"]):
                if hasattr(engine, "get_tensor_profile_shape"):
                    low, opt, high = engine.get_tensor_profile_shape(name, 0)
                else:
                    low, opt, high = engine.get_profile_shape(0, name)
                entry["profile"] = {"min": _dims(low), "opt": _dims(opt), "max": _dims(high)}
            (inputs if is_input else outputs).append(entry)
    else:  # TensorRT 8.0-8.4 (JetPack 4.6)
        for i in range(engine.num_bindings):
            entry = {"name": engine.get_binding_name(i), "shape": _dims(engine.get_binding_shape(i)),
                     "dtype": _dtype(engine.get_binding_dtype(i))}
            is_input = bool(engine.binding_is_input(i))
            if is_input and any(d < 0 for d in entry["shape"]):
                low, opt, high = engine.get_profile_shape(0, i)
                entry["profile"] = {"min": _dims(low), "opt": _dims(opt), "max": _dims(high)}
            (inputs if is_input else outputs).append(entry)
    return inputs, outputs


def _parse(trt, network, logger, onnx_path):
    # type: (Any, Any, Any, Path) -> None
    parser = trt.OnnxParser(network, logger)
    if hasattr(parser, "parse_from_file"):
        ok = parser.parse_from_file(str(onnx_path))
    else:
        with open(str(onnx_path), "rb") as f:
            ok = parser.parse(f.read())
    if not ok:
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BuilderError(EXIT_BAD_INPUT, (
            "TensorRT %s's ONNX parser rejected %s:\n  %s\nCheck the target's ONNX opset limit (re-export with the "
            "target's --opset) and that every operator is supported by this TensorRT version"
            % (trt.__version__, onnx_path.name, "\n  ".join(errors) or "(no parser errors reported; see build.log)")))


def _network_flags(trt, request):
    # type: (Any, Dict[str, Any]) -> int
    flags = 0
    creation = trt.NetworkDefinitionCreationFlag
    if _version_tuple(trt.__version__)[:1] < (10,):
        flags |= 1 << int(creation.EXPLICIT_BATCH)  # required for ONNX before 10; deprecated and ignored in 10
    if request["strongly_typed"]:
        if not hasattr(creation, "STRONGLY_TYPED"):
            raise BuilderError(EXIT_ENVIRONMENT, (
                "TensorRT %s has no strongly typed networks (TensorRT 9+); the request was made for another "
                "TensorRT version. %s" % (trt.__version__, _NOT_PORTABLE)))
        flags |= 1 << int(creation.STRONGLY_TYPED)
    return flags


def _configure(trt, builder, network, config, request, timing_cache):
    # type: (Any, Any, Any, Any, Dict[str, Any], Optional[bytes]) -> Tuple[List[str], bool]
    """Apply the request to ``config``; returns (flags set, whether the given timing cache was used)."""
    flags = []  # type: List[str]
    if request["workspace_mib"] is not None:
        pool = int(request["workspace_mib"]) << 20
        if hasattr(config, "set_memory_pool_limit") and hasattr(trt, "MemoryPoolType"):
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, pool)
        else:  # TensorRT 8.0-8.3: the pool API does not exist yet
            config.max_workspace_size = pool
    if request["fp16"]:
        config.set_flag(trt.BuilderFlag.FP16)
        flags.append("FP16")
    if request["int8"]:
        config.set_flag(trt.BuilderFlag.INT8)  # explicit quantization: the Q/DQ scales, no calibrator
        flags.append("INT8")
    if request["strongly_typed"]:
        flags.append("STRONGLY_TYPED")
    if request["dla_core"] is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(request["dla_core"])
        flags.append("DLA")
        if request["gpu_fallback"]:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
            flags.append("GPU_FALLBACK")

    names = [network.get_input(i).name for i in range(network.num_inputs)]
    profile = request["profile"]
    if profile is not None:
        if profile["input"] not in names:
            raise BuilderError(EXIT_BAD_INPUT, "the profile names input %r, but the ONNX's inputs are %s"
                               % (profile["input"], ", ".join(names)))
        rank = len(network.get_input(names.index(profile["input"])).shape)
        if rank != len(profile["min"]):
            raise BuilderError(EXIT_BAD_INPUT, "the profile shapes have rank %d, but input %r has rank %d"
                               % (len(profile["min"]), profile["input"], rank))
        optimization = builder.create_optimization_profile()
        optimization.set_shape(profile["input"], profile["min"], profile["opt"], profile["max"])
        config.add_optimization_profile(optimization)
    else:
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            if any(int(d) < 0 for d in tensor.shape):
                raise BuilderError(EXIT_USAGE, (
                    "invalid build request: input %r has a dynamic shape %s but the request has no optimisation "
                    "profile; plan the build with a batch range" % (tensor.name, _dims(tensor.shape))))

    cache = config.create_timing_cache(timing_cache or b"")
    used = bool(timing_cache)
    if not config.set_timing_cache(cache, False):  # ignore_mismatch=False: refuse another device's cache
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
        used = False
    return flags, used


def build(request, workdir, outdir=None):
    # type: (Dict[str, Any], Path, Optional[Path]) -> Dict[str, Any]
    """Build the engine a request describes.

    Args:
        request: The build request (see the module docstring).
        workdir: Directory that relative ``onnx`` and ``timing_cache`` names are resolved against.
        outdir: Where ``engine.plan``, ``build.log``, ``timing.cache`` and ``result.json`` go
            (created; default ``workdir``).

    Returns:
        The contents of ``result.json``.

    Raises:
        BuilderError: A refusal or failure, with the exit code of the command-line form.
    """
    workdir = Path(workdir)
    outdir = Path(outdir) if outdir is not None else workdir
    req = validate_request(request)
    onnx_path = _resolve(workdir, req["onnx"])
    if not onnx_path.is_file():
        raise BuilderError(EXIT_BAD_INPUT, "the ONNX file %s does not exist; copy it next to the request" % onnx_path)
    onnx_sha = _sha256_file(onnx_path)
    if req.get("onnx_sha256") and onnx_sha != req["onnx_sha256"]:
        raise BuilderError(EXIT_BAD_INPUT, "%s has sha256 %s, but the request is for %s; the copy is incomplete or "
                           "altered: copy the ONNX again" % (onnx_path.name, onnx_sha, req["onnx_sha256"]))
    cache_bytes = None  # type: Optional[bytes]
    if req["timing_cache"] is not None:
        cache_path = _resolve(workdir, req["timing_cache"])
        if not cache_path.is_file():
            raise BuilderError(EXIT_BAD_INPUT, "the timing cache %s does not exist; pass null to start without one"
                               % cache_path)
        cache_bytes = cache_path.read_bytes()
    trt, device = check_environment(req)
    outdir.mkdir(parents=True, exist_ok=True)
    lines = []  # type: List[str]
    try:
        return _build(trt, device, req, onnx_path, onnx_sha, cache_bytes, outdir, lines)
    finally:
        _write_atomic(outdir / LOG_FILE, ("\n".join(lines) + "\n" if lines else "").encode("utf-8"))


def _build(trt, device, req, onnx_path, onnx_sha, cache_bytes, outdir, lines):
    # type: (Any, Dict[str, Any], Dict[str, Any], Path, str, Optional[bytes], Path, List[str]) -> Dict[str, Any]
    logger = _make_logger(trt, lines)
    builder = trt.Builder(logger)
    num_dla = int(builder.num_DLA_cores)
    if req["dla_core"] is not None and req["dla_core"] >= num_dla:
        raise BuilderError(EXIT_ENVIRONMENT, (
            "DLA core %d was requested, but this device (%s) has %d DLA core(s) (builder.num_DLA_cores); build for "
            "the GPU (no --dla) or pick a core below %d" % (req["dla_core"], device["name"], num_dla, num_dla)))
    network = builder.create_network(_network_flags(trt, req))
    _parse(trt, network, logger, onnx_path)
    config = builder.create_builder_config()
    flags, cache_used = _configure(trt, builder, network, config, req, cache_bytes)

    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - started
    if serialized is None:
        raise BuilderError(EXIT_BUILD_FAILED, (
            "TensorRT %s could not build an engine from %s (%s, flags %s); the errors are in %s"
            % (trt.__version__, onnx_path.name, req["precision"], ", ".join(flags) or "none", LOG_FILE)))
    engine_bytes = bytes(serialized)

    runtime = trt.Runtime(logger)
    if req["dla_core"] is not None:
        runtime.DLA_core = int(req["dla_core"])
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    if engine is None:
        raise BuilderError(EXIT_BUILD_FAILED, "TensorRT built an engine it cannot load back; see %s" % LOG_FILE)
    inputs, outputs = engine_io(trt, engine)

    _write_atomic(outdir / ENGINE_NAME, engine_bytes)  # raw plan: no header, loadable by trtexec/DeepStream
    cache_out = bytes(config.get_timing_cache().serialize())
    _write_atomic(outdir / TIMING_CACHE_FILE, cache_out)
    result = {
        "format": REQUEST_FORMAT,
        "engine": ENGINE_NAME,
        "engine_sha256": hashlib.sha256(engine_bytes).hexdigest(),
        "engine_bytes": len(engine_bytes),
        "onnx_sha256": onnx_sha,
        "key": req.get("key"),
        "target": req.get("target"),
        "tensorrt_version": str(trt.__version__),
        "device_name": device["name"],
        "compute_capability": device["compute_capability"],
        "num_dla_cores": num_dla,
        "dla_core": req["dla_core"],
        "device": "gpu" if req["dla_core"] is None else "dla:%d" % req["dla_core"],
        "precision": req["precision"],
        "strongly_typed": req["strongly_typed"],
        "flags": flags,
        "workspace_mib": req["workspace_mib"],
        "profile": req["profile"],
        "inputs": inputs,
        "outputs": outputs,
        "timing_cache": {"file": TIMING_CACHE_FILE, "loaded": cache_used, "sha256": hashlib.sha256(cache_out).hexdigest()},
        "build_seconds": round(seconds, 3),
        "log": LOG_FILE,
        "python": sys.version.split()[0],
    }
    _write_json(outdir / RESULT_FILE, result)
    return result


# --------------------------------------------------------------------------- command line


def _emit(value):
    # type: (Any) -> None
    sys.stdout.write(json.dumps(value, sort_keys=True) + "\n")
    sys.stdout.flush()


def _error(error, outdir):
    # type: (BuilderError, Optional[Path]) -> int
    if outdir is not None:
        try:
            outdir.mkdir(parents=True, exist_ok=True)
            _write_json(outdir / ERROR_FILE, error.to_json())
        except OSError:
            pass  # the JSON on stdout still says what happened
    _emit(error.to_json())
    sys.stderr.write("tensorrt_builder: %s\n" % error.message)
    return error.code


def main(argv=None):
    # type: (Optional[List[str]]) -> int
    """``tensorrt_builder.py REQUEST.json OUTDIR`` or ``tensorrt_builder.py --probe``; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--probe"]:
        info = probe()
        if info is None:
            reason = ("tensorrt does not import" if _import_tensorrt() is None
                      else "no CUDA GPU is visible" if cuda_device() is None else "TensorRT cannot create a builder")
            return _error(BuilderError(EXIT_ENVIRONMENT, "nothing to build with here: %s" % reason), None)
        _emit({"probe": info})
        return EXIT_OK
    if len(args) != 2 or args[0].startswith("-"):
        return _error(BuilderError(EXIT_USAGE, "usage: tensorrt_builder.py REQUEST.json OUTDIR | --probe"), None)
    request_path, outdir = Path(args[0]), Path(args[1])
    try:
        request = json.loads(request_path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        return _error(BuilderError(EXIT_BAD_INPUT, "cannot read the request %s: %s" % (request_path, exc)), outdir)
    except ValueError as exc:
        return _error(BuilderError(EXIT_USAGE, "the request %s is not JSON: %s" % (request_path, exc)), outdir)
    try:
        result = build(request, request_path.parent, outdir)
    except BuilderError as exc:
        return _error(exc, outdir)
    except Exception as exc:  # TensorRT raises plain RuntimeError/TypeError from its bindings
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return _error(BuilderError(EXIT_BUILD_FAILED, "the build failed: %s; see %s" % (detail, LOG_FILE)), outdir)
    _emit({"result": result})
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
