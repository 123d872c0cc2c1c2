"""The frame pipeline: decode -> preprocess -> batch across streams -> infer -> postprocess -> sink.

Threads, one per stream, decode and preprocess (PyAV, numpy and ONNX Runtime release the GIL, so
these overlap with inference); the calling thread batches ready frames across streams, runs the
model, postprocesses and hands each result to a :class:`Sink`. Every frame carries a timestamp at
each stage boundary (``time.perf_counter`` seconds).

Pacing:
    ``realtime``: a file or synthetic stream releases frame ``i`` at ``start + i / fps`` (a live camera
    or network stream paces itself). Each stream has a small queue of preprocessed frames; when it is
    full because inference fell behind, the oldest frame is dropped and counted. A frame whose
    end-to-end latency (arrival -> sink) exceeds the budget is a deadline miss.
    ``max``: frames are decoded as fast as the pipeline takes them (full queues block the decoder,
    nothing is dropped); for throughput.

A stream that ends, breaks (decode error, lost connection) or stalls (no frame for ``stall_s``) is
reported in its :class:`StreamState`; the other streams go on.

The sink interface is small on purpose: ``toolchain serve`` can run this pipeline with a
:class:`JsonLinesSink` to write one event per frame.
"""

from __future__ import annotations

import abc
import collections
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from toolchain.errors import BadInputError, UsageError
from toolchain.redaction import scrub
from toolchain.runtime.compat import frozen_config, strict_zip
from toolchain.runtime.preprocess import postprocess
from toolchain.runtime.runners import BaseRunner
from toolchain.runtime.sources import FrameSource

PACES = ("realtime", "max")
SWITCH_INTERVAL_S = 0.0005
"""GIL switch interval while a pipeline runs (see :meth:`Pipeline.run`)."""
JOIN_TIMEOUT_S = 5.0
"""How long a finished run waits for each source thread; one still inside ``read`` closes its own source."""
SPIN_S = 0.0015
"""How long before a paced frame's release time a source thread stops sleeping and yields instead."""
STAGES = ("decode", "preprocess", "batch", "infer", "postprocess", "sink")
"""Stage names, in order. ``batch`` is assembling the batch (the stack), not waiting for it."""


class FrameRecord:
    """One frame's journey: identity, result and a timestamp at each stage boundary."""

    __slots__ = ("stream", "index", "measured", "input", "label", "score", "batch_size", "t_arrival", "t_decode0",
                 "t_decode1", "t_pre0", "t_pre1", "t_batch0", "t_batch1", "t_infer1", "t_post1", "t_sink0", "t_sink1",
                 "vehicle")

    def __init__(self, stream: int, index: int, t_arrival: float) -> None:
        self.stream, self.index, self.t_arrival = stream, index, t_arrival
        self.measured = False
        self.input: np.ndarray | None = None
        self.vehicle: Any = None  # a VehicleFrame in the vehicle pipeline (its crops are ``input``)
        self.label, self.score, self.batch_size = "", 0.0, 0
        self.t_decode0 = self.t_decode1 = self.t_pre0 = self.t_pre1 = 0.0
        self.t_batch0 = self.t_batch1 = self.t_infer1 = self.t_post1 = self.t_sink0 = self.t_sink1 = 0.0

    @property
    def e2e(self) -> float:
        return self.t_sink1 - self.t_arrival

    def stage_seconds(self) -> dict[str, float]:
        return {
            "decode": self.t_decode1 - self.t_decode0, "preprocess": self.t_pre1 - self.t_pre0,
            "batch": self.t_batch1 - self.t_batch0, "infer": self.t_infer1 - self.t_batch1,
            "postprocess": self.t_post1 - self.t_infer1, "sink": self.t_sink1 - self.t_sink0,
        }


class Sink(abc.ABC):
    """Where results go. ``write`` is called from the inference thread, one frame at a time, in order."""

    def open(self) -> None:  # noqa: B027 - optional hook
        """Called once before the first frame."""

    @abc.abstractmethod
    def write(self, frame: FrameRecord, stream_name: str) -> None:
        """Deliver one result (``frame.label``, ``frame.score``)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Called once after the last frame."""


