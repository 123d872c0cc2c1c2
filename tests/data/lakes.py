"""Small lakes with sequences of near-duplicate frames, for ingest tests."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image


def blob_image(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A smooth picture: a few coloured Gaussian blobs on a tinted background (float, 0..255)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    image = np.ones((size, size, 3), np.float32) * rng.uniform(40, 200, 3)
    for _ in range(4):
        cx, cy, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(size / 8, size / 3)
        weight = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))[..., None]
        image = image * (1 - weight) + weight * rng.uniform(0, 255, 3)
    # Photographs have texture at every scale; without it a perceptual hash is mostly noise.
    texture = np.kron(rng.normal(0, 25, (size // 4, size // 4, 1)), np.ones((4, 4, 1)))
    return np.clip(image + texture, 0, 255)


def frame_of(base: np.ndarray, rng: np.random.Generator, jitter: float = 1.0) -> np.ndarray:
    """A near-duplicate of ``base``: shifted by up to ``2 * jitter`` pixels, slightly brighter or darker."""
    reach = max(0, round(2 * jitter))
    dx, dy = rng.integers(-reach, reach + 1, 2)
    shifted = np.roll(np.roll(base, int(dx), axis=1), int(dy), axis=0)
    gain = rng.uniform(1 - 0.05 * jitter, 1 + 0.05 * jitter)
    return np.clip(shifted * gain + rng.normal(0, 2 * jitter, base.shape), 0, 255).astype(np.uint8)


def write_sequence_lake(
    root: Path, *, sequences: int, frames: int = 3, seed: int = 0, start: int = 0,
    classes: tuple[str, ...] = ("car", "truck"), jitter: float = 1.0, recompress: bool = False,
) -> list[dict[str, str]]:
    """Write (or extend) an ImageFolder lake with ``manifest.csv`` (path,label,camera,sequence).

    Each sequence holds ``frames`` moving frames of one scene (or, with ``recompress``, resized and
    re-encoded copies of one frame). Sequences ``start .. start+sequences-1`` are written; calling again with a larger ``start`` grows
    the lake. Returns the manifest rows written by this call.
    """
    rows = []
    for s in range(start, start + sequences):
        rng = np.random.default_rng([seed, s])
        label = classes[s % len(classes)]
        base = blob_image(rng)
        (root / label).mkdir(parents=True, exist_ok=True)
        for f in range(frames):
            rel = f"{label}/seq{s:04d}_f{f}.jpg"
            if recompress:  # copies of one frame, resized and re-encoded: a lake's typical near-duplicates
                side = int(rng.integers(52, 65))
                frame = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).resize((side, side))
                frame.save(root / rel, quality=int(rng.integers(60, 95)))
            else:
                Image.fromarray(frame_of(base, rng, jitter)).save(root / rel, quality=90)
            rows.append({"path": rel, "label": label, "camera": f"cam{s % 3}", "sequence": f"seq{s:04d}"})
    manifest = root / "manifest.csv"
    existing = list(csv.DictReader(manifest.open())) if manifest.exists() else []
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "label", "camera", "sequence"])
        writer.writeheader()
        writer.writerows(existing + rows)
    return rows
