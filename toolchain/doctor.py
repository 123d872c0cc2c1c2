"""``toolchain doctor``: what this machine can do, each missing piece with a one-line hint."""

from __future__ import annotations

import importlib
import os
import platform
import shutil
import socket
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


@dataclass(frozen=True, kw_only=True)
class Check:
    """One capability: found or not, what was found, and what to do when it is missing."""

    name: str
    ok: bool
    detail: str
    hint: str = ""
    required: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _import(name: str) -> Any | None:
    try:
        return importlib.import_module(name)
    except Exception:  # noqa: BLE001 - a broken install is as good as missing here
        return None


def check_python() -> Check:
    ok = sys.version_info >= (3, 10)
    return Check(
        name="python", ok=ok, required=True,
        detail=f"{platform.python_implementation()} {platform.python_version()} on {platform.machine()} ({os.cpu_count()} CPUs)",
        hint="" if ok else "toolchain needs Python 3.10 or newer",
    )


def check_core(module: str, extra: str, required: bool = False) -> Check:
    mod = _import(module)
    if mod is None:
        return Check(name=module, ok=False, detail="not installed", hint=f"pip install 'toolchain[{extra}]'", required=required)
    return Check(name=module, ok=True, detail=str(getattr(mod, "__version__", "installed")), required=required)


def check_torch() -> Check:
    torch = _import("torch")
    if torch is None:
        return Check(name="torch", ok=False, detail="not installed", hint="pip install 'toolchain[train]' (needed to train)")
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        cuda = f"CUDA {torch.version.cuda}: {names}"
    else:
        cuda = "CUDA not available (training runs on the CPU)"
    return Check(name="torch", ok=True, detail=f"{torch.__version__}; {cuda}")


def check_onnxruntime() -> Check:
    ort = _import("onnxruntime")
    if ort is None:
        return Check(name="onnxruntime", ok=False, detail="not installed", hint="pip install onnxruntime", required=True)
    return Check(
        name="onnxruntime", ok=True, required=True,
        detail=f"{ort.__version__}; providers: {', '.join(ort.get_available_providers())}",
    )


def check_tensorrt() -> Check:
    trt = _import("tensorrt")
    if trt is None:
        return Check(
            name="tensorrt", ok=False, detail="not installed",
            hint="Engines for Jetson build on the device (toolchain build --on ssh://unit) or where JetPack provides tensorrt",
        )
    return Check(name="tensorrt", ok=True, detail=str(trt.__version__))


def check_pycuda() -> Check:
    driver = _import("pycuda.driver")
    if driver is None:
        return Check(name="pycuda", ok=False, detail="not installed", hint="pip install 'toolchain[trt]' on an NVIDIA host")
    try:
        driver.init()
        return Check(name="pycuda", ok=True, detail=f"{driver.Device.count()} CUDA device(s)")
    except Exception as exc:  # noqa: BLE001
        return Check(name="pycuda", ok=False, detail=f"installed but CUDA failed: {exc}", hint="check the NVIDIA driver")


def _docker_socket() -> str | None:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    parsed = urlparse(host)
    return parsed.path if parsed.scheme == "unix" else None


def check_docker(timeout: float = 3.0) -> Check:
    hint = "start dockerd (or set DOCKER_HOST); needed for remote builds, packaging and deploy"
    docker = _import("docker")
    if docker is not None:
        try:
            client = docker.from_env(timeout=timeout)
            version = client.version()
            client.close()
            return Check(name="docker", ok=True, detail=f"engine {version.get('Version')} via {os.environ.get('DOCKER_HOST', 'default socket')}")
        except Exception as exc:  # noqa: BLE001
            return Check(name="docker", ok=False, detail=f"engine not reachable ({type(exc).__name__})", hint=hint)
    path = _docker_socket()
    if path and Path(path).exists():
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(timeout)
                sock.connect(path)
                sock.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
                reply = sock.recv(64)
            if b"200" in reply:
                return Check(name="docker", ok=True, detail=f"engine answers on {path} (pip install 'toolchain[deploy]' to use it)")
        except OSError as exc:
            return Check(name="docker", ok=False, detail=f"socket {path}: {exc}", hint=hint)
    return Check(name="docker", ok=False, detail="no engine found", hint=hint)


def check_pyav() -> Check:
    av = _import("av")
    if av is None:
        return Check(name="pyav", ok=False, detail="not installed", hint="pip install av", required=True)
    available = set(getattr(av, "codecs_available", set()))
    wanted = {"h264": "H.264 decode", "libx264": "H.264 encode", "mpeg4": "MPEG-4/XviD", "hevc": "H.265 decode", "mjpeg": "MJPEG"}
    found = [label for codec, label in wanted.items() if codec in available]
    missing = [label for codec, label in wanted.items() if codec not in available]
    ok = "h264" in available
    detail = f"{av.__version__}; codecs: {', '.join(found) or 'none'}"
    hint = f"missing codecs: {', '.join(missing)} (install a PyAV wheel built with FFmpeg)" if missing else ""
    return Check(name="pyav", ok=ok, detail=detail, hint=hint, required=True)


def check_disk(workspace: Path) -> Check:
    target = workspace if workspace.exists() else workspace.parent
    while not target.exists() and target != target.parent:
        target = target.parent
    free = shutil.disk_usage(target).free / 2**30
    ok = free > 2
    return Check(
        name="disk", ok=ok, detail=f"{free:.1f} GiB free for workspace {workspace}",
        hint="" if ok else "a 100k-image dataset at 128 px needs ~5 GiB; free space or use --workspace elsewhere",
    )


def check_extras() -> list[Check]:
    """One row per pip extra (:data:`toolchain.extras.EXTRAS`): installed, or what is missing and how to get it."""
    from toolchain.extras import EXTRAS, INSTALL, status

    checks = []
    for row in status():
        installed = ", ".join(f"{dist} {version}" for dist, version in row.installed.items())
        if row.present:
            checks.append(Check(name=f"[{row.name}]", ok=True, detail=installed or "installed"))
        else:
            detail = f"not installed: {', '.join(row.missing)}" + (f" (have {installed})" if installed else "")
            checks.append(Check(name=f"[{row.name}]", ok=False, detail=detail,
                                hint=f"{INSTALL.format(extra=row.name)} to {EXTRAS[row.name].purpose}"))
    return checks


def run_checks(workspace: Path) -> list[Check]:
    """Every check, in the order they are shown: components, then the pip extras."""
    checks: list[Callable[[], Check]] = [
        check_python,
        lambda: check_core("numpy", "base", required=True),
        lambda: check_core("PIL", "data"),
        lambda: check_core("fsspec", "data"),
        check_torch,
        lambda: check_core("torchvision", "train"),
        lambda: check_core("sklearn", "train"),
        check_onnxruntime,
        check_tensorrt,
        check_pycuda,
        check_docker,
        check_pyav,
        lambda: check_disk(workspace),
    ]
    return [check() for check in checks] + check_extras()
