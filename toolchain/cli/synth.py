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


@synth.command("video")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--seconds", type=float, default=10.0, show_default=True, help="Clip length.")
@click.option("--fps", type=float, default=30.0, show_default=True, help="Frames per second.")
@click.option("--size", default="640x352", show_default=True, help="WxH (even numbers: H.264 4:2:0).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same clip.")
@click.option("--crf", type=click.IntRange(0, 51), default=23, show_default=True, help="x264 quality (lower: larger file).")
@click.option("--line", "lines", multiple=True, metavar="NAME=x1,y1,x2,y2[:DIR]",
              help="A counting line in frame pixels (repeatable); its crossings go to --truth.")
@click.option("--truth", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the exact crossings of the --line s here as CSV (line,frame,class,direction,track).")
@click.option("--anchor", type=click.Choice(["centre", "bottom"]), default="centre", show_default=True,
              help="The point of a vehicle's visible box judged against the lines (bottom: bottom centre).")
@json_option
@click.pass_context
def video(ctx: click.Context, out: Path, seconds: float, fps: float, size: str, seed: int, crf: int,
          lines: tuple[str, ...], truth: Path | None, anchor: str) -> None:
    """Write a synthetic CCTV clip OUT (.mp4/.mkv): cars and trucks driving along a multi-lane road,
    H.264 (libx264) through PyAV. For `toolchain bench --source OUT`.

    With --line and --truth it also writes the crossing truth of those lines, computed from where
    every vehicle is drawn, for `toolchain count --truth`.
    """
    from toolchain.errors import UsageError
    from toolchain.runtime.geometry import Line
    from toolchain.synth.video import VideoConfig, crossing_truth, truth_summary, write_truth_csv, write_video

    try:
        width, height = (int(v) for v in size.lower().split("x"))
    except ValueError as exc:
        raise UsageError(f"--size {size!r} is not WxH, e.g. 640x352") from exc
    if bool(lines) != (truth is not None):
        raise UsageError("--line and --truth go together: give the lines to count and the CSV to write their truth to")
    parsed = [Line.parse(text) for text in lines]  # before the clip: a typo fails at once
    config = VideoConfig(width=width, height=height, fps=fps, seconds=seconds, seed=seed, crf=crf)
    with progress_for(ctx) as progress:
        progress.start("synth video", config.frames)
        report = write_video(out, config, progress=progress.advance)
        progress.finish()
    payload = {**report, "seconds": round(float(report["seconds"]), 2)}
    if truth is not None:
        crossings = crossing_truth(config, parsed, anchor)
        write_truth_csv(truth, crossings)
        payload.update(truth=str(truth), anchor=anchor, lines=[line.spec() for line in parsed],
                       crossings=len(crossings), truth_counts=truth_summary(crossings))

    def render(console: Console) -> None:
        console.print(f"wrote {report['frames']} frames ({width}x{height} at {fps:g} fps, H.264) to {out} "
                      f"({int(report['bytes']) / 1e6:.1f} MB) in {float(report['seconds']):.1f}s")
        if truth is not None:
            console.print(f"wrote {payload['crossings']} crossings of {len(parsed)} line(s) ({anchor} anchor) to {truth}")
            for name, directions in payload["truth_counts"].items():
                for direction, classes in directions.items():
                    console.print(f"  {name} {direction}: " + ", ".join(f"{k} {n}" for k, n in sorted(classes.items())))

    emit(ctx, payload, render)
