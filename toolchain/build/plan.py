"""The build plan: everything that decides what engine a build makes, checked against the target
before anything is built, and the key that names that engine.

``plan_build`` turns a target, an ONNX artifact's record body and the user's options into a frozen
:class:`BuildPlan`, refusing what the target cannot run with a message that says what to do. The
same plan serves both backends:

- TensorRT targets (Jetson): the plan resolves the precision and the builder flags for the target's
  TensorRT version, DLA use, the workspace pool limit and the optimisation profile, and
  :meth:`BuildPlan.request` gives the JSON that ``tensorrt_builder.py`` reads on the device.
- ONNX Runtime targets (CPU): precision fp32 or int8 only, no DLA, no workspace, no profile (ONNX
  Runtime runs any batch of a dynamic-batch ONNX); the key includes the ONNX Runtime version.

Rules (each refusal is a :class:`~toolchain.errors.UsageError` unless stated):

- The ONNX opset must be within ``target.max_onnx_opset`` (:func:`~toolchain.targets.profile.check_opset`).
- An FP32 ONNX builds as fp32, or fp16 where the target lists it; ``best`` is fp16 on a TensorRT
  target that supports it, fp32 otherwise. ``int8`` with an FP32 ONNX is refused: quantize it with
  ``toolchain quantize`` (explicit Q/DQ); there are no implicit calibrators (deprecated in TensorRT 10.1).
- A Q/DQ ONNX (``onnx-int8`` from ``toolchain quantize``) builds as int8 only. TensorRT >= 10: a
  strongly typed network (the Q/DQ nodes and the ONNX's own types decide every layer's precision;
  precision flags are not allowed with it). TensorRT 8.x: the INT8 flag plus the FP16 flag, so the
  layers the quantizer left in float may run in FP16.
- DLA: TensorRT targets with SM >= 7.2 only; the core must be below ``target.dla_cores``, unless the
  count is listed in ``target.unverified`` (then any core 0-7 is planned with a note, and the builder
  checks ``num_DLA_cores`` on the device); fp16 only (see the next two rules); always with GPU
  fallback, and the builder reads back where the layers went: a DLA build that put no layer on the
  DLA fails unless ``allow_gpu_fallback_only`` (``--allow-gpu-fallback-only``) says that is wanted.
- DLA and Q/DQ: refused (see :data:`DLA_QDQ_DECISION`). The DLA runs only implicitly quantized INT8
  (per-tensor scales from a calibrator or cache), not explicit Q/DQ networks; the FP32 ONNX the Q/DQ
  one was quantized from builds FP16 on the DLA (``--precision fp16 --dla N``), and the Q/DQ ONNX
  builds INT8 on the GPU (no ``--dla``).
- DLA and shapes: DLA has no dynamic dimensions (NVIDIA's "DLA Supported Layers and Restrictions":
  the profile's min, opt and max must be equal, and the run-time shape must be the built one). A
  fixed-batch ONNX is static already; a dynamic-batch ONNX needs ``batch=(N, N, N)``
  (``--batch N,N,N``); a range, or no ``batch`` (whose default is the range ``(1, 1, 8)``), is refused.
- Workspace (TensorRT memory pool limit): 1024 MiB by default, capped at the target's memory.
- ``batch=(min, opt, max)``: the optimisation profile of a dynamic-batch ONNX. Refused for a fixed
  batch. A dynamic-batch ONNX without ``batch`` gets ``(1, 1, 8)`` on the GPU: the roadside pipeline
  runs one frame at a time (so TensorRT tunes for batch 1) and may catch up on a few queued frames
  at once; the TensorRT runner pads a short batch up to the profile's min.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolchain.errors import BadInputError, MissingEnvironmentError, UsageError
from toolchain.hashing import digest_json
from toolchain.targets.profile import Target, check_opset

__all__ = [
    "BUILDER_SCRIPT",
    "DEFAULT_MAX_BATCH",
    "DEFAULT_WORKSPACE_MIB",
    "DLA_QDQ_DECISION",
    "PLAN_VERSION",
    "PRECISION_CHOICES",
    "BuildPlan",
    "builder_version",
    "is_qdq",
    "onnx_input_fields",
    "plan_build",
]

PRECISION_CHOICES: tuple[str, ...] = ("fp32", "fp16", "int8", "best")

DEFAULT_WORKSPACE_MIB = 1024
"""TensorRT workspace pool limit when none is given (capped at the target's memory)."""

DEFAULT_MAX_BATCH = 8
"""Largest batch of the default optimisation profile ``(1, 1, 8)`` of a dynamic-batch ONNX."""

MAX_BATCH = 1024
"""Upper bound on any profile batch size (a typo guard, not a hardware limit)."""

PLAN_VERSION = 1
"""Bump when the meaning of a plan field changes: it is part of every key."""

BUILDER_SCRIPT = Path(__file__).with_name("tensorrt_builder.py")
"""The self-contained builder copied into the target's container (or run in-process)."""

ONNX_INT8_TYPE = "onnx-int8"
"""Artifact type of a Q/DQ ONNX from ``toolchain quantize``."""

DLA_MAX_BATCH = 4096
"""Largest batch the DLA runs (NVIDIA, "DLA Supported Layers and Restrictions", general restrictions)."""

DLA_QDQ_DECISION = (
    "refuse: a Q/DQ (explicitly quantized) ONNX is not built for the DLA. Sources: an NVIDIA TensorRT "
    "maintainer, NVIDIA/TensorRT#2222 (DLA does not support QAT/explicit quantization; converting to implicit "
    "quantization would work); NVIDIA/Model-Optimizer PR #1661 (\"DLA still only supports IQ\"; the suggested path "
    "is NVIDIA's qdq-translator, Deep-Learning-Accelerator-SW/tools/qdq-translator, which strips the Q/DQ nodes and "
    "writes a calibration cache plus per-layer precisions, needing DLA 3.14.1 = JetPack 6.0 on Jetson Orin); "
    "NVIDIA/Model-Optimizer#135 (no calibration-cache export: incompatible with the deprecation of implicit "
    "quantization, TensorRT 10.1). Rebuilding that translator here would be an implicit-INT8 path (deprecated "
    "calibrator API, per-layer precision constraints, JetPack 6 only) that nothing here can run, and a DLA engine "
    "with wrong scales gives wrong scores without an error. FP16 on the DLA is the documented path "
    "(trtexec --useDLACore=0 --fp16 --allowGPUFallback in NVIDIA's \"Working with DLA\")."
)
"""Why plans refuse DLA with a Q/DQ ONNX, and the sources of that choice (also in the README)."""

# Strongly typed networks (NetworkDefinitionCreationFlag.STRONGLY_TYPED) arrived in TensorRT 9; the
# Jetson stacks jump from 8.x (JetPack 4/5) to 10.x (JetPack 6), so 10 is where the plan uses them.
_STRONGLY_TYPED_TENSORRT = (10,)
_DLA_SM = (7, 2)
_MAX_DLA_CORE_UNVERIFIED = 7
_ONNXRUNTIME_GRAPH_OPTIMIZATION = "extended"  # what toolchain/build/onnxruntime_cpu.py applies


def builder_version() -> str:
    """sha256 (first 16 hex) of ``tensorrt_builder.py``: a changed builder is a different engine."""
    return hashlib.sha256(BUILDER_SCRIPT.read_bytes()).hexdigest()[:16]


def _onnxruntime_version() -> str:
    try:
        import onnxruntime
    except ImportError:
        raise MissingEnvironmentError(
            "onnxruntime is not installed, and CPU-target builds use it; install it with: pip install onnxruntime"
        ) from None
    return str(onnxruntime.__version__)


@dataclass(frozen=True, kw_only=True)
class BuildPlan:
    """What a build makes, for which target, with which options; :attr:`key` names the result.

    Attributes:
        target: Target name.
        backend: ``tensorrt`` or ``onnxruntime`` (the target's kind).
        precision: Resolved precision: ``fp32``, ``fp16`` or ``int8``.
        flags: TensorRT builder settings in words (``FP16``, ``INT8``, ``STRONGLY_TYPED``, ``DLA``,
            ``GPU_FALLBACK``); empty for ONNX Runtime targets.
        fp16: Set ``BuilderFlag.FP16``.
        int8: Set ``BuilderFlag.INT8`` (explicit quantization from the ONNX's Q/DQ nodes, no calibrator).
        strongly_typed: Create the network with ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``.
        dla_core: DLA core to run on, or ``None`` for the GPU.
        gpu_fallback: Let layers DLA cannot run fall back to the GPU (always on with DLA).
        allow_gpu_fallback_only: Accept a DLA build whose layers all fell back to the GPU (otherwise the
            builder fails it: such an engine is a GPU engine recorded as ``dla:N``).
        workspace_mib: TensorRT workspace pool limit (``None`` for ONNX Runtime).
        batch: ``(min, opt, max)`` batch of the optimisation profile (dynamic-batch ONNX on TensorRT), else
            ``None``; on the DLA always static (min = opt = max).
        dynamic_batch: Whether the ONNX has a dynamic batch dimension.
        input_name: The ONNX input tensor name.
        input_dtype: ``float32`` or ``uint8``.
        input_shape: The ONNX input shape (``"batch"`` for a dynamic batch dimension).
        min_shape: Smallest full input shape the engine accepts (ONNX Runtime plans with a dynamic
            batch show batch 1 in all three shapes: ONNX Runtime takes any batch).
        opt_shape: The shape TensorRT tunes for.
        max_shape: Largest full input shape.
        onnx_sha256: sha256 of the ONNX bytes.
        opset: The ONNX opset.
        qdq: Whether the ONNX carries Q/DQ (explicitly quantized INT8) nodes.
        tensorrt: TensorRT version of the target (empty for ONNX Runtime).
        jetpack: JetPack release of the target (empty off Jetson).
        l4t: L4T release of the target (empty off Jetson).
        compute_capability: GPU SM of the target (empty for CPU targets).
        architecture: CPU architecture of the target.
        runtime: What builds and runs the artifact, with its version: ``tensorrt 10.3.0``, ``onnxruntime 1.20.1``.
        build_image: The container image the target builds in (for remote builds; not part of the key).
        builder_version: Version of the builder code (see :func:`builder_version`), or the ONNX
            Runtime graph optimisation level for CPU targets.
        notes: Things a human should know about this plan (unverified DLA count, defaults taken).
        key: sha256 over everything that makes the engine different.
    """

    target: str
    backend: str
    precision: str
    flags: tuple[str, ...] = ()
    fp16: bool = False
    int8: bool = False
    strongly_typed: bool = False
    dla_core: int | None = None
    gpu_fallback: bool = False
    allow_gpu_fallback_only: bool = False
    workspace_mib: int | None = None
    batch: tuple[int, int, int] | None = None
    dynamic_batch: bool = False
    input_name: str
    input_dtype: str
    input_shape: tuple[int | str, ...]
    min_shape: tuple[int, ...]
    opt_shape: tuple[int, ...]
    max_shape: tuple[int, ...]
    onnx_sha256: str
    opset: int
    qdq: bool = False
    tensorrt: str = ""
    jetpack: str = ""
    l4t: str = ""
    compute_capability: str = ""
    architecture: str = ""
    runtime: str
    build_image: str = field(default="", compare=False)
    builder_version: str
    notes: tuple[str, ...] = field(default=(), compare=False)
    key: str = ""

    @property
    def is_tensorrt(self) -> bool:
        """Whether the plan builds a TensorRT engine."""
        return self.backend == "tensorrt"

    @property
    def device(self) -> str:
        """``gpu`` or ``dla:N``: where the engine runs."""
        return "gpu" if self.dla_core is None else f"dla:{self.dla_core}"

    def key_fields(self) -> dict[str, Any]:
        """The fields the key is the digest of (see :attr:`key`)."""
        return _key_fields(self)

    def to_json(self) -> dict[str, Any]:
        """The plan as JSON data (tuples as lists), for build records and ``--json`` output."""
        data: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, tuple):
                value = list(value)
            data[name] = value
        data["device"] = self.device
        return data

    def request(self, *, onnx: str = "model.onnx", timing_cache: str | None = None) -> dict[str, Any]:
        """The JSON request ``tensorrt_builder.py`` reads.

        Args:
            onnx: The ONNX file name, relative to the request file's directory (or the build workdir).
            timing_cache: A timing cache file name to start from (relative likewise), or ``None``.

        Raises:
            UsageError: The plan is for an ONNX Runtime target, which the TensorRT builder does not build.
        """
        if not self.is_tensorrt:
            raise UsageError(f"target {self.target} is an ONNX Runtime target; it has no TensorRT builder request")
        profile = None
        if self.batch is not None:
            profile = {"input": self.input_name, "min": list(self.min_shape), "opt": list(self.opt_shape),
                       "max": list(self.max_shape)}
        return {
            "format": 1,
            "onnx": onnx,
            "onnx_sha256": self.onnx_sha256,
            "target": self.target,
            "precision": self.precision,
            "strongly_typed": self.strongly_typed,
            "fp16": self.fp16,
            "int8": self.int8,
            "dla_core": self.dla_core,
            "gpu_fallback": self.gpu_fallback,
            "allow_gpu_fallback_only": self.allow_gpu_fallback_only,
            "workspace_mib": self.workspace_mib,
            "profile": profile,
            "timing_cache": timing_cache,
            "expect": {"tensorrt": self.tensorrt, "compute_capability": self.compute_capability},
            "key": self.key,
        }


