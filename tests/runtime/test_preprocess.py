import numpy as np
import pytest

from toolchain.errors import UsageError
from toolchain.runtime.preprocess import PreprocessConfig, Preprocessor, Roi, postprocess, to_probabilities


@pytest.mark.parametrize("shape", [(240, 320), (352, 640), (64, 48), (128, 128), (90, 300)])
def test_resize_matches_what_evaluate_feeds_the_model(shape) -> None:
    torch = pytest.importorskip("torch")
    from toolchain.train.batches import eval_transform, resize_uint8

    class Recipe:
        input_size, mean, std = 128, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    frame = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    as_uint8 = Preprocessor(PreprocessConfig(size=128, layout="uint8-nhwc"))(frame)
    expected = resize_uint8(frame[None], 128)[0]
    diff = np.abs(as_uint8.astype(int) - expected.astype(int))
    assert as_uint8.shape == (128, 128, 3) and diff.max() <= 1 and (diff > 0).mean() < 1e-3  # rounding ties only
    as_float = Preprocessor(PreprocessConfig(size=128))(frame)
    reference = eval_transform(torch.from_numpy(frame[None]), Recipe).numpy()[0]
    assert as_float.shape == (3, 128, 128) and as_float.dtype == np.float32
    np.testing.assert_allclose(as_float, reference, atol=1e-4)


def test_roi_crops_before_resizing() -> None:
    frame = np.zeros((100, 200, 3), np.uint8)
    frame[20:60, 50:130] = 200
    pre = Preprocessor(PreprocessConfig(size=16, layout="uint8-nhwc", roi=Roi.parse("50,20,80,40")))
    assert (pre(frame) == 200).all()
    with pytest.raises(UsageError):
        Roi.parse("1,2,3")
    with pytest.raises(UsageError, match="outside"):
        Preprocessor(PreprocessConfig(size=16, roi=Roi(x=500, y=0, width=5, height=5)))(frame)


def test_postprocess_softmaxes_logits_and_labels() -> None:
    probs = to_probabilities(np.array([[2.0, 0.0], [0.0, 3.0]]))
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-6)
    assert postprocess(np.array([[0.2, 0.8]]), ("car", "truck")) == [("truck", pytest.approx(0.8))]
    assert postprocess(np.array([[2.0, 0.0]]), ("car", "truck"))[0][0] == "car"
