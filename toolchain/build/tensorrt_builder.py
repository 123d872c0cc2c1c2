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
     "allow_gpu_fallback_only": false (optional), "workspace_mib": 1024, "profile": {"input": "images", "min": [1,3,224,224], "opt": [...], "max": [...]} | null,
     "timing_cache": "timing.cache" | null, "expect": {"tensorrt": "10.3.0", "compute_capability": "8.7"}}

Outputs in OUTDIR: ``engine.plan`` (the raw serialized engine, no header bytes, so trtexec and
DeepStream load it), ``build.log`` (TensorRT's messages, INFO and above), ``timing.cache`` (the
updated timing cache), ``result.json`` (versions, device, flags, the engine's I/O read back from the
deserialized engine, where its layers run (``layer_placement``: DLA vs GPU counts), warnings, build
time, engine sha256). The request file is read as UTF-8 whatever the locale. On failure: ``error.json`` and ``build.log``.
Either way one JSON document on stdout: ``{"result": {...}}`` or ``{"error": {"code", "kind", "message"}}``.

Exit codes: 0 built; 1 TensorRT failed to build or load the engine (see build.log), or reported no
layer placement for a DLA build; 2 invalid request; 4 bad input (missing or altered ONNX, parser
errors, a profile TensorRT rejects, a DLA build with nothing on the DLA); 5 wrong environment (no ``tensorrt``,
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
  the device's ``builder.num_DLA_cores`` is checked first, then ``config.can_run_on_DLA`` per layer
  (none: refused before building); DLA requests must have a static profile (min = opt = max) and no
  Q/DQ INT8 (the DLA runs only implicit quantization); after the build the engine inspector
  (``create_engine_inspector().get_engine_information(LayerInformationFormat.JSON)``, 8.2+, with
  ``config.profiling_verbosity = ProfilingVerbosity.DETAILED``) and the build log's "Layers Running on
  DLA/GPU" lines say where layers went; a DLA engine with nothing on the DLA is refused (exit 4) unless
  ``allow_gpu_fallback_only``;
- ``builder.create_optimization_profile`` / ``profile.set_shape`` / ``config.add_optimization_profile``
  (its returned index is checked: -1 means TensorRT found the profile invalid, exit 4);
- ``config.create_timing_cache`` / ``set_timing_cache`` / ``get_timing_cache().serialize()``; a cache
  that does not deserialize (another TensorRT version) or is refused (another device) is replaced by a
  fresh one, with a warning in ``result.json``, ``build.log`` and stderr;
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
    "gpu_fallback", "allow_gpu_fallback_only", "workspace_mib", "profile", "timing_cache", "expect", "key",
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
    req.setdefault("allow_gpu_fallback_only", False)  # optional: older requests lack it
    for flag in ("strongly_typed", "fp16", "int8", "gpu_fallback", "allow_gpu_fallback_only"):
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
        if precision == "int8" or req["strongly_typed"]:
            # The only INT8 source here is a Q/DQ ONNX, and the DLA runs only implicitly quantized INT8
            # (NVIDIA/TensorRT#2222, NVIDIA/Model-Optimizer#1661): the plan refuses it, so must this.
            raise _fail("the DLA does not run explicitly quantized (Q/DQ) networks; build the FP32 ONNX with "
                        "precision fp16 for the DLA, or this INT8 ONNX for the GPU (dla_core null)")
    elif req["gpu_fallback"]:
        raise _fail("gpu_fallback applies to DLA builds only (dla_core is null)")
    elif req["allow_gpu_fallback_only"]:
        raise _fail("allow_gpu_fallback_only applies to DLA builds only (dla_core is null)")
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
        if dla is not None and not low == opt == high:
            # NVIDIA, "DLA Supported Layers and Restrictions": no dynamic dimensions on the DLA; the profile's
            # min, opt and max must be equal and the run-time shape must be the built one.
            raise _fail("a DLA build needs a static profile (min = opt = max), got %r, %r, %r" % (low, opt, high))
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
    it runs to megabytes, except the layer placement lines, which newer TensorRT logs as VERBOSE)
    and echoes errors to stderr."""
    severity = trt.ILogger.Severity
    keep = int(severity.INFO)
    errors = int(severity.ERROR)

    class CaptureLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)

        def log(self, level, msg):
            if int(level) > keep and not _PLACEMENT_LOG_RE.search(str(msg)):
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


# --------------------------------------------------------------------------- layer placement
#
# Where TensorRT put the layers of a DLA build, from two sources (UNVERIFIED ON HARDWARE, both):
# - the engine inspector (TensorRT 8.2+: ``engine.create_engine_inspector().get_engine_information(
#   trt.LayerInformationFormat.JSON)``): ``{"Layers": [...], "Bindings": [...]}``, each layer a name
#   (ProfilingVerbosity LAYER_NAMES_ONLY, the default) or an object with ``Name`` and ``LayerType``
#   (DETAILED, which the builder asks for). DLA subgraphs show as one ``{ForeignNode[first...last]}``
#   layer each; GPU Myelin regions have the same name form, told apart by a LayerType naming Myelin.
#   The GPU-side copies into and out of DLA memory (``x to nvm``, ``y from nvm``, ``... copy finish``)
#   are counted apart, as transfers.
# - the build log: ``---------- Layers Running on DLA ----------`` then ``[DlaLayer] {ForeignNode[...]}``
#   lines, and ``... on GPU ...`` then ``[GpuLayer] TYPE: name`` lines (TensorRT 8.4+; VERBOSE in newer
#   releases, so the logger keeps these lines at any level); TensorRT 7/8.0 wrote one comma-separated
#   line after ``--------------- Layers running on DLA:`` and one after ``... on GPU:``.
# The log, where it has device-labelled lines, wins: those labels are TensorRT's own words for the
# device; the inspector's count rests on layer names. Both are recorded.

_PLACEMENT_LOG_RE = re.compile(r"\[(Dla|Gpu)Layer\]|layers running on (dla|gpu)", re.IGNORECASE)
_LOG_PREFIX_RE = re.compile(r"^\[[^\]]*\] \[[A-Za-z_]+\] ?")
_DLA_TRANSFER_RE = re.compile(r"( to nvm| from nvm| copy finish)$", re.IGNORECASE)
_PLACEMENT_NAMES = 20  # names kept per device in the result (counts are complete)


def _placement(source, dla, gpu, transfers):
    # type: (str, List[str], List[str], List[str]) -> Dict[str, Any]
    return {"source": source, "dla": len(dla), "gpu": len(gpu), "dla_transfers": len(transfers),
            "dla_layers": dla[:_PLACEMENT_NAMES], "gpu_layers": gpu[:_PLACEMENT_NAMES]}


def placement_from_engine_information(information, dla_build):
    # type: (Any, bool) -> Optional[Dict[str, Any]]
    """Layer counts per device from the engine inspector's JSON (text or parsed); ``None`` when it
    holds no layers (ProfilingVerbosity NONE, or not JSON)."""
    if not isinstance(information, dict):
        try:
            information = json.loads(information)
        except (TypeError, ValueError):
            return None
    layers = information.get("Layers") if isinstance(information, dict) else None
    if not isinstance(layers, list) or not layers:
        return None
    dla, gpu, transfers = [], [], []  # type: List[str], List[str], List[str]
    for entry in layers:
        if isinstance(entry, dict):
            name, kind = str(entry.get("Name", "")), str(entry.get("LayerType", "")).lower()
        else:
            name, kind = str(entry), ""
        if _DLA_TRANSFER_RE.search(name.strip()):
            transfers.append(name)
        elif "dla" in kind or (dla_build and "foreignnode" in name.lower() and "myelin" not in kind):
            dla.append(name)
        else:
            gpu.append(name)
    return _placement("engine_inspector", dla, gpu, transfers)


def _top_level_items(text):
    # type: (str) -> List[str]
    """Split ``{a,b}, PWN(c, d), e`` at the commas outside brackets."""
    items, depth, current = [], 0, []  # type: List[str], int, List[str]
    for char in text:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth = max(0, depth - 1)
        if char == "," and depth == 0:
            items.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    items.append("".join(current).strip())
    return [item for item in items if item]


def placement_from_log(lines):
    # type: (List[str]) -> Optional[Dict[str, Any]]
    """Layer counts per device from TensorRT's build log; ``None`` when the log has no placement."""
    found = {"dla": [], "gpu": []}  # type: Dict[str, List[str]]
    seen = False
    section = None  # type: Optional[str]
    for line in lines:
        message = _LOG_PREFIX_RE.sub("", line, count=1).strip()
        for device, mark in (("dla", "[DlaLayer]"), ("gpu", "[GpuLayer]")):
            if mark in message:
                found[device].append(message.split(mark, 1)[1].strip().rstrip(","))
                seen, section = True, None
                break
        else:
            header = re.search(r"layers running on (dla|gpu)", message, re.IGNORECASE)
            if header:
                seen = True
                # TensorRT 7/8.0: "...: " then the layers on the next line; 8.4+: "---- ... ----" then marked lines
                section = header.group(1).lower() if message.endswith(":") else None
            elif section is not None:
                found[section].extend(_top_level_items(message))
                section = None
    if not seen:
        return None
    transfers = [n for n in found["gpu"] if _DLA_TRANSFER_RE.search(n)]
    gpu = [n for n in found["gpu"] if not _DLA_TRANSFER_RE.search(n)]
    return _placement("build_log", found["dla"], gpu, transfers)


