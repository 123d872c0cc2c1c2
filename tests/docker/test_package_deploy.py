"""The whole path on real Docker engines, from the CLI: registry alias -> package -> deploy to two local
units (each its own dockerd) -> a release whose health check fails is rolled back while the old container
keeps serving -> an unreachable unit is reported -> a new version and a rollback by alias -> the running
artifact's lineage read from the unit's container labels.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.docker.fleet_sim import health as _health
from tests.docker.fleet_sim import remove_images, stop_engine
from tests.docker.fleet_sim import toolchain_json as _tc
from tests.onnx_fixtures import register_tiny_onnx
from tests.ports import free_port
from tests.serve.fixtures import write_video
from tests.services import skip_or_fail
from toolchain.package.image import BINARY, BINARY_PINS
from toolchain.workspace import Workspace

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parents[2]
SERVING, PREVIOUS, NEXT = "toolchain-tiny-onnx", "toolchain-tiny-onnx-previous", "toolchain-tiny-onnx-next"






@pytest.fixture(scope="module")
def units() -> Iterator[dict[str, str]]:
    """Two extra Docker engines ("roadside units") started for this test and stopped after it."""
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        skip_or_fail("docker", "starting unit engines needs root and dockerd (apt-get install docker.io)")
    base = Path(tempfile.mkdtemp(prefix="tcu", dir="/tmp"))  # short: unix socket paths are limited
    urls: dict[str, str] = {}
    try:
        for name in ("a", "b"):
            run = subprocess.run([str(ROOT / "scripts" / "dockerd_up"), str(base / name)], capture_output=True,
                                 text=True, timeout=120)
            if run.returncode != 0:
                skip_or_fail("docker", f"could not start a unit engine: {run.stderr[-500:]}")
            urls[name] = run.stdout.strip()
        yield urls
    finally:
        for name in ("a", "b"):
            stop_engine(base / name)
        shutil.rmtree(base, ignore_errors=True)




def _by_unit(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {u["unit"]: u for u in report["units"]}


@pytest.mark.timeout(900)
def test_alias_package_deploy_rollback_unreachable_and_lineage(tmp_path: Path, docker_url: str, docker_client: Any,
                                                               base_image: str, units: dict[str, str]) -> None:
    import docker

    ws = tmp_path / "ws"
    with Workspace(ws) as workspace:
        register_tiny_onnx(workspace, tmp_path / "v1")
        register_tiny_onnx(workspace, tmp_path / "v2", size=24)  # tiny-onnx@v2
    for version in ("v1", "v2"):
        code, built, err = _tc(ws, "build", f"tiny-onnx@{version}", "--target", "x86-64-cpu")
        assert code == 0, err
    code, _, err = _tc(ws, "registry", "alias", "tiny-onnx", "production", "--target", "x86-64-cpu", "--kind", "artifact",
                       "--to", "v1")
    assert code == 0, err

    # package: labels, HEALTHCHECK, a saved tarball with its sha256, an image record linked to the build
    tar = tmp_path / "out" / "image.tar"
    code, image, err = _tc(ws, "package", "tiny-onnx@production", "--target", "x86-64-cpu", "--base-image", base_image,
                           "--docker-host", docker_url, "--save", str(tar))
    assert code == 0, err
    assert image["model"] == "tiny-onnx@v1" or image["model"].startswith("tiny-onnx")
    built_image = docker_client.images.get(image["image_id"])
    assert built_image.attrs["Config"]["Healthcheck"]["Test"][-3:] == [
        "-I", "-S", "/opt/toolchain/runtime/toolchain/serve/healthcheck.py"]
    assert built_image.labels["org.toolchain.artifact"] == image["build"]
    assert built_image.labels["org.opencontainers.image.version"]
    assert (tar.with_name("image.tar.sha256").read_text().split()[0] == image["save"]["sha256"])
    code, again, _ = _tc(ws, "package", "tiny-onnx@production", "--target", "x86-64-cpu", "--base-image", base_image,
                         "--docker-host", docker_url)
    assert code == 0 and again["cached"] and again["image_id"] == image["image_id"]

    cams = tmp_path / "cams"
    write_video(cams / "cam.mp4", frames=20, fps=10)
    ports = {"a": free_port(), "b": free_port()}
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(f"""
[defaults]
target = "x86-64-cpu"
cameras = ["gantry=/cams/cam.mp4"]
loop = true
mounts = ["{cams}:/cams:ro"]
health_timeout_s = 90

