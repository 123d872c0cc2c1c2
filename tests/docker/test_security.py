"""A deployed unit keeps its cameras' secrets and is locked down, on a real Docker engine.

One fleet unit with three cameras: a video file (so the service is healthy), an RTSP camera whose
username/password come from the credentials file, and one whose credentials ride in the query string
(a `url` entry). The two RTSP cameras are unreachable, so their errors (which FFmpeg words with the
URL it was given) travel through /healthz, the Docker health log, deploy's results and records. The
secrets must appear in none of: `docker inspect`, the container's logs and health log, /healthz,
/metrics, `deploy --json`, `deploy status --json`, `registry show` and the registry database file.

`bench --on` against an RTSP camera that requires a password (GStreamer's RTSP server with
`--auth-file`): the password, given by camera name in `--credentials FILE`, reaches the benchmark's
container only as serve's 0400 file, and shows in none of the container's command line, environment or
labels, bench's output, its process arguments, the benchmark record or the registry's files; a missing or
wrong password is a clear error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.docker.fleet_sim import packaged_tiny_model, remove_deployed
from tests.ports import free_port
from tests.serve.fixtures import http_body as _get, write_video
from tests.serve.rtsp import StartServer, camera_clip, rtsp_server_fixture  # noqa: F401 - the fixture
from toolchain.deploy.unit import SERVICE_UID
from toolchain.serve.credentials import CONTAINER_PATH

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parents[2]
MODEL = "secure-onnx"
SERVING = f"toolchain-{MODEL}"
PASSWORD = "Pa55-Word-Xq7"  # noqa: S105 - the secret the test hunts for
QUERY_SECRET = "QueryToken-81z"  # noqa: S105
USERNAME = "camadmin"


def _tc(workspace: Path, *args: str) -> tuple[int, Any, str, str]:
    run = subprocess.run([sys.executable, "-m", "toolchain", "--workspace", str(workspace), "--json", *args],
                         capture_output=True, text=True, timeout=600, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    payload = json.loads(run.stdout) if run.stdout.strip().startswith("{") else None
    return run.returncode, payload, run.stdout, run.stderr




def _assert_clean(where: str, text: str) -> None:
    for secret in (PASSWORD, QUERY_SECRET):
        assert secret not in text, f"{where} leaks a camera secret"


@pytest.mark.timeout(600)
def test_deployed_unit_leaks_no_secret_and_runs_locked_down(tmp_path: Path, docker_url: str, docker_client: Any,
                                                            base_image: str) -> None:
    ws, _, image = packaged_tiny_model(tmp_path, MODEL, docker_url, base_image)

    cams = tmp_path / "cams"
    write_video(cams / "cam.mp4", frames=20, fps=10)
    secrets_file = tmp_path / "cameras.secret.toml"
    secrets_file.write_text(f"""
[cameras.north]
username = "{USERNAME}"
password = "{PASSWORD}"

