"""The synthetic clip's crossing truth: exact, from where every vehicle is drawn.

The truth is checked against the pixels (a vehicle's box is where its pixels are), against a per-frame
simulation of every anchor, and against what a counting line must see (every vehicle passing a line
across the road, once, in its lane's direction; only the lanes a short segment covers; nothing after
the clip's end).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import run_main
from toolchain.errors import UsageError
from toolchain.evaluate.counts import read_crossings_csv, read_truth_csv
from toolchain.runtime.geometry import Line
from toolchain.runtime.scene import SCHEDULE_S, SceneRenderer
from toolchain.synth.video import (
    TRUTH_HEADER,
    TruthCrossing,
    VideoConfig,
    crossing_direction,
    crossing_truth,
    write_truth_csv,
)

SMALL = VideoConfig(width=160, height=96, fps=15, seconds=20, seed=3)


def _renderer(config: VideoConfig) -> SceneRenderer:
    return SceneRenderer(config.width, config.height, config.fps, seed=config.seed)


def _by_id(renderer: SceneRenderer) -> dict[int, object]:
    return {v.id: v for lane in renderer.vehicles for v in lane}


def _brute_force(config: VideoConfig, lines: list[Line], anchor: str) -> list[TruthCrossing]:
    """Every frame, every drawn vehicle: a crossing where a vehicle's anchor changes side between two frames
    it is drawn in (frames on the line itself skipped) at a point on the segment."""
    renderer = _renderer(config)
    last: dict[tuple[str, int], tuple[float, tuple[float, float]]] = {}
    found = []
    for i in range(config.frames):
        period = int((i / config.fps) // SCHEDULE_S)
        now = {period * renderer.vehicle_count + v.id: (v, box.anchor(anchor)) for v, box in renderer.boxes(i)}
        last = {key: value for key, value in last.items() if key[1] in now}  # gone from the frame: forgotten
        for track, (v, point) in now.items():
            for line in lines:
                side = line.side(*point)
                if side == 0:
                    continue
                before = last.get((line.name, track))
                if before is not None and (side > 0) != (before[0] > 0):
                    t = before[0] / (before[0] - side)
                    meet = (before[1][0] + (point[0] - before[1][0]) * t, before[1][1] + (point[1] - before[1][1]) * t)
                    direction = crossing_direction(line, side)
                    if 0 <= line.along(*meet) <= 1 and line.direction in ("", direction):
                        found.append(TruthCrossing(line=line.name, frame=i, cls="truck" if v.truck else "car",
                                                   direction=direction, track=track))
                last[(line.name, track)] = (side, point)
    return sorted(found, key=lambda c: (c.frame, c.line, c.track))


def test_a_vehicles_box_is_where_its_pixels_are() -> None:
    renderer = _renderer(SMALL)
    renderer.noise = [np.zeros_like(n) for n in renderer.noise]  # pixels = background + vehicles exactly
    background = np.clip(renderer.background, 0, 255).astype(np.uint8)
    checked = 0
    for i in range(0, SMALL.frames, 11):
        changed = np.any(renderer.frame(i) != background, axis=2)
        for v, box in renderer.boxes(i):
            row = int((box.y1 + box.y2) // 2)  # mid row: no shadow, no other lane reaches it
            columns = set(np.flatnonzero(changed[row]).tolist())
            same_row = [b for _, b in renderer.boxes(i) if b.y1 <= row < b.y2]
            expected = {x for b in same_row for x in range(int(b.x1), int(b.x2))}
            assert columns == expected, (i, v)
            checked += 1
    assert checked > 20


def test_boxes_are_clipped_to_the_frame_and_trucks_include_the_cab() -> None:
    renderer = _renderer(SMALL)
    for i in range(0, SMALL.frames, 5):
        for v, box in renderer.boxes(i):
            assert 0 <= box.x1 < box.x2 <= SMALL.width and 0 <= box.y1 < box.y2 <= SMALL.height
            span = renderer._span(v, renderer.time_of(i))
            assert span is not None
            body = (max(0, span[0]), min(SMALL.width, span[1]))
            assert box.x1 <= body[0] and body[1] <= box.x2
            assert box.x2 - box.x1 <= body[1] - body[0] + (2 if v.truck else 0)  # the cab overhangs by 2


@pytest.mark.parametrize(("anchor", "specs"), [
    ("centre", ["mid=80,0,80,96", "left=3,0,3,96", "short=120,0,120,50", "slant=40,20,70,90"]),
    ("bottom", ["slant=40,20,70,90", "flat=0,50,160,62", "one=100,0,100,96:left"]),
])
def test_truth_equals_a_per_frame_simulation_of_every_anchor(anchor: str, specs: list[str]) -> None:
    lines = [Line.parse(s) for s in specs]
    truth = crossing_truth(SMALL, lines, anchor)
    assert truth == _brute_force(SMALL, lines, anchor)
    assert {c.line for c in truth} >= {"mid", "slant"} & {s.split("=")[0] for s in specs}


def test_truth_over_the_schedules_wrap_equals_the_simulation() -> None:
    config = VideoConfig(width=96, height=64, fps=2, seconds=SCHEDULE_S + 40, seed=1)
    lines = [Line.parse("mid=48,0,48,64")]
    truth = crossing_truth(config, lines)
    assert truth == _brute_force(config, lines, "centre")
    after = [c for c in truth if c.frame >= SCHEDULE_S * config.fps]
    assert after and all(c.track >= _renderer(config).vehicle_count for c in after)  # new appearances, new ids


def test_a_line_across_the_road_counts_every_passing_vehicle_once_in_its_lanes_direction() -> None:
    renderer = _renderer(SMALL)
    x = SMALL.width / 2
    truth = crossing_truth(SMALL, [Line.parse(f"across={x:g},0,{x:g},{SMALL.height}")])
    # Independently: a vehicle passes x when its visible centre is left of x in one frame and right of it later
    # (rightward lanes), or the other way round (leftward lanes).
    sides: dict[int, list[tuple[int, float]]] = {}
    for i in range(SMALL.frames):
        for v, box in renderer.boxes(i):
            sides.setdefault(v.id, []).append((i, box.anchor()[0] - x))
    vehicles = _by_id(renderer)
    expected = {}
    for vid, trace in sides.items():
        v = vehicles[vid]
        forward = v.speed > 0
        before = [i for i, d in trace if (d < 0 if forward else d > 0)]
        after = [i for i, d in trace if (d > 0 if forward else d < 0)]
        if before and after:
            expected[vid] = (after[0], "right" if forward else "left", v.cls)
    assert len(truth) == len(expected) > 10
    assert {c.track: (c.frame, c.direction, c.cls) for c in truth} == expected
    lanes_right = {v.lane for v in vehicles.values() if v.speed > 0}
    assert lanes_right == set(range(renderer.lanes // 2, renderer.lanes))  # the near half drives right
    assert {c.direction for c in truth} == {"left", "right"}
    assert {c.cls for c in truth} == {"car", "truck"}


def test_a_segment_over_some_lanes_counts_only_those_lanes() -> None:
    renderer = _renderer(SMALL)
    x = 100
    edge = int(renderer.lane_edges[1])  # the segment covers the top lane only
    full = crossing_truth(SMALL, [Line.parse(f"L={x},0,{x},{SMALL.height}")])
    part = crossing_truth(SMALL, [Line.parse(f"L={x},0,{x},{edge}")])
    vehicles = _by_id(renderer)
    assert part and len(part) < len(full)
    assert part == [c for c in full if vehicles[c.track].lane == 0]
    assert {c.direction for c in part} == {"left"}


def test_a_line_with_a_direction_keeps_only_that_direction() -> None:
    both = crossing_truth(SMALL, [Line.parse("L=80,0,80,96")])
    right = crossing_truth(SMALL, [Line.parse("L=80,0,80,96:right")])
    assert right == [c for c in both if c.direction == "right"] and 0 < len(right) < len(both)


def test_vehicles_not_across_at_the_clips_end_are_not_counted() -> None:
    lines = [Line.parse("L=80,0,80,96")]
    longer = crossing_truth(SMALL, lines)
    cut = VideoConfig(width=SMALL.width, height=SMALL.height, fps=SMALL.fps, seconds=8, seed=SMALL.seed)
    shorter = crossing_truth(cut, lines)
    assert shorter == [c for c in longer if c.frame < cut.frames]
    # Meaningful: some vehicle on screen in the short clip's last frame crosses only after it.
    renderer = _renderer(cut)
    on_screen = {v.id for v, _ in renderer.boxes(cut.frames - 1)}
    assert any(c.track in on_screen and c.frame >= cut.frames for c in longer)


def test_a_vehicle_cut_by_the_frame_edge_is_judged_on_its_visible_part() -> None:
    renderer = _renderer(SMALL)
    truth = crossing_truth(SMALL, [Line.parse("edge=4,0,4,96:right")])
    assert truth
    earlier = 0
    for c in truth:
        v = _by_id(renderer)[c.track]
        visible = dict((u.id, b) for u, b in renderer.boxes(c.frame))[c.track]
        assert visible.anchor()[0] > 4 and visible.x1 == 0  # counted while still entering
        # The whole body's centre (part of it still outside the frame) passes the line no earlier.
        body_frame = next(i for i in range(c.frame - 1, SMALL.frames)
                          if sum(renderer._span(v, renderer.time_of(i))) / 2 > 4)
        assert body_frame >= c.frame
        earlier += body_frame > c.frame
    assert earlier > 0


def test_truth_csv_round_trips_through_the_count_readers(tmp_path: Path) -> None:
    truth = crossing_truth(SMALL, [Line.parse("A=80,0,80,96"), Line.parse("B=30,0,30,40")])
    path = write_truth_csv(tmp_path / "truth.csv", truth)
    with path.open(newline="") as handle:
        assert tuple(next(csv.reader(handle))) == TRUTH_HEADER
    rows = read_truth_csv(path)
    assert [(r.line, r.frame, r.cls, r.direction, r.track, r.certain) for r in rows] == \
        [(c.line, c.frame, c.cls, c.direction, c.track, True) for c in truth]
    assert [(c.line, c.frame, c.cls) for c in read_crossings_csv(path)] == [(c.line, c.frame, c.cls) for c in truth]
    assert [p.name for p in tmp_path.iterdir()] == ["truth.csv"]  # no temporary file left


def test_bad_anchor_and_duplicate_line_names_are_refused() -> None:
    with pytest.raises(UsageError, match="anchor"):
        crossing_truth(SMALL, [Line.parse("A=1,0,1,9")], "top")
    with pytest.raises(UsageError, match="differ"):
        crossing_truth(SMALL, [Line.parse("A=1,0,1,9"), Line.parse("A=5,0,5,9")])


def test_cli_writes_the_clip_and_its_truth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("av")
    out, truth = tmp_path / "road.mp4", tmp_path / "truth.csv"
    result = run_main(["--json", "synth", "video", out, "--seconds", "2", "--fps", "15", "--size", "160x96",
                       "--seed", "3", "--line", "A=80,0,80,96", "--line", "B=30,0,30,40:left", "--truth", truth,
                       "--anchor", "bottom"], capsys)
    assert result.code == 0, result.err
    report = result.json()
    assert out.is_file() and report["frames"] == 30 and report["truth"] == str(truth)
    assert report["lines"] == ["A=80,0,80,96", "B=30,0,30,40:left"] and report["anchor"] == "bottom"
    config = VideoConfig(width=160, height=96, fps=15, seconds=2, seed=3)
    expected = crossing_truth(config, [Line.parse("A=80,0,80,96"), Line.parse("B=30,0,30,40:left")], "bottom")
    rows = read_truth_csv(truth)
    assert report["crossings"] == len(rows) == len(expected) > 0
    assert [(r.line, r.frame, r.direction, r.track) for r in rows] == \
        [(c.line, c.frame, c.direction, c.track) for c in expected]
    assert sum(n for d in report["truth_counts"].values() for c in d.values() for n in c.values()) == len(rows)


def test_cli_refuses_lines_without_truth_and_bad_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "road.mp4"
    assert run_main(["synth", "video", out, "--line", "A=1,0,1,9"], capsys).code == 2
    assert run_main(["synth", "video", out, "--truth", tmp_path / "t.csv"], capsys).code == 2
    result = run_main(["synth", "video", out, "--line", "A=1,0,1", "--truth", tmp_path / "t.csv"], capsys)
    assert result.code == 2 and "x1,y1,x2,y2" in result.err and not out.exists()
