"""TOML catalogs shipped as package data: find files by name or path, read them, check their fields.

Model recipes and hardware targets are both "catalogs": one TOML file per entry, found by name in
the directories of an environment variable (``os.pathsep`` separated; they win over built-ins of
the same name) and then in the built-in catalog (``toolchain/catalog/<kind>``); a path to a
``.toml`` file is accepted too. This module holds the generic part; each catalog keeps its own
schema. Standard library only, so the roadside runtime can import it.
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolchain.errors import BadInputError, InputNotFoundError

__all__ = [
    "Catalog",
    "FileFields",
    "Invalid",
    "boolean",
    "choice",
    "float_range",
    "int_range",
    "integer",
    "name",
    "number",
    "string",
    "string_list",
    "suggest",
]

CATALOG_ROOT = Path(__file__).resolve().parent / "catalog"
"""Where the built-in catalogs live (package data)."""

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


# --------------------------------------------------------------------------- field checks


class Invalid(Exception):
    """A value failed its check; the message says what was expected (without naming the field)."""


def suggest(word: str, options: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest option, or an empty string."""
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def number(value: Any) -> float:
    """A finite int or float (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise Invalid(f"expected a number, got {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise Invalid(f"expected a finite number, got {value!r}")
    return result


def integer(value: Any) -> int:
    """An int (not a bool, not a float with an integral value)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise Invalid(f"expected an integer, got {value!r}")
    return int(value)


def int_range(low: int, high: int | None = None) -> Callable[[Any], int]:
    """A check for an integer in ``[low, high]`` (``high=None``: no upper bound)."""

    def check(value: Any) -> int:
        result = integer(value)
        if result < low or (high is not None and result > high):
            bound = f"between {low} and {high}" if high is not None else f">= {low}"
            raise Invalid(f"expected an integer {bound}, got {value!r}")
        return result

    return check


