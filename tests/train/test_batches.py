from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from toolchain.models.recipe import load_recipe  # noqa: E402
from toolchain.train.batches import batch_order, epoch_generator, eval_transform, train_transform  # noqa: E402


def _images(n: int = 8, size: int = 48) -> torch.Tensor:
    rng = np.random.default_rng(0)
    return torch.from_numpy(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))


def test_train_transform_shapes_range_and_determinism() -> None:
    recipe = load_recipe("edgenet").with_overrides({"input_size": 32})
    a = train_transform(_images(), recipe, epoch_generator(1, 0))
    b = train_transform(_images(), recipe, epoch_generator(1, 0))
    c = train_transform(_images(), recipe, epoch_generator(1, 1))
    assert a.shape == (8, 3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    mean, std = torch.tensor(recipe.mean).view(1, 3, 1, 1), torch.tensor(recipe.std).view(1, 3, 1, 1)
    pixels = a * std + mean
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


def test_no_augmentation_equals_eval_transform_up_to_resampling() -> None:
    recipe = load_recipe("edgenet").with_overrides({
        "input_size": 48, "scale": [1.0, 1.0], "hflip": 0.0, "brightness": 0.0, "contrast": 0.0, "saturation": 0.0,
    })
    images = _images()
    augmented = train_transform(images, recipe, epoch_generator(0, 0))
    plain = eval_transform(images, recipe)
    # Aspect-ratio jitter still stretches slightly; most pixels must match closely.
    assert (augmented - plain).abs().median() < 0.5


def test_flip_probability_one_mirrors_the_batch() -> None:
    recipe = load_recipe("edgenet").with_overrides({
        "input_size": 48, "scale": [1.0, 1.0], "hflip": 1.0, "brightness": 0.0, "contrast": 0.0, "saturation": 0.0,
    })
    images = _images(4)
    flipped = train_transform(images, recipe, epoch_generator(0, 0))
    plain = eval_transform(images, recipe)
    assert (flipped - plain.flip(-1)).abs().median() < (flipped - plain).abs().median()


def test_batch_order_shards_an_epoch_across_ranks() -> None:
    parts = [np.concatenate(batch_order(10, 3, epoch_generator(0, 0), shuffle=True, rank=r, world=2)) for r in range(2)]
    assert len(parts[0]) == len(parts[1]) == 5
    assert set(parts[0]) | set(parts[1]) == set(range(10))
    assert not set(parts[0]) & set(parts[1])
    full = batch_order(10, 4, epoch_generator(0, 0), shuffle=False, drop_last=True)
    assert [len(b) for b in full] == [4, 4]
