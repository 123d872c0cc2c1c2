"""Camera credentials come from a file by camera name, reach only the stream opener, and leak nowhere.

The end-to-end test runs ``serve`` in-process with an RTSP camera that refuses connections: FFmpeg's
error quotes the URL it was given, credentials included, and that error travels to /healthz, /metrics
labels, the events, the result and the CLI. None of them may show the password.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.serve.fixtures import tiny_build, write_video
from toolchain.errors import BadInputError, UsageError
from toolchain.serve.bundle import model_from_registry
from toolchain.serve.credentials import CameraCredential, load_credentials, parse_credentials, to_json
from toolchain.serve.reconnect import Backoff
from toolchain.serve.service import ServeConfig, serve
from toolchain.workspace import Workspace

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "Cam-Pass-93kq"  # noqa: S105 - what the tests hunt for
TOKEN = "QueryTok-55xy"  # noqa: S105


def _secrets_file(tmp_path: Path) -> Path:
    path = tmp_path / "cameras.json"
    path.write_text(json.dumps({"cameras": {
        "north": {"username": "admin", "password": PASSWORD},
        "south": {"url": f"rtsp://127.0.0.1:1/live?user=admin&pwd={TOKEN}"},
    }}))
    path.chmod(0o400)
    return path


def test_credentials_apply_by_camera_name(tmp_path: Path) -> None:
    creds = load_credentials(_secrets_file(tmp_path))
    assert creds["north"].apply("rtsp://10.0.0.5:554/s1") == f"rtsp://admin:{PASSWORD}@10.0.0.5:554/s1"
    assert creds["south"].apply("rtsp://ignored/x") == f"rtsp://127.0.0.1:1/live?user=admin&pwd={TOKEN}"
    assert CameraCredential(username="a b", password="p@ss:/").apply("rtsp://h/x") == "rtsp://a%20b:p%40ss%3A%2F@h/x"
    assert load_credentials(None) == {}
    # the container's file round-trips; TOML is read on the workstation
    assert parse_credentials(json.loads(to_json(creds)), "again") == creds
    toml = tmp_path / "c.toml"
    toml.write_text(f'[cameras.north]\nusername = "admin"\npassword = "{PASSWORD}"\n')
    assert load_credentials(toml)["north"].password == PASSWORD


@pytest.mark.parametrize("data", [
    {"north": {"password": "x"}},
    {"cameras": {"north": {"username": "a", "url": "rtsp://h"}}},
    {"cameras": {"north": {"pin": "1234"}}},
    {"cameras": {"north": {"username": "", "password": ""}}},
])
def test_malformed_credentials_are_refused_without_quoting_secrets(data: dict) -> None:
    with pytest.raises(BadInputError) as info:
        parse_credentials(data, "creds.json")
    assert "1234" not in str(info.value) and "creds.json" in str(info.value)


def test_a_credential_for_an_unnamed_camera_is_refused(tmp_path: Path) -> None:
    with Workspace(tmp_path / "ws") as ws:
        model = model_from_registry(ws, tiny_build(ws, tmp_path))
    config = ServeConfig(sources=("rtsp://127.0.0.1:1/x",), credentials=_secrets_file(tmp_path), port=0, duration_s=1)
    with pytest.raises(UsageError, match="no --source names"):
        serve(model, config, install_signals=False)


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.read().decode()


def test_serve_opens_cameras_with_their_credentials_and_shows_them_nowhere(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    with Workspace(tmp_path / "ws") as ws:
        model = model_from_registry(ws, tiny_build(ws, tmp_path))
    write_video(tmp_path / "cam.mp4", frames=10, fps=10)
    events = tmp_path / "events.jsonl"
    inline = f"rtsp://viewer:{PASSWORD}@127.0.0.1:1/inline?token={TOKEN}"  # a user's own command line, still redacted
    config = ServeConfig(sources=(f"gantry={tmp_path / 'cam.mp4'}", "north=rtsp://127.0.0.1:1/stream1",
                                  "south=rtsp://127.0.0.1:1/live", inline),
                         credentials=_secrets_file(tmp_path), loop=True, events=str(events), port=0, stale_s=5,
                         backoff=Backoff(initial_s=0.05, max_s=0.2))
    stop, ready, port, results, seen = threading.Event(), threading.Event(), [], [], {}

    def run() -> None:
        results.append(serve(model, config, stop=stop, install_signals=False,
                             on_ready=lambda p: (port.append(p), ready.set())))

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert ready.wait(20)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            seen["health"] = json.loads(_get(f"http://127.0.0.1:{port[0]}/healthz"))
            if all(c["errors"] >= 2 for name, c in seen["health"]["cameras"].items() if name != "gantry"):
                break
            time.sleep(0.1)
        seen["metrics"] = _get(f"http://127.0.0.1:{port[0]}/metrics")
    finally:
        stop.set()
        thread.join(30)
    cameras = seen["health"]["cameras"]
    assert cameras["gantry"]["up"] and cameras["north"]["errors"] >= 2 and cameras["south"]["errors"] >= 2
    assert "127.0.0.1:1" in cameras["north"]["last_error"]  # the error is there, its secret is not
    assert "rtsp://***@127.0.0.1:1/inline?token=***" in cameras
    texts = {"/healthz": json.dumps(seen["health"]), "/metrics": seen["metrics"], "events": events.read_text(),
             "result": json.dumps(results[0].to_json()), "output": "".join(capsys.readouterr())}
    for where, text in texts.items():
        assert PASSWORD not in text and TOKEN not in text, f"{where} leaks a camera secret"


def test_the_cli_prints_no_secret_in_errors_or_json(tmp_path: Path) -> None:
    secrets = _secrets_file(tmp_path)
    run = subprocess.run([sys.executable, "-m", "toolchain", "--workspace", str(tmp_path / "ws"), "--json", "serve",
                          str(tmp_path / "no-bundle"), "--source", f"rtsp://u:{PASSWORD}@127.0.0.1:1/x",
                          "--credentials", str(secrets), "--events", str(tmp_path / "e.jsonl"), "--duration", "1"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ})
    assert run.returncode != 0
    assert PASSWORD not in run.stdout + run.stderr and TOKEN not in run.stdout + run.stderr
