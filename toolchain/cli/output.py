"""Output helpers: one JSON document on stdout with ``--json``; rich tables and progress on stderr.

The console and the JSON writer are :mod:`toolchain.console`'s, shared with the image's ``serve``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from toolchain.console import console, print_report
from toolchain.console import json_option as shared_json_option
from toolchain.redaction import scrub

if TYPE_CHECKING:
    from toolchain.workspace import Workspace

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def safe(text: Any) -> str:
    """Text from elsewhere (a unit, a container log) made safe to print: control characters and terminal
    escapes removed, rich markup escaped, secrets scrubbed."""
    return escape(_CONTROL.sub("", scrub(text)))


@dataclass
class AppContext:
    """Global options shared by every command."""

    workspace_path: Path
    json: bool = False
    registry_uri: str | None = None  # --registry (may carry a password: never printed)
    blobs: str | None = None  # --blobs

    def open_workspace(self) -> Workspace:
        from toolchain.workspace import Workspace  # not on the roadside image: serve never opens one

        return Workspace(self.workspace_path, registry_uri=self.registry_uri, blobs=self.blobs)

    def has_registry(self) -> bool:
        """Whether a registry exists where the global options (or their defaults) say, without creating one."""
        from toolchain.workspace import WorkspaceLocation

        return WorkspaceLocation.resolve(self.workspace_path, registry_uri=self.registry_uri,
                                         blobs=self.blobs).has_registry()


def app(ctx: click.Context) -> AppContext:
    obj = ctx.find_object(AppContext)
    assert obj is not None, "commands run under the toolchain group"
    return obj


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--json`` accepted after the subcommand too (``toolchain data list --json``)."""
    return shared_json_option(app)(func)


def emit(ctx: click.Context, payload: Any, render: Callable[[Console], None]) -> None:
    """Print ``payload`` as JSON (``--json``) or call ``render`` for humans."""
    print_report(app(ctx).json, payload, render)


def emit_failure(ctx: click.Context, payload: Any, render: Callable[[Console], None], error: Exception) -> NoReturn:
    """A failed command's report is still its one document (JSON with ``--json``, else ``render``); then ``error``."""
    emit(ctx, payload, render)
    if app(ctx).json:
        error.reported_json = True  # type: ignore[attr-defined]  # main() then writes no second document
    raise error


class RichProgress:
    """:class:`toolchain.progress.Progress` drawn with rich on stderr (silent with ``--json`` off a TTY)."""

    def __init__(self, *, enabled: bool = True) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[note]}"), console=console, disable=not enabled, transient=False,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start(self, description: str, total: int | None) -> None:
        self._task = self._progress.add_task(description, total=total, rate="", note="")

    def advance(self, amount: int = 1) -> None:
        if self._task is None:
            return
        self._progress.advance(self._task, amount)
        task = self._progress.tasks[self._task]
        if task.speed:
            self._progress.update(self._task, rate=f"{task.speed:,.0f}/s")

    def note(self, text: str) -> None:
        if self._task is not None:
            self._progress.update(self._task, note=text)

    def finish(self) -> None:
        if self._task is not None:
            task = self._progress.tasks[self._task]
            self._progress.update(self._task, total=task.completed)
        self._task = None


def progress_for(ctx: click.Context) -> RichProgress:
    """A progress display suited to the current output mode."""
    return RichProgress(enabled=console.is_terminal or not app(ctx).json)