[[unit]]
name = "unit-a"
url = "{units['a']}"
http_port = {ports['a']}

[[unit]]
name = "unit-b"
url = "{units['b']}"
http_port = {ports['b']}

[[unit]]
name = "unit-gone"
url = "unix://{tmp_path}/gone/docker.sock"
""")
    unit_a, unit_b = docker.DockerClient(base_url=units["a"]), docker.DockerClient(base_url=units["b"])
    try:
        # 1. the alias goes out to both units; the unreachable one is reported, not fatal (exit 5)
        code, report, err = _tc(ws, "deploy", "tiny-onnx@production", "--fleet", str(fleet), "--canary", "1",
                                "--parallel", "2")
        assert code == 5, err
        results = _by_unit(report)
        assert results["unit-a"]["result"] == "deployed" and results["unit-a"]["canary"]
        assert results["unit-b"]["result"] == "deployed" and results["unit-a"]["transferred"]
        assert results["unit-gone"]["result"] == "unreachable" and "cannot reach" in results["unit-gone"]["message"]
        for client, port in ((unit_a, ports["a"]), (unit_b, ports["b"])):
            container = client.containers.get(SERVING)
            assert container.status == "running" and container.attrs["State"]["Health"]["Status"] == "healthy"
            assert container.attrs["Image"] == image["image_id"]
            assert _health(port) == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['a']}/metrics", timeout=5) as response:
            assert 'toolchain_frames_total{camera="gantry"}' in response.read().decode()
        events = [json.loads(line) for line in unit_a.containers.get(SERVING).logs(stderr=False).decode().splitlines()
                  if line.startswith("{")]
        assert events and {"camera", "time", "label", "score"} <= set(events[0]) and events[0]["camera"] == "gantry"
        serving_a = unit_a.containers.get(SERVING).id

        # 2. a release whose health check fails (ONNX Runtime is broken in its base): the canary rolls back,
        #    the old container never stopped serving, the other unit is skipped
        docker_client.images.build(
            fileobj=io.BytesIO(f"FROM {base_image}\nRUN echo 'raise ImportError(\"broken on purpose\")' > "
                               "/usr/local/lib/python3.11/dist-packages/onnxruntime/__init__.py\n".encode()),
            tag="toolchain/runtime-base:broken-test", rm=True)
        code, broken, err = _tc(ws, "package", "tiny-onnx@production", "--target", "x86-64-cpu", "--base-image",
                                "toolchain/runtime-base:broken-test", "--docker-host", docker_url, "--tag",
                                "toolchain/tiny-onnx:broken")
        assert code == 0, err
        code, report, err = _tc(ws, "deploy", broken["image"][:12], "--fleet", str(fleet), "--unit", "unit-a",
                                "--unit", "unit-b", "--canary", "1", "--health-timeout", "60")
        assert code == 3, err
        results = _by_unit(report)
        assert results["unit-a"]["result"] == "rolled-back" and "onnxruntime" in results["unit-a"]["message"]
        assert results["unit-b"]["result"] == "skipped" and "canary unit-a" in report["stopped"]
        current = unit_a.containers.get(SERVING)
        assert current.id == serving_a and current.status == "running" and _health(ports["a"]) == 200
        assert not unit_a.containers.list(all=True, filters={"name": NEXT})
        assert unit_b.containers.get(SERVING).attrs["Image"] == image["image_id"]

        # 3. a new version through the alias; a leftover "-next" from a crashed run is cleaned up
        unit_b.containers.create(image["image_id"], name=NEXT, command=["--source", "synthetic"])
        code, _, err = _tc(ws, "registry", "alias", "tiny-onnx", "production", "--target", "x86-64-cpu",
                           "--kind", "artifact", "--to", "v2")
        assert code == 0, err
        code, image2, err = _tc(ws, "package", "tiny-onnx@production", "--target", "x86-64-cpu", "--base-image",
                                base_image, "--docker-host", docker_url)
        assert code == 0, err
        code, report, err = _tc(ws, "deploy", "tiny-onnx@production", "--fleet", str(fleet), "--unit", "unit-a",
                                "--unit", "unit-b", "--parallel", "2")
        assert code == 0, err
        for client, port in ((unit_a, ports["a"]), (unit_b, ports["b"])):
            assert client.containers.get(SERVING).attrs["Image"] == image2["image_id"]
            previous = client.containers.get(PREVIOUS)
            assert previous.status == "exited" and previous.attrs["Image"] == image["image_id"]
            assert _health(port + 1) == 200  # the new container took the other port while the old one served

        # 4. rollback is one alias change + deploy: the v1 image is still on the units (no transfer)
        code, _, err = _tc(ws, "registry", "alias", "tiny-onnx", "production", "--target", "x86-64-cpu",
                           "--kind", "artifact", "--to", "previous")
        assert code == 0, err
        code, report, err = _tc(ws, "deploy", "tiny-onnx@production", "--fleet", str(fleet), "--unit", "unit-a",
                                "--unit", "unit-b")
        assert code == 0, err
        assert all(u["result"] == "deployed" and not u["transferred"] for u in report["units"])
        assert unit_a.containers.get(SERVING).attrs["Image"] == image["image_id"] and _health(ports["a"]) == 200
        code, report, _ = _tc(ws, "deploy", "tiny-onnx@production", "--fleet", str(fleet), "--unit", "unit-a")
        assert code == 0 and report["units"][0]["result"] == "unchanged"  # a rerun finds the job done

        # 5. what runs where, and the lineage of the running artifact, from the units' container labels
        code, status, err = _tc(ws, "deploy", "status", "--fleet", str(fleet))
        assert code == 0, err
        rows = {r["unit"]: r for r in status["units"]}
        assert not rows["unit-gone"]["reachable"] and rows["unit-a"]["last_deployment"]["result"] == "unchanged"
        serving = next(c for c in rows["unit-a"]["containers"] if c["name"] == SERVING)
        assert serving["health"] == "healthy" and serving["artifact"] == image["build"]
        kinds = {node["kind"]: node for node in serving["lineage"]}
        assert kinds["build"]["id"] == image["build"] and kinds["artifact"]["ref"] == "tiny-onnx@v1"
        labels = unit_b.containers.get(SERVING).labels
        assert json.loads(labels["org.toolchain.lineage"]) == serving["lineage"]
        human = subprocess.run([sys.executable, "-m", "toolchain", "--workspace", str(ws), "deploy", "status", "--fleet",
                                str(fleet), "--lineage"], capture_output=True, text=True, cwd=ROOT,
                               env={**os.environ, "COLUMNS": "200"})
        assert human.returncode == 0 and "tiny-onnx@v1" in human.stderr and image["build"][:12] in human.stderr
        with Workspace(ws) as workspace:
            deployments = workspace.registry.find(kind="deployment")
            assert {d.body["result"] for d in deployments} >= {"deployed", "unreachable", "rolled-back", "skipped"}
            first = next(d for d in deployments if d.body["result"] == "deployed")
            assert {link.role for link in workspace.registry.links_from(first.id)} == {"image", "build"}
    finally:
        for client in (unit_a, unit_b):
            for container in client.containers.list(all=True, filters={"label": "org.toolchain.role=serve"}):
                container.remove(force=True)
            client.close()
        remove_images(docker_client, [image["image_id"], "toolchain/tiny-onnx:broken", "toolchain/runtime-base:broken-test",
                                       *([image2["image_id"]] if "image2" in locals() else [])])


def test_a_jetson_image_over_a_base_of_another_cpu_is_refused(tmp_path: Path, docker_url: str, base_image: str) -> None:
    from toolchain.errors import BadInputError
    from toolchain.package.image import PackageConfig, package
    from toolchain.registry import NewRecord

    with Workspace(tmp_path / "ws") as ws:
        onnx = register_tiny_onnx(ws, tmp_path)
        engine = tmp_path / "model.plan"
        engine.write_bytes(b"a TensorRT plan stands in here")
        blob = ws.blobs.put_file(engine)
        build, _, _ = ws.registry.commit(NewRecord(kind="build", name="tiny-onnx-jetson-orin-nano", body={
            "blob": blob, "target": "jetson-orin-nano", "backend": "tensorrt", "architecture": "aarch64",
            "precision": "fp16", "tensorrt_version": "10.3.0", "compute_capability": "8.7", "jetpack": "6.2",
            "l4t": "36.4", "dla_core": None, "onnx": onnx.id, "onnx_sha256": onnx.record.body.get("sha256", ""),
            "input": "float-nchw", "shapes": {"opt": [1, 3, 16, 16]},
        }, links=((onnx.id, "onnx"),), blobs=((blob, "engine"),)))
        with pytest.raises(BadInputError, match="is x86_64, target jetson-orin-nano is aarch64"):
            package(ws, PackageConfig(ref=build.id, target="jetson-orin-nano", docker_host=docker_url,
                                      base_image=base_image))


@pytest.mark.timeout(600)
def test_a_plain_python_base_gets_the_compiled_runtime_vendored(tmp_path: Path, docker_url: str, docker_client: Any,
                                                                base_image: str) -> None:
    """A base without numpy, ONNX Runtime, PyAV and OpenCV (like python:3.11-slim) gets them as wheels for its
    platform, at the versions BINARY_PINS gives its Python."""
    docker_client.images.build(fileobj=io.BytesIO(
        f"FROM {base_image}\nRUN rm -rf /usr/local/lib/python3.11/dist-packages/*\n".encode()),
        tag="toolchain/runtime-base:bare-test", rm=True)
    ws = tmp_path / "ws"
    with Workspace(ws) as workspace:
        onnx = register_tiny_onnx(workspace, tmp_path)
    assert _tc(ws, "build", onnx.id[:12], "--target", "x86-64-cpu")[0] == 0
    code, image, err = _tc(ws, "package", "tiny-onnx@v1", "--target", "x86-64-cpu", "--base-image",
                           "toolchain/runtime-base:bare-test", "--docker-host", docker_url, "--tag", "toolchain/tiny:bare")
    if code == 5 and "pip could not fetch" in err:
        pytest.skip(f"no package index reachable: {err[-300:]}")
    assert code == 0, err
    with Workspace(ws) as workspace:
        vendored = workspace.registry.get(image["image"]).body["vendored"]
    assert {"numpy<3", "onnxruntime", "av", BINARY["cv2"]} <= set(vendored)
    versions = docker_client.containers.run(  # the motion finder's OpenCV, vendored and importable as the service user
        image["image_id"], ["-c", "import cv2, numpy; print(cv2.__version__, numpy.__version__)"], entrypoint=["python3"],
        remove=True, network_disabled=True).decode().split()
    assert versions == [BINARY_PINS["3.11"]["cv2"].rsplit(".", 1)[0], BINARY_PINS["3.11"]["numpy"]], versions
    out = docker_client.containers.run(image["image_id"], ["--source", "synthetic:64x64@10", "--duration", "2",
                                                           "--port", "0"], remove=True, network_disabled=True)
    events = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    remove_images(docker_client, [image["image_id"], "toolchain/runtime-base:bare-test"])
    assert len(events) >= 10 and {e["label"] for e in events} <= {"car", "truck"}
