"""Drop, deadline and stream accounting on controlled sources and a controlled slow runner."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from tests.runtime.tiny import CountingSource, SleepyRunner
from toolchain.bench.run import stream_report
from toolchain.errors import BadInputError, UsageError
from toolchain.runtime.pipeline import STAGES, JsonLinesSink, NullSink, Pipeline, PipelineConfig


def _run(sources, runner, **config):
    with runner:
        return Pipeline(sources, runner, lambda f: f.astype(np.float32), ("car", "truck"), NullSink(),
                        PipelineConfig(**config)).run()


def test_realtime_drops_oldest_when_inference_falls_behind() -> None:
    runner = SleepyRunner((0.04,))  # ~25 batches/s against 100 frames/s arriving
    result = _run([CountingSource(fps=100)], runner, pace="realtime", duration_s=1.0, warmup_s=0.0, queue=2)
    state = result.streams[0]
    # Every measured frame either reached the sink or was dropped: nothing is lost unaccounted.
    assert state.arrived == len(result.frames) + state.dropped == 100
    assert 50 <= state.dropped <= 90
    assert len(result.drops) == state.dropped
    # Drop-oldest: what reaches the sink is always the newest frames, in order.
    indices = [f.index for f in result.frames]
    assert indices == sorted(indices)
    assert max(np.diff(indices)) >= 2


def test_pace_max_never_drops_and_keeps_order() -> None:
    result = _run([CountingSource(fps=30, frames=60)], SleepyRunner((0.002,)), pace="max", duration_s=30, warmup_s=0.0)
    assert result.streams[0].status == "ended"
    assert [f.index for f in result.frames] == list(range(60))
    assert result.streams[0].dropped == 0 and result.streams[0].arrived == 60


def test_deadline_misses_are_the_frames_over_budget() -> None:
    runner = SleepyRunner((0.0, 0.08))  # every second frame takes 80 ms in inference
    result = _run([CountingSource(fps=8)], runner, pace="realtime", duration_s=1.5, warmup_s=0.0, budget_ms=40)
    report = stream_report(result)
    slow = [f for f in result.frames if (f.t_infer1 - f.t_batch1) > 0.04]
    assert report["deadline_misses"] == len(slow) == sum(1 for f in result.frames if f.e2e * 1e3 > 40)
    assert 4 <= len(slow) <= 7
    assert report["dropped"] == 0
    assert report["realtime"] is False  # p99 is over the 40 ms budget
    assert report["budget_ms"] == 40


def test_stage_timestamps_are_ordered_and_inside_end_to_end() -> None:
    result = _run([CountingSource(fps=50)], SleepyRunner((0.001,)), pace="realtime", duration_s=0.5, warmup_s=0.1)
    assert result.frames
    for f in result.frames:
        stamps = [f.t_arrival, f.t_decode0, f.t_decode1, f.t_pre0, f.t_pre1, f.t_batch0, f.t_batch1, f.t_infer1,
                  f.t_post1, f.t_sink0, f.t_sink1]
        assert stamps == sorted(stamps)
        assert sum(f.stage_seconds().values()) <= f.e2e + 1e-9
        assert f.t_arrival >= result.measure_start
    report = stream_report(result)
    assert set(report["stage_ms"]) == set(STAGES)
    e2e = report["e2e_ms"]
    assert e2e["p50"] <= e2e["p90"] <= e2e["p95"] <= e2e["p99"] <= e2e["max"]
    expected = (e2e["p50"] - sum(s["p50"] for s in report["stage_ms"].values())) / e2e["p50"]
    assert report["overhead"]["fraction"] == pytest.approx(expected, abs=1e-3)
    waits = sorted((f.e2e - sum(f.stage_seconds().values())) * 1e3 for f in result.frames)
    assert report["overhead"]["wait_p50_ms"] == pytest.approx(float(np.percentile(waits, 50)), abs=2e-3)
    assert 0 <= report["overhead"]["wait_fraction"] < 1


def test_warmup_frames_are_run_but_not_measured() -> None:
    result = _run([CountingSource(fps=50)], SleepyRunner(), pace="realtime", duration_s=0.4, warmup_s=0.4)
    # Frames 0..19 arrive in the warm-up; the measured ones are the 20 after.
    assert [f.index for f in result.frames] == list(range(20, 40))
    assert result.streams[0].arrived == 20


def test_a_broken_or_ended_stream_is_reported_and_the_others_go_on() -> None:
    sources = [CountingSource("good", fps=50), CountingSource("bad", fps=50, break_at=5),
               CountingSource("short", fps=50, frames=3)]
    result = _run(sources, SleepyRunner(), pace="realtime", duration_s=0.5, warmup_s=0.0, max_batch=3)
    good, bad, short = result.streams
    assert bad.status == "broken" and "connection reset" in bad.error
    assert short.status == "ended" and short.frames == 3
    assert good.status == "stopped" and good.frames == 25
    report = stream_report(result)
    assert report["realtime"] is False and "bad: broken" in report["verdict"]


def test_batches_are_formed_across_streams() -> None:
    runner = SleepyRunner((0.001,))
    sources = [CountingSource(f"cam{i}", fps=20) for i in range(3)]
    result = _run(sources, runner, pace="realtime", duration_s=0.5, warmup_s=0.0, max_batch=3, max_wait_ms=30,
                  aligned=True)  # frames released together; staggered cameras fill batches only while behind
    assert max(runner.batch_sizes) == 3 and all(b <= 3 for b in runner.batch_sizes)
    assert {f.stream for f in result.frames} == {0, 1, 2}


def test_no_openable_stream_is_an_error_and_bad_config_is_refused(tmp_path) -> None:
    class Unopenable(CountingSource):
        def open(self) -> None:
            raise BadInputError("no such camera")

    with pytest.raises(BadInputError, match="no stream could be opened"):
        _run([Unopenable()], SleepyRunner(), duration_s=0.1)
    with pytest.raises(UsageError):
        PipelineConfig(pace="sometimes")
    with pytest.raises(UsageError):
        PipelineConfig(queue=0)


def test_json_lines_sink_writes_one_event_per_frame() -> None:
    out = io.StringIO()
    runner = SleepyRunner()
    with runner:
        result = Pipeline([CountingSource(fps=30, frames=10)], runner, lambda f: f.astype(np.float32), ("car", "truck"),
                          JsonLinesSink(out), PipelineConfig(pace="max", duration_s=10, warmup_s=0)).run()
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["frame"] for e in events] == list(range(10)) == [f.index for f in result.frames]
    assert {e["label"] for e in events} == {"car"} and all(e["score"] == 1.0 for e in events)


def test_a_service_keeps_counts_but_no_frame_records() -> None:
    """keep_frames=False (toolchain serve): memory stays flat however long it runs; counts still add up."""
    runner = SleepyRunner((0.04,))
    result = _run([CountingSource(fps=100)], runner, pace="realtime", duration_s=1.0, warmup_s=0.0, queue=2,
                  keep_frames=False)
    state = result.streams[0]
    assert result.frames == [] and result.drops == []
    assert state.arrived == state.frames + state.dropped == 100 and state.dropped > 0


# --------------------------------------------------------------------------- shutdown and edge cases


class _Tracked(CountingSource):
    """Records open/close and whether close came while a read was still running in another thread."""

    def __init__(self, *args, read_delay: float = 0.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.read_delay, self.reading, self.closed, self.closed_while_reading = read_delay, False, 0, False

    def read(self):
        self.reading = True
        try:
            if self.read_delay:
                import time

                time.sleep(self.read_delay)
            return super().read()
        finally:
            self.reading = False

    def close(self) -> None:
        self.closed += 1
        self.closed_while_reading |= self.reading


class _FailingRunner(SleepyRunner):
    def infer_impl(self, feed):
        if self.calls >= 3:
            raise RuntimeError("GPU fell off the bus")
        return super().infer_impl(feed)


def _source_threads() -> list:
    import threading

    return [t for t in threading.enumerate() if t.name.startswith("source-") and t.is_alive()]


def test_a_runner_that_raises_mid_run_stops_every_thread_and_closes_sources_and_sink() -> None:
    import sys

    class Sink(NullSink):
        closed = 0

        def close(self) -> None:
            Sink.closed += 1

    interval = sys.getswitchinterval()
    sources = [_Tracked(f"s{i}", fps=100) for i in range(3)]
    runner = _FailingRunner()
    with runner, pytest.raises(RuntimeError, match="fell off the bus"):
        Pipeline(sources, runner, lambda f: f.astype(np.float32), ("car", "truck"), Sink(),
                 PipelineConfig(pace="max", duration_s=5, warmup_s=0)).run()
    assert _source_threads() == []
    assert [s.closed for s in sources] == [1, 1, 1] and Sink.closed == 1
    assert sys.getswitchinterval() == interval


def test_a_sink_that_cannot_open_leaves_no_source_open() -> None:
    class Unopenable(NullSink):
        def open(self) -> None:
            raise BadInputError("cannot write events")

    sources = [_Tracked("a", fps=50), _Tracked("b", fps=50)]
    runner = SleepyRunner()
    with runner, pytest.raises(BadInputError, match="cannot write events"):
        Pipeline(sources, runner, lambda f: f.astype(np.float32), ("car", "truck"), Unopenable(),
                 PipelineConfig(duration_s=0.2, warmup_s=0)).run()
    assert [s.closed for s in sources] == [1, 1]
    assert _source_threads() == []


def test_a_source_still_reading_at_shutdown_is_closed_by_its_own_thread(monkeypatch) -> None:
    """Closing a decoder while another thread is inside read() can crash FFmpeg: wait for the read to end."""
    import time

    import toolchain.runtime.pipeline as pipeline_module

    monkeypatch.setattr(pipeline_module, "JOIN_TIMEOUT_S", 0.05)
    slow = _Tracked("slow", fps=100, read_delay=0.4)
    runner = _FailingRunner()
    with runner, pytest.raises(RuntimeError):
        Pipeline([_Tracked("fast", fps=200), slow], runner, lambda f: f.astype(np.float32), ("car", "truck"), NullSink(),
                 PipelineConfig(pace="max", duration_s=5, warmup_s=0)).run()
    deadline = time.perf_counter() + 3
    while _source_threads() and time.perf_counter() < deadline:
        time.sleep(0.02)
    assert _source_threads() == []
    assert slow.closed == 1 and not slow.closed_while_reading


def test_a_live_stream_does_not_count_its_wait_for_the_network_as_latency() -> None:
    """A live source's frame arrives when its data does (``arrival``), not when the decoder began to wait."""
    import time

    class Live(CountingSource):
        def __init__(self) -> None:
            super().__init__("rtsp://cam", fps=25)
            self.live = True
            self.arrival = 0.0

        def read(self):
            time.sleep(0.03)  # the next packet is 30 ms away
            self.arrival = time.perf_counter()
            return super().read()

    result = _run([Live()], SleepyRunner(), pace="realtime", duration_s=0.5, warmup_s=0.0)
    assert len(result.frames) >= 5
    decode = [f.stage_seconds()["decode"] for f in result.frames]
    e2e = [f.e2e for f in result.frames]
    assert max(decode) < 0.015 and float(np.median(e2e)) < 0.02


