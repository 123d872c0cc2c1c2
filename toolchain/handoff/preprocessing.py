"""Gst-nvinfer's preprocessing numbers for a model, and how far they are from the model's own preprocessing.

nvinfer computes ``y = net-scale-factor * (x - offsets[c])`` in float32 on 0..255 pixels (one scale for every
channel). The model was trained on ``(x / 255 - mean[c]) / std[c]``. Two ways to meet:

* **in the graph** (:mod:`toolchain.handoff.ingraph`): scale 1, offsets 0, and the model's own normalisation
  runs inside the ONNX that DeepStream builds. Exact.
* **approximate**: ``offsets[c] = 255 * mean[c]`` (exact) and one scale for the three ``1 / (255 * std[c])``.
  The scale minimises the worst case over every pixel value and channel: channel ``c`` is off by at most
  ``A[c] * |k - k[c]|`` with ``A[c] = max(255 * mean[c], 255 * (1 - mean[c]))``, so the best ``k`` is a channel's
  own ``k[c]`` or where two of those lines cross. Used when the engine is already built (its graph is fixed).

:func:`check_preprocessing` measures what the numbers written in a config do on every uint8 value of every
channel, against the model's preprocessing computed as the model computes it (float32, same order).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MODES = ("in-graph", "approximate")
EXACT_TOLERANCE = 1e-6  # float32 rounding of values of magnitude ~3: below it, two formulas agree to the last bits


@dataclass(frozen=True, kw_only=True)
class NvinferNumbers:
    """``net-scale-factor`` and ``offsets`` for a config, and how they were chosen."""

    mode: str
    net_scale_factor: float
    offsets: tuple[float, ...]
    worst_case: float  # the analytic bound of the approximation (0 in the graph)


@dataclass(frozen=True, kw_only=True)
class PreprocessingReport:
    """What the config's numbers do to uint8 pixels, against the model's own preprocessing.

    Attributes:
        exact: The config expresses the model's preprocessing without approximation (in the graph, or one std for
            every channel) and the measured difference is only float32 rounding.
        max_error: Largest difference over every uint8 value of every channel, in the model's input units
            (normalised pixels).
        mode: ``in-graph``, ``approximate`` or ``model-input`` (Triton: clients send the model's own input).
        per_channel: ``max_error`` per channel (R, G, B).
        net_scale_factor, offsets: The numbers checked, as written in the config.
        values_checked: How many (value, channel) pairs were compared.
    """

    exact: bool
    max_error: float
    mode: str
    per_channel: tuple[float, ...] = ()
    net_scale_factor: float | None = None
    offsets: tuple[float, ...] = ()
    values_checked: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {"exact": self.exact, "max_error": self.max_error, "mode": self.mode,
                "per_channel": list(self.per_channel), "net_scale_factor": self.net_scale_factor,
                "offsets": list(self.offsets), "values_checked": self.values_checked, "notes": list(self.notes)}


def in_graph_numbers() -> NvinferNumbers:
    return NvinferNumbers(mode="in-graph", net_scale_factor=1.0, offsets=(0.0, 0.0, 0.0), worst_case=0.0)


def approximate_numbers(mean: Sequence[float], std: Sequence[float]) -> NvinferNumbers:
    """Offsets ``255 * mean`` and the one scale with the smallest worst-case error (module docstring)."""
    offsets = tuple(255.0 * m for m in mean)
    k = [1.0 / (255.0 * s) for s in std]
    reach = [max(o, 255.0 - o) for o in offsets]  # largest |x - offset| over x in 0..255

    def worst(scale: float) -> float:
        return max(a * abs(scale - kc) for a, kc in zip(reach, k))

    candidates = list(k) + [(reach[i] * k[i] + reach[j] * k[j]) / (reach[i] + reach[j])
                            for i, j in itertools.combinations(range(len(k)), 2)]
    scale = min(candidates, key=worst)
    return NvinferNumbers(mode="approximate", net_scale_factor=scale, offsets=offsets, worst_case=worst(scale))


def format_number(value: float) -> str:
    """A number as written in a config: 9 significant digits (float32 holds ~7), no exponent for ordinary values."""
    return f"{value:.9g}"


def reference_input(mean: Sequence[float], std: Sequence[float], values: np.ndarray) -> np.ndarray:
    """The model's preprocessing of 0..255 ``values`` per channel (``(3, n)``), as export and evaluation compute it."""
    x = values.astype(np.float32) / np.float32(255.0)
    return (x - np.asarray(mean, np.float32)[:, None]) / np.asarray(std, np.float32)[:, None]


def nvinfer_input(scale: float, offsets: Sequence[float], values: np.ndarray) -> np.ndarray:
    """What nvinfer writes for 0..255 ``values`` per channel (``(3, n)``): float32 ``scale * (x - offset)``."""
    return np.float32(scale) * (values.astype(np.float32) - np.asarray(offsets, np.float32)[:, None])


def check_preprocessing(*, mean: Sequence[float], std: Sequence[float], layout: str, scale: float,
                        offsets: Sequence[float], mode: str, prelude: Path | None = None) -> PreprocessingReport:
    """Compare the config's numbers with the model's preprocessing on every uint8 value of every channel.

    Args:
        mean, std: The model's normalisation (its metadata).
        layout: The model's input layout; a ``uint8-nhwc`` model's own preprocessing is its graph, so its
            reference is the raw pixel itself.
        scale, offsets: ``net-scale-factor`` and ``offsets`` as read back from the written config.
        mode: ``in-graph`` or ``approximate``.
        prelude: With ``in-graph``: the ONNX of the normalisation put in front of the model (run with ONNX Runtime
            on what nvinfer feeds, so the graph's own arithmetic is what is measured).
    """
    values = np.tile(np.arange(256, dtype=np.float32), (3, 1))  # (3, 256): every value of every channel
    fed = nvinfer_input(scale, offsets, values)
    if layout == "uint8-nhwc":
        reference = values  # the graph normalises: it must receive the pixel itself
    else:
        reference = reference_input(mean, std, values)
    if mode == "in-graph":
        if prelude is None:
            raise ValueError("in-graph preprocessing is checked by running its prelude graph")
        got = _run_prelude(prelude, fed, layout)
    else:
        got = fed
    errors = np.abs(got.astype(np.float64) - reference.astype(np.float64)).max(axis=1)
    max_error = float(errors.max())
    one_scale = len({np.float32(s) for s in std}) == 1
    exact = (mode == "in-graph" or one_scale) and max_error <= EXACT_TOLERANCE
    notes = ()
    if not exact:
        notes = ((f"one net-scale-factor cannot express per-channel std {list(std)}: the model's input is off by up to "
                  f"{max_error:.4g} (normalised units, about {max_error * 255 * min(std):.2f} grey levels)"),)
    return PreprocessingReport(exact=exact, max_error=max_error, mode=mode, per_channel=tuple(float(e) for e in errors),
                               net_scale_factor=float(scale), offsets=tuple(float(o) for o in offsets),
                               values_checked=int(values.size), notes=notes)


def _run_prelude(prelude: Path, fed: np.ndarray, layout: str) -> np.ndarray:
    """Run the prelude graph on ``fed`` (3, 256), laid out as as many NCHW images as it takes; back to (3, 256)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(prelude), providers=["CPUExecutionProvider"])
    size = int(session.get_inputs()[0].shape[2])
    per = size * size
    count = -(-fed.shape[1] // per)
    reps = -(-count * per // fed.shape[1])
    flat = np.tile(fed, (1, reps))[:, : count * per]  # each channel's 256 values first, repeated to fill
    images = np.ascontiguousarray(flat.reshape(3, count, size, size).transpose(1, 0, 2, 3), dtype=np.float32)
    out = session.run(None, {session.get_inputs()[0].name: images})[0]
    planar = out.transpose(0, 3, 1, 2) if layout == "uint8-nhwc" else out
    return planar.transpose(1, 0, 2, 3).reshape(3, -1)[:, : fed.shape[1]]
