"""hookd behind a real PgBouncer (Debian's `pgbouncer`), and its refusal of a LISTEN through one.

The cluster is a private one (tests/support/pgserver.py) and PgBouncer is started in front of it
by tests/support/pgbouncer.py, with fewer server connections than hookd's pool, so hookd's
connections really do share server sessions. hookd runs as a child process, its pool DSN through
PgBouncer in transaction mode (`database.pooler = "transaction"`) and its LISTEN connection
(`database.listen_dsn`) straight to PostgreSQL, with a one-minute polling fallback: a burst that is
delivered within seconds was woken by a NOTIFY.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from hookd.errors import ConfigError
from hookd.listener import AWAKE_LOCK_KEY
from hookd.store import UNDECLARED_POOLER, Store

from support.daemon import add_endpoint, wait_until
from support.pgbouncer import pgbouncer_binary, pgbouncer_for
from support.pgserver import DBNAME, PgServer, private_postgres
from support.proc import DaemonProcess, Ledger, SlowReceiver, run_cli, write_config

pytestmark = pytest.mark.skipif(
    pgbouncer_binary() is None,
    reason="pgbouncer is not installed (scripts/ensure-tools installs it as root)",
)

BURSTS = 4
EVENTS_PER_BURST = 75
PATHS = ("/one", "/two")
POLL_INTERVAL_S = 60.0
"""The polling fallback, longer than the test: deliveries within seconds came from wake-ups."""
BURST_DEADLINE_S = 10.0

_PUBLISH = (
    "SELECT hookd.publish('order.paid', jsonb_build_object('burst', $1::int, 'i', i))"
    " FROM generate_series(1, $2) i"
)
_NO_SECRET_KEY = "no secret key configured"
"""The one warning expected from these daemons (the test endpoints' secrets are not encrypted)."""


@pytest.fixture
async def cluster() -> AsyncIterator[PgServer]:
    async with private_postgres() as server:
        yield server


def _problem_lines(lines: list[str]) -> list[str]:
    return [
        line
        for line in lines
        if ("WARNING" in line or "ERROR" in line or "Traceback" in line)
        and _NO_SECRET_KEY not in line
    ]


async def _awake_lock_holders(conn: asyncpg.Connection) -> list[str]:
    """application_name of every session holding the awake lock (AWAKE_LOCK_KEY) now."""
    rows = await conn.fetch(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
        " WHERE l.locktype = 'advisory' AND l.granted"
        " AND ((l.classid::bigint << 32) | l.objid::bigint) = $1",
        AWAKE_LOCK_KEY,
    )
    return [r["application_name"] for r in rows]


async def test_behind_pgbouncer_transaction_mode_delivers_every_delivery_once(
    cluster: PgServer, tmp_path: Path
) -> None:
    ledger = Ledger()
    async with (
        pgbouncer_for(cluster, pool_mode="transaction", pool_size=2) as bouncer,
        SlowReceiver(ledger, delay_s=0.0) as rx_one,
        SlowReceiver(ledger, delay_s=0.0) as rx_two,
    ):
        for path, rx in zip(PATHS, (rx_one, rx_two), strict=True):
            await add_endpoint(cluster.dsn, rx.url_for(path))
        config_path = write_config(
            tmp_path / "hookd.toml",
            {
                "database": {"pooler": "transaction", "listen_dsn": cluster.dsn, "pool_size": 4},
                # A linger long enough to see the awake lock held between two bursts.
                "daemon": {"poll_interval_s": POLL_INTERVAL_S, "idle_linger_s": 1.0},
            },
        )
        db = await asyncpg.connect(cluster.dsn)
        # The application publishes through the pooler too, as it would behind one.
        app = await asyncpg.connect(bouncer.dsn_for(DBNAME), statement_cache_size=0)
        try:
            async with DaemonProcess(bouncer.dsn_for(DBNAME), config_path) as daemon:
                holders: list[str] = []
                for burst in range(BURSTS):
                    started = time.monotonic()
                    await app.execute(_PUBLISH, burst, EVENTS_PER_BURST)
                    await wait_until(
                        db,
                        "SELECT count(*) = $1 FROM hookd.deliveries WHERE state = 'delivered'",
                        (burst + 1) * EVENTS_PER_BURST * len(PATHS),
                        timeout_s=BURST_DEADLINE_S,
                    )
                    assert time.monotonic() - started < BURST_DEADLINE_S
                    holders = holders or await _awake_lock_holders(db)
                    if burst < BURSTS - 1:
                        # Let the daemon fall asleep (linger over), so the next burst needs a
                        # NOTIFY through the direct LISTEN connection.
                        await wait_until(
                            db, "SELECT count(*) = 0 FROM pg_locks WHERE locktype = 'advisory'"
                        )
                install_id = await db.fetchval("SELECT install_id FROM hookd.meta")
                event_ids = await db.fetchval("SELECT array_agg(id) FROM hookd.events")
                # Outcomes are written in batches: wait until the receivers' view is complete.
                await ledger.wait_until(
                    lambda: len(ledger.hits) >= len(event_ids) * len(PATHS), timeout_s=10
                )
                problems = _problem_lines(daemon.lines)
        finally:
            await app.close()
            await db.close()

    expected = {(p, f"msg_{install_id}_{e}") for e in event_ids for p in PATHS}
    counts = ledger.pairs()
    assert len(event_ids) == BURSTS * EVENTS_PER_BURST
    assert set(counts) == expected
    assert all(n == 1 for n in counts.values()), {k: n for k, n in counts.items() if n > 1}
    assert len(ledger.hits) == len(expected)
    # The awake lock lives on the direct LISTEN connection, not in a pooled session.
    assert holders == ["hookd-listener"], holders
    assert not problems, "\n".join(problems)


async def _refusal(dsn: str, config_path: Path) -> str:
    """Run `hookd run` expecting a start-up refusal: exit 2 and one line on stderr; return it."""
    result = await run_cli("run", "--dsn", dsn, "--config", str(config_path), timeout_s=30)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.describe()
    assert len(lines) == 1 or _NO_SECRET_KEY in lines[0], result.describe()
    return lines[-1]


async def test_listen_through_a_transaction_pooler_is_refused_naming_the_setting(
    cluster: PgServer, tmp_path: Path
) -> None:
    async with pgbouncer_for(cluster, pool_mode="transaction") as bouncer:
        through = bouncer.dsn_for(DBNAME)

        # Everything through the pooler, configured as if PostgreSQL were there.
        line = await _refusal(through, write_config(tmp_path / "plain.toml"))
        assert line.startswith("hookd: error: database.dsn: goes through a pooler in transaction")
        assert 'database.pooler = "transaction"' in line and "database.listen_dsn" in line

        # Pooler mode, but the LISTEN connection through the pooler as well.
        pooled_listen = write_config(
            tmp_path / "listen.toml",
            {"database": {"pooler": "transaction", "listen_dsn": through}},
        )
        line = await _refusal(through, pooled_listen)
        assert line.startswith(
            "hookd: error: database.listen_dsn: goes through a pooler in transaction mode"
        )

        # The pool through the pooler without saying so, LISTEN direct.
        unsaid = write_config(tmp_path / "unsaid.toml", {"database": {"listen_dsn": cluster.dsn}})
        line = await _refusal(through, unsaid)
        assert line == (
            "hookd: error: database.dsn: goes through a pooler in transaction mode (its "
            'connections share server sessions): set database.pooler = "transaction"'
        )

        # Pooler mode without a LISTEN DSN at all: refused by the configuration check.
        no_listen = write_config(tmp_path / "none.toml", {"database": {"pooler": "transaction"}})
        line = await _refusal(through, no_listen)
        assert line.startswith("hookd: error: database.listen_dsn: must be set when")


async def test_an_undeclared_transaction_pooler_is_named_by_the_store(cluster: PgServer) -> None:
    """A CLI command through the pooler without `database.pooler` (the daemon's start-up probe is
    not there) gets one line naming the setting, not asyncpg's traceback: its cached statement
    was prepared in a server session that another client holds when it is used again."""
    async with pgbouncer_for(cluster, pool_mode="transaction", pool_size=2) as bouncer:
        through = bouncer.dsn_for(DBNAME)
        for pooler in ("transaction", "none"):
            store = await Store.open(
                through, pool_size=1, connect_timeout_s=5.0, command_timeout_s=10.0, pooler=pooler
            )
            other = await asyncpg.connect(through, statement_cache_size=0)
            try:
                await store.status()
                # PgBouncer lends its most recently used server first: the session where
                # status_counts was just prepared goes to `other`, for as long as it holds it.
                async with other.transaction():
                    await other.fetchval("SELECT 1")
                    if pooler == "transaction":
                        await store.status()
                    else:
                        with pytest.raises(ConfigError) as caught:
                            await store.status()
                        assert str(caught.value) == UNDECLARED_POOLER
            finally:
                await other.close()
                await store.close()
    assert UNDECLARED_POOLER.startswith("database.dsn: goes through a pooler in transaction mode")
    assert 'set database.pooler = "transaction"' in UNDECLARED_POOLER


async def test_migrate_through_a_transaction_pooler(cluster: PgServer) -> None:
    """`hookd migrate` works through the pooler, on a new database and again on a migrated one."""
    admin = await asyncpg.connect(cluster.dsn_for("postgres"))
    try:
        await admin.execute("CREATE DATABASE fresh")
    finally:
        await admin.close()
    async with pgbouncer_for(cluster, pool_mode="transaction", pool_size=2) as bouncer:
        first = await run_cli("migrate", "--dsn", bouncer.dsn_for("fresh"))
        again = await run_cli("migrate", "--dsn", bouncer.dsn_for("fresh"))
    assert first.returncode == 0 and "schema at version" in first.stdout, first.describe()
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.describe()


async def test_a_session_mode_pooler_is_not_refused(cluster: PgServer, tmp_path: Path) -> None:
    """No false alarm: through PgBouncer in session mode every connection keeps its session, so
    hookd runs there with the plain settings, LISTEN included, and wakes up on a NOTIFY."""
    ledger = Ledger()
    async with (
        pgbouncer_for(cluster, pool_mode="session", pool_size=10) as bouncer,
        SlowReceiver(ledger, delay_s=0.0) as rx,
    ):
        await add_endpoint(cluster.dsn, rx.url_for("/one"))
        config_path = write_config(
            tmp_path / "hookd.toml", {"daemon": {"poll_interval_s": POLL_INTERVAL_S}}
        )
        db = await asyncpg.connect(cluster.dsn)
        try:
            async with DaemonProcess(bouncer.dsn_for(DBNAME), config_path) as daemon:
                await db.execute(_PUBLISH, 0, 20)
                await ledger.wait_until(lambda: len(ledger.hits) >= 20, timeout_s=BURST_DEADLINE_S)
                problems = _problem_lines(daemon.lines)
        finally:
            await db.close()
    assert not problems, "\n".join(problems)
