"""The vehicle pipeline's stages around the classifier: find, follow, crop, count, and the class vote.

Per stream, in its source thread (:class:`VehicleStream`): the finder turns the full frame into boxes, the
tracker gives them ids, the line counter judges each confirmed track's anchor against the camera's lines,
and the tracks worth classifying now are cropped from the full-resolution frame and preprocessed as the
training crops were (the box widened so the vehicle fills about 80% of it, then resized to the model's
square input). The crops of every stream are batched and classified in the inference thread, where
:class:`VehicleLedger` keeps each track's votes and turns crossings into events.

When a track is classified (a bounded number of times, never every frame):

* once it is confirmed, its box is whole (not cut by the frame edge) and at least ``min_crop_px`` on each
  side; again only when its box has grown by ``regrow`` since the last time, up to
  ``max_classifications``;
* at a crossing, if it was never classified (a vehicle cut by the frame edge the whole time), once.

The vehicle's class is the vote of its classifications (the sum of their probabilities per class). A
crossing becomes an event as soon as its track has at least one classification; one whose track ends
unclassified, or is still waiting when the run ends, goes out as ``unknown``: a vehicle is never lost
for want of a class.

Python 3.8 compatible, numpy only beyond the finder's own dependency (the roadside runtime).
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from toolchain.errors import UsageError
from toolchain.runtime.compat import frozen_config
from toolchain.runtime.geometry import ANCHORS, Box, Line

UNKNOWN = "unknown"
"""The class of a counted vehicle that was never classified."""

VEHICLE_STAGES = ("decode", "find", "follow", "count", "crop", "classify", "sink")
"""Stage names of the vehicle pipeline, in order (``crop`` includes the crops' preprocessing)."""


@frozen_config
class VehicleConfig:
    """How the vehicle pipeline finds, follows, classifies and counts.

    Attributes:
        lines: Lines every camera counts on.
        camera_lines: ``(camera, line)`` pairs: lines of one camera only.
        anchor: The point of a box judged against lines (``centre`` or ``bottom``).
        hysteresis_px: Half-width of the band around a line inside which a track's side never changes.
        max_classifications: Classifications per track at most.
        min_crop_px: A box is classified once both its sides are at least this long.
        regrow: A track is classified again only when its box area has grown by this factor.
        edge_margin_px: A box closer than this to the frame edge is not whole.
        crop_margin: The crop is the box widened by this fraction on each side (training crops show the
            vehicle filling 62-95% of them).
        finder: ``motion`` (background subtraction) or the path of a detector ONNX.
        detector_classes: With a detector: only these class ids are vehicles (empty: all).
        motion: How motion finding works (scale, morphology, sizes; :class:`~toolchain.runtime.find.MotionConfig`).
        find_every: Find, follow and count on one frame in this many (DeepStream's ``interval`` + 1); the
            others are decoded (not converted to RGB) and pass through with no boxes. 1 (the default): every
            frame. 2 on a 30 fps camera finds 15 times a second, for a quarter to a third less CPU per frame
            (decoding stays; BENCHMARKS.md); a crossing's frame is then the first found frame past the line,
            up to ``find_every - 1`` frames late, and the tracker's frame counts (``max_lost``, confirmation)
            are in found frames. Dense roads lose a few vehicles side by side (BENCHMARKS.md).
    """

    lines: Tuple[Line, ...] = ()
    camera_lines: Tuple[Tuple[str, Line], ...] = ()
    anchor: str = "centre"
    hysteresis_px: float = 3.0
    max_classifications: int = 3
    min_crop_px: int = 16
    regrow: float = 1.5
    edge_margin_px: int = 2
    crop_margin: float = 0.12
    finder: str = "motion"
    detector_classes: Tuple[int, ...] = ()
    motion: Any = None
    find_every: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.find_every, bool) or not isinstance(self.find_every, int) or self.find_every < 1:
            raise UsageError(f"--find-every must be a whole number of frames, 1 or more, not {self.find_every!r}")
        if self.anchor not in ANCHORS:
            raise UsageError(f"--anchor must be one of {', '.join(ANCHORS)}, not {self.anchor!r}")
        if self.max_classifications < 1 or self.min_crop_px < 1 or self.regrow <= 1.0:
            raise UsageError("a track needs max_classifications >= 1, min_crop_px >= 1 and regrow > 1")
        if self.hysteresis_px < 0 or self.crop_margin < 0 or self.edge_margin_px < 0:
            raise UsageError("hysteresis, crop margin and edge margin cannot be negative")
        names: Dict[str, List[str]] = {}
        for camera, line in [("", line) for line in self.lines] + list(self.camera_lines):
            names.setdefault(camera, []).append(line.name)
        for camera, line_names in names.items():
            shared = names.get("", []) if camera else []
            doubled = {n for n in line_names + shared if (line_names + shared).count(n) > 1}
            if doubled:
                where = f"camera {camera}" if camera else "every camera"
                raise UsageError(f"line name(s) {', '.join(sorted(doubled))} used twice for {where}; name each line once")

    def lines_for(self, camera: str) -> Tuple[Line, ...]:
        """The lines ``camera`` counts on: the shared ones, then its own."""
        return self.lines + tuple(line for name, line in self.camera_lines if name == camera)

    @staticmethod
    def parse_line(text: str) -> Tuple[str, Line]:
        """``[CAMERA/]NAME=x1,y1,x2,y2[:DIRECTION]`` -> ``(camera or "", line)``."""
        camera, slash, rest = text.partition("/")
        if not slash or "=" in camera:
            return "", Line.parse(text)
        return camera, Line.parse(rest)


