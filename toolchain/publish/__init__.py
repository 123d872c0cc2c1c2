"""Counts published over MQTT from a roadside unit, with an on-unit spool so nothing is lost.

The pipeline appends each message (a line crossing, an interval's totals, a per-frame summary) to a
:class:`~toolchain.publish.spool.Spool` (SQLite on the unit's disk); :class:`~toolchain.publish.mqtt.MqttPublisher`
sends it, in order and at least once, and deletes it only when the broker acknowledged it. A link cut, a
broker restart or a killed process leaves the unsent messages in the spool; they go out when the link is
back. Consumers drop the duplicates by ``(unit, seq)`` (:class:`~toolchain.publish.tail.Deduplicator`).

Modules: :mod:`.messages` (the payload schema and topics), :mod:`.spool` (the durable store), :mod:`.intervals`
(per-interval totals), :mod:`.config` (the publish URL and broker credentials), :mod:`.mqtt` (the publisher
thread), :mod:`.tail` (a subscriber). Standard library plus paho-mqtt (imported only where a client is made);
Python 3.8 compatible: the roadside image imports it.
"""
