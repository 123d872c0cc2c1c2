"""Quality gates: minimum metric values a checkpoint must reach before it moves on.

A gate names a metric and a threshold in ``[0, 1]``. Precision, recall and F1 gates apply to every
class (the weakest class must clear the threshold) unless they name one class, or are set to the
macro average with ``per_class=False``. :func:`raise_if_failed` turns a failed check into a
:class:`~toolchain.errors.QualityGateError` (exit code 3).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from toolchain.errors import QualityGateError, UsageError
from toolchain.evaluate.metrics import EvaluationMetrics

GateMetric = Literal["accuracy", "precision", "recall", "f1"]
GATE_METRICS: tuple[str, ...] = get_args(GateMetric)

# Metrics are ratios of counts; forgive float noise in macro averages right at the threshold.
_TOLERANCE = 1e-9

_SPEC = re.compile(
    r"^\s*(?P<macro>macro[_-])?(?P<metric>[a-z0-9]+)(?::(?P<cls>[^>=]+?))?"
    r"\s*>=\s*(?P<value>\S+)\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True, kw_only=True)
class Gate:
    """A minimum value for one metric.

    Attributes:
        metric: ``"accuracy"``, ``"precision"``, ``"recall"`` or ``"f1"``.
        threshold: The minimum value, a fraction in ``[0, 1]`` (write 0.97, not 97).
        per_class: For precision/recall/F1: ``True`` (default) requires every class to reach the
            threshold; ``False`` gates the macro average instead. Ignored for accuracy.
        class_name: For precision/recall/F1: gate only this class.

    Raises:
        UsageError: Unknown metric, a threshold outside ``[0, 1]`` (percentages included), a class
            name on an accuracy gate, or a class name together with ``per_class=False``.
    """

    metric: GateMetric
    threshold: float
    per_class: bool = True
    class_name: str | None = None

    def __post_init__(self) -> None:
        if self.metric not in GATE_METRICS:
            raise UsageError(
                f"Unknown gate metric {self.metric!r}; choose one of {', '.join(GATE_METRICS)}."
            )
        threshold = self.threshold
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise UsageError(f"Gate threshold must be a number in [0, 1], got {threshold!r}.")
        if math.isnan(threshold) or threshold < 0:
            raise UsageError(f"Gate threshold must be a number in [0, 1], got {threshold!r}.")
        if threshold > 1:
            hint = (
                f" It looks like a percentage: write {threshold / 100:g} for {threshold:g}%."
                if threshold <= 100
                else ""
            )
            raise UsageError(
                f"Gate threshold for {self.metric} must be a fraction in [0, 1], got {threshold:g}."
                + hint
            )
        object.__setattr__(self, "threshold", float(threshold))
        if self.metric == "accuracy" and self.class_name is not None:
            raise UsageError(
                f"accuracy is measured over all classes and cannot be gated for class "
                f"{self.class_name!r}; gate its recall instead (recall:{self.class_name}>=...)."
            )
        if self.class_name is not None and not self.per_class:
            raise UsageError(
                f"A {self.metric} gate cannot name class {self.class_name!r} and gate the macro "
                "average (per_class=False) at once; drop one of them."
            )

    @property
    def label(self) -> str:
        """A short name for the gated quantity, e.g. ``recall of truck`` or ``macro f1``."""
        if self.metric == "accuracy":
            return "accuracy"
        if self.class_name is not None:
            return f"{self.metric} of {self.class_name}"
        return f"{self.metric} of every class" if self.per_class else f"macro {self.metric}"

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types."""
        return {
            "metric": self.metric,
            "threshold": self.threshold,
            "per_class": self.per_class,
            "class_name": self.class_name,
        }


