"""``serve --line --publish``: every crossing and interval reaches a real mosquitto through the spool, the broker's
state shows in /healthz and /metrics, and a broker that is down or refuses the login never stops the counting."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.mqtt_broker import MqttBroker, Subscriber, mqtt_broker, wait_until  # noqa: F401 - the fixture
from tests.serve.fixtures import http_body as _get, tiny_build
from toolchain.publish.config import parse_publish_url
from toolchain.runtime.vehicles import VehicleConfig
from toolchain.serve.bundle import ServingModel, model_from_registry
from toolchain.serve.service import ServeConfig, serve
from toolchain.workspace import Workspace

pytest.importorskip("cv2")
pytest.importorskip("paho.mqtt.client")
ROOT = Path(__file__).resolve().parents[2]
LINE = "mid=160,0,160,192"
UNIT = "rsu-7"
FAST = {"reconnect_min_s": 0.2, "reconnect_max_s": 1.0, "connect_timeout_s": 5.0}


@pytest.fixture(scope="module")
def road(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clip")
    run = subprocess.run([sys.executable, "-m", "toolchain", "--json", "synth", "video", str(folder / "road.mp4"),
                          "--size", "320x192", "--seconds", "8", "--fps", "15", "--seed", "3"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    return folder / "road.mp4"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> ServingModel:
    folder = tmp_path_factory.mktemp("model")
    with Workspace(folder / "ws") as ws:
        return model_from_registry(ws, tiny_build(ws, folder))


def _config(road: Path, tmp_path: Path, broker: MqttBroker, **extra: Any) -> ServeConfig:
    publish = parse_publish_url(f"mqtt://127.0.0.1:{broker.port}/traffic", interval_s=2.0, **FAST)  # type: ignore[arg-type]
    return ServeConfig(sources=(f"gantry={road}",), events=str(tmp_path / "events.jsonl"), port=0,
                       vehicles=VehicleConfig(lines=(VehicleConfig.parse_line(LINE)[1],)), publish=publish, unit=UNIT,
                       spool_dir=tmp_path / "spool", **extra)




def _serve_in_thread(model: ServingModel, config: ServeConfig) -> tuple[threading.Thread, threading.Event, list[int]]:
    stop, ports = threading.Event(), []
    thread = threading.Thread(target=serve, args=(model, config), daemon=True,
                              kwargs=dict(stop=stop, on_ready=ports.append, install_signals=False))
    thread.start()
    wait_until(lambda: bool(ports), 60, "serve did not start")
    return thread, stop, ports


def test_every_crossing_and_interval_reaches_the_broker_and_health_shows_it(
        road: Path, model: ServingModel, tmp_path: Path, mqtt_broker: Callable[..., MqttBroker]) -> None:
    broker = mqtt_broker("broker", persistence=True)
    config = _config(road, tmp_path, broker, loop=True)
    assert config.publish is not None
    subscriber = Subscriber(config.publish).start()
    thread, stop, ports = _serve_in_thread(model, config)
    try:
        wait_until(lambda: sum(m["kind"] == "interval" for m in subscriber.messages) >= 2, 60, "two intervals")
        health = json.loads(_get(ports[0], "/healthz"))
        metrics = _get(ports[0], "/metrics")
    finally:
        stop.set()
        thread.join(60)
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert events, "no crossing written"
    publish = health["publish"]
    assert publish["connected"] is True and publish["error"] == "" and publish["unit"] == UNIT
    assert publish["broker"] == f"mqtt://127.0.0.1:{broker.port}/traffic"
    assert "toolchain_publish_connected{" in metrics and "toolchain_publish_spool_messages " in metrics
    # Every crossing written to the events file went to the broker, with its seq, in order, once (after de-dup).
    subscriber.wait(lambda: sum(m["kind"] == "crossing" for m in subscriber.messages) >= len(events), 30,
                    "every crossing")
    subscriber.stop()
    unique = subscriber.unique_in_order()
    assert unique == sorted(unique) and len(unique) == len(set(unique))
    crossings = [m for m in subscriber.messages if m["kind"] == "crossing"]
    assert [(m["track"], m["frame"], m["direction"]) for m in crossings] == \
        [(e["track"], e["frame"], e["direction"]) for e in events]
    assert all(m["unit"] == UNIT and m["camera"] == "gantry" and m["line"] == "mid" and "at" in m for m in crossings)
    # Intervals list every direction and class of the line, zeros included, and add up to the crossings in them.
    intervals = [m for m in subscriber.messages if m["kind"] == "interval"]
    keys = {(c["camera"], c["line"], c["direction"], c["class"]) for c in intervals[0]["counts"]}
    assert keys == {("gantry", "mid", d, c) for d in ("left", "right") for c in model.classes}
    assert sum(c["count"] for m in intervals for c in m["counts"]) == len(crossings)


def test_a_broker_that_is_down_or_refuses_the_login_never_stops_the_counting(
        road: Path, model: ServingModel, tmp_path: Path, mqtt_broker: Callable[..., MqttBroker]) -> None:
    password = "s3cret-broker-pw"
    broker = mqtt_broker("locked", password=("counter", password))
    credentials = tmp_path / "credentials.json"
    credentials.write_text(json.dumps({"cameras": {}, "broker": {"username": "counter", "password": "wrong-" + password}}))
    config = _config(road, tmp_path, broker, loop=True, credentials=credentials)
    thread, stop, ports = _serve_in_thread(model, config)
    try:
        wait_until(lambda: "not authorised" in json.loads(_get(ports[0], "/healthz"))["publish"]["error"], 30,
                   "the refused login in /healthz")
        wait_until(lambda: (tmp_path / "events.jsonl").is_file() and (tmp_path / "events.jsonl").read_text(), 60,
                   "crossings counted while the broker refuses")
        health = _get(ports[0], "/healthz")
        body = json.loads(health)
        assert body["healthy"] is True  # counting goes on
        assert body["publish"]["connected"] is False and body["publish"]["spool_depth"] > 0
        assert password not in health and password not in _get(ports[0], "/metrics")
    finally:
        stop.set()
        thread.join(60)
    # Stopped, the spool kept what was not sent: a later run with the right login sends it.
    credentials.write_text(json.dumps({"broker": {"username": "counter", "password": password}}))
    config = _config(road, tmp_path, broker, credentials=credentials)  # the clip once: the run ends by itself
    assert config.publish is not None
    from toolchain.serve.credentials import load_broker_credentials

    subscriber = Subscriber(config.publish, credentials=load_broker_credentials(credentials)).start()
    try:
        serve(model, config, install_signals=False)
        events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
        subscriber.wait(lambda: sum(m["kind"] == "crossing" for m in subscriber.messages) >= len(events), 30,
                        "the spooled crossings and the new ones")
    finally:
        subscriber.stop()
    unique = subscriber.unique_in_order()
    assert unique == sorted(unique) and unique[0] == 1  # from the first message spooled while refused
