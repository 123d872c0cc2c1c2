"""Training throughput of our data path vs a torchvision-reference pipeline, same model, same run.

Ours: batches gathered from the uint8 shards of an ingested dataset, augmented on whole batches on
the training device. Reference: ``torchvision.datasets.ImageFolder`` over the lake's JPEGs with
per-image PIL transforms (RandomResizedCrop, flip, ColorJitter, ToTensor, Normalize) in a
``DataLoader`` with worker processes, decoding every image every epoch. Both feed the same model,
optimizer and loss (channels_last; AMP on CUDA), for the same number of images.

Usage: python scripts/bench_train.py --lake DIR --workspace DIR --dataset NAME [--device cpu|cuda]
       [--images 4096] [--recipe edgenet] [--loader-workers N] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

import torch


def _step_fn(model, device):  # noqa: ANN001, ANN202
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    criterion = torch.nn.CrossEntropyLoss()

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            loss = criterion(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def ours(workspace: Path, dataset_ref: str, recipe, device: torch.device, images: int, batch: int) -> float:  # noqa: ANN001
    from toolchain.data.versions import load_dataset
    from toolchain.models.zoo import build_model
    from toolchain.train.batches import SplitArrays, batch_order, epoch_generator, iterate_batches, train_transform
    from toolchain.workspace import Workspace

    with Workspace(workspace) as ws:
        dataset = load_dataset(ws, dataset_ref)
        split = SplitArrays.of(dataset, "train")
        model = build_model(recipe, len(dataset.classes)).to(device).to(memory_format=torch.channels_last)
        model.train()

        def stream():  # noqa: ANN202 - endless (x, y) on the device, epoch after epoch
            epoch = 0
            while True:
                generator = epoch_generator(0, epoch)
                order = batch_order(len(split), batch, generator, shuffle=True, drop_last=True)
                for images_np, labels in iterate_batches(dataset, ws.blobs, split, order):
                    x = train_transform(torch.from_numpy(images_np).to(device, non_blocking=True), recipe, generator)
                    yield x, torch.from_numpy(labels).to(device)
                epoch += 1

        return _time_steps(stream(), _step_fn(model, device), images, device)


def _time_steps(stream, step, images: int, device: torch.device, warmup: int = 3) -> float:  # noqa: ANN001
    """Images per second of ``step`` over ``images`` images from ``stream``, after ``warmup`` steps."""
    done, started = 0, 0.0
    for index, (x, y) in enumerate(stream):
        step(x, y)
        if index + 1 == warmup:
            _sync(device)
            started = time.perf_counter()
        elif index + 1 > warmup:
            done += len(y)
            if done >= images:
                break
    _sync(device)
    return done / (time.perf_counter() - started)


def reference(lake: Path, recipe, device: torch.device, images: int, batch: int, workers: int) -> float:  # noqa: ANN001
    from torchvision import datasets, transforms

    from toolchain.models.zoo import build_model

    aug = recipe.training.augmentation
    transform = transforms.Compose([
        transforms.RandomResizedCrop(recipe.input_size, scale=tuple(aug.scale)),
        transforms.RandomHorizontalFlip(aug.hflip),
        transforms.ColorJitter(aug.brightness, aug.contrast, aug.saturation),
        transforms.ToTensor(),
        transforms.Normalize(recipe.mean, recipe.std),
    ])
    folder = datasets.ImageFolder(str(lake), transform=transform, is_valid_file=_is_valid)
    loader = torch.utils.data.DataLoader(folder, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                                         pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    model = build_model(recipe, len(folder.classes)).to(device).to(memory_format=torch.channels_last)
    model.train()

    def stream():  # noqa: ANN202
        while True:
            for x, y in loader:
                yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    return _time_steps(stream(), _step_fn(model, device), images, device)


def _is_valid(path: str) -> bool:
    """Skip the bad files a synthetic lake may hold (the reference has no quarantine)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return min(image.size) >= 16 and image.size[0] * image.size[1] < 64_000_000 and os.path.getsize(path) > 1024
    except Exception:  # noqa: BLE001
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lake", type=Path, required=True)
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--recipe", default="edgenet")
    parser.add_argument("--loader-workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--batch", type=int, default=None, help="Batch size (default: the recipe's).")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    from toolchain.models.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    device = torch.device(args.device)
    batch = args.batch or recipe.training.batch_size
    ours_rate = ours(args.workspace, args.dataset, recipe, device, args.images, batch)
    ref_rate = reference(args.lake, recipe, device, args.images, batch, args.loader_workers)
    result = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"
                   + (f", {torch.cuda.get_device_name()}" if device.type == "cuda" else ""),
        "torch": torch.__version__,
        "device": args.device,
        "recipe": args.recipe,
        "input_size": recipe.input_size,
        "batch_size": batch,
        "images": args.images,
        "loader_workers": args.loader_workers,
        "ours_images_per_s": round(ours_rate, 1),
        "reference_images_per_s": round(ref_rate, 1),
        "speedup": round(ours_rate / ref_rate, 2),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
