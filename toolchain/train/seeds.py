"""``train --seeds K``: the same configuration trained with K seeds, one picked by validation, the spread recorded.

A single run's test accuracy is one draw: on a small real set it moves by several points with the
seed alone. Training seeds ``seed, seed + 1, ..., seed + K - 1`` shows how far. Each seed is an
ordinary final run (the same run id a ``train --seed S`` has, so finished seeds are reused and a
killed seed resumes when the command is run again). The pick uses the validation split only (each
run's smoothed selection score); every seed's weights are then scored on the test split for the
record, after the pick, so the test split never influences which model is registered.

The record also says how large a spread the test split alone would show (``test_accuracy.chance_spread``):
the seeds' right and wrong answers are shuffled between the seeds, image by image, as if every seed were
equally good and only chance decided which of them erred on an image; the spread of the shuffled accuracies,
over many shuffles, is what the test split's size and the seeds' disagreement give without any seed being
better. A measured spread inside that range does not show that the seeds differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from toolchain.data.versions import DatasetVersion
from toolchain.train.loop import RunResult
from toolchain.workspace import Workspace

PICK_RULE = "highest smoothed validation accuracy, then lowest smoothed validation loss, then lowest seed (test not used)"


@dataclass(frozen=True, kw_only=True)
class SeedOutcome:
    """One seed's run, what it scored on validation (which picks) and on test (which is only reported)."""

    seed: int
    run: RunResult
    test_accuracy: float
    test_loss: float
    test_correct: tuple[bool, ...] = ()  # per test image, in split order: whether the kept weights got it right

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed, "run": self.run.run, "selected_weights": self.run.selected_weights,
            "best_epoch": self.run.best_epoch, "epochs": len(self.run.history),
            "val_accuracy": self.run.val_accuracy, "val_loss": self.run.val_loss,
            "smoothed_val_accuracy": self.run.smoothed_val_accuracy, "smoothed_val_loss": self.run.smoothed_val_loss,
            "test_accuracy": self.test_accuracy, "test_loss": self.test_loss,
        }


def spread(values: list[float]) -> dict[str, float]:
    """min, max, mean, sample standard deviation (0 for one value) and spread (max - min)."""
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return {
        "min": round(float(array.min()), 6), "max": round(float(array.max()), 6), "mean": round(float(array.mean()), 6),
        "std": round(std, 6), "spread": round(float(array.max() - array.min()), 6),
    }


def pick(runs: list[RunResult]) -> RunResult:
    """The run with the best validation score (see :data:`PICK_RULE`)."""
    return max(runs, key=lambda r: (*r.score, -r.seed))


CHANCE_SHUFFLES = 2000
"""Shuffles behind ``chance_spread`` (fixed seed: the same figures on a rerun)."""


def chance_spread(correct: np.ndarray, shuffles: int = CHANCE_SHUFFLES) -> dict[str, float] | None:
    """The spread of test accuracy K equally good seeds would show on this test split: ``correct`` is
    (K seeds, N images) of right/wrong; each image's answers are shuffled between the seeds; the median and the
    5th-95th percentiles of the shuffled spreads (max - min accuracy). None for fewer than 2 seeds or no images."""
    correct = np.asarray(correct, dtype=bool)
    if correct.ndim != 2 or correct.shape[0] < 2 or correct.shape[1] == 0:
        return None
    rng = np.random.default_rng(0)
    spreads = np.empty(shuffles)
    for k in range(shuffles):
        accuracy = rng.permuted(correct, axis=0).mean(axis=1)
        spreads[k] = accuracy.max() - accuracy.min()
    low, median, high = np.percentile(spreads, [5, 50, 95])
    return {"median": round(float(median), 6), "p5": round(float(low), 6), "p95": round(float(high), 6),
            "shuffles": shuffles}


def test_figures(workspace: Workspace, dataset: DatasetVersion, run: RunResult, recipe: Any
                 ) -> tuple[float, float, tuple[bool, ...]]:
    """``(accuracy, loss, right or wrong per test image)`` of a run's kept weights on the test split, on the CPU
    (the same figures on a rerun)."""
    import torch

    from toolchain.models.zoo import build_model
    from toolchain.train.batches import SplitArrays
    from toolchain.models.checkpoint import load_checkpoint
    from toolchain.train.predict import predict_split

    split = SplitArrays.of(dataset, "test")
    if len(split) == 0 or not run.weights:
        return math.nan, math.nan, ()
    module = build_model(recipe, len(dataset.classes))
    module.load_state_dict(load_checkpoint(workspace.blobs.read_bytes(run.weights)))
    labels, probs = predict_split(module, dataset, workspace.blobs, split, recipe, torch.device("cpu"))
    loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0))))
    right = probs.argmax(1) == labels
    return round(float(np.mean(right)), 6), round(loss, 4), tuple(bool(r) for r in right)


def summary(outcomes: list[SeedOutcome], picked: RunResult, dataset: DatasetVersion) -> dict[str, Any]:
    """What the registered model's record keeps about its seeds (``model.body["seeds"]``)."""
    tests = [o.test_accuracy for o in outcomes if not math.isnan(o.test_accuracy)]
    answered = [o.test_correct for o in outcomes if o.test_correct]
    test_spread: dict[str, Any] | None = spread(tests) if tests else None
    if test_spread is not None and len(answered) == len(outcomes) and len({len(a) for a in answered}) == 1:
        test_spread["chance_spread"] = chance_spread(np.array(answered))
    return {
        "count": len(outcomes),
        "seeds": [o.seed for o in outcomes],
        "picked_seed": picked.seed,
        "picked_run": picked.run,
        "rule": PICK_RULE,
        "dataset": dataset.id,
        "test_images": int(len(dataset.split_indices("test"))),
        "runs": [o.to_json() for o in outcomes],
        "val_accuracy": spread([o.run.val_accuracy for o in outcomes]),
        "smoothed_val_accuracy": spread([o.run.smoothed_val_accuracy for o in outcomes]),
        "test_accuracy": test_spread,
    }
