"""What putting an image on an engine cost, and how it failed: shared by ``docker load``, the pull, and the
transfer that retries them (:mod:`toolchain.images.transfer`).

A refusal (the engine answered, and will not take what was sent) is not retried; anything else (a link that
dropped) is. Which pull errors are refusals is decided on the structured error, never on words in its
message: an HTTP status of 4xx other than 408, 425 and 429 (:func:`refused_status`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from toolchain.errors import MissingEnvironmentError

NONE, LOAD_DELTA, LOAD_FULL, PULL = "none", "load-delta", "load-full", "pull"
# 4xx answers that are worth another try: a timeout, too early, too many requests.
_RETRIED_4XX = frozenset({408, 425, 429})


def refused_status(status: Any) -> bool:
    """Whether an HTTP status (the engine's, or an ``errorDetail.code``) is a refusal that a retry cannot change."""
    return isinstance(status, int) and not isinstance(status, bool) and 400 <= status < 500 \
        and status not in _RETRIED_4XX


@dataclass
class TransferStats:
    """What one unit's transfer cost."""

    transport: str = NONE
    bytes_sent: int = 0
    layers_sent: int = 0
    layers_reused: int = 0
    transfer_s: float = 0.0
    attempts: int = 0
    fallback: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"transport": self.transport, "bytes_sent": self.bytes_sent, "layers_sent": self.layers_sent,
                "layers_reused": self.layers_reused, "transfer_s": round(self.transfer_s, 3),
                "transfer_attempts": self.attempts, "transfer_fallback": self.fallback}


class TransferError(MissingEnvironmentError):
    """The image could not be put on the unit; the message says what happened and what to do.

    Attributes:
        stats: What was sent before it failed (bytes that crossed the link count too).
    """

    def __init__(self, message: str, stats: TransferStats | None = None) -> None:
        super().__init__(message)
        self.stats = stats or TransferStats()


class EngineRefused(Exception):
    """The engine answered, and refused what was sent (not a link problem): no retry sends it again."""
