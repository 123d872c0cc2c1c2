"""The line counter counts each vehicle once, in its direction, on the segment, and never from jitter or flicker."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import pytest

from tests.runtime.test_track import box_at, traffic
from toolchain.errors import UsageError
from toolchain.runtime.geometry import Box, Line
from toolchain.runtime.lines import Crossing, LineCounter
from toolchain.runtime.track import Tracker, TrackerConfig

ONE_HIT = TrackerConfig(min_hits=1)


def count(frames: Sequence[Sequence[Box]], counter: LineCounter, config: Optional[TrackerConfig] = ONE_HIT
          ) -> List[Crossing]:
    """Run tracker and counter over ``frames`` as the pipeline does; the crossings, the stream's end included."""
    tracker = Tracker(config)
    crossings: List[Crossing] = []
    for f, boxes in enumerate(frames):
        update = tracker.update(boxes, f)
        crossings += counter.update(update.active, f)
        crossings += counter.end(update.ended, f)
    return crossings + counter.end(tracker.flush(), len(frames))


def path(points: Sequence[Tuple[float, float]], w: float = 20, h: float = 20) -> List[List[Box]]:
    """One vehicle whose box centre follows ``points``, one per frame."""
    return [[box_at(x, y, w, h)] for x, y in points]


def straight(start: Tuple[float, float], end: Tuple[float, float], frames: int) -> List[Tuple[float, float]]:
    return [(start[0] + (end[0] - start[0]) * i / (frames - 1), start[1] + (end[1] - start[1]) * i / (frames - 1))
            for i in range(frames)]


def summary(crossings: Sequence[Crossing]) -> List[Tuple[str, str, int]]:
    return [(c.line, c.direction, c.track_id) for c in crossings]


MID = Line.parse("MID=0,120,320,120")


def test_every_vehicle_of_four_lanes_counts_once_in_its_direction() -> None:
    scene, truth = traffic(frames=300, seed=7)
    counter = LineCounter([MID])
    crossings = count([[b for _, b in frame] for frame in scene], counter, TrackerConfig())
    down = sum(1 for t in truth.values() if t[-1][2] > t[0][2])
    assert len(truth) >= 25 and 0 < down < len(truth)
    # Vehicles still short of the line, or past it and still entering, when the clip ends do not cross.
    crossed = {v for v, t in truth.items() if (t[0][2] - 120) * (t[-1][2] - 120) < 0}
    assert counter.counts == {("MID", "down"): sum(1 for v in crossed if truth[v][-1][2] > 120),
                              ("MID", "up"): sum(1 for v in crossed if truth[v][-1][2] < 120)}
    assert len({c.track_id for c in crossings}) == len(crossings) == len(crossed), "none counted twice"
    # Each crossing is a true one: its lane, its direction, and the first frame with the centre past the line
    # (within a frame: the boxes jitter by a pixel).
    expected = []
    for v in crossed:
        down = truth[v][-1][2] > 120
        frame, x, _ = next(t for t in truth[v] if (t[2] > 120 if down else t[2] < 120))
        expected.append((frame, x, "down" if down else "up"))
    for c in crossings:
        match = [e for e in expected if e[2] == c.direction and abs(e[1] - c.x) <= 3 and abs(e[0] - c.frame) <= 1]
        assert match, f"{c} is no vehicle's crossing"
        expected.remove(match[0])
        assert c.frame <= c.judged_frame and c.y == pytest.approx(120)
    assert expected == []


def test_the_crossing_frame_is_the_first_frame_past_the_line() -> None:
    counter = LineCounter([MID], hysteresis_px=3)
    crossings = count(path(straight((50, 100), (50, 140), 21)), counter)  # 2 px a frame: 122 in frame 11
    assert [(c.direction, c.frame, c.judged_frame, c.x, c.y) for c in crossings] == [("down", 11, 12, 50, 120)]


def test_a_vertical_line_counts_left_and_right() -> None:
    line = Line.parse("V=160,0,160,240")
    counter = LineCounter([line])
    right, left = path(straight((100, 50), (220, 50), 30)), path(straight((220, 180), (100, 180), 30))
    frames = [a + b for a, b in zip(right, left)]
    assert sorted(summary(count(frames, counter))) == [("V", "left", 2), ("V", "right", 1)]
    assert counter.counts == {("V", "left"): 1, ("V", "right"): 1}


