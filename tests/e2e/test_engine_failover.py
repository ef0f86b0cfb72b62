"""The engine survives a failover that leaves its database connections on a read-only standby.

What it proves: when hookd's connections end up on a server that no longer accepts writes (a
primary turned hot standby, which answers every write with SQLSTATE 25006,
read_only_sql_transaction), the daemon does not exit and does not log a traceback; it backs off,
and it drops those connections (the store expires its pool on 25006) instead of reusing them, so
it carries on as soon as a writable primary is reachable again for new connections, even though
its old connections to the standby are still open and answering.

The parts are real: a private PostgreSQL primary P (tests/support/pgserver.py, migrated), a hot
standby S made from it with `pg_basebackup -R` and streaming from it, a loopback TCP proxy
(tests/support/tcpproxy.py) in front of them that is the daemon's only way to the database (pool
and LISTEN connection alike: `database.listen_dsn` is left empty, so both use `--dsn`), `hookd run`
as a child process (tests/support/proc.py) and a recording loopback receiver.

1. The daemon delivers through the proxy to P: "idle", every delivery is done before the failover;
   "in_flight", the receiver answers after a second and the failover comes while every request is
   open, so their outcomes must be written after it (the outcome writer meets S too).
2. Failover: the proxy sends new connections to S and cuts the open ones, so the daemon reconnects
   to S (its LISTEN fails there, its reads work, its claims and outcome writes are refused). Events
   are published on P meanwhile; for READ_ONLY_HOLD_S none of them may reach the receiver, S's log
   must show refused writes (fewer than MAX_REFUSED_WRITES: it backs off), and the daemon must keep
   running.
3. The proxy sends new connections to P again and cuts nothing: the daemon's connection to S stays
   open. Every event must be delivered (seen by the receiver, every delivery 'delivered' on P)
   within RECOVERY_TIMEOUT_S, the daemon must close its connection to S, and exit 0 on SIGTERM.

The daemon runs with a pool of one connection (POOL_SIZE). asyncpg's pool opens connections
lazily (hookd uses min_size 0), so with a larger pool a connection first opened after the switch
back would reach P whatever the store does, and a daemon that keeps reusing its connections to S
could still get through by luck. With one, the only way back to P is the store dropping the
connection it has: with `Store._after_transient` made a no-op this test fails at step 3 (asyncpg
keeps a connection after a 25006, and its reset on release (`pg_advisory_unlock_all()`,
`CLOSE ALL`, `UNLISTEN *`, `RESET ALL`) succeeds on a hot standby, so nothing else replaces it).

Waits are bounded and driven by conditions, polled with short pauses where nothing notifies (the
servers' activity views and log). The only deliberate pause is READ_ONLY_HOLD_S: the scenario.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import asyncpg
import pytest

from support.daemon import add_endpoint
from support.pgserver import PgServer, hot_standby, private_postgres
from support.proc import DaemonProcess, write_config
from support.receiver import SLOW, Behaviour, Receiver
from support.tcpproxy import TcpProxy
from support.watch import alive_for, report, wait_for

POOL_SIZE = 1
"""The daemon's pool: one connection, so only dropping it leads back to P (module docstring)."""
BEFORE_EVENTS = 5
"""Sent through the proxy before the failover."""
IN_FLIGHT_ANSWER_S = 1.0
"""How long the receiver takes to answer in the "in_flight" case: longer than the failover takes
to begin (milliseconds), shorter than the read-only phase (READ_ONLY_HOLD_S and more)."""
DURING_EVENTS = 20
"""Published on P while the daemon's connections are on S."""
READ_ONLY_HOLD_S = 2.0
"""How long the daemon stays on S after its first refused write (the scenario, not a wait)."""
MAX_REFUSED_WRITES = 60
"""More writes refused by S than this during the hold means the daemon is not backing off (its
backoff starts at 0.05 s and doubles: about ten tries fit in the whole read-only phase)."""
RECOVERY_TIMEOUT_S = 15.0
"""From the switch back to P until everything is delivered: the claim loop's backoff (at most
5 s, ±50 % jitter) plus the deliveries themselves."""

_PUBLISH_MANY = (
    "SELECT hookd.publish('order.paid', jsonb_build_object('i', i, 'phase', $2::text))"
    " FROM generate_series(1, $1) i"
)
_POOL_BACKENDS = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE application_name = 'hookd' AND datname = current_database()"
)
"""The daemon's pool connections on the server asked (the listener's are 'hookd-listener')."""
_REFUSED_WRITE = re.compile(r"ERROR:\s+cannot execute \w+( \w+)* in a read-only transaction")
_DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


# -- helpers ---------------------------------------------------------------------------------------


async def _count(dsn: str, query: str) -> int | None:
    """One count on a fresh connection; None if the server did not answer."""
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except _DB_ERRORS:
        return None
    try:
        value = await conn.fetchval(query, timeout=5)
    except _DB_ERRORS:
        return None
    finally:
        conn.terminate()
    return int(value)


def _refused_writes(server: PgServer) -> int:
    """Writes the server refused as read-only, per its log (log_min_messages logs every ERROR)."""
    try:
        text = server.logfile.read_text(errors="replace")
    except OSError:
        return 0
    return sum(1 for line in text.splitlines() if _REFUSED_WRITE.search(line))


