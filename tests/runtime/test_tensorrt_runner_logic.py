"""TensorRTRunner's own logic against stand-ins for ``tensorrt`` and ``pycuda.driver``.

No TensorRT or GPU exists here, so these fakes follow NVIDIA's documented Python API (TensorRT 10
tensor-name API; pycuda's driver module) closely enough to run the runner's code paths: the DLA core
is set on the runtime before deserializing, the CUDA context is released when activation fails, a
CUDA driver that cannot start is a MissingEnvironmentError, and dynamic batches stay within the
engine's optimization profile. The real engine is checked by the ``tensorrt``-marked test.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

from toolchain.errors import BadInputError, MissingEnvironmentError
from toolchain.runtime.runners import TensorRTRunner, machine_architecture


class _Log:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.contexts: list[_Context] = []


def _fake_modules(log: _Log, *, num_dla: int = 2, deserialize_ok: bool = True, init_error: bool = False,
                  profile_max: int = 4, profile_min: int = 1, profile_api: str = "tensor",
                  bindings: bool = False) -> dict[str, types.ModuleType]:
    """``profile_api``: how the engine tells its profile: ``tensor`` (8.5+/10 ``get_tensor_profile_shape``),
    ``binding`` (8.x ``get_profile_shape``) or ``none``. ``bindings``: the 8.x bindings API instead of 10's."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0.30"

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            self.level = level

    class TensorIOMode:
        INPUT, OUTPUT = "input", "output"

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i: int) -> str:
            return ["images", "probabilities"][i]

        def get_tensor_mode(self, name: str) -> str:
            return TensorIOMode.INPUT if name == "images" else TensorIOMode.OUTPUT

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return (-1, 3, 4, 4) if name == "images" else (-1, 2)

        def get_tensor_dtype(self, name: str) -> str:
            return "float32"

        def create_execution_context(self) -> ExecutionContext:
            return ExecutionContext()

    class ExecutionContext:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple[int, ...]] = {}
            self.addresses: dict[str, int] = {}

        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
            # outside the optimization profile: refused, as TensorRT does (below min as well as above max)
            if not profile_min <= shape[0] <= profile_max or tuple(shape[1:]) != (3, 4, 4):
                log.events.append(f"refused {tuple(shape)}")
                return False
            self.shapes[name] = tuple(shape)
            return True

        def set_binding_shape(self, index: int, shape: tuple[int, ...]) -> bool:
            return self.set_input_shape(["images", "probabilities"][index], shape)

        def execute_async_v2(self, bindings: list[int], stream_handle: int) -> bool:
            self.addresses = dict(zip(["images", "probabilities"], bindings))
            return self.execute_async_v3(stream_handle)

        def set_tensor_address(self, name: str, address: int) -> None:
            self.addresses[name] = address

        def execute_async_v3(self, stream_handle: int) -> bool:
            n = self.shapes["images"][0]
            x = _Mem.by_address[self.addresses["images"]].data.reshape(-1, 3 * 16)[:n]
            out = _Mem.by_address[self.addresses["probabilities"]].data.reshape(-1, 2)
            out[:n, 0] = x.mean(axis=1)
            out[:n, 1] = n
            log.events.append(f"execute batch {n}")
            return True

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            self.num_DLA_cores = num_dla
            self._dla = 0

        @property
        def DLA_core(self) -> int:  # noqa: N802 - TensorRT's name
            return self._dla

        @DLA_core.setter
        def DLA_core(self, core: int) -> None:  # noqa: N802
            log.events.append(f"DLA_core={core}")
            self._dla = core

        def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
            log.events.append(f"deserialize on DLA {self._dla}")
            return Engine() if deserialize_ok else None

    profile = [(profile_min, 3, 4, 4), (profile_min, 3, 4, 4), (profile_max, 3, 4, 4)]
    if profile_api == "tensor":
        Engine.get_tensor_profile_shape = lambda self, name, index: list(profile)  # type: ignore[attr-defined]
    elif profile_api == "binding":
        Engine.get_profile_shape = lambda self, index, binding: list(profile)  # type: ignore[attr-defined]
    if bindings:  # TensorRT 8.x: the bindings API; 10 removed it (and has no num_bindings)
        names = ["images", "probabilities"]
        del Engine.num_io_tensors
        Engine.num_bindings = 2  # type: ignore[attr-defined]
        Engine.get_binding_name = lambda self, i: names[i]  # type: ignore[attr-defined]
        Engine.get_binding_index = lambda self, name: names.index(name)  # type: ignore[attr-defined]
        Engine.binding_is_input = lambda self, i: i == 0  # type: ignore[attr-defined]
        Engine.get_binding_shape = lambda self, i: Engine.get_tensor_shape(self, names[i])  # type: ignore[attr-defined]
        Engine.get_binding_dtype = lambda self, i: "float32"  # type: ignore[attr-defined]

    trt.Logger, trt.TensorIOMode, trt.Runtime = Logger, TensorIOMode, Runtime
    trt.nptype = lambda dtype: np.float32

    cuda = types.ModuleType("pycuda.driver")

    class Error(Exception):
        pass

    def init() -> None:
        if init_error:
            raise Error("cuInit failed: no CUDA-capable device is detected")

    class Device:
        def __init__(self, index: int) -> None:
            self.index = index

        def compute_capability(self) -> tuple[int, int]:
            return 8, 7

        def name(self) -> str:
            return "Orin (fake)"

        def make_context(self) -> _Context:
            context = _Context(log)
            log.contexts.append(context)
            return context

    class Stream:
        handle = 1

        def synchronize(self) -> None:
            pass

    def mem_alloc(nbytes: int) -> _Mem:
        return _Mem(nbytes)

    def memcpy_htod_async(dst: _Mem, src: np.ndarray, stream: Stream) -> None:
        dst.data[: src.size] = src.ravel()

    def memcpy_dtoh_async(dst: np.ndarray, src: _Mem, stream: Stream) -> None:
        dst.ravel()[:] = src.data[: dst.size]

    cuda.Error, cuda.init, cuda.Device, cuda.Stream = Error, init, Device, Stream
    cuda.mem_alloc, cuda.memcpy_htod_async, cuda.memcpy_dtoh_async = mem_alloc, memcpy_htod_async, memcpy_dtoh_async
    cuda.pagelocked_empty = lambda n, dtype: np.empty(n, dtype)
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = cuda
    return {"tensorrt": trt, "pycuda": pycuda, "pycuda.driver": cuda}


