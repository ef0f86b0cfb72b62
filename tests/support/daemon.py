"""Run a real hookd daemon in the test's event loop, with a configuration built from overrides."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson

from hookd import config
from hookd.daemon import Daemon
from hookd.signing import generate_secret
from hookd.store import Store

# Fast retries and short leases so failure paths finish within a test's patience.
TEST_SETTINGS: dict[str, dict[str, Any]] = {
    "daemon": {"poll_interval_s": 1.0, "flush_interval_s": 0.01, "lease_s": 10.0},
    "http": {"connect_timeout_s": 2.0, "total_timeout_s": 5.0},
    "retry": {"schedule_s": [0.0, 0.2, 0.2, 0.2], "max_attempts": 4, "jitter": 0.0},
    "admin": {"port": 0},
    # The SSRF guard is on by default; the receivers run on loopback, so open it explicitly.
    "security": {"allow_cidrs": ["127.0.0.0/8", "::1/128"]},
}


def make_config(
    dsn: str, overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> config.Config:
    """TEST_SETTINGS with `overrides` merged per section, pointed at `dsn`."""
    raw: dict[str, dict[str, Any]] = {k: dict(v) for k, v in TEST_SETTINGS.items()}
    for section, values in (overrides or {}).items():
        raw.setdefault(section, {}).update(values)
    raw.setdefault("database", {}).setdefault("dsn", dsn)
    return config.from_mapping(raw)


@asynccontextmanager
async def running_daemon(
    dsn: str,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    configure: Callable[[config.Config], config.Config] | None = None,
) -> AsyncIterator[Daemon]:
    """Start a daemon, wait until it is ready (bounded), yield it, then stop it and wait.

    `configure` may replace parts of the configuration after it is built and validated.
    """
    cfg = make_config(dsn, overrides)
    daemon = Daemon(configure(cfg) if configure else cfg)
    task = asyncio.create_task(daemon.run())
    try:
        async with asyncio.timeout(15):
            ready = asyncio.create_task(daemon.ready.wait())
            done, _ = await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                ready.cancel()
                task.result()  # raises the start-up error
                raise AssertionError("daemon exited before it was ready")
        yield daemon
    finally:
        daemon.stop()
        async with asyncio.timeout(30):
            await task


async def add_endpoint(
    dsn: str,
    url: str,
    event_types: tuple[str, ...] = ("*",),
    tenant: str | None = None,
    secret: str | None = None,
) -> tuple[int, str]:
    """Add an endpoint through the store; return (id, secret)."""
    secret = secret or generate_secret()
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    assert pool is not None
    try:
        ep = await Store(pool).add_endpoint(url, secret, event_types, tenant)
    finally:
        await pool.close()
    return ep.id, secret


async def publish(
    conn: asyncpg.Connection,
    event_type: str,
    payload: Any,
    *,
    tenant: str | None = None,
    idempotency_key: str | None = None,
    ordering_key: str | None = None,
) -> int:
    """Publish one event in its own transaction; return the event id."""
    event_id: int = await conn.fetchval(
        "SELECT hookd.publish(event_type => $1, payload => $2::jsonb, tenant => $3,"
        " idempotency_key => $4, ordering_key => $5)",
        event_type,
        orjson.dumps(payload).decode(),
        tenant,
        idempotency_key,
        ordering_key,
    )
    return event_id


async def wait_until(
    conn: asyncpg.Connection, query: str, *args: Any, timeout_s: float = 10.0
) -> Any:
    """Re-run `query` after each short pause until it returns a truthy value (bounded).

    For database state that has no notification of its own (outcomes are written in batches).
    """
    last: Any = None
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                last = await conn.fetchval(query, *args)
                if last:
                    return last
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(
            f"timed out after {timeout_s}s: {query!r} last gave {last!r}"
        ) from None
