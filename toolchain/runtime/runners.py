"""Runners in the style of Polygraphy's ``BaseRunner``: ``activate / infer / deactivate`` and a context
manager; subclasses override the ``*_impl`` methods. Heavy backends (onnxruntime, torch, tensorrt,
pycuda) are imported on activation, never at import time, so the roadside image needs only the one
it runs.

Each runner takes a batch (N, ...) in its artifact's input layout and returns (N, C) scores.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.errors import BadInputError, MissingEnvironmentError, UsageError
from toolchain.runtime.machine import machine_architecture


def padded_chunks(images: np.ndarray, chunk: int, static: bool) -> Iterator[tuple[np.ndarray, int]]:
    """``(batch, real)`` pairs: a static batch is padded by repeating its last image; ``real`` rows count."""
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk]
        real = len(part)
        if static and real < chunk:
            part = np.concatenate([part, np.repeat(part[-1:], chunk - real, axis=0)])
        yield part, real


def check_build_matches_machine(build: Mapping[str, Any], *, tensorrt_version: str | None = None,
                                compute_capability: str | None = None) -> None:
    """Refuse a built engine that was made for another machine.

    Args:
        build: The body of a ``build`` record (``architecture``; for TensorRT engines also
            ``tensorrt_version`` and ``compute_capability``).
        tensorrt_version: The TensorRT version here (TensorRT engines only).
        compute_capability: This GPU's ``"major.minor"`` (TensorRT engines only).

    Raises:
        MissingEnvironmentError: The architecture, TensorRT version or GPU differs.
    """
    target = build.get("target", "?")
    arch = build.get("architecture")
    if arch and arch != machine_architecture():
        raise MissingEnvironmentError(
            f"this engine was built for {target} ({arch}) but this machine is {machine_architecture()}; "
            f"run it on a {arch} machine or build it here with `toolchain build ONNX --target ...`"
        )
    wanted_trt = build.get("tensorrt_version")
    if wanted_trt and tensorrt_version is not None:
        # A plan is only guaranteed to load under the TensorRT version that built it (major.minor.patch).
        if _version_key(wanted_trt) != _version_key(tensorrt_version):
            raise MissingEnvironmentError(
                f"this engine was built with TensorRT {wanted_trt} but this machine has TensorRT {tensorrt_version}; "
                f"rebuild it for {target} on this device (or in its L4T container)"
            )
    wanted_cc = build.get("compute_capability")
    if wanted_cc and compute_capability is not None and str(wanted_cc) != str(compute_capability):
        raise MissingEnvironmentError(
            f"this engine was built for a GPU of compute capability {wanted_cc} ({target}) but this GPU is "
            f"{compute_capability}; engines are not portable across GPU architectures: rebuild it on this device"
        )


def _version_key(version: str) -> tuple[str, ...]:
    return tuple(str(version).split("+")[0].split(".")[:3])


class BaseRunner(abc.ABC):
    """Runs one model on batches of inputs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.is_active = False

    def activate(self) -> None:
        if self.is_active:
            raise UsageError(f"runner {self.name} is already active")
        self.activate_impl()
        self.is_active = True

    def infer(self, feed: np.ndarray) -> np.ndarray:
        """Outputs (N, C) for one input batch."""
        if not self.is_active:
            raise UsageError(f"runner {self.name} must be activated before infer (use it as a context manager)")
        return self.infer_impl(feed)

    def deactivate(self) -> None:
        if self.is_active:
            self.deactivate_impl()
            self.is_active = False

    def __enter__(self) -> BaseRunner:
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    @property
    def device(self) -> str:
        """What the runner computes on, for reports (``cpu``, ``cuda:0 (NVIDIA ...)``)."""
        return "cpu"

    @property
    def fixed_batch(self) -> int | None:
        """The batch size baked into the model, or None when any batch runs."""
        return None

    @abc.abstractmethod
    def activate_impl(self) -> None: ...

    @abc.abstractmethod
    def infer_impl(self, feed: np.ndarray) -> np.ndarray: ...

    def deactivate_impl(self) -> None: ...


ORT_PROVIDER_ALIASES = {
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
}


