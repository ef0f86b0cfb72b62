"""The circuit breaker per endpoint, with a real daemon, real PostgreSQL and a loopback receiver."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import asyncpg

from hookd.daemon import Daemon

from support.daemon import add_endpoint, publish, running_daemon, wait_until
from support.receiver import Receiver

LIMIT = 4
THRESHOLD = 3
MOST_BEFORE_OPEN = LIMIT + THRESHOLD - 1
"""Requests that may have started before the breaker opens: a full window of LIMIT, plus one more
started in each slot freed by the failures before the last one that opens it."""


def overrides(
    cooldown_s: float = 1.0, poll_interval_s: float = 1.0
) -> dict[str, dict[str, object]]:
    return {
        "breaker": {"failure_threshold": THRESHOLD, "cooldown_s": cooldown_s},
        "http": {
            "total_timeout_s": 2.0,
            "connect_timeout_s": 1.0,
            "per_endpoint_limit": LIMIT,
            "per_host_limit": 16,
        },
        "daemon": {"lease_s": 10.0, "poll_interval_s": poll_interval_s},
        # Retries are due almost at once: only the breaker keeps them from hammering the receiver.
        "retry": {"schedule_s": [0.0, 0.1], "max_attempts": 50, "jitter": 0.0},
    }


async def publish_many(db: asyncpg.Connection, n: int) -> None:
    await db.execute(
        "SELECT hookd.publish(event_type => 'a.x', payload => jsonb_build_object('i', g))"
        " FROM generate_series(1, $1) AS g",
        n,
    )


async def open_until(db: asyncpg.Connection, ep_id: int, after: datetime | None = None) -> datetime:
    """Wait until the endpoint's breaker is recorded open (later than `after`); return until when."""
    value: datetime = await wait_until(
        db,
        "SELECT breaker_open_until FROM hookd.endpoints WHERE id = $1"
        " AND breaker_open_until > coalesce($2::timestamptz, '-infinity')",
        ep_id,
        after,
        timeout_s=5,
    )
    return value


async def settled_counts(db: asyncpg.Connection) -> tuple[int, int]:
    """(sum of the attempt counters, attempt-log rows) once no delivery is leased."""
    await wait_until(db, "SELECT bool_and(lease_owner IS NULL) FROM hookd.deliveries")
    row = await db.fetchrow(
        "SELECT (SELECT sum(attempts) FROM hookd.deliveries) AS counted,"
        " (SELECT count(*) FROM hookd.attempts) AS logged"
    )
    assert row is not None
    return int(row["counted"]), int(row["logged"])


async def pause_until(when: datetime, margin_s: float) -> None:
    """A measurement window: let time pass until `margin_s` before `when` (wall clock)."""
    await asyncio.sleep(max(0.0, when.timestamp() - time.time() - margin_s))


