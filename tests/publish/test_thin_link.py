"""The publisher behind a thin, cut link (scripts/thin_link.py at 64 kbit/s, one connection cut mid-way): every
message arrives, and the bytes per crossing message are recorded (BENCHMARKS)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from tests.docker.fleet_sim import ThinLink
from tests.mqtt_broker import MqttBroker, Subscriber, mqtt_broker, wait_until  # noqa: F401 - the fixture
from tests.ports import free_port
from toolchain.publish import messages
from toolchain.publish.config import client_id_for, parse_publish_url
from toolchain.publish.mqtt import MqttPublisher
from toolchain.publish.spool import Spool

UNIT = "rsu-0042"
COUNT = 150
CUT_AFTER = 6000  # bytes towards the broker: the first connection drops with messages in flight


def _crossing(i: int) -> dict:
    """A crossing as the pipeline sends it."""
    return {"camera": "north", "line": "stop-line", "direction": "in" if i % 3 else "out",
            "class": "truck" if i % 5 == 0 else "car", "score": 0.913, "track": 18000 + i, "frame": 5_200_000 + 7 * i,
            "latency_s": 0.043}


def test_every_message_crosses_a_thin_cut_link(mqtt_broker: Callable[..., MqttBroker], tmp_path: Path) -> None:
    broker = mqtt_broker("broker")
    direct = parse_publish_url(f"mqtt://127.0.0.1:{broker.port}/traffic")
    subscriber = Subscriber(direct, client_id=None).start()
    port = free_port()
    link = ThinLink(tmp_path / "link", {"mqtt": (f"tcp:127.0.0.1:{port}", f"tcp:127.0.0.1:{broker.port}")},
                    rate="64kbit", cut_after=CUT_AFTER)
    config = parse_publish_url(f"mqtt://127.0.0.1:{port}/traffic", reconnect_min_s=0.2, reconnect_max_s=1.0)
    try:
        with link, Spool(tmp_path / "spool.db", unit=UNIT, max_bytes=config.max_bytes,
                         max_age_s=config.max_age_s) as spool:
            publisher = MqttPublisher(spool, config, client_id=client_id_for(UNIT)).start()
            try:
                started = time.monotonic()
                seqs = [publisher.submit("crossing", _crossing(i)) for i in range(COUNT)]
                subscriber.wait_for_seqs(seqs, 60)
                elapsed = time.monotonic() - started
                wait_until(lambda: publisher.health()["spool_depth"] == 0, 10, "the spool did not empty")
                assert subscriber.unique_in_order() == seqs == list(range(1, COUNT + 1))
                assert publisher.health()["connected"]
            finally:
                publisher.stop()
            stats = link.stop()["mqtt"]
        assert stats["cut"] and stats["connections"] >= 2, stats  # it was cut, and the publisher came back
        payloads = [len(messages.encode(m)) for m in subscriber.messages]
        topic = len(messages.topic("traffic", UNIT, "crossing"))
        mean = sum(payloads) / len(payloads)
        report = {"crossing_payload_bytes_mean": round(mean, 1), "crossing_payload_bytes_max": max(payloads),
                  "topic_bytes": topic,  # PUBLISH: 1 + 2 (length) + 2 + topic + 2 (packet id) + payload
                  "mqtt_publish_bytes": round(mean + topic + 7, 1),
                  "link_bytes_up_per_message": round(stats["up"] / COUNT, 1),
                  "link_bytes_down_per_message": round(stats["down"] / COUNT, 1),
                  "duplicates": len(subscriber.seqs()) - COUNT, "connections": stats["connections"],
                  "seconds": round(elapsed, 2)}
        print("\nthin link 64kbit, cut after", CUT_AFTER, "bytes:", json.dumps(report))
        assert mean < 300  # compact JSON: a crossing stays small on 4G
    finally:
        subscriber.stop()