def _key_fields(plan: BuildPlan) -> dict[str, Any]:
    return {
        "plan_version": PLAN_VERSION,
        "onnx_sha256": plan.onnx_sha256,
        "target": plan.target,
        "backend": plan.backend,
        "precision": plan.precision,
        "flags": sorted(plan.flags),
        "strongly_typed": plan.strongly_typed,
        "dla_core": plan.dla_core,
        "gpu_fallback": plan.gpu_fallback,
        # Not an engine difference, but a cached GPU-only "DLA" engine must not satisfy a build that refuses one.
        "allow_gpu_fallback_only": plan.allow_gpu_fallback_only,
        "workspace_mib": plan.workspace_mib,
        "shapes": [list(plan.min_shape), list(plan.opt_shape), list(plan.max_shape)],
        "input": [plan.input_name, plan.input_dtype, list(plan.input_shape)],
        "tensorrt": plan.tensorrt,
        "jetpack": plan.jetpack,
        "l4t": plan.l4t,
        "compute_capability": plan.compute_capability,
        "architecture": plan.architecture,
        "runtime": plan.runtime,
        "builder_version": plan.builder_version,
    }


# --------------------------------------------------------------------------- ONNX facts


def is_qdq(onnx_body: Mapping[str, Any]) -> bool:
    """Whether an ONNX record body is an explicitly quantized (Q/DQ) INT8 ONNX from ``toolchain quantize``."""
    return onnx_body.get("type") == ONNX_INT8_TYPE or int(onnx_body.get("qdq_nodes") or 0) > 0


