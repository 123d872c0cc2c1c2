"""``toolchain count`` on synthetic clips whose every crossing is known, and ``serve`` counting the same."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.serve.fixtures import tiny_build
from toolchain.evaluate.counts import read_truth_csv
from toolchain.runtime.vehicles import VehicleConfig
from toolchain.serve.bundle import model_from_registry
from toolchain.serve.service import ServeConfig, serve
from toolchain.workspace import Workspace

pytest.importorskip("cv2")
ROOT = Path(__file__).resolve().parents[2]
ACROSS = "mid=320,0,320,352"  # a vertical line across every lane
TOP = "top=200,0,200,176:left"  # the upper carriageway only, one direction


def _tc(*args: object, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "toolchain", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=cwd)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("count")
    with Workspace(root / "ws") as ws:
        build = tiny_build(ws, root)
    return root / "ws", build


def _clip(folder: Path, seed: int, seconds: float, *lines: str, fps: int = 15) -> tuple[Path, Path]:
    clip, truth = folder / f"road-{seed}.mp4", folder / f"truth-{seed}.csv"
    args = [a for line in lines for a in ("--line", line)]
    run = _tc("synth", "video", clip, "--size", "640x352", "--fps", fps, "--seconds", seconds, "--seed", seed, *args,
              "--truth", truth)
    assert run.returncode == 0, run.stderr
    return clip, truth


def test_every_crossing_of_a_two_lanes_each_way_road_is_counted_once_per_direction(
        workspace: tuple[Path, str], tmp_path: Path) -> None:
    ws, build = workspace
    clip, truth = _clip(tmp_path, 1, 12, ACROSS, TOP)
    out = tmp_path / "crossings.csv"
    run = _tc("--workspace", ws, "--json", "count", build[:12], "--source", clip, "--line", ACROSS, "--line", TOP,
              "--truth", truth, "--tolerance", "2", "--out", out, "--interval", "4s")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    expected = read_truth_csv(truth)
    assert len(expected) > 15 and {r.line for r in expected} == {"mid", "top"}
    figures = report["score"]["all"]
    # every crossing found, none counted twice, none made up, each at its frame (within 2)
    assert figures["truth"] == figures["counted"] == figures["matched"] == len(expected)
    got = Counter((c["line"], c["direction"]) for c in report["crossings"])
    assert got == Counter((r.line, r.direction) for r in expected)
    assert {c["direction"] for c in report["crossings"] if c["line"] == "top"} == {"left"}
    assert len({(c["line"], c["track"]) for c in report["crossings"]}) == len(report["crossings"])
    assert len(figures["intervals"]) == 3
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["line"] for r in rows] == [c["line"] for c in report["crossings"]]
    assert set(rows[0]) == {"line", "frame", "class", "direction", "score", "track", "time_s"}


@pytest.mark.parametrize(("seed", "lanes"), [(0, 3), (5, 4)], ids=["3-lanes-each-way", "4-lanes-each-way"])
def test_denser_roads_count_every_vehicle_once_per_direction(workspace: tuple[Path, str], tmp_path: Path, seed: int,
                                                             lanes: int) -> None:
    """Vehicles side by side in adjacent lanes touch in the picture once H.264 has blurred the gap between them;
    the motion finder's waist split parts them, so each is counted once, in its direction. On the 4-lane road a
    stack of three trucks side by side is parted a few frames late: 2 of its crossings fall outside the
    2-frame tolerance, though none is missed or counted twice."""
    from toolchain.runtime.scene import SceneRenderer

    assert SceneRenderer(640, 352, 15, seed=seed).lanes == 2 * lanes
    ws, build = workspace
    clip, truth = _clip(tmp_path, seed, 12, ACROSS)
    run = _tc("--workspace", ws, "--json", "count", build[:12], "--source", clip, "--line", ACROSS, "--truth", truth,
              "--tolerance", "2")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    figures = report["score"]["all"]
    expected = read_truth_csv(truth)
    assert Counter(c["direction"] for c in report["crossings"]) == Counter(r.direction for r in expected)
    assert len({c["track"] for c in report["crossings"]}) == len(report["crossings"])  # none counted twice
    assert figures["matched"] >= (len(expected) if lanes == 3 else len(expected) - 2), figures


def test_finding_on_every_second_frame_of_a_30_fps_road_still_counts_each_crossing_once(
        workspace: tuple[Path, str], tmp_path: Path) -> None:
    """--find-every 2 on a 30 fps camera: motion is found 15 times a second; on two lanes each way every
    crossing is still counted once, in its direction, within the 2-frame tolerance (a crossing is judged on the
    first found frame past the line: up to 1 frame late)."""
    ws, build = workspace
    clip, truth = _clip(tmp_path, 1, 12, ACROSS, fps=30)
    run = _tc("--workspace", ws, "--json", "count", build[:12], "--source", clip, "--line", ACROSS, "--truth", truth,
              "--tolerance", "2", "--find-every", "2")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    figures = report["score"]["all"]
    expected = read_truth_csv(truth)
    assert len(expected) > 15
    assert figures["truth"] == figures["counted"] == figures["matched"] == len(expected), figures
    assert Counter(c["direction"] for c in report["crossings"]) == Counter(r.direction for r in expected)


def test_serve_counts_what_count_counts_on_the_same_clip(workspace: tuple[Path, str], tmp_path: Path) -> None:
    ws, build = workspace
    clip, _ = _clip(tmp_path, 2, 6, ACROSS)
    run = _tc("--workspace", ws, "--json", "count", build[:12], "--source", f"road={clip}", "--line", ACROSS)
    assert run.returncode == 0, run.stderr
    counted = sorted((c["line"], c["direction"], c["frame"], c["track"]) for c in json.loads(run.stdout)["crossings"])
    assert counted
    with Workspace(ws) as workspace_:
        model = model_from_registry(workspace_, build)
    events = tmp_path / "events.jsonl"
    serve(model, ServeConfig(sources=(f"road={clip}",), events=str(events), port=0,
                             vehicles=VehicleConfig(lines=(VehicleConfig.parse_line(ACROSS)[1],))), install_signals=False)
    served = sorted((e["line"], e["direction"], e["frame"], e["track"])
                    for e in map(json.loads, events.read_text().splitlines()))
    assert served == counted


def test_count_says_what_is_missing(workspace: tuple[Path, str], tmp_path: Path) -> None:
    ws, build = workspace
    run = _tc("--workspace", ws, "count", build[:12], "--source", "synthetic")
    assert run.returncode == 2 and "--line" in run.stderr
    run = _tc("--workspace", ws, "count", build[:12], "--source", "synthetic", "--line", ACROSS, "--map", "van=car")
    assert run.returncode == 2 and "--truth" in run.stderr
    run = _tc("--workspace", ws, "count", build[:12], "--source", tmp_path / "nowhere.mp4", "--line", ACROSS)
    assert run.returncode == 2 and "check the path" in run.stderr
    run = _tc("--workspace", ws, "count", build[:12], "--source", "synthetic", "--line", "mid=1,2,3")
    assert run.returncode == 2 and "x1,y1,x2,y2" in run.stderr
