"""arm64 on this x86-64 machine, for real: qemu-user runs the arm64 base, builds, images and services.

An emulated build of the tiny ONNX for aarch64-cpu, its linux/arm64 image (the image config says arm64),
a deployment to an emulated arm64 unit that serves healthy, a release whose health check fails rolled
back, and ``bench --on`` on the unit: on the arm64 image (``emulated: true``, no real-time verdict) and
on the x86-64 one (real latency), both recorded with lineage.

Needs the arm64 base image (``scripts/make_base_image --arch arm64``, which registers qemu-user); skips
saying so otherwise.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest

from tests.docker.fleet_sim import toolchain_json as _tc
from tests.onnx_fixtures import register_tiny_onnx
from tests.ports import free_port
from tests.services import skip_or_fail
from toolchain.workspace import Workspace

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parents[2]
ARM64_BASE = os.environ.get("TOOLCHAIN_TEST_ARM64_BASE_IMAGE", "toolchain/runtime-base:bookworm-arm64")
MODEL = "armtiny"
SERVING = f"toolchain-{MODEL}"




@pytest.fixture(scope="module")
def arm64_base(docker_client: Any) -> str:
    import docker.errors

    try:
        image = docker_client.images.get(ARM64_BASE)
    except docker.errors.ImageNotFound:
        skip_or_fail("arm64", f"the engine has no {ARM64_BASE}: run scripts/make_base_image --arch arm64")
    assert image.attrs["Architecture"] == "arm64"
    return ARM64_BASE


@pytest.mark.timeout(1800)
def test_arm64_package_deploy_rollback_and_bench_on_an_emulated_unit(tmp_path: Path, docker_url: str,
                                                                      docker_client: Any, base_image: str,
                                                                      arm64_base: str) -> None:
    ws = tmp_path / "ws"
    with Workspace(ws) as workspace:
        register_tiny_onnx(workspace, tmp_path / "m", name=MODEL,
                           normalization=([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]), softmax=True)
    created: list[str] = []
    try:
        # an emulated build for aarch64-cpu, in the arm64 image on this x86-64 engine
        code, built, err = _tc(ws, "build", MODEL, "--target", "aarch64-cpu", "--on", docker_url,
                               "--build-image", arm64_base)
        assert code == 0, err
        assert built["target"] == "aarch64-cpu"
        code, _, err = _tc(ws, "registry", "alias", MODEL, "production", "--target", "aarch64-cpu", "--kind",
                           "artifact", "--to", "v1")
        assert code == 0, err

        # package MODEL@ALIAS --target aarch64-cpu: a linux/arm64 image, built emulated (probed, not flagged)
        code, image, err = _tc(ws, "package", f"{MODEL}@production", "--target", "aarch64-cpu", "--base-image",
                               arm64_base, "--docker-host", docker_url)
        assert code == 0, err
        created.append(image["image_id"])
        assert image["platform"] == "linux/arm64" and image["emulated"] is True
        assert docker_client.images.get(image["image_id"]).attrs["Architecture"] == "arm64"

        # deploy to the emulated arm64 unit: healthy serve; deploy status says arm64, emulated
        port = free_port()
        fleet = tmp_path / "fleet.toml"
        fleet.write_text(f"""
