"""The vehicle stages around the classifier: when tracks are classified, the class vote, crossings to events."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from tests.runtime.tiny import CountingSource, SleepyRunner
from toolchain.errors import UsageError
from toolchain.runtime.geometry import Box, Line
from toolchain.runtime.lines import Crossing, LineCounter
from toolchain.runtime.pipeline import NullSink, Pipeline, PipelineConfig
from toolchain.runtime.track import Tracker
from toolchain.runtime.vehicles import (
    UNKNOWN,
    CropPreprocessor,
    VehicleConfig,
    VehicleFrame,
    VehicleLedger,
    VehicleStream,
)

W, H = 320, 192


class _Scripted:
    """A finder that reports the boxes a test scripted for each frame."""

    def __init__(self, frames: Sequence[Sequence[Box]]) -> None:
        self.frames, self.at = list(frames), 0

    def find(self, frame: np.ndarray) -> list[Box]:
        boxes = self.frames[self.at] if self.at < len(self.frames) else []
        self.at += 1
        return list(boxes)


def _crop_shapes() -> CropPreprocessor:
    return CropPreprocessor(lambda crop: np.asarray(crop.shape, np.float32), margin=0.12)


def _stream(frames: Sequence[Sequence[Box]], config: VehicleConfig) -> VehicleStream:
    lines = config.lines_for("cam")
    return VehicleStream("cam", config, _crop_shapes(), finder=_Scripted(frames), tracker=Tracker(),
                         make_counter=lambda size: LineCounter(lines, anchor=config.anchor, frame_size=size))


def _run(stream: VehicleStream, n: int) -> list[VehicleFrame]:
    image = np.zeros((H, W, 3), np.uint8)
    return [stream.process(image, i)[0] for i in range(n)] + [stream.finish()]


def _car(x: float, y: float = 80, w: float = 40, h: float = 20) -> Box:
    return Box(x1=x, y1=y, x2=x + w, y2=y + h)


def test_a_vehicle_is_classified_a_bounded_number_of_times_when_whole_and_again_only_when_grown() -> None:
    # 40 frames of one car driving right, growing from 20 to 60 px wide as it comes closer
    frames = [[_car(5 + 6 * i, w=20 + i)] for i in range(40)]
    config = VehicleConfig(lines=(Line.parse("mid=160,0,160,192"),), max_classifications=3, regrow=1.5)
    out = _run(_stream(frames, config), 40)
    classified = [i for i, f in enumerate(out) if f.classify]
    assert 1 <= len(classified) <= 3
    assert classified[0] == 2  # confirmed at the third hit, whole and large enough at once
    crossings = [c for f in out for c in f.crossings]
    assert [(c.line, c.direction) for c in crossings] == [("mid", "right")]


def test_a_vehicle_cut_by_the_frame_edge_is_classified_at_its_crossing_if_never_before() -> None:
    # a lorry that fills the frame's height (never whole), crossing a horizontal line
    frames = [[Box(x1=100, y1=max(0.0, 150 - 8 * i), x2=160, y2=192)] for i in range(20)]
    config = VehicleConfig(lines=(Line.parse("h=0,120,320,120"),))
    out = _run(_stream(frames, config), 20)
    crossing_frames = [i for i, f in enumerate(out) if f.crossings]
    assert crossing_frames and all(f.classify == [] for f in out[: crossing_frames[0]])
    assert out[crossing_frames[0]].classify  # forced once at the crossing


def test_the_ledger_votes_and_sends_each_crossing_once_with_the_vote_at_that_time() -> None:
    events = []
    ledger = VehicleLedger(["cam"], on_event=events.append)
    crossing = Crossing(line="mid", direction="right", track_id=7, frame=12, judged_frame=12, x=160.0, y=90.0)
    first = VehicleFrame(classify=[7])
    ledger.take(0, first, [("truck", 0.9)], arrival=0.0)
    ledger.take(0, VehicleFrame(classify=[7]), [("car", 0.6)], arrival=0.0)
    frame = VehicleFrame(crossings=[crossing])
    ready = ledger.take(0, frame, [], arrival=0.0)
    assert [(e.cls, e.classifications, e.track, e.frame) for e in ready] == [("truck", 2, 7, 12)]
    assert ready[0].score == pytest.approx(0.45)  # the vote's share of the probability mass
    assert frame.events == ready and events == ready
    assert ledger.counts == {("cam", "mid", "right", "truck"): 1}


def test_a_crossing_before_any_classification_waits_for_the_first_and_an_unclassified_track_is_still_counted() -> None:
    ledger = VehicleLedger(["a", "b"])
    early = Crossing(line="L", direction="up", track_id=1, frame=5, judged_frame=5, x=1.0, y=1.0)
    never = Crossing(line="L", direction="down", track_id=2, frame=6, judged_frame=6, x=1.0, y=1.0)
    assert ledger.take(0, VehicleFrame(crossings=[early, never]), [], arrival=0.0) == []
    later = ledger.take(0, VehicleFrame(classify=[1]), [("car", 0.8)], arrival=0.0)
    assert [(e.track, e.cls) for e in later] == [(1, "car")]
    ended = ledger.take(0, VehicleFrame(ended=[2]), [], arrival=0.0)
    assert [(e.track, e.cls, e.score) for e in ended] == [(2, UNKNOWN, 0.0)]
    waiting = Crossing(line="L", direction="up", track_id=3, frame=9, judged_frame=9, x=1.0, y=1.0)
    ledger.take(1, VehicleFrame(crossings=[waiting]), [], arrival=0.0)
    assert [(stream, e.camera, e.track, e.cls) for stream, e in ledger.flush()] == [(1, "b", 3, UNKNOWN)]
    assert ledger.flush() == []  # nothing sent twice
    assert sum(ledger.counts.values()) == 3


def test_a_dropped_frames_crossings_and_ends_move_to_the_next_frame() -> None:
    older = VehicleFrame(crossings=["a"], ended=[1], classify=[4])
    newer = VehicleFrame(crossings=["b"], ended=[2], classify=[5])
    newer.absorb(older)
    assert newer.crossings == ["a", "b"] and newer.ended == [1, 2] and newer.classify == [5]


def test_crops_are_the_box_widened_by_the_margin_and_clipped_to_the_frame() -> None:
    crops = CropPreprocessor(lambda crop: crop, margin=0.1)
    # 120 x 60 after the margin: 120 x 64 about the same centre
    assert crops.crop_box(Box(x1=100, y1=50, x2=200, y2=100), W, H) == (90, 43, 210, 107)
    # 60 x 60 with the margin, at the corner: 64 x 64, moved inside the frame
    assert crops.crop_box(Box(x1=0, y1=0, x2=50, y2=50), W, H) == (0, 0, 64, 64)
    # sides are multiples of 8 whatever the box, so the resize's taps are shared across vehicles
    rng = np.random.default_rng(0)
    shapes = set()
    for _ in range(200):
        x, y = rng.uniform(0, W - 40), rng.uniform(0, H - 30)
        x0, y0, x1, y1 = crops.crop_box(Box(x1=x, y1=y, x2=x + rng.uniform(10, 40), y2=y + rng.uniform(8, 30)), W, H)
        assert 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H and (x1 - x0) % 8 == 0 and (y1 - y0) % 8 == 0
        shapes.add((x1 - x0, y1 - y0))
    assert len(shapes) <= 36
    frame = np.arange(H * W * 3, dtype=np.uint8).reshape(H, W, 3)
    batch = CropPreprocessor(lambda crop: crop[:4, :4], margin=0.0)(frame, [Box(x1=10, y1=20, x2=30, y2=40)])
    assert batch.shape == (1, 4, 4, 3) and (batch[0] == frame[18:22, 8:12]).all()  # 24 x 24 about the box


def test_lines_are_parsed_per_camera_and_a_name_used_twice_is_refused() -> None:
    assert VehicleConfig.parse_line("north/UP=0,150,235,150:up") == ("north", Line.parse("UP=0,150,235,150:up"))
    assert VehicleConfig.parse_line("UP=0,150,235,150")[0] == ""
    shared = Line.parse("a=0,1,2,3")
    config = VehicleConfig(lines=(shared,), camera_lines=(("north", Line.parse("b=0,1,2,3")),))
    assert [line.name for line in config.lines_for("north")] == ["a", "b"] and config.lines_for("south") == (shared,)
    with pytest.raises(UsageError, match="used twice"):
        VehicleConfig(lines=(shared,), camera_lines=(("north", Line.parse("a=5,5,9,9")),))
    with pytest.raises(UsageError, match="anchor"):
        VehicleConfig(anchor="top")


class _Counting(_Scripted):
    """A scripted finder that also counts the frames it was shown."""

    def __init__(self, frames: Sequence[Sequence[Box]]) -> None:
        super().__init__(frames)
        self.calls = 0

    def find(self, frame: np.ndarray) -> list[Box]:
        self.calls += 1
        return super().find(frame)


def test_find_every_looks_at_one_frame_in_n_and_still_counts_each_crossing_once() -> None:
    """find_every=2: the finder sees frames 0, 2, 4...; the frames between pass through empty (no boxes,
    crossings or crops, the live tracks still reported); a car crossing the line still counts once, at the
    first found frame past it, and is classified."""
    config = VehicleConfig(lines=(Line.parse("mid=160,0,160,192"),), find_every=2)
    # what the finder reports at each frame it is shown: a car 12 px further on each time (6 px a frame)
    finder = _Counting([[_car(5 + 12 * i)] for i in range(20)])
    lines = config.lines_for("cam")
    stream = VehicleStream("cam", config, _crop_shapes(), finder=finder, tracker=Tracker(),
                           make_counter=lambda size: LineCounter(lines, anchor=config.anchor, frame_size=size))
    image = np.zeros((H, W, 3), np.uint8)
    # frame numbers with a gap (a camera's lost frames): skipping goes by frames given, not by their numbers
    indices = [*range(0, 20), *range(25, 45)]
    out = [stream.process(image, i) for i in indices]
    assert finder.calls == 20
    skipped = out[1::2]
    assert all(f.boxes == 0 and not f.crossings and not f.classify and crops is None for f, crops in skipped)
    assert all(f.tracks == found.tracks for (f, _), (found, _) in zip(skipped, out[0::2]))
    crossings = [(k, c) for k, (f, _) in enumerate(out) for c in f.crossings]
    assert [(c.line, c.direction) for _, c in crossings] == [("mid", "right")]
    position, crossing = crossings[0]
    assert position % 2 == 0 and crossing.frame == indices[position]  # on a found frame, by its own number
    assert any(f.classify for f, _ in out)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_find_every_must_be_a_whole_number_of_frames(bad: object) -> None:
    with pytest.raises(UsageError, match="--find-every"):
        VehicleConfig(find_every=bad)  # type: ignore[arg-type]


class _CountingReads(CountingSource):
    """A 30-frame source that counts the frames it converted (read) and the ones it only moved past (skip)."""

    def __init__(self) -> None:
        super().__init__(fps=30, frames=30, size=64)
        self.reads = self.skips = 0

    def read(self) -> np.ndarray | None:
        self.reads += 1
        return super().read()

    def skip(self) -> bool:
        self.skips += 1
        return super().read() is not None  # moves on; a real source would not convert


def test_the_pipeline_converts_only_the_frames_the_finder_looks_at() -> None:
    """With find_every=2 a source thread reads (decodes and converts) the frames the finder looks at and only
    skips the others; every frame still reaches the sink, in order, and the stream ends normally."""
    config = VehicleConfig(lines=(Line.parse("mid=32,0,32,64"),), find_every=2)
    finder = _Counting([[] for _ in range(30)])
    stream = VehicleStream("cam", config, _crop_shapes(), finder=finder, tracker=Tracker(),
                           make_counter=lambda size: LineCounter(config.lines, frame_size=size))
    source = _CountingReads()
    with SleepyRunner() as runner:
        result = Pipeline([source], runner, lambda f: f.astype(np.float32), ("car", "truck"), NullSink(),
                          PipelineConfig(pace="max", duration_s=30, warmup_s=0.0),
                          vehicles=[stream], ledger=VehicleLedger(["cam"])).run()
    assert result.streams[0].status == "ended"
    assert [f.index for f in result.frames] == list(range(30))
    # 15 looked at and 15 skipped, plus the read that found the end (the next frame was one to look at)
    assert finder.calls == 15 and source.skips == 15 and source.reads == 16
