"""How long tests that watch a live service wait, and how loaded a machine they run on.

A test of a real-time service (RTSP cameras, reconnects, stale detection) asserts a few timings that hold on
a quiet machine (a camera back within seconds of its return, not at the end of a minutes-long backoff).
``.ci/run`` runs the default suite beside the Docker tests on a 2-core machine, where the same work can take
several times as long; it sets ``TOOLCHAIN_TEST_TIME_SLACK`` (a factor, default 1) for that run, and
:func:`slack` stretches every such limit by it. ``scripts/test`` on its own keeps the face values.
How fast the service really is is measured by the benchmarks (BENCHMARKS.md), never asserted here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

SLACK_VARIABLE = "TOOLCHAIN_TEST_TIME_SLACK"


def time_slack() -> float:
    """The factor from ``$TOOLCHAIN_TEST_TIME_SLACK`` (1 when unset; at least 1)."""
    raw = os.environ.get(SLACK_VARIABLE, "").strip()
    if not raw:
        return 1.0
    try:
        factor = float(raw)
    except ValueError:
        raise ValueError(f"{SLACK_VARIABLE}={raw!r} is not a number (a factor such as 3)") from None
    if factor < 1:
        raise ValueError(f"{SLACK_VARIABLE}={raw!r}: the factor must be at least 1")
    return factor


def slack(seconds: float) -> float:
    """``seconds`` stretched by :func:`time_slack` (a limit that holds on a quiet machine)."""
    return seconds * time_slack()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             state: Callable[[], Any] | None = None) -> float:
    """Poll ``predicate`` every 50 ms until true; the seconds it took.

    After ``timeout`` seconds (stretched by :func:`slack`) the test fails, saying ``what`` and, where given,
    what ``state()`` returns then (a service's health report: why it was not ready, not just that it was not).
    """
    limit = slack(timeout)
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > limit:
            seen = f"; last seen: {_describe(state)}" if state is not None else ""
            raise AssertionError(f"not within {limit:g} s: {what}{seen}")
        time.sleep(0.05)
    return time.monotonic() - start


def _describe(state: Callable[[], Any]) -> str:
    try:
        return repr(state())
    except Exception as exc:  # noqa: BLE001 - a failure message must not fail
        return f"(could not be read: {exc!r})"
