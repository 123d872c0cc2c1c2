"""Exactly what of the toolchain the roadside image ships: the runtime, not the workstation.

The image runs ``serve``, its health check and ``bench --on`` (:mod:`toolchain.bench.onunit`); they
import only the modules below (numpy, PyAV, OpenCV for the vehicle pipeline's motion finder, ONNX Runtime
or TensorRT + pycuda, click, rich and paho-mqtt from the image). None of it is the CLI: the entry point
(:mod:`toolchain.serve.__main__`) runs the ``serve`` command defined with the service
(:mod:`toolchain.serve.command`), which ``toolchain serve`` registers as it is, and prints through
:mod:`toolchain.console`. Everything listed must run on the oldest Python of a
target ``package`` accepts (:data:`MIN_RUNTIME_PYTHON`); ``tests/package/test_runtime_python.py`` runs
``vermin`` over exactly these files for every target's Python, and checks that every ``toolchain`` import
in them (lazy ones included) stays inside the set, except the workstation-only ones in :data:`WORKSTATION_ONLY`,
that none is of :mod:`toolchain.cli`, and that the entry point runs with the CLI unimportable.
"""

from __future__ import annotations

import shutil
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]

# Python files (globs relative to the toolchain package) and data the runtime reads.
RUNTIME_FILES = (
    "__init__.py", "errors.py", "redaction.py", "console.py", "fileio.py", "hashing.py",
    "runtime/*.py", "serve/*.py",  # runtime/: the vehicle pipeline (geometry, find, track, lines, vehicles) and the
    # synthetic camera's scene (scene.py) too
    "publish/*.py",  # serve --publish: the spool and the MQTT publisher
    "bench/__init__.py", "bench/stats.py", "bench/report.py", "bench/onunit.py",
)
# Imported only on a workstation, inside functions the image never calls (serving a registry reference).
WORKSTATION_ONLY = ("toolchain.registry.ops", "toolchain.registry.aliases")
MIN_RUNTIME_PYTHON = (3, 8)
"""The oldest Python the runtime supports: JetPack 5's. JetPack 4.6 ships 3.6 (its TensorRT bindings exist
for no other Python), so ``package`` refuses JetPack 4.6 targets."""


def runtime_files() -> list[Path]:
    """The runtime's files, relative to the toolchain package, sorted."""
    found = {p.relative_to(PACKAGE) for pattern in RUNTIME_FILES for p in PACKAGE.glob(pattern) if p.is_file()}
    return sorted(found)


def copy_runtime(destination: Path) -> None:
    """Copy the runtime files into ``destination/toolchain`` (the image's ``/opt/toolchain/runtime``)."""
    for relative in runtime_files():
        target = destination / "toolchain" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PACKAGE / relative, target)
