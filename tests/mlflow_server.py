"""A real ``mlflow server`` for tests: a free loopback port, a temporary sqlite backend and artifact root.

The server runs from its own virtualenv (``scripts/mlflow_server_venv`` makes it; full MLflow's
dependencies stay out of the project's venv, which needs only the client, the ``[mlflow]`` extra).
Found, in order: ``$TOOLCHAIN_MLFLOW_SERVER`` (an ``mlflow`` executable), the script's default
virtualenv. Without one, or when it does not come up, the tests that need it skip saying what to do,
or fail where ``$TOOLCHAIN_TEST_REQUIRE_MLFLOW`` is set (CI, which installs it; :mod:`tests.services`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.services import skip_or_fail
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120.0
HOW = ("run scripts/mlflow_server_venv (full MLflow in its own virtualenv) or set TOOLCHAIN_MLFLOW_SERVER to an "
       "`mlflow` executable that has the server's dependencies")


@dataclass(frozen=True)
class MlflowServer:
    """A running server: its tracking URI and where it keeps things."""

    uri: str
    port: int
    backend: Path
    artifacts: Path
    log: Path


def server_executable() -> Path | None:
    """The ``mlflow`` executable to run as a server, if one is installed."""
    explicit = os.environ.get("TOOLCHAIN_MLFLOW_SERVER")
    if explicit:
        return Path(explicit)
    venv = os.environ.get("TOOLCHAIN_MLFLOW_SERVER_VENV") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "toolchain" / "mlflow-server")
    candidate = Path(venv) / "bin" / "mlflow"
    return candidate if candidate.is_file() else None


def unavailable(reason: str) -> None:
    """Skip the test (fail it where CI requires MLflow) with ``reason`` and how to get a server."""
    skip_or_fail("mlflow", f"no MLflow server: {reason}; {HOW}")




def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def mlflow_server(directory: Path) -> Iterator[MlflowServer]:
    """Start ``mlflow server`` on 127.0.0.1 with its state under ``directory``; stop it (its process group) after."""
    executable = server_executable()
    if executable is None:
        unavailable("no server virtualenv found")
    assert executable is not None
    directory.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):  # the free port may be taken between choosing it and binding it
        port = free_port()
        uri = f"http://127.0.0.1:{port}"
        server = MlflowServer(uri=uri, port=port, backend=directory / f"mlflow-{attempt}.db",
                              artifacts=directory / f"artifacts-{attempt}", log=directory / f"server-{attempt}.log")
        with server.log.open("wb") as log:
            process = subprocess.Popen(
                [str(executable), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                 "--backend-store-uri", f"sqlite:///{server.backend}", "--artifacts-destination", str(server.artifacts)],
                cwd=directory, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                env=_server_environment(),
            )
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while time.monotonic() < deadline and process.poll() is None and not _healthy(uri):
                time.sleep(0.3)
            if _healthy(uri):
                yield server
                return
            if process.poll() is None:
                unavailable(f"mlflow server did not answer in {START_TIMEOUT_S:.0f} s; its log ends with: "
                            f"{server.log.read_text(errors='replace')[-1500:]}")
            if "address already in use" not in server.log.read_text(errors="replace").lower():
                unavailable(f"mlflow server exited with {process.returncode}; its log ends with: "
                            f"{server.log.read_text(errors='replace')[-1500:]}")
        finally:
            _stop(process)
    unavailable("three free ports were taken before the server could bind them")


def _server_environment() -> dict[str, str]:
    """The caller's environment without MLFLOW_* settings; no job runner (a dozen huey worker processes on 2 cores)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    environment["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # GenAI background jobs; tracking needs none
    return environment


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's own process group (uvicorn and its workers), SIGKILL what is left after 10 s."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
