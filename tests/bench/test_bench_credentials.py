"""``bench --credentials FILE``: a camera that wants a password is benchmarked without the password ever on
a command line, and it shows nowhere.

The camera is GStreamer's RTSP server (``scripts/rtsp_server --auth-file``) requiring HTTP Basic
authentication; those tests skip, saying what to install, where Debian's python3 lacks it. The rest (names,
the container's copy of the file, what is recorded) need no server.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import run_main
from tests.onnx_fixtures import register_tiny_onnx
from tests.serve.rtsp import StartServer, camera_clip, rtsp_server_fixture  # noqa: F401 - the fixture
from toolchain.bench.remote import _credentials, _sources, _user_ids
from toolchain.bench.run import BenchConfig
from toolchain.errors import UsageError
from toolchain.serve.credentials import CONTAINER_PATH, container_archive
from toolchain.workspace import Workspace

pytest.importorskip("av")
ROOT = Path(__file__).resolve().parents[2]
USERNAME = "benchadmin"
PASSWORD = "Bench-Pa55:wd-4r"  # noqa: S105 - what the tests hunt for (a ':' too: it must be percent-encoded)
WRONG = "Not-The-Pa55-7k"  # noqa: S105


def _credentials_file(tmp_path: Path, password: str = PASSWORD, camera: str = "north") -> Path:
    path = tmp_path / f"cameras-{camera}-{len(password)}.json"
    path.write_text(json.dumps({"cameras": {camera: {"username": USERNAME, "password": password}}}))
    path.chmod(0o400)
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("bench-creds")
    with Workspace(tmp / "ws") as ws:
        register_tiny_onnx(ws, tmp, name="tiny-onnx")
    return tmp / "ws"


def _bench(workspace: Path, *args: str) -> tuple[int, Any, str, str, str]:
    """``toolchain bench tiny-onnx@v1 ARGS`` in a child process: exit code, JSON, stdout, stderr and its argv as
    ``ps`` showed it while it ran."""
    command = [sys.executable, "-m", "toolchain", "--workspace", str(workspace), "--json", "bench", "tiny-onnx@v1",
               "--duration", "1.5", "--warmup", "0.3", "--budget-ms", "500", "--plots", str(workspace / "plots"), *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    time.sleep(0.5)
    try:
        argv = Path(f"/proc/{process.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        argv = " ".join(command)
    out, err = process.communicate(timeout=300)
    payload = json.loads(out) if out.strip().startswith("{") else None
    return process.returncode, payload, out, err, argv


def _assert_clean(where: str, text: str) -> None:
    for secret in (PASSWORD, WRONG, PASSWORD.replace(":", "%3A")):
        assert secret not in text, f"{where} shows the camera's password"


@pytest.mark.timeout(300)
def test_bench_reads_a_password_camera_from_the_credentials_file(rtsp_server: StartServer, workspace: Path,
                                                                 tmp_path: Path) -> None:
    """The camera answers only with its password: given by name in --credentials FILE, bench measures it, and the
    password is in no output, record, registry file or process argument (bench's or the camera's)."""
    server = rtsp_server({"cam": camera_clip(tmp_path / "cam.mp4")}, auth=(USERNAME, PASSWORD))
    assert server.process is not None
    _assert_clean("the RTSP server's argv", Path(f"/proc/{server.process.pid}/cmdline").read_bytes().decode())
    secrets = _credentials_file(tmp_path)
    code, report, out, err, argv = _bench(workspace, "--source", f"north={server.url('cam')}", "--credentials",
                                          str(secrets))
    assert code == 0, err
    assert report["frames"] > 0 and report["fps"] > 0, report
    assert [s["name"] for s in report["stream_states"]] == ["north"]
    assert report["config"]["credentials"] == str(secrets)
    assert report["config"]["sources"] == [f"north={server.url('cam')}"]  # the name and URL as typed: no secret
    for where, text in (("bench --json", out), ("bench's console", err), ("bench's argv", argv)):
        _assert_clean(where, text)
    code, _, out, err = _toolchain(workspace, "registry", "show", report["benchmark"])
    assert code == 0, err
    _assert_clean("registry show", out + err)
    for path in workspace.rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), f"{path} holds the password"


@pytest.mark.timeout(300)
def test_bench_says_when_a_camera_refuses_missing_or_wrong_credentials(rtsp_server: StartServer, workspace: Path,
                                                                        tmp_path: Path) -> None:
    """Without credentials, or with a wrong password, the camera answers 401: exit 4 with a message that says
    the camera wants a username and password and where they go, never quoting the one tried."""
    server = rtsp_server({"cam": camera_clip(tmp_path / "cam.mp4")}, auth=(USERNAME, PASSWORD))
    source = f"north={server.url('cam')}"
    for extra in ((), ("--credentials", str(_credentials_file(tmp_path, WRONG)))):
        code, report, out, err, _ = _bench(workspace, "--source", source, "--no-record", *extra)
        assert code == 4 and report is not None, (extra, out, err)
        message = report["error"]["message"]
        assert message.startswith("no stream could be opened: BadInputError: north refused the connection"), message
        assert "401 Unauthorized" in message and "username and password" in message and "--credentials" in message
        assert "is it a video file or stream" not in message
        _assert_clean("the refusal", out + err)


def _toolchain(workspace: Path, *args: str) -> tuple[int, Any, str, str]:
    run = subprocess.run([sys.executable, "-m", "toolchain", "--workspace", str(workspace), "--json", *args],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    return run.returncode, None, run.stdout, run.stderr


def test_the_credentials_file_must_name_the_benched_cameras(workspace: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Names work as for serve: an entry for a camera no --source names is a usage error (a typo in a name would
    otherwise send the camera no password), and a password for a file is refused."""
    secrets = _credentials_file(tmp_path, camera="south")
    result = run_main(["--workspace", workspace, "bench", "tiny-onnx@v1", "--source", "north=rtsp://127.0.0.1:1/x",
                       "--credentials", secrets, "--no-record"], capsys)
    assert result.code == 2 and "south" in result.err and "NAME=URL" in result.err, result.err
    _assert_clean("the usage error", result.out + result.err)
    with pytest.raises(UsageError, match="--pure"):
        BenchConfig(artifact="x", pure=True, credentials=secrets)


