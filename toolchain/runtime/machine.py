"""What machine this is, read from the machine itself: CPU architecture, and the facts a benchmark records.

Runs inside the runtime image on a unit (standard library only, Python 3.8+): ``bench --on`` records
what :func:`device_facts` reads in the container (architecture, CPU model and cores, memory, L4T
release, TensorRT version, power mode), never what a flag or a fleet file claims. Whether the CPU is
emulated (qemu-user on an x86-64 engine) is decided by the caller, who also knows the engine's own
architecture; :func:`device_facts` adds what the container can see of it.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, Optional


def normalize_architecture(name: str) -> str:
    """A CPU architecture as target profiles spell it: ``arm64`` -> ``aarch64``, ``amd64`` -> ``x86_64``."""
    arch = name.lower()
    return {"arm64": "aarch64", "amd64": "x86_64"}.get(arch, arch)


def machine_architecture() -> str:
    """This machine's CPU architecture as target profiles spell it (``x86_64``, ``aarch64``)."""
    return normalize_architecture(platform.machine())


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def cpu_model(cpuinfo: str) -> str:
    """The CPU model from ``/proc/cpuinfo`` text (x86 ``model name``; Arm ``Hardware``/``Model``, else the part)."""
    for key in ("model name", "Hardware", "Model", "cpu model"):
        match = re.search(rf"^{key}\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
        if match:
            return match.group(1).strip()
    part = re.search(r"^CPU part\s*:\s*(\S+)$", cpuinfo, re.MULTILINE)
    return f"Arm CPU part {part.group(1)}" if part else ""


def cpuinfo_architecture(cpuinfo: str) -> str:
    """The architecture ``/proc/cpuinfo`` describes: under qemu-user it is the host's, not the emulated one's."""
    if re.search(r"^(vendor_id|flags)\s*:", cpuinfo, re.MULTILINE):
        return "x86_64"
    if re.search(r"^(CPU implementer|Features)\s*:", cpuinfo, re.MULTILINE):
        return "aarch64"
    return ""


def l4t_release(text: str) -> str:
    """``36.4.0`` from ``/etc/nv_tegra_release`` (``# R36 (release), REVISION: 4.0, ...``); empty off Jetson."""
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{match.group(1)}.{match.group(2)}" if match else ""


def memory_mb(meminfo: str) -> int:
    """``MemTotal`` of ``/proc/meminfo`` in MB (0 when unreadable)."""
    match = re.search(r"^MemTotal:\s*(\d+)\s*kB", meminfo, re.MULTILINE)
    return int(match.group(1)) // 1024 if match else 0


def _tensorrt_version() -> str:
    try:
        import tensorrt  # noqa: PLC0415 - only on Jetson/NVIDIA images
    except Exception:  # noqa: BLE001 - absent or broken: not a TensorRT machine
        return ""
    return str(getattr(tensorrt, "__version__", ""))


def _power_mode() -> str:
    if shutil.which("nvpmodel") is None:
        return ""
    try:
        out = subprocess.run(["nvpmodel", "-q"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    match = re.search(r"NV Power Mode:\s*(.+)", out)
    return match.group(1).strip() if match else out.strip()[:80]


def device_facts() -> Dict[str, Any]:
    """The facts of this machine as its processes see them (a unit's, when run in its container)."""
    cpuinfo = _read("/proc/cpuinfo")
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 0
    cgroup_cpus: Optional[float] = None
    quota = _read("/sys/fs/cgroup/cpu.max").split()
    if len(quota) == 2 and quota[0] != "max":
        cgroup_cpus = round(int(quota[0]) / int(quota[1]), 2)
    arch = machine_architecture()
    seen = cpuinfo_architecture(cpuinfo)
    return {
        "architecture": arch,
        "cpu_model": cpu_model(cpuinfo),
        "cpu_cores": cores,
        "cpu_limit": cgroup_cpus,
        "memory_mb": memory_mb(_read("/proc/meminfo")),
        "l4t": l4t_release(_read("/etc/nv_tegra_release")),
        "tensorrt": _tensorrt_version(),
        "power_mode": _power_mode(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        # qemu-user passes the host's /proc/cpuinfo through: an arm64 process that reads an x86 CPU there
        # is emulated. (The caller also compares with the engine's own architecture.)
        "cpuinfo_architecture": seen,
        "emulated": bool(seen) and seen != arch,
    }