def onnx_input_fields(path: str | Path) -> dict[str, Any]:
    """``input_name``, ``input_shape`` (``"batch"`` for a symbolic dimension), ``input_dtype`` and
    ``opset`` read from an ONNX file.

    An INT8 ONNX record from ``toolchain quantize`` does not carry the input fields an export record
    does; merge these into its body before :func:`plan_build`: ``plan_build(t, {**body, **onnx_input_fields(p)})``.

    Raises:
        BadInputError: The file is not an ONNX model with exactly one graph input.
    """
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others
        raise BadInputError(f"{path} is not a readable ONNX model ({exc}); pass an ONNX from export or quantize") from None
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise BadInputError(f"{path} has {len(inputs)} graph inputs; the toolchain builds single-input classifiers")
    tensor = inputs[0].type.tensor_type
    shape: list[int | str] = []
    for dim in tensor.shape.dim:
        shape.append(dim.dim_value if dim.HasField("dim_value") else "batch")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return {
        "input_name": inputs[0].name,
        "input_shape": shape,
        "input_dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name,
        "opset": int(opset),
    }


def _input(onnx_body: Mapping[str, Any]) -> tuple[str, str, tuple[int | str, ...]]:
    missing = [k for k in ("input_name", "input_shape", "input_dtype") if not onnx_body.get(k)]
    if missing:
        raise BadInputError(
            f"the ONNX record has no {', '.join(missing)}; an INT8 ONNX record needs its input read from the file "
            "(toolchain.build.plan.onnx_input_fields) before planning"
        )
    shape = tuple(onnx_body["input_shape"])
    if not shape or any(not (isinstance(d, str) or (isinstance(d, int) and d > 0)) for d in shape):
        raise BadInputError(f"the ONNX input shape {list(shape)} is not valid (positive sizes, 'batch' for dynamic)")
    if any(isinstance(d, str) for d in shape[1:]):
        raise BadInputError(
            f"the ONNX input shape {list(shape)} has a dynamic dimension besides the batch; re-export it with a fixed "
            "input size"
        )
    dtype = str(onnx_body["input_dtype"])
    if dtype not in ("float32", "uint8"):
        raise BadInputError(f"the ONNX input is {dtype}; the toolchain builds float32 or uint8 inputs")
    return str(onnx_body["input_name"]), dtype, shape


