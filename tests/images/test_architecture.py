"""``can_run``: whether an engine runs an image's CPU, and emulated or not, as package, build, bench and deploy ask it.

The engine is a stand-in at the Docker SDK's boundary: ``info()`` (the engine's ``/info``) and
``containers.run`` (the ``uname -m`` probe), answering as an engine with or without qemu-user registered
would. A real engine's side is in tests/docker (test_arm64.py: an x86-64 engine running arm64 images).
"""

from __future__ import annotations

from typing import Any

import pytest

from toolchain.errors import BadInputError, MissingEnvironmentError
from toolchain.images.architecture import EngineFit, can_run, may_emulate


class _Containers:
    def __init__(self, engine: _Engine) -> None:
        self.engine = engine

    def run(self, image: str, command: list[str], **options: Any) -> bytes:
        import docker.errors

        assert command == ["-m"] and options["entrypoint"] == ["uname"] and options["network_disabled"]
        self.engine.probes.append(image)
        if self.engine.runs_as is None:  # no qemu-user for the image's CPU: exec format error
            raise docker.errors.ContainerError(image, 1, "uname -m", image, b"exec format error")
        return f"{self.engine.runs_as}\n".encode()


class _Engine:
    """A Docker engine on ``architecture`` that runs images as ``runs_as`` (None: it cannot run them)."""

    def __init__(self, architecture: str, runs_as: str | None = None) -> None:
        self.architecture, self.runs_as = architecture, runs_as
        self.asked_info = 0
        self.probes: list[str] = []
        self.containers = _Containers(self)

    def info(self) -> dict[str, Any]:
        self.asked_info += 1
        return {"Architecture": self.architecture, "NCPU": 4}


def test_an_engine_of_the_images_cpu_runs_it_natively_without_a_probe() -> None:
    engine = _Engine("x86_64", runs_as="x86_64")
    fit = can_run(engine, "sha256:img", "x86_64")
    assert (fit.runs, fit.emulated, fit.native, fit.engine_architecture, fit.ran) == (True, False, True, "x86_64", None)
    assert engine.probes == [] and engine.asked_info == 1


def test_an_x86_64_engine_with_qemu_user_runs_an_arm64_image_emulated() -> None:
    engine = _Engine("x86_64", runs_as="aarch64")
    fit = can_run(engine, "sha256:img", "aarch64")
    assert (fit.runs, fit.emulated, fit.ran, fit.engine_architecture) == (True, True, "aarch64", "x86_64")
    assert engine.probes == ["sha256:img"]


def test_an_x86_64_engine_without_qemu_user_cannot_run_an_arm64_image() -> None:
    engine = _Engine("x86_64", runs_as=None)
    fit = can_run(engine, "sha256:img", "aarch64")
    assert (fit.runs, fit.emulated, fit.ran) == (False, False, "")


def test_without_an_image_a_foreign_cpu_stays_open_where_qemu_user_may_be_and_is_refused_where_not() -> None:
    x86 = _Engine("x86_64", runs_as="aarch64")
    open_ = can_run(x86, None, "aarch64")
    assert open_.runs is None and not open_.emulated and x86.probes == []  # decided by a probe once the image is there
    jetson = _Engine("aarch64", runs_as="x86_64")
    assert can_run(jetson, None, "x86_64").runs is False and jetson.probes == []
    assert can_run(jetson, None, "aarch64").runs is True
    assert may_emulate("x86_64", "aarch64") and not may_emulate("aarch64", "x86_64")


def test_with_an_image_a_foreign_cpu_is_always_probed() -> None:
    """An arm64 engine with qemu-user for x86-64 is rare, but the probe, not the guess, decides when there is an image."""
    jetson = _Engine("aarch64", runs_as="x86_64")
    fit = can_run(jetson, "sha256:img", "x86_64")
    assert (fit.runs, fit.emulated) == (True, True) and jetson.probes == ["sha256:img"]


def test_probe_native_proves_an_image_nothing_else_vouches_for() -> None:
    fine = _Engine("x86_64", runs_as="x86_64")
    fit = can_run(fine, "base", "x86_64", probe_native=True)
    assert (fit.runs, fit.emulated, fit.ran) == (True, False, "x86_64") and fine.probes == ["base"]
    broken = _Engine("x86_64", runs_as=None)  # an image of another CPU, mislabelled: it does not run here
    assert can_run(broken, "base", "x86_64", probe_native=True).runs is False


def test_the_engines_info_is_asked_once_or_not_at_all_when_given() -> None:
    engine = _Engine("x86_64", runs_as="aarch64")
    info = {"Architecture": "x86_64"}
    can_run(engine, None, "aarch64", info=info)
    can_run(engine, "sha256:img", "aarch64", info=info)
    assert engine.asked_info == 0 and engine.probes == ["sha256:img"]


def test_the_engines_architecture_is_read_in_target_terms() -> None:
    fit = can_run(_Engine("arm64"), None, "aarch64")
    assert fit.engine_architecture == "aarch64" and fit.native and fit.runs


def test_the_result_is_a_plain_value() -> None:
    fit = EngineFit(architecture="aarch64", engine_architecture="x86_64", ran="aarch64")
    assert fit.runs and fit.emulated and not fit.native


# -- each caller keeps its own outcome on top ---------------------------------------------------------------------
def test_build_on_refuses_an_engine_that_cannot_run_the_target_and_says_when_it_emulates() -> None:
    from toolchain.build.remote import check_architecture

    assert check_architecture(_Engine("x86_64"), "x86_64", "sha256:img") is False
    assert check_architecture(_Engine("x86_64", runs_as="aarch64"), "aarch64", "sha256:img") is True
    with pytest.raises(MissingEnvironmentError, match="runs on x86_64, the target needs aarch64"):
        check_architecture(_Engine("x86_64", runs_as=None), "aarch64", "sha256:img")
    with pytest.raises(MissingEnvironmentError, match="runs on x86_64, the target needs aarch64"):
        check_architecture(_Engine("x86_64", runs_as="aarch64"), "aarch64")  # no image to probe


def test_package_probes_the_base_image_and_records_emulation() -> None:
    from toolchain.package.image import engine_runs
    from toolchain.targets.profile import load_target

    class _Base:
        id = "sha256:base"
        attrs = {"Architecture": "arm64"}

    target = load_target("aarch64-cpu")
    assert engine_runs(_Engine("x86_64", runs_as="aarch64"), _Base(), target, "debian") == {
        "architecture": "aarch64", "engine_architecture": "x86_64", "emulated": True}
    native = _Engine("aarch64", runs_as="aarch64")
    assert engine_runs(native, _Base(), target, "debian")["emulated"] is False and native.probes == ["sha256:base"]
    with pytest.raises(MissingEnvironmentError, match=r"engine \(x86_64\) cannot run aarch64 binaries .*gave nothing"):
        engine_runs(_Engine("x86_64", runs_as=None), _Base(), target, "debian")
    with pytest.raises(BadInputError, match="the base image debian is aarch64"):
        engine_runs(_Engine("x86_64"), _Base(), load_target("x86-64-cpu"), "debian")
