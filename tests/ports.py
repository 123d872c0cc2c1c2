"""Free loopback ports for the test services, chosen below the kernel's ephemeral range.

A port the kernel hands out for ``bind(0)`` is free at that moment but lies in the range it also hands to outgoing
connections: a service started minutes later on it (a unit's rollout port while a pull runs through a test link) may
find it taken. A port below the range is only ever taken by a process that asks for it by number.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_PICK = random.Random()


def ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (32768 where it cannot be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int, *, span: int = 1) -> list[int]:
    """``count`` ports, each the first of ``span`` consecutive free ports, no two spans overlapping."""
    top = ephemeral_low() - span
    bottom = max(1024, top - 12000)
    taken: set[int] = set()
    found: list[int] = []
    for port in _PICK.sample(range(bottom, top), k=top - bottom):
        block = set(range(port, port + span))
        if not block & taken and all(bindable(p) for p in block):
            taken |= block
            found.append(port)
            if len(found) == count:
                return found
    raise RuntimeError(f"no {count} free blocks of {span} ports between {bottom} and {top + span}")


def free_port() -> int:
    return free_ports(1)[0]
