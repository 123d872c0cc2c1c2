"""``toolchain deploy`` without reachable units: resolution, canary stop, records, status (real engines: tests/docker)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.serve.fixtures import tiny_build, unpackaged_image_record
from toolchain.workspace import Workspace


def _tc(workspace: Path, *args: str) -> tuple[int, dict]:
    run = subprocess.run([sys.executable, "-m", "toolchain", "--workspace", str(workspace), "--json", "deploy", *args],
                         capture_output=True, text=True, timeout=120)
    return run.returncode, json.loads(run.stdout)


def _fleet(tmp_path: Path) -> Path:
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(f"""
[defaults]
target = "x86-64-cpu"
cameras = ["rtsp://10.0.0.9/s1"]
[[unit]]
name = "canary-1"
url = "unix://{tmp_path}/c1.sock"
canary = true
[[unit]]
name = "road-2"
url = "unix://{tmp_path}/r2.sock"
[[unit]]
name = "road-3"
url = "tcp://10.255.255.1:2375"
""")
    return fleet


def test_deploy_needs_a_packaged_image_and_a_valid_fleet(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    with Workspace(ws) as workspace:
        build_id = tiny_build(workspace, tmp_path)
    code, out = _tc(ws, build_id[:12], "--fleet", str(_fleet(tmp_path)))
    assert code == 5 and f"toolchain package {build_id[:12]} --target x86-64-cpu" in out["error"]["message"]
    bad = tmp_path / "bad.toml"
    bad.write_text("[[unit]]\nname = 'x'\n")
    code, out = _tc(ws, build_id[:12], "--fleet", str(bad))
    assert code == 4 and "'url' is missing" in out["error"]["message"]
    code, out = _tc(ws, build_id[:12], "--fleet", str(_fleet(tmp_path)), "--parallel", "0")
    assert code == 2


def test_unreachable_canary_stops_the_rollout_and_everything_is_recorded(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    with Workspace(ws) as workspace:
        build_id = tiny_build(workspace, tmp_path)
        image = workspace.registry.get(unpackaged_image_record(workspace, build_id))
    code, out = _tc(ws, build_id[:12], "--fleet", str(_fleet(tmp_path)), "--parallel", "2")
    assert code == 5, out
    results = {u["unit"]: u for u in out["units"]}
    assert results["canary-1"]["result"] == "unreachable" and results["canary-1"]["canary"]
    assert results["road-2"]["result"] == results["road-3"]["result"] == "skipped"
    assert out["stopped"] == "rollout stopped: no canary could be reached"
    assert out["releases"]["x86-64-cpu"]["image"] == image.id
    # without canaries every unit is tried; plain tcp:// is refused unless --insecure
    code, out = _tc(ws, image.id[:12], "--fleet", str(_fleet(tmp_path)), "--unit", "road-2", "--unit", "road-3")
    results = {u["unit"]: u for u in out["units"]}
    assert code == 3 and results["road-2"]["result"] == "unreachable"
    assert results["road-3"]["result"] == "refused" and "unencrypted" in results["road-3"]["message"]
    with Workspace(ws) as workspace:
        records = workspace.registry.find(kind="deployment")
        assert sorted((r.name, r.body["result"]) for r in records) == [
            ("canary-1", "unreachable"), ("road-2", "skipped"), ("road-2", "unreachable"), ("road-3", "refused"),
            ("road-3", "skipped")]
        assert all({link.input_id for link in workspace.registry.links_from(r.id)} == {image.id, build_id} for r in records)
    code, status = _tc(ws, "status", "--fleet", str(_fleet(tmp_path)))
    assert code == 0
    rows = {r["unit"]: r for r in status["units"]}
    assert not rows["canary-1"]["reachable"] and "cannot reach" in rows["canary-1"]["error"]
    assert rows["road-2"]["last_deployment"]["result"] in ("unreachable", "skipped")


def test_status_reports_a_unit_whose_engine_fails_mid_way_as_a_row(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import docker.errors

    import toolchain.docker_engine
    from toolchain.deploy.rollout import fleet_status

    class _Containers:
        def list(self, **_kwargs: object) -> list:  # type: ignore[type-arg]
            raise docker.errors.APIError("500 Server Error: the engine is shutting down")

    class _Client:
        containers = _Containers()

        def close(self) -> None:
            pass

    monkeypatch.setattr(toolchain.docker_engine, "connect", lambda *_a, **_k: _Client())
    rows = {r["unit"]: r for r in fleet_status(None, _fleet(tmp_path), units=("canary-1", "road-2"))}
    assert set(rows) == {"canary-1", "road-2"}
    assert rows["canary-1"]["reachable"] and "shutting down" in rows["canary-1"]["error"]


def test_text_from_a_unit_is_printed_without_terminal_escapes_markup_or_secrets() -> None:
    from toolchain.cli.output import safe

    hostile = "\x1b]0;owned\x07\x1b[2J[bold red]boom[/] rtsp://admin:Pw-secret-9@cam/x\r"
    text = safe(hostile)
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text
    assert "\\[bold red]" in text and "Pw-secret-9" not in text and "rtsp://***@cam/x" in text