def test_jitter_on_the_line_never_counts_twice() -> None:
    wobble = [(50, 120 + (2 if i % 2 else -2)) for i in range(20)]
    approach, leave = straight((50, 60), (50, 118), 15), straight((50, 122), (50, 180), 15)
    # Wider band than the jitter: a vehicle standing on the line counts nothing, one passing counts once.
    assert count(path(wobble), LineCounter([MID], hysteresis_px=3)) == []
    assert summary(count(path(approach + wobble + leave), LineCounter([MID], hysteresis_px=3))) == [("MID", "down", 1)]
    # Narrower band than the jitter: once at most, however long it wobbles.
    assert len(count(path(approach + wobble * 3 + leave), LineCounter([MID], hysteresis_px=1))) == 1
    assert len(count(path(wobble * 3), LineCounter([MID], hysteresis_px=1))) <= 1


def test_a_flicker_back_never_counts_as_a_reverse_crossing() -> None:
    down, up = straight((50, 100), (50, 140), 10), straight((50, 140), (50, 100), 10)
    there_and_back = down + up + down + up
    counter = LineCounter([MID])
    assert summary(count(path(there_and_back), counter)) == [("MID", "down", 1)]
    assert counter.counts == {("MID", "down"): 1, ("MID", "up"): 0}


def test_a_track_passing_beside_the_segment_does_not_count() -> None:
    short = Line.parse("SHORT=0,120,100,120")
    assert count(path(straight((110, 60), (110, 180), 30)), LineCounter([short])) == []   # beside the end
    assert count(path(straight((90, 100), (130, 140), 20)), LineCounter([short])) == []   # meets the line at x=110
    assert len(count(path(straight((99, 60), (99, 180), 30)), LineCounter([short]))) == 1  # just inside
    # Passing beside the end sets the side without using the line up: coming back across the segment counts.
    counter = LineCounter([short])
    back = (straight((110, 100), (110, 140), 10) + straight((110, 140), (50, 140), 10)
            + straight((50, 140), (50, 100), 10))
    assert summary(count(path(back), counter)) == [("SHORT", "up", 1)]


def test_a_line_with_a_direction_counts_only_that_direction() -> None:
    up_only = Line.parse("UP=0,120,320,120:up")
    counter = LineCounter([up_only, MID])
    frames = [a + b for a, b in zip(path(straight((50, 60), (50, 180), 40)), path(straight((200, 180), (200, 60), 40)))]
    assert sorted(summary(count(frames, counter))) == [("MID", "down", 1), ("MID", "up", 2), ("UP", "up", 2)]
    assert counter.counts == {("UP", "up"): 1, ("MID", "down"): 1, ("MID", "up"): 1}
    # A crossing the line does not count still uses it up: the vehicle turning back is not an "up".
    counter = LineCounter([up_only])
    assert count(path(straight((50, 100), (50, 140), 10) + straight((50, 140), (50, 100), 10)), counter) == []


def clipped(boxes: Sequence[Box], size: Tuple[float, float] = (320, 240)) -> List[List[Box]]:
    """What a finder with a minimum side of 8 px sees of ``boxes`` in a frame of ``size`` (width, height): each
    box cut by the frame's edges, none where less than 8 px of it is inside."""
    width, height = size
    out = []
    for b in boxes:
        c = Box(x1=max(b.x1, 0), y1=max(b.y1, 0), x2=min(b.x2, width), y2=min(b.y2, height))
        out.append([c] if min(c.width, c.height) >= 8 else [])
    return out