class OnnxRuntimeRunner(BaseRunner):
    """ONNX Runtime on the CPU (or the CUDA / TensorRT execution providers when present and asked for).

    Args:
        path: The .onnx file (an export, an INT8 Q/DQ ONNX or a CPU-target build).
        providers: Execution providers in order of preference (default: CPU). Every one named must
            be available, except that the CPU provider is always a valid fallback.
        threads: Intra-op threads, with one inter-op thread (0 = ONNX Runtime's defaults).
        max_batch: Largest batch run at once on a graph with a dynamic batch (None: the whole feed).
        spinning: Let idle intra-op threads busy-wait for work (ONNX Runtime's default). Off by default: on a
            unit the decoders need those cores, and at 16 streams the spinning cost more than it saved
            (BENCHMARKS.md, "Many streams").
    """

    def __init__(self, path: Path, *, providers: tuple[str, ...] = ("CPUExecutionProvider",), threads: int = 0,
                 max_batch: int | None = None, spinning: bool = False) -> None:
        super().__init__(f"onnxruntime:{Path(path).name}")
        self.path = Path(path)
        self.providers = providers
        self.threads = threads
        self.max_batch = max_batch
        self.spinning = spinning
        self._session: Any = None
        self.input_name = ""
        self.input_shape: list[Any] = []
        self.input_type = ""

    def activate_impl(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - base dependency
            raise MissingEnvironmentError("onnxruntime is not installed: pip install onnxruntime") from exc
        available = set(ort.get_available_providers())
        missing = [p for p in self.providers if p not in available]
        if missing:
            raise MissingEnvironmentError(
                f"ONNX Runtime here lacks {', '.join(missing)}; available: {', '.join(sorted(available))}. "
                "Install onnxruntime-gpu on a CUDA machine, or use --runner onnxruntime (CPU)"
            )
        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spinning else "0")
        try:
            self._session = ort.InferenceSession(str(self.path), sess_options=options, providers=list(self.providers))
        except Exception as exc:  # noqa: BLE001 - ORT raises its own untyped errors for graphs it cannot load
            raise BadInputError(
                f"ONNX Runtime could not load {self.path.name}: {exc}; try another --opset or --no-simplify"
            ) from exc
        first = self._session.get_inputs()[0]
        self.input_name, self.input_shape, self.input_type = first.name, list(first.shape), first.type

    @property
    def device(self) -> str:
        used = self._session.get_providers()[0] if self._session is not None else self.providers[0]
        return "cpu" if used == "CPUExecutionProvider" else used.replace("ExecutionProvider", "").lower()

    @property
    def fixed_batch(self) -> int | None:
        """The batch size baked into the graph, or None when it is dynamic."""
        dim = self.input_shape[0] if self.input_shape else None
        return dim if isinstance(dim, int) else None

    def infer_impl(self, feed: np.ndarray) -> np.ndarray:
        batch = self.fixed_batch
        chunk = batch or self.max_batch or max(1, len(feed))
        outputs = [
            self._session.run(None, {self.input_name: np.ascontiguousarray(part)})[0][:real]
            for part, real in padded_chunks(feed, chunk, static=batch is not None)
        ]
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)

    def deactivate_impl(self) -> None:
        self._session = None


class TorchRunner(BaseRunner):
    """A torch module in eager mode (CPU or CUDA): the reference the exported forms are compared with.

    torch is imported only here (on activation), never elsewhere on the runtime path. The module is
    handed over already built (``toolchain.bench`` loads registered checkpoints), so the runtime never
    imports training code.

    Args:
        module: A ``torch.nn.Module`` taking float NCHW (normalised) and returning logits.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        name: Shown in reports.
        threads: torch intra-op threads on the CPU (0 = leave torch's default).
    """

    def __init__(self, module: Any, *, device: str = "cpu", name: str = "torch", threads: int = 0) -> None:
        super().__init__(f"torch:{name}")
        self.module = module
        self.device_name = device
        self.threads = threads
        self._torch: Any = None
        self._device: Any = None

    def activate_impl(self) -> None:
        try:
            import torch
        except ImportError as exc:
            raise MissingEnvironmentError("torch is not installed: pip install 'toolchain[train]'") from exc
        if self.device_name.startswith("cuda") and not torch.cuda.is_available():
            raise MissingEnvironmentError("--runner torch-cuda needs a CUDA GPU and torch built with CUDA; none here")
        if self.threads and not self.device_name.startswith("cuda"):
            torch.set_num_threads(self.threads)
        self._torch = torch
        self._device = torch.device(self.device_name)
        self.module = self.module.to(self._device).eval()

    @property
    def device(self) -> str:
        if self._device is not None and self._device.type == "cuda":
            return f"{self._device} ({self._torch.cuda.get_device_name(self._device)})"
        return "cpu"

    def infer_impl(self, feed: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(feed)).to(self._device, non_blocking=True)
            logits = self.module(x)
            # .cpu() synchronises with the GPU, so the time taken includes the kernels.
            return torch.softmax(logits.float(), dim=1).cpu().numpy()

    def deactivate_impl(self) -> None:
        if self._device is not None and self._device.type == "cuda":
            self.module = self.module.cpu()
            self._torch.cuda.empty_cache()


