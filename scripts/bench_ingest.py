"""Ingest throughput vs a naive sequential baseline, measured in the same run on the same lake.

The baseline is what a hand-written loop does: for each file, PIL open, convert to RGB, resize to
128x128 (bilinear), save the array (np.save, one file per image). It runs on a random sample of the
lake (its rate is per image, so a sample measures it fairly) before and after the ingest, and the
mean of the two is used, so drift in a shared machine's speed hits both sides alike.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench-out"


def naive_baseline(files: list[Path], out: Path) -> float:
    """Images per second of the sequential loop."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    started = time.perf_counter()
    for index, path in enumerate(files):
        image = Image.open(path).convert("RGB").resize((128, 128), Image.Resampling.BILINEAR)
        np.save(out / f"{index}.npy", np.asarray(image))
    elapsed = time.perf_counter() - started
    shutil.rmtree(out, ignore_errors=True)
    return len(files) / elapsed


def toolchain(*args: str) -> dict:
    result = subprocess.run([sys.executable, "-m", "toolchain", "--json", *args], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def main() -> None:
    images = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    sample = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    OUT.mkdir(exist_ok=True)
    lake = OUT / f"lake-{images}"
    if not (lake / "manifest.csv").exists():
        shutil.rmtree(lake, ignore_errors=True)
        print(f"generating {images} images into {lake} ...", file=sys.stderr)
        synth = toolchain("synth", "lake", str(lake), "--images", str(images), "--seed", "1")
        print(f"  {synth['images_per_second']} images/s", file=sys.stderr)
    files = sorted(lake.glob("*/*.jpg"))
    rng = np.random.default_rng(0)
    picked = [files[i] for i in rng.choice(len(files), size=min(sample, len(files)), replace=False)]

    print(f"baseline on {len(picked)} images ...", file=sys.stderr)
    before = naive_baseline(picked, OUT / "naive")
    workspace = OUT / "ws-bench"
    shutil.rmtree(workspace, ignore_errors=True)
    print(f"ingest of {len(files)} images ...", file=sys.stderr)
    started = time.perf_counter()
    first = toolchain("--workspace", str(workspace), "data", "ingest", str(lake), "--name", "bench")
    wall = time.perf_counter() - started
    started = time.perf_counter()
    again = toolchain("--workspace", str(workspace), "data", "ingest", str(lake), "--name", "bench")
    rerun_wall = time.perf_counter() - started
    after = naive_baseline(picked, OUT / "naive")
    baseline = (before + after) / 2
    rate = len(files) / wall
    result = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_implementation()} {platform.python_version()}",
        "images": len(files),
        "baseline_images_per_s": round(baseline, 1),
        "baseline_runs": [round(before, 1), round(after, 1)],
        "ingest_wall_s": round(wall, 2),
        "ingest_images_per_s": round(rate, 1),
        "speedup": round(rate / baseline, 2),
        "reingest_wall_s": round(rerun_wall, 2),
        "reingest_decoded": again["decoded"],
        "version": first["version"],
        "near_duplicate_groups": first["near_duplicate_groups"],
        "largest_group": first["largest_group"],
        "counts": first["counts"]["all"],
    }
    (OUT / "bench_ingest.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(
        f"| {result['date']} | {result['machine']} | {len(files)} | {result['baseline_images_per_s']} | "
        f"{result['ingest_images_per_s']} | {result['speedup']}x | {result['reingest_wall_s']} s |"
    )


if __name__ == "__main__":
    main()
