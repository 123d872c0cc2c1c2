"""CLI tests for ``toolchain targets list`` and ``toolchain targets show``."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from tests.helpers import run_main
from toolchain.cli import main as cli_main
from toolchain.cli.targets import targets
from toolchain.targets import TARGETS_ENV


@pytest.fixture
def toolchain(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """Run ``toolchain --workspace tmp_path/ws [ARGS...]`` in-process, with the targets group registered."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(TARGETS_ENV, raising=False)
    if "targets" not in cli_main.cli.commands:  # until main.py registers it
        monkeypatch.setitem(cli_main.cli.commands, "targets", targets)
    assert isinstance(cli_main.cli.commands["targets"], click.Group)

    def run(*args: object):
        return run_main(["--workspace", tmp_path / "ws", *args], capsys)

    return run


def test_targets_list_json(toolchain) -> None:
    result = toolchain("targets", "list", "--json")
    assert result.code == 0, result.err
    rows = {r["name"]: r for r in result.json()}
    assert {"jetson-nano", "jetson-xavier-nx", "jetson-agx-orin", "jetson-thor", "x86-64-cpu", "aarch64-cpu"} <= set(rows)
    for row in rows.values():
        assert {"name", "backend", "tensorrt", "jetpack", "compute_capability", "dla_cores"} <= set(row)
        assert row["verified_on_hardware"] is (row["name"] == "x86-64-cpu")
    assert rows["x86-64-cpu"]["default"] is True and rows["x86-64-cpu"]["backend"] == "onnxruntime"
    assert rows["jetson-agx-orin"]["compute_capability"] == "8.7" and rows["jetson-agx-orin"]["dla_cores"] == 2
    assert rows["jetson-nano"]["tensorrt"].startswith("8.2") and rows["jetson-nano"]["precisions"] == ["fp32", "fp16"]
    assert rows["jetson-orin-nano"]["dla_cores_verified"] is False
    assert toolchain("--json", "targets", "list").json() == result.json()


def test_targets_list_human(toolchain) -> None:
    result = toolchain("targets", "list")
    assert result.code == 0, result.err
    assert result.out == ""  # tables go to stderr
    assert "jetson-nano" in result.err and "x86-64-cpu" in result.err and "on hardware" in result.err


def test_targets_show_json(toolchain) -> None:
    result = toolchain("--json", "targets", "show", "jetson-xavier-nx")
    assert result.code == 0, result.err
    info = result.json()
    assert info["name"] == "jetson-xavier-nx" and info["backend"] == "tensorrt" and info["stack"] == "TensorRT 8.5"
    assert info["compute_capability"] == "7.2" and info["dla_cores"] == 2 and info["max_onnx_opset"] == 17
    assert info["runtime_image"].startswith("nvcr.io/nvidia/l4t-tensorrt") and info["builtin"] is True
    cpu = toolchain("targets", "show", "aarch64-cpu", "--json").json()
    assert cpu["kind"] == "onnxruntime" and cpu["architecture"] == "aarch64" and cpu["docker_platform"] == "linux/arm64"


def test_targets_show_human(toolchain) -> None:
    result = toolchain("targets", "show", "jetson-orin-nano")
    assert result.code == 0, result.err
    assert "jetson-orin-nano" in result.err and "TensorRT 10.3" in result.err
    assert "num_DLA_cores" in result.err and "unverified" in result.err


def test_targets_show_path_and_extra_dir(toolchain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "lab-box.toml").write_text(
        'name = "lab-box"\nkind = "onnxruntime"\narchitecture = "x86_64"\nmax_onnx_opset = 17\n'
        'precisions = ["fp32"]\nruntime_image = "python:3.11-slim"\nbuild_image = "python:3.11-slim"\n'
    )
    info = toolchain("targets", "show", extra / "lab-box.toml", "--json").json()
    assert info["name"] == "lab-box" and info["builtin"] is False
    monkeypatch.setenv(TARGETS_ENV, str(extra))
    names = [r["name"] for r in toolchain("targets", "list", "--json").json()]
    assert "lab-box" in names and "jetson-nano" in names
    assert toolchain("targets", "show", "lab-box", "--json").json()["max_onnx_opset"] == 17


def test_targets_show_unknown_is_exit_4(toolchain) -> None:
    result = toolchain("targets", "show", "jetson-nanoo", "--json")
    assert result.code == 4
    error = result.json()["error"]
    assert error["exit_code"] == 4 and "targets list" in error["message"] and "jetson-nano" in error["message"]


def test_targets_show_invalid_target_is_exit_4(toolchain, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\nkind = "tensorrt"\narchitecture = "aarch64"\n')
    result = toolchain("targets", "show", bad)
    assert result.code == 4
    assert "max_onnx_opset" in result.err and str(bad) in result.err
