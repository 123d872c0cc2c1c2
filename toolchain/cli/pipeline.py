"""``toolchain pipeline``."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from toolchain.cli.output import app, console, emit, json_option, progress_for


def _fmt(value: object, spec: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return format(value, spec) if spec else str(value)


@click.command()
@click.argument("config_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--print-default", is_flag=True, help="Print the embedded default pipeline.toml and exit.")
@json_option
@click.pass_context
def pipeline(ctx: click.Context, config_file: Path | None, print_default: bool) -> None:
    """Run the whole chain from one file (default: the embedded one, which runs on a laptop).

    \b
    lake -> ingest -> train (+search) -> evaluate (gates) -> export -> quantize -> build per
    target and precision -> bench -> register alias (-> package + deploy when [deploy] fleet is set)
    A stage whose inputs, config and code are unchanged is skipped; a killed run resumes at the first
    unfinished stage (training from its last checkpoint). Ends with a table per target and precision.
    """
    from toolchain.pipeline.cache import StageOutcome
    from toolchain.pipeline.config import DEFAULT_FILE, load_pipeline
    from toolchain.pipeline.run import PipelineRunner

    if print_default:
        click.echo(DEFAULT_FILE.read_text(), nl=False)
        return
    config = load_pipeline(config_file)
    quiet = app(ctx).json

    def on_stage(outcome: StageOutcome) -> None:
        if not quiet:
            state = "[dim]skipped (unchanged)[/dim]" if outcome.skipped else f"done in {outcome.seconds:.1f} s"
            console.print(f"[bold]{outcome.stage}[/bold]: {state}")

    if not quiet:
        console.print(f"pipeline [bold]{config.name}[/bold] from {config.source}; work folder {config.work_path}")
    with app(ctx).open_workspace() as workspace, progress_for(ctx) as progress:
        result = PipelineRunner(workspace, config, progress=progress, on_stage=on_stage).run()

    def render(out: Console) -> None:
        table = Table(title=f"pipeline {result.name}: model {result.model[:12]}, dataset {result.dataset[:12]}")
        for column in ("target", "precision", "MB", "test acc", "prec (macro)", "recall (min)", "p99 e2e ms", "fps",
                       "real-time", "build", "benchmark"):
            table.add_column(column, no_wrap=True)
        for row in result.rows:
            table.add_row(row.target, row.precision, _fmt(row.size_mb, ".2f"), _fmt(row.accuracy, ".4f"),
                          _fmt(row.precision_macro, ".4f"), _fmt(row.recall_min, ".4f"), _fmt(row.p99_ms, ".1f"),
                          _fmt(row.fps, ".1f"), _fmt(row.realtime), row.build[:10], (row.benchmark or "-")[:10])
        out.print(table)
        out.print(f"{len(result.stages)} stages, {result.skipped} skipped as unchanged, {result.seconds:.1f} s"
                  + (f"; alias {result.alias}" if result.alias else ""))

    emit(ctx, result.to_json(), render)
