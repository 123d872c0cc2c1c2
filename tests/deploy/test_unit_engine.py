"""One unit's rollout against a real Docker engine, with small stand-in service images (seconds, not minutes).

The images answer HTTP on ``$TOOLCHAIN_SERVE_PORT`` and have a fast HEALTHCHECK, like the packaged
runtime image; a "broken" one exits at once. The tests put the unit in the states a crash between two
steps of a switch leaves behind and check that a rerun never leaves the unit without a serving container.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.docker import conftest as _engine
from tests.ports import free_port
from toolchain.deploy.fleet import Unit
from toolchain.deploy.unit import (
    DEPLOYED, FAILED, ROLLED_BACK, UNCHANGED, Release, _create, container_names, deploy_unit, wait_healthy,
)

pytestmark = pytest.mark.docker
# The Docker fixtures live in tests/docker/conftest.py; these tests use them from here.
docker_url, docker_client, base_image = _engine.docker_url, _engine.docker_client, _engine.base_image

_OK = """FROM {base}
LABEL org.toolchain.role="serve" org.toolchain.test-release="{name}"
HEALTHCHECK --interval=1s --timeout=2s --start-period=20s --retries=2 \\
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/' % os.environ['TOOLCHAIN_SERVE_PORT'], timeout=1)"]
ENTRYPOINT ["sh", "-c", "exec python3 -m http.server \\"$TOOLCHAIN_SERVE_PORT\\" --bind 127.0.0.1", "serve"]
"""
_BROKEN = """FROM {base}
LABEL org.toolchain.role="serve" org.toolchain.test-release="{name}"
HEALTHCHECK --interval=1s --timeout=2s --retries=2 CMD ["true"]
ENTRYPOINT ["sh", "-c", "echo broken on purpose; exit 3", "serve"]
"""


@pytest.fixture(scope="module")
def images(docker_client: Any, base_image: str) -> Iterator[dict[str, str]]:
    """Image ids of releases ``a`` and ``b`` (healthy) and ``broken`` (exits at once)."""
    tag = f"toolchain-review/{uuid.uuid4().hex[:8]}"
    made: dict[str, str] = {}
    try:
        for name, text in (("a", _OK), ("b", _OK), ("broken", _BROKEN)):
            image, _ = docker_client.images.build(fileobj=io.BytesIO(text.format(base=base_image, name=name).encode()),
                                                  tag=f"{tag}:{name}", rm=True)
            made[name] = image.id
        yield made
    finally:
        for name in made:
            try:
                docker_client.images.remove(f"{tag}:{name}", force=True)
            except Exception:  # noqa: BLE001 - cleanup
                pass


@pytest.fixture()
def model(docker_client: Any) -> Iterator[str]:
    """A model name no other test uses on the shared engine; its containers are removed afterwards."""
    name = f"review-{uuid.uuid4().hex[:10]}"
    yield name
    for container_name in container_names(name):
        try:
            docker_client.containers.get(container_name).remove(force=True)
        except Exception:  # noqa: BLE001 - cleanup
            pass


def _release(image_id: str, model: str) -> Release:
    """A release whose image is on the engine already (no archive: a transfer would fail the test)."""
    return Release(image_record="rec-" + image_id[7:19], image_id=image_id, tag="", model=model, build="b" * 64,
                   target="x86-64-cpu", artifact_sha256="c" * 64, backend="onnxruntime")


class _OneFile:
    """An image archive that is one file, whatever it holds."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def full(self) -> Path:
        return self.path

    def layers(self) -> Any:
        from toolchain.images.layers import read_layers

        return read_layers(self.path)

    def partial(self, skip: int) -> Path:
        raise AssertionError("a partial archive of a file that is no image")

    def gzipped(self, path: Path) -> Path:
        raise AssertionError("compressing a file that is no image")


def _unit(docker_url: str, port: int, cameras: tuple[str, ...] = ("synthetic",)) -> Unit:
    return Unit(name="u1", url=docker_url, target="x86-64-cpu", cameras=cameras, http_port=port, health_timeout_s=40)


def _running(client: Any, name: str) -> tuple[str, str] | None:
    import docker.errors

    try:
        container = client.containers.get(name)
    except docker.errors.NotFound:
        return None
    return container.status, container.attrs["Image"]