@dataclass
class CrossingEvent:
    """One vehicle crossing one line: what the unit reports.

    Attributes:
        camera: The camera's name.
        line: The line's name.
        direction: ``up``/``down`` or ``left``/``right``.
        cls: The class vote when the event left (``unknown``: never classified).
        score: The vote's share of the probability mass (0 for ``unknown``).
        track: The track id (per camera, increasing).
        frame: The frame index of the crossing (decode order).
        time: Wall time the event left (ISO 8601, UTC).
        latency_ms: From the crossing frame's arrival to the event.
        classifications: How many classifications the vote had.
    """

    camera: str
    line: str
    direction: str
    cls: str
    score: float
    track: int
    frame: int
    time: str = ""
    latency_ms: float = 0.0
    classifications: int = 0

    def to_json(self) -> Dict[str, Any]:
        return {"camera": self.camera, "line": self.line, "direction": self.direction, "class": self.cls,
                "score": round(self.score, 5), "track": self.track, "frame": self.frame, "time": self.time,
                "latency_ms": round(self.latency_ms, 3), "classifications": self.classifications}


@dataclass
class VehicleFrame:
    """What one frame of one stream brought: crossings, tracks to classify (their crops are the record's
    input), tracks that ended, and the time each stage took (seconds)."""

    crossings: List[Any] = field(default_factory=list)
    classify: List[int] = field(default_factory=list)
    ended: List[int] = field(default_factory=list)
    boxes: int = 0
    tracks: int = 0
    t_find: float = 0.0
    t_follow: float = 0.0
    t_count: float = 0.0
    t_crop: float = 0.0
    events: List[CrossingEvent] = field(default_factory=list)

    def absorb(self, older: VehicleFrame) -> None:
        """Take over an older frame's crossings and ended tracks (that frame is dropped: its crops are not
        classified, but no crossing and no end is lost)."""
        self.crossings = older.crossings + self.crossings
        self.ended = older.ended + self.ended


@dataclass
class _TrackPlan:
    classified: int = 0
    last_area: float = 0.0


STEP = 8
"""Crop sides are rounded up to a multiple of this many pixels (see :meth:`CropPreprocessor.crop_box`)."""


def _span(low: float, high: float, limit: int) -> Tuple[int, int]:
    """``[low, high)`` widened to a multiple of :data:`STEP` about its centre, kept inside ``[0, limit)``."""
    size = max(STEP, int(np.ceil((high - low) / STEP)) * STEP)
    if size >= limit:
        return 0, limit
    start = int(np.floor((low + high) / 2 - size / 2))
    start = min(max(start, 0), limit - size)
    return start, start + size