def layer_placement(inspected, logged, dla_build, network_layers=None, dla_capable=None):
    # type: (Optional[Dict[str, Any]], Optional[Dict[str, Any]], bool, Optional[int], Optional[int]) -> Dict[str, Any]
    """The placement recorded for a build: the build log's when it labels devices (DLA builds), else the
    engine inspector's, else unknown (``dla``/``gpu`` None); both sources and the network's own layer
    counts (``config.can_run_on_DLA`` before the build) are kept alongside."""
    chosen = None  # type: Optional[Dict[str, Any]]
    if dla_build and logged is not None and (logged["dla"] or logged["gpu"]):
        chosen = logged
    elif inspected is not None:
        chosen = inspected
    elif logged is not None:
        chosen = logged
    placement = dict(chosen) if chosen is not None else _placement("none", [], [], [])
    if chosen is None:
        placement["dla"] = placement["gpu"] = None
    placement["engine_inspector"] = None if inspected is None else {k: inspected[k] for k in ("dla", "gpu", "dla_transfers")}
    placement["build_log"] = None if logged is None else {k: logged[k] for k in ("dla", "gpu", "dla_transfers")}
    placement["network_layers"] = network_layers
    placement["network_dla_capable"] = dla_capable
    return placement


def check_placement(request, placement):
    # type: (Dict[str, Any], Dict[str, Any]) -> None
    """Refuse a DLA build that put nothing on the DLA (or whose placement is unknown), unless the request
    allows a GPU-fallback-only engine: with GPU fallback on, TensorRT moves what the DLA cannot run to the
    GPU without an error (NVIDIA, "GPU Fallback Mode"), and the engine would be recorded as ``dla:N``.

    Raises:
        BuilderError: (code 4) nothing on the DLA; (code 1) TensorRT reported no placement.
    """
    core = request["dla_core"]
    if core is None or request.get("allow_gpu_fallback_only"):
        return
    escape = ("build for the GPU (drop --dla), or pass --allow-gpu-fallback-only to keep such an engine as "
              "dla:%d" % core)
    if placement.get("dla") is None:
        raise BuilderError(EXIT_BUILD_FAILED, (
            "TensorRT reported no layer placement for this DLA build (no engine inspector output and no "
            "'Layers Running on DLA' lines in %s), so it cannot be confirmed that anything runs on DLA core %d; "
            "the engine was not kept: %s" % (LOG_FILE, core, escape)))
    if placement["dla"] == 0:
        raise BuilderError(EXIT_BAD_INPUT, (
            "TensorRT placed no layer on DLA core %d: all %s layers fell back to the GPU (source: %s; e.g. %s). "
            "The engine was not kept: %s" % (core, placement.get("gpu"), placement.get("source"),
                                             ", ".join(placement.get("gpu_layers") or []) or "-", escape)))