def float_range(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Callable[[Any], float]:
    """A check for a number in ``[low, high]``; ``low_open``/``high_open`` exclude the bound."""

    def check(value: Any) -> float:
        result = number(value)
        if (result <= low if low_open else result < low) or (result >= high if high_open else result > high):
            left = "(" if low_open else "["
            right = ")" if high_open else "]"
            upper = "inf" if math.isinf(high) else f"{high:g}"
            raise Invalid(f"expected a number in {left}{low:g}, {upper}{right}, got {value!r}")
        return result

    return check


def string(value: Any) -> str:
    """A string."""
    if not isinstance(value, str):
        raise Invalid(f"expected a string, got {value!r}")
    return value


def boolean(value: Any) -> bool:
    """``true`` or ``false`` (TOML booleans, not 0/1 or strings)."""
    if not isinstance(value, bool):
        raise Invalid(f"expected true or false, got {value!r}")
    return value


def choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    """A check for one string out of ``options``."""

    def check(value: Any) -> str:
        text = string(value)
        if text not in options:
            raise Invalid(f"expected one of {', '.join(options)}, got {value!r}{suggest(text, options)}")
        return text

    return check


def string_list(item: Callable[[Any], str] = string, *, allow_empty: bool = True) -> Callable[[Any], tuple[str, ...]]:
    """A check for a list of strings (each checked by ``item``), without repeats; returns a tuple."""

    def check(value: Any) -> tuple[str, ...]:
        if not isinstance(value, (list, tuple)):
            raise Invalid(f"expected a list of strings, got {value!r}")
        if not value and not allow_empty:
            raise Invalid("expected a non-empty list")
        items = tuple(item(v) for v in value)
        repeated = sorted({v for v in items if items.count(v) > 1})
        if repeated:
            raise Invalid(f"repeats {', '.join(repr(v) for v in repeated)}; list each value once")
        return items

    return check


def name(value: Any) -> str:
    """A catalog entry name: 1-64 letters, digits, ``_``, ``.`` or ``-``, starting with a letter or digit."""
    text = string(value)
    if not _NAME_RE.match(text):
        raise Invalid(f"expected 1-64 letters, digits, '_', '.' or '-' (starting with a letter or digit), got {value!r}")
    return text


class FileFields:
    """Turns :class:`Invalid` into :class:`BadInputError` messages that name the file and the field.

    Args:
        origin: Where the data came from (a path), the start of every message.
        what: What the file is, for "fix it in the <what>" (e.g. ``"target file"``).
    """

    def __init__(self, origin: str, what: str) -> None:
        self.origin = origin
        self.what = what

    def fail(self, key: str, problem: str) -> BadInputError:
        """The error for field ``key``; ``problem`` says what is wrong (and how to fix it, when not obvious)."""
        return BadInputError(f"{self.origin}: field '{key}': {problem}; fix it in the {self.what}")

    def check(self, key: str, value: Any, check: Callable[[Any], Any]) -> Any:
        """``check(value)``, with an :class:`Invalid` reported against ``key``."""
        try:
            return check(value)
        except Invalid as exc:
            raise self.fail(key, str(exc)) from None

    def unknown(self, data: Mapping[str, Any], known: Iterable[str], prefix: str = "") -> None:
        """Refuse the first key of ``data`` not in ``known`` (typos must not pass silently)."""
        known = list(known)
        for key in data:
            if key not in known:
                where = f" in [{prefix[:-1]}]" if prefix else ""
                raise self.fail(f"{prefix}{key}", f"unknown key{suggest(key, known)}; known keys{where}: {', '.join(sorted(known))}")


# --------------------------------------------------------------------------- finding and reading files


@dataclass(frozen=True, kw_only=True)
class Catalog:
    """One catalog of TOML files: built-ins plus directories named by an environment variable.

    Attributes:
        kind: What an entry is, for messages (``"target"``, ``"model recipe"``).
        builtin: The built-in directory (package data).
        env: Environment variable naming extra directories, ``os.pathsep`` separated.
        list_command: The command that lists the entries, quoted in "unknown name" messages.
    """

    kind: str
    builtin: Path
    env: str
    list_command: str

    def dirs(self) -> list[Path]:
        """Directories searched by name, first match wins: ``$env`` entries, then the built-ins.

        Raises:
            InputNotFoundError: ``$env`` names something that is not a directory.
        """
        dirs: list[Path] = []
        for entry in os.environ.get(self.env, "").split(os.pathsep):
            if not entry.strip():
                continue
            path = Path(entry).expanduser()
            if not path.is_dir():
                raise InputNotFoundError(
                    f"${self.env} names '{entry}', which is not a directory; create it, fix the path or unset {self.env}"
                )
            dirs.append(path)
        dirs.append(self.builtin)
        return dirs

    def files(self) -> dict[str, Path]:
        """Entry name (file stem) -> file, for every entry reachable by name."""
        found: dict[str, Path] = {}
        for directory in self.dirs():
            for path in sorted(directory.glob("*.toml")):
                found.setdefault(path.stem, path)
        return found

    def is_builtin(self, source: str) -> bool:
        """Whether ``source`` is a file of the built-in catalog."""
        try:
            return bool(source) and Path(source).resolve().parent == self.builtin.resolve()
        except OSError:
            return False

    @staticmethod
    def looks_like_path(name_or_path: str | Path) -> bool:
        """A :class:`Path`, or a string ending in ``.toml`` or containing a path separator."""
        if isinstance(name_or_path, Path):
            return True
        return name_or_path.endswith(".toml") or "/" in name_or_path or os.sep in name_or_path

    def locate(self, name_or_path: str | Path) -> tuple[Path, str | None]:
        """The file for a name or path, and the name its ``name`` field must have (``None`` for a path).

        Raises:
            InputNotFoundError: No entry of that name, or the path is not a file.
        """
        if self.looks_like_path(name_or_path):
            path = Path(name_or_path).expanduser()
            if not path.is_file():
                raise InputNotFoundError(f"{self.kind} file {path} does not exist; check the path or pass a {self.kind} name")
            return path, None
        files = self.files()
        path = files.get(str(name_or_path))
        if path is None:
            raise InputNotFoundError(
                f"unknown {self.kind} '{name_or_path}'{suggest(str(name_or_path), files)}; "
                f"available: {', '.join(sorted(files))} (see `{self.list_command}`), or pass a path to a .toml file"
            )
        return path, path.stem

    def read(self, path: Path) -> dict[str, Any]:
        """Parse one TOML file.

        Raises:
            InputNotFoundError: The file does not exist.
            BadInputError: It is not valid TOML or cannot be read.
        """
        try:
            with path.open("rb") as f:
                return tomllib.load(f)
        except FileNotFoundError:
            raise InputNotFoundError(f"{self.kind} file {path} does not exist; check the path") from None
        except tomllib.TOMLDecodeError as exc:
            raise BadInputError(f"{path}: not valid TOML ({exc}); fix the syntax") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise BadInputError(f"{path}: cannot read the {self.kind} ({exc}); check that it is a readable TOML file") from None
