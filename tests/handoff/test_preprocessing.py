"""nvinfer's net-scale-factor/offsets against the model's own preprocessing, on every uint8 value."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.handoff.models import MEAN, STD, write_classifier
from toolchain.handoff.ingraph import write_prelude_onnx
from toolchain.handoff.model import model_info
from toolchain.handoff.preprocessing import (
    approximate_numbers,
    check_preprocessing,
    format_number,
    in_graph_numbers,
    reference_input,
)


def _worst(scale: float, offsets: tuple[float, ...]) -> float:
    return check_preprocessing(mean=MEAN, std=STD, layout="float-nchw", scale=scale, offsets=offsets,
                               mode="approximate").max_error


def test_the_approximation_is_the_best_single_scale_and_says_its_error() -> None:
    numbers = approximate_numbers(MEAN, STD)
    assert numbers.offsets == pytest.approx([255 * m for m in MEAN])
    report = check_preprocessing(mean=MEAN, std=STD, layout="float-nchw", scale=float(format_number(numbers.net_scale_factor)),
                                 offsets=numbers.offsets, mode="approximate")
    assert not report.exact and report.values_checked == 3 * 256
    # ImageNet's std: about 0.0258 normalised units at worst (red and green channels pull the scale both ways).
    assert 0.02 < report.max_error < 0.03
    assert report.max_error == pytest.approx(numbers.worst_case, abs=1e-5)
    # Any other single scale does worse: each channel's own scale, the mean std's, and nudges either way.
    others = [1 / (255 * s) for s in STD] + [1 / (255 * float(np.mean(STD)))]
    others += [numbers.net_scale_factor * (1 + d) for d in (-1e-3, 1e-3)]
    for scale in others:
        assert _worst(scale, numbers.offsets) > report.max_error


def test_one_std_for_all_channels_is_exact_and_a_wrong_offset_is_caught() -> None:
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    numbers = approximate_numbers(mean, std)
    report = check_preprocessing(mean=mean, std=std, layout="float-nchw", scale=numbers.net_scale_factor,
                                 offsets=numbers.offsets, mode="approximate")
    assert report.exact and report.max_error < 1e-5
    wrong = check_preprocessing(mean=mean, std=std, layout="float-nchw", scale=numbers.net_scale_factor,
                                offsets=(127.5, 127.5, 0.0), mode="approximate")
    assert not wrong.exact and wrong.max_error == pytest.approx(127.5 / (255 * 0.25), rel=1e-5)


def test_in_graph_normalisation_is_bit_exact_for_float_and_uint8_models(tmp_path: Path) -> None:
    for layout, size in (("float-nchw", 16), ("uint8-nhwc", 16), ("float-nchw", 40), ("uint8-nhwc", 8)):
        path = write_classifier(tmp_path / f"{layout}-{size}.onnx", layout=layout, size=size)
        info = model_info(path)
        prelude = write_prelude_onnx(info, tmp_path / f"{layout}-{size}-prelude.onnx")
        numbers = in_graph_numbers()
        report = check_preprocessing(mean=info.mean, std=info.std, layout=layout, scale=numbers.net_scale_factor,
                                     offsets=numbers.offsets, mode="in-graph", prelude=prelude)
        assert report.exact and report.max_error == 0.0 and report.values_checked == 768, (layout, size, report)
    # The reference is the model's own arithmetic: (x / 255 - mean) / std in float32.
    values = np.tile(np.arange(256, dtype=np.float32), (3, 1))
    expected = ((values[0] / np.float32(255)) - np.float32(MEAN[0])) / np.float32(STD[0])
    assert np.array_equal(reference_input(MEAN, STD, values)[0], expected)


def test_in_graph_numbers_with_a_prelude_that_is_not_the_models_fail(tmp_path: Path) -> None:
    """The in-graph check runs the graph: a prelude built for another std is measured, not assumed."""
    path = write_classifier(tmp_path / "m.onnx")
    other = write_classifier(tmp_path / "other.onnx", std=(0.5, 0.5, 0.5))
    prelude = write_prelude_onnx(model_info(other), tmp_path / "prelude.onnx")
    info = model_info(path)
    report = check_preprocessing(mean=info.mean, std=info.std, layout="float-nchw", scale=1.0, offsets=(0, 0, 0),
                                 mode="in-graph", prelude=prelude)
    assert not report.exact and report.max_error > 0.5
