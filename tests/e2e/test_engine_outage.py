"""The engine survives its database going away and its connections being killed, and stops when told.

Every test runs `hookd run` as a real child process (tests/support/proc.py), or the real `Daemon`
in the test's loop, against real PostgreSQL and real loopback receivers, and judges only what can
be seen from outside: the exit status and stderr, /readyz on the admin server, the rows in
`hookd.deliveries`, and the requests the receiver got.

- test_database_outage_with_deliveries_in_flight: a private PostgreSQL (tests/support/pgserver.py)
  is stopped (`pg_ctl stop -m fast`) for OUTAGE_S while tens of requests are open at a receiver
  that answers after 1 s, then started again on the same port. The daemon rides it out: it never
  exits, logs no traceback, /readyz answers 503 during the outage and 200 after, and every event is
  delivered (each webhook-id reaches the receiver, every delivery ends 'delivered') within a bound.
- test_pool_backends_killed_while_the_claim_loop_goes_idle: the daemon's pool backends
  (application_name 'hookd') are killed with pg_terminate_backend STORM_ROUNDS times while a
  trickle of events makes the claim loop alternate between claiming, sending, going idle (when it
  asks the database whether work is left before it sleeps) and sleeping. The daemon keeps running,
  logs no traceback, delivers everything, and exits 0 on SIGTERM.
- test_sigterm_while_listen_cannot_connect: `database.listen_dsn` leads to a loopback port that
  resets every connection ("refused") or swallows every byte ("blackhole"); the pool DSN works.
  The daemon cannot become ready, yet SIGTERM makes it exit within 5 s, status 0, no traceback.
- test_stop_before_ready_returns: the same for the in-process `Daemon`: `stop()` before it is
  ready makes `run()` return within 5 s.

Waits are bounded and driven by conditions (polled with short pauses where nothing notifies). The
only deliberate pauses are the outage's length and the storm's pacing: they are the scenario.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from hookd.daemon import Daemon

from support.daemon import add_endpoint, make_config
from support.pgserver import PgServer, free_port_below_ephemeral, private_postgres
from support.proc import READY_LINE, DaemonProcess, write_config
from support.receiver import SLOW, Receiver
from support.tcpproxy import TcpProxy
from support.watch import alive_for, assert_no_traceback, report, wait_for

_PUBLISH_MANY = (
    "SELECT hookd.publish('order.paid', jsonb_build_object('i', i)) FROM generate_series(1, $1) i"
)
_DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


# -- helpers ---------------------------------------------------------------------------------------


async def _readyz(session: aiohttp.ClientSession, port: int) -> int | None:
    """The status of GET /readyz on the admin server, or None if nothing answered."""
    try:
        async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
            await resp.read()
            return resp.status
    except (aiohttp.ClientError, OSError, TimeoutError):
        return None


async def _wait_readyz(proc: DaemonProcess, port: int, want: int, timeout_s: float) -> None:
    """Poll /readyz until it answers `want` (bounded; fails at once if the daemon exits)."""
    seen: list[int | None] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:

        async def check() -> bool:
            status = await _readyz(session, port)
            if not seen or seen[-1] != status:
                seen.append(status)
            return status == want

        try:
            await wait_for(proc, check, f"/readyz answering {want}", timeout_s)
        except AssertionError as exc:
            raise AssertionError(f"/readyz answered, in order: {seen}; {exc}") from None


async def _fetchval(dsn: str, query: str) -> object:
    """One query on a fresh connection (the server may have restarted); None if it failed."""
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except _DB_ERRORS:
        return None
    try:
        return await conn.fetchval(query, timeout=5)
    except _DB_ERRORS:
        return None
    finally:
        conn.terminate()


async def _webhook_ids(db: asyncpg.Connection) -> set[str]:
    """The webhook-id of every published event (what the receiver must see at least once)."""
    install_id = await db.fetchval("SELECT install_id FROM hookd.meta")
    return {f"msg_{install_id}_{r['id']}" for r in await db.fetch("SELECT id FROM hookd.events")}


async def _sigterm_exits_0(proc: DaemonProcess, timeout_s: float = 15.0) -> None:
    proc.send(signal.SIGTERM)
    code = await proc.wait_exit(timeout_s)
    assert code == 0, f"exit status {code} after SIGTERM: {report(proc)}"


# -- 1. the database goes away with deliveries in flight -------------------------------------------

OUTAGE_S = 8.0
"""How long PostgreSQL stays down."""
OUTAGE_EVENTS = 120
"""With the default per-endpoint limit (32 requests open at once) and answers after 1 s, about 30
requests are open when PostgreSQL stops, and the backlog takes a few seconds more once it is back."""


async def test_database_outage_with_deliveries_in_flight(tmp_path: Path) -> None:
    admin_port = free_port_below_ephemeral()
    async with private_postgres() as pg, Receiver(default=(SLOW, 1.0)) as rx:
        await add_endpoint(pg.dsn, rx.url_for("/hook"))
        db = await asyncpg.connect(pg.dsn, timeout=10)
        try:
            await db.execute(_PUBLISH_MANY, OUTAGE_EVENTS)
            expected = await _webhook_ids(db)
        finally:
            await db.close(timeout=5)
        assert len(expected) == OUTAGE_EVENTS
        cfg = write_config(tmp_path / "hookd.toml", {"admin": {"port": admin_port}})
        async with DaemonProcess(pg.dsn, cfg) as proc:
            await _wait_readyz(proc, admin_port, 200, 10)
            await rx.wait_for(lambda r: r.in_flight >= 20, timeout_s=15)

            await _outage(pg, proc, admin_port)
            # The outage is logged once, each cause said once (not "database unavailable
            # (database unavailable (...))").
            assert "database unavailable (" in proc.stderr, proc.stderr[-3000:]
            assert "unavailable (database unavailable" not in proc.stderr, proc.stderr[-3000:]

            await _wait_readyz(proc, admin_port, 200, 30)

            async def all_delivered() -> bool:
                done = await _fetchval(
                    pg.dsn, "SELECT count(*) FROM hookd.deliveries WHERE state = 'delivered'"
                )
                return done == OUTAGE_EVENTS

            await wait_for(proc, all_delivered, "every delivery 'delivered'", 40, pause_s=0.2)
            missing = expected - {r.webhook_id for r in rx.requests}
            assert not missing, f"{len(missing)} events never reached the receiver"
            await _sigterm_exits_0(proc)
        assert_no_traceback(proc)


async def _outage(pg: PgServer, proc: DaemonProcess, admin_port: int) -> None:
    """Stop PostgreSQL for OUTAGE_S (checking that /readyz says 503 meanwhile); start it again."""
    stopped_at = time.monotonic()
    await pg.stop()
    try:
        await _wait_readyz(proc, admin_port, 503, OUTAGE_S)
        left_s = OUTAGE_S - (time.monotonic() - stopped_at)
        await alive_for(proc, max(0.0, left_s), "while PostgreSQL was down")
    finally:
        await pg.start()


# -- 2. pool connections killed while the loop goes idle -------------------------------------------

STORM_ROUNDS = 40
STORM_PAUSE_S = 0.15
"""Pacing between kills (the scenario, not a wait for anything)."""

_KILL_POOL = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
    " WHERE application_name = 'hookd' AND datname = current_database()"
)


async def test_pool_backends_killed_while_the_claim_loop_goes_idle(
    dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    rng = random.Random(20261201)
    async with Receiver() as rx:
        await add_endpoint(dsn, rx.url_for("/hook"))
        async with DaemonProcess(dsn, write_config(tmp_path / "hookd.toml")) as proc:
            killed = 0
            for i in range(STORM_ROUNDS):
                if i % 4 == 0:
                    # Kill just as the loop is woken to claim new events.
                    await db.execute(_PUBLISH_MANY, 2)
                elif i % 4 in (1, 2):
                    # Kill around the moment the loop, its work handed out, asks the database
                    # whether anything is left before it sleeps: some ms after the request arrives.
                    seen = rx.count
                    await db.execute(_PUBLISH_MANY, 1)
                    await rx.wait_for(seen + 1, timeout_s=10)
                    await asyncio.sleep(rng.uniform(0.004, 0.02))
                # (i % 4 == 3: kill while the loop sleeps and its connections idle in the pool.)
                killed += await db.fetchval(_KILL_POOL)
                await alive_for(proc, STORM_PAUSE_S, f"during the storm (round {i + 1})")
            # The storm must have hit something: the pool's backends are named 'hookd'.
            assert killed >= STORM_ROUNDS // 2, f"only {killed} pool backends were terminated"

            # After the storm, new events are delivered (and so is everything before).
            await db.execute(_PUBLISH_MANY, 20)
            expected = await _webhook_ids(db)

            async def all_delivered() -> bool:
                n = await db.fetchval(
                    "SELECT count(*) FROM hookd.deliveries WHERE state = 'delivered'"
                )
                return bool(n == len(expected))

            await wait_for(proc, all_delivered, "every delivery 'delivered'", 30)
            missing = expected - {r.webhook_id for r in rx.requests}
            assert not missing, f"{len(missing)} events never reached the receiver"
            await _sigterm_exits_0(proc)
        assert_no_traceback(proc)


# -- 3. stop while LISTEN cannot connect -----------------------------------------------------------


def _dead_listen_path(kind: str, tmp_path: Path) -> TcpProxy:
    """A loopback port that resets every connection ("refused": the proxy's upstream is a unix
    socket nobody listens on) or silently swallows every byte ("blackhole")."""
    proxy = TcpProxy(tmp_path / "nobody-listens.sock", connect_timeout_s=1.0)
    if kind == "blackhole":
        proxy.blackhole()
    return proxy


@pytest.mark.parametrize("kind", ["refused", "blackhole"])
async def test_sigterm_while_listen_cannot_connect(dsn: str, tmp_path: Path, kind: str) -> None:
    async with _dead_listen_path(kind, tmp_path) as proxy:
        cfg = write_config(
            tmp_path / "hookd.toml",
            {"database": {"listen_dsn": proxy.dsn_through(dsn), "connect_timeout_s": 10.0}},
        )
        async with DaemonProcess(dsn, cfg, wait_ready=False) as proc:
            # The readiness signal: the daemon's LISTEN connection reached the dead path (for
            # "refused", twice: it is in its retry loop; for "blackhole", its connect now hangs).
            await proxy.wait_for_accepted(2 if kind == "refused" else 1, timeout_s=15)
            assert proc.running, f"exited before SIGTERM: {report(proc)}"
            proc.send(signal.SIGTERM)
            sent_at = time.monotonic()
            code = await proc.wait_exit(5)
            took_s = time.monotonic() - sent_at
        assert code == 0, f"exit status {code} {took_s:.1f}s after SIGTERM: {report(proc)}"
        assert READY_LINE not in proc.stderr, f"ready without LISTEN: {report(proc)}"
        assert_no_traceback(proc)


async def test_stop_before_ready_returns(dsn: str, tmp_path: Path) -> None:
    async with _dead_listen_path("refused", tmp_path) as proxy:
        daemon = Daemon(make_config(dsn, {"database": {"listen_dsn": proxy.dsn_through(dsn)}}))
        task = asyncio.create_task(daemon.run())
        try:
            await proxy.wait_for_accepted(2, timeout_s=15)
            assert not task.done(), "run() ended before stop()"
            assert not daemon.ready.is_set(), "ready without a LISTEN connection"
            daemon.stop()
            done, _ = await asyncio.wait({task}, timeout=5)
            assert done, "run() did not return within 5 s of stop() (called before ready)"
            task.result()  # re-raises whatever run() raised
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=10)
