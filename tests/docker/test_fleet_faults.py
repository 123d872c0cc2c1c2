"""A fleet with three kinds of broken unit, for real: each is reported with its reason, none blocks the rest.

Three healthy unit engines get the release; beside them a unit whose engine socket accepts connections
and never answers (a hung dockerd, a half-open link), one where nothing listens, and a real engine whose
release never gets healthy (``serve_args`` the service refuses: the container exits). The healthy units
are deployed and serve, the hung one is reported after the connect timeout (30 s) while the others carry
on, exit 3 (a unit failed), and ``--json`` has one row per unit.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.docker.fleet_sim import (
    can_start_engines, mute_socket, packaged_tiny_model, remove_images, start_engines, stop_engines, unit_ports,
)
from tests.docker.fleet_sim import health as _health
from tests.docker.fleet_sim import toolchain_json as _tc
from tests.services import skip_or_fail

pytestmark = pytest.mark.docker
HEALTHY = ["ok-1", "ok-2", "ok-3"]
SERVING = "toolchain-tiny-faults"


@pytest.fixture(scope="module")
def engines() -> Iterator[tuple[Path, dict[str, str]]]:
    why = can_start_engines()
    if why:
        skip_or_fail("docker", why)
    base = Path(tempfile.mkdtemp(prefix="tcq", dir="/tmp"))  # short: unix socket paths are limited
    names = [*HEALTHY, "sick"]
    try:
        yield base, start_engines(base, names)
    except RuntimeError as exc:
        skip_or_fail("docker", str(exc))
    finally:
        stop_engines(base, names)
        shutil.rmtree(base, ignore_errors=True)


def test_a_hung_a_gone_and_an_unhealthy_unit_are_reported_and_the_healthy_ones_deployed(
        engines: tuple[Path, dict[str, str]], tmp_path: Path, docker_url: str, base_image: str, docker_client: Any) -> None:
    base, urls = engines
    ws, _, image = packaged_tiny_model(tmp_path, "tiny-faults", docker_url, base_image)
    mute, held = mute_socket(base / "hung.sock")
    ports = unit_ports([*HEALTHY, "sick", "hung", "gone"])
    units = {**{name: urls[name] for name in HEALTHY}, "sick": urls["sick"], "hung": f"unix://{base}/hung.sock",
             "gone": f"unix://{base}/gone.sock"}
    text = '[defaults]\ntarget = "x86-64-cpu"\ncameras = ["synthetic:64x64@5"]\nhealth_timeout_s = 120\n'
    for name, url in units.items():
        text += f'\n[[unit]]\nname = "{name}"\nurl = "{url}"\nhttp_port = {ports[name]}\n'
        if name == "sick":
            text += 'serve_args = ["--no-such-option"]\n'
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(text)
    try:
        started = time.monotonic()
        code, report, err = _tc(ws, "deploy", image["image"][:12], "--fleet", str(fleet))
        took = time.monotonic() - started
        assert code == 3, err
        rows = {u["unit"]: u for u in report["units"]}
        assert [u["unit"] for u in report["units"]] == list(units)  # one row per unit, in fleet order
        for name in HEALTHY:
            assert rows[name]["result"] == "deployed", rows[name]
            assert rows[name]["transport"].startswith("load") and rows[name]["bytes_sent"] > 0
            assert _health(ports[name]) == 200
        assert rows["hung"]["result"] == "unreachable" and "no answer within 30 s" in rows["hung"]["message"]
        assert 25 < rows["hung"]["seconds"] < 60
        assert rows["gone"]["result"] == "unreachable" and "cannot reach" in rows["gone"]["message"]
        assert rows["gone"]["seconds"] < 5
        sick = rows["sick"]
        assert sick["result"] == "failed" and "was not healthy" in sick["message"], sick
        assert "no-such-option" in sick["message"] or "No such option" in sick["message"], sick
        assert report["counts"] == {"deployed": 3, "unreachable": 2, "failed": 1}
        # nothing waited on the hung unit: the whole rollout took about as long as its slowest healthy unit
        assert took < max(rows[name]["seconds"] for name in HEALTHY) + 40
        healthy_s = ", ".join(f"{rows[n]['seconds']:.1f}" for n in HEALTHY)
        print(f"rollout of 6 units took {took:.1f} s; healthy units {healthy_s} s; hung {rows['hung']['seconds']:.1f} s")
    finally:
        mute.close()
        for conn in held:
            conn.close()
        remove_images(docker_client, [image["image_id"], "toolchain/tiny-faults:test"])