[cameras.south]
url = "rtsp://127.0.0.1:1/live?user={USERNAME}&pwd={QUERY_SECRET}"
""")
    port = free_port()
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(f"""
[[unit]]
name = "unit-s"
url = "{docker_url}"
target = "x86-64-cpu"
cameras = ["gantry=/cams/cam.mp4", "north=rtsp://127.0.0.1:1/stream1", "south=rtsp://127.0.0.1:1/live"]
credentials = "{secrets_file.name}"
loop = true
mounts = ["{cams}:/cams:ro"]
http_port = {port}
health_timeout_s = 90
memory_mb = 512
pids_limit = 128
log_max_size = "1m"
log_max_file = 2
""")
    try:
        code, report, out, err = _tc(ws, "deploy", MODEL, "--fleet", str(fleet))
        assert code == 0, [u["message"] for u in report["units"]] if report else err
        assert report["units"][0]["result"] == "deployed"
        _assert_clean("deploy --json", out)
        _assert_clean("deploy's console", err)

        container = docker_client.containers.get(SERVING)
        attrs = container.attrs
        host = attrs["HostConfig"]
        # locked down: non-root, no capabilities, no privilege gain, read-only root, limits, rotating logs
        assert attrs["Config"]["User"] == f"{SERVICE_UID}:{SERVICE_UID}"
        assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd") and not host.get("Privileged")
        assert "no-new-privileges:true" in host["SecurityOpt"]
        assert host["ReadonlyRootfs"] is True and "/tmp" in host["Tmpfs"]
        assert host["Memory"] == 512 * 1024 * 1024 and host["PidsLimit"] == 128 and host["NanoCpus"] > 0
        assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "1m", "max-file": "2"}}
        assert container.status == "running" and attrs["State"]["Health"]["Status"] == "healthy"
        # the secret reaches the container only as a read-only 0400 file owned by the service user
        mount = next(m for m in attrs["Mounts"] if m["Destination"] == "/run/secrets/toolchain")
        assert mount["RW"] is False
        listing = container.exec_run(["ls", "-ln", "/run/secrets/toolchain/cameras.json"]).output.decode()
        assert listing.startswith("-r--------") and f" {SERVICE_UID} {SERVICE_UID} " in listing
        assert container.exec_run(["id", "-u"]).output.decode().strip() == str(SERVICE_UID)
        assert container.exec_run(["touch", "/opt/toolchain/x"]).exit_code != 0  # read-only root

        # the unreachable cameras were tried with their credentials and failed; no path shows the secret
        health = json.loads(_get(port, "/healthz"))
        assert health["cameras"]["gantry"]["up"] and health["cameras"]["north"]["errors"] >= 1
        assert "127.0.0.1:1" in health["cameras"]["north"]["last_error"]
        inspect = json.dumps(docker_client.api.inspect_container(container.id))
        for where, text in (("/healthz", json.dumps(health)), ("/metrics", _get(port, "/metrics")),
                            ("docker inspect (config, argv, env, labels, health log)", inspect),
                            ("container logs", container.logs(stdout=True, stderr=True).decode(errors="replace")),
                            ("ps in the container", container.exec_run(["cat", "/proc/1/cmdline"]).output.decode())):
            _assert_clean(where, text)
        assert PASSWORD not in " ".join(attrs["Config"]["Env"]) and PASSWORD not in " ".join(attrs["Args"])

        code, status, out, err = _tc(ws, "deploy", "status", "--fleet", str(fleet))
        assert code == 0, err
        _assert_clean("deploy status", out + err)
        record = status["units"][0]["last_deployment"]["record"]
        code, _, out, err = _tc(ws, "registry", "show", record)
        assert code == 0, err
        _assert_clean("registry show", out + err)
        for db in ws.rglob("*.db*"):
            data = db.read_bytes()
            assert PASSWORD.encode() not in data and QUERY_SECRET.encode() not in data, f"{db} holds a secret"

        # a rerun with the same fleet and secrets changes nothing; a camera URL with inline credentials is refused
        code, report, _, err = _tc(ws, "deploy", MODEL, "--fleet", str(fleet))
        assert code == 0 and report["units"][0]["result"] == "unchanged", err
        fleet.write_text(fleet.read_text().replace("north=rtsp://127.0.0.1:1/stream1",
                                                   f"north=rtsp://{USERNAME}:{PASSWORD}@127.0.0.1:1/stream1"))
        code, _, out, err = _tc(ws, "deploy", MODEL, "--fleet", str(fleet))
        assert code == 4 and "carries credentials" in err
        _assert_clean("the refusal", out + err)
    finally:
        remove_deployed(docker_client, MODEL, image["image_id"])


BENCH_MODEL = "secure-bench-onnx"


def _bench_on(ws: Path, build: str, docker_url: str, docker_client: Any, *args: str) -> dict[str, Any]:
    """``toolchain bench BUILD --on URL ARGS`` in a child process, and what its container looked like while it ran:
    ``{"code", "payload", "out", "err", "argv" (the bench process's), "inspect", "secret_file", "container_argv"}``."""
    command = [sys.executable, "-m", "toolchain", "--workspace", str(ws), "--json", "bench", build, "--on", docker_url,
               "--duration", "4", "--warmup", "0.5", "--budget-ms", "500", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    seen: dict[str, Any] = {"argv": Path(f"/proc/{process.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(),
                            "inspect": None, "secret_file": "", "container_argv": ""}
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline and seen["inspect"] is None:
        for container in docker_client.containers.list(filters={"label": "org.toolchain.role=bench"}):
            try:
                seen["inspect"] = docker_client.api.inspect_container(container.id)
                seen["secret_file"] = container.exec_run(["ls", "-ln", CONTAINER_PATH]).output.decode()
                seen["container_argv"] = container.exec_run(["cat", "/proc/1/cmdline"]).output.decode(errors="replace")
            except Exception:  # noqa: BLE001 - it ended between the listing and the look; the run says why
                seen["inspect"] = seen["inspect"] or {}
        time.sleep(0.1)
    out, err = process.communicate(timeout=600)
    payload = json.loads(out) if out.strip().startswith("{") else None
    return {"code": process.returncode, "payload": payload, "out": out, "err": err, **seen}


@pytest.mark.timeout(900)
def test_bench_on_a_unit_reads_a_password_camera_from_the_credentials_file(
        tmp_path: Path, docker_url: str, docker_client: Any, base_image: str, rtsp_server: StartServer) -> None:
    ws, built, image = packaged_tiny_model(tmp_path, BENCH_MODEL, docker_url, base_image)
    server = rtsp_server({"cam": camera_clip(tmp_path / "cam.mp4", seconds=2)}, auth=(USERNAME, PASSWORD))
    assert server.process is not None
    _assert_clean("the RTSP server's argv", Path(f"/proc/{server.process.pid}/cmdline").read_bytes().decode())
    secrets_file = tmp_path / "cameras.secret.toml"
    secrets_file.write_text(f'[cameras.north]\nusername = "{USERNAME}"\npassword = "{PASSWORD}"\n')
    wrong_file = tmp_path / "wrong.secret.toml"
    wrong_file.write_text(f'[cameras.north]\nusername = "{USERNAME}"\npassword = "{QUERY_SECRET}"\n')
    source = f"north={server.url('cam')}"  # the container shares the unit's network: the camera as the unit sees it
    try:
        run = _bench_on(ws, built["build"], docker_url, docker_client, "--source", source, "--credentials",
                        str(secrets_file))
        assert run["code"] == 0, run["err"]
        report = run["payload"]
        assert report["frames"] > 0 and report["emulated"] is False, report
        assert [s["name"] for s in report["stream_states"]] == ["north"]
        # while it ran: the secret was serve's file, 0400 and the service user's; not in argv, env or labels
        assert run["inspect"], "the benchmark's container was never seen running"
        assert run["secret_file"].startswith("-r--------") and f" {SERVICE_UID} {SERVICE_UID} " in run["secret_file"]
        for where, text in (("bench --json", run["out"]), ("bench's console", run["err"]),
                            ("bench's argv", run["argv"]), ("the container's argv", run["container_argv"]),
                            ("docker inspect of the bench container (argv, env, labels)", json.dumps(run["inspect"]))):
            _assert_clean(where, text)
        code, _, out, err = _tc(ws, "registry", "show", report["benchmark"])
        assert code == 0, err
        _assert_clean("registry show", out + err)
        for path in ws.rglob("*"):
            if path.is_file():
                assert PASSWORD.encode() not in path.read_bytes(), f"{path} holds the password"

        # no credentials, then a wrong password: the camera's 401, said plainly, and no secret in the answer
        for extra in ((), ("--credentials", str(wrong_file))):
            run = _bench_on(ws, built["build"], docker_url, docker_client, "--source", source, "--no-record", *extra)
            assert run["code"] == 4, (extra, run["out"], run["err"])
            message = run["payload"]["error"]["message"]
            assert "401 Unauthorized" in message and "username and password" in message, message
            _assert_clean("the refusal", run["out"] + run["err"])
    finally:
        for leftover in docker_client.containers.list(all=True, filters={"label": "org.toolchain.role=bench"}):
            if leftover.image.id == image["image_id"]:
                leftover.remove(force=True)
        try:
            docker_client.images.remove(image["image_id"], force=True)
        except Exception:  # noqa: BLE001 - cleanup only
            pass
