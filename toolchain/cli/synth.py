"""``toolchain synth``: synthetic data for tests, demos and benchmarks."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from toolchain.cli.output import emit, json_option, progress_for


@click.group()
def synth() -> None:
    """Generate synthetic CCTV data (image lakes, video clips)."""


@synth.command("lake")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--images", "-n", type=click.IntRange(min=1), default=2000, show_default=True, help="Valid images to write.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same bytes.")
@click.option("--corrupt", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also write this many bad files (truncated, empty, text, decompression bomb, too small).")
@click.option("--cameras", type=click.IntRange(min=1), default=12, show_default=True, help="Number of simulated cameras.")
@click.option("--workers", type=click.IntRange(min=0), default=0, help="Worker processes (0 = one per core).")
@json_option
@click.pass_context
def lake(ctx: click.Context, out: Path, images: int, seed: int, corrupt: int, cameras: int, workers: int) -> None:
    """Write an ImageFolder lake OUT/car/*.jpg, OUT/truck/*.jpg plus OUT/manifest.csv
    (path,label,camera,sequence): CCTV-like crops of cars and trucks, in sequences of
    near-duplicate frames.
    """
    from toolchain.synth.lake import LakeConfig, generate_lake

    config = LakeConfig(images=images, seed=seed, corrupt=corrupt, cameras=cameras, workers=workers)
    with progress_for(ctx) as progress:
        progress.start("synth lake", images)
        report = generate_lake(out, config, progress=progress.advance)
        progress.finish()
    payload = {
        "out": str(report.out), "images": report.images, "corrupt": report.corrupt, "per_class": report.per_class,
        "sequences": report.sequences, "cameras": report.cameras, "seconds": round(report.seconds, 2),
        "images_per_second": round(report.images / report.seconds, 1) if report.seconds else None,
    }

    def render(console: Console) -> None:
        classes = ", ".join(f"{k} {v}" for k, v in report.per_class.items())
        console.print(
            f"wrote {report.images} images ({classes}) in {report.sequences} sequences from {report.cameras} cameras"
            f" + {report.corrupt} bad files to {report.out} in {report.seconds:.1f}s"
        )

    emit(ctx, payload, render)