def test_a_rerun_after_a_crash_between_stopping_the_old_and_renaming_never_leaves_the_unit_dark(
        docker_url: str, docker_client: Any, images: dict[str, str], model: str) -> None:
    serving, previous, nxt = container_names(model)
    unit = _unit(docker_url, free_port())
    first = deploy_unit(unit, _release(images["a"], model), deployment="d1")
    assert first.result == DEPLOYED, first.message
    # The switch to b crashed after the old container was stopped, before the new one took the name.
    candidate = _create(docker_client, unit, _release(images["b"], model), nxt, unit.http_port + 1, "d2")
    candidate.start()
    assert wait_healthy(candidate, 40)[0]
    docker_client.containers.get(serving).stop(timeout=5)
    # The rerun is a different release (say, the alias moved again) that fails its health check.
    again = deploy_unit(unit, _release(images["broken"], model), deployment="d3")
    assert again.result == ROLLED_BACK, again.message
    assert _running(docker_client, serving) == ("running", images["b"])  # the healthy release still serves
    assert _running(docker_client, nxt) is None
    assert _running(docker_client, previous) == ("exited", images["a"])


def test_a_rerun_after_a_crash_between_the_two_renames_never_leaves_the_unit_dark(
        docker_url: str, docker_client: Any, images: dict[str, str], model: str) -> None:
    serving, previous, nxt = container_names(model)
    unit = _unit(docker_url, free_port())
    assert deploy_unit(unit, _release(images["a"], model), deployment="d1").result == DEPLOYED
    candidate = _create(docker_client, unit, _release(images["b"], model), nxt, unit.http_port + 1, "d2")
    candidate.start()
    assert wait_healthy(candidate, 40)[0]
    old = docker_client.containers.get(serving)
    old.stop(timeout=5)
    old.rename(previous)  # crashed here: nothing is called `serving`, the healthy new one is still `-next`
    again = deploy_unit(unit, _release(images["broken"], model), deployment="d3")
    assert again.result == ROLLED_BACK, again.message
    assert _running(docker_client, serving) == ("running", images["b"])
    assert _running(docker_client, previous) == ("exited", images["a"])
    # and the same release as the crashed run just finishes the job
    done = deploy_unit(unit, _release(images["b"], model), deployment="d4")
    assert done.result == UNCHANGED, done.message


def test_a_changed_fleet_entry_is_applied_even_when_the_image_is_the_same(
        docker_url: str, docker_client: Any, images: dict[str, str], model: str) -> None:
    serving, _, _ = container_names(model)
    port = free_port()
    assert deploy_unit(_unit(docker_url, port), _release(images["a"], model), deployment="d1").result == DEPLOYED
    assert deploy_unit(_unit(docker_url, port), _release(images["a"], model), deployment="d2").result == UNCHANGED
    moved = deploy_unit(_unit(docker_url, port, cameras=("north=rtsp://10.0.0.7/s1",)), _release(images["a"], model),
                        deployment="d3")
    assert moved.result == DEPLOYED, moved.message
    assert docker_client.containers.get(serving).attrs["Args"][-2:] == ["--source", "north=rtsp://10.0.0.7/s1"]


def test_an_image_that_cannot_be_loaded_leaves_the_old_container_serving(
        tmp_path: Path, docker_url: str, docker_client: Any, images: dict[str, str], model: str) -> None:
    serving, _, nxt = container_names(model)
    unit = _unit(docker_url, free_port())
    assert deploy_unit(unit, _release(images["a"], model), deployment="d1").result == DEPLOYED
    garbage = tmp_path / "image.tar"
    garbage.write_bytes(b"not a docker save tarball" * 100)
    release = Release(image_record="r", image_id="sha256:" + "1" * 64, tag="toolchain/none:x", model=model, build="b" * 64,
                      target="x86-64-cpu", artifact_sha256="c" * 64, backend="onnxruntime", archive=_OneFile(garbage))
    result = deploy_unit(unit, release, deployment="d2")
    assert result.result == FAILED and "docker load" in result.message and "still serves" in result.message
    assert _running(docker_client, serving) == ("running", images["a"]) and _running(docker_client, nxt) is None


def test_the_new_container_keeps_off_the_port_of_a_crash_looping_old_one(
        docker_url: str, docker_client: Any, images: dict[str, str], model: str) -> None:
    import time

    serving, _, _ = container_names(model)
    unit = _unit(docker_url, free_port())
    old = _create(docker_client, unit, _release(images["broken"], model), serving, unit.http_port, "d0")
    old.start()
    deadline = time.monotonic() + 20
    while old.status != "restarting" and time.monotonic() < deadline:
        time.sleep(0.2)
        old.reload()
    assert old.status == "restarting"
    result = deploy_unit(unit, _release(images["a"], model), deployment="d1")
    assert result.result == DEPLOYED, result.message
    assert result.http_port == unit.http_port + 1