def test_bench_on_sends_names_and_a_0400_file_never_the_secret_in_the_request(tmp_path: Path) -> None:
    """``bench --on``: the request keeps ``NAME=URL`` sources free of credentials (files sent along keep their
    name); the secret travels only in the archive copied into the container, as serve's file: 0400, owned by
    the image's user."""
    clip = camera_clip(tmp_path / "gantry.mp4", seconds=0.5)
    specs = ("north=rtsp://10.0.0.5/s1", f"gantry={clip}", "synthetic:64x48@10", "rtsp://10.0.0.6/s2")
    seen, files, network = _sources(specs)
    assert seen == ["north=rtsp://10.0.0.5/s1", "gantry=/toolchain-build/in/0-gantry.mp4", "synthetic:64x48@10",
                    "rtsp://10.0.0.6/s2"]
    assert files == {"in/0-gantry.mp4": clip} and network
    config = BenchConfig(artifact="x", sources=specs, credentials=_credentials_file(tmp_path))
    payload = _credentials(config)
    assert payload is not None and json.loads(payload) == {"cameras": {"north": {"username": USERNAME,
                                                                                 "password": PASSWORD}}}
    assert _credentials(BenchConfig(artifact="x", sources=specs)) is None
    with pytest.raises(UsageError, match="south"):
        _credentials(BenchConfig(artifact="x", sources=specs, credentials=_credentials_file(tmp_path, camera="south")))
    archive = tarfile.open(fileobj=io.BytesIO(container_archive(payload, uid=10001, gid=10002)))
    (member,) = archive.getmembers()
    assert "/" + member.name == CONTAINER_PATH and member.mode == 0o400 and (member.uid, member.gid) == (10001, 10002)
    assert archive.extractfile(member).read().decode() == payload  # type: ignore[union-attr]
    assert config.to_json()["credentials"] == str(config.credentials)
    json.dumps(config.to_json())  # recordable

    class Image:
        def __init__(self, user: str) -> None:
            self.attrs = {"Config": {"User": user}}

    assert _user_ids(Image("10001:10001")) == (10001, 10001) and _user_ids(Image("")) == (0, 0)
    assert _user_ids(Image("7")) == (7, 7)
    with pytest.raises(UsageError, match="numeric"):
        _user_ids(Image("service"))
