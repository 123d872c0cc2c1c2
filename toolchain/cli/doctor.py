"""``toolchain doctor``."""

from __future__ import annotations

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from toolchain.cli.output import app, emit, json_option
from toolchain.doctor import run_checks


@click.command()
@json_option
@click.pass_context
def doctor(ctx: click.Context) -> None:
    """Show what this machine can do: Python, torch/CUDA, ONNX Runtime providers, TensorRT,
    pycuda, the Docker engine, PyAV codecs, disk space, and which pip extras ([data], [train], [trt],
    [deploy], [dev]) are installed; with a hint for each missing piece.

    Exits 5 when something required by the base install is missing.
    """
    checks = run_checks(app(ctx).workspace_path)

    def render(console: Console) -> None:
        table = Table(title="toolchain doctor", show_lines=False)
        for column in ("", "component", "found", "hint"):
            table.add_column(column)
        for check in checks:
            mark = "[green]ok[/green]" if check.ok else ("[red]missing[/red]" if check.required else "[yellow]--[/yellow]")
            table.add_row(mark, escape(check.name), escape(check.detail), escape(check.hint))
        console.print(table)

    emit(ctx, {"checks": [c.to_json() for c in checks], "ok": all(c.ok for c in checks if c.required)}, render)
    if not all(c.ok for c in checks if c.required):
        ctx.exit(5)
