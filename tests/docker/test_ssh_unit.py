"""An ssh:// unit through a real OpenSSH server on loopback, and the reason shown when it cannot be reached.

``deploy status`` reaches the test's Docker engine as ``ssh://USER@127.0.0.1:PORT``: the SDK runs the system
``ssh`` client, and ``docker system dial-stdio`` on the far side. Before, the SDK refused ssh:// without
paramiko (the project did not install ``docker[ssh]``) and the status table said only "unreachable".
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import skip_or_fail
from tests.ssh_server import SshServer, start_sshd, unavailable_reason

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sshd(tmp_path: Path, docker_url: str) -> Iterator[SshServer]:
    reason = unavailable_reason()
    if reason:
        skip_or_fail("ssh", reason)
    server = start_sshd(tmp_path / "sshd", docker_host=docker_url)
    yield server
    server.stop()


def _status(server: SshServer, fleet: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "toolchain", *extra, "deploy", "status", "--fleet", str(fleet)],
                          capture_output=True, text=True, timeout=180, cwd=ROOT, env=server.env())


def _fleet(tmp_path: Path, url: str) -> Path:
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(f'[[unit]]\nname = "gantry-14"\nurl = "{url}"\ntarget = "x86-64-cpu"\ncameras = ["rtsp://10.0.0.9/s1"]\n')
    return fleet


def test_deploy_status_reaches_a_unit_over_ssh(sshd: SshServer, tmp_path: Path) -> None:
    run = _status(sshd, _fleet(tmp_path, sshd.url()), "--json")
    assert run.returncode == 0, run.stderr
    row = json.loads(run.stdout)["units"][0]
    assert row["reachable"] and row["error"] == "" and row["architecture"] == "x86_64", row


def test_an_unreachable_ssh_unit_says_why(sshd: SshServer, tmp_path: Path) -> None:
    sshd.forget_host_key()  # the unit's host key is unknown: strict checking refuses it, never accepts silently
    fleet = _fleet(tmp_path, sshd.url())
    run = _status(sshd, fleet, "--json")
    row = json.loads(run.stdout)["units"][0]
    assert not row["reachable"]
    assert "Host key verification failed" in row["error"], row["error"]
    text = _status(sshd, fleet)  # the table shows the reason too, not only "unreachable"
    assert "Host key" in text.stderr and "verification" in text.stderr, text.stderr
