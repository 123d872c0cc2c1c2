"""The tracker keeps one id per vehicle across lanes, gaps and passing traffic, and never confirms blips."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
import pytest

from toolchain.errors import UsageError
from toolchain.runtime.geometry import Box
from toolchain.runtime.track import Track, Tracker, TrackerConfig, corners, greedy_match

Frame = List[Tuple[int, Box]]  # (vehicle, box) as a finder would see them


def box_at(x: float, y: float, w: float = 20, h: float = 30) -> Box:
    """A box of ``w`` x ``h`` centred on ``(x, y)``."""
    return Box(x1=x - w / 2, y1=y - h / 2, x2=x + w / 2, y2=y + h / 2)


def traffic(frames: int = 240, size: Tuple[int, int] = (320, 240), seed: int = 0, jitter: float = 1.0,
            lanes: Sequence[Tuple[float, float]] = ((100, 4.0), (128, 6.5), (160, -5.0), (188, -3.5)),
            miss: float = 0.0) -> Tuple[List[Frame], Dict[int, List[Tuple[int, float, float]]]]:
    """Vehicles driving down (+speed) or up (-speed) the picture in lanes ``(x, speed)``, boxes clipped to the frame.

    Lanes are 28-32 px apart and vehicles 24 px wide, so neighbours pass within a few pixels of each other,
    both overtaking (same direction) and meeting (opposite directions). Cars (30 px) and lorries (56 px).

    Returns:
        Per frame the visible boxes with their vehicle; per vehicle its true centre ``(frame, x, y)``.
    """
    rng = np.random.RandomState(seed)
    width, height = size
    vehicles = []  # (id, lane x, speed, length, frame it enters)
    for x, speed in lanes:
        start = int(rng.randint(0, 10))
        while start < frames - 10:
            length = 56.0 if rng.rand() < 0.3 else 30.0
            vehicles.append((len(vehicles), x, speed, length, start))
            start += int((length + 20) / abs(speed)) + int(rng.randint(0, 12))  # a gap behind it
    scene: List[Frame] = [[] for _ in range(frames)]
    truth: Dict[int, List[Tuple[int, float, float]]] = {}
    for vid, x, speed, length, start in vehicles:
        y0 = -length / 2 if speed > 0 else height + length / 2
        for f in range(start, frames):
            y = y0 + speed * (f - start)
            cx, cy = x + rng.uniform(-jitter, jitter), y + rng.uniform(-jitter, jitter)
            b = box_at(cx, cy, 24, length)
            clipped = Box(x1=max(b.x1, 0), y1=max(b.y1, 0), x2=min(b.x2, width), y2=min(b.y2, height))
            if clipped.height < 8:  # a finder's minimum size
                if (speed > 0) == (y > height / 2):
                    break  # gone
                continue   # not in yet
            truth.setdefault(vid, []).append((f, x, y))
            if rng.rand() >= miss:
                scene[f].append((vid, clipped))
    return scene, truth


def identities(scene: Sequence[Frame], config: Optional[TrackerConfig] = None
               ) -> Tuple[Dict[int, Set[int]], Dict[int, Set[int]]]:
    """Follow ``scene``: which vehicles each track id followed, and which ids each vehicle had (matched boxes)."""
    tracker = Tracker(config)
    by_track: Dict[int, Set[int]] = {}
    by_vehicle: Dict[int, Set[int]] = {}
    for f, frame in enumerate(scene):
        owner = {id(b): v for v, b in frame}
        for track in tracker.update([b for _, b in frame], f).matched:
            vehicle = owner[id(track.box)]  # tracks are live: read them before the next update
            by_track.setdefault(track.id, set()).add(vehicle)
            by_vehicle.setdefault(vehicle, set()).add(track.id)
    return by_track, by_vehicle


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_vehicle_keeps_one_id_across_four_lanes_both_ways(seed: int) -> None:
    scene, truth = traffic(seed=seed)
    by_track, by_vehicle = identities(scene)
    assert len(truth) >= 20
    assert {t: v for t, v in by_track.items() if len(v) > 1} == {}, "a track jumped between vehicles"
    assert {v: t for v, t in by_vehicle.items() if len(t) > 1} == {}, "a vehicle changed id"
    assert set(by_vehicle) == set(truth), "every vehicle is followed"
    assert sorted(by_track) == list(range(1, len(truth) + 1)), "ids are 1, 2, ... in order of confirmation"


def test_adjacent_lanes_pass_each_other_without_swapping() -> None:
    # Two lanes 26 px apart with 24 px wide boxes, meeting head-on, and two overtaking: boxes 2 px apart.
    scene, truth = traffic(frames=120, lanes=((100, 5.0), (126, -5.0), (200, 3.0), (226, 7.0)), seed=3)
    by_track, by_vehicle = identities(scene)
    assert all(len(v) == 1 for v in by_track.values()) and all(len(t) == 1 for t in by_vehicle.values())
    assert set(by_vehicle) == set(truth)


def test_missed_detections_do_not_break_ids() -> None:
    scene, truth = traffic(seed=4, miss=0.1)
    by_track, by_vehicle = identities(scene)
    assert all(len(v) == 1 for v in by_track.values()) and all(len(t) == 1 for t in by_vehicle.values())
    assert set(by_vehicle) == set(truth)


def test_a_track_is_confirmed_after_min_hits_and_only_then_gets_an_id() -> None:
    tracker = Tracker(TrackerConfig(min_hits=3))
    seen = [tracker.update([box_at(100, 50 + 4 * f)], f) for f in range(4)]
    assert [len(u.active) for u in seen] == [0, 0, 1, 1]
    assert [t.id for t in tracker.tracks] == [1]
    track = seen[2].active[0]
    assert (track.hits, track.first_frame, track.last_frame, track.age, track.lost) == (4, 0, 3, 4, 0)
    assert [f for f, _ in track.history] == [0, 1, 2, 3], "the tentative frames are kept for the counter"
    assert track.velocity == pytest.approx((0.0, 4.0))
    assert Tracker(TrackerConfig(min_hits=1)).update([box_at(10, 10)], 0).active[0].id == 1


def test_the_lost_buffer_bridges_a_five_frame_gap_at_the_predicted_place() -> None:
    # A small fast vehicle: 0.8 of its size per frame, so its boxes barely overlap; during the gap it moves
    # 60 px, far from where it was last seen: only the velocity prediction finds it again.
    tracker = Tracker(TrackerConfig(max_lost=15))
    gap = range(10, 15)
    seen = []  # (ids, lost, matched, predicted centre) per frame, read before the next update changes the tracks
    for f in range(25):
        update = tracker.update([] if f in gap else [box_at(50 + 10 * f, 100, 12, 8)], f)
        seen.append(([t.id for t in update.active], [t.lost for t in update.active], len(update.matched),
                     update.active[0].predicted(f).anchor() if update.active else None))
    assert [ids for ids, *_ in seen[2:]] == [[1]] * 23
    assert [lost for _, lost, *_ in seen[9:16]] == [[0], [1], [2], [3], [4], [5], [0]]
    assert [matched for _, _, matched, _ in seen[9:16]] == [1, 0, 0, 0, 0, 0, 1]
    assert seen[12][3] == pytest.approx((170, 100))


def test_a_confirmed_track_ends_once_after_max_lost_frames() -> None:
    tracker = Tracker(TrackerConfig(max_lost=5))
    updates = [tracker.update([box_at(100, 100)] if f < 4 else [], f) for f in range(15)]
    ended = [(f, t.id) for f, u in enumerate(updates) for t in u.ended]
    assert ended == [(3 + 5 + 1, 1)]  # last match in frame 3, lost 5 frames, gone in the 6th
    assert [bool(u.active) for u in updates] == [False, False, True, True, True, True, True, True, True] + [False] * 6
    assert tracker.flush() == ()


def test_one_frame_blips_never_make_tracks() -> None:
    rng = np.random.RandomState(5)
    tracker = Tracker()
    for f in range(300):
        x, y, s = rng.uniform(0, 640), rng.uniform(0, 352), rng.uniform(8, 30)
        update = tracker.update([box_at(x, y, s, s)], f)
        assert update.active == () and update.ended == ()
    assert all(not t.confirmed for t in tracker.tracks)
    # A blip beside a real vehicle neither steals its box nor takes an id: the vehicle is number 1.
    for f in range(300, 310):
        boxes = [box_at(100, 5 * f - 1400)] + ([box_at(130, 5 * f - 1380)] if f == 304 else [])
        update = tracker.update(boxes, f)
    assert [t.id for t in update.active] == [1] and update.active[0].hits == 10


def test_flush_ends_the_confirmed_tracks_only() -> None:
    tracker = Tracker(TrackerConfig(min_hits=2))
    tracker.update([box_at(50, 50), box_at(200, 50)], 0)
    tracker.update([box_at(50, 52)], 1)
    assert [t.id for t in tracker.flush()] == [1]
    assert tracker.tracks == () and tracker.update([], 2).active == ()


def test_frames_must_come_in_order() -> None:
    tracker = Tracker()
    tracker.update([], 5)
    tracker.update([], 7)  # dropped frames leave gaps: fine
    with pytest.raises(UsageError, match="increasing order"):
        tracker.update([], 7)


@pytest.mark.parametrize("bad", [dict(min_hits=0), dict(max_lost=-1), dict(iou_threshold=0.0), dict(centre_gate=-1),
                                 dict(smoothing=0.0), dict(min_hits=5, history=4)])
def test_bad_configs_say_what_to_give(bad: dict) -> None:
    with pytest.raises(UsageError, match="give|must"):
        TrackerConfig(**bad)


def test_greedy_match_prefers_overlap_then_nearness_and_gates_the_rest() -> None:
    tracks = [box_at(100, 100), box_at(200, 100), box_at(300, 100)]
    boxes = [box_at(300, 400), box_at(215, 100), box_at(103, 100), box_at(112, 100)]
    # 100 overlaps both 103 and 112 and takes the better; 200 reaches 215 by distance (below IoU 0.3);
    # 300 has nothing near; the box at 112 stays unmatched (it would start a new track).
    t, b = corners(tracks), corners(boxes)
    assert sorted(greedy_match(t, b, 0.3, 1.0)) == [(0, 2), (1, 1)]
    assert greedy_match(t, b, 0.3, 0.0) == [(0, 2)]
    assert greedy_match(corners([]), b, 0.3, 1.0) == [] and greedy_match(t, corners([]), 0.3, 1.0) == []


def test_track_repr_and_predicted_box_keep_the_size() -> None:
    track = Track(box_at(10, 10, 4, 6), 0)
    assert "tentative" in repr(track) and track.id == -1
    assert track.predicted(5).width == 4 and track.predicted(5).anchor() == (10, 10)
