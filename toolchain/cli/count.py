"""``toolchain count``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from toolchain.cli.output import app, emit, json_option, progress_for
from toolchain.serve.options import vehicle_config, vehicle_options
from toolchain.errors import UsageError


@click.command()
@click.argument("artifact")
@click.option("--source", required=True, metavar="[NAME=]CLIP",
              help="A recorded clip: a video file, an image directory or synthetic:WxH@FPS.")
@vehicle_options(lines_required=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the crossings CSV here (default: stdout, unless --json).")
@click.option("--truth", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Score against a hand count CSV: line,frame,class[,certain,note].")
@click.option("--map", "class_map", multiple=True, metavar="FINE=COARSE,...",
              help="Map the truth's classes to the model's, e.g. van=car,articulated=truck (repeatable).")
@click.option("--interval", default=None, metavar="10s|2m",
              help="With --truth: count errors per interval as well as in total.")
@click.option("--tolerance", "tolerance_frames", type=int, default=7, show_default=True,
              help="With --truth: a crossing matches a truth row within this many frames.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --truth: cumulative counts against the truth as a PNG.")
@click.option("--runner", default="auto", show_default=True, help="The classifier's runner, as for bench.")
@click.option("--threads", type=int, default=0, show_default=True, help="Inference threads (0: backend default).")
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="Stop after this many frames.")
@json_option
@click.pass_context
def count(ctx: click.Context, artifact: str, source: str, lines: tuple[str, ...], anchor: str, detector: str,
          detector_classes: tuple[int, ...], find_every: int, out: Path | None, truth: Path | None, class_map: tuple[str, ...],
          interval: str | None, tolerance_frames: int, plot: Path | None, runner: str, threads: int,
          max_frames: int | None) -> None:
    """Count the vehicles crossing lines in a recorded clip, with the unit's own pipeline.

    \b
    Each vehicle is found (motion, or --detector), followed, classified by ARTIFACT on crops of it, and
    counted once per line it crosses, per direction and class: what `serve` does on a unit, run as fast
    as the clip decodes. Crossings go out as CSV (line,frame,class,direction,score,track,time_s). With
    --truth, they are scored against a hand count: precision and recall of the crossings, count error per
    class (and per --interval), classification accuracy and confusion, and the same without the rows
    marked certain = no. This is how to accept a unit on your own footage.
    """
    from toolchain.count.run import CountConfig, count_clip
    from toolchain.evaluate.counts import parse_class_map, parse_interval

    vehicles = vehicle_config(lines, anchor, detector, detector_classes, find_every)
    if truth is None and (class_map or interval or plot):
        raise UsageError("--map, --interval and --plot score against a hand count: give --truth FILE.csv too")
    config = CountConfig(artifact=artifact, source=source, vehicles=vehicles, runner=runner, threads=threads, out=out,
                         truth=truth, class_map=parse_class_map(list(class_map)) if class_map else (),
                         interval_s=parse_interval(interval) if interval else None, tolerance_frames=tolerance_frames,
                         plot=plot, max_frames=max_frames)
    with app(ctx).open_workspace() as workspace, progress_for(ctx) as progress:
        report = count_clip(workspace, config, progress)
    if out is None and not app(ctx).json:
        from toolchain.evaluate.counts import CountedCrossing, write_crossings_csv_to

        write_crossings_csv_to(sys.stdout, [CountedCrossing(line=c["line"], frame=c["frame"], cls=c["class"],
                                                            direction=c["direction"], score=c["score"],
                                                            track=c["track"]) for c in report["crossings"]],
                               fps=report["fps"])
    emit(ctx, report, lambda console: _render(console, report))


def _render(out: Console, report: dict[str, Any]) -> None:
    table = Table(title=f"vehicles counted in {escape(report['source'])} ({report['frames']} frames, "
                        f"{report['frames_per_second']} frames/s)")
    for column in ("line", "direction", "class", "count"):
        table.add_column(column)
    for line, directions in report["counts"].items():
        for direction, classes in directions.items():
            for cls, n in sorted(classes.items()):
                table.add_row(escape(line), direction, escape(cls), str(n))
    out.print(table)
    score = report.get("score")
    if score:
        for key, title in (("all", "against every truth row"), ("certain_only", "rows marked certain = no left out")):
            figures = score[key]
            out.print(f"[bold]{title}[/bold]: truth {figures['truth']}, counted {figures['counted']}, matched "
                      f"{figures['matched']}, precision {figures['precision']}, recall {figures['recall']}, "
                      f"class accuracy {figures['classification']['accuracy']}")
            per_class = Table()
            for column in ("class", "truth", "counted", "error"):
                per_class.add_column(column)
            for cls, c in figures["per_class"].items():
                per_class.add_row(escape(cls), str(c["truth"]), str(c["counted"]), f"{c['error']:+d}")
            out.print(per_class)
        if score.get("plot"):
            out.print(f"plot: {escape(score['plot'])}")
    if report.get("csv"):
        out.print(f"crossings: {escape(report['csv'])}")
