"""Whether a Docker engine can run an image's CPU architecture: one decision for package, build, bench and deploy.

An engine runs the binaries of its own CPU. It may run another CPU's too: an x86-64 engine with qemu-user
registered for arm64 (``scripts/binfmt_up arm64``) runs arm64 images, emulated. Engines do not list the foreign
CPUs qemu-user gives them, so that is decided by running ``uname -m`` in the image
(:func:`toolchain.docker_engine.runs_as`), never by a flag or a fleet file. :func:`can_run` gives the answer; each
caller keeps its own outcome on top of it (``package``, ``build --on`` and ``bench --on`` raise, ``deploy``
refuses the unit), with its own advice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class EngineFit:
    """What an engine makes of an image's CPU architecture.

    Attributes:
        architecture: The architecture the image's binaries must run as (the target's: ``x86_64``, ``aarch64``).
        engine_architecture: The engine host's CPU, from its ``/info``.
        ran: What ``uname -m`` in the image gave (empty: it did not run, an exec format error); None when no
            probe ran (no image to run, or none needed on an engine of the image's own CPU).
    """

    architecture: str
    engine_architecture: str
    ran: str | None = None

    @property
    def native(self) -> bool:
        """Whether the engine's own CPU is the image's."""
        return self.engine_architecture == self.architecture

    @property
    def runs(self) -> bool | None:
        """True: the engine runs ``architecture`` binaries (natively, or emulated as the probe showed). False: it
        cannot. None: only a probe of the image can tell (a foreign CPU qemu-user may give the engine)."""
        if self.ran is not None:
            return self.ran == self.architecture
        if self.native:
            return True
        return None if may_emulate(self.engine_architecture, self.architecture) else False

    @property
    def emulated(self) -> bool:
        """Whether the image runs, and under emulation (an arm64 image on an x86-64 engine through qemu-user)."""
        return self.runs is True and not self.native


def may_emulate(engine_architecture: str, architecture: str) -> bool:
    """Whether an engine on ``engine_architecture`` might run ``architecture`` images (then a probe decides).

    Engines do not list the foreign CPUs qemu-user gives them; only an x86-64 one has qemu for arm64 in practice,
    so an arm64 engine (a Jetson) is judged unable to run x86-64 images without a probe.
    """
    return not (engine_architecture == "aarch64" and architecture == "x86_64")


def can_run(client: Any, image: str | None, architecture: str, *, info: Mapping[str, Any] | None = None,
            probe_native: bool = False) -> EngineFit:
    """Whether the engine behind ``client`` runs ``image``'s binaries as ``architecture``, and emulated or not.

    An engine of another CPU than ``architecture`` is probed with ``image`` (``uname -m`` in a throwaway
    container: the image must be on the engine), whatever its CPU; without an image the answer for it stays
    open (``runs`` is None) unless no qemu-user is to be expected there (:func:`may_emulate`).

    Args:
        image: The image's id or reference on the engine; None before it is there (a unit before the transfer).
        architecture: The CPU the image's binaries are for (the target's).
        info: The engine's ``/info`` when the caller already has it (each ask is a round trip to the unit).
        probe_native: Probe on an engine of ``architecture`` too: for an image whose CPU nothing else vouches for
            (a base image, an ``--image`` given by hand), the probe answering ``architecture`` is what proves it runs.
    """
    from toolchain.docker_engine import engine_architecture, runs_as

    engine = engine_architecture(client, info)
    probe = image is not None and (probe_native or engine != architecture)
    return EngineFit(architecture=architecture, engine_architecture=engine,
                     ran=runs_as(client, image) if probe and image is not None else None)
