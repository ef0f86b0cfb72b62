"""Cold start: a daemon started on a backlog of due deliveries serves every endpoint from the start.

- test_every_endpoint_gets_its_share_from_the_start: 100 endpoints with 50 due deliveries each,
  all due at the same moment (as after a long stop), inserted with SQL; a real daemon drains them
  into a real receiver. Among the first `max_in_flight` requests (the first claim) every endpoint
  has one, and the daemon never holds more than `max_in_flight`: the rest of the backlog waits in
  the database.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import asyncpg

from hookd.signing import generate_secret

from support.daemon import running_daemon
from support.receiver import Receiver

ENDPOINTS = 100
PER_ENDPOINT = 50
MAX_IN_FLIGHT = 300
FIRST = MAX_IN_FLIGHT


async def test_every_endpoint_gets_its_share_from_the_start(
    dsn: str, db: asyncpg.Connection
) -> None:
    overrides = {
        "daemon": {"max_in_flight": MAX_IN_FLIGHT},
        "http": {"per_host_limit": 32, "per_endpoint_limit": 32},
    }
    async with Receiver() as rx:
        await db.execute(
            "INSERT INTO hookd.endpoints (url, event_types, secret, created_at)"
            " SELECT $1 || '/e/' || g, '{cold.*}', $3, now() - interval '2 days'"
            " FROM generate_series(1, $2) g",
            rx.url,
            ENDPOINTS,
            generate_secret(),
        )
        await db.execute(
            "INSERT INTO hookd.events (event_type, payload, created_at, fanned_out_at)"
            " SELECT 'cold.one', '{}', now() - interval '1 day', now() - interval '1 day'"
            " FROM generate_series(1, $1)",
            PER_ENDPOINT,
        )
        # All due at the same instant, as after a long stop.
        await db.execute(
            "INSERT INTO hookd.deliveries (event_id, endpoint_id, next_attempt_at, created_at,"
            " event_created_at)"
            " SELECT e.id, ep.id, now() - interval '1 day', now() - interval '1 day', e.created_at"
            " FROM hookd.events e CROSS JOIN hookd.endpoints ep"
        )
        async with running_daemon(dsn, overrides) as daemon:
            assert daemon.dispatcher is not None
            dispatcher = daemon.dispatcher
            peak_held = 0

            async def watch() -> None:
                nonlocal peak_held
                while True:
                    peak_held = max(peak_held, dispatcher.held)
                    await asyncio.sleep(0.005)  # the sampling period of peak holding

            watcher = asyncio.create_task(watch())
            try:
                await rx.wait_for(FIRST, timeout_s=30)
            finally:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
            first = Counter(r.path for r in rx.requests[:FIRST])
    # The first claim alone (max_in_flight deliveries) covers every endpoint.
    assert len(first) == ENDPOINTS, f"{ENDPOINTS - len(first)} endpoints got nothing"
    assert 0 < peak_held <= MAX_IN_FLIGHT