def _inspect_engine(trt, engine, warnings):
    # type: (Any, Any, List[str]) -> Optional[Any]
    """The engine inspector's JSON text, or ``None`` where this TensorRT has no inspector (before 8.2)."""
    if not hasattr(engine, "create_engine_inspector") or not hasattr(trt, "LayerInformationFormat"):
        return None
    try:
        inspector = engine.create_engine_inspector()
        return inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    except Exception as exc:  # noqa: BLE001 - TensorRT raises its own types from the bindings
        warnings.append("the engine inspector failed (%s); layer placement is taken from the build log" % exc)
        return None


def _dla_capable_layers(network, config):
    # type: (Any, Any) -> Optional[int]
    """How many network layers ``config.can_run_on_DLA`` accepts (config set for the DLA), or ``None``."""
    if not hasattr(config, "can_run_on_DLA"):
        return None
    count = 0
    try:
        for i in range(network.num_layers):
            count += bool(config.can_run_on_DLA(network.get_layer(i)))
    except Exception:  # noqa: BLE001 - an API difference: the post-build placement still decides
        return None
    return count


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


def _configure(trt, builder, network, config, request, timing_cache, warnings):
    # type: (Any, Any, Any, Any, Dict[str, Any], Optional[bytes], List[str]) -> Tuple[List[str], bool]
    """Apply the request to ``config``; returns (flags set, whether the given timing cache was used).
    What the caller should know but is not an error (a timing cache dropped) goes to ``warnings``."""
    flags = []  # type: List[str]
    if request["workspace_mib"] is not None:
        pool = int(request["workspace_mib"]) << 20
        if hasattr(config, "set_memory_pool_limit") and hasattr(trt, "MemoryPoolType"):
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, pool)
        else:  # TensorRT 8.0-8.3: the pool API does not exist yet
            config.max_workspace_size = pool
    verbosity = getattr(trt, "ProfilingVerbosity", None)
    if verbosity is not None and hasattr(verbosity, "DETAILED") and hasattr(config, "profiling_verbosity"):
        # Layer names and types in the engine, for the engine inspector's placement report (8.2+).
        config.profiling_verbosity = verbosity.DETAILED
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
        index = config.add_optimization_profile(optimization)
        # The documented return is the profile's index, or -1 when the profile is invalid (8.x and 10.x).
        if index is None or int(index) < 0:
            shape = _dims(network.get_input(names.index(profile["input"])).shape)
            raise BuilderError(EXIT_BAD_INPUT, (
                "TensorRT %s rejected the optimisation profile of input %r (min %s, opt %s, max %s; "
                "add_optimization_profile returned %r): it does not fit the ONNX input shape %s. Plan the build "
                "again from this ONNX (its fixed dimensions must equal the profile's)"
                % (trt.__version__, profile["input"], profile["min"], profile["opt"], profile["max"], index, shape)))
    else:
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            if any(int(d) < 0 for d in tensor.shape):
                raise BuilderError(EXIT_USAGE, (
                    "invalid build request: input %r has a dynamic shape %s but the request has no optimisation "
                    "profile; plan the build with a batch range" % (tensor.name, _dims(tensor.shape))))
    return flags, _set_timing_cache(trt, config, timing_cache, warnings)