[[unit]]
name = "arm-unit"
url = "{docker_url}"
target = "aarch64-cpu"
cameras = ["road=synthetic:160x96@5"]
http_port = {port}
health_timeout_s = 240
""")
        code, report, err = _tc(ws, "deploy", f"{MODEL}@production", "--fleet", str(fleet))
        assert code == 0, (report or {}).get("units", err)
        unit = report["units"][0]
        assert unit["result"] == "deployed" and unit["architecture"] == "aarch64" and unit["emulated"] is True
        serving = docker_client.containers.get(SERVING)
        assert serving.attrs["State"]["Health"]["Status"] == "healthy"
        code, status, err = _tc(ws, "deploy", "status", "--fleet", str(fleet))
        assert code == 0, err
        row = status["units"][0]
        container = next(c for c in row["containers"] if c["name"] == SERVING)
        assert row["architecture"] == "x86_64" and container["architecture"] == "aarch64" and container["emulated"]

        # a release whose health check fails (ONNX Runtime broken in its arm64 base) is rolled back
        broken_base = "toolchain/runtime-base:broken-arm64-test"
        docker_client.images.build(
            fileobj=io.BytesIO(f"FROM {arm64_base}\nRUN echo 'raise ImportError(\"broken on purpose\")' > "
                               "/usr/local/lib/python3.11/dist-packages/onnxruntime/__init__.py\n".encode()),
            tag=broken_base, rm=True, platform="linux/arm64")
        created.append(broken_base)
        code, broken, err = _tc(ws, "package", f"{MODEL}@production", "--target", "aarch64-cpu", "--base-image",
                                broken_base, "--docker-host", docker_url, "--tag", f"toolchain/{MODEL}:broken")
        assert code == 0, err
        created.append(broken["image_id"])
        code, report, err = _tc(ws, "deploy", broken["image"][:12], "--fleet", str(fleet), "--health-timeout", "180")
        assert code == 3, err
        assert report["units"][0]["result"] == "rolled-back"
        again = docker_client.containers.get(SERVING)
        assert again.id == serving.id and again.status == "running"

        # bench --on the unit, in the arm64 image: emulated, so no real-time verdict; recorded with the unit's facts
        code, bench, err = _tc(ws, "bench", built["build"], "--on", docker_url, "--source", "synthetic:640x352@30",
                               "--duration", "5", "--warmup", "1")
        assert code == 0, err
        assert {"e2e_ms", "stage_ms", "fps", "realtime", "where", "device", "emulated"} <= set(bench)
        assert bench["emulated"] is True and bench["realtime"] is None and "no real-time verdict" in bench["verdict"]
        assert bench["device"]["architecture"] == "aarch64" and bench["device"]["engine_architecture"] == "x86_64"
        assert bench["where"] == docker_url and bench["e2e_ms"]["count"] > 0 and bench["device"]["memory_mb"] > 0
        with Workspace(ws) as workspace:
            record = workspace.registry.get(bench["benchmark"])
            assert record is not None and record.body["emulated"] is True
            assert [(link.input_id, link.role) for link in workspace.registry.links_from(record.id)] == [(built["build"], "artifact")]

        # a Jetson image assembled over the stand-in arm64 base: the bundle (model.plan), runtime and labels are
        # there; TensorRT/pycuda are not (only an L4T base has them: unverified), and package says so
        from toolchain.registry import NewRecord

        with Workspace(ws) as workspace:
            onnx = workspace.registry.find(kind="artifact", name=MODEL)[0]
            plan = tmp_path / "model.plan"
            plan.write_bytes(b"stand-in bytes: no TensorRT engine can be built here")
            jetson, _, _ = workspace.registry.commit(NewRecord(kind="build", name=f"{MODEL}-jetson-orin-nano", body={
                "blob": workspace.blobs.put_file(plan), "target": "jetson-orin-nano", "backend": "tensorrt",
                "precision": "fp16", "onnx": onnx.id, "input": "float-nchw", "shapes": {"opt": [1, 3, 16, 16]},
                "tensorrt_version": "10.3.0", "compute_capability": "8.7", "jetpack": "6.2", "l4t": "36.4",
                "architecture": "aarch64",
            }, links=((onnx.id, "onnx"),)))
        code, _, err = _tc(ws, "package", jetson.id, "--target", "jetson-orin-nano", "--base-image", arm64_base,
                           "--docker-host", docker_url)
        assert code == 5 and "lacks tensorrt, pycuda" in err, err
        code, assembled, err = _tc(ws, "package", jetson.id, "--target", "jetson-orin-nano", "--base-image", arm64_base,
                                   "--docker-host", docker_url, "--stand-in-base", "--deepstream")
        assert code == 0, err
        created.append(assembled["image_id"])
        assert assembled["platform"] == "linux/arm64" and any("stand-in" in w for w in assembled["warnings"])
        listing = docker_client.containers.run(assembled["image_id"], ["-c", "import os; print(sorted(os.listdir("
                                               "'/opt/toolchain/model')))"], entrypoint=["python3"], remove=True)
        assert "model.plan" in listing.decode() and "model.json" in listing.decode()
        # --deepstream: nvinfer's config and labels next to the engine, where a DeepStream pipeline on the unit reads them
        assert "config_infer_primary.txt" in listing.decode() and "labels.txt" in listing.decode()

        # and on the x86-64 image of the same model: real latency, a real-time verdict
        code, x86, err = _tc(ws, "build", MODEL, "--target", "x86-64-cpu")
        assert code == 0, err
        code, x86_image, err = _tc(ws, "package", x86["build"], "--target", "x86-64-cpu", "--base-image", base_image,
                                   "--docker-host", docker_url)
        assert code == 0, err
        created.append(x86_image["image_id"])
        code, bench, err = _tc(ws, "bench", x86["build"], "--on", docker_url, "--source", "synthetic:640x352@30",
                               "--duration", "5", "--warmup", "1")
        assert code == 0, err
        assert bench["emulated"] is False and isinstance(bench["realtime"], bool)
        assert bench["device"]["architecture"] == "x86_64" and bench["device"]["cpu_cores"] >= 1
        assert bench["fps"] > 0 and bench["stage_ms"]["infer"]["count"] > 0
    finally:
        for leftover in docker_client.containers.list(all=True, filters={"name": SERVING}):
            leftover.remove(force=True)
        for ref in reversed(created):
            try:
                docker_client.images.remove(ref, force=True)
            except Exception:  # noqa: BLE001 - cleanup only
                pass