def _dynamic(onnx_body: Mapping[str, Any], shape: tuple[int | str, ...]) -> bool:
    batch = str(onnx_body.get("batch", "")).strip().lower()
    return batch == "dynamic" or isinstance(shape[0], str)


# --------------------------------------------------------------------------- rules


def _resolve_precision(target: Target, qdq: bool, requested: str) -> str:
    if requested not in PRECISION_CHOICES:
        raise UsageError(f"--precision {requested!r} is not one of {', '.join(PRECISION_CHOICES)}")
    if qdq:
        if requested not in ("best", "int8"):
            raise UsageError(
                f"--precision {requested} needs an FP32 ONNX, but this one is INT8 (Q/DQ from `toolchain quantize`); "
                "build it with --precision int8 (or best), or pass the FP32 ONNX it was quantized from"
            )
        if not target.supports("int8"):
            raise UsageError(
                f"target {target.name} does not run int8 (it supports {', '.join(target.precisions)}); build the FP32 "
                f"ONNX this was quantized from with --precision {_best_float(target)}"
            )
        return "int8"
    if requested == "int8":
        raise UsageError(
            "--precision int8 needs an explicitly quantized ONNX: run `toolchain quantize` on this ONNX and build "
            "the INT8 ONNX it registers (TensorRT's implicit INT8 calibrators are deprecated since 10.1 and not used)"
        )
    if requested == "best":
        return _best_float(target)
    if not target.supports(requested):
        why = " (ONNX Runtime's CPU provider has no fast FP16 kernels)" if not target.is_tensorrt else ""
        raise UsageError(
            f"target {target.name} does not run {requested}{why}; it supports {', '.join(target.precisions)}: "
            f"use --precision {_best_float(target)}"
        )
    return requested


