"""CLI tests for ``toolchain doctor``."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

import toolchain.doctor
from tests.helpers import run_main

EXPECTED = {"python", "torch", "onnxruntime", "tensorrt", "pycuda", "docker", "pyav"}
BASE_INSTALL = {"python", "numpy", "onnxruntime", "pyav"}


@pytest.fixture
def doctor(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """Run ``toolchain --workspace tmp_path/ws [ARGS...]`` in-process."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TOOLCHAIN_HOME", raising=False)
    # No real engine lookups: a socket that does not exist answers at once.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'no-docker.sock'}")

    def run(*args: object):
        return run_main(["--workspace", tmp_path / "ws", *args], capsys)

    return run


def test_doctor_json_lists_every_check(doctor, tmp_path: Path) -> None:
    result = doctor("doctor", "--json")
    assert result.code == 0, result.err
    doc = result.json()
    assert doc["ok"] is True
    checks = doc["checks"]
    names = [c["name"] for c in checks]
    assert EXPECTED <= set(names)
    assert len(names) == len(set(names))
    for check in checks:
        assert set(check) == {"name", "ok", "detail", "hint", "required"}
        assert isinstance(check["ok"], bool) and isinstance(check["required"], bool)
        assert check["detail"], check
        if not check["ok"]:
            assert check["hint"].strip(), f"{check['name']} is not ok but has no hint"
    by_name = {c["name"]: c for c in checks}
    assert by_name["python"]["ok"] is True
    assert by_name["docker"]["ok"] is False  # DOCKER_HOST points at nothing
    assert not (tmp_path / "ws").exists(), "doctor must not create the workspace"


def test_doctor_global_json_flag(doctor) -> None:
    result = doctor("--json", "doctor")
    assert result.code == 0
    assert EXPECTED <= {c["name"] for c in result.json()["checks"]}


def test_doctor_human_table_on_stderr(doctor) -> None:
    result = doctor("doctor")
    assert result.code == 0
    assert result.out == ""
    for name in ("python", "onnxruntime", "tensorrt", "docker", "pyav"):
        assert name in result.err


def _nothing_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(toolchain.doctor, "_import", lambda name: None)


def test_every_missing_piece_has_a_hint(doctor, monkeypatch: pytest.MonkeyPatch) -> None:
    _nothing_installed(monkeypatch)
    doc = doctor("doctor", "--json").json()
    assert doc["ok"] is False
    checks = {c["name"]: c for c in doc["checks"]}
    for name in ("numpy", "torch", "onnxruntime", "tensorrt", "pycuda", "docker", "pyav"):
        assert checks[name]["ok"] is False, name
        assert checks[name]["hint"].strip(), name
    assert "toolchain[train]" in checks["torch"]["hint"]
    assert "toolchain[trt]" in checks["pycuda"]["hint"]
    for name in ("numpy", "onnxruntime", "pyav"):
        assert checks[name]["required"] is True, name


def test_missing_required_component_exits_5(doctor, monkeypatch: pytest.MonkeyPatch) -> None:
    _nothing_installed(monkeypatch)
    result = doctor("doctor", "--json")
    assert result.json()["ok"] is False
    assert result.code == 5


def test_required_flag_does_not_depend_on_presence(doctor) -> None:
    checks = {c["name"]: c for c in doctor("doctor", "--json").json()["checks"]}
    for name in BASE_INSTALL:
        assert checks[name]["required"] is True, name


def test_pycuda_without_driver_has_hint(doctor, monkeypatch: pytest.MonkeyPatch) -> None:
    def init() -> None:
        raise RuntimeError("cuInit failed: no CUDA-capable device is detected")

    fake_driver = SimpleNamespace(init=init)
    monkeypatch.setattr(toolchain.doctor, "_import", lambda name: fake_driver if name == "pycuda.driver" else None)
    checks = {c["name"]: c for c in doctor("doctor", "--json").json()["checks"]}
    assert checks["pycuda"]["ok"] is False
    assert "CUDA failed" in checks["pycuda"]["detail"]
    assert "driver" in checks["pycuda"]["hint"]


def test_low_disk_has_hint(doctor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(toolchain.doctor.shutil, "disk_usage", lambda path: SimpleNamespace(free=2**29))
    checks = {c["name"]: c for c in doctor("doctor", "--json").json()["checks"]}
    assert checks["disk"]["ok"] is False
    assert "--workspace" in checks["disk"]["hint"]
