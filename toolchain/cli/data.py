"""``toolchain data``: ingest a lake and inspect dataset versions."""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from toolchain.cli.output import app, emit, json_option, progress_for


@click.group()
def data() -> None:
    """Ingest image lakes into versioned datasets and inspect them."""


@data.command("ingest")
@click.argument("source")
@click.option("--name", required=True, help="Dataset name; versions are NAME@v1, NAME@v2, ...")
@click.option("--image-size", type=click.IntRange(8, 1024), default=128, show_default=True, help="Canonical square size (px).")
@click.option("--split", "split_text", default="0.8,0.1,0.1", show_default=True, help="train,val,test fractions.")
@click.option("--group-by", type=click.Choice(["sequence", "camera", "none"]), default="sequence", show_default=True,
              help="Keep images of one sequence/camera in one split (from the lake's manifest columns).")
@click.option("--classes", default=None, help="Comma-separated accepted labels (default: every label in the lake).")
@click.option("--allow-root", "allow_roots", multiple=True,
              help="Extra directory or URL prefix a manifest may read from (repeatable).")
@click.option("--near-dup-distance", type=click.IntRange(0, 32), default=4, show_default=True,
              help="pHash Hamming distance (of 63 bits) at or under which two images count as near-duplicates.")
@click.option("--max-group-size", type=click.IntRange(2), default=256, show_default=True,
              help="Near-duplicate links never grow a split group past this many images.")
@click.option("--min-side", type=click.IntRange(1), default=16, show_default=True, help="Quarantine images smaller than this.")
@click.option("--max-pixels", type=click.IntRange(1), default=64_000_000, show_default=True,
              help="Quarantine images with more pixels (decompression bombs).")
@click.option("--workers", type=click.IntRange(min=0), default=0, help="Worker processes (0 = one per core).")
@json_option
@click.pass_context
def ingest_command(
    ctx: click.Context, source: str, name: str, image_size: int, split_text: str, group_by: str, classes: str | None,
    allow_roots: tuple[str, ...], near_dup_distance: int, max_group_size: int, min_side: int, max_pixels: int, workers: int,
) -> None:
    """Ingest SOURCE (an ImageFolder directory, or a CSV/JSONL manifest of uri,label[,group]
    whose URIs are local paths or fsspec URLs) as the next version of dataset NAME.

    Images are decoded in parallel, resized to IMAGE_SIZE, stored as uint8 shards, deduplicated,
    grouped with their near-duplicates and split deterministically. Bad files are quarantined with
    a reason. Re-ingesting an unchanged lake stores nothing new; a grown lake decodes only new images.
    """
    from toolchain.data.ingest import IngestConfig, ingest
    from toolchain.data.splits import SplitFractions

    config = IngestConfig(
        source=source, name=name, image_size=image_size, split=SplitFractions.parse(split_text), group_by=group_by,
        classes=tuple(c.strip() for c in classes.split(",") if c.strip()) if classes else None,
        allow_roots=allow_roots, near_duplicate_distance=near_dup_distance, max_group_size=max_group_size, min_side=min_side, max_pixels=max_pixels,
        workers=workers,
    )
    with app(ctx).open_workspace() as workspace, progress_for(ctx) as progress:
        result = ingest(workspace, config, progress)
    payload = result.to_json()

    def render(console: Console) -> None:
        state = "new version" if result.created else "unchanged: existing version"
        console.print(f"[bold]{result.name}@v{result.number}[/bold] ({state}) {result.version}")
        console.print(_counts_table(result.counts, list(result.classes)))
        console.print(
            f"decoded {result.decoded}, reused {result.reused} already-decoded, {result.duplicates} exact duplicates, "
            f"{result.near_duplicate_groups} near-duplicate groups, {result.groups} split groups (largest {result.largest_group})"
        )
        quarantine = payload["quarantined"]
        if quarantine["count"]:
            reasons = ", ".join(f"{k} {v}" for k, v in quarantine["reasons"].items())
            console.print(f"[yellow]quarantined {quarantine['count']}[/yellow]: {reasons}  (see `toolchain data show {result.name}`)")
        console.print(f"{result.listed} files in {result.seconds:.1f}s ({payload['images_per_second']} files/s)")

    emit(ctx, payload, render)


def _counts_table(counts: dict[str, dict[str, int]], classes: list[str]) -> Table:
    table = Table(title="images per split and class")
    table.add_column("split")
    for c in classes:
        table.add_column(c, justify="right")
    table.add_column("total", justify="right")
    for split in ("train", "val", "test", "all"):
        row = counts[split]
        total = row["total"] or 1
        cells = [f"{row[c]} ({100 * row[c] / total:.0f}%)" for c in classes]
        table.add_row(split, *cells, str(row["total"]))
    return table


