"""The dedicated LISTEN connection: wake-ups, its own health check, and reconnects.

Notifications are lost while the connection is down, and a silently dead TCP path gives asyncpg no
signal (docs/design-notes.md item 5). So the listener proves itself every `check_interval_s` with a
self-NOTIFY round trip on the ping channel; a ping that does not come back within
`check_timeout_s`, a query that hangs, or a termination reported by asyncpg makes it drop the
connection, reconnect with backoff, and call `on_reconnect` so the daemon re-scans for work that was
committed during the gap.

The same connection carries the daemon's "awake" lock: while the daemon works it holds
`AWAKE_LOCK_KEY` in share mode, and `hookd.publish` sends a NOTIFY only when it can take that lock
exclusively, i.e. while every daemon sleeps (see sql/004_wake_lock.sql). A lost connection drops
the lock with it, so publishers notify again, which is the safe direction.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

import asyncpg

log = logging.getLogger("hookd.listener")

WAKE_CHANNEL = "hookd_wake"
PING_CHANNEL = "hookd_ping"
AWAKE_LOCK_KEY = 114827819967585
"""Advisory lock key held in share mode by every awake daemon (the bytes of "hookda")."""
_CONN_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
"""Every way an operation on the listener's own connection fails; each means "replace it".
InternalClientError is what asyncpg raises when an operation was cut off mid-way (a timeout) and
the next one finds the protocol still busy (docs/design-notes.md item 14)."""

AWAKE_LOCK_TIMEOUT_S = 0.2
"""Longest wait for the awake lock: a publisher holding it exclusively is between its publish and
its commit; if that takes longer, the daemon works on and tries again later."""


DUE_PAYLOAD = "due"
"""Payload of a wake notification sent when deliveries were made due now (a retry, resend, replay
or test from hookd/service.py), as opposed to new events (`hookd.publish` notifies with '')."""


PROBE_TRIES = 3
"""Rounds of the shared-session probe (`shares_sessions`) before it concludes "not shown"."""


async def shares_sessions(dsn: str, *, timeout_s: float) -> bool | None:
    """Whether connections to `dsn` share server sessions between their transactions, as they do
    through a pooler in transaction (or statement) mode such as PgBouncer's
    `pool_mode = transaction`. LISTEN and session advisory locks do not work there.

    The probe: two connections A and B; A runs a query (and is idle again), then B, inside a
    transaction, asks for its server process. Directly to PostgreSQL, or through a pooler in
    session mode, every connection has a server process of its own, so B's is never A's; a
    transaction pooler lends A's idle server to B (PgBouncer reuses the most recently used
    server first). True: shown; False: not shown in PROBE_TRIES rounds (a pooler that picks
    servers round-robin may escape it); None: could not check (no connection within `timeout_s`
    seconds), which the listener's own reconnects deal with.
    """
    conns: list[asyncpg.Connection] = []
    try:
        async with asyncio.timeout(timeout_s):
            for _ in range(2):
                # statement_cache_size 0: no named statements, which a transaction pooler breaks.
                conns.append(
                    await asyncpg.connect(
                        dsn,
                        statement_cache_size=0,
                        server_settings={"application_name": "hookd-probe"},
                    )
                )
            a, b = conns
            for _ in range(PROBE_TRIES):
                pid_a = await a.fetchval("SELECT pg_backend_pid()")
                async with b.transaction():
                    pid_b = await b.fetchval("SELECT pg_backend_pid()")
                if pid_a == pid_b:
                    return True
        return False
    except _CONN_ERRORS as exc:
        log.debug("could not look for a transaction pooler (%s)", exc)
        return None
    finally:
        for conn in conns:
            conn.terminate()


class Listener:
    """Keeps one LISTEN connection alive and calls `on_wake()` for every wake notification, or
    `on_due()` (default: `on_wake`) for one whose payload is DUE_PAYLOAD.

    `ready` is set while the connection listens (cleared while reconnecting); `/readyz` and
    systemd readiness read it. Run it with `await listener.run()` inside a TaskGroup; cancel to stop.
    """

    def __init__(
        self,
        dsn: str,
        on_wake: Callable[[], None],
        on_reconnect: Callable[[], None],
        *,
        check_interval_s: float,
        check_timeout_s: float,
        connect_timeout_s: float,
        token: str,
        on_due: Callable[[], None] | None = None,
    ) -> None:
        self._dsn = dsn
        self._on_wake = on_wake
        self._on_due = on_due or on_wake
        self._on_reconnect = on_reconnect
        self._check_interval_s = check_interval_s
        self._check_timeout_s = check_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._token = token
        self._pings = 0
        self._pong: asyncio.Future[None] | None = None
        self._lost: asyncio.Event = asyncio.Event()
        self._conn: asyncpg.Connection | None = None
        self._io = asyncio.Lock()
        """One query at a time on the connection (pings and the awake lock share it)."""
        self._old_pid: int | None = None
        self.awake = False
        """Whether this connection holds the awake lock."""
        self.ready = asyncio.Event()
        self.down = asyncio.Event()
        """Set while the listener has lost its connection and is reconnecting."""
        self.reconnects = 0
        """Reconnects after the first connection (for metrics and tests)."""
        self.on_reconnect_metric: Callable[[], None] = lambda: None

    def _notified(self, conn: Any, pid: int, channel: str, payload: object) -> None:
        if channel == WAKE_CHANNEL:
            if payload == DUE_PAYLOAD:
                self._on_due()
            else:
                self._on_wake()
        elif (
            channel == PING_CHANNEL
            and payload == f"{self._token}:{self._pings}"
            and self._pong is not None
            and not self._pong.done()
        ):
            self._pong.set_result(None)

    def _terminated(self, conn: Any) -> None:
        self._lost.set()

    async def _connect(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(
            self._dsn,
            timeout=self._connect_timeout_s,
            server_settings={"application_name": "hookd-listener"},
        )
        try:
            await conn.add_listener(WAKE_CHANNEL, self._notified)
            await conn.add_listener(PING_CHANNEL, self._notified)
            conn.add_termination_listener(self._terminated)
        except BaseException:
            conn.terminate()
            raise
        return conn

    async def set_awake(self, awake: bool) -> bool:
        """Take (True) or give back (False) the awake lock; return whether it is held now.

        Never raises and never waits long: with no connection the lock is simply not held (so
        publishers notify), and a lock held exclusively by a publisher past AWAKE_LOCK_TIMEOUT_S
        leaves it untaken for now.
        """
        conn = self._conn
        if conn is None or conn.is_closed():
            self.awake = False
            return False
        if awake == self.awake:
            return awake
        sql = (
            "SELECT pg_advisory_lock_shared($1)"
            if awake
            else "SELECT pg_advisory_unlock_shared($1)"
        )
        try:
            async with self._io:
                await conn.execute(sql, AWAKE_LOCK_KEY, timeout=AWAKE_LOCK_TIMEOUT_S)
            self.awake = awake
        except _CONN_ERRORS as exc:
            log.debug("awake lock %s failed (%s)", "take" if awake else "release", exc)
            if not awake or not isinstance(exc, TimeoutError):
                # A release that did not go through, or a connection in doubt: replace it, which
                # drops the lock with the session. (A take that timed out behind a publisher's
                # exclusive hold is normal: try again later.)
                self._lost.set()
        return self.awake

    async def _ping(self, conn: asyncpg.Connection) -> bool:
        """One self-NOTIFY round trip; False if it failed or did not come back in time."""
        self._pings += 1
        loop = asyncio.get_running_loop()
        self._pong = loop.create_future()
        try:
            async with asyncio.timeout(self._check_timeout_s):
                async with self._io:
                    await conn.execute(
                        "SELECT pg_notify($1, $2)", PING_CHANNEL, f"{self._token}:{self._pings}"
                    )
                await self._pong
        except _CONN_ERRORS:
            return False
        finally:
            self._pong = None
        return True

    async def run(self) -> None:
        """Listen until cancelled, reconnecting whenever the connection is lost or stops answering."""
        backoff_s = 0.1
        first = True
        while True:
            try:
                conn = await self._connect()
            except _CONN_ERRORS as exc:
                log.warning("listener cannot connect (%s); retrying in %.1f s", exc, backoff_s)
                await asyncio.sleep(backoff_s * (0.5 + random.random()))
                backoff_s = min(backoff_s * 2, 5.0)
                continue
            backoff_s = 0.1
            await self._end_old_session(conn)
            self._old_pid = conn.get_server_pid()
            self._conn = conn
            self.awake = False
            self._lost.clear()
            self.down.clear()
            self.ready.set()
            if not first:
                self.reconnects += 1
                self.on_reconnect_metric()
                log.info("listener reconnected; re-scanning for work")
            first = False
            # Work may have been committed while no one listened (or before we started).
            self._on_reconnect()
            try:
                reason = await self._watch(conn)
                log.warning("listener connection lost (%s); reconnecting", reason)
            finally:
                self.ready.clear()
                self.down.set()
                self._conn = None
                self.awake = False
                # terminate(): close() could hang on a dead TCP path (see asyncpg close vs terminate).
                conn.terminate()

    async def _end_old_session(self, conn: asyncpg.Connection) -> None:
        """End the previous connection's server session, if it still exists.

        A silently dead TCP path can leave that backend alive for a long time, still holding the
        awake lock (so publishers would not notify). Best effort.
        """
        if self._old_pid is None:
            return
        try:
            await conn.execute(
                "SELECT pg_terminate_backend($1) FROM pg_stat_activity"
                " WHERE pid = $1 AND application_name = 'hookd-listener'",
                self._old_pid,
                timeout=self._check_timeout_s,
            )
        except _CONN_ERRORS as exc:
            log.debug("could not end the previous listener session (%s)", exc)

    async def _watch(self, conn: asyncpg.Connection) -> str:
        """Return why the connection must be replaced."""
        while True:
            try:
                async with asyncio.timeout(self._check_interval_s):
                    await self._lost.wait()
                return "connection terminated"
            except TimeoutError:
                pass
            if conn.is_closed():
                return "connection closed"
            if not await self._ping(conn):
                return f"health check got no answer within {self._check_timeout_s} s"