def test_a_line_near_the_frame_edge_counts_vehicles_entering_and_leaving_there() -> None:
    edge = Line.parse("EDGE=0,5,320,5")
    entering = clipped([box_at(100, -20 + 3 * f, 24, 40) for f in range(40)])
    leaving = clipped([box_at(100, 100 - 3 * f, 24, 40) for f in range(60)])
    # The first box a finder gives has its centre at 4: inside the band, and past the line one frame later.
    assert entering[2] == [] and entering[3][0].anchor() == (100, 4.5)
    counter = LineCounter([edge], frame_size=(320, 240))
    crossings = count(entering, counter, TrackerConfig())
    assert [(c.direction, c.frame, c.judged_frame) for c in crossings] == [("down", 4, 6)]
    # Leaving, its last box has its centre at 4.5 (frame 37); the counter learns it left when the track ends.
    crossings = count(leaving, counter, TrackerConfig(max_lost=15))
    assert [(c.direction, c.frame, c.judged_frame) for c in crossings] == [("up", 37, 37 + 16)]
    # Without the frame's size the edges are unknown: the sliver beyond the line is never seen, nothing counts.
    assert count(entering, LineCounter([edge]), TrackerConfig()) == []
    # A vehicle born at the edge but driving towards it did not come in there; one merely touching it is not leaving.
    standing = [[box_at(100, 10, 24, 20)]] * 30
    assert count(standing, LineCounter([edge], frame_size=(320, 240))) == []
    assert count(path(straight((100, 200), (100, 60), 30)), LineCounter([MID], frame_size=(320, 240))) == \
        count(path(straight((100, 200), (100, 60), 30)), LineCounter([MID]))


def test_a_vehicle_coming_in_diagonally_through_an_edge_counts_on_a_line_drawn_to_that_edge() -> None:
    # The real dev clip's left-edge lane: vehicles drive up and right into the picture, and the first box a finder
    # gives has its (visible) centre already on or past a line that starts at the left edge.
    line = Line.parse("UP=0,150,235,150:up")
    entering = clipped([box_at(-30 + 6 * f, 179 - 10 * f, 40, 30) for f in range(20)])
    first = next(f for f, boxes in enumerate(entering) if boxes)
    assert abs(entering[first][0].anchor()[1] - 150) <= 3, "first seen inside the band"
    crossings = count(entering, LineCounter([line], frame_size=(320, 240)), TrackerConfig())
    assert [(c.direction, c.frame) for c in crossings] == [("up", first)]
    # Its path followed back to the edge: level with its first anchor, it would have started inside the band.
    assert count(entering, LineCounter([line]), TrackerConfig()) == []
    # Leaving the same way, down and left, its last box's centre still inside the band: it counts once, down,
    # when the track ends; judged level with its last anchor, it would not.
    down = Line.parse("DOWN=0,150,235,150")
    leaving = clipped([box_at(30 - 6 * f, 77 + 10 * f, 40, 30) for f in range(12)])
    last = max(f for f, boxes in enumerate(leaving) if boxes)
    assert abs(leaving[last][0].anchor()[1] - 150) <= 3, "last seen inside the band"
    crossings = count(leaving, LineCounter([down], frame_size=(320, 240)), TrackerConfig(max_lost=2))
    assert [c.direction for c in crossings] == ["down"]
    assert count(leaving, LineCounter([down]), TrackerConfig(max_lost=2)) == []
    # A vehicle creeping along the edge is followed back at most its own height: it never reaches a far line.
    creeping = clipped([box_at(-10 + 1.2 * f, 100 - 4 * f, 40, 30) for f in range(20)])
    assert count(creeping, LineCounter([Line.parse("FAR=0,130,235,130")], frame_size=(320, 240)),
                 TrackerConfig()) == []


def test_the_bottom_anchor_judges_where_the_vehicle_meets_the_road() -> None:
    # A 40 px tall vehicle that stops with its centre at 110 and its bottom at 130, past the line at 120.
    stops = path(straight((50, 40), (50, 110), 15) + [(50, 110)] * 10, h=40)
    assert summary(count(stops, LineCounter([MID], anchor="bottom"))) == [("MID", "down", 1)]
    assert count(stops, LineCounter([MID], anchor="centre")) == []
    # Passing through, the bottom crosses 20 px (4 frames at 5 px a frame) before the centre.
    through = path(straight((50, 40), (50, 190), 31), h=40)
    centre, = count(through, LineCounter([MID], anchor="centre"))
    bottom, = count(through, LineCounter([MID], anchor="bottom"))
    assert centre.frame - bottom.frame == 4 and bottom.y == pytest.approx(120)


