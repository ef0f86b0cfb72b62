"""A real PgBouncer (Debian's `pgbouncer` package) in front of a private cluster, for the tests.

`pgbouncer_for(server, pool_mode="transaction")` writes a configuration of its own into a temporary
directory (loopback TCP only, no unix socket, trust authentication for the cluster's `postgres`
role, every database name passed through to the same name upstream), starts `pgbouncer` in the
foreground as a child process on a free loopback port, waits (bounded) until it answers, and
stops it afterwards. `dsn_for(dbname)` reaches a database through it.

PgBouncer refuses to run as root; as root it is started with `-u` as the unprivileged account the
private cluster runs as (see tests/support/pgserver.py). Without the binary the fixture skips (the
suite's `scripts/ensure-tools` installs it when it can).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from support.pgserver import PgServer, free_port_below_ephemeral

_BINARY_CANDIDATES = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")
_POLL_S = 0.05
"""Pause between two connection attempts while PgBouncer starts (it announces nothing we can wait
on but its listening socket)."""


def pgbouncer_binary() -> str | None:
    """Path of the `pgbouncer` executable, or None when it is not installed."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    return next((p for p in _BINARY_CANDIDATES if os.access(p, os.X_OK)), None)


class PgBouncer:
    """One running PgBouncer; `dsn_for(dbname)` goes through it to the upstream cluster."""

    def __init__(self, base_dir: Path, port: int, process: asyncio.subprocess.Process) -> None:
        self.base_dir = base_dir
        self.port = port
        self.process = process
        self.logfile = base_dir / "pgbouncer.log"

    def dsn_for(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return "(no pgbouncer log)"


def _write_config(
    base_dir: Path,
    port: int,
    upstream_port: int,
    pool_mode: str,
    pool_size: int,
    extra: dict[str, str],
) -> Path:
    (base_dir / "users.txt").write_text('"postgres" ""\n', encoding="utf-8")
    ini = base_dir / "pgbouncer.ini"
    ini.write_text(
        "\n".join(
            [
                "; written by tests/support/pgbouncer.py",
                "[databases]",
                f"* = host=127.0.0.1 port={upstream_port}",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {port}",
                "unix_socket_dir =",
                "auth_type = trust",
                f"auth_file = {base_dir / 'users.txt'}",
                "admin_users = postgres",
                f"pool_mode = {pool_mode}",
                f"default_pool_size = {pool_size}",
                "max_client_conn = 500",
                f"logfile = {base_dir / 'pgbouncer.log'}",
                *(f"{key} = {value}" for key, value in extra.items()),
                "",
            ]
        ),
        encoding="utf-8",
    )
    return ini


async def _wait_listening(bouncer: PgBouncer, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if bouncer.process.returncode is not None:
            raise AssertionError(
                f"pgbouncer exited with {bouncer.process.returncode}\n{bouncer.log()}"
            )
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", bouncer.port)
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"pgbouncer not listening on {bouncer.port} within {timeout_s}s\n{bouncer.log()}"
                ) from None
            await asyncio.sleep(_POLL_S)  # bounded by the deadline: pgbouncer signals no readiness
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


def _hand_over(base_dir: Path, user: str) -> None:
    """Give `base_dir` and its files to `user`, whom PgBouncer runs as (it writes its log there)."""
    import pwd

    entry = pwd.getpwnam(user)
    for path in (base_dir, *base_dir.iterdir()):
        os.chown(path, entry.pw_uid, entry.pw_gid)


@contextlib.asynccontextmanager
async def pgbouncer_for(
    server: PgServer,
    *,
    pool_mode: str = "transaction",
    pool_size: int = 4,
    extra: dict[str, str] | None = None,
) -> AsyncIterator[PgBouncer]:
    """A PgBouncer in `pool_mode` in front of the running private cluster `server`, with at most
    `pool_size` server connections per (database, user) and `extra` settings of its
    `[pgbouncer]` section; stopped and deleted afterwards."""
    binary = pgbouncer_binary()
    if binary is None:
        pytest.skip("pgbouncer is not installed (scripts/ensure-tools installs it as root)")
    base_dir = Path(tempfile.mkdtemp(prefix="hookd-pgbouncer-"))
    port = free_port_below_ephemeral()
    ini = _write_config(base_dir, port, server.port, pool_mode, pool_size, dict(extra or {}))
    args = [binary]
    if os.geteuid() == 0:
        user = server.user or "nobody"
        _hand_over(base_dir, user)
        args += ["-u", user]
    args.append(str(ini))
    process = await asyncio.create_subprocess_exec(
        *args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=base_dir,
    )
    bouncer = PgBouncer(base_dir, port, process)
    try:
        await _wait_listening(bouncer, timeout_s=15.0)
        yield bouncer
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                process.kill()
                async with asyncio.timeout(5):
                    await process.wait()
        shutil.rmtree(base_dir, ignore_errors=True)