def _best_float(target: Target) -> str:
    return "fp16" if target.is_tensorrt and target.supports("fp16") else "fp32"


def _check_dla(target: Target, dla_core: int | None, precision: str, notes: list[str]) -> None:
    if dla_core is None:
        return
    if isinstance(dla_core, bool) or not isinstance(dla_core, int) or dla_core < 0:
        raise UsageError(f"--dla {dla_core!r} is not a DLA core number; use 0 or 1")
    if not target.is_tensorrt:
        raise UsageError(f"--dla needs a Jetson target with a DLA; target {target.name} runs ONNX Runtime on the CPU")
    sm = target.compute_capability
    if sm is None or sm < _DLA_SM:
        raise UsageError(
            f"target {target.name} (SM {target.gpu_compute_capability}) has no DLA (DLA exists from Xavier, SM 7.2, on); "
            "drop --dla to build for the GPU"
        )
    if target.dla_cores_verified:
        if target.dla_cores == 0:
            raise UsageError(f"target {target.name} has no DLA cores; drop --dla to build for the GPU")
        if dla_core >= target.dla_cores:
            raise UsageError(
                f"target {target.name} has {target.dla_cores} DLA cores (0 to {target.dla_cores - 1}); "
                f"--dla {dla_core} does not exist on it"
            )
    else:
        if dla_core > _MAX_DLA_CORE_UNVERIFIED:
            raise UsageError(f"--dla {dla_core} is not a DLA core number (Jetson modules have at most 2); use 0 or 1")
        notes.append(
            f"the DLA count of {target.name} is not confirmed (listed as unverified): the builder checks "
            f"num_DLA_cores on the device and refuses if core {dla_core} is missing"
        )
    if precision == "fp32":
        raise UsageError(
            "the DLA runs only FP16 and INT8 (and INT8 only implicitly quantized, which the toolchain does not "
            "make): use --precision fp16, or drop --dla to build fp32 for the GPU"
        )