@dataclass(frozen=True, kw_only=True)
class GateCheck:
    """One comparison of a metric value against a gate threshold.

    Attributes:
        gate: The gate that asked for it.
        metric: The metric compared.
        class_name: The class the value belongs to; ``None`` for accuracy and macro averages.
        value: The measured value.
        threshold: The gate's threshold.
        support: Number of true samples of :attr:`class_name` (``None`` without a class).
    """

    gate: Gate
    metric: str
    class_name: str | None
    value: float
    threshold: float
    support: int | None = None

    @property
    def passed(self) -> bool:
        """Whether the value reaches the threshold."""
        return self.value + _TOLERANCE >= self.threshold

    def message(self) -> str:
        """A human line, e.g. ``recall of truck is 0.9412, below the gate 0.9500``."""
        if self.class_name is not None:
            subject = f"{self.metric} of {self.class_name}"
        elif self.metric == "accuracy":
            subject = "accuracy"
        else:
            subject = f"macro {self.metric}"
        relation = "below" if not self.passed else "meets"
        text = f"{subject} is {self.value:.4f}, {relation} the gate {self.threshold:.4f}"
        if self.support == 0:
            text += f" (the evaluation set has no samples of {self.class_name})"
        return text

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types, values rounded to 6 digits."""
        return {
            "metric": self.metric,
            "class_name": self.class_name,
            "value": round(self.value, 6),
            "threshold": self.threshold,
            "passed": self.passed,
            "support": self.support,
        }


@dataclass(frozen=True, kw_only=True)
class GateResult:
    """The outcome of :func:`check_gates`.

    Attributes:
        checks: Every comparison made, in gate order (one per class for a per-class gate).
    """

    checks: tuple[GateCheck, ...]

    @property
    def passed(self) -> bool:
        """Whether every check passed (vacuously true without gates)."""
        return all(check.passed for check in self.checks)

    @property
    def failures(self) -> tuple[GateCheck, ...]:
        """The checks that did not reach their threshold."""
        return tuple(check for check in self.checks if not check.passed)

    def message(self) -> str:
        """One human line: the failures joined by ``"; "``, or a line saying all gates passed."""
        failures = self.failures
        if failures:
            return "; ".join(check.message() for check in failures)
        gates = len({id(check.gate) for check in self.checks})
        if gates == 0:
            return "no quality gates were set"
        return f"all {gates} quality gate{'s' if gates != 1 else ''} passed"

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types."""
        return {
            "passed": self.passed,
            "message": self.message(),
            "checks": [check.to_json() for check in self.checks],
        }


def check_gates(metrics: EvaluationMetrics, gates: Iterable[Gate]) -> GateResult:
    """Check metrics against quality gates.

    Args:
        metrics: The evaluation metrics.
        gates: The gates; each produces one check, or one per class for a per-class gate.

    Returns:
        Every check made; :attr:`GateResult.passed` says whether all passed.

    Raises:
        UsageError: A gate names a class that the metrics do not have.
    """
    checks: list[GateCheck] = []
    for gate in gates:
        if gate.metric == "accuracy":
            checks.append(_check(gate, None, metrics.accuracy))
            continue
        per_class: dict[str, float] = getattr(metrics, gate.metric)
        if gate.class_name is not None:
            if gate.class_name not in per_class:
                raise UsageError(
                    f"The {gate.metric} gate names class {gate.class_name!r}, which is not one of "
                    f"the evaluated classes: {', '.join(metrics.classes)}."
                )
            names = [gate.class_name]
        elif gate.per_class:
            names = list(metrics.classes)
        else:
            checks.append(_check(gate, None, getattr(metrics, f"macro_{gate.metric}")))
            continue
        for name in names:
            checks.append(_check(gate, name, per_class[name], metrics.support.get(name)))
    return GateResult(checks=tuple(checks))


def raise_if_failed(result: GateResult) -> None:
    """Raise if any gate failed.

    Args:
        result: The outcome of :func:`check_gates`.

    Raises:
        QualityGateError: With :meth:`GateResult.message` and what to do next (exit code 3).
    """
    if result.passed:
        return
    raise QualityGateError(
        f"Quality gate not met: {result.message()}. Improve the model (more or cleaner data, "
        "longer training, a search) or, if the gate is too strict, lower it deliberately."
    )


def parse_gate(spec: str) -> Gate:
    """Parse a gate written on the command line.

    Forms: ``accuracy>=0.97``, ``recall>=0.95`` (every class), ``recall:truck>=0.95`` (one class),
    ``macro_f1>=0.9`` (macro average).

    Args:
        spec: The text.

    Returns:
        The gate.

    Raises:
        UsageError: The text does not have one of those forms, or the gate is invalid.
    """
    match = _SPEC.match(spec)
    if match is None:
        raise UsageError(
            f"Cannot read the gate {spec!r}. Write METRIC>=VALUE, METRIC:CLASS>=VALUE or "
            "macro_METRIC>=VALUE, e.g. accuracy>=0.97 or recall:truck>=0.95."
        )
    metric = match["metric"].lower()
    try:
        threshold = float(match["value"])
    except ValueError:
        raise UsageError(f"The gate {spec!r} has a threshold that is not a number.") from None
    class_name = match["cls"].strip() if match["cls"] else None
    if match["macro"] and metric == "accuracy":
        raise UsageError(f"Accuracy has no macro average; write accuracy>={match['value']}.")
    return Gate(
        metric=metric,  # type: ignore[arg-type]  # validated by Gate
        threshold=threshold,
        per_class=not match["macro"],
        class_name=class_name,
    )


def _check(
    gate: Gate, class_name: str | None, value: float, support: int | None = None
) -> GateCheck:
    return GateCheck(
        gate=gate,
        metric=gate.metric,
        class_name=class_name,
        value=float(value),
        threshold=gate.threshold,
        support=support,
    )
