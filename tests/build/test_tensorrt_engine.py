"""Real TensorRT builds of tiny ONNX models (FP32, FP16, Q/DQ INT8, a dynamic-batch profile, the
timing cache, and a refused version mismatch), where ``tensorrt`` and a GPU exist.

Deselected by default (marker ``tensorrt``); run with ``-m tensorrt`` on a machine with TensorRT.
The target is made from what :func:`tensorrt_builder.probe` reports, so the plan's checks and the
builder's environment check both pass on whatever GPU runs this.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from tests.build.tiny_models import record_body, write_onnx
from toolchain.build import tensorrt_builder as tb
from toolchain.build.plan import onnx_input_fields, plan_build
from toolchain.targets import Target, load_target, parse_target

pytestmark = [pytest.mark.tensorrt, pytest.mark.gpu]


@pytest.fixture(scope="module")
def local() -> tuple[Any, dict[str, Any]]:
    trt = pytest.importorskip("tensorrt")
    info = tb.probe()
    if info is None:
        pytest.skip("tensorrt imports but no CUDA GPU is visible")
    return trt, info


@pytest.fixture(scope="module")
def target(local: tuple[Any, dict[str, Any]]) -> Target:
    """A target describing this machine's GPU and TensorRT."""
    trt, info = local
    version = ".".join(str(trt.__version__).split(".")[:3])
    data = {**load_target("jetson-agx-orin").to_dict(), "name": "local-gpu", "architecture": "x86_64",
            "tensorrt": version, "gpu_compute_capability": info["compute_capability"],
            "dla_cores": info["num_dla_cores"], "memory_gb": 8, "unverified": [], "max_onnx_opset": 17}
    return parse_target(data)


def _build(trt: Any, target: Target, tmp: Path, *, qdq: bool = False, onnx_batch: int | str = 1,
           timing_cache: bytes | None = None, **options: Any) -> tuple[dict[str, Any], Path]:
    onnx = write_onnx(tmp / "in" / "model.onnx", batch=onnx_batch, qdq=qdq, opset=17)
    body = {**record_body(onnx, batch=onnx_batch, qdq=qdq), **onnx_input_fields(onnx)}
    plan = plan_build(target, body, **options)
    if timing_cache is not None:
        (tmp / "in" / "timing.cache").write_bytes(timing_cache)
    request = plan.request(onnx="model.onnx", timing_cache="timing.cache" if timing_cache is not None else None)
    out = tmp / "out"
    result = tb.build(request, tmp / "in", out)
    engine_bytes = (out / tb.ENGINE_NAME).read_bytes()
    assert hashlib.sha256(engine_bytes).hexdigest() == result["engine_sha256"]
    assert json.loads((out / tb.RESULT_FILE).read_text()) == result
    assert (out / tb.LOG_FILE).is_file() and (out / tb.TIMING_CACHE_FILE).stat().st_size > 0
    # The file is the raw plan: TensorRT loads it as is (no toolchain header in front).
    engine = trt.Runtime(trt.Logger(trt.Logger.ERROR)).deserialize_cuda_engine(engine_bytes)
    assert engine is not None
    assert result["key"] == plan.key and result["onnx_sha256"] == plan.onnx_sha256
    return result, out


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_float_engines(local: tuple[Any, dict[str, Any]], target: Target, tmp_path: Path, precision: str) -> None:
    trt, info = local
    result, _ = _build(trt, target, tmp_path, precision=precision)
    assert result["precision"] == precision
    assert result["flags"] == (["FP16"] if precision == "fp16" else [])
    assert result["compute_capability"] == info["compute_capability"]
    assert tb.version_matches(target.tensorrt, result["tensorrt_version"])
    assert result["inputs"] == [{"name": "images", "shape": [1, 3, 16, 16], "dtype": "float32"}]
    assert result["outputs"][0]["name"] == "probabilities" and result["outputs"][0]["shape"] == [1, 2]


def test_qdq_int8_engine(local: tuple[Any, dict[str, Any]], target: Target, tmp_path: Path) -> None:
    trt, _ = local
    result, _ = _build(trt, target, tmp_path, qdq=True)
    assert result["precision"] == "int8"
    expected = ["STRONGLY_TYPED"] if target.tensorrt_version[0] >= 10 else ["FP16", "INT8"]
    assert sorted(result["flags"]) == sorted(expected)
    assert result["inputs"][0]["dtype"] == "float32"


def test_dynamic_batch_profile_and_timing_cache_reuse(local: tuple[Any, dict[str, Any]], target: Target,
                                                     tmp_path: Path) -> None:
    trt, _ = local
    first, out = _build(trt, target, tmp_path / "a", onnx_batch="batch", batch=(1, 2, 4))
    assert first["inputs"][0]["shape"] == [-1, 3, 16, 16]
    assert first["inputs"][0]["profile"] == {"min": [1, 3, 16, 16], "opt": [2, 3, 16, 16], "max": [4, 3, 16, 16]}
    assert first["timing_cache"]["loaded"] is False
    cache = (out / tb.TIMING_CACHE_FILE).read_bytes()
    second, _ = _build(trt, target, tmp_path / "b", onnx_batch="batch", batch=(1, 2, 4), timing_cache=cache)
    assert second["timing_cache"]["loaded"] is True


def test_version_mismatch_is_refused(local: tuple[Any, dict[str, Any]], target: Target, tmp_path: Path) -> None:
    onnx = write_onnx(tmp_path / "model.onnx")
    plan = plan_build(target, record_body(onnx))
    request = {**plan.request(), "expect": {"tensorrt": "7.0", "compute_capability": target.gpu_compute_capability}}
    with pytest.raises(tb.BuilderError, match="not portable") as caught:
        tb.build(request, tmp_path, tmp_path / "out")
    assert caught.value.code == 5
    assert not (tmp_path / "out" / tb.ENGINE_NAME).exists()


def test_layer_placement_is_read_back_from_the_engine(local: tuple[Any, dict[str, Any]], target: Target,
                                                      tmp_path: Path) -> None:
    """Checks on real TensorRT what the fake-TensorRT tests assume: the engine inspector answers (8.2+)
    with layers, and a GPU build reports no DLA layer."""
    trt, _ = local
    result, _ = _build(trt, target, tmp_path, precision="fp16")
    placement = result["layer_placement"]
    if hasattr(trt, "LayerInformationFormat"):
        assert placement["source"] == "engine_inspector" and placement["engine_inspector"] is not None
    assert placement["dla"] == 0 and placement["gpu"] >= 1
    assert result["warnings"] == []


def test_a_timing_cache_tensorrt_cannot_read_is_replaced(local: tuple[Any, dict[str, Any]], target: Target,
                                                         tmp_path: Path) -> None:
    trt, _ = local
    result, out = _build(trt, target, tmp_path, precision="fp16", timing_cache=b"not a timing cache, " * 8)
    assert result["timing_cache"]["loaded"] is False and result["warnings"], result
    assert (out / tb.TIMING_CACHE_FILE).stat().st_size > 0
