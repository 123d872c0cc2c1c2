"""``python3 -m toolchain.serve BUNDLE --source ...``: the roadside image's entry point.

The same ``serve`` command as ``toolchain serve`` (:mod:`toolchain.serve.command`), without the
workstation's CLI around it: the image ships only the runtime (:mod:`toolchain.package.runtime_files`),
so nothing here imports :mod:`toolchain.cli`, and ARTIFACT is the bundle directory (no workspace to
resolve a reference in: :class:`~toolchain.serve.context.UnitContext`). Errors map to the toolchain's exit
codes: 2 usage, 3 quality gate, 4 bad input, 5 missing environment, 1 a bug.
"""

from __future__ import annotations

import sys

import click

from toolchain.console import console
from toolchain.errors import ToolchainError
from toolchain.redaction import scrub
from toolchain.serve.command import serve
from toolchain.serve.context import UnitContext


def main(argv: list[str] | None = None) -> int:
    """Run ``serve`` with ``argv``; the exit code."""
    try:
        serve.main(args=list(sys.argv[1:] if argv is None else argv), prog_name="toolchain serve",
                   standalone_mode=False, obj=UnitContext())
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return 2 if isinstance(exc, click.UsageError) else exc.exit_code
    except ToolchainError as exc:
        console.print(f"error: {scrub(exc)}", markup=False, highlight=False)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
