"""Entry point: the ``toolchain`` click group, global options, and the error-to-exit-code mapping.

Exit codes: 0 ok, 1 internal bug, 2 usage, 3 quality gate not met, 4 bad input or config,
5 missing environment (backend, device, engine).
"""

from __future__ import annotations

import functools
import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from toolchain import __version__
from toolchain.cli.bench import bench
from toolchain.cli.build import build
from toolchain.cli.count import count
from toolchain.cli.data import data
from toolchain.cli.deploy import deploy
from toolchain.cli.doctor import doctor
from toolchain.cli.events import events
from toolchain.cli.export import export, quantize
from toolchain.cli.handoff import handoff
from toolchain.cli.output import AppContext, console
from toolchain.cli.pipeline import pipeline
from toolchain.cli.models import models
from toolchain.cli.registry import registry
from toolchain.cli.package import package
from toolchain.cli.serve import serve
from toolchain.cli.synth import synth
from toolchain.cli.targets import targets
from toolchain.cli.train import evaluate, train
from toolchain.errors import ToolchainError, missing_extra
from toolchain.extras import extra_for_module, importable, require_for_command
from toolchain.redaction import scrub
from toolchain.workspace import default_workspace_path


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--workspace", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Workspace directory (local state; blob store and registry unless set apart). "
         "Default: $TOOLCHAIN_HOME or ./.toolchain",
)
@click.option(
    "--registry", "registry_uri", metavar="URI", default=None,
    help="Registry store: sqlite:///PATH/registry.db or postgresql://USER@HOST:PORT/DB (password in PGPASSWORD "
         "or ~/.pgpass). Default: $TOOLCHAIN_REGISTRY or WORKSPACE/registry.db",
)
@click.option(
    "--blobs", metavar="DIR", default=None,
    help="Blob store directory, may be shared by several hosts (must exist). Default: $TOOLCHAIN_BLOBS or WORKSPACE",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout instead of tables.")
@click.version_option(__version__, prog_name="toolchain")
@click.pass_context
def cli(ctx: click.Context, workspace: Path | None, registry_uri: str | None, blobs: str | None, as_json: bool) -> None:
    """Edge build toolchain: from a labelled CCTV image lake to verified car/truck classifiers on
    Jetson roadside units.

    \b
    Pipeline:  synth lake -> data ingest -> train -> evaluate -> export -> quantize
               -> build --target T -> bench -> registry -> package -> deploy
    Start with `toolchain doctor`, then `toolchain data ingest LAKE --name NAME`.
    """
    ctx.obj = AppContext(workspace_path=workspace or default_workspace_path(), json=as_json, registry_uri=registry_uri,
                       blobs=blobs)


cli.add_command(doctor)
cli.add_command(pipeline)
cli.add_command(synth)
cli.add_command(data)
cli.add_command(models)
cli.add_command(train)
cli.add_command(evaluate)
cli.add_command(export)
cli.add_command(quantize)
cli.add_command(targets)
cli.add_command(build)
cli.add_command(bench)
cli.add_command(count)
cli.add_command(events)
cli.add_command(registry)
cli.add_command(serve)
cli.add_command(package)
cli.add_command(handoff)
cli.add_command(deploy)


def _with_extras_check(path: str, callback: Callable[..., Any]) -> Callable[..., Any]:
    """``callback`` preceded by the check of what :data:`toolchain.extras.COMMANDS` says ``path`` needs.

    It runs after click has parsed the arguments (so ``--help`` and usage errors come first) and before
    the command's code: a missing extra is exit 5 naming it, never a failure half-way.
    """

    @functools.wraps(callback)
    def checked(*args: Any, **params: Any) -> Any:
        require_for_command(path, params)
        return callback(*args, **params)

    return checked


def _check_extras_of(group: click.Group, prefix: str = "") -> None:
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if isinstance(command, click.Group):
            _check_extras_of(command, f"{path} ")
        elif command.callback is not None:
            command.callback = _with_extras_check(path, command.callback)


_check_extras_of(cli)


def _wants_json(argv: list[str]) -> bool:
    return "--json" in argv


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and map errors to exit codes (the only place that does)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = cli.main(args=args, prog_name="toolchain", standalone_mode=False)
        if isinstance(code, int) and code:  # ctx.exit(n) returns n when not standalone
            sys.exit(code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        console.print("[red]aborted[/red]")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if isinstance(exc, click.UsageError) else exc.exit_code)
    except ToolchainError as exc:
        _report(args, type(exc).__name__, str(exc), exc.exit_code, json_written=getattr(exc, "reported_json", False))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]; rerun the same command to finish the job")
        sys.exit(130)
    except ModuleNotFoundError as exc:
        # A module an extra brings, imported somewhere the table of extras did not foresee: still exit 5.
        extra = extra_for_module(exc.name or "")
        if extra is None or importable(exc.name or ""):
            _internal_error(args)
        error = missing_extra(exc.name or "", extra)
        _report(args, type(error).__name__, str(error), error.exit_code)
        sys.exit(error.exit_code)
    except Exception:  # noqa: BLE001 - anything else is our bug
        _internal_error(args)
    sys.exit(0)


def _internal_error(args: list[str]) -> None:
    exc = sys.exc_info()[1]
    console.print(traceback.format_exc(), markup=False, highlight=False)
    _report(args, "InternalError", f"{type(exc).__name__}: {exc} (this is a bug in toolchain; please report it)", 1)
    sys.exit(1)


def _report(args: list[str], kind: str, message: str, code: int, *, json_written: bool = False) -> None:
    message = scrub(message)
    if _wants_json(args) and not json_written:
        sys.stdout.write(json.dumps({"error": {"type": kind, "message": message, "exit_code": code}}) + "\n")
    console.print(f"[bold red]error:[/bold red] {escape(message)}", markup=True, highlight=False, soft_wrap=True)
