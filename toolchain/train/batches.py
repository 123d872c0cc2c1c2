"""Batches from the uint8 shards, with augmentation done on whole uint8 batches (CPU or GPU).

No JPEG is decoded during training: each batch is gathered from memory-mapped shards as uint8
NHWC, moved to the device, then cropped, flipped, resized, colour-jittered and normalised in a few
tensor operations. All randomness comes from a ``torch.Generator`` seeded by (seed, epoch), so a
resumed run sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from toolchain.blobs import BlobStore
from toolchain.data.versions import DatasetVersion
from toolchain.models.recipe import Augmentation, Recipe

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True, kw_only=True)
class SplitArrays:
    """One split of a dataset version: manifest indices and integer labels."""

    indices: np.ndarray  # (N,) manifest entry indices
    labels: np.ndarray  # (N,) int64 class indices

    def __len__(self) -> int:
        return len(self.indices)

    @classmethod
    def of(cls, dataset: DatasetVersion, split: str) -> SplitArrays:
        class_index = {c: i for i, c in enumerate(dataset.classes)}
        indices = dataset.split_indices(split)
        labels = np.array([class_index[dataset.manifest.entries[i].label] for i in indices], dtype=np.int64)
        return cls(indices=indices, labels=labels)

    def class_counts(self, num_classes: int) -> np.ndarray:
        return np.bincount(self.labels, minlength=num_classes)


def epoch_generator(seed: int, epoch: int, rank: int = 0) -> torch.Generator:
    """The generator for one epoch: the same (seed, epoch) always gives the same batches and crops."""
    import torch

    generator = torch.Generator()
    generator.manual_seed((seed * 1_000_003 + epoch * 7919 + rank) % (2**63))
    return generator


def batch_order(n: int, batch_size: int, generator: torch.Generator, *, shuffle: bool, rank: int = 0, world: int = 1,
                drop_last: bool = False) -> list[np.ndarray]:
    """Positions of each batch; with ``world > 1`` this rank's share (like ``DistributedSampler``)."""
    import torch

    order = torch.randperm(n, generator=generator).numpy() if shuffle else np.arange(n)
    if world > 1:  # pad so every rank gets the same number of samples, then deal them out
        per_rank = math.ceil(n / world)
        order = np.resize(order, per_rank * world)[rank::world]
    stop = len(order) - (len(order) % batch_size if drop_last else 0)
    return [order[i : i + batch_size] for i in range(0, stop, batch_size) if len(order[i : i + batch_size])]


def iterate_batches(
    dataset: DatasetVersion, blobs: BlobStore, split: SplitArrays, batches: list[np.ndarray]
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """uint8 NHWC images and labels of each batch, gathered from the memory-mapped shards."""
    for positions in batches:
        yield dataset.layout.gather(blobs, split.indices[positions]), split.labels[positions]


def _normalise(x: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    import torch

    mean = torch.tensor(recipe.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(recipe.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def eval_transform(images: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    """uint8 NHWC -> normalised float NCHW at the recipe's input size (what inference does)."""
    import torch.nn.functional as F

    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-1] != recipe.input_size or x.shape[-2] != recipe.input_size:
        x = F.interpolate(x, size=(recipe.input_size, recipe.input_size), mode="bilinear", antialias=True, align_corners=False)
    return _normalise(x, recipe)


def resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 NHWC frames resized to ``size`` x ``size`` as :func:`eval_transform` resizes (bilinear,
    antialiased), rounded back to uint8: what a graph with uint8 NHWC input is fed. Returned as is
    when already that size."""
    import torch
    import torch.nn.functional as F

    if images.shape[1] == size and images.shape[2] == size:
        return images
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def train_transform(images: torch.Tensor, recipe: Recipe, generator: torch.Generator) -> torch.Tensor:
    """uint8 NHWC -> augmented, normalised float NCHW: random resized crop + flip + colour jitter.

    The crop, flip and resize are one ``affine_grid`` + ``grid_sample`` per batch; random numbers
    are drawn on the CPU from ``generator`` so CPU and GPU runs see the same augmentation.
    """
    import torch
    import torch.nn.functional as F

    aug: Augmentation = recipe.training.augmentation
    n = images.shape[0]
    device = images.device
    x = images.permute(0, 3, 1, 2).float().div_(255.0)

    def uniform(low: float, high: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator) * (high - low) + low).to(device)

    area = uniform(aug.scale[0], aug.scale[1])
    log_ratio = uniform(math.log(3 / 4), math.log(4 / 3))
    ratio = torch.exp(log_ratio)
    width = torch.sqrt(area * ratio).clamp(max=1.0)
    height = torch.sqrt(area / ratio).clamp(max=1.0)
    centre_x = (uniform(-1.0, 1.0)) * (1 - width)
    centre_y = (uniform(-1.0, 1.0)) * (1 - height)
    flip = torch.where(uniform(0.0, 1.0) < aug.hflip, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0] = width * flip
    theta[:, 0, 2] = centre_x
    theta[:, 1, 1] = height
    theta[:, 1, 2] = centre_y
    size = recipe.input_size
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    if aug.brightness:
        x = x * uniform(1 - aug.brightness, 1 + aug.brightness).view(n, 1, 1, 1)
    grey_weights = torch.tensor([0.299, 0.587, 0.114], device=device).view(1, 3, 1, 1)
    if aug.contrast:
        mean = (x * grey_weights).sum(1, keepdim=True).mean(dim=(2, 3), keepdim=True)
        x = (x - mean) * uniform(1 - aug.contrast, 1 + aug.contrast).view(n, 1, 1, 1) + mean
    if aug.saturation:
        grey = (x * grey_weights).sum(1, keepdim=True)
        x = (x - grey) * uniform(1 - aug.saturation, 1 + aug.saturation).view(n, 1, 1, 1) + grey
    return _normalise(x.clamp_(0.0, 1.0), recipe)
