"""`toolchain bench` end to end: a real ONNX Runtime runner on a tiny ONNX, real H.264 decoding."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import run_main
from tests.runtime.tiny import make_tiny_onnx
from toolchain.artifacts import register_file
from toolchain.workspace import Workspace

pytest.importorskip("onnx")
pytest.importorskip("av")

PERCENTILE_KEYS = ("p50", "p90", "p95", "p99", "max")


@pytest.fixture()
def clip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    out = tmp_path / "road.mp4"
    result = run_main(["--json", "synth", "video", out, "--seconds", "3", "--fps", "30", "--size", "160x96"], capsys)
    assert result.code == 0, result.err
    assert result.json()["frames"] == 90 and out.is_file()
    return out


def _check_percentiles(summary: dict) -> None:
    values = [summary[k] for k in PERCENTILE_KEYS]
    assert all(v is not None and v >= 0 for v in values) and values == sorted(values)


def test_bench_json_on_a_video_with_a_registered_onnx(tmp_path: Path, clip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ws_root = tmp_path / "ws"
    onnx_path = make_tiny_onnx(tmp_path / "tiny.onnx", size=16)
    with Workspace(ws_root) as ws:
        artifact = register_file(ws, onnx_path, name="tiny-onnx", type="onnx", body={
            "input": "float-nchw", "metadata": {"classes": '["car", "truck"]', "input_size": "16", "mean": "[0.5, 0.5, 0.5]",
                                                 "std": "[0.25, 0.25, 0.25]"}})
    plots = tmp_path / "plots"
    result = run_main(["--workspace", ws_root, "bench", "tiny-onnx@v1", "--source", clip, "--duration", "1.5",
                       "--warmup", "0.3", "--budget-ms", "500", "--plots", plots, "--json"], capsys)
    assert result.code == 0, result.err
    report = result.json()
    for key in ("e2e_ms", "infer_ms"):
        _check_percentiles(report[key])
    assert set(report["stage_ms"]) == {"decode", "preprocess", "batch", "infer", "postprocess", "sink"}
    for summary in report["stage_ms"].values():
        _check_percentiles(summary)
    assert report["streams"] == 1 and report["runner"] == "onnxruntime" and report["pace"] == "realtime"
    assert 30 <= report["frames"] <= 50 and report["fps"] == pytest.approx(30, rel=0.2)
    assert report["dropped"] == 0 and report["deadline_misses"] == 0 and report["realtime"] is True
    assert report["verdict"].startswith("real-time yes for 1 stream at 30 fps")
    assert report["device"]["cores"] >= 1 and report["device"]["runner_device"] == "cpu"
    assert {p.name for p in plots.iterdir()} == {"latency_histograms.png", "timeline.png"}
    assert (plots / "timeline.png").read_bytes()[:4] == b"\x89PNG"
    with Workspace(ws_root) as ws:
        record = ws.registry.get(report["benchmark"])
        assert record is not None and record.kind == "benchmark"
        assert [(l.input_id, l.role) for l in ws.registry.links_from(record.id)] == [(artifact.id, "artifact")]
        assert record.body["device"]["host"] and set(record.body["plots"]) == {"latency_histograms", "timeline"}
        assert all(ws.blobs.has(sha) for sha in record.body["plots"].values())


def test_bench_several_streams_pure_and_compare(tmp_path: Path, clip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ws = tmp_path / "ws"
    a = make_tiny_onnx(tmp_path / "a.onnx", size=16)
    b = make_tiny_onnx(tmp_path / "b.onnx", size=16, uint8=True)
    result = run_main(["--workspace", ws, "--json", "bench", a, "--source", clip, "--streams", "2", "--pace", "max",
                       "--duration", "1", "--warmup", "0.2", "--loop", "--no-record"], capsys)
    assert result.code == 0, result.err
    report = result.json()
    assert report["streams"] == 2 and len(report["stream_states"]) == 2 and report["pace"] == "max"
    assert report["fps"] > 60 and report["dropped"] == 0 and report["batch"]["max"] <= 2
    pure = run_main(["--workspace", ws, "--json", "bench", b, "--pure", "--batch", "4", "--duration", "0.3",
                     "--warmup", "0.1", "--no-record"], capsys).json()
    assert pure["mode"] == "pure" and pure["stage_ms"].keys() == {"infer"} and pure["batch_size"] == 4
    _check_percentiles(pure["infer_ms"])
    table = run_main(["--workspace", ws, "bench", "--compare", a, b, "--source", clip, "--duration", "0.5",
                      "--warmup", "0.1", "--no-record"], capsys)
    assert table.code == 0, table.err
    assert "bench --compare" in table.err and "a.onnx" in table.err and "b.onnx" in table.err
    rows = run_main(["--workspace", ws, "--json", "bench", "--compare", a, b, "--pure", "--duration", "0.2",
                     "--warmup", "0.1", "--no-record"], capsys).json()["compare"]
    assert [r["artifact"] for r in rows] == ["a.onnx", "b.onnx"] and all(r["infer_ms_p50"] > 0 for r in rows)


def test_bench_errors_map_to_exit_codes(tmp_path: Path, clip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ws = tmp_path / "ws"
    onnx_path = make_tiny_onnx(tmp_path / "m.onnx")
    no_source = run_main(["--workspace", ws, "--json", "bench", onnx_path], capsys)
    assert no_source.code == 2 and "--source" in no_source.json()["error"]["message"]
    missing = run_main(["--workspace", ws, "bench", "nothing@v1", "--source", clip], capsys)
    assert missing.code == 4
    torch_on_onnx = run_main(["--workspace", ws, "bench", onnx_path, "--source", clip, "--runner", "torch"], capsys)
    assert torch_on_onnx.code == 2 and "registered model" in torch_on_onnx.err
    two = run_main(["--workspace", ws, "bench", onnx_path, onnx_path, "--source", clip], capsys)
    assert two.code == 2 and "--compare" in two.err


def test_bench_on_a_unit_of_a_fleet_uses_its_engine_url(tmp_path) -> None:  # noqa: ANN001
    import pytest

    from toolchain.cli.bench import _where
    from toolchain.errors import UsageError

    fleet = tmp_path / "fleet.toml"
    fleet.write_text('[[unit]]\nname = "u1"\nurl = "unix:///tmp/u1/docker.sock"\ntarget = "x86-64-cpu"\n'
                     'cameras = ["synthetic"]\n')
    assert _where(None, "u1", fleet) == "unix:///tmp/u1/docker.sock"
    assert _where("unix:///x.sock", None, None) == "unix:///x.sock" and _where(None, None, None) is None
    for on, unit, path, message in (("unix:///x.sock", "u1", fleet, "not both"), (None, "u1", None, "needs --fleet"),
                                    (None, None, fleet, "pass --unit")):
        with pytest.raises(UsageError, match=message):
            _where(on, unit, path)
