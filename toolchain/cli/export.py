"""``toolchain export`` and ``toolchain quantize``."""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.markup import escape

from toolchain.cli.output import app, console, emit, json_option, progress_for


def _print_failure_json(ctx: click.Context, payload: dict, error: Exception) -> None:
    """On a failed gate the figures are still the one JSON document on stdout."""
    if app(ctx).json:
        sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
        error.reported_json = True  # type: ignore[attr-defined]  # main() then writes no second document


@click.command()
@click.argument("model")
@click.option("--opset", type=click.IntRange(11, 20), default=None, help="ONNX opset (default 17, or the highest the --target parses if lower).")
@click.option("--target", default=None, help="Hardware target (see `toolchain targets list`): opset, input layout and operators are checked against it.")
@click.option("--batch", default="1", show_default=True, help="1, a fixed N, or 'dynamic'.")
@click.option("--input", "input_layout", type=click.Choice(["float-nchw", "uint8-nhwc"]), default="float-nchw", show_default=True,
              help="uint8-nhwc bakes the cast, layout change and normalisation into the graph, so the runtime feeds raw RGB frames.")
@click.option("--simplify/--no-simplify", default=True, show_default=True, help="Simplify the graph with onnxslim.")
@click.option("--parity-images", type=click.IntRange(min=1), default=64, show_default=True, help="Test-split images for the torch vs ONNX Runtime check.")
@click.option("--atol", type=float, default=1e-4, show_default=True, help="Largest absolute difference of probabilities.")
@click.option("--rtol", type=float, default=1e-3, show_default=True, help="Largest relative difference (probabilities >= 1e-3).")
@json_option
@click.pass_context
def export(ctx: click.Context, model: str, opset: int | None, target: str | None, batch: str, input_layout: str, simplify: bool, parity_images: int,
           atol: float, rtol: float) -> None:
    """Export MODEL (NAME@vN, an id prefix, or the path of its weights file) to ONNX, check it (onnx.checker full check), and prove
    numeric parity with torch on the test split: max abs/rel error within tolerance and 100% top-1
    agreement, or exit 3 with the numbers. The ONNX is registered as an artifact linked to its model.
    """
    from toolchain.export.onnx_export import ExportConfig, ParityError, export_model
    from toolchain.export.targeting import plan_export

    _, chosen_opset = plan_export(target, opset, input_layout)
    config = ExportConfig(model=model, opset=chosen_opset, target=target, batch=batch, input=input_layout, simplify=simplify,
                          parity_images=parity_images, atol=atol, rtol=rtol)
    with app(ctx).open_workspace() as workspace, progress_for(ctx) as progress:
        try:
            result = export_model(workspace, config, progress=progress)
        except ParityError as error:
            _print_failure_json(ctx, {"passed": False, "parity": error.report.to_json()}, error)
            raise
    for note in result.notes:
        console.print(f"note: {escape(note)}")

    def render(out: Console) -> None:
        p = result.parity
        out.print(f"[bold]{result.ref}[/bold] ({result.artifact[:12]}) from {result.model_ref}: opset {result.opset}, "
                  f"input {result.input} {list(result.input_shape)}, {result.size_bytes / 1e6:.2f} MB"
                  + (", simplified" if result.simplified else ""))
        out.print(f"parity on {p.images} images: max abs {p.max_abs:.2e} (<= {p.atol:g}), max rel {p.max_rel:.2e} "
                  f"(<= {p.rtol:g}), top-1 agreement {p.top1_agreement:.2%}")
        out.print(f"path: {escape(str(result.path))}")

    emit(ctx, result.to_json(), render)


@click.command()
@click.argument("onnx")
@click.option("--calib", default=None, help="Calibration dataset NAME[@VERSION] (default: the model's); its train split only.")
@click.option("--samples", type=click.IntRange(min=1), default=512, show_default=True, help="Calibration images.")
@click.option("--method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax", show_default=True)
@click.option("--per-channel/--no-per-channel", default=True, show_default=True, help="Per-channel weight scales.")
@click.option("--keep-float", multiple=True, metavar="NODE_OR_OP",
              help="Keep these nodes (names or op types, e.g. Gemm for the classifier head) in float (repeatable).")
@click.option("--max-drop", type=float, default=1.0, show_default=True, help="Largest accuracy drop INT8 vs FP32, in points.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the calibration sample.")
@json_option
@click.pass_context
def quantize(ctx: click.Context, onnx: str, calib: str | None, samples: int, method: str, per_channel: bool,
             keep_float: tuple[str, ...], max_drop: float, seed: int) -> None:
    """Quantize an FP32 ONNX artifact (id, prefix, NAME@vN or its path) to symmetric INT8 Q/DQ ONNX
    (zero points 0, per-channel weights), the explicit quantization TensorRT 10 builds from.
    Compares INT8 with FP32 accuracy on the test split; exit 3 if it drops more than --max-drop.
    """
    from toolchain.errors import QualityGateError
    from toolchain.quantize.static import QuantizeConfig, quantize_model

    config = QuantizeConfig(onnx=onnx, calib=calib, samples=samples, method=method, per_channel=per_channel,
                            keep_float=keep_float, max_drop=max_drop, seed=seed)
    with app(ctx).open_workspace() as workspace, progress_for(ctx) as progress:
        try:
            result = quantize_model(workspace, config, progress=progress)
        except QualityGateError as error:
            failed = getattr(error, "result", None)
            if failed is not None:
                _print_failure_json(ctx, failed.to_json(), error)
            raise

    def render(out: Console) -> None:
        out.print(f"[bold]{result.ref}[/bold] ({result.artifact[:12]}): {result.method}, "
                  f"{'per-channel' if result.per_channel else 'per-tensor'}, {result.samples} calibration images"
                  + (f", kept in float: {', '.join(result.keep_float)}" if result.keep_float else "")
                  + (" (cached)" if getattr(result, "cached", False) else ""))
        out.print(f"accuracy FP32 {result.accuracy_fp32:.4f}  INT8 {result.accuracy_int8:.4f}  drop {result.accuracy_drop:.2f} points "
                  f"(max {config.max_drop:g})")
        out.print(f"size {result.size_fp32 / 1e6:.2f} MB -> {result.size_int8 / 1e6:.2f} MB; CPU latency (batch 1) "
                  f"{result.latency_fp32_ms:.3f} ms -> {result.latency_int8_ms:.3f} ms")
        out.print(f"path: {escape(str(result.path))}")

    emit(ctx, result.to_json(), render)
