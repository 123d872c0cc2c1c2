"""Preprocessing and postprocessing on the runtime path, in numpy only (no torch, no OpenCV).

The resize reproduces ``torch.nn.functional.interpolate(mode="bilinear", antialias=True,
align_corners=False)``, which is what evaluation and export parity feed a model
(``toolchain.train.batches.eval_transform`` / ``resize_uint8``), as separable filter taps: every
output pixel is a weighted sum of the few input pixels under a triangle filter widened by the
downscale factor. Taps are computed once per input shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from toolchain.errors import UsageError
from toolchain.runtime.compat import frozen_config

LAYOUTS = ("float-nchw", "uint8-nhwc")


def resize_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, weights)`` of shape (size_out, K): torch's antialiased bilinear filter along one axis."""
    scale = size_in / size_out
    support = max(scale, 1.0)  # bilinear's half-width 1, stretched when downscaling
    inv = 1.0 / scale if scale >= 1.0 else 1.0
    taps = int(math.ceil(support)) * 2 + 1
    indices = np.zeros((size_out, taps), dtype=np.intp)
    weights = np.zeros((size_out, taps), dtype=np.float32)
    for i in range(size_out):
        centre = scale * (i + 0.5)
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), size_in)
        j = np.arange(lo, hi)
        w = np.maximum(0.0, 1.0 - np.abs((j - centre + 0.5) * inv))
        total = w.sum()
        w = w / total if total > 0 else w
        indices[i, : len(j)] = j
        indices[i, len(j) :] = j[-1] if len(j) else 0
        weights[i, : len(j)] = w
    keep = int(np.max(np.count_nonzero(weights, axis=1))) or 1
    order = np.argsort(-weights, axis=1, kind="stable")[:, :keep]  # drop all-zero tap columns
    return np.take_along_axis(indices, order, 1), np.take_along_axis(weights, order, 1)


@frozen_config
class Roi:
    """A region of interest in frame pixels."""

    x: int
    y: int
    width: int
    height: int

    @classmethod
    def parse(cls, text: str) -> Roi:
        """``X,Y,W,H`` (pixels)."""
        try:
            x, y, w, h = (int(v) for v in text.split(","))
        except ValueError as exc:
            raise UsageError(f"--roi {text!r} is not X,Y,W,H in pixels (e.g. 0,40,320,200)") from exc
        if x < 0 or y < 0 or w < 1 or h < 1:
            raise UsageError(f"--roi {text!r}: X and Y must be >= 0, W and H >= 1")
        return cls(x=x, y=y, width=w, height=h)


@frozen_config
class PreprocessConfig:
    """How a frame becomes one model input.

    Attributes:
        size: Square input side the model takes.
        layout: ``float-nchw`` (normalised float) or ``uint8-nhwc`` (the graph normalises).
        mean: Per-channel mean on the 0..1 scale (float layout only).
        std: Per-channel std on the 0..1 scale (float layout only).
        roi: Crop applied before the resize; None for the whole frame.
    """

    size: int
    layout: str = "float-nchw"
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    roi: Roi | None = None

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise UsageError(f"input layout {self.layout!r} is not one of {', '.join(LAYOUTS)}")
        if self.size < 1:
            raise UsageError(f"input size must be >= 1, got {self.size}")


@dataclass
class Preprocessor:
    """Frame (H, W, 3) uint8 RGB -> one model input, as evaluation feeds the model."""

    config: PreprocessConfig
    _taps: dict[tuple[int, int], tuple[np.ndarray, ...]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        c = self.config
        self._scale = (1.0 / (255.0 * np.asarray(c.std, np.float32))).reshape(3, 1, 1)
        self._shift = (np.asarray(c.mean, np.float32) / np.asarray(c.std, np.float32)).reshape(3, 1, 1)

    def crop(self, frame: np.ndarray) -> np.ndarray:
        roi = self.config.roi
        if roi is None:
            return frame
        if roi.x >= frame.shape[1] or roi.y >= frame.shape[0]:
            raise UsageError(f"--roi starts at ({roi.x},{roi.y}), outside the {frame.shape[1]}x{frame.shape[0]} frame")
        return frame[roi.y : roi.y + roi.height, roi.x : roi.x + roi.width]

    def resize(self, frame: np.ndarray) -> np.ndarray:
        """float32 (3, S, S) on the 0..255 scale.

        Each pass is a few tap-weighted row gathers with long contiguous inner loops: vertical over
        (H, W*3) rows, then horizontal over the transposed (W, S*3) rows. No BLAS call: a threaded BLAS
        competing with decode threads for two cores costs more than the arithmetic.
        """
        h, w = frame.shape[:2]
        size = self.config.size
        taps = self._taps.get((h, w))
        if taps is None:
            iy, wy = resize_taps(h, size)
            ix, wx = resize_taps(w, size)
            taps = self._taps[(h, w)] = (iy, np.ascontiguousarray(wy[:, :, None]), ix, np.ascontiguousarray(wx[:, :, None]))
        iy, wy, ix, wx = taps
        flat = frame.reshape(h, w * 3)
        rows = wy[:, 0] * flat[iy[:, 0]]
        for k in range(1, iy.shape[1]):
            rows += wy[:, k] * flat[iy[:, k]]
        cols = np.ascontiguousarray(rows.reshape(size, w, 3).transpose(1, 0, 2)).reshape(w, size * 3)
        out = wx[:, 0] * cols[ix[:, 0]]
        for k in range(1, ix.shape[1]):
            out += wx[:, k] * cols[ix[:, k]]
        return out.reshape(size, size, 3).transpose(2, 1, 0)  # (x, y, c) -> (c, y, x)

    @property
    def decode_size(self) -> tuple[int, int] | None:
        """``(width, height)`` a decoder may scale frames to before they get here (None: full frames needed).

        With no region of interest the whole frame is resized to the input size, so a decoder that scales as
        it converts colours (libswscale) saves the full-size RGB frame and the resize here.
        """
        return None if self.config.roi is not None else (self.config.size, self.config.size)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        size = self.config.size
        if self.config.roi is None and frame.shape[0] == size and frame.shape[1] == size:
            if self.config.layout == "uint8-nhwc":  # already the model's input: scaled by the decoder
                return np.ascontiguousarray(frame)
            return np.ascontiguousarray(frame.transpose(2, 0, 1) * self._scale - self._shift, dtype=np.float32)
        chw = self.resize(np.ascontiguousarray(self.crop(frame)))
        if self.config.layout == "uint8-nhwc":
            return np.ascontiguousarray(np.clip(np.rint(chw), 0, 255).astype(np.uint8).transpose(1, 2, 0))
        return np.ascontiguousarray(chw * self._scale - self._shift, dtype=np.float32)


def to_probabilities(scores: np.ndarray) -> np.ndarray:
    """Rows that already sum to 1 are returned as they are; logits get a softmax."""
    scores = np.asarray(scores, dtype=np.float32)
    if np.allclose(scores.sum(axis=1), 1.0, atol=1e-3) and (scores >= 0).all():
        return scores
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def postprocess(scores: np.ndarray, classes: Sequence[str]) -> list[tuple[str, float]]:
    """``(label, probability)`` for each row of a batch of scores."""
    probs = to_probabilities(scores)
    top = probs.argmax(axis=1)
    names = list(classes) or [str(i) for i in range(probs.shape[1])]
    return [(names[k] if k < len(names) else str(k), float(probs[i, k])) for i, k in enumerate(top)]
