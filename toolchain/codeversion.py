"""The code version recorded with every run: the package version plus a digest of its sources."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from toolchain import __version__

_PACKAGE = Path(__file__).resolve().parent


@lru_cache(maxsize=None)
def code_version(*subpackages: str) -> str:
    """``<version>+<12 hex>``: the digest covers the Python sources (and TOML catalogs) of the given
    sub-packages, so a changed training loop or model definition is a new code version.

    Args:
        subpackages: Directories under ``toolchain/`` to cover (all of them when empty).
    """
    roots = [_PACKAGE / s for s in subpackages] if subpackages else [_PACKAGE]
    digest = hashlib.sha256()
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".toml") and "__pycache__" not in p.parts):
            digest.update(path.relative_to(_PACKAGE).as_posix().encode())
            digest.update(path.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:12]}"
