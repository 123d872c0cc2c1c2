"""The numbers of one pipeline run: percentiles per stage and end to end, drops, misses, the verdict.

Runs where the pipeline ran: on the workstation for ``bench``, inside the unit's container for
``bench --on`` (so it is part of the runtime files: standard library + numpy, Python 3.8+).
:func:`frame_arrays` carries what the plots need back from a unit as plain JSON.

A run of the vehicle pipeline (``bench --line``) is summarised by its own stages
(:data:`~toolchain.runtime.vehicles.VEHICLE_STAGES`): decode, find, follow, count and crop are timed in
the source thread, classify is the batch of crops (stacking, inference, softmax) the frame went through,
sink includes the ledger turning crossings into events. Its report adds crossings per second, the
event latency (a crossing frame's arrival to its event) and the crops classified per second.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

import numpy as np

from toolchain.bench.stats import summarize
from toolchain.runtime.pipeline import STAGES, FrameRecord, PipelineResult
from toolchain.runtime.vehicles import UNKNOWN, VEHICLE_STAGES

DROP_TOLERANCE = 0.01
"""Real time allows at most this fraction of frames dropped (and p99 within the budget)."""


def vehicle_stage_seconds(frame: FrameRecord) -> Dict[str, float]:
    """The time one frame of the vehicle pipeline spent in each of :data:`VEHICLE_STAGES` (seconds)."""
    v = frame.vehicle
    return {"decode": frame.t_decode1 - frame.t_decode0, "find": v.t_find, "follow": v.t_follow, "count": v.t_count,
            "crop": v.t_crop, "classify": frame.t_post1 - frame.t_batch0, "sink": frame.t_sink1 - frame.t_sink0}


def _stage_seconds(frame: FrameRecord, vehicles: bool) -> Dict[str, float]:
    return vehicle_stage_seconds(frame) if vehicles else frame.stage_seconds()


def stream_report(result: PipelineResult, *, vehicles: bool = False, counted: Optional[int] = None) -> Dict[str, Any]:
    """Percentiles, overhead, drops, misses and the verdict of one pipeline run.

    Args:
        result: The run.
        vehicles: It ran the vehicle pipeline: stages are :data:`VEHICLE_STAGES`, and the report adds
            ``vehicles`` (crossings, vehicles per second, event latency, crops classified).
        counted: Crossings counted over the whole run (warm-up and the end included), if known.
    """
    frames = result.frames
    stages = VEHICLE_STAGES if vehicles else STAGES
    per_frame = [_stage_seconds(f, vehicles) for f in frames]
    stage_ms = {s: np.array([t[s] for t in per_frame]) * 1e3 for s in stages}
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
    extra: Dict[str, Any] = {}
    if vehicles:
        extra = {"pipeline": "vehicles", "vehicles": vehicle_summary(result, counted=counted)}
        v = extra["vehicles"]
        verdict += f"; {v['crossings']} crossings, event latency p99 {_ms(v['event_latency_ms']['p99'])}"
    return {
        "mode": "stream", "pace": cfg.pace, "streams": len(streams), **extra,
        "e2e_ms": e2e_summary, "infer_ms": stage_summary["classify" if vehicles else "infer"], "stage_ms": stage_summary,
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


def vehicle_summary(result: PipelineResult, *, counted: Optional[int] = None) -> Dict[str, Any]:
    """What the vehicle pipeline did in the measured window: crossings (and per second, by line, direction and
    class), event latency, crops classified (and per second), the batches of crops, boxes and tracks per frame.

    An event counts when it left on a measured frame (a dropped frame's crossings leave with the next one);
    those flushed when the streams ended (still waiting for a class) are in ``counted`` only.
    """
    frames = result.frames
    seconds = result.measure_seconds
    events = [e for f in frames for e in f.vehicle.events]
    by_line: Dict[str, Dict[str, Dict[str, int]]] = {}
    for e in events:
        by_class = by_line.setdefault(e.line, {}).setdefault(e.direction, {})
        by_class[e.cls] = by_class.get(e.cls, 0) + 1
    crops = sum(len(f.vehicle.classify) for f in frames)
    batches: Dict[float, List[Any]] = {}  # frames of one batch share its start time
    for f in frames:
        if f.vehicle.classify:
            batches.setdefault(f.t_batch0, []).append(f)
    batch_ms = [(group[0].t_post1 - group[0].t_batch0) * 1e3 for group in batches.values()]
    batch_crops = [sum(len(f.vehicle.classify) for f in group) for group in batches.values()]
    n = max(1, len(frames))
    return {
        "crossings": len(events), "per_second": round(len(events) / seconds, 3) if seconds else 0.0,
        "per_minute": round(60 * len(events) / seconds, 1) if seconds else 0.0,
        "counted": counted, "by_line": by_line,
        "event_latency_ms": summarize([e.latency_ms for e in events]),
        "unknown_class": sum(1 for e in events if e.cls == UNKNOWN),
        "crops": {"classified": crops, "per_second": round(crops / seconds, 2) if seconds else 0.0,
                  "per_frame": round(crops / n, 3)},
        "classify_batches": {"count": len(batch_ms), "crops_mean": round(float(np.mean(batch_crops)), 2) if batch_crops else 0.0,
                             "ms": summarize(batch_ms)},
        "boxes_per_frame": round(sum(f.vehicle.boxes for f in frames) / n, 3),
        "tracks_per_frame": round(sum(f.vehicle.tracks for f in frames) / n, 3),
    }


def _ms(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def frame_arrays(result: PipelineResult, *, vehicles: bool = False) -> Dict[str, Any]:
    """Per-frame times of a run as JSON lists (ms; arrival in s from the start of measurement), for plots."""
    frames = result.frames
    per_frame = [_stage_seconds(f, vehicles) for f in frames]
    return {
        "arrival_s": [round(f.t_arrival - result.measure_start, 6) for f in frames],
        "e2e_ms": [round(f.e2e * 1e3, 4) for f in frames],
        "stage_ms": {s: [round(t[s] * 1e3, 4) for t in per_frame] for s in (VEHICLE_STAGES if vehicles else STAGES)},
        "stream": [f.stream for f in frames],
        "drops": [[k, round(t - result.measure_start, 6)] for k, t in result.drops],
        "stream_names": [s.name for s in result.streams],
        "budget_ms": result.budget_ms,
    }
