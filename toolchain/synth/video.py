"""Synthetic CCTV clips: cars and trucks driving along a road, seen from a roadside camera.

``toolchain synth video`` encodes the frames of :class:`toolchain.runtime.scene.SceneRenderer` (numpy
only; the runtime's in-memory synthetic camera draws the same frames) to H.264 via PyAV/libx264. The same
config gives the same pixels.

The renderer also knows where every vehicle is: :meth:`SceneRenderer.boxes` gives the visible box of
each vehicle in a frame, from the same placement the frame is drawn from, and :func:`crossing_truth`
turns that into the exact crossings of counting lines (``toolchain synth video --line ... --truth``),
so a count on the clip can be checked without anyone counting by eye.
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Optional, Sequence, Tuple

from toolchain.errors import BadInputError, MissingEnvironmentError, UsageError
from toolchain.fileio import atomic_output
from toolchain.runtime.compat import frozen_config
from toolchain.runtime.geometry import ANCHORS, Line
from toolchain.runtime.scene import SCHEDULE_S, SceneRenderer, Vehicle

@frozen_config
class VideoConfig:
    """What clip to make.

    Attributes:
        width: Frame width in pixels (even: H.264 4:2:0).
        height: Frame height in pixels (even).
        fps: Frames per second.
        seconds: Clip length.
        seed: Same seed, same pixels.
        crf: x264 constant rate factor (lower: larger, closer to the rendered frames).
    """

    width: int = 640
    height: int = 352
    fps: float = 30.0
    seconds: float = 10.0
    seed: int = 0
    crf: int = 23

    def __post_init__(self) -> None:
        if self.width < 32 or self.height < 32 or self.width % 2 or self.height % 2:
            raise BadInputError(f"--size {self.width}x{self.height}: both sides must be even and at least 32 (H.264 4:2:0)")
        if not 1 <= self.fps <= 240:
            raise BadInputError(f"--fps {self.fps} is out of range; use 1 to 240")
        if not 0 < self.seconds <= 3600:
            raise BadInputError(f"--seconds {self.seconds} is out of range; use more than 0 and at most 3600")

    @property
    def frames(self) -> int:
        return max(1, int(round(self.seconds * self.fps)))


@frozen_config
class TruthCrossing:
    """One vehicle crossing one counting line in a synthetic clip: a row of the truth CSV.

    Attributes:
        line: The line's name.
        frame: The first frame (decode order, 0-based) whose anchor is on the far side of the line.
        cls: ``car`` or ``truck``.
        direction: How it crossed (one of the line's :attr:`~toolchain.runtime.geometry.Line.directions`).
        track: The vehicle's id in the clip (an appearance: a schedule that repeats gives new ids).
    """

    line: str
    frame: int
    cls: str
    direction: str
    track: int


TRUTH_HEADER = ("line", "frame", "class", "direction", "track")
"""The synthetic truth CSV: the hand-count format ``line,frame,class`` plus our ``direction`` and ``track``
(``certain`` is left out: every synthetic row is certain)."""


def crossing_truth(config: VideoConfig, lines: Sequence[Line], anchor: str = "centre") -> list[TruthCrossing]:
    """The exact crossings of ``lines`` by the vehicles of the clip ``config`` describes.

    A vehicle crosses a line when its anchor (see :data:`~toolchain.runtime.geometry.ANCHORS`) is on one
    side in a frame and on the other side in a later frame it is still drawn in, and the anchor's path
    meets the line between the two at a point on the segment (ends included). ``frame`` is the first
    frame on the far side; an anchor exactly on the line is on neither side yet. A line with a direction
    keeps only crossings in that direction. A vehicle that has not crossed by the clip's last frame is
    not counted, nor one that first appears already past the line.

    The anchor is that of the vehicle's visible part (:meth:`SceneRenderer.visible_box`), as the hand
    count of the real clip takes the centre of what is visible: a vehicle entering or leaving at a frame
    edge is judged on the part inside the frame. Positions come from the placement the frames are drawn
    from, frame by frame over each vehicle's time on screen, so the truth cannot disagree with the pixels.

    Args:
        config: The clip (size, fps, length, seed).
        lines: Counting lines in the clip's pixels.
        anchor: ``centre`` or ``bottom`` (bottom centre, as DeepStream's nvdsanalytics).

    Returns:
        Crossings in order of frame, then line, then track.

    Raises:
        UsageError: Unknown anchor or two lines with the same name.
    """
    if anchor not in ANCHORS:
        raise UsageError(f"--anchor {anchor!r}: use one of {', '.join(ANCHORS)}")
    names = [line.name for line in lines]
    if len(set(names)) != len(names):
        raise UsageError(f"line names must differ; got {', '.join(names)}")
    renderer = SceneRenderer(config.width, config.height, config.fps, seed=config.seed)
    frames, fps = config.frames, config.fps
    found: list[TruthCrossing] = []
    period = 0
    while period * SCHEDULE_S * fps < frames:
        for lane in renderer.vehicles:
            for v in lane:
                enter = (period * SCHEDULE_S + v.start) * fps
                if enter > frames + 2:
                    break  # in order of entry: the rest enter after the clip
                leave = enter + (renderer.width + v.length) / abs(v.speed) * fps
                # A margin of frames around the estimate; the placement itself decides what is drawn.
                window = range(max(0, int(enter) - 2), min(frames, int(math.ceil(leave)) + 3))
                track = period * renderer.vehicle_count + v.id
                found.extend(_crossings(renderer, v, window, lines, anchor, track))
        period += 1
    return sorted(found, key=lambda c: (c.frame, c.line, c.track))


def _crossings(renderer: SceneRenderer, v: Vehicle, window: range, lines: Sequence[Line], anchor: str,
               track: int) -> list[TruthCrossing]:
    """The crossings of one vehicle appearance, from its anchor in each frame of ``window``."""
    path: list[Optional[Tuple[int, Tuple[float, float]]]] = []
    for i in window:
        span = renderer._span(v, renderer.time_of(i))
        box = None if span is None else renderer.visible_box(v, *span)
        path.append(None if box is None else (i, box.anchor(anchor)))
    found = []
    for line in lines:
        last: Optional[Tuple[float, Tuple[float, float]]] = None  # (side, point) of the last frame off the line
        for step in path:
            if step is None:
                last = None  # not drawn: what comes next is a new appearance, not a move
                continue
            i, point = step
            side = line.side(*point)
            if side == 0:
                continue
            if last is not None and (side > 0) != (last[0] > 0):
                before_side, before = last
                share = before_side / (before_side - side)  # where the anchor's move meets the line
                meet = (before[0] + (point[0] - before[0]) * share, before[1] + (point[1] - before[1]) * share)
                direction = crossing_direction(line, side)
                if 0.0 <= line.along(*meet) <= 1.0 and line.direction in ("", direction):
                    found.append(TruthCrossing(line=line.name, frame=i, cls=v.cls, direction=direction, track=track))
            last = (side, point)
    return found


def crossing_direction(line: Line, side_after: float) -> str:
    """The direction of a crossing that ends on the side ``side_after`` (see :meth:`Line.direction_to`)."""
    return line.direction_to(side_after)


def write_truth_csv(path: Path, crossings: Sequence[TruthCrossing]) -> Path:
    """Write crossings as a truth CSV (:data:`TRUTH_HEADER`), atomically (temp file, then rename).

    Returns:
        ``path``.
    """
    path = Path(path)
    with atomic_output(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(TRUTH_HEADER)
        for c in crossings:
            writer.writerow((c.line, c.frame, c.cls, c.direction, c.track))
    return path


def truth_summary(crossings: Sequence[TruthCrossing]) -> dict[str, dict[str, dict[str, int]]]:
    """Crossings counted per line, direction and class: ``{line: {direction: {class: n}}}``."""
    summary: dict[str, dict[str, dict[str, int]]] = {}
    for c in crossings:
        per_class = summary.setdefault(c.line, {}).setdefault(c.direction, {})
        per_class[c.cls] = per_class.get(c.cls, 0) + 1
    return summary


def write_video(out: Path, config: VideoConfig, progress=None) -> dict[str, object]:  # noqa: ANN001
    """Render and encode a clip as H.264 (libx264, yuv420p) into ``out`` (.mp4, .mkv, .avi...).

    Written to a temporary name next to ``out`` and renamed, so a reader never sees half a file.

    Returns:
        ``out``, frames, size and seconds taken.
    """
    try:
        import av
    except ImportError as exc:
        raise MissingEnvironmentError("PyAV is not installed: pip install av") from exc
    if "libx264" not in av.codecs_available:
        raise MissingEnvironmentError("this PyAV build has no libx264 encoder; install PyAV wheels from PyPI (they bundle it)")
    started = time.perf_counter()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    renderer = SceneRenderer(config.width, config.height, config.fps, seed=config.seed)
    from fractions import Fraction

    rate = Fraction(config.fps).limit_denominator(1001)
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = config.width, config.height, "yuv420p"
        stream.options = {"crf": str(config.crf), "preset": "veryfast", "g": str(max(1, int(math.ceil(config.fps))))}
        for i in range(config.frames):
            frame = av.VideoFrame.from_ndarray(renderer.frame(i), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
            if progress is not None:
                progress(1)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(out)
    return {"out": str(out), "frames": config.frames, "fps": config.fps, "width": config.width,
            "height": config.height, "bytes": out.stat().st_size, "seconds": time.perf_counter() - started}
