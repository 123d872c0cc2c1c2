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


def _rows() -> dict[str, str]:
    """README CLI reference rows by command path (`toolchain data ingest` -> the whole row)."""
    rows: dict[str, str] = {}
    for line in README.read_text().splitlines():
        if line.startswith("| `toolchain "):
            usage = line.split("`")[1]
            words = [w for w in usage.split() if not w.isupper() and not w.startswith(("[", "-", "<"))]
            rows[" ".join(words)] = line
    return rows


def _commands(group: click.Group, prefix: str = "toolchain") -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    for name, command in sorted(group.commands.items()):
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            found.extend(_commands(command, path))
        else:
            found.append((path, command))
    return found


def test_every_option_of_every_command_is_in_its_readme_row() -> None:
    """Checked against the commands' own --help definitions, so the reference cannot drift."""
    rows = _rows()
    missing = []
    for path, command in _commands(cli):
        row = next((text for usage, text in rows.items() if usage.startswith(path)), "")
        for param in command.params:
            if not isinstance(param, click.Option) or param.hidden:
                continue
            names = [n for n in param.opts + param.secondary_opts if n.startswith("--") and n not in ("--help", "--json")]
            if names and not any(f"{n}" in row for n in names):
                missing.append(f"{path} {names[0]}")
    assert not missing, f"README.md's CLI reference lacks these options: {missing}"
