"""A missing service skips its tests, unless the run requires it (CI installed it): then they fail."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.services import SERVICES, required, skip_or_fail

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_a_required_service_fails_the_test_instead_of_skipping_it(
        service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    variable, _ = SERVICES[service]
    for off in (None, "", "0", "false", "No"):
        if off is None:
            monkeypatch.delenv(variable, raising=False)
        else:
            monkeypatch.setenv(variable, off)
        assert not required(service)
        with pytest.raises(pytest.skip.Exception, match="the server is not installed"):
            skip_or_fail(service, "the server is not installed")
    for on in ("1", "yes", "true"):
        monkeypatch.setenv(variable, on)
        assert required(service)
        with pytest.raises(pytest.fail.Exception, match=f"the server is not installed .*{variable} is set"):
            skip_or_fail(service, "the server is not installed")


def test_the_switches_are_the_ones_ci_sets() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    names = ("DOCKER", "ARM64", "POSTGRES", "REGISTRY", "RTSP", "MLFLOW", "SSH", "MQTT")
    assert {variable for variable, _ in SERVICES.values()} == {f"TOOLCHAIN_TEST_REQUIRE_{name}" for name in names}
    for name in names:
        assert f"require {name}\n" in ci, name
    with pytest.raises(KeyError):
        skip_or_fail("ftp", "no such service")


FIXTURES = '''
from tests.docker.conftest import docker_url  # noqa: F401
from tests.mlflow_server import mlflow_server
from tests.registry.conftest import postgres_server  # noqa: F401
from tests.serve.rtsp import rtsp_server_fixture  # noqa: F401


def test_docker(docker_url):
    pass


def test_postgres(postgres_server):
    pass


def test_rtsp(rtsp_server):
    pass


def test_mlflow(tmp_path):
    with mlflow_server(tmp_path):
        pass
'''


def _outcomes(tmp_path: Path, environment: dict[str, str]) -> dict[str, str]:
    """Run the fixtures above with every service made unavailable; each test's outcome."""
    tmp_path.mkdir()
    (tmp_path / "test_fixtures.py").write_text(textwrap.dedent(FIXTURES))
    report = tmp_path / "report.xml"
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("TOOLCHAIN_TEST_REQUIRE_") and k not in ("TOOLCHAIN_TEST_DOCKER_HOST", "DOCKER_HOST")}
    base.update(PYTHONPATH=str(ROOT), RTSP_SERVER_PYTHON=str(tmp_path / "no-python"),
                TOOLCHAIN_TEST_PG_BIN=str(tmp_path / "no-postgres"), TOOLCHAIN_MLFLOW_SERVER_VENV=str(tmp_path / "none"))
    base.pop("TOOLCHAIN_MLFLOW_SERVER", None)
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"--junitxml={report}",
                          "--rootdir", str(tmp_path), str(tmp_path / "test_fixtures.py")],
                         cwd=tmp_path, env={**base, **environment}, capture_output=True, text=True, timeout=300)
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("skipped", "failure", "error")]
        outcomes[case.attrib["name"]] = kinds[0] if kinds else "passed"
    assert outcomes, run.stdout + run.stderr
    return outcomes


def test_each_service_fixture_skips_where_missing_and_fails_where_required(tmp_path: Path) -> None:
    assert _outcomes(tmp_path / "laptop", {}) == dict.fromkeys(
        ("test_docker", "test_postgres", "test_rtsp", "test_mlflow"), "skipped")
    switches = {variable: "1" for variable, _ in SERVICES.values()}
    outcomes = _outcomes(tmp_path / "ci", switches)
    assert outcomes == dict.fromkeys(("test_docker", "test_postgres", "test_rtsp", "test_mlflow"), "error") | {
        "test_mlflow": "failure"}, outcomes  # a fixture's failure is an error; mlflow fails in the test body
