"""The README's CLI reference names every command the CLI has (so neither can drift alone)."""

from __future__ import annotations

from pathlib import Path

import click

from toolchain.cli.main import cli

README = Path(__file__).resolve().parents[2] / "README.md"


def _command_paths(group: click.Group, prefix: str = "toolchain") -> list[str]:
    paths = []
    for name, command in sorted(group.commands.items()):
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            paths.extend(_command_paths(command, path))
        else:
            paths.append(path)
    return paths


def test_every_command_is_in_the_readme_reference() -> None:
    text = README.read_text()
    missing = [path for path in _command_paths(cli) if f"`{path}" not in text]
    assert not missing, f"add these commands to README.md's CLI reference: {missing}"


def test_readme_states_the_two_commands_first() -> None:
    text = README.read_text()
    assert text.index("scripts/demo") < text.index("## CLI reference")
    assert text.index("scripts/test") < text.index("## CLI reference")
