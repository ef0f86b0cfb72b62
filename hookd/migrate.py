"""Versioned schema migrations: `hookd/sql/NNN_name.sql`, applied in order, recorded, idempotent.

Two concurrent runs are safe: each takes the same transaction-level advisory lock before it looks at
what is applied, so the second waits and then finds nothing left to do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from hookd.errors import DatabaseUnavailable

# Arbitrary, fixed key for pg_advisory_xact_lock: the bytes of "hookd".
MIGRATION_LOCK_KEY = 0x686F6F6B64

_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file: its version number, name and SQL text."""

    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    """Return the packaged migrations, sorted by version.

    Raises:
        RuntimeError: two files share a version number (a packaging mistake).
    """
    found: dict[int, Migration] = {}
    for entry in resources.files("hookd.sql").iterdir():
        m = _NAME.match(entry.name)
        if not m:
            continue
        version = int(m.group(1))
        if version in found:
            raise RuntimeError(f"duplicate migration version {version}")
        found[version] = Migration(version, m.group(2), entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


CONNECT_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError, ValueError)
"""What opening a connection raises when the server cannot be reached, refuses us, or the DSN is
malformed."""


def cannot_connect(exc: BaseException) -> DatabaseUnavailable:
    """The one-line error for a failed connection attempt (no driver traceback)."""
    return DatabaseUnavailable(f"cannot connect to the database: {exc or type(exc).__name__}")


async def apply_to(dsn: str, *, connect_timeout_s: float) -> list[int]:
    """Connect to `dsn`, bring the schema up to date (`apply`), disconnect; return what was applied.

    Raises:
        DatabaseUnavailable: the server cannot be reached or refuses us (one line).
    """
    try:
        conn = await asyncpg.connect(dsn, timeout=connect_timeout_s)
    except CONNECT_ERRORS as exc:
        raise cannot_connect(exc) from None
    try:
        return await apply(conn)
    finally:
        await conn.close()


async def apply(conn: asyncpg.Connection) -> list[int]:
    """Bring the hookd schema up to date on `conn`; return the versions applied now (maybe none).

    Everything runs in one transaction: a failing migration leaves the schema as it was.
    """
    applied_now: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        await conn.execute(
            """
            CREATE SCHEMA IF NOT EXISTS hookd;
            CREATE TABLE IF NOT EXISTS hookd.schema_migrations (
                version integer PRIMARY KEY,
                name text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            );
            """
        )
        done = {
            r["version"] for r in await conn.fetch("SELECT version FROM hookd.schema_migrations")
        }
        for mig in available():
            if mig.version in done:
                continue
            await conn.execute(mig.sql)
            await conn.execute(
                "INSERT INTO hookd.schema_migrations (version, name) VALUES ($1, $2)",
                mig.version,
                mig.name,
            )
            applied_now.append(mig.version)
    return applied_now


async def current_version(conn: asyncpg.Connection | PoolConnectionProxy) -> int | None:
    """Return the highest applied version, or None if the schema is not there."""
    exists = await conn.fetchval("SELECT to_regclass('hookd.schema_migrations') IS NOT NULL")
    if not exists:
        return None
    version: int | None = await conn.fetchval("SELECT max(version) FROM hookd.schema_migrations")
    return version


def latest_version() -> int:
    """The version the packaged migrations bring the schema to."""
    return available()[-1].version
