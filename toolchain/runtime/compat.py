"""What lets the roadside runtime run on the Pythons JetPack ships (3.8 on JetPack 5, 3.10 on 6).

The runtime files (everything the image ships: see ``toolchain.package.runtime_files``) must import
on Python 3.8; a test runs ``vermin`` over exactly those files for every target's Python.
``dataclass(kw_only=True)`` is Python 3.10+: :func:`frozen_config` gives the same keyword-only frozen
config there and a plain frozen dataclass on older Pythons (the fields are ordered so both work, and
nothing in the toolchain builds a config positionally).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


def frozen_config(cls: type[T]) -> type[T]:
    """``@dataclass(frozen=True, kw_only=True)`` where the Python has it, ``@dataclass(frozen=True)`` before 3.10."""
    if sys.version_info >= (3, 10):
        return dataclass(frozen=True, kw_only=True)(cls)  # novermin
    return dataclass(frozen=True)(cls)


def strict_zip(*iterables: Any) -> Any:
    """``zip(..., strict=True)`` for Python 3.8: the inputs must have equal lengths."""
    lists = [list(i) for i in iterables]
    if len({len(i) for i in lists}) > 1:
        raise ValueError(f"zip of unequal lengths {[len(i) for i in lists]}")
    return zip(*lists)

