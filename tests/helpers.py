"""Small synthetic images and lakes for tests (PIL + numpy, no shared data)."""

from __future__ import annotations

import csv
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def _seed_for(*parts: object) -> int:
    return zlib.crc32("/".join(str(p) for p in parts).encode())


def make_array(size: tuple[int, int] = (48, 48), seed: int = 0) -> np.ndarray:
    """A smooth random RGB image (a coarse random grid upsampled bilinearly) as (h, w, 3) uint8."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    image = Image.fromarray(coarse, "RGB").resize(size, Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def jpeg_bytes(size: tuple[int, int] = (48, 48), seed: int = 0, quality: int = 90) -> bytes:
    """The bytes of a JPEG made by :func:`make_array`."""
    import io

    buffer = io.BytesIO()
    Image.fromarray(make_array(size, seed), "RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def write_jpeg(path: Path | str, size: tuple[int, int] = (48, 48), seed: int = 0, quality: int = 90) -> Path:
    """Write a smooth random JPEG to ``path`` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(size, seed, quality))
    return path


def write_png(path: Path | str, size: tuple[int, int] = (48, 48), seed: int = 0) -> Path:
    """Write a smooth random PNG to ``path`` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(make_array(size, seed), "RGB").save(path, format="PNG")
    return path


def make_image_folder(
    root: Path | str,
    per_class: int = 5,
    classes: Sequence[str] = ("car", "truck"),
    seed: int = 0,
    size: tuple[int, int] = (48, 48),
    start: int = 0,
) -> list[Path]:
    """Write ``root/<class>/img_<i>.jpg`` for ``i`` in ``start..start+per_class-1``; every image distinct.

    The same (seed, class, i) always gives the same bytes, so calling again with a larger ``start``
    grows the lake without touching the files already there.
    """
    root = Path(root)
    paths = []
    for label in classes:
        for i in range(start, start + per_class):
            paths.append(write_jpeg(root / label / f"img_{i:04d}.jpg", size=size, seed=_seed_for(seed, label, i)))
    return paths


def write_folder_manifest(root: Path | str, rows: Sequence[dict[str, str]], name: str = "manifest.csv") -> Path:
    """Write an ImageFolder lake's own ``manifest.csv`` (path,label,camera,sequence)."""
    path = Path(root) / name
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "label", "camera", "sequence"])
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in ("path", "label", "camera", "sequence")})
    return path


def add_bad_files(root: Path | str, label: str = "car") -> dict[str, Path]:
    """Add an empty file, a text file named .jpg and a truncated JPEG under ``root/label``."""
    folder = Path(root) / label
    folder.mkdir(parents=True, exist_ok=True)
    empty = folder / "bad_empty.jpg"
    empty.write_bytes(b"")
    text = folder / "bad_text.jpg"
    text.write_text("this is not an image\n")
    truncated = folder / "bad_truncated.jpg"
    data = jpeg_bytes((64, 64), seed=_seed_for("truncated", label))
    truncated.write_bytes(data[: len(data) // 2])
    return {"empty": empty, "not_an_image": text, "truncated": truncated}


@dataclass
class CliResult:
    """Exit code and captured output of one in-process CLI run."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        """stdout parsed as exactly one JSON document (json.loads refuses trailing data)."""
        return json.loads(self.out)


def run_main(argv: Sequence[object], capsys: Any) -> CliResult:
    """Run ``toolchain.cli.main.main(argv)`` in-process; it always ends in SystemExit with the exit code."""
    import pytest

    from toolchain.cli.main import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    code = info.value.code
    return CliResult(code=0 if code is None else int(code), out=out, err=err)
