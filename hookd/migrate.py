"""Versioned schema migrations: `hookd/sql/NNN_name.sql`, applied in order, recorded, idempotent;
and the grants of the two roles hookd knows (see README.md, "Database roles").

Two concurrent runs are safe: each takes the same transaction-level advisory lock before it looks at
what is applied, so the second waits and then finds nothing left to do.

Roles: the *application role* may only call `hookd.publish` (USAGE on the schema, EXECUTE on the
function, which runs as its owner: migration 007); the *daemon role* gets what `hookd run` and the
CLI need (`daemon_grants`). `missing_privileges` checks the daemon role's set, so a role without
them is told so in one line at start-up instead of failing on its first claim.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from hookd.errors import DatabaseUnavailable, HookdError, PermissionDenied

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


REFUSED_LOGIN_STATES = frozenset({"28000", "28P01", "3D000"})
"""SQLSTATEs of a login the server refuses for good: invalid_authorization_specification (no such
role, or pg_hba.conf refuses it), invalid_password, invalid_catalog_name (no such database)."""


def refused_login(exc: BaseException) -> bool:
    """Whether `exc` is the server refusing the login itself (see REFUSED_LOGIN_STATES)."""
    return isinstance(exc, asyncpg.PostgresError) and exc.sqlstate in REFUSED_LOGIN_STATES


def cannot_connect(exc: BaseException) -> DatabaseUnavailable:
    """The one-line error for a failed connection attempt (no driver traceback); a refused login
    (no such role or database, a wrong password) names `database.dsn`, the setting to fix."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if refused_login(exc):
        return DatabaseUnavailable(f"cannot connect to the database: {text} (database.dsn)")
    return DatabaseUnavailable(f"cannot connect to the database: {text}")


INSUFFICIENT_PRIVILEGE = "42501"
"""SQLSTATE insufficient_privilege: the role may not do what a statement asks."""

_PUBLISH = "hookd.publish(text, jsonb, text, text, text)"


def _ident(name: str) -> str:
    """`name` as a quoted SQL identifier (taken exactly: case and all)."""
    return '"' + name.replace('"', '""') + '"'


def app_grants(role: str) -> list[str]:
    """The GRANTs for an application role: it may call `hookd.publish` and nothing else.

    No table privilege: publish runs as its owner (SECURITY DEFINER, migration 007).
    """
    who = _ident(role)
    return [
        f"GRANT USAGE ON SCHEMA hookd TO {who}",
        f"GRANT EXECUTE ON FUNCTION {_PUBLISH} TO {who}",
    ]


def daemon_grants(role: str) -> list[str]:
    """The GRANTs for the daemon's role: what `hookd run` and the CLI need, on every hookd table,
    sequence and function that exists now (run them again after an upgrade: `hookd migrate
    --daemon-role ROLE` does)."""
    who = _ident(role)
    return [
        f"GRANT USAGE ON SCHEMA hookd TO {who}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA hookd TO {who}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA hookd TO {who}",
        f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA hookd TO {who}",
    ]


def grants_sql(app_role: str | None, daemon_role: str | None) -> str:
    """The GRANT statements for the given roles as one SQL script (`--print-grants`), to run as
    the owner of the hookd schema after the migrations.

    Raises:
        HookdError: neither role given.
    """
    if not app_role and not daemon_role:
        raise HookdError("--print-grants: give --app-role ROLE, --daemon-role ROLE, or both")
    parts = [
        f"-- hookd schema version {latest_version()}: run as the owner of the hookd schema,"
        " after its migrations"
    ]
    if app_role:
        parts.append(f"-- application role {app_role}: may only call hookd.publish")
        parts.extend(f"{g};" for g in app_grants(app_role))
    if daemon_role:
        parts.append(f"-- daemon role {daemon_role}: hookd run and the CLI")
        parts.extend(f"{g};" for g in daemon_grants(daemon_role))
    return "\n".join(parts) + "\n"


def denied(role: str, what: str) -> PermissionDenied:
    """The one-line error for a role that lacks `what` (e.g. "USAGE on schema hookd")."""
    r = shlex.quote(role)
    return PermissionDenied(
        f'role "{role}" lacks {what}: as the owner of the hookd schema, run `hookd migrate '
        f"--daemon-role {r}`, or apply what `hookd migrate --print-grants --daemon-role {r}` prints"
    )


