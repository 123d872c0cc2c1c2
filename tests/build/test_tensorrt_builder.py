"""The self-contained TensorRT builder script: request validation, version matching, its refusals
where TensorRT or a GPU is missing (run as a subprocess, as on a device), and that it stays
standard-library-only Python 3.6 code."""

from __future__ import annotations

import ast
import ctypes.util
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.build.tiny_models import record_body, write_onnx
from toolchain.build import tensorrt_builder as tb
from toolchain.build.plan import BUILDER_SCRIPT, plan_build
from toolchain.targets import load_target

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
HAS_LIBCUDA = ctypes.util.find_library("cuda") is not None


def valid_request(**changes: Any) -> dict[str, Any]:
    request = {
        "format": 1, "onnx": "model.onnx", "onnx_sha256": None, "target": "jetson-agx-orin", "precision": "fp16",
        "strongly_typed": False, "fp16": True, "int8": False, "dla_core": None, "gpu_fallback": False,
        "workspace_mib": 1024, "profile": {"input": "images", "min": [1, 3, 16, 16], "opt": [1, 3, 16, 16],
                                           "max": [8, 3, 16, 16]},
        "timing_cache": None, "expect": {"tensorrt": "10.3.0", "compute_capability": "8.7"}, "key": "k",
    }
    request.update(changes)
    return request


def test_a_valid_request_is_returned_normalised() -> None:
    checked = tb.validate_request(valid_request())
    assert checked["profile"]["max"] == [8, 3, 16, 16] and checked["precision"] == "fp16"


