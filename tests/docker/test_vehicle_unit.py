"""The packaged image counts vehicles: crossing events and the vehicle counter from a real RTSP camera, and on a
clip the same crossings as ``toolchain count`` on the workstation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.docker.fleet_sim import packaged_tiny_model, remove_images
from tests.docker.test_security import _tc
from tests.ports import free_port
from tests.serve.rtsp import rtsp_server_fixture  # noqa: F401 - the fixture (named rtsp_server)

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parents[2]
MODEL = "counting-onnx"
LINE = "mid=320,0,320,352"


@pytest.mark.timeout(900)
def test_the_packaged_service_counts_vehicles_from_a_camera_and_as_count_does_on_a_clip(
        tmp_path: Path, docker_url: str, docker_client: Any, base_image: str, rtsp_server: Any) -> None:
    ws, _, image = packaged_tiny_model(tmp_path, MODEL, docker_url, base_image)
    clips = tmp_path / "clips"
    clips.mkdir(mode=0o755)
    os.chmod(tmp_path, 0o755)  # the service user reads the clip through the mount
    run = subprocess.run([sys.executable, "-m", "toolchain", "synth", "video", str(clips / "road.mp4"), "--size",
                          "640x352", "--fps", "15", "--seconds", "8", "--seed", "2"], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    (clips / "road.mp4").chmod(0o644)
    code, counted, _, err = _tc(ws, "count", MODEL, "--source", f"road={clips / 'road.mp4'}", "--line", LINE)
    assert code == 0, err
    expected = sorted((c["line"], c["direction"], c["frame"], c["track"]) for c in counted["crossings"])
    assert len(expected) >= 5

    camera = rtsp_server({"road": clips / "road.mp4"})
    port = free_port()
    container = docker_client.containers.run(
        image["image_id"], ["--source", "clip=/clips/road.mp4", "--source", f"cam={camera.url('road')}",
                            "--line", f"clip/{LINE}", "--line", f"cam/{LINE}", "--port", str(port), "--duration", "30"],
        network_mode="host", volumes={str(clips): {"bind": "/clips", "mode": "ro"}}, detach=True)
    try:
        metrics = ""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            container.reload()
            if container.status == "exited":
                break
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                    metrics = response.read().decode()
            except OSError:
                pass
            time.sleep(1)
        result = container.wait(timeout=120)
        logs = container.logs(stdout=True, stderr=False).decode()
        errors = container.logs(stdout=False, stderr=True).decode()
        assert result["StatusCode"] == 0, container.logs().decode()[-3000:]
    finally:
        container.remove(force=True)
        remove_images(docker_client, [image["image_id"]])
    events = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    from_clip = sorted((e["line"], e["direction"], e["frame"], e["track"]) for e in events if e["camera"] == "clip")
    assert from_clip == expected  # the unit counts what `count` counts on the same frames
    from_camera = [e for e in events if e["camera"] == "cam"]
    assert from_camera and {e["class"] for e in from_camera} <= {"car", "truck", "unknown"}, (errors[-2000:], metrics)
    samples = [row for row in metrics.splitlines() if row.startswith('toolchain_vehicles_total{camera="cam"')]
    assert samples and sum(float(row.rsplit(" ", 1)[1]) for row in samples) >= 1, metrics[-2000:]