_MISSING = """
SELECT current_user::text AS role, n.oid IS NOT NULL AS schema_exists, array(
    SELECT m.what FROM (
        SELECT 0 AS o, '' AS obj, 'USAGE on schema hookd' AS what
        WHERE NOT has_schema_privilege(n.oid, 'USAGE')
        UNION ALL
        SELECT 1, format('%I.%I', n.nspname, c.relname),
               string_agg(p.priv, ', ' ORDER BY p.i) || ' on table '
                   || format('%I.%I', n.nspname, c.relname)
        FROM pg_class c
        CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE'])
            WITH ORDINALITY AS p (priv, i)
        WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'p')
          -- Partitions are reached through their parents (whose privileges count), except the
          -- open deliveries, which fan-out inserts into by name.
          AND (NOT c.relispartition OR c.relname = 'deliveries_open')
          AND NOT has_table_privilege(c.oid, p.priv)
        GROUP BY c.oid
        UNION ALL
        SELECT 2, f.oid::regprocedure::text, 'EXECUTE on function '
            || format('%I.%I(%s)', n.nspname, f.proname, pg_get_function_identity_arguments(f.oid))
        FROM pg_proc f
        WHERE f.pronamespace = n.oid AND NOT has_function_privilege(f.oid, 'EXECUTE')
    ) m ORDER BY m.o, m.obj
) AS missing
FROM (SELECT 1) one LEFT JOIN pg_namespace n ON n.nspname = 'hookd'
"""


async def missing_privileges(
    conn: asyncpg.Connection | PoolConnectionProxy,
) -> PermissionDenied | None:
    """The error for a role that lacks part of the daemon role's privileges (`daemon_grants`),
    naming the first thing missing; None if it has them all or there is no hookd schema yet.

    Checked: USAGE on the schema, SELECT/INSERT/UPDATE/DELETE on every table (of the
    partitions only `deliveries_open`, which fan-out names; the day partitions retention makes are
    reached through their parents), EXECUTE on every function. Not the sequences: identity columns draw their values without a privilege check.
    Reads only the catalogs, which every role may read.
    """
    row = await conn.fetchrow(_MISSING)
    assert row is not None
    missing: list[str] = list(row["missing"]) if row["schema_exists"] else []
    if not missing:
        return None
    more = f" (and {len(missing) - 1} more missing)" if len(missing) > 1 else ""
    return denied(row["role"], missing[0] + more)


async def apply_to(
    dsn: str,
    *,
    connect_timeout_s: float,
    app_role: str | None = None,
    daemon_role: str | None = None,
) -> list[int]:
    """Connect to `dsn`, bring the schema up to date (`apply`), grant the given roles their
    privileges (`app_grants`, `daemon_grants`) in the same transaction, disconnect; return the
    versions applied.

    Raises:
        DatabaseUnavailable: the server cannot be reached or refuses us (one line).
        PermissionDenied: the connecting role may not create or change the schema.
        HookdError: a role to grant to does not exist.
    """
    try:
        # statement_cache_size 0: no named prepared statements, so `hookd migrate` also works
        # through a pooler in transaction mode (each transaction may get another server session).
        conn = await asyncpg.connect(dsn, timeout=connect_timeout_s, statement_cache_size=0)
    except CONNECT_ERRORS as exc:
        raise cannot_connect(exc) from None
    try:
        for flag, role in (("--app-role", app_role), ("--daemon-role", daemon_role)):
            if role and not await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", role
            ):
                raise HookdError(
                    f'{flag}: role "{role}" does not exist (create it first, e.g. '
                    f"CREATE ROLE {_ident(role)} LOGIN PASSWORD '...')"
                )
        try:
            return await apply(conn, app_role=app_role, daemon_role=daemon_role)
        except asyncpg.PostgresError as exc:
            if exc.sqlstate != INSUFFICIENT_PRIVILEGE:
                raise
            role = await conn.fetchval("SELECT current_user::text")
            raise PermissionDenied(
                f'role "{role}" may not change the hookd schema or grant on it ({exc}): run '
                "`hookd migrate` as the role that owns the schema, or one with CREATE on the "
                "database"
            ) from None
    finally:
        await conn.close()


async def apply(
    conn: asyncpg.Connection,
    *,
    app_role: str | None = None,
    daemon_role: str | None = None,
    target: int | None = None,
) -> list[int]:
    """Bring the hookd schema up to date on `conn`; return the versions applied now (maybe none).
    Then grant `app_role` and `daemon_role` (when given) their privileges.

    `target` stops at that version: only the migrations numbered up to it are applied (None: all
    of them). It never goes back: a schema already past `target` is left as it is. For building
    the schema of an older release, e.g. the upgrade tests' fixture (tests/fixtures/).

    Everything runs in one transaction: a failing migration or grant leaves the schema as it was.

    Raises:
        ValueError: `target` is not the version of a packaged migration.
    """
    if target is not None and target not in {m.version for m in available()}:
        raise ValueError(f"no migration with version {target}")
    applied_now: list[int] = []
    grants: Sequence[str] = [
        *(app_grants(app_role) if app_role else ()),
        *(daemon_grants(daemon_role) if daemon_role else ()),
    ]
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
            if mig.version in done or (target is not None and mig.version > target):
                continue
            await conn.execute(mig.sql)
            await conn.execute(
                "INSERT INTO hookd.schema_migrations (version, name) VALUES ($1, $2)",
                mig.version,
                mig.name,
            )
            applied_now.append(mig.version)
        for grant in grants:
            await conn.execute(grant)
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
