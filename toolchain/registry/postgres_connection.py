"""Connecting to a PostgreSQL registry, and what its failures mean to the user.

The URI is whatever libpq accepts (``postgresql://user@host:port/db?sslmode=require``); the password
may come from the URI, ``PGPASSWORD`` or ``~/.pgpass`` (prefer the last two: a URI on a command line is
visible to other users of the host). Every message quotes the URI through :func:`toolchain.redaction.redact_url`,
and a password found in it is registered with :func:`toolchain.redaction.register_secret`, so it is masked
wherever it might surface.

Failures are split the way a user fixes them: bad credentials or a missing database are configuration
(:class:`BadInputError`, exit 4); a server that cannot be reached, or that goes away mid-command, is the
environment (:class:`MissingEnvironmentError`, exit 5), with the check to run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from toolchain.errors import BadInputError, MissingEnvironmentError, ToolchainError
from toolchain.redaction import redact_url, register_secret, scrub

if TYPE_CHECKING:
    import psycopg

DEFAULT_CONNECT_TIMEOUT_S = 10

# libpq's and the server's words for a login refused (not localised by libpq; the server's FATAL
# messages are, so an unmatched message still gets the generic, correct advice).
_LOGIN_REFUSED = ("password authentication failed", "no password supplied", "pg_hba.conf", "does not exist",
                  "authentication failed", "permission denied for database")


@dataclass(frozen=True, kw_only=True)
class PostgresLocation:
    """A PostgreSQL registry URI, parsed.

    Attributes:
        uri: As given (it may carry a password: never print it; print :attr:`shown`).
        shown: The URI with credentials redacted.
        host: Server host (or socket directory) for messages; libpq's default when the URI names none.
        port: Server port for messages.
        dbname: Database name for messages.
        user: Role name for messages (not a secret).
        params: Names of the connection parameters the URI sets itself.
        connect_timeout_s: Seconds to wait for the server, unless the URI sets ``connect_timeout``.
    """

    uri: str
    shown: str
    host: str
    port: str
    dbname: str
    user: str
    params: frozenset[str]
    connect_timeout_s: int = DEFAULT_CONNECT_TIMEOUT_S

    @classmethod
    def parse(cls, uri: str, *, connect_timeout_s: int = DEFAULT_CONNECT_TIMEOUT_S) -> PostgresLocation:
        """Parse ``uri`` with libpq's rules (through psycopg); a malformed one is a usage error."""
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        shown = redact_url(uri)
        try:
            params = conninfo_to_dict(uri)
        except psycopg.Error as exc:  # ProgrammingError for a malformed conninfo
            raise BadInputError(
                f"'{shown}' is not a PostgreSQL URI ({scrub(exc)}); use postgresql://USER@HOST:PORT/DATABASE"
            ) from None
        password = params.get("password")
        if isinstance(password, str):
            register_secret(password)
        return cls(
            uri=uri, shown=shown, host=str(params.get("host") or "localhost"), port=str(params.get("port") or "5432"),
            dbname=str(params.get("dbname") or params.get("user") or "(the user's)"),
            user=str(params.get("user") or "(this login)"), params=frozenset(params), connect_timeout_s=connect_timeout_s,
        )

    def connect_kwargs(self) -> dict[str, Any]:
        """Settings added to the URI's own (which win)."""
        extra: dict[str, Any] = {}
        if "connect_timeout" not in self.params:
            extra["connect_timeout"] = self.connect_timeout_s
        if "application_name" not in self.params:
            extra["application_name"] = "toolchain"
        return extra

    def check_hint(self) -> str:
        return f"pg_isready -h {self.host} -p {self.port}"


def connect(location: PostgresLocation) -> psycopg.Connection[Any]:
    """An autocommit connection with dict rows in READ COMMITTED (writes open their own transactions)."""
    import psycopg
    from psycopg.rows import dict_row

    try:
        conn = psycopg.connect(location.uri, autocommit=True, row_factory=dict_row, **location.connect_kwargs())
    except psycopg.Error as exc:
        raise connect_error(location, exc) from None
    # Explicit, whatever default_transaction_isolation the server has: the version and alias writes
    # read what other writers committed after taking their lock.
    conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
    return conn


def connect_error(location: PostgresLocation, exc: Exception) -> ToolchainError:
    """The error for a connection that could not be opened: nothing was read or written."""
    message = scrub(str(exc).strip())
    lowered = message.lower()
    if any(words in lowered for words in _LOGIN_REFUSED):
        if f'database "{location.dbname.lower()}" does not exist' in lowered:
            return BadInputError(
                f"the registry database {location.shown} does not exist ({message}); nothing was written. Create it "
                f"(createdb -h {location.host} -p {location.port} -O {location.user} {location.dbname}) or fix the "
                "database name in --registry / TOOLCHAIN_REGISTRY"
            )
        return BadInputError(
            f"the registry database {location.shown} refused the login as {location.user} ({message}); nothing was "
            "written. Check the user name and password (in PGPASSWORD, ~/.pgpass or the URI) and that the "
            "server's pg_hba.conf lets this host in"
        )
    return MissingEnvironmentError(
        f"cannot reach the registry database {location.shown} ({message}); nothing was written. Check that the "
        f"server is running and reachable from this host ({location.check_hint()}), or point --registry / "
        "TOOLCHAIN_REGISTRY at another registry"
    )


def operation_error(location: PostgresLocation, exc: Exception, *, broken: bool) -> ToolchainError:
    """The error for a failure while talking to the server (the transaction in flight is whole or absent)."""
    import psycopg

    message = scrub(str(exc).strip())
    state = getattr(exc, "sqlstate", None) or ""
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return BadInputError(
            f"the registry database {location.shown} refused {location.user} ({message}); nothing was written. "
            "Ask its owner to grant this role what the registry needs (SELECT to read; INSERT, and UPDATE and "
            "DELETE on aliases, to write), or open it as the owner to create or migrate the schema"
        )
    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
        return BadInputError(
            f"the registry database {location.shown} is read-only ({message}); nothing was written. Point "
            "--registry at the primary server, not a standby"
        )
    if isinstance(exc, (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected)):
        return MissingEnvironmentError(
            f"the registry database {location.shown} kept aborting this write for conflicts with other writers "
            f"({message}); nothing of it was kept. Rerun the same command"
        )
    if broken or state.startswith(("08", "57P")):
        return MissingEnvironmentError(
            f"lost the registry database {location.shown} mid-command ({message}); each write is one transaction, so "
            "nothing half-written is kept. Check that the server is up and reachable "
            f"({location.check_hint()}), then rerun the same command: what had finished is kept and is not redone"
        )
    return MissingEnvironmentError(
        f"the registry database {location.shown} failed ({message}{', SQLSTATE ' + state if state else ''}); each "
        "write is one transaction, so nothing half-written is kept. Check the server's log and free space, then rerun "
        "the same command"
    )
