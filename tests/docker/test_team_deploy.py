"""Two workstations of one team, one registry: the second deploy of a release changes nothing on the unit.

A unit's credentials volume is named by an HMAC of its content under a key both workstations read from the
shared registry. Before, each workspace had its own key, so a CI job and a laptop sharing one registry named
the volume differently: every rollout replaced healthy containers and left one more volume behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.docker.fleet_sim import packaged_tiny_model, remove_deployed
from tests.docker.test_security import _tc
from tests.ports import free_port
from tests.serve.fixtures import write_video

pytestmark = pytest.mark.docker
MODEL = "team-onnx"
SERVING = f"toolchain-{MODEL}"


@pytest.mark.timeout(600)
def test_two_workspaces_on_one_registry_leave_one_credentials_volume_and_restart_nothing(
        tmp_path: Path, docker_url: str, docker_client: Any, base_image: str) -> None:
    laptop, _, image = packaged_tiny_model(tmp_path, MODEL, docker_url, base_image)
    ci = tmp_path / "ci"
    shared = ("--registry", f"sqlite:///{laptop / 'registry.db'}", "--blobs", str(laptop))

    cams = tmp_path / "cams"
    write_video(cams / "cam.mp4", frames=20, fps=10)
    secrets_file = tmp_path / "cameras.secret.toml"
    secrets_file.write_text('[cameras.north]\nusername = "cam"\npassword = "team-secret-9"\n')
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(f"""
[[unit]]
name = "unit-t"
url = "{docker_url}"
target = "x86-64-cpu"
cameras = ["gantry=/cams/cam.mp4", "north=rtsp://127.0.0.1:1/stream1"]
credentials = "{secrets_file.name}"
loop = true
mounts = ["{cams}:/cams:ro"]
http_port = {free_port()}
health_timeout_s = 90
""")

    def volumes() -> list[str]:
        return sorted(v.name for v in docker_client.volumes.list(filters={"label": f"org.toolchain.model={MODEL}"}))

    try:
        code, report, _, err = _tc(laptop, "deploy", MODEL, "--fleet", str(fleet))
        assert code == 0 and report["units"][0]["result"] == "deployed", report["units"][0]["message"] if report else err
        serving = docker_client.containers.get(SERVING)
        assert len(volumes()) == 1

        # The CI job: its own workspace, the team's registry and blobs; same release, same credentials file.
        code, report, _, err = _tc(ci, *shared, "deploy", MODEL, "--fleet", str(fleet))
        assert code == 0, report["units"][0]["message"] if report else err
        assert report["units"][0]["result"] == "unchanged", report["units"][0]
        assert docker_client.containers.get(SERVING).id == serving.id  # nothing restarted
        assert len(volumes()) == 1
        assert not (ci / "keys").exists()  # the key lives in the registry, not in a workspace
    finally:
        remove_deployed(docker_client, MODEL, image["image_id"])

