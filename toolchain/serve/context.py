"""What the ``serve`` command takes from whatever runs it, without importing the workstation's CLI.

``toolchain serve`` runs under the CLI, whose context (:class:`toolchain.cli.output.AppContext`) knows
the workspace and registry the global options name; ``python3 -m toolchain.serve`` runs in the roadside
image, which ships neither the CLI nor the workspace modules (:mod:`toolchain.package.runtime_files`).
The command asks its click context's object for :class:`ServeContext` alone, so either fits: the CLI's
``AppContext`` as it is, or the image's :class:`UnitContext`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

import click
from rich.console import Console

from toolchain.console import print_report
from toolchain.console import json_option as shared_json_option
from toolchain.errors import UsageError


class ServeContext(Protocol):
    """The settings ``serve`` reads from the command line around it (``AppContext`` has them all)."""

    json: bool  # --json: one document on stdout

    def has_registry(self) -> bool:
        """Whether a registry exists to resolve a reference in (never created by asking)."""
        ...

    def open_workspace(self) -> Any:
        """The workspace (a context manager) holding that registry."""
        ...


@dataclass
class UnitContext:
    """The image's context: no workspace or registry (ARTIFACT is the bundle directory); ``--json`` alone."""

    json: bool = False

    def has_registry(self) -> bool:
        return False  # the workspace modules are not shipped: never ask

    def open_workspace(self) -> Any:
        raise UsageError("a unit has no workspace: pass the bundle directory `toolchain package` put in the image")


def serve_context(ctx: click.Context) -> ServeContext:
    """The context object the runner passed down (``AppContext`` under the CLI); a :class:`UnitContext` if none."""
    if ctx.obj is None:
        ctx.obj = UnitContext()
    return cast(ServeContext, ctx.obj)


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--json`` after the command (``serve ... --json``), as every CLI command accepts it."""
    return shared_json_option(serve_context)(func)


def emit(ctx: click.Context, payload: Any, render: Callable[[Console], None]) -> None:
    """Print ``payload`` as JSON (``--json``) or call ``render`` for humans, as the CLI's commands do."""
    print_report(serve_context(ctx).json, payload, render)