def _refuse_dla_qdq(onnx_body: Mapping[str, Any], dla_core: int) -> None:
    """A Q/DQ ONNX is never planned for the DLA: see :data:`DLA_QDQ_DECISION` for why and the sources."""
    source = str(onnx_body.get("fp32") or "")
    fp32 = f"the FP32 ONNX it was quantized from ({source[:12]})" if source else "the FP32 ONNX it was quantized from"
    raise UsageError(
        "this ONNX is explicitly quantized (Q/DQ nodes from `toolchain quantize`), and the DLA runs only implicitly "
        "quantized INT8 (NVIDIA/TensorRT#2222, NVIDIA/Model-Optimizer#1661): at best TensorRT would fall back to the "
        "GPU and the engine would be a GPU engine named dla. Either build " + fp32 + f" for the DLA with --precision fp16 --dla {dla_core}, or "
        "build this INT8 ONNX for the GPU (drop --dla)"
    )


def _workspace(target: Target, workspace_mib: int | None) -> int:
    cap = int(target.memory_gb * 1024) if target.memory_gb > 0 else None
    if workspace_mib is None:
        return DEFAULT_WORKSPACE_MIB if cap is None else min(DEFAULT_WORKSPACE_MIB, cap)
    if isinstance(workspace_mib, bool) or not isinstance(workspace_mib, int) or workspace_mib < 1:
        raise UsageError(f"--workspace {workspace_mib!r} is not a size in MiB; use a positive integer such as 1024")
    if cap is not None and workspace_mib > cap:
        raise UsageError(
            f"--workspace {workspace_mib} MiB is more than target {target.name} has ({target.memory_gb:g} GB = {cap} MiB, "
            f"shared by CPU and GPU on Jetson); use at most {cap}, typically {DEFAULT_WORKSPACE_MIB}"
        )
    return workspace_mib


