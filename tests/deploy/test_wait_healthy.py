"""wait_healthy's verdicts on a container that will not stay up, on a stand-in container (no engine needed)."""

from __future__ import annotations

from typing import Any

from toolchain.deploy.unit import wait_healthy


class _Container:
    """What the Docker SDK's container gives ``wait_healthy``: ``reload()``, ``attrs`` and ``logs()``."""

    def __init__(self, status: str, exit_code: int, restarts: int, health: str = "starting") -> None:
        self.attrs: dict[str, Any] = {"State": {"Status": status, "ExitCode": exit_code, "Health": {"Status": health}},
                                      "RestartCount": restarts}

    def reload(self) -> None:
        return None

    def logs(self, tail: int) -> bytes:
        return b"ValueError: no camera\n"


def test_a_container_that_exited_gives_its_exit_code_and_logs() -> None:
    ok, why = wait_healthy(_Container("exited", 3, 0), 5, poll_s=0.01)
    assert not ok and why == "the container exited (exit code 3): ValueError: no camera"


def test_a_crash_loop_running_again_is_not_reported_as_exit_code_0() -> None:
    """Docker resets the exit code once a restarted container runs again: the message must not say 0."""
    ok, why = wait_healthy(_Container("running", 0, 2), 5, poll_s=0.01)
    assert not ok and why == "the container restarted 2 time(s): it keeps exiting: ValueError: no camera"
    ok, why = wait_healthy(_Container("restarting", 1, 1), 5, poll_s=0.01)
    assert not ok and why.startswith("the container restarted 1 time(s) (exit code 1): it keeps exiting")


def test_healthy_unhealthy_and_slow() -> None:
    assert wait_healthy(_Container("running", 0, 0, "healthy"), 5) == (True, "")
    assert wait_healthy(_Container("running", 0, 0, "unhealthy"), 5)[1].startswith("its health check failed")
    assert wait_healthy(_Container("running", 0, 0, "starting"), 0.05, poll_s=0.01)[1].startswith("not healthy after")
