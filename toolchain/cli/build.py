"""``toolchain build``."""

from __future__ import annotations

import click
from rich.console import Console
from rich.markup import escape

from toolchain.cli.output import app, emit, json_option, progress_for
from toolchain.errors import UsageError


def _batch(value: str | None) -> tuple[int, int, int] | None:
    if not value:
        return None
    parts = value.split(",")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        raise UsageError(f"--batch {value}: give MIN,OPT,MAX (e.g. 1,4,8) or one number N for 1,N,N") from None
    if len(numbers) == 1:
        return (1, numbers[0], numbers[0])
    if len(numbers) != 3:
        raise UsageError(f"--batch {value}: give MIN,OPT,MAX (e.g. 1,4,8) or one number N for 1,N,N")
    return (numbers[0], numbers[1], numbers[2])


@click.command()
@click.argument("onnx")
@click.option("--target", required=True, help="Hardware target (see `toolchain targets list`).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8", "best"]), default="best", show_default=True,
              help="best: INT8 for a Q/DQ ONNX from quantize, else FP16 where the target has it, else FP32.")
@click.option("--dla", "dla_core", type=int, default=None, help="Build for this DLA core (GPU fallback on).")
@click.option("--allow-gpu-fallback-only", is_flag=True,
              help="With --dla: keep an engine even if TensorRT placed no layer on the DLA (refused otherwise).")
@click.option("--workspace", "workspace_mib", type=int, default=None, help="TensorRT memory pool limit in MiB.")
@click.option("--batch", default=None, help="Optimisation profile MIN,OPT,MAX for a dynamic-batch ONNX (TensorRT).")
@click.option("--on", "on", default=None, metavar="DOCKER_HOST",
              help="Build on this Docker Engine (ssh://user@unit, unix:///path.sock, tcp:// with TLS).")
@click.option("--build-image", default=None, help="Container image to build in (default: the target's build_image).")
@click.option("--insecure", is_flag=True, help="Allow a plain, unencrypted tcp:// engine URL (closed test networks).")
@click.option("--timeout", "timeout_s", type=float, default=1800.0, show_default=True, help="Seconds a remote build may run.")
@json_option
@click.pass_context
def build(ctx: click.Context, onnx: str, target: str, precision: str, dla_core: int | None,
          allow_gpu_fallback_only: bool, workspace_mib: int | None, batch: str | None, on: str | None,
          build_image: str | None, insecure: bool, timeout_s: float) -> None:
    """Build the engine of an ONNX artifact (id, prefix, NAME@vN or its path) for one target.

    \b
    CPU targets (x86-64-cpu, aarch64-cpu): an ONNX Runtime artifact with graph optimisations saved,
      verified against the input ONNX.
    TensorRT (Jetson) targets: built with the TensorRT API where TensorRT and a GPU matching the target
      exist, or on the unit itself with --on (in the target's L4T container). Anything else is refused
      (exit 5): engines are not portable across GPUs or TensorRT versions.
    Every engine is recorded with its metadata; rebuilding the same inputs is a cache hit.
    """
    from toolchain.build.service import BuildConfig, build as run_build

    config = BuildConfig(onnx=onnx, target=target, precision=precision, dla_core=dla_core,
                         allow_gpu_fallback_only=allow_gpu_fallback_only, workspace_mib=workspace_mib,
                         batch=_batch(batch), on=on, build_image=build_image, insecure=insecure, timeout_s=timeout_s)
    with app(ctx).open_workspace() as workspace, progress_for(ctx) as progress:
        result = run_build(workspace, config, progress)

    def render(out: Console) -> None:
        v = result.verification
        checked = (f": verified on {v['images']} inputs, max abs {v['max_abs']:.2e}, top-1 agreement "
                   f"{v['top1_agreement']:.0%}") if v else ""
        out.print(f"[bold]build {result.build[:12]}[/bold] {result.backend} for {result.target} ({result.precision}, "
                  f"{result.device}, {result.where})" + (" (cached)" if result.cached else "") + checked)
        for note in result.plan.get("notes", []):
            out.print(f"note: {escape(note)}")
        out.print(f"path: {escape(str(result.path))}")

    emit(ctx, result.to_json(), render)
