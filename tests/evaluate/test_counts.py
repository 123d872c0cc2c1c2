"""Scoring counted crossings against a hand count: matching, count errors, classes, intervals, certainty, CSVs."""

from __future__ import annotations

import itertools
import json
import random
import sys
from pathlib import Path

import pytest

from toolchain.errors import BadInputError, InputNotFoundError, UsageError
from toolchain.evaluate.counts import (
    CROSSINGS_HEADER,
    PLOT_SKIPPED,
    CountedCrossing,
    CountScoreConfig,
    TruthRow,
    match_frames,
    parse_class_map,
    parse_interval,
    plot_cumulative_counts,
    read_crossings_csv,
    read_truth_csv,
    score_counts,
    write_crossings_csv,
)


def _truth(*rows: tuple, line: str = "L") -> list[TruthRow]:
    """``(frame, class[, certain[, direction]])`` tuples."""
    return [TruthRow(line=line, frame=r[0], cls=r[1], certain=r[2] if len(r) > 2 else True,
                     direction=r[3] if len(r) > 3 else "") for r in rows]


def _counted(*rows: tuple, line: str = "L") -> list[CountedCrossing]:
    """``(frame, class[, direction])`` tuples."""
    return [CountedCrossing(line=line, frame=r[0], cls=r[1], direction=r[2] if len(r) > 2 else "up", score=0.9, track=k)
            for k, r in enumerate(rows)]


def test_a_perfect_count_scores_one_and_no_error() -> None:
    truth = _truth((10, "car"), (40, "truck"), (41, "car"), (90, "car"))
    counted = _counted((10, "car"), (40, "truck"), (41, "car"), (90, "car"))
    score = score_counts(truth, counted)
    for figures in (score.full, score.certain):
        assert (figures.precision, figures.recall, figures.f1, figures.accuracy) == (1.0, 1.0, 1.0, 1.0)
        assert figures.total.error == 0 and all(c.error == 0 for c in figures.per_class.values())
        assert figures.frame_offset_mean == 0 and figures.frame_offset_max == 0
    assert score.full.pairs == ((0, 0), (1, 1), (2, 2), (3, 3))
    json.dumps(score.to_json())  # plain JSON


def test_off_by_up_to_the_tolerance_matches_and_beyond_does_not() -> None:
    truth = _truth((100, "car"), (200, "car"), (300, "car"))
    counted = _counted((107, "car"), (192, "car"), (308, "car"))
    score = score_counts(truth, counted, CountScoreConfig(tolerance_frames=7))
    assert score.full.matched == 1 and score.full.pairs == ((0, 0),)
    assert score_counts(truth, counted, CountScoreConfig(tolerance_frames=8)).full.matched == 3
    offsets = score_counts(truth, counted, CountScoreConfig(tolerance_frames=8)).full
    assert offsets.frame_offset_mean == pytest.approx((7 - 8 + 8) / 3) and offsets.frame_offset_max == 8


def test_extra_and_missing_crossings() -> None:
    truth = _truth((10, "car"), (50, "car"), (90, "truck"), (130, "car"))
    counted = _counted((11, "car"), (12, "car"), (91, "truck"), (200, "car"))  # a double count, two misses, a ghost
    full = score_counts(truth, counted).full
    assert (full.truth, full.counted, full.matched) == (4, 4, 2)
    assert full.precision == 0.5 and full.recall == 0.5 and full.f1 == 0.5
    assert full.total.error == 0  # errors that cancel: why the per-class and interval figures exist
    assert full.to_json()["false_positives"] == 2 and full.to_json()["false_negatives"] == 2
    nothing = score_counts(truth, []).full
    assert nothing.precision is None and nothing.recall == 0 and nothing.f1 is None
    assert nothing.total.relative_error == -1.0


def test_matching_is_optimal_where_the_closest_first_greedy_is_not() -> None:
    # Greedy takes 4-3 (distance 1) and strands 0 and 8; the optimum matches both.
    assert match_frames([0, 4], [3, 8], 4) == [(0, 0), (1, 1)]


