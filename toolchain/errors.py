"""The error hierarchy of the toolchain.

One root, :class:`ToolchainError`; narrow subclasses that also inherit the matching builtin so
library callers can catch what they already know (``FileNotFoundError``, ``ValueError`` ...).
Only the CLI entry point maps these to exit codes; every message says what to do next.
"""

from __future__ import annotations


class ToolchainError(Exception):
    """Root of every error the toolchain raises on purpose."""

    exit_code: int = 1


class UsageError(ToolchainError, ValueError):
    """The command was called wrongly (bad option combination, unknown name)."""

    exit_code = 2


class QualityGateError(ToolchainError):
    """A quality gate (accuracy, parity, latency) was not met."""

    exit_code = 3


class BadInputError(ToolchainError, ValueError):
    """Input data or configuration is invalid."""

    exit_code = 4


class InputNotFoundError(BadInputError, FileNotFoundError):
    """A path, URI or registry reference named by the user does not exist."""

    exit_code = 4


class CorruptStoreError(BadInputError):
    """A stored blob or record failed verification (missing or altered bytes)."""

    exit_code = 4


class MissingEnvironmentError(ToolchainError, RuntimeError):
    """A backend, device, engine or optional dependency is missing."""

    exit_code = 5


def missing_extra(module: str, extra: str) -> MissingEnvironmentError:
    """Build the error for an optional dependency that is not installed.

    Args:
        module: The module that failed to import.
        extra: The pip extra that provides it.
    """
    return MissingEnvironmentError(
        f"'{module}' is not installed. Install it with: pip install 'toolchain[{extra}]'"
    )
