"""Skip a test whose service is missing here, or fail it where the run says the service is installed.

Tests that need a real service (a Docker engine, PostgreSQL, ...) skip, saying why, on a laptop without it.
CI installs each service first; a skip there would let CI pass without testing what it claims to test, so
``.ci/run`` sets a require switch for each service it installed and started, and :func:`skip_or_fail` turns
that service's skips into failures. Set a switch yourself to check that a local run really used a service::

    TOOLCHAIN_TEST_REQUIRE_DOCKER=1 TOOLCHAIN_TEST_REQUIRE_POSTGRES=1 scripts/test -m "docker or not slow"
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

SERVICES: dict[str, tuple[str, str]] = {
    "docker": ("TOOLCHAIN_TEST_REQUIRE_DOCKER", "a Docker engine with the base image (unit engines: root and dockerd)"),
    "arm64": ("TOOLCHAIN_TEST_REQUIRE_ARM64", "the arm64 base image on the Docker engine (qemu-user emulation)"),
    "postgres": ("TOOLCHAIN_TEST_REQUIRE_POSTGRES", "a PostgreSQL server (Debian's postgresql) and psycopg"),
    "registry": ("TOOLCHAIN_TEST_REQUIRE_REGISTRY", "an image registry (Debian's docker-registry)"),
    "rtsp": ("TOOLCHAIN_TEST_REQUIRE_RTSP", "GStreamer's RTSP server (scripts/rtsp_server)"),
    "mlflow": ("TOOLCHAIN_TEST_REQUIRE_MLFLOW", "an MLflow tracking server (scripts/mlflow_server_venv)"),
    "ssh": ("TOOLCHAIN_TEST_REQUIRE_SSH", "an OpenSSH server and client (Debian's openssh-server, openssh-client)"),
    "mqtt": ("TOOLCHAIN_TEST_REQUIRE_MQTT", "an MQTT broker (Debian's mosquitto, mosquitto_passwd)"),
}
"""Service name -> (the environment variable that requires it, what it is)."""

_OFF = {"", "0", "false", "no", "off"}


def required(service: str) -> bool:
    """Whether this run must have ``service`` (its switch is set to anything but an empty, 0, false, no or off)."""
    variable, _ = SERVICES[service]
    return os.environ.get(variable, "").strip().lower() not in _OFF


def skip_or_fail(service: str, reason: str) -> NoReturn:
    """Skip the test because ``service`` is unavailable (``reason`` says why and what to do), or fail it where the
    service is required.

    Raises:
        KeyError: ``service`` is not one of :data:`SERVICES`.
    """
    variable, what = SERVICES[service]
    if required(service):
        pytest.fail(f"{reason} ({variable} is set: this run installed {what}, so its tests must not skip)",
                    pytrace=False)
    pytest.skip(reason)
