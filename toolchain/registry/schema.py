"""Registry schema versions and forward migrations: the rules every store follows.

The schema version is one number for the logical registry (its tables, constraints and immutability
rules), the same on every store; each store holds the statements that take its own SQL dialect from
version N-1 to N (``sqlite_schema.py``, ``postgres_schema.py``). A store records every migration it
applied in a ``schema_version`` table (version, description, when, by which toolchain) and applies the
pending ones in one transaction when it is opened, so a crash mid-migration leaves the old schema.

Opening refuses, before anything is written:

* a database that holds tables the toolchain did not make and no ``schema_version`` of ours (the wrong
  database: another application's, or a typo in ``--registry``);
* a schema newer than this code knows (a newer toolchain migrated it; an older one must not write).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from toolchain.errors import BadInputError

SCHEMA_VERSION = 3
"""The schema version this code reads and writes."""

VERSION_TABLE = "schema_version"
VERSION_COLUMNS = ("version", "description", "applied_at", "toolchain_version")
"""Columns of :data:`VERSION_TABLE`: a table of that name with other columns is not ours (Flyway used the name)."""


@dataclass(frozen=True, kw_only=True)
class Migration:
    """The statements that take one store's schema from ``version - 1`` to ``version``.

    Attributes:
        version: The schema version after the statements ran.
        description: What changes, in a few words (stored in ``schema_version``).
        statements: SQL statements run in order, inside the migration's transaction.
    """

    version: int
    description: str
    statements: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Found:
    """What a store found in its database before migrating.

    Attributes:
        tables: Names of the tables (and views, sequences) in the registry's namespace.
        version_columns: Columns of ``schema_version`` when that table exists.
        version: The highest version recorded in ``schema_version`` (0 when the table is empty or absent).
    """

    tables: frozenset[str]
    version_columns: tuple[str, ...] | None = None
    version: int = 0


def check_migrations(migrations: tuple[Migration, ...]) -> tuple[Migration, ...]:
    """``migrations`` after checking they run 1, 2, ... up to :data:`SCHEMA_VERSION` (a store's definition)."""
    numbers = [m.version for m in migrations]
    if numbers != list(range(1, SCHEMA_VERSION + 1)):
        raise AssertionError(f"migrations must be numbered 1..{SCHEMA_VERSION}, got {numbers}")
    return migrations


def current_version(found: Found, *, where: str, adoptable: Iterable[str] = ()) -> int:
    """The schema version the database is at (0: empty), or the error that says why it must not be opened.

    Args:
        found: What the store found.
        where: The database as the user named it, credentials redacted (for messages).
        adoptable: Tables a registry written before ``schema_version`` existed may hold (SQLite's first
            schema): a database holding only these is ours, at version 0, and migration 1 (idempotent,
            ``IF NOT EXISTS``) adopts it in place.

    Raises:
        BadInputError: Not a toolchain registry, or a schema newer than :data:`SCHEMA_VERSION`.
    """
    if VERSION_TABLE in found.tables:
        if found.version_columns is None or set(found.version_columns) != set(VERSION_COLUMNS):
            raise foreign_database(where, [VERSION_TABLE])
        if found.version > SCHEMA_VERSION:
            raise newer_schema(where, found.version)
        return found.version
    strangers = sorted(found.tables - set(adoptable))
    if strangers:
        raise foreign_database(where, strangers)
    return 0


def pending(migrations: tuple[Migration, ...], version: int) -> tuple[Migration, ...]:
    """The migrations still to apply to a database at ``version``, in order."""
    return tuple(m for m in migrations if m.version > version)


def newer_schema(where: str, found: int) -> BadInputError:
    return BadInputError(
        f"the registry {where} has schema version {found}, newer than this toolchain understands ({SCHEMA_VERSION}); "
        "nothing was changed. A newer toolchain migrated it: upgrade toolchain here (pip install -U toolchain) "
        "before using this registry"
    )


def foreign_database(where: str, tables: list[str]) -> BadInputError:
    shown = ", ".join(tables[:8]) + (f" and {len(tables) - 8} more" if len(tables) > 8 else "")
    return BadInputError(
        f"{where} is not a toolchain registry: it holds {shown}, which the toolchain did not make; nothing was "
        "written. Point --registry (or TOOLCHAIN_REGISTRY) at the registry's own database, or at an empty one "
        "(a new SQLite file, or a new PostgreSQL database: createdb -O USER toolchain_registry)"
    )