def test_coasting_tracks_count_only_when_seen_again_past_the_line() -> None:
    # Hidden for the 5 frames in which it crosses; found again past the line: counted once, when found.
    points = straight((50, 60), (50, 180), 31)  # 4 px a frame; the line is reached in frame 15
    hidden = [[] if 12 <= f < 17 else boxes for f, boxes in enumerate(path(points))]
    crossing, = count(hidden, LineCounter([MID]), TrackerConfig(min_hits=1, max_lost=15))
    assert (crossing.direction, crossing.frame, crossing.x) == ("down", 17, pytest.approx(50))
    # Lost just short of the line and never found: its prediction would cross, but predictions never count.
    lost = [boxes if f < 12 else [] for f, boxes in enumerate(path(points))]
    assert count(lost, LineCounter([MID]), TrackerConfig(min_hits=1, max_lost=15)) == []


def test_a_vehicle_crossing_while_tentative_is_counted_at_confirmation() -> None:
    # It crosses in frame 2; confirmed in frame 4 (min_hits 5): the counter replays its history.
    counter = LineCounter([MID])
    crossing, = count(path(straight((50, 111), (50, 151), 9)), counter, TrackerConfig(min_hits=5))
    assert (crossing.frame, crossing.judged_frame) == (2, 4)


def test_unconfirmed_tracks_are_never_counted() -> None:
    counter, tracker = LineCounter([MID]), Tracker(TrackerConfig(min_hits=5))
    tracker.update([box_at(50, 100, 40, 60)], 0)
    tracker.update([box_at(50, 130, 40, 60)], 1)  # matched: a tentative track across the line
    tentative = tracker.tracks
    assert len(tentative) == 1 and tentative[0].hits == 2 and not tentative[0].confirmed
    assert counter.update(tentative, 1) == [] and counter.end(tentative, 2) == []
    assert counter.counts == {("MID", "down"): 0, ("MID", "up"): 0}


def test_bad_counters_say_what_to_give() -> None:
    with pytest.raises(UsageError, match="own name"):
        LineCounter([MID, MID])
    with pytest.raises(UsageError, match="centre, bottom"):
        LineCounter([MID], anchor="top")
    with pytest.raises(UsageError, match="0 or more"):
        LineCounter([MID], hysteresis_px=-1)
    assert LineCounter([]).counts == {} and count(path([(1, 1)] * 3), LineCounter([])) == []


@pytest.mark.parametrize("seed", range(4))
def test_random_trajectories_count_exactly_the_true_crossings(seed: int) -> None:
    """Straight runs with 1 px jitter across random lines: counted iff the run crosses the segment, in its direction.

    Runs that start or end inside the band, or meet the line within 3 px of the segment's ends, are ambiguous
    under jitter and left out.
    """
    rng = np.random.RandomState(seed)
    hysteresis, checked, crossed = 3.0, 0, 0
    while checked < 60:
        x1, y1, x2, y2 = rng.uniform(20, 300, 4)
        if np.hypot(x2 - x1, y2 - y1) < 40:
            continue
        line = Line(name="L", x1=x1, y1=y1, x2=x2, y2=y2, direction=str(rng.choice(["", "", "up", "down"]))
                    if abs(x2 - x1) >= abs(y2 - y1) else "")
        start, end = tuple(rng.uniform(0, 320, 2)), tuple(rng.uniform(0, 320, 2))
        d0, d1 = line.side(*start), line.side(*end)
        if min(abs(d0), abs(d1)) <= hysteresis + 2:
            continue
        truth = []
        if d0 * d1 < 0:
            t = d0 / (d0 - d1)
            meet = (start[0] + t * (end[0] - start[0]), start[1] + t * (end[1] - start[1]))
            length = np.hypot(x2 - x1, y2 - y1)
            along = line.along(*meet) * length
            if min(abs(along), abs(along - length)) < 3:
                continue
            direction = line.direction_of(start, end)
            if 0 < along < length and (not line.direction or line.direction == direction):
                truth = [("L", direction)]
        frames = max(2, int(np.hypot(end[0] - start[0], end[1] - start[1]) / rng.uniform(1, 8)))
        points = [(x + rng.uniform(-1, 1), y + rng.uniform(-1, 1)) for x, y in straight(start, end, frames)]
        got = [(c.line, c.direction) for c in count(path(points), LineCounter([line], hysteresis_px=hysteresis))]
        assert got == truth, (line.spec(), start, end, frames)
        checked += 1
        crossed += bool(truth)
    assert 5 <= crossed <= 55, "both kinds of run were tried"
