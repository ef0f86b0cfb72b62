"""Large fan-out: one event for thousands of endpoints, created in bounded pieces.

- test_pieces_resume_after_the_last_committed_one: through the store, an event matching 2,500
  endpoints with a bound of 1,000 is fanned out in three pieces (1,000, 1,000, 500), the event
  staying unfanned with its cursor until the last; a piece whose transaction rolls back (what a
  crash does) is created again by the next claim, once.
- test_one_event_for_10000_endpoints: a real daemon, 10,000 endpoints (inserted with one SQL
  statement), one event: every endpoint gets exactly one request, no fan-out transaction created
  more than `daemon.fan_out_max_deliveries`, the daemon never held more than `max_in_flight`,
  and deliveries waited unleased in the database meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import asyncpg

from hookd.signing import generate_secret
from hookd.store import QUERIES, Store

from support.daemon import publish, running_daemon, wait_until
from support.receiver import Receiver


async def _endpoints(db: asyncpg.Connection, base_url: str, n: int, types: str) -> list[int]:
    """`n` endpoints for `types`, URL `base_url/e/<i>`, in one INSERT; their ids in order."""
    rows = await db.fetch(
        "INSERT INTO hookd.endpoints (url, event_types, secret, created_at)"
        " SELECT $1 || '/e/' || g, ARRAY[$3], $4, now() - interval '1 minute'"
        " FROM generate_series(1, $2) g ORDER BY g RETURNING id",
        base_url,
        n,
        types,
        generate_secret(),
    )
    return [r["id"] for r in rows]


async def _pieces(db: asyncpg.Connection, event_id: int) -> list[int]:
    """Deliveries of `event_id` per fan-out transaction (created_at is the transaction's start)."""
    rows = await db.fetch(
        "SELECT count(*) AS n FROM hookd.deliveries WHERE event_id = $1"
        " GROUP BY created_at ORDER BY min(id)",
        event_id,
    )
    return [r["n"] for r in rows]


async def test_pieces_resume_after_the_last_committed_one(
    db: asyncpg.Connection, store: Store
) -> None:
    ids = await _endpoints(db, "http://127.0.0.1:9", 2500, "big.*")
    await _endpoints(db, "http://127.0.0.1:9", 3, "small.*")
    big = await publish(db, "big.one", {"n": 1})
    small = await publish(db, "small.one", {"n": 2})

    first = await store.fan_out(100, 60.0, max_deliveries=1000)
    assert (first.created, first.events_claimed, first.cut_event_id) == (1000, 0, big)
    row = await db.fetchrow(
        "SELECT fanned_out_at, fan_out_cursor FROM hookd.events WHERE id = $1", big
    )
    assert row["fanned_out_at"] is None and row["fan_out_cursor"] == ids[999]

    # A crash in the middle of the next piece: its transaction rolls back, cursor and all.
    tx = db.transaction()
    await tx.start()
    await db.fetch(QUERIES["fan_out"], 100, 60.0, store.owner, [], [], 0, 0, 1000)
    assert await db.fetchval("SELECT count(*) FROM hookd.deliveries") == 2000
    await tx.rollback()
    assert await db.fetchval("SELECT count(*) FROM hookd.deliveries") == 1000

    second = await store.fan_out(100, 60.0, max_deliveries=1000)
    assert (second.created, second.cut_event_id) == (1000, big)
    # The last 500 of the big event and the small event's 3 fit in one piece.
    third = await store.fan_out(100, 60.0, max_deliveries=1000)
    assert (third.created, third.events_claimed, third.cut_event_id) == (503, 2, None)
    assert await _pieces(db, big) == [1000, 1000, 500]
    assert await _pieces(db, small) == [3]
    per_endpoint = await db.fetchval(
        "SELECT count(DISTINCT endpoint_id) = count(*) AND count(*) = 2500"
        " FROM hookd.deliveries WHERE event_id = $1",
        big,
    )
    assert per_endpoint
    assert await db.fetchval("SELECT count(*) FROM hookd.events WHERE fanned_out_at IS NULL") == 0
    assert (await store.fan_out(100, 60.0, max_deliveries=1000)).created == 0


ENDPOINTS = 10_000
BOUND = 1_000
MAX_IN_FLIGHT = 256


async def test_one_event_for_10000_endpoints(dsn: str, db: asyncpg.Connection) -> None:
    overrides = {
        "daemon": {"fan_out_max_deliveries": BOUND, "max_in_flight": MAX_IN_FLIGHT},
        "http": {"per_host_limit": 64, "per_endpoint_limit": 4},
    }
    async with Receiver() as rx:
        await _endpoints(db, rx.url, ENDPOINTS, "fan.*")
        async with running_daemon(dsn, overrides) as daemon:
            assert daemon.dispatcher is not None
            dispatcher = daemon.dispatcher
            peak_held = 0
            unleased_seen = 0

            watch_conn = await asyncpg.connect(dsn)

            async def watch() -> None:
                nonlocal peak_held, unleased_seen
                while True:
                    peak_held = max(peak_held, dispatcher.held)
                    waiting = await watch_conn.fetchval(
                        "SELECT count(*) FROM hookd.deliveries"
                        " WHERE state = 'pending' AND lease_owner IS NULL"
                    )
                    unleased_seen = max(unleased_seen, waiting)
                    await asyncio.sleep(0.01)  # the sampling period of peak holding

            watcher = asyncio.create_task(watch())
            try:
                t0 = time.monotonic()
                event_id = await publish(db, "fan.out", {"big": True})
                await rx.wait_for(ENDPOINTS, timeout_s=120)
                elapsed = time.monotonic() - t0
                print(f"all requests {elapsed:.1f} s after publish")
                await wait_until(
                    db,
                    "SELECT count(*) = $1 FROM hookd.deliveries WHERE state = 'delivered'",
                    ENDPOINTS,
                    timeout_s=30,
                )
            finally:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
                await watch_conn.close()
    paths = Counter(r.path for r in rx.requests)
    assert len(paths) == ENDPOINTS and set(paths.values()) == {1}, "each endpoint exactly once"
    pieces = await _pieces(db, event_id)
    assert sum(pieces) == ENDPOINTS
    assert max(pieces) <= BOUND and len(pieces) >= ENDPOINTS // BOUND, pieces
    assert peak_held <= MAX_IN_FLIGHT
    assert unleased_seen > MAX_IN_FLIGHT, "deliveries waited unleased in the database"
    print(f"10,000 endpoints: {elapsed:.1f} s, pieces {pieces}, peak held {peak_held}")
