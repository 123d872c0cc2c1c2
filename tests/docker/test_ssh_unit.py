"""ssh:// units through real OpenSSH servers on loopback: deploy, status, rollback, bench and build over ssh.

The unit is this suite's Docker engine reached as ``ssh://USER@127.0.0.1:PORT``: the SDK runs the system
``ssh`` client (batch mode, strict host key checking, connections kept: :mod:`toolchain.docker_ssh`) and
``docker system dial-stdio`` on the far side. The releases are packaged with ``--save`` and then removed from
the engine, so every first deploy really sends its image over ssh (only the layers the engine lacks).

- A release goes out, ``deploy status`` reads it back, a second (2.8 MB model) goes out, ``deploy rollback``
  restores the first without sending a byte, and ``bench --on`` runs on the unit; ``build --on`` builds there.
- A unit whose host key changed is refused, naming the known_hosts file to fix; nothing is deployed and the
  pin is left alone. An unknown host key is refused too (never accepted silently).
- A unit behind a bastion (``ProxyJump`` in the client's ssh config) is reached through it; a bastion whose key
  changed is refused as a unit is.
- An ssh connection cut mid-``docker load`` (a thin link in front of sshd's port) is retried, then fails with
  the old release serving and nothing loaded; a rerun completes.
- The path of the private key shows in no output, record or registry file, even when ssh complains about it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.docker.fleet_sim import ThinLink, remove_deployed, remove_images
from tests.onnx_fixtures import register_tiny_onnx
from tests.ports import free_port, free_ports
from tests.services import skip_or_fail
from tests.ssh_server import (
    SshClient, SshServer, agent_client, behind_bastion, start_agent, start_sshd, unavailable_reason,
)
from toolchain.workspace import Workspace

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parents[2]
MODEL = "ssh-onnx"
SERVING = f"toolchain-{MODEL}"
MB = 1_000_000


@pytest.fixture
def sshd(tmp_path: Path, docker_url: str) -> Iterator[SshServer]:
    reason = unavailable_reason()
    if reason:
        skip_or_fail("ssh", reason)
    server = start_sshd(tmp_path / "sshd", docker_host=docker_url)
    yield server
    server.stop()


def _tc(workspace: Path, env: dict[str, str], *args: str, timeout: float = 300) -> tuple[int, Any, str]:
    """``toolchain --workspace W --json ARGS`` with ``env`` (an ssh client's): exit code, JSON (or None), stdout+stderr."""
    run = subprocess.run([sys.executable, "-m", "toolchain", "--workspace", str(workspace), "--json", *args],
                         capture_output=True, text=True, timeout=timeout, cwd=ROOT, env={**env, "OMP_NUM_THREADS": "1"})
    try:
        payload = json.loads(run.stdout) if run.stdout.strip() else None
    except ValueError:
        payload = None
    return run.returncode, payload, run.stdout + run.stderr


def _status(server: SshServer, fleet: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "toolchain", *extra, "deploy", "status", "--fleet", str(fleet)],
                          capture_output=True, text=True, timeout=180, cwd=ROOT, env=server.env())


def _fleet(tmp_path: Path, url: str, *, port: int | None = None, name: str = "gantry-14") -> Path:
    fleet = tmp_path / f"fleet-{name}-{port}.toml"
    cameras = '["synthetic:64x64@5"]' if port else '["rtsp://10.0.0.9/s1"]'
    fleet.write_text(f'[[unit]]\nname = "{name}"\nurl = "{url}"\ntarget = "x86-64-cpu"\ncameras = {cameras}\n'
                     + (f"http_port = {port}\nhealth_timeout_s = 120\n" if port else ""))
    return fleet


def _no_key_path(where: str, text: str, *keys: Path) -> None:
    for key in keys:
        assert str(key) not in text and key.name not in text, f"{where} shows the private key's path"


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory, docker_url: str, base_image: str) -> Iterator[dict[str, Any]]:
    """Two packaged releases of MODEL (v2: a 2.8 MB model) saved as tarballs and removed from the engine."""
    import docker

    tmp = tmp_path_factory.mktemp("ssh-releases")
    ws = tmp / "ws"
    with Workspace(ws) as workspace:
        register_tiny_onnx(workspace, tmp / "m1", name=MODEL, seed=0)
        register_tiny_onnx(workspace, tmp / "m2", name=MODEL, seed=9, hidden=100_000)
    builds, images = {}, {}
    for version in ("v1", "v2"):
        code, builds[version], out = _tc(ws, dict(os.environ), "build", f"{MODEL}@{version}", "--target", "x86-64-cpu")
        assert code == 0, out
        code, images[version], out = _tc(ws, dict(os.environ), "package", f"{MODEL}@{version}", "--target", "x86-64-cpu",
                                         "--base-image", base_image, "--docker-host", docker_url,
                                         "--save", str(tmp / f"{version}.tar"))
        assert code == 0, out
    client = docker.DockerClient(base_url=docker_url)
    ids = [image["image_id"] for image in images.values()]
    remove_images(client, ids)  # the unit (this engine) gets them over ssh
    yield {"ws": ws, "builds": builds, "images": images, "ids": ids}
    for image_id in ids:
        remove_deployed(client, MODEL, image_id)
    client.close()


