"""The toolchain's console (rich on stderr, every line scrubbed of secrets) and its one JSON document on stdout.

One definition for the workstation's CLI (:mod:`toolchain.cli.output`) and the roadside image's
``serve`` (:mod:`toolchain.serve.command`), which ships without the CLI: whichever runs, a secret that
reaches a message is printed redacted, and ``--json`` output is scrubbed the same way.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable

import click
from rich.console import Console

from toolchain.redaction import scrub, scrub_data


class _ScrubbedStderr:
    """``sys.stderr`` (looked up at each write, so test captures work) with every line scrubbed of secrets.

    Every console line goes through :func:`toolchain.redaction.scrub`: a URL with credentials that
    reaches a message by any path is printed redacted.
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(scrub(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(sys.stderr, name)


# Off a terminal (CI logs, pipes) rich would wrap everything at 80 columns; tables and trees read
# better whole. $COLUMNS still wins.
console = Console(file=_ScrubbedStderr(), width=None if sys.stderr.isatty() or os.environ.get("COLUMNS") else 160)


def print_json(payload: Any) -> None:
    """Write ``payload`` as the command's one JSON document on stdout, scrubbed of secrets."""
    sys.stdout.write(json.dumps(scrub_data(payload), indent=2, default=str) + "\n")
    sys.stdout.flush()


def json_option(context: Callable[[click.Context], Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--json`` after the command too (``toolchain data list --json``, ``serve ... --json``): it sets ``json``
    on the object ``context(ctx)`` returns (the CLI's ``AppContext``, or serve's own on a unit)."""

    def set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value:
            context(ctx).json = True

    return click.option(
        "--json", "json_flag", is_flag=True, expose_value=False, callback=set_json, help="Print one JSON document on stdout."
    )


def print_report(as_json: bool, payload: Any, render: Callable[[Console], None]) -> None:
    """A command's report: ``payload`` as one JSON document (``--json``), else ``render`` called for humans."""
    if as_json:
        print_json(payload)
    else:
        render(console)