def _profile_chunks(images: np.ndarray, low: int, high: int) -> Iterator[tuple[np.ndarray, int]]:
    """``(batch, real)`` pairs for an engine whose optimization profile takes batches ``low..high``: at most
    ``high`` rows each, and a chunk shorter than ``low`` padded up to ``low`` by repeating its last image
    (TensorRT refuses an input shape below the profile's min; a DLA profile has min = max)."""
    for start in range(0, len(images), high):
        part = images[start : start + high]
        real = len(part)
        if real < low:
            part = np.concatenate([part, np.repeat(part[-1:], low - real, axis=0)])
        yield part, real


class TensorRTRunner(BaseRunner):
    """A serialized TensorRT engine run with pycuda: page-locked host buffers, one CUDA stream,
    async host->device copies, enqueue, async device->host copies, then a stream sync.

    A dynamic-batch engine is fed only shapes inside its optimization profile (profile 0, read from
    the engine: ``get_tensor_profile_shape`` on 8.5+/10, ``get_profile_shape`` on 8.x, else the build
    record's shapes): batches are cut to the profile's max and a short last batch is padded up to
    its min, the padding rows dropped from the output.

    Supports TensorRT 10.x (tensor-name API: ``num_io_tensors``, ``set_input_shape``,
    ``set_tensor_address``, ``execute_async_v3``) and 8.x (bindings API: ``num_bindings``,
    ``set_binding_shape``, ``execute_async_v2``).

    UNVERIFIED HERE: written against NVIDIA's documented Python API; no TensorRT or CUDA driver exists on
    the machine this was developed on. Tests for it carry the ``tensorrt`` marker.

    Args:
        path: The engine (plan) file; it has no header of ours, so trtexec and DeepStream load it too.
        build: The engine's ``build`` record body; checked against this machine before loading.
        device: CUDA device ordinal.
    """

    def __init__(self, path: Path, *, build: Mapping[str, Any] | None = None, device: int = 0) -> None:
        super().__init__(f"tensorrt:{Path(path).name}")
        self.path = Path(path)
        self.build = dict(build or {})
        self.device_index = device
        self._trt: Any = None
        self._cuda: Any = None
        self._cuda_context: Any = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._inputs: list[str] = []
        self._outputs: list[str] = []
        self._host: dict[str, np.ndarray] = {}
        self._device_mem: dict[str, Any] = {}
        self._capacity = 0
        self._v10 = False
        self._gpu_name = ""

    def activate_impl(self) -> None:
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise MissingEnvironmentError("TensorRT is not installed: pip install 'toolchain[trt]' on an NVIDIA host "
                                          "(on a Jetson it comes with JetPack)") from exc
        try:
            import pycuda.driver as cuda
        except ImportError as exc:
            raise MissingEnvironmentError("pycuda is not installed: pip install 'toolchain[trt]'") from exc
        try:
            cuda.init()
            dev = cuda.Device(self.device_index)
            major, minor = dev.compute_capability()
            gpu_name = dev.name()
        except Exception as exc:  # noqa: BLE001 - pycuda.driver.Error and its kin: no driver, no such device
            raise MissingEnvironmentError(
                f"CUDA device {self.device_index} cannot be used here ({exc}); check the NVIDIA driver is loaded "
                "(nvidia-smi or tegrastats) and, in a container, that it runs with the NVIDIA runtime"
            ) from exc
        check_build_matches_machine(self.build, tensorrt_version=trt.__version__, compute_capability=f"{major}.{minor}")
        self._trt, self._cuda, self._gpu_name = trt, cuda, gpu_name
        self._cuda_context = dev.make_context()  # made current on this thread; popped below
        try:
            logger = trt.Logger(trt.Logger.WARNING)
            # Kept for the engine's lifetime: TensorRT requires the runtime to outlive what it deserialized.
            self._runtime = trt.Runtime(logger)
            dla = self.build.get("dla_core")
            if dla is not None and int(dla) >= 0:
                # A DLA engine runs on the core the runtime names (default 0), so set the one it was built for.
                available = int(getattr(self._runtime, "num_DLA_cores", 0))
                if int(dla) >= available:
                    raise MissingEnvironmentError(
                        f"{self.path.name} was built for DLA core {dla} but this device has {available} DLA cores; "
                        "rebuild it for the GPU (no --dla) or for a DLA core this device has")
                self._runtime.DLA_core = int(dla)
            self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self._engine is None:
                raise MissingEnvironmentError(
                    f"TensorRT {trt.__version__} could not deserialize {self.path.name}: it was built by another "
                    "TensorRT version or for another GPU; rebuild it on this device")
            self._context = self._engine.create_execution_context()
            self._stream = cuda.Stream()
            self._v10 = hasattr(self._engine, "num_io_tensors")
            if self._v10:
                names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
                self._inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
                self._outputs = [n for n in names if n not in self._inputs]
            else:
                names = [self._engine.get_binding_name(i) for i in range(self._engine.num_bindings)]
                self._inputs = [n for i, n in enumerate(names) if self._engine.binding_is_input(i)]
                self._outputs = [n for n in names if n not in self._inputs]
        except BaseException:
            # Activation failed, so deactivate() will not run: release the context made above here.
            self._context = self._engine = self._stream = self._runtime = None
            self._cuda_context.pop()
            self._cuda_context.detach()
            self._cuda_context = None
            raise
        self._cuda_context.pop()

    @property
    def device(self) -> str:
        return f"cuda:{self.device_index} ({self._gpu_name})" if self._gpu_name else f"cuda:{self.device_index}"

    def _shape(self, name: str) -> tuple[int, ...]:
        if self._v10:
            return tuple(self._engine.get_tensor_shape(name))
        return tuple(self._engine.get_binding_shape(self._engine.get_binding_index(name)))

    def _dtype(self, name: str) -> Any:
        trt = self._trt
        if self._v10:
            return trt.nptype(self._engine.get_tensor_dtype(name))
        return trt.nptype(self._engine.get_binding_dtype(self._engine.get_binding_index(name)))

    @property
    def fixed_batch(self) -> int | None:
        if self._engine is None:
            return None
        first = self._shape(self._inputs[0])[0]
        return first if first > 0 else None

    def _allocate(self, batch: int, sample_shape: tuple[int, ...]) -> None:
        """(Re)allocate page-locked host and device buffers for ``batch`` rows of every I/O tensor."""
        cuda = self._cuda
        self._host, self._device_mem = {}, {}
        for name in self._inputs + self._outputs:
            shape = list(self._shape(name))
            if name in self._inputs:
                shape = [batch, *sample_shape]
            elif shape[0] < 0:
                shape[0] = batch
            shape = [d if d > 0 else 1 for d in shape]
            host = cuda.pagelocked_empty(int(np.prod(shape)), dtype=self._dtype(name)).reshape(shape)
            self._host[name] = host
            self._device_mem[name] = cuda.mem_alloc(host.nbytes)
        self._capacity = batch

    def _profile_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """``(min, max)`` input shapes of optimization profile 0 of the first input: from the engine
        (TensorRT 8.5+/10: ``get_tensor_profile_shape(name, 0)``; 8.x: ``get_profile_shape(0, name)``),
        else from the build record's ``shapes``, else None."""
        engine, name = self._engine, self._inputs[0] if self._inputs else ""
        shapes: Any = None
        try:
            if engine is not None and hasattr(engine, "get_tensor_profile_shape"):
                shapes = engine.get_tensor_profile_shape(name, 0)
            elif engine is not None and hasattr(engine, "get_profile_shape"):
                shapes = engine.get_profile_shape(0, name)  # the binding by name (8.x takes a name or an index)
        except Exception:  # noqa: BLE001 - the bindings raise their own types; the record is the fallback
            shapes = None
        if shapes is not None:
            low, high = tuple(int(d) for d in shapes[0]), tuple(int(d) for d in shapes[-1])
            if low and high and low[0] > 0 and high[0] >= low[0]:
                return low, high
        try:
            low = tuple(int(d) for d in self.build["shapes"]["min"])
            high = tuple(int(d) for d in self.build["shapes"]["max"])
        except (KeyError, TypeError, ValueError):
            return None
        return (low, high) if low and high and 0 < low[0] <= high[0] else None

    @property
    def max_batch(self) -> int | None:
        """The largest batch of the engine's optimization profile (from the engine, else its build record)."""
        shapes = self._profile_shapes()
        return shapes[1][0] if shapes else None

    @property
    def min_batch(self) -> int:
        """The smallest batch of the engine's optimization profile (1 when nothing says otherwise)."""
        shapes = self._profile_shapes()
        return shapes[0][0] if shapes else 1

    def infer_impl(self, feed: np.ndarray) -> np.ndarray:
        batch = self.fixed_batch
        if batch is not None:
            chunks = padded_chunks(feed, batch, static=True)
        else:
            shapes = self._profile_shapes()
            if shapes is None:  # an older record and no profile API: TensorRT itself refuses what does not fit
                chunks = padded_chunks(feed, max(1, len(feed)), static=False)
            else:
                low, high = shapes
                sample = tuple(feed.shape[1:])
                if len(sample) != len(low) - 1 or not all(a <= d <= b for a, d, b in zip(low[1:], sample, high[1:])):
                    raise BadInputError(
                        f"{self.path.name} takes inputs of shape {list(low[1:])} to {list(high[1:])} after the batch, "
                        f"not {list(sample)}; preprocess to the size the engine was built for")
                chunks = _profile_chunks(feed, low[0], high[0])
        outputs = [self._run(np.ascontiguousarray(part))[:real] for part, real in chunks]
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)

    def _run(self, part: np.ndarray) -> np.ndarray:
        cuda = self._cuda
        name_in, name_out = self._inputs[0], self._outputs[0]
        n = len(part)
        # The pipeline calls infer from its own thread: make this runner's CUDA context current there.
        self._cuda_context.push()
        try:
            if n > self._capacity or self._host[name_in].shape[1:] != part.shape[1:]:
                self._allocate(n, tuple(part.shape[1:]))
            host_in = self._host[name_in][:n]
            np.copyto(host_in, part, casting="same_kind")
            shape = (n, *part.shape[1:])
            if self._v10:
                accepted = self._context.set_input_shape(name_in, shape)
                for name, mem in self._device_mem.items():
                    self._context.set_tensor_address(name, int(mem))
            else:
                accepted = self._context.set_binding_shape(self._engine.get_binding_index(name_in), shape)
            if accepted is False:  # both calls return False for a shape outside the optimization profile
                raise BadInputError(
                    f"{self.path.name} refuses input shape {shape}: it is outside the engine's optimization profile; "
                    "use a smaller --max-batch, or rebuild with a larger batch range")
            cuda.memcpy_htod_async(self._device_mem[name_in], host_in, self._stream)
            if self._v10:
                ok = self._context.execute_async_v3(stream_handle=self._stream.handle)
            else:
                bindings = [int(self._device_mem[self._engine.get_binding_name(i)]) for i in range(self._engine.num_bindings)]
                ok = self._context.execute_async_v2(bindings=bindings, stream_handle=self._stream.handle)
            if not ok:
                raise BadInputError(f"TensorRT failed to enqueue {self.path.name} for a batch of shape {shape}")
            host_out = self._host[name_out]
            cuda.memcpy_dtoh_async(host_out, self._device_mem[name_out], self._stream)
            self._stream.synchronize()
            return host_out[:n].reshape(n, -1).astype(np.float32, copy=True)
        finally:
            self._cuda_context.pop()

    def deactivate_impl(self) -> None:
        if self._cuda_context is not None:
            self._cuda_context.push()
            try:
                for mem in self._device_mem.values():
                    mem.free()
                self._device_mem, self._host = {}, {}
                self._context = self._engine = self._stream = self._runtime = None
            finally:
                self._cuda_context.pop()
                self._cuda_context.detach()
                self._cuda_context = None
