"""Plots write valid PNG files atomically."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from toolchain.evaluate.metrics import EvaluationMetrics, compute_metrics

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")
Image = pytest.importorskip("PIL.Image")

from toolchain.evaluate.plots import plot_confusion_matrix, plot_pr_curves  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PlotFn = Callable[[EvaluationMetrics, Path], Path]


@pytest.fixture(scope="module")
def metrics() -> EvaluationMetrics:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 40)
    y[:3] = [0, 1, 2]
    scores = rng.dirichlet([1, 1, 1], 40)
    return compute_metrics(y, scores, ["car", "truck", "bus"])


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] > 0 and image.size[1] > 0


@pytest.mark.parametrize("plot", [plot_confusion_matrix, plot_pr_curves])
def test_plot_writes_a_png(plot: PlotFn, metrics: EvaluationMetrics, tmp_path: Path) -> None:
    path = tmp_path / "out" / "plot.png"
    assert plot(metrics, path) == path
    _assert_png(path)
    assert [p.name for p in path.parent.iterdir()] == ["plot.png"]  # no temp file left


def test_plots_handle_an_absent_class(tmp_path: Path) -> None:
    y = np.zeros(4, dtype=np.int64)
    scores = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.8, 0.2]])
    single = compute_metrics(y, scores, ["car", "truck"])
    _assert_png(plot_confusion_matrix(single, tmp_path / "cm.png"))
    _assert_png(plot_pr_curves(single, tmp_path / "pr.png"))


@pytest.mark.parametrize("plot", [plot_confusion_matrix, plot_pr_curves])
def test_failed_save_leaves_no_partial_file(
    plot: PlotFn, metrics: EvaluationMetrics, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib.figure import Figure

    def broken_savefig(self: Figure, fname: object, *args: object, **kwargs: object) -> None:
        fname.write(PNG_SIGNATURE + b"half")  # type: ignore[attr-defined]
        raise OSError("disk full")

    path = tmp_path / "plot.png"
    path.write_bytes(b"previous")
    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        plot(metrics, path)
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]
    assert path.read_bytes() == b"previous"  # the old file is untouched


def test_missing_matplotlib_names_the_extra(
    metrics: EvaluationMetrics, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from toolchain.errors import MissingEnvironmentError

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(MissingEnvironmentError, match=r"toolchain\[train\]"):
        plot_confusion_matrix(metrics, tmp_path / "cm.png")
    assert not (tmp_path / "cm.png").exists()
