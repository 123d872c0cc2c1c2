"""tests/timing.py: the CI time slack and wait_for's failure message."""

from __future__ import annotations

import pytest

from tests.timing import SLACK_VARIABLE, slack, time_slack, wait_for


def test_slack_is_one_unless_set_and_stretches_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SLACK_VARIABLE, raising=False)
    assert time_slack() == 1.0 and slack(6) == 6
    monkeypatch.setenv(SLACK_VARIABLE, "3")
    assert slack(6) == 18


@pytest.mark.parametrize("value", ["fast", "0.5"])
def test_a_bad_slack_is_refused_saying_what_is_wanted(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(SLACK_VARIABLE, value)
    with pytest.raises(ValueError, match=SLACK_VARIABLE):
        time_slack()


def test_wait_for_returns_the_wait_and_fails_with_the_state_last_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SLACK_VARIABLE, "2")
    calls = iter([False, False, True])
    assert wait_for(lambda: next(calls), 5, "third poll") >= 0.05
    with pytest.raises(AssertionError, match=r"not within 0.2 s: never; last seen: \{'up': False\}"):
        wait_for(lambda: False, 0.1, "never", lambda: {"up": False})
    with pytest.raises(AssertionError, match=r"last seen: \(could not be read: OSError\('refused'\)\)"):
        wait_for(lambda: False, 0.05, "never", _refused)


def _refused() -> None:
    raise OSError("refused")