async def test_breaker_opens_waits_probes_and_drains_within_the_limit(
    dsn: str, db: asyncpg.Connection
) -> None:
    async with Receiver(default=500) as rx:
        ep_id, _ = await add_endpoint(dsn, rx.url_for("/x"))
        await publish_many(db, 20)
        async with running_daemon(dsn, overrides(cooldown_s=1.0)):
            first_until = await open_until(db, ep_id)
            seen_at_open = rx.count
            counted, logged = await settled_counts(db)
            assert THRESHOLD <= seen_at_open <= MOST_BEFORE_OPEN
            # Deliveries held back by the open breaker are not counted as attempts.
            assert counted == logged == seen_at_open

            # The cool-down: nothing is sent, nothing is counted.
            await pause_until(first_until, margin_s=0.1)
            assert rx.count == seen_at_open
            assert await settled_counts(db) == (counted, logged)

            # One probe after the cool-down; it fails and the breaker opens again, for twice as long.
            await rx.wait_for(seen_at_open + 1, timeout_s=3)
            probe = rx.requests[-1]
            second_until = await open_until(db, ep_id, after=first_until)
            assert probe.received_wall_s >= first_until.timestamp() - 0.05
            assert 1.8 <= second_until.timestamp() - probe.received_wall_s <= 2.3
            assert await settled_counts(db) == (counted + 1, logged + 1)

            # The receiver recovers during the second cool-down; its probe closes the breaker.
            rx.default = 204
            rx.reset_peaks()
            await pause_until(second_until, margin_s=0.1)
            assert rx.count == seen_at_open + 1
            await wait_until(
                db,
                "SELECT count(*) = 20 FROM hookd.deliveries WHERE state = 'delivered'",
                timeout_s=10,
            )
            await wait_until(
                db,
                "SELECT breaker_open_until IS NULL FROM hookd.endpoints WHERE id = $1",
                ep_id,
                timeout_s=3,
            )
        second_probe = rx.requests[seen_at_open + 1]
        assert second_probe.received_wall_s >= second_until.timestamp() - 0.05
        assert second_probe.status == 204
        assert rx.peak_in_flight <= LIMIT
        assert rx.count == 20 + seen_at_open + 1  # every delivery once more, plus two probes
        # The attempt counter counts real attempts only: exactly the attempt-log rows.
        mismatched = await db.fetch(
            "SELECT d.id, d.attempts, count(a.*) AS logged FROM hookd.deliveries d"
            " LEFT JOIN hookd.attempts a ON a.delivery_id = d.id"
            " GROUP BY d.id, d.attempts HAVING d.attempts <> count(a.*)"
        )
        assert mismatched == []
        assert await db.fetchval("SELECT count(*) FROM hookd.attempts") == rx.count


async def test_probe_goes_out_when_the_cooldown_ends_not_at_the_next_poll(
    dsn: str, db: asyncpg.Connection
) -> None:
    """The polling fallback is 30 s here: only the end of the cool-down can trigger the probe."""
    async with Receiver(default=500) as rx:
        ep_id, _ = await add_endpoint(dsn, rx.url_for("/x"))
        await publish_many(db, 10)
        async with running_daemon(dsn, overrides(cooldown_s=1.0, poll_interval_s=30.0)):
            until = await open_until(db, ep_id)
            seen_at_open = rx.count
            await rx.wait_for(seen_at_open + 1, timeout_s=until.timestamp() - time.time() + 1.0)
        assert rx.requests[seen_at_open].received_wall_s >= until.timestamp() - 0.05


async def test_open_breaker_does_not_spin_the_claim_loop(dsn: str, db: asyncpg.Connection) -> None:
    """Deliveries due but held back by an open breaker must not make the daemon loop without rest.

    A spinning claim loop shows as claim queries without rest; a resting daemon runs a handful
    per second at most. The daemon's own counter of claim queries counts them exactly.
    """

    def claims(daemon: Daemon) -> float:
        return sum(daemon.metrics.claims.labels(k)._value.get() for k in ("fan_out", "due"))

    async with Receiver(default=500) as rx:
        ep_id, _ = await add_endpoint(dsn, rx.url_for("/x"))
        await publish_many(db, 10)
        async with running_daemon(dsn, overrides(cooldown_s=3.0)) as daemon:
            until = await open_until(db, ep_id)
            await settled_counts(db)
            # A new event for the endpoint wakes the daemon (NOTIFY) while the breaker is open.
            await publish(db, "a.y", {})
            # Its only endpoint has no room while the breaker is open: the event waits in the
            # outbox and the daemon goes back to sleep.
            assert daemon.dispatcher is not None
            daemon.dispatcher.asleep.clear()
            async with asyncio.timeout(5):
                await daemon.dispatcher.asleep.wait()
            before = claims(daemon)
            window_s = until.timestamp() - time.time() - 0.2
            assert window_s > 1.0
            await asyncio.sleep(window_s)  # the measurement window, inside the cool-down
            ran = claims(daemon) - before
            seen = rx.count
        assert seen <= MOST_BEFORE_OPEN, "nothing is sent while the breaker is open"
        assert ran / window_s < 20, f"{ran} claim queries in {window_s:.2f} s"