def _batch(
    target: Target, dynamic: bool, batch: tuple[int, int, int] | None, shape: tuple[int | str, ...], notes: list[str],
    dla_core: int | None = None,
) -> tuple[int, int, int] | None:
    if not target.is_tensorrt:
        if batch is not None:
            raise UsageError(
                f"--batch sets a TensorRT optimisation profile; target {target.name} runs ONNX Runtime, which takes "
                "any batch of a dynamic-batch ONNX as is: drop --batch"
            )
        return None
    on_dla = dla_core is not None
    if not dynamic:
        if batch is not None:
            raise UsageError(
                f"--batch needs an ONNX exported with a dynamic batch, but this one has a fixed batch of {shape[0]}; "
                "re-export with `toolchain export --batch dynamic`, or drop --batch"
            )
        if on_dla and int(shape[0]) > DLA_MAX_BATCH:
            raise UsageError(f"the DLA runs batches of at most {DLA_MAX_BATCH}; this ONNX has a fixed batch of "
                             f"{shape[0]}: re-export it with a smaller batch or drop --dla")
        return None  # a fixed batch is a static shape: what the DLA needs
    if batch is None:
        if on_dla:
            raise UsageError(
                "the DLA does not support dynamic dimensions (NVIDIA's DLA restrictions: the profile's min, opt and "
                "max must be equal, and the shape at run time must be the one built), and this ONNX has a dynamic "
                "batch: pass one static batch with --batch N,N,N (for example --batch 1,1,1: the roadside pipeline "
                "runs one frame at a time), or re-export with a fixed batch (`toolchain export --batch N`)"
            )
        notes.append(f"dynamic batch without --batch: profile min 1, opt 1, max {DEFAULT_MAX_BATCH}")
        return (1, 1, DEFAULT_MAX_BATCH)
    if (not isinstance(batch, (tuple, list)) or len(batch) != 3
            or any(isinstance(b, bool) or not isinstance(b, int) for b in batch)):
        raise UsageError(f"--batch {batch!r} must be three integers MIN,OPT,MAX such as 1,1,8")
    low, opt, high = (int(b) for b in batch)
    if not 1 <= low <= opt <= high <= MAX_BATCH:
        raise UsageError(
            f"--batch {low},{opt},{high} must satisfy 1 <= MIN <= OPT <= MAX <= {MAX_BATCH}; for example 1,1,8"
        )
    if on_dla and not low == opt == high:
        one = " (`--batch N` alone means 1,N,N)" if low == 1 and opt == high else ""
        raise UsageError(
            f"--batch {low},{opt},{high} is a range, and the DLA does not support dynamic dimensions (NVIDIA's DLA "
            "restrictions: min, opt and max must be equal, and the run-time shape must be the built one): pass one "
            f"static batch, --batch {high},{high},{high} or --batch {low},{low},{low}{one}, or drop --dla for a "
            "batch range on the GPU"
        )
    if on_dla:
        notes.append(f"static DLA profile: batch {low} only; the TensorRT runner pads shorter batches to {low}")
    return (low, opt, high)


# --------------------------------------------------------------------------- plan


