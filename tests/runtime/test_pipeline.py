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
    result = _run(sources, runner, pace="realtime", duration_s=0.5, warmup_s=0.0, max_batch=3, max_wait_ms=30)
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