def _brute_force(truth: list[int], counted: list[int], tolerance: int, priority: list[int]) -> tuple[int, int, int]:
    best = (0, 0, 0)
    for k in range(1, min(len(truth), len(counted)) + 1):
        for ts in itertools.combinations(range(len(truth)), k):
            for cs in itertools.permutations(range(len(counted)), k):
                gaps = [abs(truth[t] - counted[c]) for t, c in zip(ts, cs)]
                if max(gaps) <= tolerance:
                    best = max(best, (sum(priority[t] for t in ts), k, -sum(gaps)))
    return best


def test_matching_equals_an_exhaustive_search() -> None:
    rng = random.Random(7)
    for _ in range(300):
        truth = [rng.randrange(40) for _ in range(rng.randrange(6))]
        counted = [rng.randrange(40) for _ in range(rng.randrange(6))]
        priority = [rng.randrange(2) for _ in truth]
        tolerance = rng.randrange(8)
        pairs = match_frames(truth, counted, tolerance, priority)
        assert len({t for t, _ in pairs}) == len({c for _, c in pairs}) == len(pairs)
        assert all(abs(truth[t] - counted[c]) <= tolerance for t, c in pairs)
        found = (sum(priority[t] for t, _ in pairs), len(pairs), -sum(abs(truth[t] - counted[c]) for t, c in pairs))
        assert found == _brute_force(truth, counted, tolerance, priority), (truth, counted, tolerance, priority)


def test_crossings_match_only_on_their_line_and_direction() -> None:
    truth = _truth((10, "car", True, "up"), (30, "car", True, "down"))
    counted = _counted((10, "car", "down"), (30, "car", "down")) + _counted((10, "car", "up"), line="M")
    score = score_counts(truth, counted)
    assert score.full.matched == 1 and score.full.pairs == ((1, 1),)
    assert score.unscored == {"truth": {}, "counted": {"M": 1}} and any("M (1)" in n for n in score.notes)
    groups = {(g.line, g.direction): (g.truth, g.counted, g.matched) for g in score.full.groups}
    assert groups == {("L", "down"): (1, 2, 1), ("L", "up"): (1, 0, 0)}
    # Without directions in the truth, any counted direction matches.
    assert score_counts(_truth((10, "car"), (30, "car")), counted[:2]).full.matched == 2
    with pytest.raises(BadInputError, match="direction on some rows"):
        score_counts(_truth((10, "car", True, "up"), (30, "car")), counted)
    # Lines to score given: a line nobody counted in the truth is scored (all false positives).
    both = score_counts(truth, counted, CountScoreConfig(lines=("L", "M")))
    assert both.full.counted == 3 and both.full.matched == 1 and both.unscored["counted"] == {}


def test_class_map_confusion_and_unknown_classes() -> None:
    truth = _truth((10, "van"), (30, "articulated"), (50, "car"), (70, "motorcycle"), (90, "pickup"))
    counted = _counted((10, "car"), (30, "truck"), (50, "truck"), (70, "car"), (90, "car"))
    config = CountScoreConfig(class_map=parse_class_map(["van=car,pickup=car", "articulated=truck"]),
                              classes=("car", "truck"))
    score = score_counts(truth, counted, config)
    full = score.full
    assert full.classes == ("car", "truck", "motorcycle")
    assert full.confusion == ((2, 1, 0), (0, 1, 0), (1, 0, 0))  # rows truth, columns counted
    assert full.accuracy == pytest.approx(3 / 5) and full.matched == 5
    assert {k: (v.truth, v.counted, v.error) for k, v in full.per_class.items()} == \
        {"car": (3, 3, 0), "truck": (1, 2, 1), "motorcycle": (1, 0, -1)}
    assert full.per_class["truck"].relative_error == 1.0
    assert score.unknown_classes == {"motorcycle": 1} and any("motorcycle (1)" in n for n in score.notes)
    assert score.to_json()["config"]["class_map"] == {"van": "car", "pickup": "car", "articulated": "truck"}


