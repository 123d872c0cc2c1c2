"""export / quantize / evaluate-an-ONNX through the CLI on a tiny trained model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

from tests.train.conftest import TINY, tiny_lake, tiny_workspace  # noqa: E402,F401


def _tc(workspace: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "toolchain", "--workspace", str(workspace), "--json", *args],
                          capture_output=True, text=True, check=check, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_export_quantize_and_evaluate_each_form(tiny_workspace: Path) -> None:  # noqa: F811
    _tc(tiny_workspace, "train", "--data", "tiny", "--device", "cpu", "--epochs", "2", "--name", "m", *TINY)
    exported = json.loads(_tc(tiny_workspace, "export", "m@v1", "--batch", "dynamic", "--opset", "13").stdout)
    assert Path(exported["path"]).is_file() and len(exported["artifact"]) == 64
    assert exported["passed"] is True and exported["max_abs"] <= 1e-4 and exported["top1_agreement"] == 1.0
    again = json.loads(_tc(tiny_workspace, "export", "m@v1", "--batch", "dynamic", "--opset", "13").stdout)
    assert again["artifact"] == exported["artifact"]  # deterministic bytes, same artifact

    quantized = json.loads(_tc(tiny_workspace, "quantize", exported["path"], "--samples", "32", "--max-drop", "100").stdout)
    for key in ("artifact", "path", "accuracy_fp32", "accuracy_int8", "accuracy_drop"):
        assert key in quantized
    assert Path(quantized["path"]).is_file()

    failed = _tc(tiny_workspace, "quantize", exported["artifact"][:10], "--samples", "32", "--max-drop", "-1", check=False)
    assert failed.returncode == 3
    assert "accuracy_drop" in json.loads(failed.stdout)

    for ref in (exported["artifact"][:10], quantized["artifact"][:10]):
        report = json.loads(_tc(tiny_workspace, "evaluate", ref).stdout)
        assert 0.0 <= report["accuracy"] <= 1.0 and set(report["recall"]) == {"car", "truck"}

    from toolchain.registry import open_store

    with open_store(str(tiny_workspace / "registry.db")) as store:
        weights = store.find(kind="model", name="m")[0].body["weights"]
    by_path = json.loads(_tc(tiny_workspace, "export", str(tiny_workspace / "objects" / weights[:2] / weights[2:]),
                             "--batch", "dynamic", "--opset", "13").stdout)
    assert by_path["artifact"] == exported["artifact"]
    missing = _tc(tiny_workspace, "export", "nope@v1", check=False)
    assert missing.returncode == 4


def test_cpu_build_is_verified_recorded_and_cached(tiny_workspace: Path) -> None:  # noqa: F811
    _tc(tiny_workspace, "train", "--data", "tiny", "--device", "cpu", "--epochs", "1", "--name", "b", *TINY)
    exported = json.loads(_tc(tiny_workspace, "export", "b@v1", "--target", "x86-64-cpu").stdout)
    built = json.loads(_tc(tiny_workspace, "build", exported["artifact"][:10], "--target", "x86-64-cpu").stdout)
    assert built["precision"] == "fp32" and built["verification"]["passed"] and not built["cached"]
    assert Path(built["path"]).is_file()
    again = json.loads(_tc(tiny_workspace, "build", exported["path"], "--target", "x86-64-cpu").stdout)
    assert again["cached"] and again["build"] == built["build"]
    wrong = _tc(tiny_workspace, "build", exported["artifact"][:10], "--target", "x86-64-cpu", "--precision", "int8", check=False)
    assert wrong.returncode == 2 and "quantize" in wrong.stderr
    jetson = _tc(tiny_workspace, "build", exported["artifact"][:10], "--target", "jetson-agx-orin", check=False)
    assert jetson.returncode == 5 and "TensorRT" in jetson.stderr
