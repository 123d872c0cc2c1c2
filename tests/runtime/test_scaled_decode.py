"""Scaled decode (libswscale shrinks each frame to the model's input as it converts colours) keeps the model's
preprocessing numerics: pixels within a few levels of the numpy antialiased resize, and the same classification.

Frames are the synthetic road scene encoded as H.264 at 640x352 (what the stream benchmarks use); the model
is a small convolutional ONNX. Tolerances (stated in BENCHMARKS.md too): mean absolute pixel difference under
2 levels of 255, top-1 agreement on at least 98% of frames, probabilities within 0.05.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.onnx_fixtures import write_tiny_onnx
from toolchain.runtime.preprocess import PreprocessConfig, Preprocessor, Roi
from toolchain.runtime.sources import PyAVSource

SIZE = 64


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from toolchain.synth.video import VideoConfig, write_video

    out = tmp_path_factory.mktemp("clip") / "road.mp4"
    write_video(out, VideoConfig(seconds=2.0, fps=15, width=640, height=352, seed=3))
    return out


def _frames(clip: Path, size: tuple[int, int] | None) -> list[np.ndarray]:
    source = PyAVSource(str(clip))
    if size is not None:
        source.request_size(*size)
    frames = []
    with source:
        while (frame := source.read()) is not None:
            frames.append(frame)
    return frames


def test_scaled_decode_matches_the_preprocessing_and_the_classification(clip: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    pre = Preprocessor(PreprocessConfig(size=SIZE))
    assert pre.decode_size == (SIZE, SIZE)
    full = [pre(f) for f in _frames(clip, None)]
    scaled_frames = _frames(clip, pre.decode_size)
    assert scaled_frames[0].shape == (SIZE, SIZE, 3) and len(scaled_frames) == len(full) == 30
    scaled = [pre(f) for f in scaled_frames]
    std = np.asarray(pre.config.std, np.float32).reshape(3, 1, 1) * 255
    pixel_diff = np.mean([np.abs((a - b) * std).mean() for a, b in zip(full, scaled)])
    assert pixel_diff < 2.0, f"mean |difference| {pixel_diff:.2f} levels of 255"

    session = ort.InferenceSession(str(write_tiny_onnx(tmp_path / "m.onnx", size=SIZE, batch="N", seed=5)),
                                   providers=["CPUExecutionProvider"])

    def probabilities(batch: list[np.ndarray]) -> np.ndarray:
        logits = session.run(None, {session.get_inputs()[0].name: np.stack(batch)})[0]
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    p_full, p_scaled = probabilities(full), probabilities(scaled)
    agreement = float(np.mean(p_full.argmax(1) == p_scaled.argmax(1)))
    assert agreement >= 0.98 and float(np.abs(p_full - p_scaled).max()) < 0.05


def test_a_region_of_interest_or_uint8_input_still_gets_what_it_needs(clip: Path) -> None:
    roi = Preprocessor(PreprocessConfig(size=SIZE, roi=Roi(x=0, y=40, width=320, height=200)))
    assert roi.decode_size is None  # the crop needs the full frame
    uint8 = Preprocessor(PreprocessConfig(size=SIZE, layout="uint8-nhwc"))
    frame = _frames(clip, uint8.decode_size)[0]
    out = uint8(frame)
    assert out.dtype == np.uint8 and out.shape == (SIZE, SIZE, 3) and np.array_equal(out, frame)
