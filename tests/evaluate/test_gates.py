"""Quality gates: pass/fail, per-class minimum, class-specific gates and the error raised."""

from __future__ import annotations

import json

import numpy as np
import pytest

from toolchain.errors import QualityGateError, UsageError
from toolchain.evaluate.gates import Gate, check_gates, parse_gate, raise_if_failed
from toolchain.evaluate.metrics import EvaluationMetrics


def _metrics(**overrides: object) -> EvaluationMetrics:
    values: dict[str, object] = dict(
        classes=("car", "truck"),
        num_samples=100,
        accuracy=0.96,
        precision={"car": 0.97, "truck": 0.95},
        recall={"car": 0.98, "truck": 0.9412},
        f1={"car": 0.975, "truck": 0.9455},
        support={"car": 50, "truck": 50},
        macro_precision=0.96,
        macro_recall=0.9606,
        macro_f1=0.96025,
        confusion_matrix=[[49, 1], [3, 47]],
        roc_auc=0.99,
        average_precision={"car": 0.99, "truck": 0.98},
        pr_curves={"car": None, "truck": None},
    )
    values.update(overrides)
    return EvaluationMetrics(**values)  # type: ignore[arg-type]


def test_accuracy_gate_pass_and_fail() -> None:
    metrics = _metrics()
    assert check_gates(metrics, [Gate(metric="accuracy", threshold=0.95)]).passed
    result = check_gates(metrics, [Gate(metric="accuracy", threshold=0.97)])
    assert not result.passed
    (failure,) = result.failures
    assert (failure.metric, failure.class_name, failure.value, failure.threshold) == (
        "accuracy",
        None,
        0.96,
        0.97,
    )
    assert result.message() == "accuracy is 0.9600, below the gate 0.9700"


def test_threshold_equal_to_value_passes() -> None:
    assert check_gates(_metrics(), [Gate(metric="accuracy", threshold=0.96)]).passed


def test_per_class_gate_uses_the_weakest_class() -> None:
    metrics = _metrics()
    # Macro recall (0.9606) clears 0.95; the truck class (0.9412) does not.
    assert check_gates(metrics, [Gate(metric="recall", threshold=0.95, per_class=False)]).passed
    result = check_gates(metrics, [Gate(metric="recall", threshold=0.95)])
    assert not result.passed
    assert len(result.checks) == 2
    (failure,) = result.failures
    assert failure.class_name == "truck"
    assert failure.value == 0.9412
    assert result.message() == "recall of truck is 0.9412, below the gate 0.9500"
    assert check_gates(metrics, [Gate(metric="recall", threshold=0.94)]).passed


def test_every_failing_class_is_reported() -> None:
    result = check_gates(_metrics(), [Gate(metric="f1", threshold=0.99)])
    assert [f.class_name for f in result.failures] == ["car", "truck"]
    assert result.message().count("below the gate 0.9900") == 2


def test_class_specific_gate() -> None:
    metrics = _metrics()
    assert check_gates(metrics, [Gate(metric="recall", threshold=0.95, class_name="car")]).passed
    result = check_gates(metrics, [Gate(metric="precision", threshold=0.96, class_name="truck")])
    assert [(f.metric, f.class_name) for f in result.failures] == [("precision", "truck")]
    with pytest.raises(UsageError, match="bus"):
        check_gates(metrics, [Gate(metric="recall", threshold=0.9, class_name="bus")])


def test_several_gates_and_json() -> None:
    gates = [Gate(metric="accuracy", threshold=0.9), Gate(metric="precision", threshold=0.9)]
    result = check_gates(_metrics(), gates)
    assert result.passed and result.failures == ()
    assert result.message() == "all 2 quality gates passed"
    document = json.loads(json.dumps(result.to_json()))
    assert document["passed"] is True and len(document["checks"]) == 3


def test_absent_class_is_named_in_the_message() -> None:
    metrics = _metrics(recall={"car": 1.0, "truck": 0.0}, support={"car": 100, "truck": 0})
    result = check_gates(metrics, [Gate(metric="recall", threshold=0.5)])
    assert "no samples of truck" in result.message()


@pytest.mark.parametrize("threshold", [97, 95.5, 100])
def test_percentage_threshold_is_a_usage_error_with_a_hint(threshold: float) -> None:
    with pytest.raises(UsageError, match=f"write {threshold / 100:g}"):
        Gate(metric="accuracy", threshold=threshold)


@pytest.mark.parametrize("threshold", [-0.1, 250, float("nan"), True, "0.9"])
def test_invalid_thresholds(threshold: object) -> None:
    with pytest.raises(UsageError):
        Gate(metric="accuracy", threshold=threshold)  # type: ignore[arg-type]


def test_invalid_gate_combinations() -> None:
    with pytest.raises(UsageError, match="choose one of"):
        Gate(metric="auc", threshold=0.9)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="recall"):
        Gate(metric="accuracy", threshold=0.9, class_name="truck")
    with pytest.raises(UsageError):
        Gate(metric="recall", threshold=0.9, class_name="truck", per_class=False)
    assert Gate(metric="accuracy", threshold=1).threshold == 1.0


def test_raise_if_failed() -> None:
    metrics = _metrics()
    raise_if_failed(check_gates(metrics, [Gate(metric="recall", threshold=0.9)]))
    with pytest.raises(QualityGateError) as excinfo:
        raise_if_failed(check_gates(metrics, [Gate(metric="recall", threshold=0.95)]))
    assert excinfo.value.exit_code == 3
    assert "recall of truck is 0.9412, below the gate 0.9500" in str(excinfo.value)


def test_gates_on_computed_metrics() -> None:
    pytest.importorskip("sklearn")
    from toolchain.evaluate.metrics import compute_metrics

    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.9, 0.8, 0.7, 0.45])  # one truck missed
    metrics = compute_metrics(y, np.stack([1 - p, p], axis=1), ["car", "truck"])
    result = check_gates(metrics, [Gate(metric="recall", threshold=0.8)])
    assert result.message() == "recall of truck is 0.7500, below the gate 0.8000"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("accuracy>=0.97", Gate(metric="accuracy", threshold=0.97)),
        ("recall>=0.95", Gate(metric="recall", threshold=0.95)),
        ("Recall:truck >= 0.95", Gate(metric="recall", threshold=0.95, class_name="truck")),
        ("macro_f1>=0.9", Gate(metric="f1", threshold=0.9, per_class=False)),
    ],
)
def test_parse_gate(spec: str, expected: Gate) -> None:
    assert parse_gate(spec) == expected


@pytest.mark.parametrize("spec", ["accuracy", "accuracy>0.9", "accuracy>=x", "macro_accuracy>=0.9"])
def test_parse_gate_rejects(spec: str) -> None:
    with pytest.raises(UsageError):
        parse_gate(spec)


def test_parse_gate_percentage_hint() -> None:
    with pytest.raises(UsageError, match="write 0.97"):
        parse_gate("accuracy>=97")
