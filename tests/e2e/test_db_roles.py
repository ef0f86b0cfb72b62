"""Database roles as the README sets them up: an application role that can only publish, the
daemon's role, and a role without grants, which gets one clear line instead of a traceback.

Real roles on the test cluster: `hookd migrate --app-role --daemon-role` grants as the schema
owner (the admin DSN), then the CLI and a daemon run as the roles themselves.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import orjson
import pytest
import pytest_asyncio

from hookd.errors import PermissionDenied
from hookd.store import Store

from support.daemon import wait_until
from support.proc import CliResult, DaemonProcess, run_cli, write_config
from support.receiver import Receiver

_numbers = itertools.count(1)
PASSWORD = "role-test-password"


def dsn_as(dsn: str, role: str) -> str:
    """`dsn` with its user (and password) replaced by `role`."""
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{quote(role, safe='')}:{PASSWORD}@{host}"))


@dataclass(frozen=True, slots=True)
class Roles:
    """Three LOGIN roles made for one test, and DSNs of the test's database as each of them."""

    app: str
    daemon: str
    nobody: str
    app_dsn: str
    daemon_dsn: str
    nobody_dsn: str


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@pytest_asyncio.fixture(loop_scope="session")
async def roles(pg_cluster: Any, dsn: str, db: asyncpg.Connection) -> AsyncIterator[Roles]:
    """Create the roles (no grants at all); drop them after the test."""
    n = f"{os.getpid()}_{next(_numbers)}"
    names = [f"hookd_app_{n}", f"hookd_daemon_{n}", f"hookd_nobody_{n}"]
    admin = await asyncpg.connect(pg_cluster.admin_dsn, timeout=10)
    try:
        for name in names:
            await admin.execute(f"CREATE ROLE {_ident(name)} LOGIN PASSWORD '{PASSWORD}'")
        yield Roles(*names, *(dsn_as(dsn, name) for name in names))
    finally:
        # Privileges granted in the test's database go with DROP OWNED there; then the roles.
        for name in names:
            await db.execute(f"DROP OWNED BY {_ident(name)}")
        for name in names:
            await admin.execute(f"DROP ROLE IF EXISTS {_ident(name)}")
        await admin.close()


def one_error_line(result: CliResult, *needles: str) -> str:
    """Exit 2, no traceback, and exactly one stderr line "hookd: error: ..." naming each needle."""
    assert result.returncode == 2, result.describe()
    assert "Traceback" not in result.stderr + result.stdout, result.describe()
    errors = [line for line in result.stderr.splitlines() if line.startswith("hookd: error: ")]
    assert len(errors) == 1, result.describe()
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in the error; {result.describe()}"
    return errors[0]


# -- a role without grants ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [("status",), ("endpoint", "list"), ("deliveries",), ("run",)],
    ids=lambda c: " ".join(c),
)
async def test_a_role_without_grants_gets_one_line_naming_it_and_the_fix(
    roles: Roles, tmp_path: Path, command: tuple[str, ...]
) -> None:
    extra = ("--config", str(write_config(tmp_path / "hookd.toml"))) if command == ("run",) else ()
    result = await run_cli(*command, "--dsn", roles.nobody_dsn, *extra, timeout_s=30)
    line = one_error_line(
        result,
        f'role "{roles.nobody}"',
        "USAGE on schema hookd",
        f"hookd migrate --daemon-role {roles.nobody}",
    )
    assert result.stdout == "" and result.stderr.splitlines() == [line], result.describe()


async def test_a_daemon_with_some_grants_missing_stops_at_start_with_one_line(
    roles: Roles, dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """Reading is not enough: the daemon claims (UPDATE) and writes attempts (INSERT)."""
    who = _ident(roles.nobody)
    await db.execute(f"GRANT USAGE ON SCHEMA hookd TO {who}")
    await db.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA hookd TO {who}")
    # A role named hookd finds schema hookd on its search_path ("$user"): names stay qualified.
    await db.execute(f"ALTER ROLE {who} SET search_path = hookd, public")
    cfg = write_config(tmp_path / "hookd.toml")
    result = await run_cli("run", "--dsn", roles.nobody_dsn, "--config", str(cfg), timeout_s=30)
    one_error_line(result, f'role "{roles.nobody}"', "INSERT", "on table hookd.", "--daemon-role")


async def test_migrate_as_a_role_without_grants_gets_one_line(roles: Roles) -> None:
    result = await run_cli("migrate", "--dsn", roles.nobody_dsn, timeout_s=30)
    one_error_line(result, f'role "{roles.nobody}"', "hookd migrate")


async def test_the_store_turns_a_refused_statement_into_one_line(
    roles: Roles, db: asyncpg.Connection
) -> None:
    """At the store boundary, whatever the statement: SQLSTATE 42501 becomes PermissionDenied
    naming the role and the fix, with the driver's error kept as the cause."""
    await db.execute(f"GRANT USAGE ON SCHEMA hookd TO {_ident(roles.nobody)}")
    pool = await asyncpg.create_pool(roles.nobody_dsn, min_size=1, max_size=1)
    assert pool is not None
    try:
        with pytest.raises(PermissionDenied) as info:
            await Store(pool).endpoints()
    finally:
        await pool.close()
    assert str(info.value).startswith(
        f'role "{roles.nobody}" lacks a privilege (permission denied for table endpoints): as'
        f" the owner of the hookd schema, run `hookd migrate --daemon-role {roles.nobody}`"
    ), str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value.__cause__, asyncpg.InsufficientPrivilegeError)