def plan_build(
    target: Target,
    onnx_body: Mapping[str, Any],
    *,
    precision: str = "best",
    dla_core: int | None = None,
    workspace_mib: int | None = None,
    batch: tuple[int, int, int] | None = None,
    allow_gpu_fallback_only: bool = False,
) -> BuildPlan:
    """Check a build against its target and decide everything about it (see the module docstring).

    Args:
        target: The hardware target.
        onnx_body: The ONNX artifact's record body: ``blob`` (sha256), ``opset``, ``batch`` (``"1"``,
            ``"8"``, ``"dynamic"``), ``input_name``, ``input_shape``, ``input_dtype``, and ``type``
            (``onnx`` or ``onnx-int8``). An INT8 record lacks the input fields: merge
            :func:`onnx_input_fields` of its file into it.
        precision: ``fp32``, ``fp16``, ``int8`` or ``best``.
        dla_core: DLA core to build for (TensorRT targets with a DLA), or ``None`` for the GPU.
        workspace_mib: TensorRT workspace pool limit in MiB (default 1024, capped at the target's memory).
        batch: ``(min, opt, max)`` batch of the optimisation profile, for a dynamic-batch ONNX on TensorRT
            (on the DLA it must be static: ``(N, N, N)``).
        allow_gpu_fallback_only: With ``dla_core``: accept an engine whose layers all run on the GPU.

    Returns:
        The plan, with its :attr:`BuildPlan.key`.

    Raises:
        UsageError: An option the target or the ONNX rules out (the message says what to use instead).
        BadInputError: The record body lacks what a plan needs (sha256, opset, input).
        MissingEnvironmentError: A CPU-target plan without onnxruntime installed.
    """
    sha = str(onnx_body.get("blob") or "")
    if len(sha) != 64:
        raise BadInputError("the ONNX record has no blob sha256; pass an ONNX artifact from export or quantize")
    try:
        opset = int(onnx_body.get("opset") or 0)
    except (TypeError, ValueError):
        opset = 0
    if opset <= 0:
        raise BadInputError("the ONNX record has no opset; re-register it with `toolchain export`")
    check_opset(target, opset)
    input_name, input_dtype, shape = _input(onnx_body)
    dynamic = _dynamic(onnx_body, shape)
    if not dynamic and str(onnx_body.get("batch", shape[0])) not in (str(shape[0]), ""):
        raise BadInputError(f"the ONNX record says batch {onnx_body.get('batch')} but its input shape is {list(shape)}")
    if input_dtype == "uint8" and not target.uint8_input:
        raise UsageError(
            f"target {target.name} ({target.stack}) cannot take a uint8 network input; re-export with "
            "`toolchain export --input float-nchw`"
        )
    qdq = is_qdq(onnx_body)
    resolved = _resolve_precision(target, qdq, precision)
    notes: list[str] = []
    if allow_gpu_fallback_only and dla_core is None:
        raise UsageError("--allow-gpu-fallback-only is for DLA builds (--dla N); drop it, or add --dla N")

    if not target.is_tensorrt:
        if dla_core is not None:
            _check_dla(target, dla_core, resolved, notes)
        if workspace_mib is not None:
            raise UsageError(
                f"--workspace sets TensorRT's memory pool limit; target {target.name} runs ONNX Runtime: drop --workspace"
            )
        _batch(target, dynamic, batch, shape, notes)
        fixed = tuple(1 if isinstance(d, str) else int(d) for d in shape)
        plan = BuildPlan(
            target=target.name, backend=target.kind, precision=resolved, input_name=input_name,
            input_dtype=input_dtype, input_shape=shape, min_shape=fixed, opt_shape=fixed, max_shape=fixed,
            dynamic_batch=dynamic, onnx_sha256=sha, opset=opset, qdq=qdq, architecture=target.architecture,
            runtime=f"onnxruntime {_onnxruntime_version()}", build_image=target.build_image,
            builder_version=f"graph-optimization-{_ONNXRUNTIME_GRAPH_OPTIMIZATION}", notes=tuple(notes),
        )
        return _with_key(plan)

    _check_dla(target, dla_core, resolved, notes)
    if dla_core is not None and qdq:
        _refuse_dla_qdq(onnx_body, dla_core)
    workspace = _workspace(target, workspace_mib)
    profile = _batch(target, dynamic, batch, shape, notes, dla_core)
    if profile is None:
        fixed = tuple(int(d) for d in shape)  # a fixed batch: _dynamic is False, so every dim is an int
        low = opt = high = fixed
    else:
        rest = tuple(int(d) for d in shape[1:])
        low, opt, high = ((profile[0], *rest), (profile[1], *rest), (profile[2], *rest))

    on_dla = dla_core is not None  # and then fp16: fp32 and Q/DQ int8 are refused above
    strongly_typed = resolved == "int8" and target.tensorrt_version[:1] >= _STRONGLY_TYPED_TENSORRT
    fp16 = resolved == "fp16" or (resolved == "int8" and not strongly_typed and target.supports("fp16"))
    int8 = resolved == "int8" and not strongly_typed
    flags = [name for name, on in (("FP16", fp16), ("INT8", int8), ("STRONGLY_TYPED", strongly_typed),
                                   ("DLA", on_dla), ("GPU_FALLBACK", on_dla)) if on]
    if resolved == "int8" and strongly_typed:
        notes.append("strongly typed network: Q/DQ nodes set INT8, layers left in float keep the ONNX's FP32")
    plan = BuildPlan(
        target=target.name, backend=target.kind, precision=resolved, flags=tuple(flags), fp16=fp16, int8=int8,
        strongly_typed=strongly_typed, dla_core=dla_core, gpu_fallback=on_dla,
        allow_gpu_fallback_only=bool(allow_gpu_fallback_only), workspace_mib=workspace,
        batch=profile, dynamic_batch=dynamic, input_name=input_name, input_dtype=input_dtype, input_shape=shape,
        min_shape=low, opt_shape=opt, max_shape=high, onnx_sha256=sha, opset=opset, qdq=qdq,
        tensorrt=target.tensorrt, jetpack=target.jetpack, l4t=target.l4t,
        compute_capability=target.gpu_compute_capability, architecture=target.architecture,
        runtime=f"tensorrt {target.tensorrt}", build_image=target.build_image, builder_version=builder_version(),
        notes=tuple(notes),
    )
    return _with_key(plan)


def _with_key(plan: BuildPlan) -> BuildPlan:
    from dataclasses import replace

    return replace(plan, key=digest_json(_key_fields(plan)))
