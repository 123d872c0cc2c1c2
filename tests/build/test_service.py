"""The build service on this machine: CPU builds for real, TensorRT builds refused with the reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.onnx_fixtures import register_tiny_onnx, write_tiny_onnx
from toolchain.build import onnxruntime_builder
from toolchain.build.service import BuildConfig, build
from toolchain.errors import BadInputError, MissingEnvironmentError, UsageError
from toolchain.workspace import Workspace


def test_cpu_build_records_metadata_and_rebuild_is_a_cache_hit(tmp_path: Path) -> None:
    with Workspace(tmp_path / "ws") as ws:
        onnx = register_tiny_onnx(ws, tmp_path)
        first = build(ws, BuildConfig(onnx=onnx.id, target="x86-64-cpu"))
        assert not first.cached and first.precision == "fp32" and first.backend == "onnxruntime"
        assert first.verification["passed"] and first.verification["max_abs"] <= 1e-4
        record = ws.registry.get(first.build)
        assert record is not None
        body = record.body
        assert body["onnx_sha256"] == onnx.record.body["blob"] and body["architecture"] == "x86_64"
        assert body["shapes"]["opt"] == [1, 3, 16, 16] and body["where"] == "local"
        # The file is the artifact ONNX Runtime wrote, nothing prepended: it loads as an ONNX model.
        import onnx as onnx_lib

        onnx_lib.load(str(first.path))
        again = build(ws, BuildConfig(onnx=str(onnx.path), target="x86-64-cpu"))
        assert again.cached and again.build == first.build
        assert len(ws.registry.find(kind="build")) == 1


def test_a_changed_onnx_is_a_new_build(tmp_path: Path) -> None:
    with Workspace(tmp_path / "ws") as ws:
        a = build(ws, BuildConfig(onnx=register_tiny_onnx(ws, tmp_path, name="a").id, target="x86-64-cpu"))
        b = build(ws, BuildConfig(onnx=register_tiny_onnx(ws, tmp_path, name="b", size=20).id, target="x86-64-cpu"))
        assert a.build != b.build and not b.cached


def test_tensorrt_target_without_tensorrt_is_refused_with_the_way_forward(tmp_path: Path) -> None:
    with Workspace(tmp_path / "ws") as ws:
        onnx = register_tiny_onnx(ws, tmp_path)
        with pytest.raises(MissingEnvironmentError) as caught:
            build(ws, BuildConfig(onnx=onnx.id, target="jetson-orin-nano", precision="fp16"))
        message = str(caught.value)
        assert "not portable" in message and "--on ssh://" in message and "10.3" in message
        assert ws.registry.find(kind="build") == []


def test_wrong_architecture_and_bad_options_are_refused(tmp_path: Path) -> None:
    with Workspace(tmp_path / "ws") as ws:
        onnx = register_tiny_onnx(ws, tmp_path)
        with pytest.raises(MissingEnvironmentError, match="aarch64"):
            build(ws, BuildConfig(onnx=onnx.id, target="aarch64-cpu"))
        with pytest.raises(UsageError, match="quantize"):
            build(ws, BuildConfig(onnx=onnx.id, target="x86-64-cpu", precision="int8"))
        with pytest.raises(UsageError):
            BuildConfig(onnx=onnx.id, target="x86-64-cpu", precision="int4")


def test_unreachable_engine_and_plain_tcp_are_refused(tmp_path: Path) -> None:
    from toolchain.docker_engine import connect

    pytest.importorskip("docker")
    with pytest.raises(MissingEnvironmentError, match="cannot reach"):
        connect(f"unix://{tmp_path}/nothing.sock", timeout=2)
    with pytest.raises(UsageError, match="unencrypted"):
        connect("tcp://10.0.0.1:2375")
    with pytest.raises(UsageError, match="unsupported"):
        connect("ftp://unit")


def test_cpu_builder_script_runs_standalone_and_reports_failures(tmp_path: Path) -> None:
    """The script copied onto units: a subprocess with only its own file, as in the container."""
    script = Path(onnxruntime_builder.__file__)
    inputs = tmp_path / "in"
    write_tiny_onnx(inputs / "model.onnx")
    (inputs / "request.json").write_text(json.dumps({"onnx": "model.onnx", "precision": "fp32", "verify_images": 8}))
    env = {**os.environ, "PYTHONPATH": ""}
    ok = subprocess.run([sys.executable, str(script), str(inputs / "request.json"), str(tmp_path / "out")],
                        capture_output=True, text=True, env=env, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["verification"]["passed"] and result["architecture"] == onnxruntime_builder.machine_architecture()
    (inputs / "request.json").write_text(json.dumps({"onnx": "model.onnx", "expect": {"architecture": "sparc"}}))
    wrong = subprocess.run([sys.executable, str(script), str(inputs / "request.json"), str(tmp_path / "out2")],
                           capture_output=True, text=True, env=env, cwd=tmp_path)
    assert wrong.returncode == 5 and "sparc" in json.loads((tmp_path / "out2" / "error.json").read_text())["error"]["message"]
    (inputs / "request.json").write_text(json.dumps({"onnx": "missing.onnx"}))
    missing = subprocess.run([sys.executable, str(script), str(inputs / "request.json"), str(tmp_path / "out3")],
                             capture_output=True, text=True, env=env, cwd=tmp_path)
    assert missing.returncode == 4 and "missing.onnx" in missing.stderr


def test_an_engine_that_does_not_match_its_reported_sha256_is_not_registered(tmp_path: Path, monkeypatch) -> None:
    real_build = onnxruntime_builder.build

    def misreporting_build(request, request_dir, out_dir):  # the real builder, then a wrong digest in its result
        return {**real_build(request, request_dir, out_dir), "engine_sha256": "0" * 64}

    monkeypatch.setattr(onnxruntime_builder, "build", misreporting_build)
    with Workspace(tmp_path / "ws") as ws:
        onnx = register_tiny_onnx(ws, tmp_path)
        with pytest.raises(BadInputError, match="does not match the sha256"):
            build(ws, BuildConfig(onnx=onnx.id, target="x86-64-cpu"))
        assert ws.registry.find(kind="build") == []


def test_a_dla_build_records_how_many_layers_run_on_the_dla(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The service path of a local TensorRT build, with the builder stood in (no TensorRT here): the
    builder's layer placement lands in the build record and the result's metadata, and the
    --allow-gpu-fallback-only choice reaches the request."""
    from toolchain.build import tensorrt_builder
    from toolchain.targets import load_target

    target = load_target("jetson-agx-orin")
    monkeypatch.setattr(tensorrt_builder, "probe", lambda: {
        "tensorrt_version": target.tensorrt + ".30", "device_name": "Orin (stand-in)",
        "compute_capability": target.gpu_compute_capability, "num_dla_cores": 2, "total_memory_mib": None})
    requests = []

    def fake_build(request: dict, workdir: Path, outdir: Path) -> dict:
        requests.append(request)
        outdir.mkdir(parents=True, exist_ok=True)
        (outdir / tensorrt_builder.ENGINE_NAME).write_bytes(b"PLAN")
        import hashlib

        return {"engine_sha256": hashlib.sha256(b"PLAN").hexdigest(), "tensorrt_version": target.tensorrt + ".30",
                "compute_capability": target.gpu_compute_capability, "device_name": "Orin (stand-in)",
                "layer_placement": {"source": "build_log", "dla": 0, "gpu": 6, "dla_transfers": 0,
                                    "dla_layers": [], "gpu_layers": ["a"]}}

    monkeypatch.setattr(tensorrt_builder, "build", fake_build)
    with Workspace(tmp_path / "ws") as ws:
        onnx = register_tiny_onnx(ws, tmp_path)  # fixed batch 1: a static shape, as the DLA needs
        result = build(ws, BuildConfig(onnx=onnx.id, target=target.name, dla_core=0, allow_gpu_fallback_only=True))
        assert requests[0]["allow_gpu_fallback_only"] is True and requests[0]["dla_core"] == 0
        body = ws.registry.get(result.build).body
        assert body["layers"] == {"dla": 0, "gpu": 6, "dla_transfers": 0, "source": "build_log"}
        assert result.metadata["layers"] == body["layers"] and result.device == "dla:0"
        # The strict build is another key: the kept GPU-only engine does not satisfy it from the cache.
        strict = build(ws, BuildConfig(onnx=onnx.id, target=target.name, dla_core=0))
        assert not strict.cached and requests[1]["allow_gpu_fallback_only"] is False
        dynamic = register_tiny_onnx(ws, tmp_path, batch="batch", name="dyn")
        with pytest.raises(UsageError, match="DLA does not support dynamic dimensions"):
            build(ws, BuildConfig(onnx=dynamic.id, target=target.name, dla_core=0))