@pytest.fixture
def unit(releases: dict[str, Any], docker_client: Any) -> Iterator[dict[str, Any]]:
    """The engine holds nothing of MODEL before and after the test: a first deploy sends the image."""
    for image_id in releases["ids"]:
        remove_deployed(docker_client, MODEL, image_id)
    yield releases
    for image_id in releases["ids"]:
        remove_deployed(docker_client, MODEL, image_id)


def _serving(client: Any) -> str:
    container = client.containers.get(SERVING)
    assert container.attrs["State"]["Health"]["Status"] == "healthy"
    return str(container.attrs["Image"])


def _held(client: Any, image_id: str) -> bool:
    return any(image.id == image_id for image in client.images.list())


@pytest.mark.timeout(600)
def test_deploy_status_rollback_and_bench_over_ssh(sshd: SshServer, unit: dict[str, Any], docker_client: Any,
                                                    tmp_path: Path) -> None:
    ws, ids, env = unit["ws"], unit["images"], sshd.env()
    fleet = _fleet(tmp_path, sshd.url(), port=free_ports(1, span=2)[0])
    outputs = []

    code, first, out = _tc(ws, env, "deploy", f"{MODEL}@v1", "--fleet", str(fleet))
    outputs.append(out)
    assert code == 0, out
    row = first["units"][0]
    assert row["result"] == "deployed" and row["transport"] == "load-delta" and 0 < row["bytes_sent"] < 4 * MB, row
    assert row["url"].startswith("ssh://") and row["url"].endswith(f"@127.0.0.1:{sshd.port}")
    assert _serving(docker_client) == ids["v1"]["image_id"]

    code, status, out = _tc(ws, env, "deploy", "status", "--fleet", str(fleet))
    outputs.append(out)
    assert code == 0, out
    row = status["units"][0]
    assert row["reachable"] and row["error"] == "" and row.get("architecture") == "x86_64", row
    assert [c["image"] for c in row["containers"] if c["name"] == SERVING] == [ids["v1"]["image_id"]], row["containers"]
    assert row["last_deployment"]["transport"] == "load-delta"

    code, second, out = _tc(ws, env, "deploy", f"{MODEL}@v2", "--fleet", str(fleet))
    outputs.append(out)
    assert code == 0, out
    row = second["units"][0]
    assert row["result"] == "deployed" and row["layers_sent"] == 1 and 2 * MB < row["bytes_sent"] < 4 * MB, row
    assert _serving(docker_client) == ids["v2"]["image_id"]

    code, back, out = _tc(ws, env, "deploy", "rollback", "--fleet", str(fleet))
    outputs.append(out)
    assert code == 0, out
    row = back["units"][0]
    assert row["result"] == "deployed" and row["bytes_sent"] == 0 and "rolled back to" in row["message"], row
    assert _serving(docker_client) == ids["v1"]["image_id"]

    code, bench, out = _tc(ws, env, "bench", unit["builds"]["v1"]["build"], "--on", sshd.url(), "--source",
                           "synthetic:64x64@10", "--duration", "2", "--warmup", "0.5", "--budget-ms", "500")
    outputs.append(out)
    assert code == 0, out
    assert bench["where"].endswith(f"@127.0.0.1:{sshd.port}") and bench["frames"] > 0 and not bench["emulated"], bench
    assert bench["device"]["engine_architecture"] == "x86_64" and bench["image_transfer"] is None  # the unit had it

    # a build whose image the unit lacks: bench --on sends it as deploy does, only the layer the unit lacks
    remove_deployed(docker_client, MODEL, ids["v2"]["image_id"])
    code, bench, out = _tc(ws, env, "bench", unit["builds"]["v2"]["build"], "--on", sshd.url(), "--source",
                           "synthetic:64x64@10", "--duration", "1", "--warmup", "0.5", "--budget-ms", "500")
    outputs.append(out)
    assert code == 0, out
    sent = bench["image_transfer"]
    assert sent["transport"] == "load-delta" and sent["layers_sent"] == 1 and 2 * MB < sent["bytes_sent"] < 4 * MB, sent
    assert bench["image"] == ids["v2"]["image_id"] and bench["frames"] > 0

    # the identity file's path is in none of it: outputs, records, the registry's files
    code, shown, out = _tc(ws, env, "registry", "show", status["units"][0]["last_deployment"]["record"])
    assert code == 0, out
    outputs.append(out)
    for i, text in enumerate(outputs):
        _no_key_path(f"output {i}", text, sshd.user_key)
    for path in ws.rglob("*.db*"):
        data = path.read_bytes()
        assert str(sshd.user_key).encode() not in data and sshd.user_key.name.encode() not in data, path