@data.command("list")
@json_option
@click.pass_context
def list_command(ctx: click.Context) -> None:
    """List dataset versions in the workspace."""
    from toolchain.data.versions import list_datasets

    with app(ctx).open_workspace() as workspace:
        rows = list_datasets(workspace)

    def render(console: Console) -> None:
        if not rows:
            console.print("no datasets yet; create one with `toolchain data ingest LAKE --name NAME`")
            return
        table = Table(title="datasets")
        for column in ("ref", "version", "images", "quarantined", "size", "classes", "created"):
            table.add_column(column)
        for r in rows:
            table.add_row(r["ref"], r["version"][:12], str(r["images"]), str(r["quarantined"]), str(r["image_size"]),
                          ",".join(r["classes"]), r["created_at"][:19])
        console.print(table)

    emit(ctx, {"datasets": rows}, render)


@data.command("show")
@click.argument("version")
@json_option
@click.pass_context
def show_command(ctx: click.Context, version: str) -> None:
    """Show one dataset VERSION (NAME, NAME@vN or an id prefix): counts, stats, quarantine."""
    from toolchain.data.versions import describe_dataset, load_dataset

    with app(ctx).open_workspace() as workspace:
        dataset = load_dataset(workspace, version)
        info = describe_dataset(workspace, dataset)

    def render(console: Console) -> None:
        console.print(f"[bold]{', '.join(info['refs'])}[/bold]  {info['version']}")
        console.print(f"source {escape(info['source']['uri'])} ({info['source']['kind']}), created {info['created_at'][:19]} by {info['created_by']}")
        header = info["header"]
        console.print(f"{header['image_size']} px, split {header['split']}, group by {header['group_by']}, "
                      f"{info['shards']} shards, parent {(info['parent'] or '-')[:12]}")
        console.print(_counts_table(info["counts"], header["classes"]))
        stats = info["stats"]
        console.print(f"{stats['duplicates']} exact duplicates, {stats['near_duplicate_groups']} near-duplicate groups, "
                      f"{stats['groups']} split groups (largest {stats['largest_group']})")
        items = info["quarantined"]["items"]
        if items:
            table = Table(title=f"quarantined ({len(items)})")
            for column in ("reason", "label", "file", "detail"):
                table.add_column(column)
            root = info["source"]["root"].rstrip("/") + "/"
            for q in items[:50]:
                shown = q["uri"][len(root):] if q["uri"].startswith(root) else q["uri"]
                table.add_row(q["reason"], escape(q["label"]), escape(shown), escape(q["detail"]))
            console.print(table)
            if len(items) > 50:
                console.print(f"... {len(items) - 50} more (use --json)")

    emit(ctx, info, render)


@data.command("manifest")
@click.argument("version")
@click.pass_context
def manifest_command(ctx: click.Context, version: str) -> None:
    """Print the manifest of VERSION as JSON lines: sha256, label, split, group, source, width, height."""
    from toolchain.data.versions import load_dataset, manifest_rows

    with app(ctx).open_workspace() as workspace:
        dataset = load_dataset(workspace, version)
    out = sys.stdout
    for row in manifest_rows(dataset):
        out.write(json.dumps(row, sort_keys=True) + "\n")


@data.command("diff")
@click.argument("a")
@click.argument("b")
@click.option("--limit", type=int, default=20, show_default=True, help="Rows per section in the human output.")
@json_option
@click.pass_context
def diff_command(ctx: click.Context, a: str, b: str, limit: int) -> None:
    """What changed from dataset version A to B: added, removed, relabelled, moved between splits."""
    from toolchain.data.versions import diff_datasets, load_dataset

    with app(ctx).open_workspace() as workspace:
        result = diff_datasets(load_dataset(workspace, a), load_dataset(workspace, b))

    def render(console: Console) -> None:
        s = result["summary"]
        console.print(f"{a} -> {b}: +{s['added']} added, -{s['removed']} removed, {s['relabelled']} relabelled, "
                      f"{s['moved']} moved, {s['unchanged']} unchanged")
        for section in ("added", "removed", "relabelled", "moved"):
            for row in result[section][:limit]:
                detail = f"{row['from']} -> {row['to']}" if "from" in row else f"{row['label']} {row['split']}"
                console.print(f"  {section:<10} {row['sha256'][:12]} {detail}  {escape(row['source'])}")
            if len(result[section]) > limit:
                console.print(f"  ... {len(result[section]) - limit} more {section}")

    emit(ctx, result, render)