async def _publish(db: asyncpg.Connection, n: int, phase: str) -> set[str]:
    """Publish `n` events on P in one transaction; return their webhook-ids."""
    install_id = await db.fetchval("SELECT install_id FROM hookd.meta")
    rows = await db.fetch(_PUBLISH_MANY, n, phase)
    return {f"msg_{install_id}_{r[0]}" for r in rows}


def _upstream(server: PgServer) -> tuple[str, int]:
    return ("127.0.0.1", server.port)


# -- the test --------------------------------------------------------------------------------------


@pytest.mark.parametrize("when", ["idle", "in_flight"])
async def test_failover_to_a_read_only_standby_and_back(tmp_path: Path, when: str) -> None:
    answer: Behaviour = (SLOW, IN_FLIGHT_ANSWER_S) if when == "in_flight" else 204
    async with (
        private_postgres() as primary,
        hot_standby(primary) as standby,
        Receiver(default=answer) as rx,
        TcpProxy(_upstream(primary), connect_timeout_s=2.0) as proxy,
    ):
        await add_endpoint(primary.dsn, rx.url_for("/hook"))
        cfg = write_config(
            tmp_path / "hookd.toml",
            {"database": {"pool_size": POOL_SIZE, "connect_timeout_s": 2.0}},
        )
        db = await asyncpg.connect(primary.dsn, timeout=10)
        try:
            async with DaemonProcess(proxy.dsn_through(primary.dsn), cfg) as proc:
                await _run_scenario(proc, db, primary, standby, proxy, rx, when)
                proc.send(signal.SIGTERM)
                code = await proc.wait_exit(15)
                assert code == 0, f"exit status {code} after SIGTERM: {report(proc)}"
        finally:
            await db.close(timeout=5)
        assert "Traceback" not in proc.stderr, f"a traceback on stderr: {report(proc, 200)}"


async def _run_scenario(
    proc: DaemonProcess,
    db: asyncpg.Connection,
    primary: PgServer,
    standby: PgServer,
    proxy: TcpProxy,
    rx: Receiver,
    when: str,
) -> None:
    # 1. Normal operation, through the proxy to P.
    expected = await _publish(db, BEFORE_EVENTS, "before")

    async def delivered_all() -> bool:
        n = await db.fetchval("SELECT count(*) FROM hookd.deliveries WHERE state = 'delivered'")
        return bool(n == len(expected)) and expected <= {r.webhook_id for r in rx.requests}

    if when == "in_flight":
        await rx.wait_for(lambda r: r.in_flight >= BEFORE_EVENTS, timeout_s=10)
    else:
        await wait_for(proc, delivered_all, "the first events delivered", 10)

    # 2. Failover: new connections go to S, the open ones (pool and LISTEN) are reset.
    await standby.wait_replayed(primary)
    refused_before = _refused_writes(standby)
    proxy.retarget(_upstream(standby))
    cut = await proxy.cut()
    assert cut >= 2, f"only {cut} connection(s) through the proxy: pool and LISTEN expected"

    async def pool_on_standby_only() -> bool:
        on_p = await db.fetchval(_POOL_BACKENDS)
        on_s = await _count(standby.dsn, _POOL_BACKENDS)
        return on_p == 0 and on_s is not None and on_s >= 1

    await wait_for(proc, pool_on_standby_only, "the daemon's pool reconnected to S only", 10)
    during = await _publish(db, DURING_EVENTS, "during")
    expected |= during

    async def refused_on_standby() -> bool:
        return _refused_writes(standby) > refused_before

    await wait_for(proc, refused_on_standby, "S refusing a write of the daemon", 10)
    await alive_for(proc, READ_ONLY_HOLD_S, "while its connections were on the read-only S")
    refused = _refused_writes(standby) - refused_before
    assert refused <= MAX_REFUSED_WRITES, f"S refused {refused} writes: no backoff? {report(proc)}"
    early = during & {r.webhook_id for r in rx.requests}
    assert not early, f"{len(early)} events delivered while the daemon could not write"
    assert "database unavailable" in proc.stderr, f"no database error logged: {report(proc)}"

    # 3. P is reachable again for new connections; the daemon's connection to S stays open.
    async def still_on_standby() -> bool:
        on_s = await _count(standby.dsn, _POOL_BACKENDS)
        return proxy.active_to(_upstream(standby)) >= 1 and bool(on_s)

    await wait_for(proc, still_on_standby, "a live pool connection to S before switching", 10)
    proxy.retarget(_upstream(primary))
    try:
        await wait_for(
            proc, delivered_all, "every delivery 'delivered' on P", RECOVERY_TIMEOUT_S, pause_s=0.1
        )
    except AssertionError as exc:
        done = await db.fetchval("SELECT count(*) FROM hookd.deliveries WHERE state = 'delivered'")
        on_s = await _count(standby.dsn, _POOL_BACKENDS)
        raise AssertionError(
            f"{done} of {len(expected)} deliveries 'delivered'; the daemon's pool still has {on_s}"
            f" connection(s) on the read-only S; {exc}"
        ) from None
    missing = expected - {r.webhook_id for r in rx.requests}
    assert not missing, f"{len(missing)} events never reached the receiver"

    async def gone_from_standby() -> bool:
        return await _count(standby.dsn, _POOL_BACKENDS) == 0

    await wait_for(proc, gone_from_standby, "the daemon's pool connections to S closed", 10)
