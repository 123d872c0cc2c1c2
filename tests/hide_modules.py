"""Run the ``toolchain`` CLI as if some packages were not installed: ``python tests/hide_modules.py MODS -- ARGS``.

MODS is a comma-separated list of import names (``torch,PIL``) that a meta path finder hides, with
their submodules: importing them, or :func:`importlib.util.find_spec` on them, fails as it does where
they are not installed. A dotted name hides a part of a package (``toolchain.cli``: the CLI, which the
roadside image does not ship). This shows what each install (base, ``[data]``, ``[deploy]`` ...) gets from every command
without building a virtualenv per install. Run it in a fresh interpreter (a module already imported is
not hidden); worker processes it forks inherit the finder.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib.abc import MetaPathFinder


class HiddenModules(MetaPathFinder):
    """Fails the lookup of every module under the given names, as if they were not installed.

    Each refused lookup is kept in :attr:`refused`: code that catches the ImportError and carries on
    still shows that it tried.
    """

    def __init__(self, names: set[str]) -> None:
        self.names = names
        self.refused: list[str] = []

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        parts = fullname.split(".")
        if any(".".join(parts[:n]) in self.names for n in range(1, len(parts) + 1)):
            self.refused.append(fullname)
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)


def hide(names: set[str]) -> HiddenModules:
    """Hide ``names`` from now on (a module already in ``sys.modules`` stays importable); the finder."""
    finder = HiddenModules(names)
    sys.meta_path.insert(0, finder)
    return finder


def _each(main: Callable[[list[str]], None], lines: list[str]) -> None:
    """Run ``main`` on each line's words; print ``EXIT CODE LINE`` for each on stderr."""
    for line in lines:
        try:
            main(line.split())
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        print(f"EXIT {code} {line}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    # python tests/hide_modules.py MODS -- ARGS...     one command
    # python tests/hide_modules.py MODS --each         one command per line of stdin
    hide({name for name in sys.argv[1].split(",") if name})
    sys.path.pop(0)  # this file's folder (tests/): not a place to import toolchain's dependencies from
    from toolchain.cli.main import main

    if sys.argv[2] == "--each":
        _each(main, sys.stdin.read().splitlines())
    else:
        main(sys.argv[sys.argv.index("--") + 1:])