class _Mem:
    by_address: dict[int, _Mem] = {}

    def __init__(self, nbytes: int) -> None:
        self.data = np.zeros(nbytes // 4, np.float32)
        self.freed = False
        _Mem.by_address[id(self)] = self

    def __int__(self) -> int:
        return id(self)

    def free(self) -> None:
        self.freed = True


class _Context:
    def __init__(self, log: _Log) -> None:
        self.log, self.depth, self.detached = log, 1, False  # make_context makes it current

    def push(self) -> None:
        self.depth += 1

    def pop(self) -> None:
        self.depth -= 1

    def detach(self) -> None:
        self.detached = True


BUILD = {"target": "jetson-orin-nano", "architecture": machine_architecture(), "tensorrt_version": "10.3.0.30",
         "compute_capability": "8.7", "dla_core": None, "shapes": {"min": [1, 3, 4, 4], "opt": [2, 3, 4, 4], "max": [4, 3, 4, 4]}}


@pytest.fixture()
def engine(tmp_path: Path) -> Path:
    path = tmp_path / "model.plan"
    path.write_bytes(b"plan bytes")
    return path


def _install(monkeypatch: pytest.MonkeyPatch, log: _Log, **options: object) -> None:
    for name, module in _fake_modules(log, **options).items():
        monkeypatch.setitem(sys.modules, name, module)


def test_a_dla_engine_runs_on_the_core_it_was_built_for(monkeypatch: pytest.MonkeyPatch, engine: Path) -> None:
    log = _Log()
    _install(monkeypatch, log)
    with TensorRTRunner(engine, build={**BUILD, "dla_core": 1}):
        pass
    assert log.events[:2] == ["DLA_core=1", "deserialize on DLA 1"]


def test_a_dla_core_this_device_lacks_is_refused_and_the_context_released(monkeypatch: pytest.MonkeyPatch,
                                                                           engine: Path) -> None:
    log = _Log()
    _install(monkeypatch, log, num_dla=0)
    runner = TensorRTRunner(engine, build={**BUILD, "dla_core": 1})
    with pytest.raises(MissingEnvironmentError, match="DLA core 1"):
        runner.activate()
    assert all(c.detached and c.depth == 0 for c in log.contexts)


def test_an_engine_that_does_not_deserialize_releases_its_cuda_context(monkeypatch: pytest.MonkeyPatch,
                                                                       engine: Path) -> None:
    log = _Log()
    _install(monkeypatch, log, deserialize_ok=False)
    runner = TensorRTRunner(engine, build=BUILD)
    with pytest.raises(MissingEnvironmentError, match="could not deserialize"):
        runner.activate()
    (context,) = log.contexts
    assert context.depth == 0 and context.detached and not runner.is_active


def test_a_cuda_driver_that_cannot_start_is_a_missing_environment(monkeypatch: pytest.MonkeyPatch, engine: Path) -> None:
    log = _Log()
    _install(monkeypatch, log, init_error=True)
    with pytest.raises(MissingEnvironmentError, match="no CUDA-capable device"):
        TensorRTRunner(engine, build=BUILD).activate()


def test_dynamic_batches_stay_inside_the_engines_profile(monkeypatch: pytest.MonkeyPatch, engine: Path) -> None:
    log = _Log()
    _install(monkeypatch, log, profile_max=4)
    feed = np.arange(10 * 48, dtype=np.float32).reshape(10, 3, 4, 4)
    with TensorRTRunner(engine, build=BUILD) as runner:
        out = runner.infer(feed)
    assert out.shape == (10, 2)
    np.testing.assert_allclose(out[:, 0], feed.reshape(10, -1).mean(axis=1))
    assert [e for e in log.events if e.startswith("execute")] == ["execute batch 4", "execute batch 4", "execute batch 2"]
    assert all(c.detached and c.depth == 0 for c in log.contexts)


def test_a_batch_the_profile_refuses_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, engine: Path) -> None:
    log = _Log()
    _install(monkeypatch, log, profile_max=4, profile_api="none")  # no profile from the engine nor the record
    build = {k: v for k, v in BUILD.items() if k != "shapes"}  # an older record without the profile
    with TensorRTRunner(engine, build=build) as runner, pytest.raises(BadInputError, match="optimization profile"):
        runner.infer(np.zeros((6, 3, 4, 4), np.float32))


