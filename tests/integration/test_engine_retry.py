"""Retry timing (the timer wheel), restarts, and per-endpoint overrides, with a real daemon.

The polling fallback is set to 30 s where timing matters, so a retry that happens on time was
triggered by the daemon's own timers, not by the poll.
"""

from __future__ import annotations

import time

import asyncpg

from support.daemon import add_endpoint, publish, running_daemon, wait_until
from support.receiver import HANG, Receiver

NO_POLL: dict[str, object] = {"poll_interval_s": 30.0, "lease_s": 10.0}


async def set_settings(db: asyncpg.Connection, endpoint_id: int, settings: str) -> None:
    """Per-endpoint overrides, written the way `hookd endpoint settings` stores them."""
    await db.execute(
        "UPDATE hookd.endpoints SET settings = $2::jsonb WHERE id = $1", endpoint_id, settings
    )


async def test_retry_fires_on_its_timer_not_at_the_poll(dsn: str, db: asyncpg.Connection) -> None:
    retry_s = 0.5
    async with Receiver() as rx:
        await add_endpoint(dsn, rx.url_for("/x"))
        # The failure is answered after 0.3 s, so the claim loop is asleep when the retry is set.
        rx.script("/x", [("slow", 0.3, 500), 204])
        await publish(db, "a.x", {})
        overrides = {
            "daemon": NO_POLL,
            "retry": {"schedule_s": [0.0, retry_s], "max_attempts": 3, "jitter": 0.0},
        }
        async with running_daemon(dsn, overrides):
            await wait_until(db, "SELECT state = 'delivered' FROM hookd.deliveries", timeout_s=3)
        first, second = rx.requests_for("/x")
        waited = second.received_wall_s - (first.received_wall_s + 0.3)
        assert retry_s - 0.05 <= waited <= retry_s + 0.3, waited


async def test_after_a_restart_overdue_retries_fire_at_once_and_near_ones_on_time(
    dsn: str, db: asyncpg.Connection
) -> None:
    async with Receiver() as rx:
        overdue_id, _ = await add_endpoint(dsn, rx.url_for("/overdue"), ("o.*",))
        near_id, _ = await add_endpoint(dsn, rx.url_for("/near"), ("n.*",))
        for path in ("/overdue", "/near"):
            rx.script(path, [500, 204])
        await publish(db, "o.x", {})
        await publish(db, "n.x", {})
        overrides = {
            "daemon": NO_POLL,
            "retry": {"schedule_s": [0.0, 60.0], "max_attempts": 3, "jitter": 0.0},
        }
        async with running_daemon(dsn, overrides):
            await wait_until(
                db,
                "SELECT count(*) = 2 FROM hookd.deliveries"
                " WHERE attempts = 1 AND lease_owner IS NULL AND state = 'pending'",
            )
        # While no daemon runs, one retry's time passes and another's comes near.
        await db.execute(
            "UPDATE hookd.deliveries SET next_attempt_at = now() - interval '2 seconds'"
            " WHERE endpoint_id = $1",
            overdue_id,
        )
        near_at = await db.fetchval(
            "UPDATE hookd.deliveries SET next_attempt_at = now() + interval '1.5 seconds'"
            " WHERE endpoint_id = $1 RETURNING next_attempt_at",
            near_id,
        )
        async with running_daemon(dsn, overrides):
            ready_s = time.time()
            await rx.wait_for(2, path="/overdue", timeout_s=2)
            await rx.wait_for(2, path="/near", timeout_s=5)
            await wait_until(
                db, "SELECT count(*) = 2 FROM hookd.deliveries WHERE state = 'delivered'"
            )
        overdue_late = rx.requests_for("/overdue")[1].received_wall_s - ready_s
        assert overdue_late < 0.5, overdue_late
        near_off = rx.requests_for("/near")[1].received_wall_s - near_at.timestamp()
        assert -0.05 <= near_off <= 0.3, near_off