class NullSink(Sink):
    """Discards results (benchmarks: the sink stage then measures the handover alone)."""

    def write(self, frame: FrameRecord, stream_name: str) -> None:
        return None


class JsonLinesSink(Sink):
    """One JSON object per frame: stream, frame index, label, score, latency (ms)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def write(self, frame: FrameRecord, stream_name: str) -> None:
        event = {"stream": stream_name, "frame": frame.index, "label": frame.label, "score": round(frame.score, 5),
                 "latency_ms": round((time.perf_counter() - frame.t_arrival) * 1e3, 3)}
        self.out.write(json.dumps(event) + "\n")

    def close(self) -> None:
        self.out.flush()


@frozen_config
class PipelineConfig:
    """How the pipeline runs.

    Attributes:
        pace: ``realtime`` (frames released at the source fps; drop-oldest) or ``max`` (throughput).
        duration_s: Measured time after the warm-up (a stream may end sooner).
        warmup_s: Frames arriving in the first seconds are run but not measured (or counted as dropped).
        max_batch: Largest batch across streams (0: one frame per stream).
        max_wait_ms: How long a batch waits for more frames once it has one (0: run what is ready).
        queue: Preprocessed frames a stream may hold before the oldest is dropped (realtime).
        budget_ms: End-to-end deadline per frame (None: one frame interval of the slowest stream).
        stall_s: A stream with no frame for this long is reported as stalled.
        keep_frames: Keep every measured frame's record for the report (a benchmark); a service that
            runs for months sets it off and reads the counts in :class:`StreamState` and its sink.
        scaled_decode: Let decoders scale frames to the model's input as they convert colours (libswscale),
            instead of full-size RGB frames resized in numpy; off reproduces the preprocessing bit for bit.
        aligned: Paced streams release their frames at the same instants (a burst of one frame per stream
            each period: the worst case, as if every camera were genlocked). Off, stream k of n is shifted by
            k/n of its frame period, as free-running cameras are.
    """

    pace: str = "realtime"
    duration_s: float = 10.0
    warmup_s: float = 2.0
    max_batch: int = 0
    max_wait_ms: float = 0.0
    queue: int = 2
    budget_ms: float | None = None
    stall_s: float = 5.0
    keep_frames: bool = True
    scaled_decode: bool = True
    aligned: bool = False

    def __post_init__(self) -> None:
        if self.pace not in PACES:
            raise UsageError(f"--pace must be one of {', '.join(PACES)}, got {self.pace!r}")
        numbers = (self.duration_s, self.warmup_s, self.max_wait_ms, self.stall_s,
                   *(() if self.budget_ms is None else (self.budget_ms,)))
        if not all(math.isfinite(v) for v in numbers):  # nan passes every comparison below; inf never ends
            raise UsageError("--duration, --warmup, --max-wait-ms and --budget-ms must be finite numbers")
        if self.duration_s <= 0 or self.warmup_s < 0:
            raise UsageError("--duration must be > 0 and --warmup >= 0 (seconds)")
        if self.max_batch < 0 or self.max_wait_ms < 0 or self.queue < 1:
            raise UsageError("--max-batch >= 0, --max-wait-ms >= 0 and --queue >= 1 are required")
        if self.budget_ms is not None and self.budget_ms <= 0:
            raise UsageError("--budget-ms must be > 0")


@dataclass
class StreamState:
    """What happened to one stream."""

    name: str
    fps: float
    live: bool = False
    status: str = "running"  # running, ended, broken, stalled, stopped
    error: str = ""
    frames: int = 0  # measured frames that reached the sink
    arrived: int = 0  # measured frames that arrived (processed + dropped + in flight at the end)
    dropped: int = 0
    stalls: int = 0
    last_frame: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "fps": round(self.fps, 3), "live": self.live, "status": self.status,
                "error": self.error, "frames": self.frames, "arrived": self.arrived, "dropped": self.dropped,
                "stalls": self.stalls}


@dataclass
class PipelineResult:
    """Measured frames, drops and stream outcomes of one run."""

    config: PipelineConfig
    frames: list[FrameRecord]  # measured frames that reached the sink, in sink order
    drops: list[tuple[int, float]]  # (stream, arrival) of measured frames dropped
    streams: list[StreamState]
    measure_start: float
    measure_seconds: float
    cpu_seconds: float
    budget_ms: float
    batches: int
    runner_device: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Pipeline:
    """Runs frame sources through one runner.

    Args:
        sources: One per stream (opened and closed by the pipeline).
        runner: An activated runner.
        preprocess: Frame (H, W, 3) uint8 -> one model input.
        classes: Class names for the postprocess labels.
        sink: Where results go.
        config: Pacing, batching, duration.
    """

    def __init__(self, sources: Sequence[FrameSource], runner: BaseRunner, preprocess: Callable[[np.ndarray], np.ndarray],
                 classes: Sequence[str], sink: Sink, config: PipelineConfig, *, vehicles: Sequence[Any] | None = None,
                 ledger: Any = None) -> None:
        if not sources:
            raise UsageError("the pipeline needs at least one --source")
        if vehicles is not None and (len(vehicles) != len(sources) or ledger is None):
            raise UsageError("the vehicle pipeline needs one VehicleStream per source and a VehicleLedger")
        # Vehicle mode (toolchain.runtime.vehicles): a source thread finds, follows, counts and crops; the
        # crops of every stream are classified together and the ledger turns crossings into events.
        self.vehicles, self.ledger = (list(vehicles) if vehicles is not None else None), ledger
        self.sources, self.runner, self.preprocess = list(sources), runner, preprocess
        self.classes, self.sink, self.config = tuple(classes), sink, config
        self.max_batch = config.max_batch or len(self.sources)
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self._queues: list[collections.deque[FrameRecord]] = [collections.deque() for _ in self.sources]
        self._drops: list[tuple[int, float]] = []
        self.streams = [StreamState(name=s.name, fps=s.fps, live=s.live) for s in self.sources]
        self._close_lock = threading.Lock()
        self._finished: set[int] = set()  # source threads that have ended
        # The busy-wait before a paced frame is shared out: at 16 streams x 30 fps a full SPIN_S each would
        # burn most of a core spinning (BENCHMARKS.md, "Many streams").
        self._spin_s = SPIN_S / len(self.sources)
        self._abandoned: set[int] = set()  # source threads run() stopped waiting for (they close their source)

    # -- source threads ------------------------------------------------------------------------------

    def _source_loop(self, k: int, t0: float, measure_start: float, end: float) -> None:
        src, state, cfg = self.sources[k], self.streams[k], self.config
        realtime_paced = cfg.pace == "realtime" and not src.live
        period = 1.0 / src.fps if src.fps > 0 else 0.0
        phase = 0.0 if cfg.aligned else period * k / len(self.sources)
        i = 0
        try:
            start_in = t0 - time.perf_counter()
            if start_in > 0 and self._stop.wait(start_in):  # every stream starts together
                return
            while not self._stop.is_set():
                if realtime_paced:
                    offset = i * period
                    t_arrival = t0 + phase + offset
                    # Window edges compared as offsets from t0, in one arithmetic: t0 + 40 * 0.02 and
                    # (t0 + 0.4) + 0.4 can differ in the last bit, which let a frame at the edge in or out.
                    if offset >= cfg.warmup_s + cfg.duration_s:
                        break
                    if _wait_until(t_arrival, self._stop, self._spin_s):
                        break
                t_d0 = time.perf_counter()
                if not realtime_paced and t_d0 >= end:
                    break
                # a frame the vehicle finder skips (find_every) is decoded, never converted to an image
                skipping = self.vehicles is not None and not self.vehicles[k].wants_frame()
                image = None if skipping else src.read()
                ended = not src.skip() if skipping else image is None
                t_d1 = time.perf_counter()
                if ended:
                    state.status = "ended"
                    if self.vehicles is not None:  # its last tracks end: crossings at the frame edge, votes
                        last = FrameRecord(k, -1, t_d1)
                        last.vehicle = self.vehicles[k].finish()
                        self._push(k, last)
                    break
                if not realtime_paced:
                    # Live: the frame arrived when its data did (the source stamps ``arrival`` when a packet
                    # comes in, so waiting for the network is neither decode time nor latency); max: when
                    # decode began.
                    arrival = getattr(src, "arrival", 0.0) if src.live else 0.0
                    t_arrival = min(arrival, t_d1) if arrival else t_d0
                record = FrameRecord(k, i, t_arrival)
                record.t_decode0, record.t_decode1 = max(t_d0, t_arrival), t_d1
                if realtime_paced:
                    record.measured = cfg.warmup_s <= offset < cfg.warmup_s + cfg.duration_s
                else:
                    record.measured = measure_start <= t_arrival < end
                record.t_pre0 = time.perf_counter()
                if self.vehicles is not None:
                    record.vehicle, record.input = self.vehicles[k].process(image, i)
                else:
                    record.input = self.preprocess(image)
                record.t_pre1 = time.perf_counter()
                i += 1
                self._push(k, record)
        except Exception as exc:  # noqa: BLE001 - a broken stream is reported, the others go on
            state.status, state.error = "broken", f"{type(exc).__name__}: {scrub(exc)}"
        finally:
            if state.status in ("running", "stalled"):
                state.status = "stopped"
            with self._cv:
                self._cv.notify_all()
            with self._close_lock:
                self._finished.add(k)
                abandoned = k in self._abandoned
            if abandoned:  # run() stopped waiting for this thread: close the source now that read() returned
                self._close_source(k)

    def _push(self, k: int, record: FrameRecord) -> None:
        state, queue = self.streams[k], self._queues[k]
        with self._cv:
            if record.measured:
                state.arrived += 1
            if self.config.pace == "realtime":
                carried = []
                while len(queue) >= self.config.queue:  # fell behind: drop the oldest frame
                    old = queue.popleft()
                    if old.vehicle is not None:
                        carried.append(old.vehicle)
                    if old.measured:
                        state.dropped += 1
                        if self.config.keep_frames:
                            self._drops.append((k, old.t_arrival))
                for older in reversed(carried):  # a dropped frame's crossings and ended tracks are never lost
                    record.vehicle.absorb(older)
            else:
                while len(queue) >= self.config.queue and not self._stop.is_set():
                    self._cv.wait(0.05)
            queue.append(record)
            state.last_frame = record.t_pre1
            if state.status == "stalled":
                state.status = "running"
            self._cv.notify_all()

    # -- inference thread ----------------------------------------------------------------------------

    def _take(self, n: int) -> list[FrameRecord]:
        """Up to ``n`` ready frames, oldest arrival first across streams (call with the lock held)."""
        taken: list[FrameRecord] = []
        while len(taken) < n:
            heads = [(q[0].t_arrival, k) for k, q in enumerate(self._queues) if q]
            if not heads:
                break
            taken.append(self._queues[min(heads)[1]].popleft())
        return taken

    def _check_stalls(self, now: float) -> None:
        for state in self.streams:
            if state.status == "running" and state.last_frame and now - state.last_frame > self.config.stall_s:
                state.status = "stalled"
                state.stalls += 1

    def _close_source(self, k: int) -> None:
        try:
            self.sources[k].close()
        except Exception:  # noqa: BLE001 - closing a broken stream may fail too; already reported
            pass

    def run(self) -> PipelineResult:
        """Run until the duration is over or every stream has ended; returns the measured frames.

        Whatever happens (a runner or sink that raises, Ctrl-C), every source thread is stopped, every
        opened source and the sink are closed and the GIL switch interval is restored before returning.
        """
        cfg = self.config
        opened: list[int] = []
        threads: dict[int, threading.Thread] = {}
        sink_open = False
        switch_interval = sys.getswitchinterval()
        frames: list[FrameRecord] = []
        batches = 0
        measured_any = False
        cpu_start: float | None = None
        try:
            # Vehicles are cropped from full frames: no decoder-side scaling then.
            decode_size = (getattr(self.preprocess, "decode_size", None)
                           if cfg.scaled_decode and self.vehicles is None else None)
            for k, src in enumerate(self.sources):
                try:
                    if decode_size is not None:
                        src.request_size(*decode_size)
                    src.open()
                    self.streams[k].fps = src.fps
                    self.streams[k].live = src.live
                    opened.append(k)
                except Exception as exc:  # noqa: BLE001 - one bad stream must not stop the others
                    self.streams[k].status, self.streams[k].error = "broken", f"{type(exc).__name__}: {scrub(exc)}"
            if not opened:
                errors = "; ".join(s.error for s in self.streams)
                raise BadInputError(f"no stream could be opened: {errors}")
            fps = [self.streams[k].fps for k in opened if self.streams[k].fps > 0]
            budget_ms = cfg.budget_ms or (1000.0 / min(fps) if fps else 1000.0 / 30)

            self.sink.open()
            sink_open = True
            # Hand-overs between the source threads and this one wait for the GIL; CPython's default
            # 5 ms switch interval made them ~20% of end-to-end p50 on 2 cores, 0.5 ms halves that
            # (BENCHMARKS.md, "Streaming latency"). Restored when the run ends.
            sys.setswitchinterval(min(switch_interval, SWITCH_INTERVAL_S))
            t0 = time.perf_counter() + 0.02
            measure_start = t0 + cfg.warmup_s
            end = measure_start + cfg.duration_s
            for k in opened:
                threads[k] = threading.Thread(target=self._source_loop, args=(k, t0, measure_start, end),
                                              name=f"source-{k}", daemon=True)
                threads[k].start()
            last_sink = measure_start
            while True:
                with self._cv:
                    while not any(self._queues):
                        if not any(t.is_alive() for t in threads.values()):
                            break
                        self._cv.wait(0.05)
                        self._check_stalls(time.perf_counter())
                    batch = self._take(self.max_batch)
                    if batch and len(batch) < self.max_batch and cfg.max_wait_ms > 0:
                        deadline = batch[0].t_pre1 + cfg.max_wait_ms / 1e3
                        while len(batch) < self.max_batch and (left := deadline - time.perf_counter()) > 0:
                            self._cv.wait(left)
                            batch += self._take(self.max_batch - len(batch))
                    self._cv.notify_all()  # room in the queues for blocked decoders (pace max)
                if not batch:
                    break
                if cpu_start is None and time.perf_counter() >= measure_start:
                    cpu_start = _cpu_seconds()
                t_b0 = time.perf_counter()
                inputs = [r.input for r in batch if r.input is not None]
                feed = (np.concatenate(inputs) if self.vehicles is not None else np.stack(inputs)) if inputs else None
                t_b1 = time.perf_counter()
                scores = self.runner.infer(feed) if feed is not None else None
                t_i1 = time.perf_counter()
                results = postprocess(scores, self.classes) if scores is not None else []
                t_q1 = time.perf_counter()
                batches += 1
                for record, (label, score), rows in self._results_by_record(batch, results):
                    record.input = None
                    record.label, record.score, record.batch_size = label, score, len(batch)
                    record.t_batch0, record.t_batch1, record.t_infer1, record.t_post1 = t_b0, t_b1, t_i1, t_q1
                    record.t_sink0 = time.perf_counter()
                    if record.vehicle is not None:
                        self.ledger.take(record.stream, record.vehicle, rows, record.t_arrival)
                    self.sink.write(record, self.streams[record.stream].name)
                    record.t_sink1 = time.perf_counter()
                    if record.measured:
                        if cfg.keep_frames:
                            frames.append(record)
                        self.streams[record.stream].frames += 1
                        measured_any = True
                        last_sink = record.t_sink1
            if self.ledger is not None:  # crossings still waiting for a class when the streams ended
                for stream, event in self.ledger.flush():
                    record = FrameRecord(stream, -1, 0.0)
                    record.vehicle = _flushed(event)
                    self.sink.write(record, self.streams[stream].name)
        finally:
            self._shutdown(opened, threads, sink_open, switch_interval)
        now = time.perf_counter()
        if measured_any and not any(s.status == "stopped" for s in self.streams):
            measured_end = max(last_sink, measure_start)  # every stream ended: up to the last measured frame
        else:  # ran the full duration, or measured nothing (then CPU over the time that was measured, if any)
            measured_end = min(end, now)
        window = max(1e-9, measured_end - measure_start)
        cpu = _cpu_seconds() - cpu_start if cpu_start is not None and measured_end > measure_start else 0.0
        return PipelineResult(
            config=cfg, frames=frames, drops=list(self._drops), streams=self.streams, measure_start=measure_start,
            measure_seconds=window, cpu_seconds=cpu, budget_ms=budget_ms, batches=batches,
            runner_device=self.runner.device,
        )

    def _results_by_record(self, batch: list[FrameRecord], results: list[tuple[str, float]]
                           ) -> list[tuple[FrameRecord, tuple[str, float], list[tuple[str, float]]]]:
        """Each record with its frame result (frame mode) or its crops' results (vehicle mode)."""
        if self.vehicles is None:
            return [(record, result, []) for record, result in strict_zip(batch, results)]
        out, at = [], 0
        for record in batch:
            n = len(record.vehicle.classify) if record.input is not None else 0
            out.append((record, ("", 0.0), results[at : at + n]))
            at += n
        if at != len(results):
            raise AssertionError(f"{len(results)} classifications for {at} crops")
        return out

    def _shutdown(self, opened: list[int], threads: dict[int, threading.Thread], sink_open: bool,
                  switch_interval: float) -> None:
        """Stop the source threads, close the sources and the sink, restore the switch interval."""
        try:
            self._stop.set()
            with self._cv:
                self._cv.notify_all()
            deadline = time.perf_counter() + JOIN_TIMEOUT_S  # one deadline for all: not 5 s per hung camera
            for thread in threads.values():
                thread.join(timeout=max(0.0, deadline - time.perf_counter()))
            for k in opened:
                with self._close_lock:
                    # A thread still inside read() (a network stream waiting out its timeout) closes its own
                    # source when the read returns: closing a decoder under a running read can crash FFmpeg.
                    running = k in threads and k not in self._finished
                    if running:
                        self._abandoned.add(k)
                if not running:
                    self._close_source(k)
            if sink_open:
                self.sink.close()
            for stream in self.vehicles or ():
                stream.close()
        finally:
            sys.setswitchinterval(switch_interval)


