"""``toolchain bench``: run an artifact on frame streams (or a fixed input) and report, plot and record it.

The report answers "will this model keep up with my cameras on this device?": per-stage and
end-to-end latency percentiles, throughput, dropped frames, deadline misses, CPU use, and a
real-time verdict. Pipeline overhead is end-to-end p50 minus the sum of the stage p50s (time in
queues and hand-overs), as a fraction of end-to-end p50.

With lines (``--line``, :attr:`BenchConfig.vehicles`) it runs the vehicle pipeline ``serve --line`` runs
(decode -> find -> follow -> count -> crop -> classify -> sink, :data:`~toolchain.runtime.vehicles.VEHICLE_STAGES`)
and the report adds the crossings, vehicles per second, event latency and crops classified per second
(:func:`toolchain.bench.report.vehicle_summary`).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.bench.report import frame_arrays, stream_report
from toolchain.bench.stats import summarize
from toolchain.bench.subject import RUNNERS, Subject, require_runner_available, resolve_subject
from toolchain.errors import MissingEnvironmentError, UsageError
from toolchain.registry import NewRecord
from toolchain.runtime.pipeline import NullSink, Pipeline, PipelineConfig, pure_inference
from toolchain.runtime.preprocess import Preprocessor, Roi
from toolchain.runtime.sources import camera_name
from toolchain.runtime.vehicles import VehicleConfig, make_vehicle_pipeline
from toolchain.serve.service import open_cameras
from toolchain.workspace import Workspace

@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """Options of ``toolchain bench`` (see the CLI help for each)."""

    artifact: str
    sources: tuple[str, ...] = ()
    streams: int = 1
    pace: str = "realtime"
    runner: str = "auto"
    duration_s: float = 10.0
    warmup_s: float = 2.0
    budget_ms: float | None = None
    max_batch: int = 0
    max_wait_ms: float = 0.0
    queue: int = 2
    roi: str | None = None
    fps: float | None = None
    loop: bool = False
    pure: bool = False
    batch: int = 1
    threads: int = 0
    plots_dir: str | None = None
    record: bool = True
    scaled_decode: bool = True
    aligned: bool = False
    credentials: Path | None = None
    vehicles: VehicleConfig | None = None

    def __post_init__(self) -> None:
        if self.runner not in RUNNERS:
            raise UsageError(f"--runner must be one of {', '.join(RUNNERS)}")
        if self.streams < 1 or self.batch < 1:
            raise UsageError("--streams and --batch must be at least 1")
        if not self.pure and not self.sources:
            raise UsageError("pass --source FILE|URL|DIR|synthetic (or --pure for inference alone on a fixed input)")
        if len(self.sources) > 1 and self.streams not in (1, len(self.sources)):
            raise UsageError(f"--streams {self.streams} with {len(self.sources)} --source: give one source and "
                             "--streams N, or N sources")
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise UsageError(f"--fps must be a positive frame rate, got {self.fps}")
        if self.roi:
            Roi.parse(self.roi)
        if self.pure and self.credentials is not None:
            raise UsageError("--credentials belongs to camera sources; --pure reads none")
        if self.vehicles is not None:
            self._check_vehicles(self.vehicles)
        self.pipeline_config(self.budget_ms)  # the pipeline's own checks, on the options as given

    def _check_vehicles(self, vehicles: VehicleConfig) -> None:
        if self.pure:
            raise UsageError("--line runs the vehicle pipeline on --source streams; --pure times inference alone: "
                             "pass one or the other")
        if self.roi:
            raise UsageError("--roi crops whole frames before the classifier; with --line the classifier sees crops of "
                             "vehicles: drop --roi (draw the lines where the road is)")
        if not vehicles.lines and not vehicles.camera_lines:
            raise UsageError("the vehicle pipeline needs at least one --line NAME=x1,y1,x2,y2")
        names = [camera_name(spec, i)[0] for i, spec in enumerate(self.stream_specs)]
        unknown = sorted({camera for camera, _ in vehicles.camera_lines} - set(names))
        if unknown:
            raise UsageError(f"--line names camera(s) {', '.join(unknown)}, which no --source has; cameras are "
                             f"{', '.join(sorted(set(names)))} (name them NAME=URL)")

    def to_json(self) -> dict[str, Any]:
        """The options as a benchmark records them (the credentials file by its path, never what it holds)."""
        from toolchain.bench.onunit import vehicles_to_json

        return {**asdict(self), "credentials": None if self.credentials is None else str(self.credentials),
                "vehicles": None if self.vehicles is None else vehicles_to_json(self.vehicles)}

    def pipeline_config(self, budget_ms: float | None) -> PipelineConfig:
        """The pipeline these options run (here, or in a unit's container through ``bench --on``)."""
        return PipelineConfig(pace=self.pace, duration_s=self.duration_s, warmup_s=self.warmup_s,
                              max_batch=self.max_batch, max_wait_ms=self.max_wait_ms, queue=self.queue,
                              budget_ms=budget_ms, stall_s=5.0, scaled_decode=self.scaled_decode, aligned=self.aligned)

    @property
    def stream_specs(self) -> tuple[str, ...]:
        return self.sources if len(self.sources) > 1 else self.sources * self.streams


def device_info(runner_device: str = "") -> dict[str, Any]:
    """The machine a benchmark ran on (recorded with it)."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"host": platform.node(), "machine": platform.machine(), "system": platform.system(), "cpu": cpu,
            "cores": os.cpu_count() or 1, "runner_device": runner_device, "python": platform.python_version()}


def budget_for(config: BenchConfig, subject: Subject) -> float | None:
    if config.budget_ms is not None:
        return config.budget_ms
    if subject.target:
        from toolchain.targets.profile import load_target

        try:
            return load_target(subject.target).latency_budget_ms
        except Exception:  # noqa: BLE001 - a target profile that is gone: fall back to one frame interval
            return None
    return None


def run_bench(workspace: Workspace, config: BenchConfig) -> dict[str, Any]:
    """Benchmark one artifact; returns the JSON report (and records it unless ``config.record`` is off)."""
    subject = resolve_subject(workspace, config.artifact)
    runner_name = subject.default_runner() if config.runner == "auto" else config.runner
    require_runner_available(runner_name)
    # The camera URLs as opened: credentials from the file applied by camera name (as serve does), never printed.
    sources = [] if config.pure else open_cameras(config.stream_specs, config.credentials, fps=config.fps,
                                                  loop=config.loop)
    runner = subject.make_runner(workspace, runner_name, threads=config.threads)
    budget = budget_for(config, subject)
    roi = Roi.parse(config.roi) if config.roi else None
    preprocess = Preprocessor(subject.preprocess_config(roi))
    vehicles = config.vehicles is not None
    with runner:
        if config.pure:
            report = _pure_report(config, subject, runner, budget)
        elif config.vehicles is not None:  # the stages serve --line runs, on the same threads and batching
            names = [camera_name(spec, i)[0] for i, spec in enumerate(config.stream_specs)]
            streams, ledger = make_vehicle_pipeline(names, config.vehicles, preprocess)
            pipeline = Pipeline(sources, runner, preprocess, subject.classes, NullSink(), config.pipeline_config(budget),
                                vehicles=streams, ledger=ledger)
            result = pipeline.run()
            report = stream_report(result, vehicles=True, counted=sum(ledger.counts.values()))
        else:
            pipeline = Pipeline(sources, runner, preprocess, subject.classes, NullSink(), config.pipeline_config(budget))
            result = pipeline.run()
            report = stream_report(result)
    report = {"artifact": subject.ref, "artifact_id": subject.record.id if subject.record else None,
              "artifact_kind": subject.kind, "target": subject.target, "runner": runner_name,
              "size_mb": round(subject.size_bytes / 1e6, 3), "accuracy": subject.accuracy,
              "device": device_info(runner.device), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "config": config.to_json(), **report}
    plots: dict[str, Path] = {}
    if not config.pure:
        try:
            plots = plots_from_arrays(frame_arrays(result, vehicles=vehicles), report, config.plots_dir)
        except MissingEnvironmentError as exc:  # a GPU box without matplotlib still gets the numbers
            report["plots_error"] = str(exc)
    report["plots"] = {name: str(path) for name, path in plots.items()}
    if config.record:
        report["benchmark"], _ = record_benchmark(workspace, subject, report, plots, config.plots_dir)
    return report


def record_benchmark(workspace: Workspace, subject: Subject, report: dict[str, Any], plots: dict[str, Path],
                     plots_dir: str | None) -> tuple[str, dict[str, str]]:
    """Commit ``report`` as a ``benchmark`` linked to the artifact, its plots as blobs; ``(record id, blobs)``."""
    benchmark, blobs = _record(workspace, subject, report, plots)
    if plots and not plots_dir:  # the drawn copies were temporary: point at the stored ones
        report["plots"] = {name: str(workspace.blobs.path(sha)) for name, sha in blobs.items()}
        shutil.rmtree(next(iter(plots.values())).parent, ignore_errors=True)
    return benchmark, blobs


def _pure_report(config: BenchConfig, subject: Subject, runner: Any, budget: float | None) -> dict[str, Any]:
    size = subject.input_size
    rng = np.random.default_rng(0)
    if subject.layout == "uint8-nhwc":
        feed = rng.integers(0, 256, (config.batch, size, size, 3), dtype=np.uint8)
    else:
        feed = rng.standard_normal((config.batch, 3, size, size)).astype(np.float32)
    times, wall, cpu = pure_inference(runner, feed, duration_s=config.duration_s, warmup_s=config.warmup_s)
    ms = times * 1e3
    summary = summarize(ms)
    budget_ms = budget or 1000.0 / 30
    realtime = bool(summary["p99"] is not None and summary["p99"] <= budget_ms)
    fps = config.batch * len(times) / wall
    return {
        "mode": "pure", "pace": "max", "streams": 0, "batch_size": config.batch,
        "e2e_ms": summary, "infer_ms": summary, "stage_ms": {"infer": summary},
        "fps": round(fps, 2), "frames": int(config.batch * len(times)), "dropped": 0,
        "deadline_misses": int(np.count_nonzero(ms > budget_ms)), "budget_ms": round(budget_ms, 3),
        "cpu_percent": round(100 * cpu / wall, 1), "cpu_utilisation": round(cpu / wall / (os.cpu_count() or 1), 3),
        "realtime": realtime,
        "verdict": (f"inference alone (batch {config.batch}, fixed input, no decode): p99 {summary['p99']:.2f} ms, "
                    f"{fps:.0f} frames/s; within the {budget_ms:g} ms budget: {'yes' if realtime else 'no'}"),
    }


def plots_from_arrays(frames: dict[str, Any], report: dict[str, Any], plots_dir: str | None) -> dict[str, Path]:
    """The latency histograms and the timeline of one run, from :func:`toolchain.bench.report.frame_arrays`."""
    from toolchain.bench.plots import plot_histograms, plot_timeline

    if not frames["e2e_ms"]:
        return {}
    out = Path(plots_dir) if plots_dir else Path(tempfile.mkdtemp(prefix="toolchain-bench-"))
    stage_ms = {"e2e": np.array(frames["e2e_ms"])}
    stage_ms.update({s: np.array(v) for s, v in frames["stage_ms"].items()})
    title = f"{report['artifact']} ({report['runner']}), {report['streams']} stream(s), pace {report['pace']}"
    hist = plot_histograms(stage_ms, out / "latency_histograms.png", title=title, budget_ms=frames["budget_ms"])
    timeline = plot_timeline(np.array(frames["arrival_s"]), stage_ms["e2e"], np.array(frames["stream"]),
                             [tuple(d) for d in frames["drops"]], frames["stream_names"], out / "timeline.png",
                             title=title, budget_ms=frames["budget_ms"])
    return {"latency_histograms": hist, "timeline": timeline}


def _record(workspace: Workspace, subject: Subject, report: dict[str, Any], plots: dict[str, Path]) -> tuple[str, dict[str, str]]:
    blobs = {name: workspace.blobs.put_file(path) for name, path in plots.items()}
    body = {k: v for k, v in report.items() if k not in ("plots", "benchmark")}
    body["plots"] = blobs
    name = f"{(subject.record.name if subject.record and subject.record.name else subject.ref.split('@')[0])}-bench"
    record, _, _ = workspace.registry.commit(NewRecord(
        kind="benchmark", name=name, body=body,
        links=((subject.record.id, "artifact"),) if subject.record else (),
        blobs=tuple((sha, f"plot:{n}") for n, sha in blobs.items()), version=True,
    ))
    return record.id, blobs


def compare(workspace: Workspace, configs: list[BenchConfig]) -> dict[str, Any]:
    """One table across artifacts: size, test accuracy, inference ms (pure, batch 1), e2e p99 and fps (stream)."""
    rows, runs = [], []
    for config in configs:
        pure = run_bench(workspace, replace(config, pure=True, batch=1, record=False, credentials=None, vehicles=None,
                                            duration_s=min(config.duration_s, 3.0),
                                            warmup_s=min(config.warmup_s, 1.0)))
        stream = run_bench(workspace, config) if config.sources else None
        runs.append({"pure": pure, "stream": stream})
        rows.append({
            "artifact": pure["artifact"], "kind": pure["artifact_kind"], "runner": pure["runner"], "size_mb": pure["size_mb"],
            "accuracy": pure["accuracy"], "infer_ms_p50": pure["infer_ms"]["p50"],
            "e2e_ms_p99": stream["e2e_ms"]["p99"] if stream else None, "fps": stream["fps"] if stream else pure["fps"],
            "realtime": stream["realtime"] if stream else pure["realtime"],
            "benchmark": stream.get("benchmark") if stream else None,
        })
    return {"compare": rows, "runs": runs}
