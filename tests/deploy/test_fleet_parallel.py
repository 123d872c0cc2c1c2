"""A fleet rollout with bounded concurrency: a unit that hangs, one where nothing listens and one that
refuses are each reported with their reason, none blocks the others; each unit's live state is reported.

The "hung" engines are unix sockets that accept connections and never answer (a hung dockerd, a half-open
link); the connect timeout is shortened so the test is quick. Real engines: tests/docker/test_fleet_faults.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serve.fixtures import tiny_build, unpackaged_image_record
from toolchain import docker_engine
from toolchain.cli import deploy as deploy_cli
from toolchain.deploy import rollout
from toolchain.deploy.rollout import DEFAULT_PARALLEL, DeployConfig, RollbackConfig, deploy
from toolchain.workspace import Workspace


class Mute:
    """Unix sockets that accept every connection and never say a word."""

    def __init__(self, paths: list[Path]) -> None:
        self.sockets, self.held = [], []
        for path in paths:
            sock = socket.socket(socket.AF_UNIX)
            sock.bind(str(path))
            sock.listen(16)
            self.sockets.append(sock)
            threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        for conn in self.held + self.sockets:
            conn.close()


@pytest.fixture
def fleet_of_faults(tmp_path: Path) -> Iterator[tuple[Path, str, Path]]:
    """12 units: 2 hung engines, 9 sockets where nothing listens, 1 plain tcp:// unit (refused)."""
    base = Path(os.environ.get("TMPDIR", "/tmp")) if len(str(tmp_path)) > 60 else tmp_path
    sockets = base / f"s{os.getpid()}"
    sockets.mkdir(exist_ok=True)
    ws = tmp_path / "ws"
    with Workspace(ws) as workspace:
        image = unpackaged_image_record(workspace, tiny_build(workspace, tmp_path))
    units = {"hung-1": f"unix://{sockets}/h1.sock", "hung-2": f"unix://{sockets}/h2.sock",
             **{f"gone-{i}": f"unix://{sockets}/g{i}.sock" for i in range(9)}, "plain": "tcp://10.255.255.1:2375"}
    fleet = tmp_path / "fleet.toml"
    fleet.write_text('[defaults]\ntarget = "x86-64-cpu"\ncameras = ["rtsp://10.0.0.9/s1"]\n' + "".join(
        f'[[unit]]\nname = "{name}"\nurl = "{url}"\n' for name, url in units.items()))
    mute = Mute([sockets / "h1.sock", sockets / "h2.sock"])
    try:
        yield ws, image, fleet
    finally:
        mute.close()
        for path in sockets.iterdir():
            path.unlink()
        sockets.rmdir()


def test_the_default_is_8_units_at_once_for_rollouts_and_rollbacks() -> None:
    assert DEFAULT_PARALLEL == 8 == deploy_cli.DEFAULT_PARALLEL
    assert DeployConfig(ref="m@production", fleet=Path("f.toml")).parallel == 8
    assert RollbackConfig(fleet=Path("f.toml")).parallel == 8