@pytest.mark.timeout(300)
def test_build_on_a_unit_over_ssh(sshd: SshServer, tmp_path: Path, base_image: str) -> None:
    with Workspace(tmp_path / "ws") as ws:
        onnx = register_tiny_onnx(ws, tmp_path)
    code, built, out = _tc(tmp_path / "ws", sshd.env(), "build", onnx.id[:12], "--target", "x86-64-cpu", "--on",
                           sshd.url(), "--build-image", base_image)
    assert code == 0, out
    assert built["where"].startswith("remote ssh://") and built["where"].endswith(f"@127.0.0.1:{sshd.port}"), built
    assert built["verification"]["passed"] and Path(built["path"]).stat().st_size > 0
    _no_key_path("build --on", out, sshd.user_key)


def test_deploy_status_reaches_a_unit_over_ssh_with_a_key_file_or_the_agent(sshd: SshServer, tmp_path: Path) -> None:
    fleet = _fleet(tmp_path, sshd.url())
    run = _status(sshd, fleet, "--json")
    assert run.returncode == 0, run.stderr
    row = json.loads(run.stdout)["units"][0]
    assert row["reachable"] and row["error"] == "" and row.get("architecture") == "x86_64", row

    # no IdentityFile in the config: the key comes from the agent, or nothing gets in (never a password prompt)
    client = agent_client(tmp_path / "agent-client", sshd)
    command = [sys.executable, "-m", "toolchain", "--json", "deploy", "status", "--fleet", str(fleet)]
    without = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=ROOT, stdin=subprocess.DEVNULL,
                             env={k: v for k, v in client.env().items() if not k.startswith("SSH_A")})
    row = json.loads(without.stdout)["units"][0]
    assert not row["reachable"] and "Permission denied (publickey)" in row["error"], row
    agent = start_agent(tmp_path / "agent", sshd.user_key)
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=ROOT, env=agent.env(client.env()))
    finally:
        agent.stop()
    row = json.loads(run.stdout)["units"][0]
    assert row["reachable"] and row["error"] == "" and row.get("architecture") == "x86_64", (row, run.stderr[-2000:])


def test_an_unreachable_ssh_unit_says_why(sshd: SshServer, tmp_path: Path) -> None:
    sshd.forget_host_key()  # the unit's host key is unknown: strict checking refuses it, never accepts silently
    fleet = _fleet(tmp_path, sshd.url())
    run = _status(sshd, fleet, "--json")
    row = json.loads(run.stdout)["units"][0]
    assert not row["reachable"]
    assert "Host key verification failed" in row["error"] and "not pinned" in row["error"], row["error"]
    assert str(sshd.known_hosts) in row["error"] and f"ssh-keyscan -p {sshd.port} 127.0.0.1" in row["error"]
    assert sshd.known_hosts.read_text() == ""  # nothing was added to the pins
    text = _status(sshd, fleet)  # the table shows the reason too, not only "unreachable"
    assert "Host key" in text.stderr and "verification" in text.stderr, text.stderr


@pytest.mark.timeout(300)
def test_a_unit_whose_host_key_changed_is_refused_and_nothing_is_deployed(sshd: SshServer, unit: dict[str, Any],
                                                                          docker_client: Any, tmp_path: Path) -> None:
    pins = sshd.known_hosts.read_text()
    sshd.new_host_key()  # the unit was reinstalled, or someone sits in the middle
    fleet = _fleet(tmp_path, sshd.url(), port=free_ports(1, span=2)[0])
    code, report, out = _tc(unit["ws"], sshd.env(), "deploy", f"{MODEL}@v1", "--fleet", str(fleet))
    assert code == 5, out
    row = report["units"][0]
    assert row["result"] == "unreachable" and row["bytes_sent"] == 0, row
    message = row["message"]
    assert f"the ssh host key of [127.0.0.1]:{sshd.port} has changed" in message, message
    assert "Host key verification failed" in message and f"{sshd.known_hosts} (line 1)" in message, message
    assert f'ssh-keygen -f "{sshd.known_hosts}" -R "[127.0.0.1]:{sshd.port}"' in message, message
    assert sshd.known_hosts.read_text() == pins  # the old pin stays: nothing was accepted
    assert not docker_client.containers.list(all=True, filters={"name": SERVING})
    assert not _held(docker_client, unit["images"]["v1"]["image_id"])
    run = _status(sshd, fleet)
    assert run.returncode == 0 and "has changed" in run.stderr, run.stderr

    # the operator checked the new key and pinned it: the unit is reachable again
    sshd.forget_host_key()
    sshd.client.pin("127.0.0.1", sshd.port, sshd.host_key)
    row = json.loads(_status(sshd, fleet, "--json").stdout)["units"][0]
    assert row["reachable"], row

    # ssh's complaints about the key file name it; toolchain's report does not
    sshd.user_key.chmod(0o644)
    run = _status(sshd, fleet, "--json")
    row = json.loads(run.stdout)["units"][0]
    assert not row["reachable"] and "bad permissions" in row["error"], row["error"]
    _no_key_path("deploy status of a refused key", run.stdout + run.stderr, sshd.user_key)


