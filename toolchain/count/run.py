"""Count the vehicles of a recorded clip with the unit's own pipeline, and score them against a hand count.

The clip runs through :class:`~toolchain.runtime.pipeline.Pipeline` in vehicle mode, paced ``max`` (as
fast as it goes, nothing dropped): the same find, follow, crop, classify and count stages, on the same
threads and batching, that ``serve`` runs on a unit, so a count here equals the unit's count on the same
frames. Crossings are written as CSV (``line,frame,class,direction,score,track,time_s``); with a truth
CSV they are scored (:func:`toolchain.evaluate.counts.score_counts`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolchain.errors import UsageError
from toolchain.progress import NullProgress, Progress
from toolchain.runtime.pipeline import FrameRecord, Pipeline, PipelineConfig, Sink
from toolchain.runtime.vehicles import CrossingEvent, VehicleConfig, make_vehicle_pipeline
from toolchain.workspace import Workspace

FOREVER_S = 10.0 * 365 * 24 * 3600
"""A duration no clip reaches: the run ends when the clip does."""


@dataclass(frozen=True, kw_only=True)
class CountConfig:
    """Options of ``toolchain count``.

    Attributes:
        artifact: The classifier (a build, an ONNX artifact, MODEL@ALIAS or a file), as ``bench`` takes it.
        source: The clip (a video file, an image directory or ``synthetic:WxH@FPS``).
        vehicles: Lines, anchor and the pipeline's settings.
        runner: ``auto`` or a runner name (as ``bench --runner``).
        threads: Inference threads (0: the backend's default).
        out: Where the crossings CSV goes (None: not written).
        truth: A hand count CSV (``line,frame,class[,certain,note]``) to score against.
        class_map: ``(fine, coarse)`` pairs applied to truth classes (``van=car``).
        interval_s: Count errors per interval of this many seconds (None: totals only).
        tolerance_frames: A crossing matches a truth row within this many frames.
        plot: Where the cumulative-count plot goes (with ``truth``).
        max_frames: Stop after this many frames (None: the whole clip).
    """

    artifact: str
    source: str
    vehicles: VehicleConfig
    runner: str = "auto"
    threads: int = 0
    out: Path | None = None
    truth: Path | None = None
    class_map: tuple[tuple[str, str], ...] = ()
    interval_s: float | None = None
    tolerance_frames: int = 7
    plot: Path | None = None
    max_frames: int | None = None

    def __post_init__(self) -> None:
        if not self.vehicles.lines and not self.vehicles.camera_lines:
            raise UsageError("count needs at least one --line NAME=x1,y1,x2,y2[:up|down|left|right] (frame pixels)")
        if self.tolerance_frames < 0:
            raise UsageError("--tolerance must be >= 0 frames")
        if self.max_frames is not None and self.max_frames < 1:
            raise UsageError("--max-frames must be at least 1")


@dataclass
class _Collect(Sink):
    """Keeps every crossing event, and the frames seen."""

    progress: Progress
    events: list[CrossingEvent] = field(default_factory=list)
    frames: int = 0
    last_frame: int = -1

    def write(self, frame: FrameRecord, stream_name: str) -> None:
        if frame.index >= 0:
            self.frames += 1
            self.last_frame = max(self.last_frame, frame.index)
            self.progress.advance()
        if frame.vehicle is not None:
            self.events.extend(frame.vehicle.events)


def count_clip(workspace: Workspace, config: CountConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Run the vehicle pipeline over ``config.source``; returns the JSON report (counts, crossings, score)."""
    from toolchain.bench.subject import require_runner_available, resolve_subject
    from toolchain.evaluate.counts import CountedCrossing, write_crossings_csv
    from toolchain.runtime.preprocess import Preprocessor
    from toolchain.runtime.sources import camera_name, open_source

    subject = resolve_subject(workspace, config.artifact)
    runner_name = subject.default_runner() if config.runner == "auto" else config.runner
    require_runner_available(runner_name)
    camera, spec = camera_name(config.source, 0)
    source = open_source(spec, fps=None)
    source.name = camera
    if config.max_frames is not None:
        source = _Limited(source, config.max_frames)
    preprocess = Preprocessor(subject.preprocess_config())
    sink = _Collect(progress=progress or NullProgress())
    sink.progress.start(f"counting vehicles in {camera}", config.max_frames)
    started = time.perf_counter()
    with subject.make_runner(workspace, runner_name, threads=config.threads) as runner:
        streams, ledger = make_vehicle_pipeline([camera], config.vehicles, preprocess)
        pipeline = Pipeline([source], runner, preprocess, subject.classes, sink,
                            PipelineConfig(pace="max", duration_s=FOREVER_S, warmup_s=0.0, keep_frames=False, queue=4),
                            vehicles=streams, ledger=ledger)
        result = pipeline.run()
    sink.progress.finish()
    seconds = time.perf_counter() - started
    fps = result.streams[0].fps or None
    events = sorted(sink.events, key=lambda e: (e.frame, e.line, e.track))
    crossings = [CountedCrossing(line=e.line, frame=e.frame, cls=e.cls, direction=e.direction, score=e.score,
                                 track=e.track, time_s=(e.frame / fps) if fps else None) for e in events]
    report: dict[str, Any] = {
        "artifact": subject.ref, "source": camera, "runner": runner_name, "classes": list(subject.classes),
        "lines": [line.spec() for line in config.vehicles.lines_for(camera)], "anchor": config.vehicles.anchor,
        "frames": sink.frames, "fps": fps, "seconds": round(seconds, 3),
        "frames_per_second": round(sink.frames / seconds, 2) if seconds > 0 else None,
        "stream": result.streams[0].to_json(), "counts": _counts(events), "crossings": [e.to_json() for e in events],
    }
    if config.out is not None:
        report["csv"] = str(write_crossings_csv(config.out, crossings, fps=fps))
    if config.truth is not None:
        report["score"] = _score(config, camera, crossings, subject.classes, fps, sink.last_frame + 1)
    return report


def _counts(events: list[CrossingEvent]) -> dict[str, dict[str, dict[str, int]]]:
    """``{line: {direction: {class: n}}}``."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for e in events:
        by_class = out.setdefault(e.line, {}).setdefault(e.direction, {})
        by_class[e.cls] = by_class.get(e.cls, 0) + 1
    return out


def _score(config: CountConfig, camera: str, crossings: list[Any], classes: tuple[str, ...], fps: float | None,
           frames: int) -> dict[str, Any]:
    from toolchain.evaluate.counts import CountScoreConfig, read_truth_csv, score_counts

    assert config.truth is not None
    if config.interval_s is not None and not fps:
        raise UsageError("--interval needs the clip's frame rate, and this source has none; score without --interval")
    truth = read_truth_csv(config.truth)
    score = score_counts(truth, crossings, CountScoreConfig(
        tolerance_frames=config.tolerance_frames, fps=fps, interval_s=config.interval_s, class_map=config.class_map,
        classes=tuple(classes), lines=tuple(line.name for line in config.vehicles.lines_for(camera)),
        frames=frames), plot=config.plot)
    return score.to_json()


class _Limited:
    """A frame source that ends after ``limit`` frames (``count --max-frames``)."""

    def __init__(self, source: Any, limit: int) -> None:
        self._source, self._left = source, limit

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)

    def read(self) -> Any:
        if self._left <= 0:
            return None
        self._left -= 1
        return self._source.read()

    def skip(self) -> bool:
        if self._left <= 0:
            return False
        self._left -= 1
        return bool(self._source.skip())