async def test_per_endpoint_overrides_take_effect(dsn: str, db: asyncpg.Connection) -> None:
    """Global: 5 s timeout, retries after 30 s, 4 attempts. The endpoint: 1 s, 0.2 s, 2."""
    async with Receiver(default=HANG) as hung, Receiver(default=("slow", 1.5)) as slow:
        hung_id, _ = await add_endpoint(dsn, hung.url_for("/h"), ("h.*",))
        await set_settings(
            db,
            hung_id,
            '{"total_timeout_s": 1.0, "retry_schedule_s": [0, 0.2], "retry_max_attempts": 2,'
            ' "max_concurrency": 2}',
        )
        slow_id, _ = await add_endpoint(dsn, slow.url_for("/s"), ("s.*",))
        for i in range(2):
            await publish(db, f"h.e{i}", {})
        await publish(db, "s.x", {})
        overrides = {
            "http": {"total_timeout_s": 5.0, "connect_timeout_s": 1.0, "per_endpoint_limit": 8},
            "retry": {"schedule_s": [0.0, 30.0], "max_attempts": 4, "jitter": 0.0},
        }
        async with running_daemon(dsn, overrides):
            await wait_until(
                db,
                "SELECT count(*) = 2 FROM hookd.deliveries WHERE endpoint_id = $1"
                " AND state = 'failed'",
                hung_id,
                timeout_s=10,
            )
            await wait_until(
                db,
                "SELECT state = 'delivered' FROM hookd.deliveries WHERE endpoint_id = $1",
                slow_id,
            )
        assert hung.peak_in_flight == 2  # max_concurrency, not the global 8
        rows = await db.fetch(
            "SELECT a.delivery_id, a.attempt, a.started_at, a.duration_s, a.error"
            " FROM hookd.attempts a JOIN hookd.deliveries d ON d.id = a.delivery_id"
            " WHERE d.endpoint_id = $1 ORDER BY a.delivery_id, a.attempt",
            hung_id,
        )
        assert [(r["delivery_id"], r["attempt"]) for r in rows] == [
            (d, a) for d in (1, 2) for a in (1, 2)
        ]
        for r in rows:
            assert 0.95 <= r["duration_s"] <= 1.3, dict(r)
            assert (r["error"] or "").startswith("timeout"), dict(r)
        for first, second in zip(rows[::2], rows[1::2], strict=True):
            end = first["started_at"].timestamp() + first["duration_s"]
            assert second["started_at"].timestamp() - end >= 0.2 - 0.05
        # The other endpoint keeps the global 5 s timeout: its 1.5 s answer is a success.
        assert (
            await db.fetchval(
                "SELECT status FROM hookd.attempts a JOIN hookd.deliveries d ON d.id = a.delivery_id"
                " WHERE d.endpoint_id = $1",
                slow_id,
            )
            == 204
        )


async def test_endpoint_timeout_longer_than_the_lease_does_not_stall_its_deliveries(
    dsn: str, db: asyncpg.Connection
) -> None:
    """`hookd endpoint settings` accepts any timeout; the daemon must still serve the endpoint.

    Either the attempt is made (its timeout bounded by what the lease allows) or the delivery is
    settled with a reason; what must not happen is a delivery claimed and given back forever.
    """
    async with Receiver() as rx:
        ep_id, _ = await add_endpoint(dsn, rx.url_for("/x"))
        await set_settings(db, ep_id, '{"total_timeout_s": 20.0}')
        await publish(db, "a.x", {})
        async with running_daemon(dsn, {"daemon": {"lease_s": 10.0}}):
            state = await wait_until(
                db,
                "SELECT state FROM hookd.deliveries WHERE state <> 'pending'",
                timeout_s=3,
            )
        if state == "failed":
            reason = await db.fetchval("SELECT last_error FROM hookd.deliveries")
            assert reason, "settled without a reason"
        else:
            assert state == "delivered" and rx.count == 1
