"""``toolchain build``."""

from __future__ import annotations

import click
from rich.console import Console
from rich.markup import escape

from toolchain.cli.output import app, emit, json_option


@click.command()
@click.argument("onnx")
@click.option("--target", required=True, help="Hardware target (see `toolchain targets list`).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8", "best"]), default="best", show_default=True,
              help="best: what the ONNX is (FP32 export or INT8 Q/DQ from quantize).")
@json_option
@click.pass_context
def build(ctx: click.Context, onnx: str, target: str, precision: str) -> None:
    """Build the engine for one target from an ONNX artifact (id, prefix, NAME@vN or its path).

    CPU targets (x86-64-cpu, aarch64-cpu): an ONNX Runtime artifact with graph optimisations applied
    and saved, verified to match the input ONNX, recorded with its metadata; rebuilding the same
    inputs is a cache hit. TensorRT (Jetson) targets are refused for now: their builder is not part
    of this version.
    """
    from toolchain.build.onnxruntime_cpu import BuildConfig, build_cpu

    config = BuildConfig(onnx=onnx, target=target, precision=precision)
    with app(ctx).open_workspace() as workspace:
        result = build_cpu(workspace, config)

    def render(out: Console) -> None:
        v = result.verification
        out.print(f"[bold]build {result.build[:12]}[/bold] for {result.target} ({result.precision})"
                  + (" (cached)" if result.cached else "") + f": verified on {v['images']} inputs, max abs "
                  f"{v['max_abs']:.2e}, top-1 agreement {v['top1_agreement']:.0%}")
        out.print(f"path: {escape(str(result.path))}")

    emit(ctx, result.to_json(), render)
