"""Fixtures for running registry tests on every store: SQLite and a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres_server import (
    PostgresServer,
    shared_server,
    stop_shared_server,
    unavailable_reason,
)
from tests.services import skip_or_fail

STORES = ("sqlite", "postgres")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL cluster for the session; the tests that need it skip where none can start (and fail
    where ``$TOOLCHAIN_TEST_REQUIRE_POSTGRES`` is set, as in CI)."""
    reason = unavailable_reason()
    if reason:
        skip_or_fail("postgres", reason)
    yield shared_server()
    stop_shared_server()


@pytest.fixture
def postgres_database(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database for one test (dropped after it); its name."""
    name = postgres_server.create_database()
    yield name
    postgres_server.drop_database(name)


@pytest.fixture
def postgres_uri(postgres_server: PostgresServer, postgres_database: str) -> str:
    """The URI of a fresh database, as the toolchain's unprivileged role (with its password)."""
    return postgres_server.uri(postgres_database)


@pytest.fixture(params=STORES)
def registry_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty registry of each kind of store."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_uri"))
    return f"sqlite:///{tmp_path / 'registry.db'}"
