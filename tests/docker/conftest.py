"""Fixtures for tests that need a real Docker engine (marked ``docker``; CI starts one first).

The engine is ``$TOOLCHAIN_TEST_DOCKER_HOST`` (``scripts/dockerd_up`` prints one), else ``$DOCKER_HOST``;
the image with python3 + numpy + onnxruntime is ``$TOOLCHAIN_TEST_BASE_IMAGE`` (default
``toolchain/runtime-base:bookworm``, made by ``scripts/make_base_image``). Tests skip, saying why, when
either is missing, so a laptop without Docker still runs the rest; where ``$TOOLCHAIN_TEST_REQUIRE_DOCKER``
is set (CI, once it started the engine and made the image) they fail instead (:mod:`tests.services`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.services import skip_or_fail

BASE_IMAGE = os.environ.get("TOOLCHAIN_TEST_BASE_IMAGE", "toolchain/runtime-base:bookworm")


@pytest.fixture(scope="session")
def docker_url() -> str:
    url = os.environ.get("TOOLCHAIN_TEST_DOCKER_HOST") or os.environ.get("DOCKER_HOST")
    if not url:
        skip_or_fail("docker", "no Docker engine: run `scripts/dockerd_up` and set TOOLCHAIN_TEST_DOCKER_HOST")
    return url


@pytest.fixture(scope="session")
def docker_client(docker_url: str) -> Iterator[Any]:
    from toolchain.docker_engine import connect

    client = connect(docker_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def base_image(docker_client: Any) -> str:
    import docker.errors

    try:
        docker_client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        skip_or_fail("docker", f"the engine has no {BASE_IMAGE}: run scripts/make_base_image")
    return BASE_IMAGE