class CropPreprocessor:
    """Crops of boxes from a full frame -> a batch of model inputs, as the training crops were made."""

    _MAX_SHAPES = 512  # resize taps are cached per crop shape; vehicles come in many sizes

    def __init__(self, preprocess: Callable[[np.ndarray], np.ndarray], margin: float) -> None:
        self.preprocess, self.margin = preprocess, margin

    def crop_box(self, box: Box, width: int, height: int) -> Tuple[int, int, int, int]:
        """The box widened by the margin, then to a multiple of :data:`STEP` pixels a side (centred, inside the
        frame where it fits): ``(x0, y0, x1, y1)`` integer pixels.

        The resize's filter taps are computed once per crop shape; without the rounding every vehicle crop had
        a shape of its own, and computing taps cost 4x the resize itself (BENCHMARKS.md, "Vehicle pipeline
        streams"). A few pixels more of road around the vehicle is within the training crops' spread.
        """
        mx, my = box.width * self.margin, box.height * self.margin
        x0, x1 = _span(box.x1 - mx, box.x2 + mx, width)
        y0, y1 = _span(box.y1 - my, box.y2 + my, height)
        return x0, y0, x1, y1

    def __call__(self, frame: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
        height, width = frame.shape[:2]
        inputs = []
        for box in boxes:
            x0, y0, x1, y1 = self.crop_box(box, width, height)
            inputs.append(self.preprocess(np.ascontiguousarray(frame[y0:y1, x0:x1])))
        taps = getattr(self.preprocess, "_taps", None)
        if isinstance(taps, dict) and len(taps) > self._MAX_SHAPES:
            taps.clear()
        return np.stack(inputs)


class VehicleStream:
    """One camera's find -> follow -> count -> crop, run in its source thread (state per stream).

    Args:
        camera: The camera's name.
        config: The vehicle pipeline's settings.
        crops: Makes the model inputs of the tracks to classify.
        finder: Finds boxes in this camera's frames (its own instance: a background model is per camera).
        tracker: Follows this camera's boxes.
        make_counter: Makes the line counter for this camera's lines, given the frame size ``(width, height)``.
    """

    def __init__(self, camera: str, config: VehicleConfig, crops: CropPreprocessor, *, finder: Any, tracker: Any,
                 make_counter: Callable[[Tuple[int, int]], Any]) -> None:
        self.camera, self.config, self.crops = camera, config, crops
        self.finder, self.tracker, self._make_counter = finder, tracker, make_counter
        self.counter: Any = None
        self._plans: Dict[int, _TrackPlan] = {}
        self._last = 0
        self._seen = 0  # frames given to process: with find_every, which ones are found on
        self._tracks = 0  # live tracks after the last frame found on

    def wants_frame(self) -> bool:
        """Whether :meth:`process` will look at the next frame (with ``find_every`` N, one in N): when not, the
        source need not convert it to an image, and ``process`` may be given None for it."""
        return self._seen % self.config.find_every == 0

    def process(self, frame: Optional[np.ndarray], index: int) -> Tuple[VehicleFrame, Optional[np.ndarray]]:
        """Find, follow and count on ``frame``; the frame's vehicle data and the crops to classify (or None).

        With ``find_every`` N, only the first of every N frames given is looked at (see :meth:`wants_frame`);
        the others come back empty (no boxes, crossings or crops) and may be None. Counted per frame given, not
        by ``index``, so a camera's gaps in frame numbers never make it skip more.
        """
        out = VehicleFrame()
        wanted = self.wants_frame()
        self._seen += 1
        if not wanted:
            out.tracks = self._tracks  # still live; the finder did not look at this frame (no boxes)
            return out, None
        if frame is None:
            raise ValueError("process needs the frame it wants (wants_frame() was True)")
        height, width = frame.shape[:2]
        if self.counter is None:  # the counter judges tracks at the frame's edges: it needs the frame size
            self.counter = self._make_counter((width, height))
        t0 = time.perf_counter()
        boxes = self.finder.find(frame)
        t1 = time.perf_counter()
        update = self.tracker.update(boxes, index)
        t2 = time.perf_counter()
        crossings = list(self.counter.update(update.active, index)) + list(self.counter.end(update.ended, index))
        t3 = time.perf_counter()
        out.boxes, out.tracks, out.crossings = len(boxes), len(update.active), crossings
        self._tracks = out.tracks
        out.ended = [track.id for track in update.ended]
        for track_id in out.ended:
            self._plans.pop(track_id, None)
        crossing_tracks = {c.track_id for c in crossings}
        chosen: List[Any] = []
        for track in update.matched:  # a coasting track is a prediction: nothing to crop
            plan = self._plans.setdefault(track.id, _TrackPlan())
            if self._worth_classifying(track.box, plan, width, height) or (
                    track.id in crossing_tracks and plan.classified == 0):
                plan.classified += 1
                plan.last_area = track.box.area
                chosen.append(track)
        inputs = self.crops(frame, [t.box for t in chosen]) if chosen else None
        out.classify = [t.id for t in chosen]
        out.t_find, out.t_follow, out.t_count, out.t_crop = t1 - t0, t2 - t1, t3 - t2, time.perf_counter() - t3
        self._last = index
        return out, inputs

    def finish(self) -> VehicleFrame:
        """The stream ended: its remaining tracks end, and those leaving at a frame edge may still cross."""
        out = VehicleFrame()
        ended = self.tracker.flush()
        if self.counter is not None:
            out.crossings = list(self.counter.end(ended, self._last))
        out.ended = [track.id for track in ended]
        self._plans.clear()
        return out

    def _worth_classifying(self, box: Box, plan: _TrackPlan, width: int, height: int) -> bool:
        cfg = self.config
        if plan.classified >= cfg.max_classifications:
            return False
        if box.width < cfg.min_crop_px or box.height < cfg.min_crop_px:
            return False
        m = cfg.edge_margin_px
        whole = box.x1 >= m and box.y1 >= m and box.x2 <= width - m and box.y2 <= height - m
        if not whole:
            return False
        return plan.classified == 0 or box.area >= plan.last_area * cfg.regrow

    def close(self) -> None:
        close = getattr(self.finder, "close", None)
        if close is not None:
            close()


@dataclass
class _Votes:
    mass: Dict[str, float] = field(default_factory=dict)
    n: int = 0

    def add(self, label: str, probability: float) -> None:
        self.mass[label] = self.mass.get(label, 0.0) + probability
        self.n += 1

    def result(self) -> Tuple[str, float]:
        if not self.n:
            return UNKNOWN, 0.0
        label = max(sorted(self.mass), key=lambda k: self.mass[k])
        return label, self.mass[label] / self.n


class VehicleLedger:
    """Votes per track and crossings waiting for a class, per camera; runs in the inference thread.

    Args:
        cameras: Camera names by stream index.
        on_event: Called with every event as it leaves (metrics, publishing).
    """

    def __init__(self, cameras: Sequence[str], on_event: Optional[Callable[[CrossingEvent], None]] = None) -> None:
        self.cameras = list(cameras)
        self.on_event = on_event
        self._votes: List[Dict[int, _Votes]] = [{} for _ in self.cameras]
        self._pending: List[Dict[int, List[Tuple[Any, float]]]] = [{} for _ in self.cameras]
        self.counts: Dict[Tuple[str, str, str, str], int] = {}

    def take(self, stream: int, frame: VehicleFrame, results: Sequence[Tuple[str, float]], arrival: float
             ) -> List[CrossingEvent]:
        """Apply one frame's classifications, then return the events that are ready (also in ``frame.events``)."""
        votes, pending = self._votes[stream], self._pending[stream]
        ready: List[CrossingEvent] = []
        for track_id, (label, probability) in zip(frame.classify, results):
            votes.setdefault(track_id, _Votes()).add(label, probability)
            for crossing, t_arrival in pending.pop(track_id, []):
                ready.append(self._event(stream, crossing, t_arrival))
        for crossing in frame.crossings:
            if crossing.track_id in votes:
                ready.append(self._event(stream, crossing, arrival))
            else:
                pending.setdefault(crossing.track_id, []).append((crossing, arrival))
        for track_id in frame.ended:
            for crossing, t_arrival in pending.pop(track_id, []):
                ready.append(self._event(stream, crossing, t_arrival))
            votes.pop(track_id, None)
        frame.events = ready
        return ready

    def flush(self) -> List[Tuple[int, CrossingEvent]]:
        """Every crossing still waiting (the run ended), as ``(stream, event)`` with the vote so far."""
        out = []
        for stream, pending in enumerate(self._pending):
            for track_id in sorted(pending):
                for crossing, t_arrival in pending[track_id]:
                    out.append((stream, self._event(stream, crossing, t_arrival)))
            pending.clear()
        return out

    def _event(self, stream: int, crossing: Any, arrival: float) -> CrossingEvent:
        votes = self._votes[stream].get(crossing.track_id, _Votes())
        label, share = votes.result()
        camera = self.cameras[stream]
        event = CrossingEvent(
            camera=camera, line=crossing.line, direction=crossing.direction, cls=label, score=share,
            track=crossing.track_id, frame=crossing.frame,
            time=dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
            latency_ms=(time.perf_counter() - arrival) * 1e3 if arrival else 0.0, classifications=votes.n)
        key = (camera, event.line, event.direction, event.cls)
        self.counts[key] = self.counts.get(key, 0) + 1
        if self.on_event is not None:
            self.on_event(event)
        return event


def make_vehicle_pipeline(cameras: Sequence[str], config: VehicleConfig, preprocess: Callable[[np.ndarray], np.ndarray],
                          *, on_event: Optional[Callable[[CrossingEvent], None]] = None
                          ) -> Tuple[List[VehicleStream], VehicleLedger]:
    """One :class:`VehicleStream` per camera (its own finder, tracker and counter) and the shared ledger.

    Args:
        cameras: Camera names by stream index.
        config: Lines, anchor, finder and the classification policy.
        preprocess: One crop -> one model input (the classifier's own preprocessing, as evaluation feeds it).
        on_event: Called with every crossing event as it leaves.
    """
    from toolchain.runtime.find import make_finder
    from toolchain.runtime.lines import LineCounter
    from toolchain.runtime.track import Tracker

    crops = CropPreprocessor(preprocess, config.crop_margin)
    streams = []
    for camera in cameras:
        lines = config.lines_for(camera)

        def counter(size: Tuple[int, int], lines: Tuple[Line, ...] = lines) -> Any:
            return LineCounter(lines, anchor=config.anchor, hysteresis_px=config.hysteresis_px, frame_size=size)

        spec = (config.motion or "motion") if config.finder == "motion" else config.finder
        streams.append(VehicleStream(camera, config, crops, finder=make_finder(spec, classes=config.detector_classes),
                                     tracker=Tracker(), make_counter=counter))
    return streams, VehicleLedger(cameras, on_event=on_event)
