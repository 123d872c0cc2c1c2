"""DeepStream hand-off of the counting lines: config_nvdsanalytics.txt written next to the nvinfer config, read back
and checked against nvdsanalytics' documented groups and keys, with direction vectors that cross each line the
way it is counted."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.handoff.models import register_classifier
from tests.helpers import run_main
from toolchain.artifacts import Artifact
from toolchain.errors import BadInputError, UsageError
from toolchain.handoff import DeepStreamOptions, HandoffConfig, handoff
from toolchain.handoff.nvdsanalytics import (
    ANALYTICS_FILE,
    GROUPS,
    AnalyticsOptions,
    check_analytics_config,
    direction_vector,
    read_analytics,
)
from toolchain.runtime.geometry import Line
from toolchain.workspace import Workspace


def _lines(*lines: str, frame_size: str | None = "320x240", streams: tuple[str, ...] = (),
           **kwargs: str) -> AnalyticsOptions | None:
    return AnalyticsOptions.parse(lines, frame_size=frame_size, streams=streams, **kwargs)


def _handoff(ws: Workspace, onnx: Artifact, out: Path, analytics: AnalyticsOptions | None, **options: object) -> object:
    return handoff(ws, HandoffConfig(ref=onnx.ref, format="deepstream", out=out, target="jetson-orin-nano",
                                     deepstream=DeepStreamOptions(analytics=analytics, **options)))  # type: ignore[arg-type]


def _entries(path: Path) -> dict[str, dict[str, list[int]]]:
    groups, problems = read_analytics(path.read_text())
    assert problems == []
    return {name: {k[len("line-crossing-"):]: v for k, v in values.items() if k.startswith("line-crossing-")}
            for name, values in groups.items() if name.startswith("line-crossing-stream-")}


def test_one_stream_secondary_classifier_on_a_tracker(workspace: Workspace, onnx: Artifact, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    result = _handoff(workspace, onnx, out, _lines("UP=0,150,235,150:up"), mode="secondary",
                      operate_on_class_ids=(0, 2))
    assert {p.name for p in out.iterdir()} == {"config_infer_secondary.txt", ANALYTICS_FILE, "labels.txt", "model.onnx",
                                               "handoff.json"}
    text = (out / ANALYTICS_FILE).read_text()
    groups, problems = read_analytics(text)
    assert problems == []
    assert groups["property"] == {"enable": True, "config-width": 320, "config-height": 240, "osd-mode": 2}
    # The real clip's line: y = 150 from x = 0 to 235, counted up; the vector goes from below the line to above it.
    assert groups["line-crossing-stream-0"] == {"enable": True, "line-crossing-UP-up": [118, 160, 118, 140, 0, 150, 235, 150],
                                                "class-id": [0, 2], "extended": False, "mode": "loose"}
    assert "KNOWN DIFFERENCE" in text and "bottom centre" in text  # --anchor centre (the unit's default)
    report = result.checks["nvdsanalytics"]  # type: ignore[attr-defined]
    assert report["documented"] and "DS_plugin_gst-nvdsanalytics" in report["sources"]
    assert report["entries"] == [{"stream": 0, "camera": "*", "line": "UP", "label": "UP-up", "direction": "up",
                                  "vector": [118, 160, 118, 140], "segment": [0, 150, 235, 150], "crosses": True}]
    assert report["anchor"] == {"unit": "centre", "nvdsanalytics": "bottom", "same": False}
    assert any(d.startswith("anchor:") for d in report["known_differences"])
    # The chain the classifier belongs in: PGIE detector -> nvtracker -> this SGIE -> nvdsanalytics.
    pipeline = result.pipeline  # type: ignore[attr-defined]
    assert [step.split(" ")[0] for step in pipeline] == ["nvstreammux", "nvinfer:", "nvtracker", "nvinfer",
                                                         "nvdsanalytics", "your"]
    assert "PGIE" in pipeline[1] and "config_infer_secondary.txt" in pipeline[3] and ANALYTICS_FILE in pipeline[4]
    saved = json.loads((out / "handoff.json").read_text())
    assert ANALYTICS_FILE in saved["files"] and saved["pipeline"] == list(pipeline)
    assert saved["checks"]["nvdsanalytics"]["entries"][0]["label"] == "UP-up"
    # With --anchor bottom the unit judges the point nvdsanalytics judges: no difference to declare.
    again = _handoff(workspace, onnx, out, _lines("UP=0,150,235,150:up", anchor="bottom", mode="strict"))
    assert again.checks["nvdsanalytics"]["anchor"]["same"]  # type: ignore[attr-defined]
    text = (out / ANALYTICS_FILE).read_text()
    assert "KNOWN DIFFERENCE" not in text and "mode=strict" in text and "class-id=-1" in text
    assert any("--mode secondary" in note for note in again.notes)  # type: ignore[attr-defined]  # primary: no class


def test_two_streams_get_their_own_lines_and_the_shared_ones(tmp_path: Path) -> None:
    options = _lines("cam-a/NORTH=0,100,320,100:up", "cam-b/EAST=200,0,200,240:right", "ALL=10,200,300,210:down")
    assert options is not None and options.stream_ids() == {"cam-a": 0, "cam-b": 1}  # order of first appearance
    from toolchain.handoff.nvdsanalytics import write_analytics

    written = write_analytics(tmp_path, options, class_ids=(), source="test")
    entries = _entries(written.path)
    assert {name: sorted(e) for name, e in entries.items()} == {
        "line-crossing-stream-0": ["ALL-down", "NORTH-up"], "line-crossing-stream-1": ["ALL-down", "EAST-right"]}
    assert entries["line-crossing-stream-0"]["ALL-down"] == entries["line-crossing-stream-1"]["ALL-down"]
    assert entries["line-crossing-stream-1"]["EAST-right"][4:] == [200, 0, 200, 240]
    assert written.report["streams"] == {"cam-a": 0, "cam-b": 1}
    assert {(e["stream"], e["camera"], e["line"]) for e in written.report["entries"]} == {
        (0, "cam-a", "NORTH"), (0, "cam-a", "ALL"), (1, "cam-b", "EAST"), (1, "cam-b", "ALL")}
    # --stream maps cameras to nvstreammux's source indices; a camera left out is an error, not a guess.
    mapped = _lines("cam-a/NORTH=0,100,320,100:up", "cam-b/EAST=200,0,200,240:right", streams=("cam-b=0", "cam-a=3"))
    assert mapped is not None
    assert sorted(_entries(write_analytics(tmp_path, mapped, class_ids=(), source="test").path)) == [
        "line-crossing-stream-0", "line-crossing-stream-3"]
    for streams, message in ((("cam-a=0",), "cam-b have lines but no --stream"), (("cam-a=0", "cam-b=0"), "one stream"),
                             (("cam-a",), "not CAMERA=N"), (("cam-a=-1", "cam-b=1"), "N >= 0")):
        with pytest.raises(UsageError, match=message):
            _lines("cam-a/NORTH=0,100,320,100:up", "cam-b/EAST=200,0,200,240:right", streams=streams)
    with pytest.raises(UsageError, match="given twice"):
        _lines("A=0,10,100,10", "cam/A=0,20,100,20")


def test_a_line_counted_both_ways_gets_one_entry_per_direction(tmp_path: Path) -> None:
    from toolchain.handoff.nvdsanalytics import write_analytics

    options = _lines("GANTRY=20,130,300,110", "cam/SLIP=150,20,170,220")
    assert options is not None
    entries = _entries(write_analytics(tmp_path, options, class_ids=(), source="test").path)["line-crossing-stream-0"]
    assert sorted(entries) == ["GANTRY-down", "GANTRY-up", "SLIP-left", "SLIP-right"]
    for name, (first, second) in {"GANTRY": ("up", "down"), "SLIP": ("left", "right")}.items():
        a, b = entries[f"{name}-{first}"], entries[f"{name}-{second}"]
        assert a[4:] == b[4:] and a[:4] == b[2:4] + b[:2]  # the same line, opposite vectors
    up = entries["GANTRY-up"]
    assert up[1] > up[3]  # y grows downwards: "up" goes from a larger y to a smaller one
    left = entries["SLIP-left"]
    assert left[0] > left[2]


def test_direction_vectors_cross_their_line_inside_the_frame() -> None:
    rng = random.Random(7)
    for _ in range(300):
        width, height = rng.choice([(320, 240), (1920, 1080), (64, 48)])
        x1, y1, x2, y2 = (rng.randint(0, width), rng.randint(0, height), rng.randint(0, width), rng.randint(0, height))
        if abs(x2 - x1) + abs(y2 - y1) < 2:
            continue
        line = Line(name="L", x1=x1, y1=y1, x2=x2, y2=y2)
        for direction in line.directions:
            try:
                vector = direction_vector(line, direction, (width, height))
            except UsageError:
                assert min(x1, x2) == max(x1, x2) in (0, width) or min(y1, y2) == max(y1, y2) in (0, height)
                continue
            assert all(0 <= v <= width for v in vector[::2]) and all(0 <= v <= height for v in vector[1::2])
            sx, sy, ex, ey = vector
            assert line.side(sx, sy) * line.side(ex, ey) < 0 and line.direction_to(line.side(ex, ey)) == direction
    with pytest.raises(UsageError, match="along the frame's edge"):
        _lines("EDGE=0,240,320,240:up")


def test_the_checker_refuses_undocumented_keys_and_wrong_values(tmp_path: Path) -> None:
    from toolchain.handoff.nvdsanalytics import write_analytics

    options = _lines("UP=0,150,235,150:up")
    assert options is not None
    path = write_analytics(tmp_path, options, class_ids=(), source="test").path
    good = path.read_text()
    entry = "line-crossing-UP-up=118;160;118;140;0;150;235;150"
    cases = {
        "class-id=-1": ("class-ids=-1", "class-ids: not a documented nvdsanalytics key"),
        entry: (entry.replace("crossing", "crosing"), "line-crosing-UP-up: not a documented"),
        "[line-crossing-stream-0]": ("[line-crossing-streams-0]", "not a documented nvdsanalytics group"),
        "osd-mode=2": ("osd-mode=3", "not one of 0, 1, 2"),
        "\nmode=loose": ("\nmode=lenient", "not one of loose, balanced, strict"),
        "\nextended=0\n": ("\nextended=1\n", "extended must be 0"),
        "config-width=320": ("config-width=wide", "not a non-negative integer"),
        "enable=1\nline": ("enable=yes\nline", "not a key-file boolean"),
        entry + "\n": (entry.replace(";0;150;", ";0;") + "\n", "needs 8 integers"),
    }
    for original, (broken, message) in cases.items():
        assert original in good, original
        path.write_text(good.replace(original, broken, 1))
        with pytest.raises(BadInputError, match=message):
            check_analytics_config(path)
    # A vector that crosses the other way, or misses the segment, does not count what the label says.
    for vector, message in (("118;140;118;160", "goes down across the line, not up"),
                            ("300;160;300;140", "does not cross the segment"),
                            ("118;160;118;155", "from one side of the line to the other")):
        path.write_text(good.replace("118;160;118;140", vector))
        with pytest.raises(BadInputError, match=message):
            check_analytics_config(path)
    path.write_text(good.replace("extended=0\n", ""))  # absent: nvdsanalytics takes 1, the infinite line
    with pytest.raises(BadInputError, match="extended must be 0"):
        check_analytics_config(path)
    path.write_text(good)
    assert check_analytics_config(path)["entries"][0]["label"] == "UP-up"
    # The expected entries are compared too: the file must carry exactly the lines asked for.
    other = _lines("UP=0,100,235,100:up")
    assert other is not None
    with pytest.raises(BadInputError, match="not the lines asked for"):
        check_analytics_config(path, expected=other.crossings())
    assert set(GROUPS["line-crossing-stream-"].keys) == {"enable", "class-id", "extended", "mode"}


def test_coordinates_outside_the_frame_are_refused(tmp_path: Path) -> None:
    for line in ("UP=0,150,400,150:up", "UP=0,-5,235,150", "cam/UP=0,150,235,250"):
        with pytest.raises(UsageError, match="outside the 320x240 frame"):
            _lines(line)
    assert _lines("UP=0,150,320,150:up") is not None  # the frame's right edge is inside
    from toolchain.handoff.nvdsanalytics import write_analytics

    options = _lines("UP=0,150,235,150:up")
    assert options is not None
    path = write_analytics(tmp_path, options, class_ids=(), source="test").path
    good = path.read_text()
    for original, broken, message in (("0;150;235;150", "0;150;335;150", "leaves the 320x240 frame"),
                                      ("0;150;235;150", "0;150;-235;150", "negative values"),
                                      ("config-height=240", "config-height=120", "leaves the 320x120 frame")):
        path.write_text(good.replace(original, broken))
        with pytest.raises(BadInputError, match=message):
            check_analytics_config(path)


def test_lines_need_a_frame_size_and_a_deepstream_format(workspace: Workspace, onnx: Artifact, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--line needs --frame-size WxH"):
        _lines("UP=0,150,235,150:up", frame_size=None)
    for bad in ("320", "320x", "wide"):
        with pytest.raises(UsageError, match="is not WxH"):
            _lines("UP=0,150,235,150:up", frame_size=bad)
    with pytest.raises(UsageError, match="give at least one --line"):
        _lines(frame_size="320x240")
    assert _lines(frame_size=None) is None
    with pytest.raises(UsageError, match="--format deepstream"):
        HandoffConfig(ref=onnx.ref, format="triton", out=tmp_path / "r",
                      deepstream=DeepStreamOptions(analytics=_lines("UP=0,150,235,150:up")))


def test_cli_json_lists_the_analytics_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ws = tmp_path / "ws"
    with Workspace(ws) as workspace:
        register_classifier(workspace, tmp_path, name="highway-edgenet-onnx")
    out = tmp_path / "ds"
    base = ["--workspace", ws, "handoff", "highway-edgenet-onnx", "--format", "deepstream", "--target", "jetson-orin-nano",
            "--out", out, "--mode", "secondary"]
    result = run_main([*base, "--json", "--line", "cam-a/UP=0,150,235,150:up", "--line", "cam-b/ALL=0,100,320,100",
                       "--frame-size", "320x240", "--stream", "cam-a=1", "--stream", "cam-b=0"], capsys)
    assert result.code == 0, result.err
    doc = result.json()
    assert str(out / ANALYTICS_FILE) in doc["files"] and str(out / "config_infer_secondary.txt") in doc["files"]
    report = doc["checks"]["nvdsanalytics"]
    assert report["documented"] is True and report["streams"] == {"cam-a": 1, "cam-b": 0}
    assert sorted((e["stream"], e["label"]) for e in report["entries"]) == [(0, "ALL-down"), (0, "ALL-up"), (1, "UP-up")]
    assert any("nvtracker" in step for step in doc["pipeline"])
    human = run_main([*base, "--line", "UP=0,150,235,150:up", "--frame-size", "320x240"], capsys)
    assert human.code == 0, human.err
    assert "nvdsanalytics: 1 line crossing(s)" in human.err and "pipeline: nvstreammux" in human.err
    missing = run_main([*base, "--line", "UP=0,150,235,150:up"], capsys)
    assert missing.code == 2 and "--frame-size" in missing.err
    outside = run_main([*base, "--line", "UP=0,150,400,150:up", "--frame-size", "320x240"], capsys)
    assert outside.code == 2 and "outside the 320x240 frame" in outside.err
    help_text = run_main(["handoff", "--help"], capsys).out
    assert "config_nvdsanalytics.txt" in help_text and "--frame-size" in help_text
