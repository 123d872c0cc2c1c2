"""Per-interval totals: aligned boundaries, zeros included, the partial last interval."""

from __future__ import annotations

from typing import List

from toolchain.publish.intervals import MAX_EMPTY_INTERVALS, IntervalCounter, RateLimit


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _count(body: dict, camera: str, line: str, direction: str, cls: str) -> int:
    [entry] = [c for c in body["counts"] if (c["camera"], c["line"], c["direction"], c["class"]) == (camera, line, direction, cls)]
    return entry["count"]


def test_intervals_align_to_boundaries_and_list_zeros() -> None:
    clock = Clock(1000.0)
    counter = IntervalCounter([("north", "stop", "in"), ("north", "stop", "out")], ["car", "truck"], 60.0, clock=clock)
    clock.now = 1005.0
    counter.add("north", "stop", "in", "car")
    counter.add("north", "stop", "in", "car")
    counter.add("north", "stop", "out", "truck")
    assert counter.due(1019.9) == []
    [first] = counter.due(1020.0)  # 1020 = 17 x 60: the first boundary after the start
    assert (first["start"], first["end"]) == (1000.0, 1020.0)
    assert len(first["counts"]) == 4  # 2 keys x 2 classes, zeros included
    assert _count(first, "north", "stop", "in", "car") == 2 and _count(first, "north", "stop", "out", "truck") == 1
    assert _count(first, "north", "stop", "in", "truck") == 0 and _count(first, "north", "stop", "out", "car") == 0
    assert counter.due(1020.0) == []  # returned once


def test_empty_intervals_are_closed_too_and_new_keys_and_classes_join() -> None:
    clock = Clock(1020.0)
    counter = IntervalCounter([("north", "stop", "in")], ["car"], 60.0, clock=clock)
    clock.now = 1150.0  # two boundaries passed (1080, 1140) before this crossing
    counter.add("south", "exit", "out", "bus")
    closed = counter.due(1200.0)
    assert [(b["start"], b["end"]) for b in closed] == [(1020.0, 1080.0), (1080.0, 1140.0), (1140.0, 1200.0)]
    assert all(c["count"] == 0 for b in closed[:2] for c in b["counts"])
    last = closed[2]
    assert len(last["counts"]) == 4  # the new key and class joined: 2 keys x 2 classes
    assert _count(last, "south", "exit", "out", "bus") == 1 and _count(last, "north", "stop", "in", "bus") == 0
    assert all(c["count"] == 0 for c in counter.due(1260.0)[0]["counts"])  # counts reset after each interval


def test_flush_closes_the_partial_last_interval() -> None:
    clock = Clock(1200.0)
    counter = IntervalCounter([("c", "l", "in")], ["car"], 60.0, clock=clock)
    counter.add("c", "l", "in", "car")
    clock.now = 1270.0
    counter.add("c", "l", "in", "car")
    bodies = counter.flush(1275.5)
    assert [(b["start"], b["end"]) for b in bodies] == [(1200.0, 1260.0), (1260.0, 1275.5)]
    assert [b["counts"][0]["count"] for b in bodies] == [1, 1]
    assert counter.flush(1275.5) == []  # nothing new: no empty zero-length interval


def test_a_long_gap_does_not_flood_the_spool() -> None:
    clock = Clock(0.0)
    counter = IntervalCounter([("c", "l", "in")], ["car"], 1.0, clock=clock)
    closed: List[dict] = counter.due(100000.5)
    assert len(closed) == MAX_EMPTY_INTERVALS + 1
    assert closed[-1]["start"] == MAX_EMPTY_INTERVALS and closed[-1]["end"] == 100000.0
    assert [(b["start"], b["end"]) for b in counter.due(100001.0)] == [(100000.0, 100001.0)]


def test_rate_limit() -> None:
    clock = Clock(10.0)
    limit = RateLimit(2.0, clock=clock)
    assert limit.allow() and not limit.allow()
    clock.now = 10.49
    assert not limit.allow()
    clock.now = 10.5
    assert limit.allow()
