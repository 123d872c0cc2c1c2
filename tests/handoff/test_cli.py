"""`toolchain handoff` end to end through the CLI: the issue's commands, --json, exit codes, human output."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.handoff.models import register_classifier
from tests.handoff.test_triton import _parse
from tests.helpers import run_main
from toolchain.build.service import BuildConfig, build
from toolchain.handoff.nvinfer_properties import check_classifier_config
from toolchain.workspace import Workspace


@pytest.fixture
def chain(tmp_path: Path) -> Path:
    """A workspace with an FP32 ONNX, its INT8 Q/DQ ONNX, and the INT8 one built for x86-64-cpu."""
    ws = tmp_path / "ws"
    with Workspace(ws) as workspace:
        register_classifier(workspace, tmp_path, name="highway-edgenet-onnx")
        int8 = register_classifier(workspace, tmp_path, name="highway-edgenet-onnx-int8", qdq=True)
        assert build(workspace, BuildConfig(onnx=int8.id, target="x86-64-cpu")).precision == "int8"
    return ws


def test_triton_repository_from_the_int8_cpu_build(chain: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = run_main(["--workspace", chain, "--json", "handoff", "highway-edgenet-onnx-int8-x86-64-cpu",
                       "--format", "triton", "--out", "repo/"], capsys)
    assert result.code == 0, result.err
    doc = result.json()
    assert doc["format"] == "triton" and doc["preprocessing"]["exact"] is True
    assert isinstance(doc["preprocessing"]["max_error"], float)
    model_dir = tmp_path / "repo" / "highway-edgenet-onnx-int8-x86-64-cpu"
    assert sorted(doc["files"]) == sorted(str(model_dir / f) for f in
                                          ("config.pbtxt", "1/model.onnx", "labels.txt", "handoff.json"))
    assert all(os.path.isfile(f) for f in doc["files"])
    _, config = _parse(model_dir / "config.pbtxt")
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 8
    assert doc["precision"] == "int8" and doc["checks"]["run"]["max_abs_vs_source"] < 1e-4


@pytest.mark.parametrize("onnx", ["highway-edgenet-onnx", "highway-edgenet-onnx-int8"])
def test_deepstream_for_a_jetson_from_the_fp32_or_int8_onnx(chain: Path, tmp_path: Path, onnx: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / f"ds-{onnx}"
    result = run_main(["--workspace", chain, "handoff", onnx, "--format", "deepstream", "--target", "jetson-orin-nano",
                       "--out", out, "--json"], capsys)
    assert result.code == 0, result.err
    doc = result.json()
    assert doc["preprocessing"] == {**doc["preprocessing"], "exact": True, "max_error": 0.0}
    values = check_classifier_config(out / "config_infer_primary.txt")
    assert values["onnx-file"] == "model.onnx" and values["network-mode"] == (1 if onnx.endswith("int8") else 2)
    # The 2-class settings: the softmax output, a threshold below the top probability of 2 classes, one label line.
    assert values["output-blob-names"] == ["probabilities"] and values["classifier-threshold"] < 1.0
    assert (out / "labels.txt").read_text() == "car;truck\n"
    assert doc["checks"]["model"]["collapsed"] is False and doc["checks"]["model"]["top1_agreement"] == 1.0


def test_human_output_and_exit_codes(chain: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    human = run_main(["--workspace", chain, "handoff", "highway-edgenet-onnx", "--format", "deepstream", "--target",
                      "jetson-orin-nano", "--out", tmp_path / "ds", "--preprocessing", "approximate"], capsys)
    assert human.code == 0, human.err
    assert human.out == "" and "config_infer_primary.txt" in human.err and "approximate" in human.err
    assert "note:" in human.err and "worst case" in human.err
    cases = [
        (["nothing-at-all", "--format", "triton", "--out", tmp_path / "r"], 4, "neither a build nor"),
        (["highway-edgenet-onnx", "--format", "triton", "--out", tmp_path / "r"], 2, "--target"),
        (["highway-edgenet-onnx-int8-x86-64-cpu", "--format", "deepstream", "--out", tmp_path / "d"], 2, "NVIDIA GPU"),
        (["highway-edgenet-onnx", "--format", "deepstream", "--target", "jetson-orin-nano", "--out", tmp_path / "d",
          "--classifier-threshold", "1"], 2, "below 1"),
        (["highway-edgenet-onnx", "--format", "deepstream", "--target", "jetson-orin-nano", "--out", tmp_path / "d",
          "--mode", "secondary", "--operate-on-class-ids", "car"], 2, "class indices"),
    ]
    for args, code, message in cases:
        result = run_main(["--workspace", chain, "handoff", *args], capsys)
        assert result.code == code and message in result.err, (args, result.code, result.err)
    assert not (tmp_path / "r").exists() and not (tmp_path / "d").exists()


def test_help_says_what_it_writes(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_main(["handoff", "--help"], capsys)
    assert result.code == 0
    for text in ("config_infer_", "config.pbtxt", "--preprocessing", "--mode", "--max-batch"):
        assert text in result.out