def test_no_measured_frame_gives_a_sane_cpu_figure_and_verdict() -> None:
    """Every frame arrives in the warm-up and is still being run after it: nothing measured, no absurd CPU %."""
    import time

    class Spinning(SleepyRunner):  # burns CPU, so the CPU figure has something to divide
        def infer_impl(self, feed):
            end = time.perf_counter() + 0.06
            while time.perf_counter() < end:
                pass
            return super().infer_impl(feed)

    result = _run([CountingSource(fps=100, frames=4)], Spinning(), pace="max", duration_s=1.0, warmup_s=0.1, queue=1)
    report = stream_report(result)
    assert report["frames"] == 0 and report["arrived"] == 0 and report["e2e_ms"]["p99"] is None
    assert report["realtime"] is False and "no frame was measured" in report["verdict"]
    assert 0 <= report["cpu_percent"] <= 100 * (__import__("os").cpu_count() or 1)
    json.dumps(report, allow_nan=False)


def test_every_frame_dropped_is_accounted_and_not_real_time() -> None:
    runner = SleepyRunner((0.5,))  # one batch takes longer than the whole measured second
    result = _run([CountingSource(fps=100)], runner, pace="realtime", duration_s=0.3, warmup_s=0.3, queue=1)
    report = stream_report(result)
    state = result.streams[0]
    assert state.arrived == state.frames + state.dropped and state.dropped > 0
    assert report["realtime"] is False
    json.dumps(report, allow_nan=False)


@pytest.mark.parametrize("field", ["duration_s", "warmup_s", "budget_ms", "max_wait_ms"])
def test_pipeline_config_refuses_non_finite_numbers(field: str) -> None:
    with pytest.raises(UsageError):
        PipelineConfig(**{field: float("nan")})
    with pytest.raises(UsageError):
        PipelineConfig(**{field: float("inf")})
