"""A throwaway PostgreSQL server for tests: ``initdb`` + ``pg_ctl`` in a temp dir, on a free loopback port.

The server binaries come from Debian's ``postgresql`` package (``/usr/lib/postgresql/N/bin``), from
``$TOOLCHAIN_TEST_PG_BIN``, or from ``PATH``. PostgreSQL refuses to run as root, so when the tests run
as root (CI) the cluster belongs to an unprivileged user (``$TOOLCHAIN_TEST_PG_USER``, default
``nobody``) and its commands run through ``runuser``. The cluster trades durability for speed
(``fsync=off``: it is deleted at the end) and authenticates TCP logins by password (scram-sha-256), so
wrong credentials are refused as on a real server.

Tests use :func:`shared_server` (one cluster per test process, started on first use and stopped at
exit) and :meth:`PostgresServer.create_database` (a fresh database per test, owned by the
unprivileged ``toolchain`` role the toolchain logs in as).
"""

from __future__ import annotations

import atexit
import itertools
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from tests.ports import free_port as _free_port

_database_numbers = itertools.count()
INSTALL_HINT = "install the PostgreSQL server (apt-get install postgresql) or set TOOLCHAIN_TEST_PG_BIN=DIR"
APP_ROLE = "toolchain"


def find_bin_dir() -> Path | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres`` (newest Debian version first)."""
    env = os.environ.get("TOOLCHAIN_TEST_PG_BIN")
    if env:  # only there: also the way to see the tests skip where there is no server
        candidates = [Path(env)]
    else:
        found = shutil.which("pg_ctl")
        candidates = [Path(found).resolve().parent] if found else []

        def major(path: Path) -> int:
            match = re.search(r"/(\d+)/bin$", str(path))
            return int(match.group(1)) if match else 0

        candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=major, reverse=True)
    for directory in candidates:
        if all((directory / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return directory
    return None


def _run_as() -> str | None:
    """The unprivileged user the cluster runs as (None: this process's own user, which is not root)."""
    if os.geteuid() != 0:
        return None
    return os.environ.get("TOOLCHAIN_TEST_PG_USER", "nobody")


def unavailable_reason() -> str | None:
    """Why no server can be started here (the skip reason), or None when one can."""
    try:
        import psycopg  # noqa: F401 - only whether it imports
    except ImportError:
        return "psycopg is not installed: pip install 'toolchain[postgres]'"
    if find_bin_dir() is None:
        return f"no PostgreSQL server binaries (initdb, pg_ctl) found: {INSTALL_HINT}"
    user = _run_as()
    if user is not None:
        import pwd

        try:
            pwd.getpwnam(user)
        except KeyError:
            return f"running as root and there is no user {user!r} to run PostgreSQL as; set TOOLCHAIN_TEST_PG_USER"
        if shutil.which("runuser") is None:
            return "running as root and runuser (util-linux) is missing: PostgreSQL must run as an unprivileged user"
    return None




@dataclass(frozen=True, kw_only=True)
class PostgresServer:
    """A running throwaway cluster.

    Attributes:
        bin_dir: Where initdb and pg_ctl are.
        base: Temp dir holding the data directory, the socket and the log (removed by :meth:`remove`).
        port: The loopback TCP port.
        run_as: The unprivileged user the cluster runs as, or None (this process's user).
        admin_password: The ``postgres`` superuser's password.
        app_password: The ``toolchain`` role's password.
    """

    bin_dir: Path
    base: Path
    port: int
    run_as: str | None
    admin_password: str
    app_password: str

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / "server.log"

    def admin_uri(self, database: str = "postgres") -> str:
        return f"postgresql://postgres:{self.admin_password}@127.0.0.1:{self.port}/{database}"

    def uri(self, database: str, *, password: str | None = None) -> str:
        """The URI the toolchain uses: the unprivileged role, by password over TCP."""
        return f"postgresql://{APP_ROLE}:{password or self.app_password}@127.0.0.1:{self.port}/{database}"

    def _command(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", self.run_as, "--"] if self.run_as else []
        return subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=timeout, cwd=self.base)

    def pg_ctl(self, *args: str) -> None:
        run = self._command(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args)
        if run.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"pg_ctl {' '.join(args)} failed: {run.stdout}{run.stderr}\n{tail}")

    def start(self) -> None:
        self.pg_ctl("start", "-w", "-t", "60", "-l", str(self.log))

    def stop(self, mode: str = "fast") -> None:
        self.pg_ctl("stop", "-w", "-t", "60", "-m", mode)

    def is_running(self) -> bool:
        return self._command(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "status").returncode == 0

    def admin(self, database: str = "postgres"):  # -> psycopg.Connection
        """An autocommit superuser connection (close it)."""
        import psycopg

        return psycopg.connect(self.admin_uri(database), autocommit=True, connect_timeout=10)

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database owned by the ``toolchain`` role; returns its name."""
        name = f"{prefix}_{os.getpid()}_{next(_database_numbers)}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" OWNER {APP_ROLE}')
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def terminate_connections(self, database: str) -> int:
        """Kill every backend connected to ``database`` (the database "going away" for its clients)."""
        with self.admin() as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            ).fetchall()
        return len(rows)

    def remove(self) -> None:
        """Stop the server (immediately: it is thrown away) and delete its files."""
        try:
            if self.is_running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


def start_server() -> PostgresServer:
    """initdb a new cluster in a temp dir and start it on a free loopback port."""
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    bin_dir = find_bin_dir()
    assert bin_dir is not None
    run_as = _run_as()
    base = Path(tempfile.mkdtemp(prefix="toolchain-pg-"))
    admin_password, app_password = secrets.token_hex(12), secrets.token_hex(12)
    (base / "pwfile").write_text(admin_password + "\n")
    if run_as:
        import pwd

        account = pwd.getpwnam(run_as)
        for path in (base, base / "pwfile"):
            os.chown(path, account.pw_uid, account.pw_gid)
    server = PostgresServer(bin_dir=bin_dir, base=base, port=_free_port(), run_as=run_as,
                            admin_password=admin_password, app_password=app_password)
    try:
        init = server._command(str(bin_dir / "initdb"), "-D", str(server.data_dir), "-U", "postgres", "-E", "UTF8",
                               "--locale=C", f"--pwfile={base / 'pwfile'}", "--auth-local=trust",
                               "--auth-host=scram-sha-256", "--no-sync", "--no-instructions", timeout=120)
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stdout}{init.stderr}")
        settings = {
            "listen_addresses": "'127.0.0.1'", "port": str(server.port), "unix_socket_directories": f"'{base}'",
            "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off", "max_connections": "100",
            "shared_buffers": "32MB", "logging_collector": "off",
        }
        with open(server.data_dir / "postgresql.conf", "a") as conf:  # appending keeps the owner
            conf.write("\n# toolchain tests\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
        server.start()
        with server.admin() as conn:
            conn.execute(f"CREATE ROLE {APP_ROLE} LOGIN PASSWORD '{app_password}'")
    except BaseException:
        server.remove()
        raise
    return server


_shared: PostgresServer | None = None
_shared_lock = threading.Lock()


def shared_server() -> PostgresServer:
    """The test process's cluster, started on first use and removed when the process exits."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = start_server()
            atexit.register(stop_shared_server)
        return _shared


def stop_shared_server() -> None:
    """Remove the shared cluster (the session fixture's teardown; also run at exit)."""
    global _shared
    with _shared_lock:
        server, _shared = _shared, None
    if server is not None:
        server.remove()
