"""Tests of toolchain.publish: the spool, interval counts, the URL/credentials, and the publisher against a real
mosquitto on loopback (tests/mqtt_broker.py)."""
