"""``serve --line``: one event per vehicle crossing, the vehicle counter in /metrics, and the same count as ``count``."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from tests.serve.fixtures import tiny_build
from toolchain.runtime.vehicles import VehicleConfig
from toolchain.serve.bundle import model_from_registry
from toolchain.serve.service import ServeConfig, serve
from toolchain.workspace import Workspace

pytest.importorskip("cv2")
ROOT = Path(__file__).resolve().parents[2]
LINE = "mid=160,0,160,192"


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A synthetic road clip and its exact crossing truth for LINE."""
    folder = tmp_path_factory.mktemp("clip")
    run = subprocess.run([sys.executable, "-m", "toolchain", "--json", "synth", "video", str(folder / "road.mp4"),
                          "--size", "320x192", "--seconds", "12", "--fps", "15", "--seed", "3", "--line", LINE,
                          "--truth", str(folder / "truth.csv")], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    return folder / "road.mp4", folder / "truth.csv"


def test_serve_writes_one_event_per_crossing_and_counts_them_in_metrics(clip: tuple[Path, Path], tmp_path: Path) -> None:
    road, _ = clip
    with Workspace(tmp_path / "ws") as ws:
        build = tiny_build(ws, tmp_path)
        model = model_from_registry(ws, build)
    events = tmp_path / "events.jsonl"
    ports: list[int] = []
    metrics: list[str] = []
    config = ServeConfig(sources=(f"gantry={road}",), events=str(events), port=0,
                         vehicles=VehicleConfig(lines=(VehicleConfig.parse_line(LINE)[1],)))

    def scrape_at_end() -> None:
        # the clip ends by itself (no --loop): read /metrics just before by polling while the service runs
        while not ports:
            threading.Event().wait(0.05)
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/metrics", timeout=2) as response:
                    metrics.append(response.read().decode())
            except OSError:
                return
            threading.Event().wait(0.2)

    scraper = threading.Thread(target=scrape_at_end, daemon=True)
    scraper.start()
    result = serve(model, config, on_ready=ports.append, install_signals=False)
    scraper.join(timeout=10)
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert lines, "no crossing events"
    assert all(set(e) >= {"camera", "line", "direction", "class", "score", "track", "frame", "time", "latency_ms"}
               for e in lines)
    assert {e["camera"] for e in lines} == {"gantry"} and {e["line"] for e in lines} == {"mid"}
    assert {e["direction"] for e in lines} <= {"left", "right"}
    assert len({(e["track"], e["line"]) for e in lines}) == len(lines)  # no vehicle counted twice
    assert result.frames > 100  # every frame fed health
    last = metrics[-1]
    counted = sum(float(row.rsplit(" ", 1)[1]) for row in last.splitlines() if row.startswith("toolchain_vehicles_total{"))
    assert 0 < counted <= len(lines)
