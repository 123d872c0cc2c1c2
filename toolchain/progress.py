"""A minimal progress protocol so library code can report progress without knowing about terminals."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Receives progress of a long task; the CLI renders it, tests ignore it."""

    def start(self, description: str, total: int | None) -> None:
        """A new phase begins (``total`` units, or unknown)."""

    def advance(self, amount: int = 1) -> None:
        """``amount`` more units of the current phase are done."""

    def finish(self) -> None:
        """The current phase is done."""

    def note(self, text: str) -> None:
        """A short live status for the current phase (loss, accuracy, images/s)."""


class NullProgress:
    """Progress that goes nowhere."""

    def start(self, description: str, total: int | None) -> None:
        pass

    def advance(self, amount: int = 1) -> None:
        pass

    def finish(self) -> None:
        pass

    def note(self, text: str) -> None:
        pass
