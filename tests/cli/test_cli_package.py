"""``toolchain package`` errors from the CLI (the image build itself runs in tests/docker)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.serve.fixtures import tiny_build
from toolchain.workspace import Workspace


def _tc(workspace: Path, *args: str) -> tuple[int, dict]:
    run = subprocess.run([sys.executable, "-m", "toolchain", "--workspace", str(workspace), "--json", "package", *args],
                         capture_output=True, text=True, timeout=120)
    return run.returncode, json.loads(run.stdout)


def test_package_refuses_clearly(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    with Workspace(ws) as workspace:
        build_id = tiny_build(workspace, tmp_path)
    code, out = _tc(ws, "nothing@production", "--target", "x86-64-cpu")
    assert code == 4 and "registry alias nothing production" in out["error"]["message"]
    code, out = _tc(ws, build_id[:12], "--target", "jetson-orin-nano")
    assert code == 4 and "does not match jetson-orin-nano" in out["error"]["message"]
    code, out = _tc(ws, build_id[:12], "--target", "x86-64-cpu", "--docker-host", "tcp://127.0.0.1:9")
    assert code == 2 and "unencrypted" in out["error"]["message"]
    code, out = _tc(ws, build_id[:12], "--target", "x86-64-cpu", "--docker-host", f"unix://{tmp_path}/none.sock")
    assert code == 5 and "cannot reach the Docker engine" in out["error"]["message"]
    code, out = _tc(ws, build_id[:12], "--target", "x86-64-cpu", "--tag", "bad tag")
    assert code == 2
