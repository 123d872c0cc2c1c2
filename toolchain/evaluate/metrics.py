"""Classification metrics for the evaluate stage, computed with scikit-learn.

Everything here is a pure function of numpy arrays: true labels (class indices) and the model's
class probabilities. The result, :class:`EvaluationMetrics`, is a frozen record that serialises to
plain JSON so it can be stored in the registry next to the checkpoint it describes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from toolchain.errors import BadInputError, UsageError, missing_extra

#: Upper bound on the number of points kept per precision-recall curve.
MAX_CURVE_POINTS = 200

# Rows of a probability matrix may be float32 softmax outputs; allow for their rounding.
_PROBABILITY_ATOL = 1e-3
_DIGITS = 6


@dataclass(frozen=True, kw_only=True)
class PRCurve:
    """A precision-recall curve of one class (one-vs-rest), downsampled for storage and plots.

    Attributes:
        precision: Precision at each point.
        recall: Recall at each point (non-increasing, ends at 0).
        thresholds: Score threshold of each point; ``None`` for the final (recall 0) point, which
            scikit-learn adds without a threshold.
    """

    precision: tuple[float, ...]
    recall: tuple[float, ...]
    thresholds: tuple[float | None, ...]

    def to_json(self) -> dict[str, list[Any]]:
        """Plain JSON types, floats rounded to 6 digits."""
        return {
            "precision": [_round(v) for v in self.precision],
            "recall": [_round(v) for v in self.recall],
            "thresholds": [None if v is None else _round(v) for v in self.thresholds],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PRCurve:
        """Rebuild a curve from :meth:`to_json` output."""
        return cls(
            precision=tuple(float(v) for v in data["precision"]),
            recall=tuple(float(v) for v in data["recall"]),
            thresholds=tuple(None if v is None else float(v) for v in data["thresholds"]),
        )


@dataclass(frozen=True, kw_only=True)
class EvaluationMetrics:
    """Metrics of a classifier on one evaluation set.

    Per-class dictionaries are keyed by class name, in the order of :attr:`classes`.

    Attributes:
        classes: Class names; index ``i`` is label ``i``.
        num_samples: Number of evaluated samples.
        accuracy: Fraction of samples whose arg-max prediction is the true class.
        precision: Per-class precision (0 for a class that was never predicted).
        recall: Per-class recall (0 for a class absent from the labels).
        f1: Per-class F1 score.
        support: Per-class number of true samples.
        macro_precision: Unweighted mean of :attr:`precision` over all classes.
        macro_recall: Unweighted mean of :attr:`recall` over all classes.
        macro_f1: Unweighted mean of :attr:`f1` over all classes.
        confusion_matrix: Counts, ``confusion_matrix[true][predicted]``.
        roc_auc: Binary: AUC of ``classes[1]`` as the positive class; multi-class: one-vs-rest
            macro AUC. ``None`` when a class is absent from the labels (AUC is undefined).
        average_precision: Per-class (one-vs-rest) average precision; ``None`` for an absent class.
        pr_curves: Per-class precision-recall curve; ``None`` for an absent class.
    """

    classes: tuple[str, ...]
    num_samples: int
    accuracy: float
    precision: dict[str, float]
    recall: dict[str, float]
    f1: dict[str, float]
    support: dict[str, int]
    macro_precision: float
    macro_recall: float
    macro_f1: float
    confusion_matrix: list[list[int]]
    roc_auc: float | None
    average_precision: dict[str, float | None]
    pr_curves: dict[str, PRCurve | None]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types (``json.dumps`` works), floats rounded to 6 digits."""
        return {
            "classes": list(self.classes),
            "num_samples": self.num_samples,
            "accuracy": _round(self.accuracy),
            "precision": {k: _round(v) for k, v in self.precision.items()},
            "recall": {k: _round(v) for k, v in self.recall.items()},
            "f1": {k: _round(v) for k, v in self.f1.items()},
            "support": dict(self.support),
            "macro_precision": _round(self.macro_precision),
            "macro_recall": _round(self.macro_recall),
            "macro_f1": _round(self.macro_f1),
            "confusion_matrix": [list(row) for row in self.confusion_matrix],
            "roc_auc": None if self.roc_auc is None else _round(self.roc_auc),
            "average_precision": {
                k: None if v is None else _round(v) for k, v in self.average_precision.items()
            },
            "pr_curves": {k: None if v is None else v.to_json() for k, v in self.pr_curves.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EvaluationMetrics:
        """Rebuild metrics from :meth:`to_json` output (for example a stored evaluation record).

        Raises:
            BadInputError: A field is missing or has the wrong type.
        """
        try:
            return cls(
                classes=tuple(str(c) for c in data["classes"]),
                num_samples=int(data["num_samples"]),
                accuracy=float(data["accuracy"]),
                precision={k: float(v) for k, v in data["precision"].items()},
                recall={k: float(v) for k, v in data["recall"].items()},
                f1={k: float(v) for k, v in data["f1"].items()},
                support={k: int(v) for k, v in data["support"].items()},
                macro_precision=float(data["macro_precision"]),
                macro_recall=float(data["macro_recall"]),
                macro_f1=float(data["macro_f1"]),
                confusion_matrix=[[int(v) for v in row] for row in data["confusion_matrix"]],
                roc_auc=None if data["roc_auc"] is None else float(data["roc_auc"]),
                average_precision={
                    k: None if v is None else float(v) for k, v in data["average_precision"].items()
                },
                pr_curves={
                    k: None if v is None else PRCurve.from_json(v)
                    for k, v in data["pr_curves"].items()
                },
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BadInputError(
                f"Not a valid evaluation metrics document ({type(exc).__name__}: {exc}). "
                "Pass the output of EvaluationMetrics.to_json()."
            ) from exc


def compute_metrics(
    y_true: np.ndarray, scores: np.ndarray, classes: Sequence[str]
) -> EvaluationMetrics:
    """Compute the evaluation metrics of a classifier.

    Predictions are the arg-max of ``scores``.

    Args:
        y_true: True class indices, shape ``(N,)``, values in ``[0, C)``.
        scores: Class probabilities, shape ``(N, C)``; rows sum to 1 (softmax outputs, not logits).
        classes: The ``C`` class names; ``classes[i]`` is label ``i``.

    Returns:
        The metrics.

    Raises:
        UsageError: Empty input, mismatched shapes, labels out of range, fewer than two or
            duplicate class names, or scores that are not probabilities.
        BadInputError: Scores contain NaN or infinity.
        MissingEnvironmentError: scikit-learn is not installed.
    """
    try:
        from sklearn.metrics import (
            accuracy_score,
            average_precision_score,
            confusion_matrix,
            precision_recall_curve,
            precision_recall_fscore_support,
            roc_auc_score,
        )
    except ImportError as exc:
        raise missing_extra("scikit-learn", "train") from exc

    names, labels, probs = _validate(y_true, scores, classes)
    n_classes = len(names)
    label_ids = list(range(n_classes))
    predicted = probs.argmax(axis=1)

    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=label_ids, average=None, zero_division=0
    )
    matrix = confusion_matrix(labels, predicted, labels=label_ids)
    present = np.bincount(labels, minlength=n_classes) > 0

    roc_auc: float | None = None
    if present.all():
        if n_classes == 2:
            roc_auc = float(roc_auc_score(labels == 1, probs[:, 1]))
        else:
            # One-vs-rest macro AUC, as sklearn's multi_class="ovr" computes it, without its strict
            # sum-to-one check that float32 softmax rows can fail.
            roc_auc = float(
                np.mean([roc_auc_score(labels == k, probs[:, k]) for k in label_ids])
            )

    average_precision: dict[str, float | None] = {}
    curves: dict[str, PRCurve | None] = {}
    for k, name in enumerate(names):
        if not present[k]:
            # No positives: AP and the curve are undefined (sklearn would warn and make up values).
            average_precision[name] = None
            curves[name] = None
            continue
        positives = labels == k
        average_precision[name] = float(average_precision_score(positives, probs[:, k]))
        p, r, t = precision_recall_curve(positives, probs[:, k])
        curves[name] = _downsample_curve(p, r, t)

    return EvaluationMetrics(
        classes=names,
        num_samples=int(labels.shape[0]),
        accuracy=float(accuracy_score(labels, predicted)),
        precision={name: float(precision[k]) for k, name in enumerate(names)},
        recall={name: float(recall[k]) for k, name in enumerate(names)},
        f1={name: float(f1[k]) for k, name in enumerate(names)},
        support={name: int(support[k]) for k, name in enumerate(names)},
        macro_precision=float(np.mean(precision)),
        macro_recall=float(np.mean(recall)),
        macro_f1=float(np.mean(f1)),
        confusion_matrix=[[int(v) for v in row] for row in matrix],
        roc_auc=roc_auc,
        average_precision=average_precision,
        pr_curves=curves,
    )


def _validate(
    y_true: np.ndarray, scores: np.ndarray, classes: Sequence[str]
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    names = tuple(str(c) for c in classes)
    if len(names) < 2:
        raise UsageError(f"Need at least two class names to evaluate a classifier, got {names!r}.")
    if len(set(names)) != len(names):
        raise UsageError(f"Class names must be unique, got {names!r}.")

    labels = np.asarray(y_true)
    probs = np.asarray(scores)
    if labels.size == 0 or probs.size == 0:
        raise UsageError(
            "Nothing to evaluate: the evaluation set is empty. Pass at least one sample."
        )
    if labels.ndim != 1:
        raise UsageError(f"y_true must be a 1-D array of class indices, got shape {labels.shape}.")
    if probs.ndim != 2 or probs.shape != (labels.shape[0], len(names)):
        raise UsageError(
            f"scores must have shape (N, C) = ({labels.shape[0]}, {len(names)}) to match y_true "
            f"and the classes, got {probs.shape}."
        )
    if not np.issubdtype(labels.dtype, np.integer):
        if np.issubdtype(labels.dtype, np.floating) and np.all(np.mod(labels, 1) == 0):
            labels = labels.astype(np.int64)
        else:
            raise UsageError(f"y_true must hold integer class indices, got dtype {labels.dtype}.")
    labels = labels.astype(np.int64, copy=False)
    if labels.min() < 0 or labels.max() >= len(names):
        raise UsageError(
            f"y_true holds labels outside [0, {len(names)}): min {labels.min()}, "
            f"max {labels.max()}. Labels are indices into the class list."
        )
    if not np.issubdtype(probs.dtype, np.number) or np.issubdtype(probs.dtype, np.complexfloating):
        raise UsageError(f"scores must be real numbers, got dtype {probs.dtype}.")
    probs = probs.astype(np.float64, copy=False)
    if not np.all(np.isfinite(probs)):
        raise BadInputError(
            "scores contain NaN or infinity; the model output is broken. Check the checkpoint and "
            "the preprocessing."
        )
    row_sums = probs.sum(axis=1)
    if (
        probs.min() < -_PROBABILITY_ATOL
        or probs.max() > 1 + _PROBABILITY_ATOL
        or not np.allclose(row_sums, 1.0, rtol=0, atol=_PROBABILITY_ATOL)
    ):
        raise UsageError(
            "scores must be class probabilities (each row in [0, 1] summing to 1); got rows "
            f"summing to {row_sums.min():.4g}..{row_sums.max():.4g}. Apply softmax to logits first."
        )
    return names, labels, probs


def _downsample_curve(precision: np.ndarray, recall: np.ndarray, thresholds: np.ndarray) -> PRCurve:
    """Keep at most :data:`MAX_CURVE_POINTS` points, always including both ends."""
    count = precision.shape[0]
    if count > MAX_CURVE_POINTS:
        index = np.unique(np.linspace(0, count - 1, MAX_CURVE_POINTS).round().astype(np.int64))
    else:
        index = np.arange(count)
    # sklearn returns one threshold fewer than points: the last point (recall 0) has none.
    return PRCurve(
        precision=tuple(float(precision[i]) for i in index),
        recall=tuple(float(recall[i]) for i in index),
        thresholds=tuple(float(thresholds[i]) if i < thresholds.shape[0] else None for i in index),
    )


def _round(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"cannot serialise non-finite metric value {value!r}")
    return round(float(value), _DIGITS)