# -- migrate --app-role / --daemon-role ----------------------------------------------------------


async def test_app_role_can_only_publish_and_the_daemon_role_runs_and_delivers(
    roles: Roles, dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    granted = await run_cli(
        "migrate", "--dsn", dsn, "--app-role", roles.app, "--daemon-role", roles.daemon
    )
    assert granted.returncode == 0, granted.describe()
    assert f"granted {roles.app}" in granted.stdout, granted.describe()
    assert f"granted {roles.daemon}" in granted.stdout, granted.describe()

    cfg = write_config(tmp_path / "hookd.toml")
    async with Receiver() as rx:
        # The daemon's role runs the CLI: add an endpoint, list it.
        added = await run_cli(
            "endpoint", "add", "--dsn", roles.daemon_dsn, "--config", str(cfg),
            "--url", rx.url_for("/hook"), "--json",
        )  # fmt: skip
        assert added.returncode == 0, added.describe()
        ep_id = orjson.loads(added.stdout)["id"]
        rx.secrets["/hook"] = orjson.loads(added.stdout)["secret"]
        listed = await run_cli("endpoint", "list", "--dsn", roles.daemon_dsn)
        assert listed.returncode == 0 and rx.url_for("/hook") in listed.stdout, listed.describe()

        app = await asyncpg.connect(roles.app_dsn, timeout=10)
        try:
            # Publishing inside the application's own transaction, next to its own change.
            await app.execute("CREATE TEMP TABLE orders (id int, status text)")
            async with app.transaction():
                await app.execute("INSERT INTO orders VALUES (1, 'paid')")
                event_id = await app.fetchval(
                    "SELECT hookd.publish(event_type => 'order.paid', payload => '{\"id\": 1}')"
                )
            assert isinstance(event_id, int)
            # A rolled-back transaction leaves nothing behind.
            tx = app.transaction()
            await tx.start()
            await app.fetchval("SELECT hookd.publish('order.paid', '{}'::jsonb)")
            await tx.rollback()
            # ... and that is all the application role may do.
            for query in (
                "SELECT count(*) FROM hookd.endpoints",
                "SELECT count(*) FROM hookd.events",
                "INSERT INTO hookd.events (event_type, payload) VALUES ('x', '{}')",
                "UPDATE hookd.deliveries SET state = 'failed'",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await app.execute(query)
        finally:
            await app.close()
        assert await db.fetchval("SELECT array_agg(id) FROM hookd.events") == [event_id]

        # The daemon's role runs the daemon, which claims, delivers and logs the attempt.
        async with DaemonProcess(roles.daemon_dsn, cfg):
            await rx.wait_for(1, timeout_s=15)
            await wait_until(
                db,
                "SELECT state = 'delivered' FROM hookd.deliveries WHERE endpoint_id = $1",
                ep_id,
            )
        status = await run_cli("status", "--dsn", roles.daemon_dsn)
        assert status.returncode == 0, status.describe()
    assert [r.verified for r in rx.requests] == [True], "signed with the endpoint's secret"
    assert await db.fetchval("SELECT count(*) FROM hookd.attempts") == 1


async def test_print_grants_shows_the_sql_without_running_it(
    roles: Roles, dsn: str, db: asyncpg.Connection
) -> None:
    printed = await run_cli(
        "migrate", "--print-grants", "--app-role", roles.app, "--daemon-role", roles.daemon
    )
    assert printed.returncode == 0, printed.describe()
    sql = printed.stdout
    assert (
        f'GRANT EXECUTE ON FUNCTION hookd.publish(text, jsonb, text, text, text) TO "{roles.app}"'
        in (sql)
    )
    assert f'TO "{roles.daemon}"' in sql
    # Nothing ran: the roles still have no access.
    assert not await db.fetchval("SELECT has_schema_privilege($1, 'hookd', 'USAGE')", roles.app)
    # What it printed is what `--app-role` grants: run it, and the app role can publish.
    await db.execute(sql)
    app = await asyncpg.connect(roles.app_dsn, timeout=10)
    try:
        assert await app.fetchval("SELECT hookd.publish('order.paid', '{}'::jsonb)")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await app.fetch("SELECT * FROM hookd.endpoints")
    finally:
        await app.close()
    assert await db.fetchval(
        "SELECT has_table_privilege($1, 'hookd.deliveries', 'UPDATE')", roles.daemon
    )


async def test_print_grants_needs_a_role() -> None:
    result = await run_cli("migrate", "--print-grants")
    one_error_line(result, "--app-role", "--daemon-role")


async def test_granting_to_a_role_that_does_not_exist_says_so(dsn: str) -> None:
    result = await run_cli("migrate", "--dsn", dsn, "--app-role", "no_such_role_here")
    one_error_line(result, "--app-role", "no_such_role_here", "does not exist")


async def test_grants_revoked_while_the_daemon_runs_end_it_with_one_line(
    roles: Roles, dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """The start-up check cannot see a REVOKE that comes later: the first claim that is refused
    ends the daemon with the same one line (exit 2), not a task group's traceback. Its leased
    deliveries (none here) would be retried after their lease, by a daemon with the grants."""
    granted = await run_cli("migrate", "--dsn", dsn, "--daemon-role", roles.daemon)
    assert granted.returncode == 0, granted.describe()
    cfg = write_config(tmp_path / "hookd.toml")
    async with DaemonProcess(roles.daemon_dsn, cfg) as daemon:
        await db.execute(f"REVOKE UPDATE ON hookd.events FROM {_ident(roles.daemon)}")
        await db.execute("SELECT hookd.publish('order.paid', '{}'::jsonb)")
        status = await daemon.wait_exit(timeout_s=20)
    assert status == 2, daemon.stderr
    assert "Traceback" not in daemon.stderr, daemon.stderr
    errors = [line for line in daemon.lines if line.startswith("hookd: error: ")]
    assert len(errors) == 1, daemon.stderr
    assert f'role "{roles.daemon}"' in errors[0] and "--daemon-role" in errors[0], errors[0]


async def test_the_daemon_role_switches_strict_mode_and_the_app_role_cannot(
    roles: Roles, dsn: str
) -> None:
    """Only a table's owner may create or drop its triggers: strict mode is switched through a
    function that runs as the schema owner, which the daemon role may call and the application
    role (only hookd.publish) may not. Publishing as the application role then refuses unknown
    types."""
    granted = await run_cli(
        "migrate", "--dsn", dsn, "--app-role", roles.app, "--daemon-role", roles.daemon
    )
    assert granted.returncode == 0, granted.describe()
    added = await run_cli("event-type", "add", "order.paid", "--dsn", roles.daemon_dsn)
    assert added.returncode == 0, added.describe()
    on = await run_cli("event-type", "strict", "on", "--dsn", roles.daemon_dsn)
    assert on.returncode == 0 and "strict mode on" in on.stdout, on.describe()
    app = await asyncpg.connect(roles.app_dsn, timeout=10)
    try:
        await app.fetchval("SELECT hookd.publish('order.paid', '{}'::jsonb)")
        with pytest.raises(asyncpg.PostgresError, match=r"unknown event type 'order\.piad'"):
            await app.fetchval("SELECT hookd.publish('order.piad', '{}'::jsonb)")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await app.fetchval("SELECT hookd.set_strict_event_types(false)")
    finally:
        await app.close()
    off = await run_cli("event-type", "strict", "off", "--dsn", roles.daemon_dsn)
    assert off.returncode == 0 and "strict mode off" in off.stdout, off.describe()


async def test_an_unknown_role_or_database_is_one_line_naming_database_dsn(
    dsn: str, tmp_path: Path
) -> None:
    """SQLSTATE 28000 (no such role) and 3D000 (no such database), for the CLI and `hookd run`."""
    no_role = dsn_as(dsn, "nosuch")
    parts = urlsplit(dsn)
    no_db = urlunsplit(parts._replace(path="/no_such_database_here"))
    config = str(write_config(tmp_path / "hookd.toml"))
    for bad, needle in ((no_role, 'role "nosuch" does not exist'),
                        (no_db, 'database "no_such_database_here" does not exist')):  # fmt: skip
        for args in (("status",), ("deliveries",), ("migrate",), ("run", "--config", config)):
            result = await run_cli(*args, "--dsn", bad, timeout_s=20)
            one_error_line(result, needle, "(database.dsn)")
