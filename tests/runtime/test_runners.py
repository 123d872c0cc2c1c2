from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import pytest

from tests.runtime.tiny import make_tiny_onnx
from toolchain.errors import MissingEnvironmentError, UsageError
from toolchain.runtime.runners import (OnnxRuntimeRunner, TensorRTRunner, TorchRunner, check_build_matches_machine,
                                       machine_architecture, padded_chunks)

pytest.importorskip("onnx")


def _expected(feed: np.ndarray) -> np.ndarray:
    w = np.array([[1.0, -1.0], [0.5, 0.25], [-0.5, 1.0]], np.float32)
    logits = feed.mean(axis=(2, 3)) @ w
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_fixed_batch_graph_runs_any_feed_through_padded_chunks(tmp_path: Path) -> None:
    path = make_tiny_onnx(tmp_path / "b4.onnx", batch=4)
    feed = np.random.default_rng(0).standard_normal((6, 3, 16, 16)).astype(np.float32)
    with OnnxRuntimeRunner(path) as runner:
        assert runner.fixed_batch == 4 and runner.device == "cpu"
        out = runner.infer(feed)
    assert out.shape == (6, 2)
    np.testing.assert_allclose(out, _expected(feed), atol=1e-5)


def test_dynamic_graph_respects_max_batch(tmp_path: Path) -> None:
    path = make_tiny_onnx(tmp_path / "dyn.onnx")
    feed = np.random.default_rng(1).standard_normal((5, 3, 16, 16)).astype(np.float32)
    with OnnxRuntimeRunner(path, max_batch=2) as runner:
        assert runner.fixed_batch is None
        np.testing.assert_allclose(runner.infer(feed), _expected(feed), atol=1e-5)


def test_runner_lifecycle_and_missing_provider(tmp_path: Path) -> None:
    path = make_tiny_onnx(tmp_path / "m.onnx")
    runner = OnnxRuntimeRunner(path)
    with pytest.raises(UsageError, match="activated"):
        runner.infer(np.zeros((1, 3, 16, 16), np.float32))
    with pytest.raises(MissingEnvironmentError, match="lacks"):
        OnnxRuntimeRunner(path, providers=("NoSuchExecutionProvider",)).activate()


def test_padded_chunks_pads_only_static_batches() -> None:
    images = np.arange(5)[:, None]
    assert [(p.ravel().tolist(), r) for p, r in padded_chunks(images, 2, static=True)] == [([0, 1], 2), ([2, 3], 2), ([4, 4], 1)]
    assert [r for _, r in padded_chunks(images, 4, static=False)] == [4, 1]


def test_engine_built_for_another_machine_is_refused() -> None:
    here = machine_architecture()
    other = "aarch64" if here != "aarch64" else "x86_64"
    check_build_matches_machine({"target": "x86-64-cpu", "architecture": here})  # same machine: fine
    with pytest.raises(MissingEnvironmentError, match=f"built for jetson-orin-nano \\({other}\\)"):
        check_build_matches_machine({"target": "jetson-orin-nano", "architecture": other})
    trt = {"target": "jetson-orin-nano", "architecture": here, "tensorrt_version": "10.3.0", "compute_capability": "8.7"}
    check_build_matches_machine(trt, tensorrt_version="10.3.0.30", compute_capability="8.7")
    with pytest.raises(MissingEnvironmentError, match="TensorRT 10.3.0 but this machine has TensorRT 8.6.2"):
        check_build_matches_machine(trt, tensorrt_version="8.6.2", compute_capability="8.7")
    with pytest.raises(MissingEnvironmentError, match="compute capability 8.7"):
        check_build_matches_machine(trt, tensorrt_version="10.3.0", compute_capability="7.2")


def test_tensorrt_runner_without_tensorrt_says_what_to_install(tmp_path: Path) -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(MissingEnvironmentError, match="TensorRT is not installed"):
            TensorRTRunner(tmp_path / "x.plan").activate()
    else:  # pragma: no cover - only on NVIDIA hosts
        pytest.skip("TensorRT is installed: see the tensorrt-marked test")


def test_torch_runner_matches_the_module() -> None:
    torch = pytest.importorskip("torch")
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))
    feed = np.random.default_rng(2).standard_normal((3, 3, 2, 2)).astype(np.float32)
    with TorchRunner(module) as runner:
        out = runner.infer(feed)
    with torch.no_grad():
        expected = torch.softmax(module(torch.from_numpy(feed)), 1).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-6)
    if not torch.cuda.is_available():
        with pytest.raises(MissingEnvironmentError, match="CUDA"):
            TorchRunner(module, device="cuda").activate()


@pytest.mark.tensorrt
def test_tensorrt_engine_matches_onnxruntime(tmp_path: Path) -> None:  # pragma: no cover - needs TensorRT + pycuda
    """Build an engine from the tiny ONNX with TensorRT's builder and run it through TensorRTRunner."""
    trt = pytest.importorskip("tensorrt")
    cuda = pytest.importorskip("pycuda.driver")
    onnx_path = make_tiny_onnx(tmp_path / "t.onnx", batch=2)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0 if hasattr(trt, "__version__") and int(trt.__version__.split(".")[0]) >= 10 else \
        1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(onnx_path.read_bytes())
    plan = builder.build_serialized_network(network, builder.create_builder_config())
    engine_path = tmp_path / "t.plan"
    engine_path.write_bytes(bytes(plan))
    cuda.init()
    major, minor = cuda.Device(0).compute_capability()
    build = {"target": "here", "architecture": platform.machine(), "tensorrt_version": trt.__version__,
             "compute_capability": f"{major}.{minor}"}
    feed = np.random.default_rng(3).standard_normal((3, 3, 16, 16)).astype(np.float32)
    with TensorRTRunner(engine_path, build=build) as runner:
        np.testing.assert_allclose(runner.infer(feed), _expected(feed), atol=1e-4)
