"""``toolchain handoff``."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from toolchain.cli.output import app, emit, json_option
from toolchain.errors import UsageError


def _class_ids(value: str) -> tuple[int, ...]:
    if not value:
        return ()
    try:
        return tuple(int(v) for v in value.replace(";", ",").split(",") if v.strip())
    except ValueError:
        raise UsageError(f"--operate-on-class-ids {value}: give the detector's class indices, e.g. 0,2") from None


@click.command()
@click.argument("ref", metavar="BUILD")
@click.option("--format", "fmt", type=click.Choice(["deepstream", "triton"]), required=True,
              help="deepstream: a Gst-nvinfer config folder; triton: a model repository entry.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="DeepStream: the folder to write. Triton: the repository (the model goes in OUT/NAME).")
@click.option("--target", default=None, help="Target of an ONNX artifact (a build knows its own).")
@click.option("--mode", type=click.Choice(["primary", "secondary"]), default="primary", show_default=True,
              help="DeepStream: classify whole frames, or the objects a detector found.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8", "best"]), default="best", show_default=True,
              help="For an ONNX artifact: the precision DeepStream builds (as `toolchain build` plans it).")
@click.option("--preprocessing", type=click.Choice(["auto", "in-graph", "approximate"]), default="auto",
              show_default=True,
              help="DeepStream: auto puts the normalisation in the ONNX (exact) and approximates for a built engine.")
@click.option("--name", default=None, help="Triton model name (default: the build's or artifact's name).")
@click.option("--max-batch", type=int, default=None,
              help="Largest batch of a dynamic-batch model (default: the engine's profile max, else 8).")
@click.option("--classifier-threshold", type=float, default=0.5, show_default=True,
              help="DeepStream: top probability an object must exceed to be labelled (below 1).")
@click.option("--gie-id", type=int, default=None, help="DeepStream gie-unique-id (default 1 primary, 2 secondary).")
@click.option("--operate-on-gie-id", type=int, default=1, show_default=True,
              help="DeepStream secondary: the detector's gie-unique-id.")
@click.option("--operate-on-class-ids", default="", help="DeepStream secondary: detector classes to classify, e.g. 0,2.")
@click.option("--tensor-meta", is_flag=True, help="DeepStream: attach each object's probability vector (output-tensor-meta).")
@click.option("--line", "lines", multiple=True, metavar="[CAMERA/]NAME=x1,y1,x2,y2[:DIR]",
              help="DeepStream: a counting line (frame pixels, as for serve/count), written to config_nvdsanalytics.txt; "
                   "repeatable.")
@click.option("--frame-size", default=None, metavar="WxH", help="DeepStream: the frame size the --line coordinates are in.")
@click.option("--stream", "streams", multiple=True, metavar="CAMERA=N",
              help="DeepStream: the camera's nvstreammux source index (default: cameras in the order of their lines).")
@click.option("--anchor", type=click.Choice(["centre", "bottom"]), default="centre", show_default=True,
              help="DeepStream: the point the unit judges against lines (nvdsanalytics judges the bottom centre).")
@click.option("--line-mode", type=click.Choice(["loose", "balanced", "strict"]), default="loose", show_default=True,
              help="DeepStream: nvdsanalytics line-crossing mode.")
@json_option
@click.pass_context
def handoff(ctx: click.Context, ref: str, fmt: str, out: Path, target: str | None, mode: str, precision: str,
            preprocessing: str, name: str | None, max_batch: int | None, classifier_threshold: float,
            gie_id: int | None, operate_on_gie_id: int, operate_on_class_ids: str, tensor_meta: bool,
            lines: tuple[str, ...], frame_size: str | None, streams: tuple[str, ...], anchor: str, line_mode: str) -> None:
    """Files for NVIDIA's video stack from a build or an ONNX artifact (id, prefix, name or file path).

    \b
    deepstream: OUT/config_infer_{primary,secondary}.txt (Gst-nvinfer [property]), OUT/labels.txt, and the
      model: model.plan (a Jetson build: model-engine-file) or model.onnx (an ONNX with --target jetson-...:
      DeepStream builds the engine on the unit, with the normalisation inside the graph).
      With --line (and --frame-size): OUT/config_nvdsanalytics.txt, the same lines for Gst-nvdsanalytics
      ([line-crossing-stream-N], line-crossing-<LINE>-<DIR>); with --mode secondary the classifier is the
      SGIE of PGIE detector -> nvtracker -> SGIE -> nvdsanalytics (handoff.json's "pipeline").
    triton: OUT/NAME/config.pbtxt, OUT/NAME/1/model.plan or model.onnx, OUT/NAME/labels.txt.
    Every value comes from the model's own metadata and tensors; the files are read back and checked
    (nvinfer's documented keys, Triton's own schema, the preprocessing on every uint8 value, the model run
    the way the tool feeds it). OUT/handoff.json (OUT/NAME/handoff.json) says what was measured.
    """
    from toolchain.handoff import DeepStreamOptions, HandoffConfig
    from toolchain.handoff import handoff as run_handoff
    from toolchain.handoff.nvdsanalytics import AnalyticsOptions

    config = HandoffConfig(
        ref=ref, format=fmt, out=out, target=target, precision=precision, name=name, max_batch=max_batch,
        deepstream=DeepStreamOptions(mode=mode, preprocessing=preprocessing, classifier_threshold=classifier_threshold,
                                     gie_id=gie_id, operate_on_gie_id=operate_on_gie_id,
                                     operate_on_class_ids=_class_ids(operate_on_class_ids), tensor_meta=tensor_meta,
                                     analytics=AnalyticsOptions.parse(lines, frame_size=frame_size, streams=streams,
                                                                      anchor=anchor, mode=line_mode)),
    )
    with app(ctx).open_workspace() as workspace:
        result = run_handoff(workspace, config)

    def render(console: Console) -> None:
        p = result.preprocessing
        console.print(f"[bold]{result.format}[/bold] hand-off of {escape(result.source.ref)} for "
                      f"{result.source.target.name} ({result.source.precision}) in {escape(str(result.out))}")
        table = Table("file", "bytes")
        for path in result.files:
            table.add_row(escape(str(path)), f"{path.stat().st_size:,}")
        console.print(table)
        label = f"preprocessing: {p.mode}" + (", exact" if p.exact else "")
        console.print(f"{label} (max error {p.max_error:.3g} over {p.values_checked} uint8 channel values)"
                      if p.values_checked else label)
        model = result.checks.get("model")
        if model:
            console.print(f"model fed as nvinfer feeds it: max probability difference {model['max_probability_error']:.3g}, "
                          f"top-1 agreement {model['top1_agreement']:.0%} on {model['frames']} frames")
        run = result.checks.get("run")
        if run:
            console.print(f"ONNX Runtime from the repository at the declared shapes: max difference "
                          f"{run['max_abs_vs_source']:.3g} vs the source model")
        analytics = result.checks.get("nvdsanalytics")
        if analytics:
            labels = ", ".join(f"{e['stream']}:{e['label']}" for e in analytics["entries"])
            console.print(f"nvdsanalytics: {len(analytics['entries'])} line crossing(s) ({escape(labels)}), keys "
                          "checked against the documented nvdsanalytics keys")
        if result.pipeline:
            console.print("pipeline: " + escape(" -> ".join(result.pipeline)))
        for note in result.notes:
            console.print(f"note: {escape(note)}")

    emit(ctx, result.to_json(), render)