def test_counts_per_interval() -> None:
    # 10 fps, 5 s intervals: frames [0, 50), [50, 100), ...
    truth = _truth((5, "car"), (49, "truck"), (50, "car"), (120, "car"))
    counted = _counted((6, "car"), (52, "car"), (53, "car"), (121, "truck"))
    config = CountScoreConfig(fps=10, interval_s=5, frames=200)
    intervals = score_counts(truth, counted, config).full.intervals
    assert [(i.start_frame, i.end_frame, i.start_s, i.end_s) for i in intervals] == \
        [(0, 50, 0, 5), (50, 100, 5, 10), (100, 150, 10, 15), (150, 200, 15, 20)]
    per = [{k: (v.truth, v.counted) for k, v in i.per_class.items()} for i in intervals]
    assert per == [{"car": (1, 1), "truck": (1, 0)}, {"car": (1, 2), "truck": (0, 0)},
                   {"car": (1, 0), "truck": (0, 1)}, {"car": (0, 0), "truck": (0, 0)}]
    assert [i.total.error for i in intervals] == [-1, 1, 0, 0]  # totals right, intervals not
    assert score_counts(truth, counted, CountScoreConfig(fps=10)).full.intervals == ()
    with pytest.raises(UsageError, match="frame rate"):
        CountScoreConfig(interval_s=10)


def test_certain_only_figures_leave_uncertain_rows_out_without_penalty() -> None:
    truth = _truth((10, "car", True), (14, "car", False),  # a counted crossing at 14 is nearer the uncertain row
                   (60, "truck", False),  # counted: neither a hit nor a false alarm in the certain-only figures
                   (100, "car", False),  # missed: a miss only in the full figures
                   (150, "car", True))
    counted = _counted((14, "car"), (61, "truck"), (151, "car"), (300, "car"))  # 300: a false alarm everywhere
    score = score_counts(truth, counted, CountScoreConfig(tolerance_frames=5))
    full, certain = score.full, score.certain
    assert (full.truth, full.counted, full.matched, full.ignored) == (5, 4, 3, 0)
    assert (full.precision, full.recall) == (0.75, 0.6)
    assert (1, 0) in full.pairs  # the closest row: the uncertain one
    # Certain-only: the crossing at 14 serves the certain row at 10; the one at 61 is ignored.
    assert (certain.truth, certain.counted, certain.matched, certain.ignored) == (2, 3, 2, 1)
    assert certain.pairs == ((0, 0), (4, 2))
    assert (certain.precision, certain.recall) == (pytest.approx(2 / 3), 1.0)
    assert {k: (v.truth, v.counted) for k, v in certain.per_class.items()} == {"car": (2, 3), "truck": (0, 0)}
    report = score.to_json()
    assert report["certain_only"]["ignored"] == 1 and report["all"]["recall"] == 0.6


def test_crossings_csv_round_trips_and_reads_as_truth(tmp_path: Path) -> None:
    crossings = [CountedCrossing(line="UP", frame=7, cls="car", direction="up", score=0.98765, track=3),
                 CountedCrossing(line="UP", frame=9, cls="truck", direction="up", score=0.5, track=None, time_s=1.25)]
    path = write_crossings_csv(tmp_path / "out" / "crossings.csv", crossings, fps=15)
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(CROSSINGS_HEADER) and lines[1] == "UP,7,car,up,0.9877,3,0.467"
    assert lines[2] == "UP,9,truck,up,0.5000,,1.250"
    back = read_crossings_csv(path)
    assert [(c.line, c.frame, c.cls, c.direction, c.track) for c in back] == \
        [(c.line, c.frame, c.cls, c.direction, c.track) for c in crossings]
    assert back[0].score == pytest.approx(0.9877) and back[1].time_s == 1.25
    truth = read_truth_csv(path)
    assert [(r.line, r.frame, r.cls, r.direction, r.certain) for r in truth] == [("UP", 7, "car", "up", True),
                                                                                ("UP", 9, "truck", "up", True)]
    assert score_counts(truth, back).full.f1 == 1.0  # a unit's output compared with another's
    assert [p.name for p in path.parent.iterdir()] == ["crossings.csv"]