def _set_timing_cache(trt, config, blob, warnings):
    # type: (Any, Any, Optional[bytes], List[str]) -> bool
    """Start the build from ``blob`` where TensorRT accepts it, else from an empty cache; True if ``blob`` was used.

    A cache written by another TensorRT version (or a damaged one) may fail to deserialize: depending on
    the version ``create_timing_cache`` raises or returns None (UNVERIFIED which); either way the build
    goes on with a fresh cache and says so. A cache from another device deserializes but
    ``set_timing_cache(cache, ignore_mismatch=False)`` refuses it: same outcome.
    """
    if blob:
        cache = None
        reason = "TensorRT returned no cache"
        try:
            cache = config.create_timing_cache(blob)
        except Exception as exc:  # noqa: BLE001 - the bindings raise RuntimeError/TypeError
            reason = str(exc).strip() or type(exc).__name__
        if cache is None:
            warnings.append("the timing cache (%d bytes) could not be read by TensorRT %s (%s); it was probably "
                            "written by another TensorRT version: the build starts from a fresh cache, which "
                            "replaces it" % (len(blob), trt.__version__, reason))
        elif config.set_timing_cache(cache, False):  # ignore_mismatch=False: refuse another device's cache
            return True
        else:
            warnings.append("the timing cache was made on another device or TensorRT build and was refused "
                            "(set_timing_cache); the build starts from a fresh cache, which replaces it")
    config.set_timing_cache(config.create_timing_cache(b""), False)
    return False


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


