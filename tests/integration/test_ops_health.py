"""The admin server's health checks: /healthz (the loop answers) and /readyz (database + LISTEN)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import asyncpg

from hookd.daemon import Daemon

from support.daemon import add_endpoint, publish, running_daemon
from support.receiver import Receiver
from support.tcpproxy import TcpProxy

# A listener that notices a dead path within about half a second, and fresh gauges.
_FAST_CHECKS: dict[str, dict[str, Any]] = {
    "daemon": {"listener_check_interval_s": 0.2, "listener_check_timeout_s": 0.3},
    "database": {"connect_timeout_s": 0.5},
    "admin": {"stats_interval_s": 0.1},
}


async def _get(session: aiohttp.ClientSession, daemon: Daemon, path: str) -> tuple[int, str]:
    assert daemon.admin is not None
    async with session.get(f"http://127.0.0.1:{daemon.admin.port}{path}") as resp:
        return resp.status, await resp.text()


async def _metric(session: aiohttp.ClientSession, daemon: Daemon, name: str) -> float:
    _, text = await _get(session, daemon, "/metrics")
    m = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


async def _until(
    session: aiohttp.ClientSession, daemon: Daemon, path: str, status: int, timeout_s: float
) -> str:
    """Poll `path` (bounded) until it answers `status`; return the body."""
    last: tuple[int, str] | None = None
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                last = await _get(session, daemon, path)
                if last[0] == status:
                    return last[1]
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(
            f"{path} did not answer {status} in {timeout_s}s; last {last}"
        ) from None


async def test_healthz_readyz_and_metrics_answer(dsn: str) -> None:
    async with running_daemon(dsn) as daemon, aiohttp.ClientSession() as session:
        assert daemon.cfg.admin.host == "127.0.0.1", "the admin server binds loopback by default"
        assert await _get(session, daemon, "/healthz") == (200, "ok\n")
        assert await _get(session, daemon, "/readyz") == (200, "ready\n")
        status, text = await _get(session, daemon, "/metrics")
        assert status == 200 and "hookd_build_info{" in text
        assert (await _get(session, daemon, "/nope"))[0] == 404


async def test_readyz_is_503_while_listen_is_down_and_200_after_it_reconnects(
    dsn: str, db: asyncpg.Connection
) -> None:
    async with (
        TcpProxy.to_postgres(dsn) as proxy,
        Receiver() as rx,
        aiohttp.ClientSession() as session,
    ):
        await add_endpoint(dsn, rx.url_for("/x"))
        overrides = {**_FAST_CHECKS, "database": {**_FAST_CHECKS["database"]}}
        overrides["database"]["listen_dsn"] = proxy.dsn_through(dsn)
        async with running_daemon(dsn, overrides) as daemon:
            assert (await _get(session, daemon, "/readyz"))[0] == 200

            # The LISTEN path dies silently: the health check notices, reconnects cannot pass.
            proxy.blackhole()
            body = await _until(session, daemon, "/readyz", 503, timeout_s=5)
            assert "LISTEN" in body, body
            assert await _get(session, daemon, "/healthz") == (200, "ok\n")
            await asyncio.sleep(1.0)  # several failed reconnect attempts later: still not ready
            assert (await _get(session, daemon, "/readyz"))[0] == 503
            assert await _metric(session, daemon, "hookd_ready") == 0

            proxy.restore()
            assert await _until(session, daemon, "/readyz", 200, timeout_s=10) == "ready\n"
            assert await _metric(session, daemon, "hookd_listener_reconnects_total") >= 1
            # The gauge follows at the next stats refresh (every 0.2 s here); a scrape over HTTP
            # has no event to wait on, so poll it, bounded.
            async with asyncio.timeout(5):
                while await _metric(session, daemon, "hookd_ready") != 1:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)

            # And it delivers again.
            await publish(db, "a.b", {})
            await rx.wait_for(1, timeout_s=5)


async def test_terminated_listener_backend_reconnects_and_stays_ready(
    dsn: str, db: asyncpg.Connection
) -> None:
    async with running_daemon(dsn, _FAST_CHECKS) as daemon, aiohttp.ClientSession() as session:
        dbname = await db.fetchval("SELECT current_database()")
        terminated = await db.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = 'hookd-listener' AND datname = $1",
            dbname,
        )
        assert terminated == 1
        try:
            async with asyncio.timeout(5):
                while True:
                    if await _metric(session, daemon, "hookd_listener_reconnects_total") >= 1:
                        break
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError("the listener did not reconnect within 5 s") from None
        assert await _until(session, daemon, "/readyz", 200, timeout_s=5) == "ready\n"
        assert await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = 'hookd-listener' AND datname = $1",
            dbname,
        )