def test_a_hand_count_csv_is_read_with_its_notes_and_certainty(tmp_path: Path) -> None:
    path = tmp_path / "counts.csv"
    path.write_text("\ufeffline,frame,class,certain,note\n"
                    'UP,4,car,no,"dark saloon; left-edge lane, cut by the frame edge"\n'
                    "\n"
                    "# a comment row\n"
                    "UP,7,van,yes,white van\n"
                    "UP,9,truck\n"
                    "UP,12,car,,\n", encoding="utf-8")
    rows = read_truth_csv(path)
    assert [(r.frame, r.cls, r.certain) for r in rows] == [(4, "car", False), (7, "van", True), (9, "truck", True),
                                                          (12, "car", True)]
    assert rows[0].note == "dark saloon; left-edge lane, cut by the frame edge" and rows[0].direction == ""


@pytest.mark.parametrize(("text", "message"), [
    ("line,frame\nUP,3\n", r"counts.csv:1: .*no class column"),
    ("", r"counts.csv:1: .*no line, frame, class"),
    ("line,frame,class\nUP,3,car\nUP,x4,car\n", r"counts.csv:3: frame 'x4' is not a frame number"),
    ("line,frame,class\nUP,-1,car\n", r"counts.csv:2: frame '-1'"),
    ("line,frame,class,certain\nUP,3,car,maybe\n", r"counts.csv:2: certain is 'maybe'; write yes or no"),
    ("line,frame,class,note\nUP,3,car,a,b\n", r"counts.csv:2: 5 cells where the header has 4"),
    ("line,frame,class\n,3,car\n", r"counts.csv:2: the line is empty"),
    ("line,frame,class\nUP,3,\n", r"counts.csv:2: the class is empty"),
    ("line,frame,class,direction\nUP,3,car,north\n", r"counts.csv:2: direction 'north'"),
    ("line,frame,class,track\nUP,3,car,t1\n", r"counts.csv:2: track 't1'"),
    ("line,frame,class,class\nUP,3,car,car\n", r"counts.csv:1: column class appears twice"),
])
def test_malformed_truth_csvs_say_where_and_what_to_fix(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "counts.csv"
    path.write_text(text)
    with pytest.raises(BadInputError, match=message):
        read_truth_csv(path)


def test_a_missing_file_and_a_bad_score_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="no such file"):
        read_truth_csv(tmp_path / "nope.csv")
    path = tmp_path / "c.csv"
    path.write_text("line,frame,class,score\nUP,3,car,high\n")
    with pytest.raises(BadInputError, match=r"c.csv:2: score 'high' is not a number"):
        read_crossings_csv(path)


def test_class_map_and_interval_parsing() -> None:
    assert parse_class_map("van=car, bus = truck,") == (("van", "car"), ("bus", "truck"))
    assert parse_class_map(["van=car", "van=car"]) == (("van", "car"),)
    for bad in ("van", "van=", "=car"):
        with pytest.raises(UsageError, match="fine=coarse"):
            parse_class_map(bad)
    with pytest.raises(UsageError, match="two classes"):
        parse_class_map("van=car,van=truck")
    assert [parse_interval(t) for t in ("10s", "10", "2m", "1h", "0.5s")] == [10, 10, 120, 3600, 0.5]
    for bad in ("0s", "ten", "-5s"):
        with pytest.raises(UsageError, match="positive duration"):
            parse_interval(bad)
    with pytest.raises(UsageError):
        CountScoreConfig(tolerance_frames=-1)


def test_cumulative_count_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")
    truth = _truth((10, "van"), (30, "truck"), (50, "car"))
    counted = _counted((11, "car"), (29, "truck"))
    config = CountScoreConfig(fps=15, class_map=(("van", "car"),))
    score = score_counts(truth, counted, config, plot=tmp_path / "plots" / "counts.png")
    assert score.plot == str(tmp_path / "plots" / "counts.png") and score.to_json()["plot"] == score.plot
    assert (tmp_path / "plots" / "counts.png").read_bytes()[:4] == b"\x89PNG"
    assert plot_cumulative_counts(truth, counted, tmp_path / "again.png", config).is_file()
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    skipped = score_counts(truth, counted, config, plot=tmp_path / "none.png")
    assert skipped.plot is None and PLOT_SKIPPED in skipped.notes and not (tmp_path / "none.png").exists()
    assert skipped.full == score.full
