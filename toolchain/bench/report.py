"""The numbers of one pipeline run: percentiles per stage and end to end, drops, misses, the verdict.

Runs where the pipeline ran: on the workstation for ``bench``, inside the unit's container for
``bench --on`` (so it is part of the runtime files: standard library + numpy, Python 3.8+).
:func:`frame_arrays` carries what the plots need back from a unit as plain JSON.
"""

from __future__ import annotations

import os
from typing import Any, Dict

import numpy as np

from toolchain.bench.stats import summarize
from toolchain.runtime.pipeline import STAGES, PipelineResult

DROP_TOLERANCE = 0.01
"""Real time allows at most this fraction of frames dropped (and p99 within the budget)."""


def stream_report(result: PipelineResult) -> dict[str, Any]:
    """Percentiles, overhead, drops, misses and the verdict of one pipeline run."""
    frames = result.frames
    stage_ms = {s: np.array([f.stage_seconds()[s] for f in frames]) * 1e3 for s in STAGES}
    e2e = np.array([f.e2e for f in frames]) * 1e3
    stage_summary = {s: summarize(v) for s, v in stage_ms.items()}
    wait_summary = summarize(e2e - sum(stage_ms.values())) if frames else summarize([])
    e2e_summary = summarize(e2e)
    stage_p50_sum = sum(v["p50"] or 0.0 for v in stage_summary.values())
    e2e_p50 = e2e_summary["p50"] or 0.0
    streams = result.streams
    arrived = sum(s.arrived for s in streams)
    dropped = sum(s.dropped for s in streams)
    misses = int(np.count_nonzero(e2e > result.budget_ms))
    fps = len(frames) / result.measure_seconds
    demanded = sum(s.fps for s in streams if s.status != "broken")
    healthy = all(s.status in ("ended", "stopped", "running") for s in streams)
    cfg = result.config
    if not frames:
        realtime, reason = False, "no frame was measured"
    elif cfg.pace == "realtime":
        p99 = e2e_summary["p99"] or 0.0
        realtime = bool(p99 <= result.budget_ms and dropped <= DROP_TOLERANCE * max(1, arrived) and healthy)
        reason = (f"p99 end-to-end {p99:.1f} ms vs budget {result.budget_ms:.1f} ms, "
                  f"{dropped} of {arrived} frames dropped")
    else:
        realtime = bool(fps >= demanded * 0.99 and healthy)
        reason = f"throughput {fps:.1f} frames/s vs {demanded:.1f} needed"
    if not healthy:
        reason += "; " + ", ".join(f"{s.name}: {s.status}" for s in streams if s.status not in ("ended", "stopped", "running"))
    per_stream_fps = [s.fps for s in streams]
    rate = f"{min(per_stream_fps):g}" if per_stream_fps and len(set(per_stream_fps)) == 1 else "/".join(f"{f:g}" for f in per_stream_fps)
    verdict = (f"real-time {'yes' if realtime else 'no'} for {len(streams)} stream{'s' * (len(streams) != 1)} at {rate} fps "
               f"on this device ({reason})")
    batch_sizes = np.array([f.batch_size for f in frames]) if frames else np.zeros(1)
    return {
        "mode": "stream", "pace": cfg.pace, "streams": len(streams),
        "e2e_ms": e2e_summary, "infer_ms": stage_summary["infer"], "stage_ms": stage_summary,
        "overhead": {"e2e_p50_ms": round(e2e_p50, 3), "stage_p50_sum_ms": round(stage_p50_sum, 3),
                     "fraction": round((e2e_p50 - stage_p50_sum) / e2e_p50, 4) if e2e_p50 else None,
                     # Measured per frame: e2e minus that frame's own stage times (queues, hand-overs). The
                     # formula above also counts skew (a median of sums is not the sum of medians).
                     "wait_p50_ms": wait_summary["p50"],
                     "wait_fraction": round((wait_summary["p50"] or 0.0) / e2e_p50, 4) if e2e_p50 else None},
        "stage_share": {s: round((v["p50"] or 0.0) / e2e_p50, 4) if e2e_p50 else None for s, v in stage_summary.items()},
        "fps": round(fps, 2), "fps_per_stream": round(fps / max(1, len(streams)), 2), "frames": len(frames),
        "arrived": arrived, "dropped": dropped, "deadline_misses": misses, "budget_ms": round(result.budget_ms, 3),
        "cpu_percent": round(100 * result.cpu_seconds / result.measure_seconds, 1),
        "cpu_utilisation": round(result.cpu_seconds / result.measure_seconds / (os.cpu_count() or 1), 3),
        "batch": {"mean": round(float(batch_sizes.mean()), 2), "max": int(batch_sizes.max()), "count": result.batches},
        "measured_seconds": round(result.measure_seconds, 3), "realtime": realtime, "verdict": verdict,
        "stream_states": [s.to_json() for s in streams],
    }


def frame_arrays(result: PipelineResult) -> Dict[str, Any]:
    """Per-frame times of a run as JSON lists (ms; arrival in s from the start of measurement), for plots."""
    frames = result.frames
    return {
        "arrival_s": [round(f.t_arrival - result.measure_start, 6) for f in frames],
        "e2e_ms": [round(f.e2e * 1e3, 4) for f in frames],
        "stage_ms": {s: [round(f.stage_seconds()[s] * 1e3, 4) for f in frames] for s in STAGES},
        "stream": [f.stream for f in frames],
        "drops": [[k, round(t - result.measure_start, 6)] for k, t in result.drops],
        "stream_names": [s.name for s in result.streams],
        "budget_ms": result.budget_ms,
    }
