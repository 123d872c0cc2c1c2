"""A broker with a password and TLS (a CA made for the test): the right login works, a wrong one is reported
clearly, and no password shows in any health, error, repr or log line."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import pytest

from tests.mqtt_broker import MqttBroker, Subscriber, make_ca_and_server_cert, mqtt_broker, wait_until  # noqa: F401
from toolchain.errors import BadInputError
from toolchain.publish.config import BrokerCredentials, broker_credentials_from, client_id_for, parse_publish_url
from toolchain.publish.mqtt import MqttPublisher
from toolchain.publish.spool import Spool

USER, PASSWORD = "rsu-7", "Tr0ub4dor&3-broker-secret"
UNIT = "rsu-7"
FAST = {"reconnect_min_s": 0.2, "reconnect_max_s": 1.0, "connect_timeout_s": 5.0}


def _health_after_trying(publisher: MqttPublisher) -> dict:
    wait_until(lambda: publisher.health()["error"] != "", 10, "the publisher reported no error")
    return publisher.health()


def _spool(tmp_path: Path, name: str) -> Spool:
    return Spool(tmp_path / name / "spool.db", unit=UNIT, max_bytes=1 << 20, max_age_s=3600.0)


def test_password_and_tls(mqtt_broker: Callable[..., MqttBroker], tmp_path: Path, caplog: pytest.LogCaptureFixture,
                          capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    broker = mqtt_broker("secure", password=(USER, PASSWORD), tls=True)
    assert broker.ca_pem.startswith("-----BEGIN CERTIFICATE-----")
    credentials = broker_credentials_from({"cameras": {}, "broker": {"username": USER, "password": PASSWORD,
                                                                     "ca": broker.ca_pem}})
    assert credentials is not None
    config = parse_publish_url(f"mqtts://127.0.0.1:{broker.port}/traffic", **FAST)  # type: ignore[arg-type]
    subscriber = Subscriber(config, credentials=credentials).start()
    texts = [repr(credentials), str(config)]
    try:
        # The right login and CA: messages go through.
        with _spool(tmp_path, "good") as spool:
            publisher = MqttPublisher(spool, config, client_id=client_id_for(UNIT), credentials=credentials).start()
            try:
                seqs = [publisher.submit("crossing", {"camera": "north", "track": i}) for i in range(5)]
                subscriber.wait_for_seqs(seqs, 10)
                health = publisher.health()
                assert health["connected"] and health["error"] == "" and health["broker"] == config.url
                texts += [str(health), repr(publisher)]
            finally:
                publisher.stop()

        # A wrong password: not authorised, said plainly, and retried.
        wrong = BrokerCredentials(username=USER, password="wr0ng-password-value", ca_pem=broker.ca_pem)
        with _spool(tmp_path, "wrong") as spool:
            publisher = MqttPublisher(spool, config, client_id=client_id_for(UNIT), credentials=wrong).start()
            try:
                publisher.submit("crossing", {"camera": "north"})
                health = _health_after_trying(publisher)
                assert not health["connected"]
                assert "refused the username/password (not authorised" in health["error"]
                assert "fix the broker table of the credentials file" in health["error"]
                assert health["spool_depth"] == 1  # kept for when the login is fixed
                texts += [str(health), repr(wrong)]
            finally:
                publisher.stop()

        # A CA that did not sign the broker's certificate: a TLS verification error that says what to fix.
        other_ca = make_ca_and_server_cert()[0].decode()
        untrusted = BrokerCredentials(username=USER, password=PASSWORD, ca_pem=other_ca)
        with _spool(tmp_path, "other-ca") as spool:
            publisher = MqttPublisher(spool, config, client_id=client_id_for(UNIT), credentials=untrusted).start()
            try:
                health = _health_after_trying(publisher)
                assert not health["connected"] and "does not trust" in health["error"]
                assert "set ca in the broker table" in health["error"]
                texts.append(str(health))
            finally:
                publisher.stop()

        # Plain mqtt:// to the TLS port: closed before CONNACK, with a hint.
        plain = parse_publish_url(f"mqtt://127.0.0.1:{broker.port}/traffic", **FAST)  # type: ignore[arg-type]
        with _spool(tmp_path, "plain") as spool:
            publisher = MqttPublisher(spool, plain, client_id=client_id_for(UNIT), credentials=credentials).start()
            try:
                health = _health_after_trying(publisher)
                assert not health["connected"] and "use mqtts://" in health["error"]
                texts.append(str(health))
            finally:
                publisher.stop()
    finally:
        subscriber.stop()
    captured = capsys.readouterr()
    texts += [caplog.text, captured.out, captured.err, broker.log()]
    for text in texts:
        assert PASSWORD not in text and "wr0ng-password-value" not in text
    assert "not authorised" in caplog.text  # the failure was logged, without the password


def test_a_broker_that_is_down_is_reported_and_the_spool_grows(tmp_path: Path) -> None:
    from tests.ports import free_port

    config = parse_publish_url(f"mqtt://127.0.0.1:{free_port()}/traffic", **FAST)  # type: ignore[arg-type]
    with _spool(tmp_path, "down") as spool:
        publisher = MqttPublisher(spool, config, client_id=client_id_for(UNIT)).start()
        try:
            for i in range(3):
                publisher.submit("crossing", {"track": i})
            health = _health_after_trying(publisher)
            assert not health["connected"] and "refused the connection" in health["error"]
            assert health["spool_depth"] == 3 and health["sent"] == 0 and health["last_puback_age_s"] is None
            started = time.monotonic()
        finally:
            publisher.stop()
        assert time.monotonic() - started < 3  # stop does not wait out the backoff


def test_a_bad_ca_is_refused_at_start(tmp_path: Path) -> None:
    config = parse_publish_url("mqtts://127.0.0.1:8883/traffic")
    bad = BrokerCredentials(ca_pem="-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with _spool(tmp_path, "bad-ca") as spool:
        with pytest.raises(BadInputError, match="broker.ca"):
            MqttPublisher(spool, config, client_id="x", credentials=bad)