def _flushed(event: Any) -> Any:
    """A frame's vehicle data holding only ``event`` (a crossing flushed at the end of the run)."""
    from toolchain.runtime.vehicles import VehicleFrame

    return VehicleFrame(events=[event])


def _wait_until(when: float, stop: threading.Event, spin_s: float = SPIN_S) -> bool:
    """Sleep until ``perf_counter() >= when`` (True if ``stop`` was set meanwhile).

    A timed wait wakes up late by up to a millisecond on a busy 2-core machine, which a paced
    source would count as latency no real camera adds; so sleep to ``SPIN_S`` before the frame's
    time, then yield in a short loop (at most 1.5 ms a frame: under 5% of one core at 30 fps).
    """
    left = when - time.perf_counter()
    if left > spin_s and stop.wait(left - spin_s):
        return True
    while time.perf_counter() < when:
        if stop.is_set():
            return True
        time.sleep(0)
    return False


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def pure_inference(runner: BaseRunner, feed: np.ndarray, *, duration_s: float, warmup_s: float,
                   min_iterations: int = 10) -> tuple[np.ndarray, float, float]:
    """Run one fixed input over and over, like trtexec: no decode, no preprocessing, no queues.

    Returns:
        ``(latencies in seconds per call, measured wall seconds, cpu seconds)``.
    """
    end_warmup = time.perf_counter() + warmup_s
    runner.infer(feed)
    while time.perf_counter() < end_warmup:
        runner.infer(feed)
    times: list[float] = []
    cpu0, start = _cpu_seconds(), time.perf_counter()
    end = start + duration_s
    while time.perf_counter() < end or len(times) < min_iterations:
        t = time.perf_counter()
        runner.infer(feed)
        times.append(time.perf_counter() - t)
    return np.asarray(times), time.perf_counter() - start, _cpu_seconds() - cpu0
