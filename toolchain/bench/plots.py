"""PNG plots of a streaming benchmark: latency histogram per stage, and a per-frame timeline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from toolchain.fileio import atomic_output


def _pyplot():  # noqa: ANN202 - matplotlib is a workstation dependency, imported only to draw
    from toolchain.errors import missing_extra

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise missing_extra("matplotlib", "train") from exc
    return plt


def plot_histograms(stage_ms: Mapping[str, np.ndarray], out: Path, *, title: str, budget_ms: float | None = None) -> Path:
    """One histogram per stage (and end to end), with p50/p99 marked."""
    plt = _pyplot()
    names = [n for n, v in stage_ms.items() if len(v)]
    cols = 3
    rows = max(1, -(-len(names) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        values = np.asarray(stage_ms[name])
        ax.hist(values, bins=min(60, max(10, len(values) // 10)), color="#4878a8")
        for q, style in ((50, "-"), (99, "--")):
            ax.axvline(np.percentile(values, q), color="#c03030", linestyle=style, linewidth=1, label=f"p{q}")
        if name == "e2e" and budget_ms:
            ax.axvline(budget_ms, color="black", linewidth=1, label="budget")
        ax.set_title(name)
        ax.set_xlabel("ms")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, plt, out)


def plot_timeline(arrival_s: np.ndarray, e2e_ms: np.ndarray, streams: np.ndarray, drops: Sequence[tuple[int, float]],
                  names: Sequence[str], out: Path, *, title: str, budget_ms: float | None = None) -> Path:
    """End-to-end latency of every frame against its arrival time, per stream; dropped frames marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 3.6))
    for k, name in enumerate(names):
        sel = streams == k
        if sel.any():
            ax.plot(arrival_s[sel], e2e_ms[sel], ".", markersize=2.5, label=name[-40:])
    if drops:
        ax.plot([t for _, t in drops], [0] * len(drops), "x", color="#c03030", markersize=4, label=f"dropped ({len(drops)})")
    if budget_ms:
        ax.axhline(budget_ms, color="black", linewidth=1, label=f"budget {budget_ms:g} ms")
    ax.set_xlabel("arrival (s since measuring began)")
    ax.set_ylabel("end-to-end ms")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return _save(fig, plt, out)


def _save(fig, plt, out: Path) -> Path:  # noqa: ANN001
    try:
        with atomic_output(out) as handle:
            fig.savefig(handle, dpi=90, format="png")
    finally:
        plt.close(fig)
    return out
