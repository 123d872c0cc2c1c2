"""The publish URL, the broker credentials and the message schema."""

from __future__ import annotations

import json

import pytest

from toolchain.errors import BadInputError
from toolchain.publish import messages
from toolchain.publish.config import (BrokerCredentials, PublishConfig, broker_credentials_from, client_id_for,
                                      parse_publish_url)
from toolchain.redaction import scrub


def test_publish_urls_parse_with_default_ports_and_overrides() -> None:
    plain = parse_publish_url("mqtt://broker.example/traffic/counts")
    assert (plain.host, plain.port, plain.tls, plain.prefix) == ("broker.example", 1883, False, "traffic/counts")
    secure = parse_publish_url("mqtts://10.0.0.5:9883/traffic/", interval_s=30, max_bytes=1 << 20)
    assert (secure.host, secure.port, secure.tls, secure.prefix) == ("10.0.0.5", 9883, True, "traffic")
    assert (secure.interval_s, secure.max_bytes, secure.qos, secure.max_age_s) == (30, 1 << 20, 1, 7 * 86400)
    assert parse_publish_url("mqtts://b/x").port == 8883
    assert secure.topic_filter() == "traffic/+/#" and secure.topic_filter("rsu-1") == "traffic/rsu-1/#"
    assert messages.topic(secure.prefix, "rsu-1", "crossing") == "traffic/rsu-1/crossing"
    assert client_id_for("rsu-1") == "toolchain-rsu-1"


@pytest.mark.parametrize("url, fragment", [
    ("http://broker/x", "is not mqtt://"),
    ("mqtt://broker", "has no topic prefix"),
    ("mqtt://broker/", "has no topic prefix"),
    ("mqtt://broker/traffic/+", "contains '+'"),
    ("mqtt://broker/traffic/#", "query or '#'"),
    ("mqtt://broker/traffic?x=1", "query or '#'"),
    ("mqtt:///traffic", "names no broker host"),
    ("mqtt://broker:99999/traffic", "invalid port"),
    ("mqtt://broker/$SYS/x", "starts with '$'"),
])
def test_bad_publish_urls_are_refused_with_what_to_do(url: str, fragment: str) -> None:
    with pytest.raises(BadInputError, match=fragment.replace("+", r"\+").replace("?", r"\?").replace("$", r"\$")):
        parse_publish_url(url)


def test_userinfo_in_the_url_is_refused_without_echoing_the_password() -> None:
    with pytest.raises(BadInputError) as caught:
        parse_publish_url("mqtts://unit7:Hunter2-secret@broker/traffic")
    text = str(caught.value)
    assert "Hunter2-secret" not in text and "broker table" in text and "credentials file" in text
    with pytest.raises(BadInputError, match="broker table"):
        parse_publish_url("mqtt://justatoken@broker/traffic")


def test_settings_are_checked() -> None:
    with pytest.raises(BadInputError, match="qos must be 1 or 2"):
        parse_publish_url("mqtt://b/x", qos=0)
    with pytest.raises(BadInputError, match="max_bytes"):
        parse_publish_url("mqtt://b/x", max_bytes=10)
    with pytest.raises(TypeError, match="nonsense"):
        parse_publish_url("mqtt://b/x", nonsense=1)
    with pytest.raises(Exception):  # frozen
        PublishConfig(url="mqtt://b/x", host="b", port=1, tls=False, prefix="x").port = 2  # type: ignore[misc]