@pytest.mark.parametrize(("changes", "message"), [
    ({"surprise": 1}, "unknown field"),
    ({"format": 2}, "format 2"),
    ({"onnx": ""}, "onnx must be"),
    ({"onnx_sha256": "abc"}, "onnx_sha256"),
    ({"precision": "fp8"}, "precision must be one of"),
    ({"fp16": "yes"}, "fp16 must be true or false"),
    ({"precision": "int8", "int8": False, "fp16": False}, "int8 flag or a strongly typed"),
    ({"precision": "int8", "strongly_typed": True, "fp16": True}, "flags are not allowed"),
    ({"strongly_typed": True, "fp16": False}, "strongly_typed is for Q/DQ INT8"),
    ({"precision": "fp32"}, "precision fp32 takes neither"),
    ({"fp16": False}, "precision fp16 takes the fp16 flag"),
    ({"int8": True}, "precision fp16 takes the fp16 flag and not the int8"),
    ({"dla_core": -1}, "dla_core must be"),
    ({"dla_core": True}, "dla_core must be"),
    ({"precision": "fp32", "fp16": False, "dla_core": 0}, "DLA runs FP16 and INT8 only"),
    ({"precision": "int8", "fp16": False, "strongly_typed": True, "dla_core": 0}, "explicitly quantized"),
    ({"gpu_fallback": True}, "gpu_fallback applies to DLA builds only"),
    ({"workspace_mib": 0}, "workspace_mib"),
    ({"profile": {"input": "images", "min": [1, 3, 16, 16]}}, "exactly input, min, opt and max"),
    ({"profile": {"input": "images", "min": [4, 3], "opt": [2, 3], "max": [8, 3]}}, "min <= opt <= max"),
    ({"profile": {"input": "images", "min": [1, 3], "opt": [1, 3, 1], "max": [8, 3]}}, "same rank"),
    ({"profile": {"input": "images", "min": [0, 3], "opt": [1, 3], "max": [8, 3]}}, "positive integers"),
    ({"timing_cache": 3}, "timing_cache"),
    ({"expect": {"tensorrt": "ten", "compute_capability": "8.7"}}, "expect.tensorrt"),
    ({"expect": {"tensorrt": "10.3", "compute_capability": "87"}}, "expect.compute_capability"),
    ({"expect": {"tensorrt": "10.3"}}, "exactly tensorrt and compute_capability"),
])
def test_invalid_requests_are_refused_with_code_2(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(tb.BuilderError, match=message) as caught:
        tb.validate_request(valid_request(**changes))
    assert caught.value.code == 2 and caught.value.kind == "usage"


def test_missing_fields_are_named() -> None:
    request = valid_request()
    del request["expect"], request["profile"]
    with pytest.raises(tb.BuilderError, match="missing field.*profile.*expect|missing field.*expect.*profile"):
        tb.validate_request(request)
    with pytest.raises(tb.BuilderError, match="JSON object"):
        tb.validate_request([1, 2])


@pytest.mark.parametrize(("expected", "actual", "match"), [
    ("10.3.0", "10.3.0.30", True),
    ("10.3", "10.3.0.30", True),
    ("10.13", "10.13.2.6", True),
    ("8.5.2", "8.5.2.2", True),
    ("8.2.1", "8.2.1.8", True),
    ("10.3.0", "10.30.0.1", False),
    ("8.5.2", "8.5.3.1", False),
    ("10.3.0", "8.6.2.3", False),
    ("10.3.0", "10.3", False),
    ("", "10.3.0", False),
])
def test_tensorrt_version_matching(expected: str, actual: str, match: bool) -> None:
    assert tb.version_matches(expected, actual) is match


# --------------------------------------------------------------------------- self-containedness


def test_script_is_standard_library_and_python36_syntax() -> None:
    source = BUILDER_SCRIPT.read_text()
    tree = ast.parse(source, feature_version=(3, 6))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module, "no relative imports: the script runs alone"
            imported.add(node.module.split(".")[0])
    assert "__future__" not in imported, "from __future__ import annotations needs Python 3.7"
    assert imported - set(sys.stdlib_module_names) == {"tensorrt"}
    # Annotations are type comments only: 3.6 would evaluate PEP 604 unions and builtin generics.
    assert not any(isinstance(n, (ast.AnnAssign,)) for n in ast.walk(tree))
    assert not any(isinstance(n, ast.FunctionDef) and (n.returns or any(a.annotation for a in n.args.args))
                   for n in ast.walk(tree))


def _run(script: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # -S: no site-packages, so `tensorrt` cannot import even where it is installed, and only the standard
    # library is there: the script must refuse cleanly as it would in a container without TensorRT.
    return subprocess.run([sys.executable, "-I", "-S", str(script), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture()
def device_dir(tmp_path: Path) -> tuple[Path, Path]:
    """The script copied alone into a folder with a request and its ONNX, as in the target's container."""
    folder = tmp_path / "unit"
    folder.mkdir()
    script = folder / "tensorrt_builder.py"
    shutil.copy(BUILDER_SCRIPT, script)
    onnx = write_onnx(folder / "model.onnx", batch="batch")
    plan = plan_build(load_target("jetson-agx-orin"), record_body(onnx, batch="batch"))
    (folder / "request.json").write_text(json.dumps(plan.request(onnx="model.onnx")))
    return folder, script


def _error(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    return json.loads(lines[0])["error"]


def test_subprocess_without_tensorrt_exits_5_and_explains(device_dir: tuple[Path, Path]) -> None:
    folder, script = device_dir
    result = _run(script, "request.json", "out", cwd=folder)
    assert result.returncode == 5, result.stderr
    error = _error(result)
    assert error["code"] == 5 and error["kind"] == "environment"
    assert "tensorrt Python package does not import" in error["message"]
    assert "TensorRT 10.3.0" in error["message"] and "compute capability 8.7" in error["message"]
    assert "--on ssh://user@unit" in error["message"]
    assert json.loads((folder / "out" / "error.json").read_text())["error"] == error
    assert not (folder / "out" / "engine.plan").exists() and not (folder / "out" / "result.json").exists()


def test_subprocess_refuses_bad_requests_before_looking_for_tensorrt(device_dir: tuple[Path, Path]) -> None:
    folder, script = device_dir
    request = json.loads((folder / "request.json").read_text())
    (folder / "bad.json").write_text(json.dumps({**request, "precision": "fp64"}))
    result = _run(script, "bad.json", "out", cwd=folder)
    assert result.returncode == 2 and "precision must be one of" in _error(result)["message"]

    (folder / "altered.json").write_text(json.dumps({**request, "onnx_sha256": "0" * 64}))
    result = _run(script, "altered.json", "out", cwd=folder)
    assert result.returncode == 4 and "copy the ONNX again" in _error(result)["message"]

    (folder / "missing.json").write_text(json.dumps({**request, "onnx": "nowhere.onnx"}))
    result = _run(script, "missing.json", "out", cwd=folder)
    assert result.returncode == 4 and "does not exist" in _error(result)["message"]

    (folder / "cache.json").write_text(json.dumps({**request, "timing_cache": "none.cache"}))
    result = _run(script, "cache.json", "out", cwd=folder)
    assert result.returncode == 4 and "timing cache" in _error(result)["message"]

    (folder / "junk.json").write_text("{not json")
    result = _run(script, "junk.json", "out", cwd=folder)
    assert result.returncode == 2 and "not JSON" in _error(result)["message"]

    result = _run(script, "nothing.json", "out", cwd=folder)
    assert result.returncode == 4 and "cannot read the request" in _error(result)["message"]

    result = _run(script, cwd=folder)
    assert result.returncode == 2 and "usage:" in _error(result)["message"]


def test_subprocess_probe_without_tensorrt(device_dir: tuple[Path, Path]) -> None:
    folder, script = device_dir
    result = _run(script, "--probe", cwd=folder)
    assert result.returncode == 5
    assert "tensorrt does not import" in _error(result)["message"]


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed here")
def test_in_process_build_without_tensorrt_raises_code_5(device_dir: tuple[Path, Path], tmp_path: Path) -> None:
    folder, _ = device_dir
    request = json.loads((folder / "request.json").read_text())
    with pytest.raises(tb.BuilderError, match="does not import") as caught:
        tb.build(request, folder, tmp_path / "out")
    assert caught.value.code == 5
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed here")
def test_probe_is_none_without_tensorrt() -> None:
    assert tb.probe() is None


@pytest.mark.skipif(HAS_LIBCUDA, reason="a CUDA driver is installed here")
def test_cuda_device_is_none_without_a_driver() -> None:
    assert tb.cuda_device() is None


@pytest.mark.gpu
def test_cuda_device_reads_the_gpu_like_torch_does() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    device = tb.cuda_device()
    assert device is not None
    major, minor = torch.cuda.get_device_capability(0)
    assert device["compute_capability"] == f"{major}.{minor}"
    assert device["name"] == torch.cuda.get_device_name(0)
    assert device["count"] == torch.cuda.device_count()
    runtime = tb._cuda_runtime_device(0)  # the fallback path agrees where libcudart is loadable
    if runtime is not None:
        assert runtime["compute_capability"] == device["compute_capability"] and runtime["name"] == device["name"]
