"""``toolchain events tail`` as a process against a real mosquitto on loopback: JSON Lines, human lines, the
de-duplication by (unit, seq), the --kind and --unit filters, a broker with a password (never printed), and the
errors for a broker that is not there or refuses the login."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

from tests.mqtt_broker import MqttBroker, mqtt_broker, wait_until  # noqa: F401 - the fixture
from tests.ports import free_port
from toolchain.publish import messages
from toolchain.publish.config import client_id_for, parse_publish_url
from toolchain.publish.mqtt import MqttPublisher, import_paho
from toolchain.publish.spool import Spool

ROOT = Path(__file__).resolve().parents[2]
UNIT = "rsu-1"
USER, PASSWORD = "watcher", "s3cret-Broker-pw-4711"
FAST = {"reconnect_min_s": 0.2, "reconnect_max_s": 1.0, "connect_timeout_s": 5.0}


class Tail:
    """``python -m toolchain ... events tail ...`` in the background, its stdout and stderr read as they come."""

    def __init__(self, *args: str, env: Optional[Dict[str, str]] = None) -> None:
        self.args = args
        self.proc = subprocess.Popen([sys.executable, "-m", "toolchain", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                     env={**os.environ, "COLUMNS": "200", **(env or {})})
        self.out: List[str] = []
        self.err: List[str] = []
        self._readers = [threading.Thread(target=self._read, args=(stream, lines), daemon=True)
                         for stream, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: object, lines: List[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.append(line.rstrip("\n"))

    def wait_subscribed(self, timeout: float = 15.0) -> "Tail":
        wait_until(lambda: any(line.startswith("subscribed to") for line in self.err) or self.proc.poll() is not None,
                   timeout, f"tail {self.args} did not subscribe")
        assert self.proc.poll() is None, f"tail exited {self.proc.returncode}: {self.err}"
        return self

    def finish(self, timeout: float = 15.0) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"tail {self.args} did not exit within {timeout} s: out {self.out} err {self.err}")
        for reader in self._readers:
            reader.join(5)
        return code

    def json_lines(self) -> List[dict]:
        return [json.loads(line) for line in self.out]

    def text(self) -> str:
        return "\n".join(self.out + self.err)


def _crossing(i: int) -> dict:
    return {"camera": "north", "line": "stop-line", "direction": "in" if i % 2 else "out",
            "class": "truck" if i == 2 else "car", "score": 0.93, "track": 100 + i, "frame": 5000 + 9 * i}


def _interval(i: int) -> dict:
    return {"start": 1796630400.0 + 60 * i, "end": 1796630460.0 + 60 * i, "counts": [
        {"camera": "north", "line": "stop-line", "direction": d, "class": c, "count": n}
        for d, c, n in (("in", "car", 4), ("out", "car", 3), ("in", "truck", 1), ("out", "truck", 0))]}


def _publish_by_hand(url_port: int, unit: str, payloads: List[bytes], credentials: Optional[tuple] = None) -> None:
    """Publish ``payloads`` in order at QoS 1 on one connection, as a unit resending after a lost PUBACK would."""
    mqtt = import_paho()
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=f"by-hand-{unit}",
                         protocol=mqtt.MQTTv311)
    if credentials:
        client.username_pw_set(*credentials)
    client.connect("127.0.0.1", url_port)
    client.loop_start()
    try:
        infos = [client.publish(messages.topic("traffic", unit, "crossing"), payload, qos=1) for payload in payloads]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def _by_hand(unit: str, seq: int, track: int) -> bytes:
    return messages.encode(messages.build("crossing", unit=unit, seq=seq, time=time.time(), body=_crossing(track)))


def test_tail_json_human_dedupe_and_filters(mqtt_broker: Callable[..., MqttBroker], tmp_path: Path) -> None:
    broker = mqtt_broker("broker")
    url = f"mqtt://127.0.0.1:{broker.port}/traffic"
    # Started before anything is published, all at once (each is its own subscriber); expected counts:
    # rsu-1 publishes seq 1-5 (3 crossings, 2 intervals); rsu-9 then sends seq 1 twice, then seq 2.
    tails = {
        "dedupe": Tail("--json", "events", "tail", url, "--count", "7"),
        "all": Tail("--json", "events", "tail", url, "--count", "8", "--no-dedupe"),
        "intervals": Tail("--json", "events", "tail", url, "--kind", "interval", "--unit", UNIT, "--count", "2"),
        "human": Tail("events", "tail", url, "--count", "7"),
    }
    try:
        for tail in tails.values():
            tail.wait_subscribed()
        config = parse_publish_url(url, **FAST)  # type: ignore[arg-type]
        with Spool(tmp_path / "spool.db", unit=UNIT, max_bytes=config.max_bytes, max_age_s=config.max_age_s) as spool:
            publisher = MqttPublisher(spool, config, client_id=client_id_for(UNIT)).start()
            try:
                seqs = [publisher.submit("interval" if i in (1, 4) else "crossing",
                                         _interval(i) if i in (1, 4) else _crossing(i)) for i in range(5)]
                assert seqs == [1, 2, 3, 4, 5]
                wait_until(lambda: publisher.health()["spool_depth"] == 0, 10, "the publisher did not send")
            finally:
                publisher.stop()
        duplicate = _by_hand("rsu-9", 1, 50)
        _publish_by_hand(broker.port, "rsu-9", [duplicate, duplicate, _by_hand("rsu-9", 2, 51)])
        codes = {name: tail.finish() for name, tail in tails.items()}
    finally:
        for tail in tails.values():
            if tail.proc.poll() is None:
                tail.proc.kill()
                tail.proc.wait(5)
    assert codes == {name: 0 for name in tails}, {name: t.err for name, t in tails.items()}

    shown = tails["dedupe"].json_lines()
    assert sorted((m["unit"], m["seq"]) for m in shown) == [(UNIT, s) for s in range(1, 6)] + [("rsu-9", 1), ("rsu-9", 2)]
    assert [m["seq"] for m in shown if m["unit"] == UNIT] == [1, 2, 3, 4, 5]
    first = next(m for m in shown if m["unit"] == UNIT and m["seq"] == 1)
    assert first["schema"] == messages.SCHEMA and first["kind"] == "crossing" and first["camera"] == "north"
    assert [m["kind"] for m in shown if m["unit"] == UNIT] == ["crossing", "interval", "crossing", "crossing", "interval"]
    assert all(line == json.dumps(m, separators=(",", ":"), ensure_ascii=False)
               for line, m in zip(tails["dedupe"].out, shown))  # compact, one object per line

    every = tails["all"].json_lines()
    assert [m["seq"] for m in every if m["unit"] == "rsu-9"] == [1, 1, 2]  # --no-dedupe: the second delivery too
    assert len(every) == 8

    intervals = tails["intervals"].json_lines()
    assert [(m["unit"], m["seq"], m["kind"]) for m in intervals] == [(UNIT, 2, "interval"), (UNIT, 5, "interval")]
    assert intervals[0]["counts"][0] == {"camera": "north", "line": "stop-line", "direction": "in", "class": "car",
                                         "count": 4}

    human = tails["human"]
    assert human.out == []  # human lines go to the console (stderr), as every command's tables do
    lines = [line for line in human.err if f" {UNIT} " in line or " rsu-9 " in line]
    assert len(lines) == 7, human.err
    crossing = next(line for line in lines if f"{UNIT}  #3  crossing" in line)
    assert "north/stop-line out  truck 0.93" in crossing
    interval = next(line for line in lines if f"{UNIT}  #2  interval" in line)
    assert "car 7, truck 1" in interval  # summed over directions, the zero row left out
    assert sum(" rsu-9  #1 " in line for line in lines) == 1
    assert human.err[-1].startswith("stopped: 7 messages from 2 unit(s) (1 duplicate(s) dropped)")


def test_tail_with_a_password_broker(mqtt_broker: Callable[..., MqttBroker], tmp_path: Path) -> None:
    broker = mqtt_broker("secure", password=(USER, PASSWORD))
    url = f"mqtt://127.0.0.1:{broker.port}/traffic"
    good = tmp_path / "credentials.json"
    good.write_text(json.dumps({"cameras": {}, "broker": {"username": USER, "password": PASSWORD}}))
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"broker": {"username": USER, "password": "not-the-" + PASSWORD}}))
    for path in (good, wrong):
        path.chmod(0o600)
    watching = Tail("--json", "events", "tail", url, "--credentials", str(good), "--count", "2").wait_subscribed()
    by_env = Tail("events", "tail", url, "--count", "1", env={"TOOLCHAIN_CAMERA_CREDENTIALS": str(good)})
    refused = Tail("--json", "events", "tail", url, "--credentials", str(wrong))
    anonymous = Tail("events", "tail", url)
    quiet = Tail("events", "tail", url, "--credentials", str(good), "--unit", "rsu-0", "--timeout", "1.5")
    try:
        by_env.wait_subscribed()
        _publish_by_hand(broker.port, "rsu-2", [_by_hand("rsu-2", 1, 1), _by_hand("rsu-2", 2, 2)],
                         credentials=(USER, PASSWORD))
        codes = [t.finish() for t in (watching, by_env, refused, anonymous, quiet)]
    finally:
        for t in (watching, by_env, refused, anonymous, quiet):
            if t.proc.poll() is None:
                t.proc.kill()
                t.proc.wait(5)
    assert codes[:2] == [0, 0], (watching.err, by_env.err)
    assert [m["seq"] for m in watching.json_lines()] == [1, 2]
    assert any(" rsu-2  #1  crossing" in line for line in by_env.err)

    assert codes[2] == 4 and codes[3] == 4
    error = json.loads(refused.out[-1])["error"]
    assert error["exit_code"] == 4 and "refused the username/password" in error["message"]
    assert "fix the broker table of the credentials file" in error["message"]
    assert "refused the username/password" in anonymous.err[-1]

    assert codes[4] == 3, quiet.err  # --timeout with nothing from that unit: exit 3, saying what to check
    assert "waited 1.5 s for a message on traffic/rsu-0/# " in quiet.text() and "is the unit publishing" in quiet.text()

    for t in (watching, by_env, refused, anonymous, quiet):
        assert PASSWORD not in t.text(), t.text()
        assert PASSWORD not in " ".join(t.args)


def test_tls_broker_ca_and_scheme(mqtt_broker: Callable[..., MqttBroker], tmp_path: Path) -> None:
    broker = mqtt_broker("tls", password=(USER, PASSWORD), tls=True)
    with_ca = tmp_path / "with-ca.json"
    with_ca.write_text(json.dumps({"broker": {"username": USER, "password": PASSWORD, "ca": broker.ca_pem}}))
    without_ca = tmp_path / "without-ca.json"
    without_ca.write_text(json.dumps({"broker": {"username": USER, "password": PASSWORD}}))
    secure = f"mqtts://127.0.0.1:{broker.port}/traffic"
    trusted = Tail("events", "tail", secure, "--credentials", str(with_ca), "--timeout", "1")
    untrusted = Tail("events", "tail", secure, "--credentials", str(without_ca))
    plain = Tail("events", "tail", f"mqtt://127.0.0.1:{broker.port}/traffic", "--credentials", str(with_ca))
    codes = [t.finish() for t in (trusted, untrusted, plain)]
    assert any(line.startswith("subscribed to traffic/+/#") for line in trusted.err), trusted.err
    assert codes[0] == 3  # subscribed, nothing published: the timeout says so
    assert codes[1] == 4 and "does not trust" in untrusted.err[-1] and "set ca in the broker table" in untrusted.err[-1]
    assert codes[2] == 5 and "mqtts:// for a TLS port" in plain.err[-1], plain.err
    for t in (trusted, untrusted, plain):
        assert PASSWORD not in t.text()


def test_ctrl_c_stops_cleanly(mqtt_broker: Callable[..., MqttBroker]) -> None:
    broker = mqtt_broker("broker")
    tail = Tail("events", "tail", f"mqtt://127.0.0.1:{broker.port}/traffic").wait_subscribed()
    tail.proc.send_signal(signal.SIGINT)
    assert tail.finish(10) == 0, tail.err
    assert tail.err[-1] == "stopped: 0 messages from 0 unit(s)"


def test_nothing_listening_is_a_clear_error() -> None:
    port = free_port()
    started = time.monotonic()
    tail = Tail("--json", "events", "tail", f"mqtt://127.0.0.1:{port}/traffic", "--count", "1")
    assert tail.finish() == 5
    assert time.monotonic() - started < 10
    error = json.loads(tail.out[-1])["error"]
    assert error["type"] == "MissingEnvironmentError" and error["exit_code"] == 5
    assert f"refused the connection on 127.0.0.1:{port}" in error["message"]
    assert "is the broker running and listening on that port?" in error["message"]
    assert tail.err[-1].startswith("error: the broker mqtt://127.0.0.1:")
    assert len(tail.err) == 1, tail.err  # said once, not once per retry nor by a logger as well


def test_bad_url_and_unit_are_refused_before_connecting() -> None:
    bad = Tail("events", "tail", "http://127.0.0.1/traffic")
    assert bad.finish() == 4 and "is not mqtt://HOST[:PORT]/PREFIX" in bad.text()
    unit = Tail("events", "tail", "mqtt://127.0.0.1:1/traffic", "--unit", "a/b")
    assert unit.finish() == 4 and "cannot be an MQTT topic level" in unit.text()