def test_hung_gone_and_refused_units_are_reported_and_block_nobody(
        fleet_of_faults: tuple[Path, str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    ws, image, fleet = fleet_of_faults
    monkeypatch.setattr(docker_engine, "PING_TIMEOUT_S", 2.0)
    monkeypatch.setattr(rollout, "RECORD_FIRST_WAIT_S", 0.01)
    states: dict[str, list[str]] = {}
    lock = threading.Lock()

    def on_state(unit: str, state: str, detail: str) -> None:
        with lock:
            states.setdefault(unit, []).append(state)

    with Workspace(ws) as workspace:
        started = time.monotonic()
        report = deploy(workspace, DeployConfig(ref=image[:12], fleet=fleet), on_state=on_state)
        took = time.monotonic() - started
    results = {u.unit: u for u in report.units}
    assert len(report.units) == 12 and not report.ok
    for name in ("hung-1", "hung-2"):
        assert results[name].result == "unreachable", results[name]
        assert "no answer within 2 s" in results[name].message
        assert 1.5 < results[name].seconds < 10
    for i in range(9):
        assert results[f"gone-{i}"].result == "unreachable" and "cannot reach" in results[f"gone-{i}"].message
        assert results[f"gone-{i}"].seconds < 2  # not queued behind the hung ones
    assert results["plain"].result == "refused" and "unencrypted" in results["plain"].message
    assert took < 10  # the two hangs overlap each other and the rest
    assert all(seen == ["queued", "deploying", results[unit].result] for unit, seen in states.items()), states
    assert set(states) == set(results)


def test_with_one_slot_a_hung_unit_delays_the_next_but_fails_alone(
        fleet_of_faults: tuple[Path, str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    ws, image, fleet = fleet_of_faults
    monkeypatch.setattr(docker_engine, "PING_TIMEOUT_S", 1.0)
    with Workspace(ws) as workspace:
        report = deploy(workspace, DeployConfig(ref=image[:12], fleet=fleet, parallel=1,
                                                units=("hung-1", "gone-0", "hung-2", "gone-1")))
    assert [(u.unit, u.result) for u in report.units] == [
        ("hung-1", "unreachable"), ("gone-0", "unreachable"), ("hung-2", "unreachable"), ("gone-1", "unreachable")]


def test_the_cli_prints_a_line_per_unit_off_a_terminal_and_nothing_with_json(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    with Workspace(ws) as workspace:
        image = unpackaged_image_record(workspace, tiny_build(workspace, tmp_path))
    fleet = tmp_path / "fleet.toml"
    fleet.write_text('[defaults]\ntarget = "x86-64-cpu"\ncameras = ["rtsp://10.0.0.9/s1"]\n' + "".join(
        f'[[unit]]\nname = "road-{i}"\nurl = "unix://{tmp_path}/r{i}.sock"\n' for i in range(3)))
    env = {**os.environ, "COLUMNS": "200"}
    human = subprocess.run([sys.executable, "-m", "toolchain", "--workspace", str(ws), "deploy", image[:12], "--fleet",
                            str(fleet)], capture_output=True, text=True, timeout=120, env=env)
    assert human.returncode == 5, human.stderr
    lines = [line for line in human.stderr.splitlines() if line.startswith("[")]
    assert sorted(line.split("] ")[1].split(":")[0] for line in lines) == ["road-0", "road-1", "road-2"], lines
    assert sorted(line.split("]")[0] for line in lines) == ["[1/3", "[2/3", "[3/3"], lines
    assert all("unreachable" in line for line in lines)
    assert "deployment" in human.stderr and "unit" in human.stderr  # the summary table follows
    quiet = subprocess.run([sys.executable, "-m", "toolchain", "--workspace", str(ws), "--json", "deploy", image[:12],
                            "--fleet", str(fleet)], capture_output=True, text=True, timeout=120, env=env)
    assert quiet.returncode == 5 and "road-0: unreachable" not in quiet.stderr
    report = json.loads(quiet.stdout)
    assert [u["unit"] for u in report["units"]] == ["road-0", "road-1", "road-2"]


def test_canaries_still_go_first_and_a_hung_canary_stops_the_wave(
        fleet_of_faults: tuple[Path, str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    ws, image, fleet = fleet_of_faults
    monkeypatch.setattr(docker_engine, "PING_TIMEOUT_S", 1.0)
    order: list[tuple[str, str]] = []
    with Workspace(ws) as workspace:
        report = deploy(workspace, DeployConfig(ref=image[:12], fleet=fleet, canary=1,
                                                units=("hung-1", "gone-0", "gone-1")),
                        on_state=lambda unit, state, _detail: order.append((unit, state)))
    assert report.stopped == "rollout stopped: no canary could be reached"
    assert [(u.unit, u.result) for u in report.units] == [
        ("hung-1", "unreachable"), ("gone-0", "skipped"), ("gone-1", "skipped")]
    assert order[:3] == [("hung-1", "queued"), ("gone-0", "queued"), ("gone-1", "queued")]
    assert order[3:] == [("hung-1", "deploying"), ("hung-1", "unreachable"), ("gone-0", "skipped"), ("gone-1", "skipped")]
