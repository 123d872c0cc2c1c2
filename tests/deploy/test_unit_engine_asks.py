"""One unit's rollout asks the unit's engine for its ``/info`` once: the architecture check (before and after
the transfer) and the service's CPU limit share the answer, since each ask is a round trip over the unit's link.

The engine is a stand-in at the Docker SDK's boundary, holding just what one rollout touches (containers by
name, an image already on the unit, a health check that passes); a real engine's side is
tests/deploy/test_unit_engine.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from toolchain.deploy.fleet import Unit
from toolchain.deploy.unit import DEPLOYED, REFUSED, Release, deploy_unit


class _Container:
    def __init__(self, engine: _Engine, name: str, image: str, labels: dict[str, str], **options: Any) -> None:
        self.engine, self.name, self.id, self.labels, self.options = engine, name, f"c-{name}", labels, options
        self.status = "created"
        self.attrs: dict[str, Any] = {"Image": image, "Config": {"Labels": labels}, "RestartCount": 0, "State": {}}

    def start(self) -> None:
        self.status = "running"

    def reload(self) -> None:
        self.attrs["State"] = {"Status": self.status, "Health": {"Status": "healthy", "Log": [{"Output": "ok"}]}}

    def rename(self, name: str) -> None:
        self.engine.named[name] = self.engine.named.pop(self.name)
        self.name = name


class _Containers:
    def __init__(self, engine: _Engine) -> None:
        self.engine = engine

    def get(self, name: str) -> _Container:
        import docker.errors

        if name not in self.engine.named:
            raise docker.errors.NotFound(f"no container {name}")
        return self.engine.named[name]

    def create(self, image: str, *, name: str, labels: dict[str, str], **options: Any) -> _Container:
        self.engine.named[name] = _Container(self.engine, name, image, labels, **options)
        return self.engine.named[name]

    def run(self, image: str, command: list[str], **options: Any) -> bytes:  # the `uname -m` probe
        self.engine.probes += 1
        return f"{self.engine.runs_as}\n".encode()

    def list(self, **filters: Any) -> list[_Container]:
        return []


class _Api:
    def inspect_image(self, image_id: str) -> dict[str, Any]:
        return {"Id": image_id, "RootFS": {"Layers": ["sha256:layer"]}}  # the release is on the unit already

    def tag(self, *args: Any) -> None:
        pass

    def images(self, **filters: Any) -> list[dict[str, Any]]:
        return []


class _Volumes:
    def list(self, **filters: Any) -> list[Any]:
        return []


class _Engine:
    """A unit's engine on ``architecture`` with ``cpus`` CPUs, running images as ``runs_as`` (qemu-user or not)."""

    def __init__(self, architecture: str, runs_as: str, cpus: int = 1) -> None:
        self.architecture, self.runs_as, self.cpus = architecture, runs_as, cpus
        self.asked_info = self.probes = 0
        self.named: dict[str, _Container] = {}
        self.containers, self.api, self.volumes = _Containers(self), _Api(), _Volumes()

    def info(self) -> dict[str, Any]:
        self.asked_info += 1
        return {"Architecture": self.architecture, "NCPU": self.cpus}

    def close(self) -> None:
        pass


def _rollout(monkeypatch: pytest.MonkeyPatch, engine: _Engine, target: str) -> Any:
    import toolchain.docker_engine

    monkeypatch.setattr(toolchain.docker_engine, "connect", lambda *args, **kwargs: engine)
    unit = Unit(name="u1", url="unix:///nowhere.sock", target=target, cameras=("synthetic",), health_timeout_s=5)
    release = Release(image_record="rec", image_id="sha256:" + "1" * 64, tag="toolchain/m:t", model="m", build="b" * 64,
                      target=target, artifact_sha256="c" * 64, backend="onnxruntime")
    return deploy_unit(unit, release, deployment="d1")


def test_a_native_units_rollout_asks_its_engine_info_once(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = _Engine("x86_64", runs_as="x86_64", cpus=1)
    result = _rollout(monkeypatch, engine, "x86-64-cpu")
    assert result.result == DEPLOYED, result.message
    assert engine.asked_info == 1 and engine.probes == 0
    serving = engine.named["toolchain-m"]
    assert serving.options["nano_cpus"] == 1_000_000_000  # the limit is clamped by the same answer's NCPU


def test_an_emulated_units_rollout_asks_its_engine_info_once_across_both_architecture_checks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    engine = _Engine("x86_64", runs_as="aarch64", cpus=1)
    result = _rollout(monkeypatch, engine, "aarch64-cpu")
    assert result.result == DEPLOYED, result.message
    assert (result.architecture, result.emulated) == ("aarch64", True)
    assert engine.asked_info == 1 and engine.probes == 1


def test_a_unit_whose_engine_cannot_run_the_image_is_refused_with_the_same_words(monkeypatch: pytest.MonkeyPatch) -> None:
    no_qemu = _Engine("x86_64", runs_as="", cpus=1)
    result = _rollout(monkeypatch, no_qemu, "aarch64-cpu")
    assert result.result == REFUSED and "engine (x86_64) cannot run the aarch64 image (uname -m gave nothing)" in \
        result.message and no_qemu.asked_info == 1
    jetson = _Engine("aarch64", runs_as="aarch64", cpus=1)
    result = _rollout(monkeypatch, jetson, "x86-64-cpu")
    assert result.result == REFUSED and "its engine runs on aarch64 and cannot run x86_64 binaries" in result.message
    assert jetson.probes == 0 and jetson.named == {}  # refused before anything reached the unit
