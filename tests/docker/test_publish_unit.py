"""A deployed unit publishes its counts to a real mosquitto through its spool volume, under the usual lockdown, with
the broker's password only in its credentials file; killed with SIGKILL in the middle of a broker outage and
started again, it loses nothing: every seq arrives, once after de-duplication, in order."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.docker.fleet_sim import packaged_tiny_model, remove_deployed
from tests.docker.test_security import _get, _tc
from tests.mqtt_broker import MqttBroker, Subscriber, mqtt_broker, wait_until  # noqa: F401 - the fixture
from tests.ports import free_ports
from toolchain.publish.config import BrokerCredentials, parse_publish_url

pytestmark = pytest.mark.docker
MODEL = "publishing-onnx"
PASSWORD = "br0ker-s3cret-pw"


def _publish_state(ws: Path, fleet: Path) -> dict[str, Any]:
    """The unit's publishing as `deploy status` reads it from the container's last health check."""
    code, status, _, err = _tc(ws, "deploy", "status", "--fleet", str(fleet))
    assert code == 0, err
    containers = status["units"][0]["containers"]
    return (containers[0].get("publish") or {}) if containers else {}


@pytest.mark.timeout(900)
def test_a_deployed_unit_publishes_through_its_spool_volume_and_loses_nothing_killed_mid_outage(
        tmp_path: Path, docker_url: str, docker_client: Any, base_image: str,
        mqtt_broker: Callable[..., MqttBroker]) -> None:
    broker = mqtt_broker("broker", password=("rsu", PASSWORD), persistence=True)
    ws, _, image = packaged_tiny_model(tmp_path, MODEL, docker_url, base_image)
    (tmp_path / "secrets.toml").write_text(f'[broker]\nusername = "rsu"\npassword = "{PASSWORD}"\n')
    port = free_ports(1, span=2)[0]
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(f"""[[unit]]
name = "rsu-1"
url = "{docker_url}"
target = "x86-64-cpu"
cameras = ["road=synthetic:320x192@15:3"]
lines = ["mid=160,0,160,192"]
http_port = {port}
credentials = "secrets.toml"
publish = {{ url = "mqtt://127.0.0.1:{broker.port}/traffic", interval_s = 5 }}
""")
    publish = parse_publish_url(f"mqtt://127.0.0.1:{broker.port}/traffic")
    subscriber = Subscriber(publish, credentials=BrokerCredentials(username="rsu", password=PASSWORD)).start()
    try:
        code, report, out, err = _tc(ws, "deploy", MODEL, "--fleet", str(fleet))
        assert code == 0, (err, report)
        container = docker_client.containers.get(f"toolchain-{MODEL}")
        attrs = container.attrs
        spool = [m for m in attrs["Mounts"] if m["Destination"] == "/var/lib/toolchain/spool"]
        assert len(spool) == 1 and spool[0]["Type"] == "volume" and spool[0]["RW"], attrs["Mounts"]
        assert spool[0]["Name"] == f"toolchain-{MODEL}-spool"
        assert attrs["HostConfig"]["ReadonlyRootfs"] and attrs["HostConfig"]["CapDrop"] == ["ALL"]
        assert attrs["Config"]["User"] == "10001:10001"
        for text in (json.dumps(attrs), out, err):
            assert PASSWORD not in text
        subscriber.wait(lambda: sum(m["kind"] == "crossing" for m in subscriber.messages) >= 2, 120,
                        "crossings from the unit")

        broker.stop()  # the outage: the unit keeps counting into its spool
        wait_until(lambda: (_publish_state(ws, fleet).get("spool_depth") or 0) >= 2, 120,
                   "deploy status shows messages waiting in the spool")
        state = _publish_state(ws, fleet)
        assert state["connected"] is False and state["broker"] == f"mqtt://127.0.0.1:{broker.port}/traffic"
        container.kill(signal="SIGKILL")  # mid-outage, with messages only in the spool
        container.reload()
        if container.status != "running":
            container.start()
        time.sleep(5)  # more crossings spooled by the new process, still without a broker
        broker.start()

        http_port = int(container.labels["org.toolchain.http_port"])

        def publishing() -> dict[str, Any]:
            return json.loads(_get(http_port, "/healthz")).get("publish") or {}

        wait_until(lambda: publishing().get("connected") is True and publishing().get("spool_depth") == 0, 120,
                   "the unit reconnected and emptied its spool")
        last = int(publishing()["last_seq"])
        subscriber.wait(lambda: set(range(1, last + 1)) <= set(subscriber.seqs()), 60, "every seq up to the last")
        unique = [s for s in subscriber.unique_in_order() if s <= last]
        assert unique == list(range(1, last + 1))  # nothing lost across the kill, once each, in order
        kinds = {m["kind"] for m in subscriber.messages}
        assert kinds == {"crossing", "interval"}
        logs = container.logs().decode(errors="replace")
        assert PASSWORD not in logs
    finally:
        subscriber.stop()
        remove_deployed(docker_client, MODEL, image["image_id"])
