"""Metrics against hand-computed values on tiny examples, plus degenerate inputs."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from toolchain.errors import BadInputError, UsageError
from toolchain.evaluate.metrics import MAX_CURVE_POINTS, EvaluationMetrics, compute_metrics

pytest.importorskip("sklearn")

CLASSES = ("car", "truck")
# 10 samples: 5 cars, 5 trucks; the score is P(truck).
Y_TRUE = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
P_TRUCK = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.9, 0.8, 0.35, 0.7, 0.45])
SCORES = np.stack([1 - P_TRUCK, P_TRUCK], axis=1)


@pytest.fixture
def binary() -> EvaluationMetrics:
    return compute_metrics(Y_TRUE, SCORES, CLASSES)


def test_binary_counts_and_rates_match_hand_computation(binary: EvaluationMetrics) -> None:
    # Predictions: cars -> 4 car, 1 truck (0.6); trucks -> 3 truck, 2 car (0.35, 0.45).
    assert binary.num_samples == 10
    assert binary.classes == CLASSES
    assert binary.confusion_matrix == [[4, 1], [2, 3]]
    assert binary.accuracy == pytest.approx(0.7)
    assert binary.precision == pytest.approx({"car": 4 / 6, "truck": 3 / 4})
    assert binary.recall == pytest.approx({"car": 4 / 5, "truck": 3 / 5})
    assert binary.f1 == pytest.approx({"car": 8 / 11, "truck": 2 / 3})
    assert binary.support == {"car": 5, "truck": 5}
    assert binary.macro_precision == pytest.approx((4 / 6 + 3 / 4) / 2)
    assert binary.macro_recall == pytest.approx(0.7)
    assert binary.macro_f1 == pytest.approx(23 / 33)


def test_binary_auc_matches_pair_counting(binary: EvaluationMetrics) -> None:
    positives = P_TRUCK[Y_TRUE == 1]
    negatives = P_TRUCK[Y_TRUE == 0]
    wins = sum(
        1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(positives, negatives)
    )
    manual = wins / (len(positives) * len(negatives))
    assert manual == pytest.approx(22 / 25)
    assert binary.roc_auc == pytest.approx(manual)


def test_average_precision_matches_hand_computation(binary: EvaluationMetrics) -> None:
    # Trucks ranked by score: hits at ranks 1, 2, 3, 5, 7.
    assert binary.average_precision["truck"] == pytest.approx((1 + 1 + 1 + 4 / 5 + 5 / 7) / 5)
    # Cars: rank by P(car) and average the precision at each hit.
    car_scores = 1 - P_TRUCK
    order = np.argsort(-car_scores, kind="stable")
    hits = (Y_TRUE[order] == 0).astype(float)
    manual = float(np.sum(np.cumsum(hits) / np.arange(1, 11) * hits) / hits.sum())
    assert binary.average_precision["car"] == pytest.approx(manual)


def test_pr_curve_ends_and_thresholds(binary: EvaluationMetrics) -> None:
    curve = binary.pr_curves["truck"]
    assert curve is not None
    assert len(curve.precision) == len(curve.recall) == len(curve.thresholds)
    assert curve.recall[0] == pytest.approx(1.0)
    assert curve.recall[-1] == 0.0 and curve.precision[-1] == 1.0
    assert curve.thresholds[-1] is None
    assert all(t is not None for t in curve.thresholds[:-1])
    assert list(curve.recall) == sorted(curve.recall, reverse=True)


def test_multiclass_auc_is_one_vs_rest_macro() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(7)
    y = rng.integers(0, 3, 60)
    scores = rng.dirichlet([1, 1, 1], 60).astype(np.float32)  # float32 rows sum to 1 only roughly
    scores[np.arange(60), y] += 0.5
    scores /= scores.sum(axis=1, keepdims=True)
    metrics = compute_metrics(y, scores, ["car", "truck", "bus"])
    expected = roc_auc_score(y, scores.astype(np.float64), multi_class="ovr", average="macro")
    assert metrics.roc_auc == pytest.approx(expected)
    assert set(metrics.precision) == {"car", "truck", "bus"}
    assert sum(map(sum, metrics.confusion_matrix)) == 60


def test_curves_are_downsampled_keeping_both_ends() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 1000)
    p = rng.random(1000)
    metrics = compute_metrics(y, np.stack([1 - p, p], axis=1), CLASSES)
    for curve in metrics.pr_curves.values():
        assert curve is not None
        assert 2 <= len(curve.recall) <= MAX_CURVE_POINTS
        assert curve.recall[0] == pytest.approx(1.0)
        assert curve.recall[-1] == 0.0 and curve.thresholds[-1] is None


@pytest.mark.filterwarnings("error")
def test_class_never_predicted_has_zero_precision_without_warnings() -> None:
    y = np.array([0, 1, 2, 0, 1, 2])
    scores = np.array(
        [
            [0.8, 0.1, 0.1],
            [0.1, 0.8, 0.1],
            [0.6, 0.1, 0.3],
            [0.7, 0.2, 0.1],
            [0.2, 0.7, 0.1],
            [0.2, 0.5, 0.3],
        ]
    )
    metrics = compute_metrics(y, scores, ["car", "truck", "bus"])
    assert metrics.precision["bus"] == 0.0
    assert metrics.recall["bus"] == 0.0
    assert metrics.f1["bus"] == 0.0
    assert metrics.confusion_matrix[2] == [1, 1, 0]
    assert metrics.roc_auc is not None


@pytest.mark.filterwarnings("error")
def test_single_class_labels_give_no_auc() -> None:
    y = np.zeros(4, dtype=np.int64)
    scores = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.8, 0.2]])
    metrics = compute_metrics(y, scores, CLASSES)
    assert metrics.roc_auc is None
    assert metrics.average_precision == {"car": pytest.approx(1.0), "truck": None}
    assert metrics.pr_curves["truck"] is None
    assert metrics.support == {"car": 4, "truck": 0}
    assert metrics.recall["truck"] == 0.0
    assert metrics.precision["truck"] == 0.0  # one truck prediction, none right
    assert metrics.accuracy == pytest.approx(0.75)
    json.dumps(metrics.to_json())


def test_json_round_trip(binary: EvaluationMetrics) -> None:
    document = binary.to_json()
    text = json.dumps(document)
    loaded = json.loads(text)
    assert loaded == document
    assert loaded["accuracy"] == 0.7
    assert loaded["precision"]["car"] == 0.666667  # rounded to 6 digits
    assert loaded["confusion_matrix"] == [[4, 1], [2, 3]]
    rebuilt = EvaluationMetrics.from_json(loaded)
    assert rebuilt.to_json() == document
    assert rebuilt.pr_curves["truck"] is not None


def test_from_json_rejects_garbage() -> None:
    with pytest.raises(BadInputError):
        EvaluationMetrics.from_json({"classes": ["a"]})


def test_empty_input_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="empty"):
        compute_metrics(np.array([], dtype=np.int64), np.zeros((0, 2)), CLASSES)


@pytest.mark.parametrize(
    ("y", "scores", "classes", "match"),
    [
        (Y_TRUE, SCORES[:5], CLASSES, "shape"),
        (Y_TRUE, SCORES, ("car",), "two class"),
        (Y_TRUE, SCORES, ("car", "car"), "unique"),
        (Y_TRUE + 1, SCORES, CLASSES, "outside"),
        (Y_TRUE, SCORES * 3 - 1, CLASSES, "softmax"),
        (Y_TRUE + 0.5, SCORES, CLASSES, "integer"),
    ],
)
def test_bad_arguments_are_usage_errors(
    y: np.ndarray, scores: np.ndarray, classes: tuple[str, ...], match: str
) -> None:
    with pytest.raises(UsageError, match=match):
        compute_metrics(y, scores, classes)


def test_non_finite_scores_are_bad_input() -> None:
    scores = SCORES.copy()
    scores[0, 0] = np.nan
    with pytest.raises(BadInputError, match="NaN"):
        compute_metrics(Y_TRUE, scores, CLASSES)
