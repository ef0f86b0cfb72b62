"""Wake-ups: NOTIFY only while a daemon sleeps, and a listener that cannot die silently."""

from __future__ import annotations

import asyncio

import asyncpg

from hookd.daemon import Daemon
from hookd.listener import AWAKE_LOCK_KEY

from support.daemon import add_endpoint, publish, running_daemon
from support.receiver import Receiver
from support.tcpproxy import TcpProxy

# A polling fallback far longer than any wait below: a delivery within the wait proves the
# notification (or the listener's re-scan), not the poll, found the event.
NO_POLL = {"daemon": {"poll_interval_s": 60.0}}


async def _notifications_from_publish(
    conn: asyncpg.Connection, db: asyncpg.Connection
) -> list[str]:
    """LISTEN on `conn`, publish one event on `db`, and return what arrived on hookd_wake.

    A marker NOTIFY follows the publish; notifications are delivered in commit order, so when the
    marker arrives every notification from the publish has arrived too: an empty list means none
    was sent.

    """
    got: list[str] = []
    marker = asyncio.get_running_loop().create_future()

    def on_wake(_c: object, _pid: int, _ch: str, payload: str) -> None:
        got.append(payload)

    def on_marker(_c: object, _pid: int, _ch: str, _payload: str) -> None:
        if not marker.done():
            marker.set_result(None)

    await conn.add_listener("hookd_wake", on_wake)
    await conn.add_listener("test_marker", on_marker)
    try:
        await publish(db, "a.b", {})
        await db.execute("SELECT pg_notify('test_marker', '')")
        async with asyncio.timeout(5):
            await marker
    finally:
        await conn.remove_listener("hookd_wake", on_wake)
        await conn.remove_listener("test_marker", on_marker)
    return got


async def _asleep(daemon: Daemon) -> None:
    """Wait (bounded) until the daemon's claim loop sleeps, its awake lock given back."""
    assert daemon.dispatcher is not None
    async with asyncio.timeout(5):
        await daemon.dispatcher.asleep.wait()


async def test_publish_notifies_only_while_no_daemon_is_awake(
    dsn: str, db: asyncpg.Connection
) -> None:
    listener = await asyncpg.connect(dsn)
    awake = await asyncpg.connect(dsn)  # stands in for an awake daemon's LISTEN connection
    try:
        assert await _notifications_from_publish(listener, db) == [""]
        await awake.execute("SELECT pg_advisory_lock_shared($1)", AWAKE_LOCK_KEY)
        assert await _notifications_from_publish(listener, db) == []
        await awake.execute("SELECT pg_advisory_unlock_shared($1)", AWAKE_LOCK_KEY)
        assert await _notifications_from_publish(listener, db) == [""]
    finally:
        await awake.close()
        await listener.close()


async def test_awake_daemon_holds_the_lock_and_gives_it_back_asleep(
    dsn: str, db: asyncpg.Connection
) -> None:
    held = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND mode = 'ShareLock' AND ((classid::bigint << 32) | objid::bigint) = $1"
    )
    async with Receiver() as rx:
        _, rx.secrets["/x"] = await add_endpoint(dsn, rx.url_for("/x"))
        # A long linger keeps the daemon awake (lock held) for a while after each delivery.
        linger = {"daemon": {"poll_interval_s": 60.0, "idle_linger_s": 2.0}}
        async with running_daemon(dsn, linger) as daemon:
            await _asleep(daemon)
            assert await db.fetchval(held, AWAKE_LOCK_KEY) == 0
            await publish(db, "a.b", {})  # notifies: no daemon is awake
            await rx.wait_for(1, timeout_s=5)
            assert daemon.listener is not None and daemon.listener.awake
            assert await db.fetchval(held, AWAKE_LOCK_KEY) == 1
            await _asleep(daemon)
            assert await db.fetchval(held, AWAKE_LOCK_KEY) == 0


async def test_idle_daemon_wakes_on_notify(dsn: str, db: asyncpg.Connection) -> None:
    async with Receiver() as rx:
        _, rx.secrets["/x"] = await add_endpoint(dsn, rx.url_for("/x"))
        async with running_daemon(dsn, NO_POLL) as daemon:
            for i in range(3):
                await _asleep(daemon)
                await publish(db, "a.b", {"i": i})
                await rx.wait_for(i + 1, timeout_s=5)
            notify_wakeups = daemon.metrics.wakeups.labels("notify")._value.get()
            assert notify_wakeups >= 3
        assert all(r.verified for r in rx.requests)


async def test_listener_terminated_reconnects_and_rescans(dsn: str, db: asyncpg.Connection) -> None:
    async with Receiver() as rx:
        _, rx.secrets["/x"] = await add_endpoint(dsn, rx.url_for("/x"))
        async with running_daemon(dsn, NO_POLL) as daemon:
            assert daemon.listener is not None
            await _asleep(daemon)
            killed = await db.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = 'hookd-listener' AND datname = current_database()"
            )
            assert killed == 1
            # Committed while the listener is gone or coming back: its NOTIFY may reach no one.
            await publish(db, "a.during_gap", {})
            await rx.wait_for(1, timeout_s=10)
            assert daemon.listener.reconnects >= 1
            assert daemon.metrics.listener_reconnects._value.get() >= 1
            # And the new connection does receive notifications.
            await _asleep(daemon)
            await publish(db, "a.after", {})
            await rx.wait_for(2, timeout_s=5)


async def test_silently_dead_listener_is_detected(dsn: str, db: asyncpg.Connection) -> None:
    """A TCP path that drops every byte without closing: only the health check can notice."""
    async with Receiver() as rx, TcpProxy.to_postgres(dsn) as proxy:
        _, rx.secrets["/x"] = await add_endpoint(dsn, rx.url_for("/x"))
        settings = {
            "database": {"listen_dsn": proxy.dsn_through(dsn), "connect_timeout_s": 1.0},
            "daemon": {
                "poll_interval_s": 60.0,
                "listener_check_interval_s": 0.3,
                "listener_check_timeout_s": 0.5,
            },
        }
        async with running_daemon(dsn, settings) as daemon:
            assert daemon.listener is not None
            await _asleep(daemon)
            proxy.blackhole()
            await publish(db, "a.lost_notify", {})  # its NOTIFY goes into the black hole
            async with asyncio.timeout(5):
                await daemon.listener.down.wait()
            assert rx.count == 0
            proxy.restore()
            await rx.wait_for(1, timeout_s=10)
            assert daemon.listener.reconnects >= 1
            assert [r.json["type"] for r in rx.requests] == ["a.lost_notify"]
