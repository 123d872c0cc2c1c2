"""``toolchain targets``: list and inspect hardware target profiles."""

from __future__ import annotations

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from toolchain.cli.output import emit, json_option


@click.group()
def targets() -> None:
    """List and inspect hardware targets (built-in catalog plus $TOOLCHAIN_TARGETS)."""


@targets.command("list")
@json_option
@click.pass_context
def list_command(ctx: click.Context) -> None:
    """List the targets `build --target NAME` accepts."""
    from toolchain.targets.profile import list_targets

    rows = [target.summary() for target in list_targets()]

    def render(console: Console) -> None:
        table = Table(title="hardware targets", box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, collapse_padding=True)
        for column in ("name", "runtime", "JP", "arch", "SM", "DLA", "opset", "precisions"):
            table.add_column(column, no_wrap=True)
        for r in rows:
            name = f"{r['name']} *" if r["default"] else r["name"]
            if not r["builtin"]:
                name += f" [dim]({escape(r['source'])})[/dim]"
            tensorrt = r["backend"] == "tensorrt"
            runtime = f"TRT {r['tensorrt']}" if tensorrt else "ORT"
            dla = (str(r["dla_cores"]) if r["dla_cores_verified"] else f"{r['dla_cores']}?") if tensorrt else "-"
            table.add_row(
                name, runtime, r["jetpack"] or "-", r["architecture"], r["compute_capability"] or "-", dla,
                str(r["max_onnx_opset"]), ",".join(r["precisions"]),
            )
        console.print(table)
        verified = [r["name"] for r in rows if r["verified_on_hardware"]]
        console.print(
            "TRT: TensorRT.  ORT: ONNX Runtime (CPU).  JP: JetPack.  opset: highest ONNX opset it parses.  "
            f"* default.  ? unverified: query the device.  Verified on hardware: {', '.join(verified) or 'none yet'}."
        )
        console.print("Details: `toolchain targets show NAME`; add your own targets with TOOLCHAIN_TARGETS=DIR")

    emit(ctx, rows, render)  # a list of objects, as the issue specifies


@targets.command("show")
@click.argument("name")
@json_option
@click.pass_context
def show_command(ctx: click.Context, name: str) -> None:
    """Show target NAME (or a path to a .toml file): device, software stack, limits, images."""
    from toolchain.targets.profile import load_target

    info = load_target(name).describe()

    def render(console: Console) -> None:
        console.print(f"[bold]{escape(info['name'])}[/bold]  {escape(info['description'])}")
        console.print(f"source {escape(info['source'])}")
        table = Table(show_header=False)
        table.add_column("field")
        table.add_column("value", overflow="fold")
        unverified = set(info["unverified"])
        skip = {"name", "description", "source", "unverified", "notes", "backend", "compute_capability", "default", "builtin"}
        for key, value in info.items():
            if key in skip:
                continue
            text = escape(", ".join(str(v) for v in value) if isinstance(value, list) else str(value))
            if key in unverified:
                text += "  [yellow](unverified: query the device)[/yellow]"
            table.add_row(key, text)
        console.print(table)
        for note in info["notes"]:
            console.print(f"note: {escape(note)}")

    emit(ctx, info, render)
