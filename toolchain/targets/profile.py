"""Hardware target profiles: one TOML file per roadside device + software stack.

A target looks like this (see the built-in catalog for real ones, each with its sources)::

    name = "jetson-orin-nano"
    description = "Jetson Orin Nano 8GB, JetPack 6.2"
    kind = "tensorrt"                  # tensorrt | onnxruntime
    architecture = "aarch64"           # aarch64 | x86_64
    gpu_compute_capability = "8.7"     # SM major.minor; "" for CPU targets
    dla_cores = 0
    jetpack = "6.2"
    l4t = "36.4"
    tensorrt = "10.3.0"
    cuda = "12.6"
    memory_gb = 8
    max_onnx_opset = 19                # highest opset the target's ONNX parser accepts
    precisions = ["fp32", "fp16", "int8"]
    uint8_input = true                 # the runtime takes a uint8 network input (TensorRT >= 8.5)
    runtime_image = "nvcr.io/nvidia/l4t-jetpack:r36.4.0"
    build_image = "nvcr.io/nvidia/l4t-jetpack:r36.4.0"
    camera_fps = 15
    latency_budget_ms = 66             # default: one frame interval, 1000 / camera_fps, rounded down
    verified_on_hardware = false       # has the toolchain run an engine on this device?
    unverified = ["dla_cores"]         # fields whose value is not confirmed (query the device)
    notes = ["query num_DLA_cores on the device"]

Targets are found by name in ``$TOOLCHAIN_TARGETS`` (one or more directories, ``os.pathsep``
separated; they win over built-ins of the same name) and in the built-in catalog
(``toolchain/catalog/targets``, the top-level ``targets/`` of the repository); a path to a
``.toml`` file is accepted too. Standard library only: the roadside runtime imports it.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolchain import catalog_files as cf
from toolchain.errors import BadInputError, UsageError
from toolchain.runtime.machine import machine_architecture, normalize_architecture

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_TARGET",
    "KINDS",
    "MAX_OPSET",
    "MIN_OPSET",
    "PRECISIONS",
    "TARGETS_ENV",
    "Target",
    "builtin_dir",
    "check_opset",
    "list_targets",
    "load_target",
    "machine_architecture",
    "max_opset_for",
    "normalize_architecture",
    "parse_target",
    "target_dirs",
]

DEFAULT_TARGET = "x86-64-cpu"
"""The target used when none is named: ONNX Runtime on the CPU of a workstation like this one."""

TARGETS_ENV = "TOOLCHAIN_TARGETS"
"""Environment variable naming extra target directories (``os.pathsep`` separated)."""

KINDS: tuple[str, ...] = ("tensorrt", "onnxruntime")
"""Backends: TensorRT engines (Jetson) or ONNX Runtime artifacts (CPU)."""

ARCHITECTURES: tuple[str, ...] = ("aarch64", "x86_64")

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")

MIN_OPSET = 7
MAX_OPSET = 21
"""Range accepted for ``max_onnx_opset`` (7: the oldest opset TensorRT 8's parser reads)."""

# TensorRT 8.0 is the oldest release the build supports (JetPack 4.6 ships 8.0/8.2).
_MIN_TENSORRT = (8, 0)
# Documented ceilings of TensorRT's ONNX parser (onnx-tensorrt docs/operators.md of each release
# branch): 8.0 and 8.2 "up to Opset 13", 8.4-8.6 "up to Opset 17". 10.x documents opset 20 or more
# depending on the release; the overall MAX_OPSET bounds it here. Entries: (below this version, ceiling).
_PARSER_OPSET_CEILINGS: tuple[tuple[tuple[int, int], int], ...] = (((8, 4), 13), ((10, 0), 17))
# kUINT8 network I/O arrived in TensorRT 8.5 (onnx-tensorrt: UINT8 only as network input/output).
_UINT8_TENSORRT = (8, 5)
# Fast FP16 arithmetic: SM 5.3 (Nano, TX1), 6.0, 6.2 (TX2) and 7.0+; SM 6.1 (GeForce 10) has none.
_FP16_SM = ((5, 3), (6, 0), (6, 2))
# INT8 (dp4a or tensor cores): SM 6.1 and 7.0+; SM 5.x, 6.0 and 6.2 have no fast INT8.
_INT8_SM = ((6, 1),)
# DLA exists from Xavier (SM 7.2) on.
_DLA_SM = (7, 2)
# ONNX Runtime's CPU execution provider has no fast FP16 kernels.
_ONNXRUNTIME_PRECISIONS = ("fp32", "int8")

_SM_RE = re.compile(r"^[1-9][0-9]?\.[0-9]$")
_VERSION_RE = re.compile(r"^[0-9]+(\.[0-9]+){0,3}$")


@dataclass(frozen=True, kw_only=True)
class Target:
    """A validated hardware target: a device plus the software stack an engine is built for.

    Attributes:
        name: Target name (the catalog file's stem).
        description: One line for humans.
        kind: ``tensorrt`` (a TensorRT engine) or ``onnxruntime`` (an ONNX Runtime artifact).
        architecture: CPU architecture, ``aarch64`` or ``x86_64``.
        python: The Python of the target's runtime image (JetPack's: 3.6 on 4.6, 3.8 on 5.x, 3.10 on 6.x); the
            runtime code the image ships must run on it (``package`` refuses targets older than it supports).
        gpu_compute_capability: GPU SM version ``"major.minor"``; empty for CPU targets.
        dla_cores: Deep Learning Accelerator cores (0 when none or not confirmed; see ``unverified``).
        jetpack: JetPack release the profile assumes (empty off Jetson).
        l4t: Linux for Tegra release (empty off Jetson).
        tensorrt: TensorRT version (empty for ONNX Runtime targets).
        cuda: CUDA version (empty for CPU targets).
        memory_gb: Memory of the module this profile assumes (shared CPU/GPU on Jetson); 0: not fixed.
        max_onnx_opset: Highest ONNX opset the target's parser accepts.
        precisions: Precisions an engine for this target may use, a subset of :data:`PRECISIONS`.
        uint8_input: Whether the runtime accepts a uint8 network input (raw frames, ``--input uint8-nhwc``).
        runtime_image: Container image that runs engines on the device.
        build_image: Container image that builds engines on the device (matches its L4T).
        camera_fps: Default camera frame rate.
        latency_budget_ms: End-to-end latency budget per frame.
        verified_on_hardware: Whether the toolchain's engines have been run on this device.
        unverified: Field names whose values are not confirmed; query the device instead of trusting them.
        notes: Caveats for humans.
        service_memory_mb, service_cpus, service_pids: Default limits of the service container on a unit
            (``deploy`` clamps the CPUs to what the unit has; a fleet file may override each per unit).
            Memory defaults to half the module's memory on TensorRT targets, 1024 MB elsewhere.
        source: Where the target was read from (not part of its identity).
    """

    name: str
    description: str = ""
    kind: str
    architecture: str
    python: str = ""
    gpu_compute_capability: str = ""
    dla_cores: int = 0
    jetpack: str = ""
    l4t: str = ""
    tensorrt: str = ""
    cuda: str = ""
    memory_gb: float = 0.0
    max_onnx_opset: int
    precisions: tuple[str, ...]
    uint8_input: bool = False
    runtime_image: str
    build_image: str
    camera_fps: float = 15.0
    latency_budget_ms: float = 66.0
    verified_on_hardware: bool = False
    unverified: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    service_memory_mb: int = 1024
    service_cpus: float = 2.0
    service_pids: int = 256
    source: str = field(default="", compare=False)

    @property
    def backend(self) -> str:
        """Same as :attr:`kind` (the name build records and ``--json`` output use)."""
        return self.kind

    @property
    def is_tensorrt(self) -> bool:
        """Whether engines for this target are TensorRT engines."""
        return self.kind == "tensorrt"

    @property
    def python_version(self) -> tuple[int, ...]:
        """:attr:`python` as integers (``()`` when the profile does not say)."""
        return _version(self.python) if self.python else ()

    @property
    def tensorrt_version(self) -> tuple[int, ...]:
        """The TensorRT version as integers (``()`` for ONNX Runtime targets)."""
        return _version(self.tensorrt) if self.tensorrt else ()

    @property
    def compute_capability(self) -> tuple[int, int] | None:
        """The GPU SM version as ``(major, minor)``, or ``None`` for CPU targets."""
        if not self.gpu_compute_capability:
            return None
        major, minor = self.gpu_compute_capability.split(".")
        return int(major), int(minor)

    @property
    def stack(self) -> str:
        """``"TensorRT 8.2"`` or ``"ONNX Runtime"``: what parses and runs the ONNX."""
        if self.is_tensorrt:
            return "TensorRT " + ".".join(str(p) for p in self.tensorrt_version[:2])
        return "ONNX Runtime"

    @property
    def dla_cores_verified(self) -> bool:
        """``False`` when the DLA count must be read from the device (``num_DLA_cores``), not from here."""
        return "dla_cores" not in self.unverified

    @property
    def frame_interval_ms(self) -> float:
        """Time between frames at :attr:`camera_fps`."""
        return 1000.0 / self.camera_fps

    @property
    def docker_platform(self) -> str:
        """The Docker platform of the device (``linux/arm64`` or ``linux/amd64``)."""
        return "linux/arm64" if self.architecture == "aarch64" else "linux/amd64"

    def supports(self, precision: str) -> bool:
        """Whether an engine for this target may use ``precision``."""
        return precision in self.precisions

    def to_dict(self) -> dict[str, Any]:
        """The target as plain JSON/TOML data (lists, not tuples); :func:`parse_target` reads it back."""
        return {
            f.name: list(value) if isinstance(value := getattr(self, f.name), tuple) else value
            for f in dataclasses.fields(self)
            if f.name != "source"
        }

    def summary(self) -> dict[str, Any]:
        """One row for ``targets list``."""
        return {
            "name": self.name,
            "backend": self.kind,
            "kind": self.kind,
            "architecture": self.architecture,
            "compute_capability": self.gpu_compute_capability,
            "dla_cores": self.dla_cores,
            "dla_cores_verified": self.dla_cores_verified,
            "jetpack": self.jetpack,
            "l4t": self.l4t,
            "tensorrt": self.tensorrt,
            "cuda": self.cuda,
            "memory_gb": self.memory_gb,
            "max_onnx_opset": self.max_onnx_opset,
            "precisions": list(self.precisions),
            "uint8_input": self.uint8_input,
            "camera_fps": self.camera_fps,
            "latency_budget_ms": self.latency_budget_ms,
            "verified_on_hardware": self.verified_on_hardware,
            "description": self.description,
            "default": self.name == DEFAULT_TARGET,
            "builtin": _CATALOG.is_builtin(self.source),
            "source": self.source,
        }

    def describe(self) -> dict[str, Any]:
        """Everything ``targets show`` prints: every field plus derived values."""
        return {
            **self.to_dict(),
            "backend": self.kind,
            "compute_capability": self.gpu_compute_capability,
            "stack": self.stack,
            "dla_cores_verified": self.dla_cores_verified,
            "frame_interval_ms": round(self.frame_interval_ms, 3),
            "docker_platform": self.docker_platform,
            "default": self.name == DEFAULT_TARGET,
            "builtin": _CATALOG.is_builtin(self.source),
            "source": self.source,
        }


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


# --------------------------------------------------------------------------- opsets


def max_opset_for(target: Target) -> int:
    """The highest ONNX opset ``target`` parses; export at this opset (or lower) for it."""
    return target.max_onnx_opset


def check_opset(target: Target, opset: int) -> None:
    """Refuse an ONNX model whose opset the target cannot parse.

    Args:
        target: The target the model is built for.
        opset: The model's ONNX opset (default domain).

    Raises:
        UsageError: ``opset`` is above the target's :attr:`Target.max_onnx_opset`.
    """
    limit = max_opset_for(target)
    if opset > limit:
        verb = "parses" if target.is_tensorrt else "runs"
        raise UsageError(
            f"the ONNX is opset {opset}, but target {target.name} ({target.stack}) {verb} ONNX opsets up to {limit}; "
            f"re-export with --opset {limit}"
        )


# --------------------------------------------------------------------------- validation


def _dotted(value: Any) -> str:
    text = cf.string(value)
    if text and not _VERSION_RE.match(text):
        raise cf.Invalid(f"expected a version such as '8.5.2' (digits and dots), got {value!r}")
    return text


def _python(value: Any) -> str:
    text = cf.string(value)
    if text and not re.match(r"^3\.[0-9]{1,2}$", text):
        raise cf.Invalid(f"expected a Python version such as '3.10', got {value!r}")
    return text


def _sm(value: Any) -> str:
    text = cf.string(value)
    if text and not _SM_RE.match(text):
        raise cf.Invalid(f"expected a compute capability 'major.minor' such as '8.7', got {value!r}")
    return text


def _image(value: Any) -> str:
    text = cf.string(value).strip()
    if not text or any(c.isspace() for c in text):
        raise cf.Invalid(f"expected a container image reference such as 'nvcr.io/nvidia/l4t-jetpack:r36.4.0', got {value!r}")
    return text


_FIELDS = {f.name: f for f in dataclasses.fields(Target) if f.name != "source"}

_CHECKS: dict[str, Any] = {
    "name": cf.name,
    "description": cf.string,
    "kind": cf.choice(KINDS),
    "architecture": cf.choice(ARCHITECTURES),
    "python": _python,
    "gpu_compute_capability": _sm,
    "dla_cores": cf.int_range(0, 8),
    "jetpack": cf.string,
    "l4t": cf.string,
    "tensorrt": _dotted,
    "cuda": _dotted,
    "memory_gb": cf.float_range(0.0, 4096.0),
    "max_onnx_opset": cf.int_range(MIN_OPSET, MAX_OPSET),
    "precisions": cf.string_list(cf.choice(PRECISIONS), allow_empty=False),
    "uint8_input": cf.boolean,
    "runtime_image": _image,
    "build_image": _image,
    "camera_fps": cf.float_range(0.0, 1000.0, low_open=True),
    "latency_budget_ms": cf.float_range(0.0, 60_000.0, low_open=True),
    "verified_on_hardware": cf.boolean,
    "unverified": cf.string_list(cf.choice(tuple(name for name in _FIELDS if name != "name"))),
    "notes": cf.string_list(),
    "service_memory_mb": cf.int_range(64, 1_048_576),
    "service_cpus": cf.float_range(0.01, 1024.0),
    "service_pids": cf.int_range(16, 1_000_000),
}
assert set(_CHECKS) == set(_FIELDS), "every Target field has a check"

_REQUIRED = ("name", "kind", "architecture", "max_onnx_opset", "precisions", "runtime_image", "build_image")
# Fields that describe a GPU software stack: required on TensorRT targets, meaningless on CPU ones.
_GPU_ONLY = ("gpu_compute_capability", "tensorrt", "cuda", "jetpack", "l4t", "dla_cores")
_TENSORRT_REQUIRED = ("gpu_compute_capability", "tensorrt", "cuda")


def parse_target(data: Mapping[str, Any], source: str = "<target>", *, expect_name: str | None = None) -> Target:
    """Validate parsed TOML (or :meth:`Target.to_dict` output) into a :class:`Target`.

    Args:
        data: The target's fields.
        source: Where it came from, used in error messages and kept as ``Target.source``.
        expect_name: The name the ``name`` field must have (the catalog file's stem), if any.

    Raises:
        BadInputError: A missing, unknown or invalid field, or fields that contradict each other
            (the message names ``source`` and the field).
    """
    ctx = cf.FileFields(source, "target file")
    if not isinstance(data, Mapping):
        raise BadInputError(f"{source}: expected a table of target fields, got {type(data).__name__}; fix the target file")
    ctx.unknown(data, _CHECKS)
    for required in _REQUIRED:
        if required not in data:
            raise ctx.fail(required, "missing (every target names itself, its backend, architecture, opset limit, "
                                     "precisions and container images)")
    values = {key: ctx.check(key, data[key], check) for key, check in _CHECKS.items() if key in data}
    if expect_name is not None and values["name"] != expect_name:
        raise ctx.fail("name", f"is {values['name']!r} but the file is {expect_name}.toml; make them match")
    if "service_memory_mb" not in values and values.get("kind") == "tensorrt" and values.get("memory_gb"):
        values["service_memory_mb"] = max(512, int(values["memory_gb"] * 512))  # CUDA shares the module's memory
    for key in ("memory_gb", "camera_fps", "latency_budget_ms", "service_cpus"):
        if key in values:
            values[key] = float(values[key])
    if "latency_budget_ms" not in values:
        # One frame interval: a unit that takes longer than that falls behind the camera.
        values["latency_budget_ms"] = float(math.floor(1000.0 / values.get("camera_fps", 15.0)))

    if values["kind"] == "tensorrt":
        _check_tensorrt(ctx, values)
    else:
        _check_onnxruntime(ctx, values)
    if "fp32" not in values["precisions"]:
        raise ctx.fail("precisions", f"{list(values['precisions'])} lacks fp32; every target runs FP32, add it")
    return Target(**values, source=source)


def _check_tensorrt(ctx: cf.FileFields, values: dict[str, Any]) -> None:
    for key in _TENSORRT_REQUIRED:
        if not values.get(key):
            raise ctx.fail(key, "missing on a tensorrt target (engines are tied to the GPU and the TensorRT/CUDA "
                                "versions); add it from the device's JetPack release")
    if values.get("memory_gb", 0.0) <= 0:
        raise ctx.fail("memory_gb", "missing or 0 on a tensorrt target; give the module's memory in GB")
    trt = _version(values["tensorrt"])
    if trt[:2] < _MIN_TENSORRT:
        raise ctx.fail("tensorrt", f"{values['tensorrt']} is older than TensorRT 8.0, the oldest the build supports "
                                   "(JetPack 4.6); upgrade the device's JetPack")
    for below, ceiling in _PARSER_OPSET_CEILINGS:
        if trt[:2] < below:
            if values["max_onnx_opset"] > ceiling:
                raise ctx.fail("max_onnx_opset", f"{values['max_onnx_opset']} is above what the ONNX parser of TensorRT "
                                                 f"{values['tensorrt']} accepts ({ceiling}); use {ceiling} or lower")
            break
    major, minor = (int(p) for p in values["gpu_compute_capability"].split("."))
    sm = (major, minor)
    precisions = values["precisions"]
    if "fp16" in precisions and not (sm in _FP16_SM or sm >= (7, 0)):
        raise ctx.fail("precisions", f"fp16 needs fast FP16 arithmetic, which SM {major}.{minor} lacks; remove fp16")
    if "int8" in precisions and not (sm in _INT8_SM or sm >= (7, 0)):
        raise ctx.fail("precisions", f"int8 needs INT8 instructions (SM 6.1 or 7.0+), which SM {major}.{minor} lacks; "
                                     "remove int8")
    if values.get("dla_cores", 0) > 0 and sm < _DLA_SM:
        raise ctx.fail("dla_cores", f"SM {major}.{minor} predates the DLA (Xavier, SM 7.2, was the first); set it to 0")
    if values.get("uint8_input") and trt[:2] < _UINT8_TENSORRT:
        raise ctx.fail("uint8_input", f"TensorRT {values['tensorrt']} has no uint8 network input (it arrived in 8.5); "
                                      "set it to false and export with --input float-nchw")


def _check_onnxruntime(ctx: cf.FileFields, values: dict[str, Any]) -> None:
    for key in _GPU_ONLY:
        if values.get(key):
            raise ctx.fail(key, f"{values[key]!r} does not apply to an onnxruntime (CPU) target; remove it, or make "
                                "the target kind = \"tensorrt\"")
    extra = [p for p in values["precisions"] if p not in _ONNXRUNTIME_PRECISIONS]
    if extra:
        raise ctx.fail("precisions", f"{', '.join(extra)} is not available on an onnxruntime CPU target (no fast FP16 "
                                     f"kernels); use {' and '.join(_ONNXRUNTIME_PRECISIONS)}")


# --------------------------------------------------------------------------- catalog


def builtin_dir() -> Path:
    """The built-in catalog shipped as package data (``toolchain/catalog/targets``)."""
    return cf.CATALOG_ROOT / "targets"


_CATALOG = cf.Catalog(kind="target", builtin=builtin_dir(), env=TARGETS_ENV, list_command="toolchain targets list")


def target_dirs() -> list[Path]:
    """Directories searched by name, first match wins: ``$TOOLCHAIN_TARGETS`` entries, then the built-ins.

    Raises:
        InputNotFoundError: ``$TOOLCHAIN_TARGETS`` names something that is not a directory.
    """
    return _CATALOG.dirs()


def _read(path: Path, expect_name: str | None) -> Target:
    return parse_target(_CATALOG.read(path), source=str(path), expect_name=expect_name)


def load_target(name_or_path: str | Path | Target = DEFAULT_TARGET) -> Target:
    """Load a target by catalog name or from a ``.toml`` path (a :class:`Target` is returned as is).

    Args:
        name_or_path: A target name (found in ``$TOOLCHAIN_TARGETS`` then the built-in catalog) or a path.

    Raises:
        InputNotFoundError: No target of that name, or the file does not exist.
        BadInputError: The file is not valid TOML or fails validation.
    """
    if isinstance(name_or_path, Target):
        return name_or_path
    path, expect_name = _CATALOG.locate(name_or_path)
    return _read(path, expect_name)


def list_targets() -> list[Target]:
    """Every target reachable by name, sorted by name (a ``$TOOLCHAIN_TARGETS`` file hides a built-in of the same name).

    Raises:
        BadInputError: A catalog file is invalid (the message names it).
    """
    return [_read(path, name) for name, path in sorted(_CATALOG.files().items())]
