"""Class probabilities of a torch model on one split (validation during training, and evaluate)."""

from __future__ import annotations

from typing import Any

import numpy as np

from toolchain.blobs import BlobStore
from toolchain.data.versions import DatasetVersion
from toolchain.models.recipe import Recipe
from toolchain.train.batches import SplitArrays, batch_order, eval_transform, iterate_batches


def predict_split(
    model: Any, dataset: DatasetVersion, blobs: BlobStore, split: SplitArrays, recipe: Recipe, device: Any,
    *, batch_size: int = 256, channels_last: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, probabilities (N, C))`` of ``model`` on ``split`` in manifest order."""
    import torch

    model.eval()
    probabilities = []
    batches = batch_order(len(split), batch_size, torch.Generator(), shuffle=False)
    with torch.inference_mode():
        for images, _ in iterate_batches(dataset, blobs, split, batches):
            x = eval_transform(torch.from_numpy(images).to(device), recipe)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=device.type == "cuda"):
                logits = model(x)
            probabilities.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    if not probabilities:
        return split.labels, np.empty((0, len(dataset.classes)), dtype=np.float32)
    return split.labels, np.concatenate(probabilities).astype(np.float64)