# --------------------------------------------------------------------------- profiles with min > 1 (DLA: min = max)


def _events(log: _Log, prefix: str) -> list[str]:
    return [e for e in log.events if e.startswith(prefix)]


@pytest.mark.parametrize("api", ["tensor", "binding"])
@pytest.mark.parametrize("bindings", [False, True])
@pytest.mark.parametrize(("profile_min", "profile_max", "n", "expected"), [
    (3, 4, 10, ["execute batch 4", "execute batch 4", "execute batch 3"]),  # last chunk 2 -> padded to 3
    (3, 4, 1, ["execute batch 3"]),
    (4, 4, 1, ["execute batch 4"]),  # a static (DLA) profile: every batch is exactly 4
    (4, 4, 9, ["execute batch 4", "execute batch 4", "execute batch 4"]),
    (2, 8, 8, ["execute batch 8"]),
    (2, 8, 9, ["execute batch 8", "execute batch 2"]),
])
def test_chunks_stay_inside_a_profile_with_min_above_one(monkeypatch: pytest.MonkeyPatch, engine: Path, api: str,
                                                         bindings: bool, profile_min: int, profile_max: int, n: int,
                                                         expected: list[str]) -> None:
    log = _Log()
    _install(monkeypatch, log, profile_min=profile_min, profile_max=profile_max, profile_api=api, bindings=bindings)
    build = {k: v for k, v in BUILD.items() if k != "shapes"}  # the engine's own profile is what counts
    feed = np.arange(n * 48, dtype=np.float32).reshape(n, 3, 4, 4)
    with TensorRTRunner(engine, build=build) as runner:
        assert (runner.min_batch, runner.max_batch) == (profile_min, profile_max)
        out = runner.infer(feed)
    assert out.shape == (n, 2)
    np.testing.assert_allclose(out[:, 0], feed.reshape(n, -1).mean(axis=1))  # padding rows are dropped
    assert _events(log, "execute") == expected and not _events(log, "refused")


def test_the_build_records_profile_is_used_when_the_engine_does_not_say(monkeypatch: pytest.MonkeyPatch,
                                                                         engine: Path) -> None:
    log = _Log()
    _install(monkeypatch, log, profile_min=2, profile_max=2, profile_api="none")
    build = {**BUILD, "dla_core": 0, "shapes": {"min": [2, 3, 4, 4], "opt": [2, 3, 4, 4], "max": [2, 3, 4, 4]}}
    with TensorRTRunner(engine, build=build) as runner:
        out = runner.infer(np.ones((5, 3, 4, 4), np.float32))
    assert out.shape == (5, 2)
    assert _events(log, "execute") == ["execute batch 2"] * 3 and not _events(log, "refused")


def test_an_input_of_another_size_is_refused_before_tensorrt_sees_it(monkeypatch: pytest.MonkeyPatch,
                                                                      engine: Path) -> None:
    log = _Log()
    _install(monkeypatch, log, profile_min=2, profile_max=4)
    with TensorRTRunner(engine, build=BUILD) as runner, pytest.raises(BadInputError, match=r"\[3, 4, 4\].*not \[3, 8, 8\]"):
        runner.infer(np.zeros((2, 3, 8, 8), np.float32))
    assert not _events(log, "refused")


@pytest.mark.parametrize("low", [1, 2, 3, 5])
@pytest.mark.parametrize("high", [5, 8])
@pytest.mark.parametrize("n", [1, 4, 5, 11, 16])
def test_profile_chunks_cover_the_feed_within_min_and_max(low: int, high: int, n: int) -> None:
    from toolchain.runtime.runners import _profile_chunks

    feed = np.arange(n, dtype=np.float32).reshape(n, 1)
    chunks = list(_profile_chunks(feed, low, high))
    assert all(low <= len(part) <= high for part, _ in chunks)
    assert np.concatenate([part[:real] for part, real in chunks]).ravel().tolist() == list(range(n))
    assert all(real == len(part) or (real < low and len(part) == low) for part, real in chunks)
