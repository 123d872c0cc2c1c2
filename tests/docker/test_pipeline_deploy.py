"""`toolchain pipeline` with `[deploy] fleet`: the chain ends with the model packaged and serving on a unit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.pipeline.test_pipeline import SMALL
from tests.ports import free_port as _free_port

pytestmark = pytest.mark.docker




@pytest.mark.timeout(900)
def test_pipeline_packages_and_deploys_to_a_unit(tmp_path: Path, docker_url: str, docker_client: Any,
                                                 base_image: str) -> None:
    port = _free_port()
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(f"""
[[unit]]
name = "unit-1"
url = "{docker_url}"
target = "x86-64-cpu"
cameras = ["gantry=synthetic:160x96@15"]
http_port = {port}
health_timeout_s = 120
""")
    config = tmp_path / "pipeline.toml"
    config.write_text(SMALL.format(epochs=1) + f"""
[deploy]
fleet = "{fleet}"
canary = 1
parallel = 1
base_image = "{base_image}"
docker_host = "{docker_url}"
""")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DOCKER_HOST": docker_url}
    try:
        run = subprocess.run([sys.executable, "-m", "toolchain", "--workspace", str(tmp_path / "ws"), "--json", "pipeline",
                              str(config)], capture_output=True, text=True, env=env, timeout=840)
        assert run.returncode == 0, run.stderr[-3000:]
        result = json.loads(run.stdout)
        stages = [s["stage"] for s in result["stages"]]
        assert "package-x86-64-cpu" in stages and stages[-1] == "deploy"
        assert result["deployment"]["ok"] and result["deployment"]["units"][0]["unit"] == "unit-1"
        serving = docker_client.containers.get("toolchain-tiny-edgenet")
        assert serving.status == "running" and serving.labels["org.toolchain.target"] == "x86-64-cpu"
        assert serving.labels["org.toolchain.model"] == "tiny-edgenet@v1"  # a name, not an id, even from the INT8 ONNX
    finally:
        for container in docker_client.containers.list(all=True, filters={"label": "org.toolchain.role=serve"}):
            if container.name.startswith("toolchain-tiny-edgenet"):
                container.remove(force=True)
