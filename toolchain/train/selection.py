"""Which weights a run keeps and when it stops: the better of the raw and the EMA weights, judged on a
smoothed validation score rather than on one noisy reading.

Each epoch validates the raw weights and, when the recipe keeps an EMA of the weights
(``ema_decay > 0``), the EMA weights too. A candidate's score is the mean of its last ``val_window``
validation readings: lower loss first, then accuracy (the recipe's ``select_on = "loss"``, the default), or
accuracy first, then lower loss (``select_on = "accuracy"``), so one lucky or unlucky epoch on a small
validation split neither picks the checkpoint nor stops the run. Under loss selection the run stops only
once neither the smoothed loss nor the smoothed accuracy has improved for the patience (``last_progress``).
With ``ema_decay = 0``, ``val_window = 1`` and ``select_on = "accuracy"`` this is the single-reading rule
of earlier versions, exactly.

The history holds every reading, so the scores are recomputed from it after a resume: nothing else
needs to go into the checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

RAW = "raw"
EMA = "ema"
# Keys of each candidate's readings in an epoch's history entry.
_READINGS = {RAW: ("val_accuracy", "val_loss"), EMA: ("ema_val_accuracy", "ema_val_loss")}
# Order in which an epoch's candidates are offered: at an equal score the first one wins, so the
# EMA (the steadier of the two) is kept on a tie within one epoch; across epochs the earlier one stays.
_ORDER = (EMA, RAW)


@dataclass(frozen=True, kw_only=True)
class Choice:
    """One candidate checkpoint: which weights at which epoch, their own reading and their smoothed score.

    Attributes:
        epoch: 0-based epoch after which the weights were taken.
        weights: ``raw`` (the optimiser's weights) or ``ema`` (their exponential moving average).
        val_accuracy: These weights' validation accuracy at that epoch (one reading).
        val_loss: Their validation loss at that epoch.
        smoothed_val_accuracy: Mean validation accuracy of these weights over the last ``val_window`` epochs.
        smoothed_val_loss: Mean validation loss over the same epochs.
    """

    epoch: int
    weights: str
    val_accuracy: float
    val_loss: float
    smoothed_val_accuracy: float
    smoothed_val_loss: float

    def score(self, metric: str = "accuracy") -> tuple[float, float]:
        """What selection maximises: see ``score``."""
        return score(self.smoothed_val_accuracy, self.smoothed_val_loss, metric)

    def to_json(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch, "weights": self.weights, "val_accuracy": self.val_accuracy, "val_loss": self.val_loss,
            "smoothed_val_accuracy": self.smoothed_val_accuracy, "smoothed_val_loss": self.smoothed_val_loss,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Choice | None:
        return None if data is None else cls(**data)


def score(smoothed_val_accuracy: float, smoothed_val_loss: float, metric: str = "accuracy") -> tuple[float, float]:
    """What selection maximises: smoothed accuracy, then lower smoothed loss (``metric="accuracy"``), or lower
    smoothed loss, then smoothed accuracy (``metric="loss"``)."""
    if metric == "loss":
        return (-smoothed_val_loss, smoothed_val_accuracy)
    if metric != "accuracy":
        raise ValueError(f"selection metric is accuracy or loss, not {metric!r}")
    return (smoothed_val_accuracy, -smoothed_val_loss)


def candidates(history: Sequence[dict[str, Any]], window: int) -> list[Choice]:
    """The candidates of the last epoch in ``history``, in the order they are offered (EMA first)."""
    if not history:
        return []
    last = history[-1]
    found = []
    for weights in _ORDER:
        acc_key, loss_key = _READINGS[weights]
        if last.get(acc_key) is None:
            continue
        recent = [h for h in history[-window:] if h.get(acc_key) is not None]
        found.append(Choice(
            epoch=int(last["epoch"]), weights=weights, val_accuracy=float(last[acc_key]), val_loss=float(last[loss_key]),
            smoothed_val_accuracy=round(sum(float(h[acc_key]) for h in recent) / len(recent), 6),
            smoothed_val_loss=round(sum(float(h[loss_key]) for h in recent) / len(recent), 6),
        ))
    return found


def better(candidate: Choice, best: Choice | None, metric: str = "accuracy") -> bool:
    """Whether ``candidate`` replaces ``best`` (strictly higher score on ``metric``)."""
    return best is None or candidate.score(metric) > best.score(metric)


def select(history: Sequence[dict[str, Any]], window: int, metric: str = "accuracy") -> Choice | None:
    """The choice the training loop arrives at for a whole history (for tests and reports)."""
    return _walk(history, window, metric)[0]


def last_progress(history: Sequence[dict[str, Any]], window: int, metric: str = "accuracy") -> int | None:
    """The last epoch of ``history`` at which training still made progress; early stopping counts from it.

    With ``metric="accuracy"`` that is the epoch of the selected checkpoint. With ``metric="loss"`` it is
    also any later epoch whose smoothed validation accuracy beat every earlier one: the validation loss
    can plateau, or creep up as the model grows more confident, while accuracy still improves, and a
    run stopped there keeps half-trained weights. The run stops only once neither has improved for
    ``early_stopping_patience`` epochs; the kept weights are still those of the lowest smoothed loss.
    """
    return _walk(history, window, metric)[1]


def _walk(history: Sequence[dict[str, Any]], window: int, metric: str) -> tuple[Choice | None, int | None]:
    """``(selected choice, last epoch of progress)`` after replaying ``history`` epoch by epoch."""
    best: Choice | None = None
    progress: int | None = None
    top_accuracy: float | None = None
    for end in range(1, len(history) + 1):
        for choice in candidates(history[:end], window):
            if better(choice, best, metric):
                best, progress = choice, choice.epoch
            if metric == "loss" and (top_accuracy is None or choice.smoothed_val_accuracy > top_accuracy):
                top_accuracy, progress = choice.smoothed_val_accuracy, choice.epoch
    return best, progress
