"""Process pools shared by the data stages (ingest, synthetic lakes)."""

from __future__ import annotations

import multiprocessing
import os
from multiprocessing.context import BaseContext


def default_workers() -> int:
    """One worker per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def worker_context() -> BaseContext:
    """fork where the OS has it, else spawn.

    fork starts workers in milliseconds and does not re-import the caller's ``__main__`` (so scripts
    need no main guard). Workers only read files, compute and write blobs: they never touch a lock
    that the parent's threads (progress bars) might hold at fork time.
    """
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method)