_CACHE_DROPPED_RE = re.compile(r"timing cache will not be used|invalid timing cache", re.IGNORECASE)


def _say(warning, lines):
    # type: (str, List[str]) -> None
    """A warning the user should see: into build.log (as the toolchain's line) and onto stderr."""
    lines.append("[%s] [TOOLCHAIN] %s" % (time.strftime("%H:%M:%S"), warning))
    sys.stderr.write("tensorrt_builder: warning: %s\n" % warning)


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
    warnings = []  # type: List[str]
    flags, cache_used = _configure(trt, builder, network, config, req, cache_bytes, warnings)
    dla_capable = None  # type: Optional[int]
    if req["dla_core"] is not None:
        # Before a build that may take minutes: can any layer run on the DLA at all? (UNVERIFIED ON HARDWARE)
        dla_capable = _dla_capable_layers(network, config)
        if dla_capable == 0 and not req["allow_gpu_fallback_only"]:
            raise BuilderError(EXIT_BAD_INPUT, (
                "none of the network's %d layers can run on DLA core %d (config.can_run_on_DLA): every layer would "
                "fall back to the GPU. Build for the GPU (drop --dla), or pass --allow-gpu-fallback-only to keep "
                "such an engine" % (network.num_layers, req["dla_core"])))
    for warning in warnings:
        _say(warning, lines)

    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - started
    if cache_used and any(_CACHE_DROPPED_RE.search(line) for line in lines):
        # TensorRT may accept the blob, then drop it itself (8.x logs "The timing cache will not be used!" or
        # "Detected invalid timing cache, setup a local cache instead"; NVIDIA/TensorRT#3566, #1413)
        cache_used = False
        warnings.append("TensorRT did not use the timing cache it was given (see %s); the build timed its "
                        "layers afresh and the new cache replaces it" % LOG_FILE)
        _say(warnings[-1], lines)
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
    dla_build = req["dla_core"] is not None
    said = len(warnings)
    inspected = placement_from_engine_information(_inspect_engine(trt, engine, warnings), dla_build)
    for warning in warnings[said:]:
        _say(warning, lines)
    placement = layer_placement(inspected, placement_from_log(lines), dla_build,
                                int(network.num_layers), dla_capable)
    check_placement(req, placement)  # before anything is written: a refused engine leaves no engine.plan

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
        "layer_placement": placement,
        "allow_gpu_fallback_only": req["allow_gpu_fallback_only"],
        "warnings": warnings,
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
        # utf-8 whatever the locale: under a C/POSIX locale Python 3.6 would read it as ASCII
        request = json.loads(request_path.read_text(encoding="utf-8"))
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