@pytest.mark.timeout(300)
def test_a_unit_behind_a_bastion_is_reached_with_proxyjump(sshd: SshServer, unit: dict[str, Any], docker_client: Any,
                                                          tmp_path: Path, docker_url: str) -> None:
    bastion = start_sshd(tmp_path / "bastion", docker_host="unix:///nowhere/docker.sock")
    try:
        client: SshClient = behind_bastion(tmp_path / "jump", bastion, sshd, alias="gantry-behind")
        fleet = _fleet(tmp_path, "ssh://gantry-behind", port=free_ports(1, span=2)[0])
        code, status, out = _tc(unit["ws"], client.env(), "deploy", "status", "--fleet", str(fleet))
        assert code == 0, out
        row = status["units"][0]
        assert row["reachable"] and row.get("architecture") == "x86_64" and row["url"] == "ssh://gantry-behind", row
        assert bastion.logins() >= 1
        before = bastion.logins()
        code, report, out = _tc(unit["ws"], client.env(), "deploy", f"{MODEL}@v1", "--fleet", str(fleet))
        assert code == 0, out
        assert report["units"][0]["result"] == "deployed" and report["units"][0]["transport"] == "load-delta"
        assert bastion.logins() > before  # through the bastion
        assert _serving(docker_client) == unit["images"]["v1"]["image_id"]
        _no_key_path("deploy through a bastion", out, sshd.user_key, bastion.user_key)

        bastion.new_host_key()  # the hop is pinned as well: its config says StrictHostKeyChecking yes
        code, status, out = _tc(unit["ws"], client.env(), "deploy", "status", "--fleet", str(fleet))
        error = status["units"][0]["error"]
        assert f"the ssh host key of [127.0.0.1]:{bastion.port} has changed" in error, error
        assert str(client.known_hosts) in error, error
    finally:
        bastion.stop()


@pytest.mark.timeout(600)
def test_an_ssh_link_cut_mid_transfer_leaves_the_old_release_serving_and_a_rerun_completes(
        sshd: SshServer, unit: dict[str, Any], docker_client: Any, tmp_path: Path) -> None:
    ws, ids, env = unit["ws"], unit["images"], sshd.env()
    port = free_ports(1, span=2)[0]
    code, first, out = _tc(ws, env, "deploy", f"{MODEL}@v1", "--fleet", str(_fleet(tmp_path, sshd.url(), port=port)))
    assert code == 0, out

    # the 2.8 MB release through a link in front of sshd's port that dies 1 MB in and stays down
    listen = free_port()
    sshd.client.pin("127.0.0.1", listen, sshd.host_key)  # the same unit, reached on the link's port
    thin = _fleet(tmp_path, sshd.url(listen), port=port)
    link = {"ssh": (f"tcp:127.0.0.1:{listen}", f"tcp:127.0.0.1:{sshd.port}")}
    with ThinLink(tmp_path, link, rate="0", cut_after=1 * MB, down_after_cut=True):
        code, cut, out = _tc(ws, env, "deploy", f"{MODEL}@v2", "--fleet", str(thin))
    assert code != 0, out
    row = cut["units"][0]
    assert row["result"] == "failed" and row["transfer_attempts"] == 3 and "still serves" in row["message"], row
    assert 1 * MB <= row["bytes_sent"] < 4 * MB, row
    assert _serving(docker_client) == ids["v1"]["image_id"]
    assert not _held(docker_client, ids["v2"]["image_id"])  # nothing half-sent was loaded

    # the link is back and cuts once more: the retry inside the rerun finishes it
    with ThinLink(tmp_path, link, rate="0", cut_after=1 * MB):
        code, rerun, out = _tc(ws, env, "deploy", f"{MODEL}@v2", "--fleet", str(thin))
    assert code == 0, out
    row = rerun["units"][0]
    assert row["result"] == "deployed" and row["transfer_attempts"] == 2 and row["transport"] == "load-delta", row
    assert _serving(docker_client) == ids["v2"]["image_id"]
