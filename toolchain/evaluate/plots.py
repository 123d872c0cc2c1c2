"""PNG plots of evaluation metrics: the confusion matrix and per-class precision-recall curves.

matplotlib is imported lazily (it is a workstation dependency, never needed on a roadside unit) and
always with the non-interactive Agg backend. Files are written atomically: a temporary file in the
target directory is moved into place with :func:`os.replace`, so a failed save never leaves a
partial PNG under the real name.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolchain.errors import missing_extra
from toolchain.evaluate.metrics import EvaluationMetrics
from toolchain.fileio import atomic_output

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_DPI = 120


def plot_confusion_matrix(metrics: EvaluationMetrics, path: Path) -> Path:
    """Draw the confusion matrix with a count in every cell.

    Rows are true classes, columns predicted classes; the title gives the accuracy.

    Args:
        metrics: The evaluation metrics.
        path: Where to write the PNG (parent directories are created).

    Returns:
        ``path``.

    Raises:
        MissingEnvironmentError: matplotlib is not installed.
    """
    figure_cls = _figure_class()
    classes = list(metrics.classes)
    matrix = metrics.confusion_matrix
    n = len(classes)
    side = max(4.0, 1.0 + 0.9 * n)
    fig = figure_cls(figsize=(side + 1.0, side), dpi=_DPI)
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues", vmin=0, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)

    peak = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            # Light text on dark cells, dark text on light ones.
            color = "white" if peak and count > peak / 2 else "black"
            ax.text(j, i, str(count), ha="center", va="center", color=color, fontsize=11)

    crowded = n > 4
    ax.set_xticks(
        range(n), labels=classes, rotation=45 if crowded else 0, ha="right" if crowded else "center"
    )
    ax.set_yticks(range(n), labels=classes)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title(
        f"Confusion matrix (accuracy {metrics.accuracy:.4f}, n={metrics.num_samples})"
    )
    fig.tight_layout()
    _save_atomic(fig, Path(path))
    return Path(path)


def plot_pr_curves(metrics: EvaluationMetrics, path: Path) -> Path:
    """Draw one precision-recall curve per class (one-vs-rest), with its average precision.

    Classes absent from the evaluation set have no curve; the legend says so.

    Args:
        metrics: The evaluation metrics.
        path: Where to write the PNG (parent directories are created).

    Returns:
        ``path``.

    Raises:
        MissingEnvironmentError: matplotlib is not installed.
    """
    figure_cls = _figure_class()
    fig = figure_cls(figsize=(6.0, 5.0), dpi=_DPI)
    ax = fig.add_subplot()
    for name in metrics.classes:
        curve = metrics.pr_curves.get(name)
        ap = metrics.average_precision.get(name)
        if curve is None or ap is None:
            # An empty line keeps the class in the legend so its absence is visible.
            ax.plot([], [], linestyle="none", label=f"{name} (no samples)")
            continue
        ax.step(curve.recall, curve.precision, where="post", label=f"{name} (AP {ap:.4f})")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    ax.set_title(f"Precision-recall per class (n={metrics.num_samples})")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    _save_atomic(fig, Path(path))
    return Path(path)


def _figure_class() -> Any:
    """Import matplotlib with the Agg backend; return :class:`matplotlib.figure.Figure`."""
    try:
        import matplotlib
    except ImportError as exc:
        raise missing_extra("matplotlib", "train") from exc
    matplotlib.use("Agg")
    # Figure objects (not pyplot) keep no global state, so nothing leaks between plots or threads.
    from matplotlib.figure import Figure

    return Figure


def _save_atomic(fig: Figure, path: Path) -> None:
    with atomic_output(path) as handle:
        fig.savefig(handle, format="png")