def test_broker_credentials_come_from_the_broker_table_and_never_show() -> None:
    document = {"cameras": {}, "broker": {"username": "unit-7", "password": "pw-0f-unit-7!", "ca": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"}}
    credentials = broker_credentials_from(document)
    assert credentials is not None and credentials.username == "unit-7" and credentials.password == "pw-0f-unit-7!"
    assert credentials.ca_pem.startswith("-----BEGIN CERTIFICATE-----")
    assert "pw-0f-unit-7!" not in repr(credentials) and "unit-7" not in repr(credentials)
    assert "pw-0f-unit-7!" not in str(credentials) and "pw-0f-unit-7!" not in f"{credentials}"
    assert scrub("connect failed with pw-0f-unit-7!") == "connect failed with ***"  # registered as a secret
    assert broker_credentials_from({"cameras": {}}) is None
    assert broker_credentials_from({"broker": {}}) == BrokerCredentials()


def test_broker_table_errors_name_the_key_never_the_value() -> None:
    with pytest.raises(BadInputError) as caught:
        broker_credentials_from({"broker": {"username": "u", "pasword": "typo-secret-value"}})
    assert "'pasword'" in str(caught.value) and "typo-secret-value" not in str(caught.value)
    with pytest.raises(BadInputError, match="username"):
        broker_credentials_from({"broker": {"password": "only-a-password"}})
    with pytest.raises(BadInputError, match="PEM"):
        broker_credentials_from({"broker": {"ca": "not a certificate"}})
    with pytest.raises(BadInputError, match="must be a string"):
        broker_credentials_from({"broker": {"username": 7}})
    with pytest.raises(BadInputError, match="table"):
        broker_credentials_from({"broker": "u:p"})


def test_messages_are_compact_json_with_the_envelope_first() -> None:
    message = messages.build("crossing", unit="rsu-1", seq=12, time=1796630400.12345,
                             body={"camera": "north", "line": "stop", "direction": "in", "class": "truck", "score": 0.93})
    payload = messages.encode(message)
    assert b" " not in payload
    assert list(json.loads(payload))[:5] == ["schema", "unit", "seq", "kind", "time"]
    decoded = messages.decode(payload)
    assert decoded["schema"] == messages.SCHEMA == "toolchain.counts/1" and decoded["time"] == 1796630400.123
    assert decoded["class"] == "truck"


def test_bad_messages_are_refused() -> None:
    with pytest.raises(BadInputError, match="envelope keys seq"):
        messages.build("crossing", unit="u", seq=1, time=0, body={"seq": 3})
    with pytest.raises(BadInputError, match="unknown message kind"):
        messages.build("gossip", unit="u", seq=1, time=0, body={})
    with pytest.raises(BadInputError, match="JSON"):
        messages.encode(messages.build("crossing", unit="u", seq=1, time=0, body={"score": float("nan")}))
    with pytest.raises(BadInputError, match="major version"):
        messages.decode(b'{"schema":"toolchain.counts/2","unit":"u","seq":1,"kind":"crossing","time":1}')
    with pytest.raises(BadInputError, match="lacks seq"):
        messages.decode(b'{"schema":"toolchain.counts/1","unit":"u","kind":"crossing","time":1}')
    with pytest.raises(BadInputError, match="not UTF-8 JSON"):
        messages.decode(b"\xff")
    with pytest.raises(BadInputError, match="topic level"):
        messages.topic("traffic", "a/b", "crossing")


def test_the_package_imports_without_paho_and_says_how_to_install_it() -> None:
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    probe = """
import sys
sys.path.insert(0, sys.argv[1])
from tests.hide_modules import hide
hide({"paho"})
import toolchain.publish, toolchain.publish.config, toolchain.publish.messages, toolchain.publish.spool
import toolchain.publish.intervals, toolchain.publish.mqtt, toolchain.publish.tail
assert "paho" not in sys.modules
from toolchain.errors import MissingEnvironmentError
from toolchain.publish.mqtt import import_paho
try:
    import_paho()
except MissingEnvironmentError as exc:
    print(exc)
"""
    run = subprocess.run([sys.executable, "-c", probe, str(root)], capture_output=True, text=True, timeout=60, cwd=root)
    assert run.returncode == 0, run.stderr
    assert "pip install 'paho-mqtt>=2,<3'" in run.stdout
