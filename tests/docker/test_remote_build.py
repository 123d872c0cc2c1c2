"""`toolchain build --on URL` against a real Docker engine: the CPU builder runs in a container there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.onnx_fixtures import register_tiny_onnx
from toolchain.workspace import Workspace

pytestmark = pytest.mark.docker


def _tc(workspace: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "toolchain", "--workspace", str(workspace), "--json", *args],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _build_containers(client: Any) -> list[Any]:
    return client.containers.list(all=True, filters={"label": "org.toolchain.role=build"})


def test_remote_cpu_build_is_verified_recorded_cached_and_cleaned_up(tmp_path: Path, docker_url: str, docker_client: Any,
                                                                      base_image: str) -> None:
    with Workspace(tmp_path / "ws") as ws:
        onnx = register_tiny_onnx(ws, tmp_path)
    before = len(_build_containers(docker_client))
    run = _tc(tmp_path / "ws", "build", onnx.id[:12], "--target", "x86-64-cpu", "--on", docker_url, "--build-image", base_image)
    assert run.returncode == 0, run.stderr
    built = json.loads(run.stdout)
    assert built["where"] == f"remote {docker_url}" and built["backend"] == "onnxruntime" and not built["cached"]
    assert built["verification"]["passed"] and built["verification"]["images"] >= 32
    engine = Path(built["path"])
    assert engine.read_bytes()[:1] != b"" and engine.stat().st_size > 0
    with Workspace(tmp_path / "ws") as ws:
        record = ws.registry.get(built["build"])
        assert record is not None and record.body["build_image"] == base_image
        assert record.body["builder_result"]["architecture"] == "x86_64"
        assert ws.blobs.has(record.body["build_log"])
        assert "onnxruntime" in ws.blobs.path(record.body["build_log"]).read_text()
        assert [link.input_id for link in ws.registry.links_from(record.id)] == [onnx.id]
    assert len(_build_containers(docker_client)) == before  # the build container was removed

    again = json.loads(_tc(tmp_path / "ws", "build", onnx.id[:12], "--target", "x86-64-cpu", "--on", docker_url,
                           "--build-image", base_image).stdout)
    assert again["cached"] and again["artifact"] == built["artifact"]
    local = json.loads(_tc(tmp_path / "ws", "build", onnx.id[:12], "--target", "x86-64-cpu").stdout)
    assert local["where"] == "local" and not local["cached"]  # built by another runtime: a different key


def _sleepy_image(client: Any, base_image: str) -> str:
    """The base image whose python3 only sleeps: a build that hangs on the unit."""
    import io

    dockerfile = f"FROM {base_image}\nRUN rm /usr/bin/python3 && printf '#!/bin/sh\\nsleep 60\\n' > /usr/bin/python3 && chmod +x /usr/bin/python3\n"
    tag = "toolchain-test/sleepy:2"
    client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, network_mode="none", rm=True)
    return tag


def test_remote_build_refuses_wrong_architecture_missing_image_and_timeout(tmp_path: Path, docker_url: str,
                                                                          docker_client: Any, base_image: str) -> None:
    with Workspace(tmp_path / "ws") as ws:
        onnx = register_tiny_onnx(ws, tmp_path)
    before = len(_build_containers(docker_client))
    arm = _tc(tmp_path / "ws", "build", onnx.id[:12], "--target", "aarch64-cpu", "--on", docker_url, "--build-image", base_image)
    assert arm.returncode == 5 and "aarch64" in arm.stderr and "x86_64" in arm.stderr
    missing = _tc(tmp_path / "ws", "build", onnx.id[:12], "--target", "x86-64-cpu", "--on", docker_url,
                  "--build-image", "toolchain/no-such-image:never")
    assert missing.returncode == 5 and "--build-image" in missing.stderr
    slow = _tc(tmp_path / "ws", "build", onnx.id[:12], "--target", "x86-64-cpu", "--on", docker_url,
               "--build-image", _sleepy_image(docker_client, base_image), "--timeout", "2")
    assert slow.returncode == 5 and "did not finish" in slow.stderr
    assert len(_build_containers(docker_client)) == before
    with Workspace(tmp_path / "ws") as ws:
        assert ws.registry.find(kind="build") == []


def test_tensorrt_target_on_a_cpu_unit_is_refused_before_anything_runs(tmp_path: Path, docker_url: str,
                                                                     base_image: str) -> None:
    with Workspace(tmp_path / "ws") as ws:
        onnx = register_tiny_onnx(ws, tmp_path)
    run = _tc(tmp_path / "ws", "build", onnx.id[:12], "--target", "jetson-orin-nano", "--on", docker_url,
              "--build-image", base_image)
    assert run.returncode == 5 and "aarch64" in run.stderr
