"""``bench --line``: the vehicle pipeline timed stage by stage, with crossings, vehicles/s and event latency."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from tests.helpers import run_main
from tests.onnx_fixtures import register_tiny_onnx
from toolchain.bench.onunit import vehicles_from_json, vehicles_to_json
from toolchain.bench.run import BenchConfig
from toolchain.errors import UsageError
from toolchain.runtime.geometry import Line
from toolchain.runtime.vehicles import VEHICLE_STAGES, VehicleConfig
from toolchain.workspace import Workspace

LINE = "mid=160,0,160,192"
PERCENTILE_KEYS = ("p50", "p90", "p95", "p99", "max")


@pytest.fixture(scope="module")
def road(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6 s synthetic road clip (320x192, 15 fps) with vehicles crossing LINE."""
    pytest.importorskip("av")
    from toolchain.synth.video import VideoConfig, crossing_truth, write_video

    config = VideoConfig(width=320, height=192, fps=15, seconds=6, seed=3)
    assert crossing_truth(config, [Line.parse(LINE)]), "the clip should hold crossings of LINE"
    clip = tmp_path_factory.mktemp("road") / "road.mp4"
    write_video(clip, config)
    return clip


def test_bench_with_a_line_reports_the_vehicle_stages_crossings_and_event_latency(
        tmp_path: Path, road: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("cv2")
    pytest.importorskip("onnx")
    clip = road
    ws_root = tmp_path / "ws"
    with Workspace(ws_root) as ws:
        artifact = register_tiny_onnx(ws, tmp_path)
    # pace max, no warm-up: the whole clip is measured, as fast as it goes
    result = run_main(["--workspace", ws_root, "--json", "bench", "tiny-onnx@v1", "--source", clip, "--line", LINE,
                       "--pace", "max", "--warmup", "0", "--duration", "60", "--plots", tmp_path / "plots"], capsys)
    assert result.code == 0, result.err
    report = result.json()
    assert report["pipeline"] == "vehicles" and report["mode"] == "stream"
    assert tuple(report["stage_ms"]) == VEHICLE_STAGES
    for summary in (*report["stage_ms"].values(), report["e2e_ms"]):
        values = [summary[k] for k in PERCENTILE_KEYS]
        assert all(v is not None and v >= 0 for v in values) and values == sorted(values)
    assert report["stage_ms"]["find"]["p50"] > 0 and report["frames"] == 90
    v = report["vehicles"]
    assert 0 < v["crossings"] <= v["counted"]  # counted also holds the crossings flushed when the clip ended
    assert v["per_second"] == pytest.approx(v["crossings"] / report["measured_seconds"], rel=0.01)
    assert set(v["by_line"]) == {"mid"} and set(v["by_line"]["mid"]) <= {"left", "right"}
    assert sum(n for d in v["by_line"]["mid"].values() for n in d.values()) == v["crossings"]
    latency = v["event_latency_ms"]
    assert latency["count"] == v["crossings"] and 0 <= latency["p50"] <= latency["p95"] <= latency["p99"]
    assert v["crops"]["classified"] > 0 and v["crops"]["per_second"] > 0
    assert v["classify_batches"]["count"] > 0 and v["classify_batches"]["ms"]["p50"] > 0
    assert v["boxes_per_frame"] > 0 and v["tracks_per_frame"] > 0
    assert "crossings, event latency p99" in report["verdict"]
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {"latency_histograms.png", "timeline.png"}
    with Workspace(ws_root) as ws:  # recorded like any benchmark, with the lines it counted on
        record = ws.registry.get(report["benchmark"])
        assert record is not None and record.kind == "benchmark"
        assert [(link.input_id, link.role) for link in ws.registry.links_from(record.id)] == [(artifact.id, "artifact")]
        assert record.body["config"]["vehicles"]["lines"] == [LINE]
        assert record.body["vehicles"]["crossings"] == v["crossings"]
    table = run_main(["--workspace", ws_root, "bench", "tiny-onnx@v1", "--source", clip, "--line", LINE, "--pace", "max",
                      "--warmup", "0", "--duration", "60", "--no-record", "--plots", tmp_path / "plots"], capsys)
    assert table.code == 0, table.err
    text = " ".join(table.err.split())  # the table and lines go to stderr, wrapped to the terminal
    assert all(f" {stage} " in text for stage in VEHICLE_STAGES)
    assert "vehicles/s" in text and "event latency p50" in text and "line mid:" in text


def test_bench_without_lines_stays_the_frame_pipeline(tmp_path: Path, road: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnx")
    clip = road
    with Workspace(tmp_path / "ws") as ws:
        register_tiny_onnx(ws, tmp_path)
    report = run_main(["--workspace", tmp_path / "ws", "--json", "bench", "tiny-onnx@v1", "--source", clip, "--pace",
                       "max", "--warmup", "0", "--duration", "60", "--no-record"], capsys).json()
    assert set(report["stage_ms"]) == {"decode", "preprocess", "batch", "infer", "postprocess", "sink"}
    assert "vehicles" not in report and "pipeline" not in report and report["config"]["vehicles"] is None


@pytest.mark.parametrize(("argv", "message"), [
    (["--line", LINE, "--pure"], "--pure"),
    (["--line", LINE, "--roi", "0,0,100,100"], "--roi"),
    (["--detector", "det.onnx"], "--line"),
    (["--line", "other/mid=1,0,1,10"], "other"),
])
def test_bench_refuses_vehicle_options_that_cannot_run(tmp_path: Path, argv: list[str], message: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    result = run_main(["--workspace", tmp_path / "ws", "bench", "m.onnx", "--source", "synthetic", *argv], capsys)
    assert result.code == 2 and message in result.err


def test_the_vehicle_settings_travel_to_a_unit_as_json_and_back() -> None:
    from toolchain.runtime.find import MotionConfig

    config = VehicleConfig(lines=(Line.parse("UP=0,150,235,150:up"),), camera_lines=(("cam1", Line.parse(LINE)),),
                           anchor="bottom", max_classifications=2, motion=MotionConfig(scale_width=160))
    data = vehicles_to_json(config)
    assert data["lines"] == ["UP=0,150,235,150:up"] and data["camera_lines"] == [["cam1", LINE]]
    assert vehicles_from_json(data) == config and vehicles_from_json(None) is None
    assert BenchConfig(artifact="m", sources=("cam1=synthetic",), vehicles=config).to_json()["vehicles"] == data
    assert vehicles_from_json({**data, "motion": None}).motion is None
    with pytest.raises(UsageError, match="cam1"):
        BenchConfig(artifact="m", sources=("synthetic",), vehicles=config)


def test_a_unit_runs_the_vehicle_pipeline_the_request_carries(tmp_path: Path, road: Path) -> None:
    """``bench --on`` inside the runtime image (``toolchain.bench.onunit``), here on a bundle written locally."""
    pytest.importorskip("cv2")
    pytest.importorskip("onnx")
    from tests.serve.fixtures import tiny_build
    from toolchain.bench.onunit import run
    from toolchain.serve.bundle import model_from_registry, write_bundle

    clip = road
    with Workspace(tmp_path / "ws") as ws:
        bundle = write_bundle(model_from_registry(ws, tiny_build(ws, tmp_path)), tmp_path / "bundle")
    config = BenchConfig(artifact="m", sources=(f"gantry={clip}",), pace="max", warmup_s=0.0, duration_s=60.0,
                         vehicles=VehicleConfig(lines=(Line.parse(LINE),)))
    out = run({"bundle": str(bundle), "sources": list(config.stream_specs), "pipeline": asdict(config.pipeline_config(None)),
               "vehicles": vehicles_to_json(config.vehicles)})
    report = out["report"]
    assert report["pipeline"] == "vehicles" and tuple(report["stage_ms"]) == VEHICLE_STAGES
    assert report["vehicles"]["crossings"] > 0 and tuple(out["frames"]["stage_ms"]) == VEHICLE_STAGES
    assert report["stream_states"][0]["name"] == "gantry"
