"""Per-origin isolation, concurrency limits and fairness, with a real daemon and loopback receivers.

Each `Receiver` listens on its own port, so each is its own origin (scheme, host, port). Receivers
measure how many requests they handle at once; that is the concurrency the daemon really produced.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from hookd.daemon import Daemon

from support.daemon import add_endpoint, running_daemon, wait_until
from support.receiver import DRIP, HANG, ConcurrencyGauge, Receiver

TOTAL_S = 2.0
"""The total timeout of these tests' attempts."""

# Short timeouts; no retry within a test's lifetime unless a test asks for it; a short shutdown
# grace so that requests still hanging at the end are cancelled rather than waited for.
BASE: dict[str, dict[str, object]] = {
    "http": {"total_timeout_s": TOTAL_S, "connect_timeout_s": 1.0},
    "daemon": {"lease_s": 10.0, "shutdown_grace_s": 0.5},
    "retry": {"schedule_s": [0.0, 60.0], "max_attempts": 2, "jitter": 0.0},
}


def settings(**sections: dict[str, object]) -> dict[str, dict[str, object]]:
    """BASE with `sections` merged in, section by section."""
    merged = {name: dict(values) for name, values in BASE.items()}
    for name, values in sections.items():
        merged.setdefault(name, {}).update(values)
    return merged


async def publish_many(db: asyncpg.Connection, event_type: str, n: int) -> None:
    """Publish `n` events of `event_type` in one statement (one transaction)."""
    await db.execute(
        "SELECT hookd.publish(event_type => $1, payload => jsonb_build_object('i', g))"
        " FROM generate_series(1, $2) AS g",
        event_type,
        n,
    )


async def delivered(db: asyncpg.Connection, endpoint_id: int) -> int:
    n: int = await db.fetchval(
        "SELECT count(*) FROM hookd.deliveries WHERE endpoint_id = $1 AND state = 'delivered'",
        endpoint_id,
    )
    return n


async def test_hung_slow_and_dripping_receivers_hold_only_their_own_slots(
    dsn: str, db: asyncpg.Connection
) -> None:
    limit = 2
    per_bad = 3 * limit
    async with (
        Receiver(default=HANG) as hung,
        Receiver(default=("slow", 3 * TOTAL_S)) as slow,
        Receiver(default=DRIP) as drip,
        Receiver() as fast,
    ):
        bad = {"hung": hung, "slow": slow, "drip": drip}
        bad_ids = []
        for name, rx in bad.items():
            ep_id, _ = await add_endpoint(dsn, rx.url_for(f"/{name}"), (f"{name}.*",))
            bad_ids.append(ep_id)
            await publish_many(db, f"{name}.x", per_bad)
        fast_id, _ = await add_endpoint(dsn, fast.url_for("/fast"), ("fast.*",))
        await publish_many(db, "fast.x", 40)  # published last: queued behind every bad one

        overrides = settings(http={"per_endpoint_limit": limit, "per_host_limit": 8})
        loop = asyncio.get_running_loop()
        async with running_daemon(dsn, overrides):
            started = loop.time()
            await wait_until(
                db,
                "SELECT count(*) = 40 FROM hookd.deliveries WHERE endpoint_id = $1"
                " AND state = 'delivered'",
                fast_id,
                timeout_s=3 * TOTAL_S,
            )
            fast_done_s = loop.time() - started
            # The fast origin finished while every bad one still held its first requests.
            stuck = {name: rx.in_flight for name, rx in bad.items()}
            bad_attempts_then = await db.fetchval(
                "SELECT count(*) FROM hookd.attempts a JOIN hookd.deliveries d"
                " ON d.id = a.delivery_id WHERE d.endpoint_id = ANY($1)",
                bad_ids,
            )
            # The first round of bad attempts (one full limit per bad origin) has to time out.
            await wait_until(
                db,
                "SELECT count(*) >= $2 FROM hookd.attempts a JOIN hookd.deliveries d"
                " ON d.id = a.delivery_id WHERE d.endpoint_id = ANY($1)",
                bad_ids,
                len(bad) * limit,
                timeout_s=3 * TOTAL_S,
            )
            # Read now: attempts still running at shutdown are logged as cancelled ones.
            rows = await db.fetch(
                "SELECT d.endpoint_id, a.status, a.error, a.duration_s FROM hookd.attempts a"
                " JOIN hookd.deliveries d ON d.id = a.delivery_id WHERE d.endpoint_id = ANY($1)",
                bad_ids,
            )
        assert fast_done_s < TOTAL_S, f"fast origin took {fast_done_s:.2f} s"
        assert all(n >= 1 for n in stuck.values()), stuck
        assert bad_attempts_then == 0
        assert fast.count == 40 and all(r.status == 204 for r in fast.requests)

        assert {r["endpoint_id"] for r in rows} == set(bad_ids)
        for r in rows:
            assert r["status"] is None, dict(r)
            assert r["error"] is not None and r["error"].startswith("timeout"), dict(r)
            assert TOTAL_S - 0.1 <= r["duration_s"] <= TOTAL_S + 0.3, dict(r)
        peaks = {name: rx.peak_in_flight for name, rx in bad.items()}
        assert peaks == dict.fromkeys(bad, limit), peaks
        assert fast.peak_in_flight <= limit


async def test_per_host_limit_bounds_what_one_origin_sees(dsn: str, db: asyncpg.Connection) -> None:
    per_host, per_endpoint = 4, 3
    async with Receiver(default=("slow", 0.05)) as rx:
        ids = []
        # /b's backlog is shorter: while both have work the origin's slots are shared, and once
        # /b is done /a may use its whole own limit.
        for name, count in (("a", 40), ("b", 10)):
            ep_id, _ = await add_endpoint(dsn, rx.url_for(f"/{name}"), (f"{name}.*",))
            ids.append(ep_id)
            await publish_many(db, f"{name}.x", count)
        overrides = settings(http={"per_host_limit": per_host, "per_endpoint_limit": per_endpoint})
        async with running_daemon(dsn, overrides):
            await wait_until(
                db,
                "SELECT count(*) = 50 FROM hookd.deliveries WHERE state = 'delivered'",
                timeout_s=15,
            )
        assert rx.peak_in_flight == per_host
        path_peaks = [rx.peak_for("/a"), rx.peak_for("/b")]
        assert path_peaks[0] == per_endpoint, path_peaks
        assert path_peaks[1] <= per_endpoint, path_peaks
        assert rx.count == 50


async def test_process_wide_request_limit_spans_origins(dsn: str, db: asyncpg.Connection) -> None:
    both = ConcurrencyGauge()
    async with (
        Receiver(default=("slow", 0.05), gauges=[both]) as rx1,
        Receiver(default=("slow", 0.05), gauges=[both]) as rx2,
    ):
        for rx in (rx1, rx2):
            await add_endpoint(dsn, rx.url_for("/x"))
        await publish_many(db, "a.x", 30)  # every event goes to both endpoints
        overrides = settings(
            http={"per_host_limit": 4, "per_endpoint_limit": 4, "max_concurrent_requests": 3}
        )
        async with running_daemon(dsn, overrides):
            await wait_until(
                db,
                "SELECT count(*) = 60 FROM hookd.deliveries WHERE state = 'delivered'",
                timeout_s=15,
            )
        assert both.peak == 3
        assert rx1.peak_in_flight <= 3 and rx2.peak_in_flight <= 3


@pytest.mark.parametrize("same_origin", [False, True], ids=["two-origins", "one-origin"])
async def test_endpoint_with_10_is_not_starved_by_one_with_2000(
    dsn: str, db: asyncpg.Connection, same_origin: bool
) -> None:
    """2,000 deliveries at ~80/s would take 25 s to drain; the 10 others must not wait for them."""
    async with Receiver(default=("slow", 0.05)) as big_rx, Receiver() as small_rx:
        small_target = big_rx if same_origin else small_rx
        big_id, _ = await add_endpoint(dsn, big_rx.url_for("/big"), ("big.*",))
        small_id, _ = await add_endpoint(dsn, small_target.url_for("/small"), ("small.*",))
        await publish_many(db, "big.x", 2000)
        await publish_many(db, "small.x", 10)
        overrides = settings(http={"per_endpoint_limit": 4, "per_host_limit": 8})
        loop = asyncio.get_running_loop()
        async with running_daemon(dsn, overrides):
            started = loop.time()
            await wait_until(
                db,
                "SELECT count(*) = 10 FROM hookd.deliveries WHERE endpoint_id = $1"
                " AND state = 'delivered'",
                small_id,
                timeout_s=5,
            )
            small_done_s = loop.time() - started
            big_done = await delivered(db, big_id)
        assert small_done_s < 3.0, f"the 10 took {small_done_s:.2f} s"
        assert big_done < 500, f"{big_done} of the big backlog delivered before the 10"
        assert len(small_target.requests_for("/small")) == 10
        assert big_rx.peak_for("/big") <= 4


async def test_a_backlog_waiting_for_its_endpoint_does_not_spin_the_claim_loop(
    dsn: str, db: asyncpg.Connection
) -> None:
    """Deliveries left in the database because their endpoint's queue is full must wait quietly.

    A claim loop that never rests shows as claim queries without end. Resting, the daemon claims
    about once per freed slot at most. Its own counter of claim queries counts them exactly.
    """

    def claims(daemon: Daemon) -> float:
        return sum(daemon.metrics.claims.labels(k)._value.get() for k in ("fan_out", "due"))

    async with Receiver(default=("slow", 0.05)) as rx:
        await add_endpoint(dsn, rx.url_for("/big"))
        await publish_many(db, "big.x", 1000)  # more than one claim: some must wait unleased
        async with running_daemon(dsn, settings(http={"per_endpoint_limit": 4})) as daemon:
            await wait_until(
                db,
                "SELECT count(*) >= 20 FROM hookd.deliveries WHERE state = 'delivered'",
                timeout_s=5,
            )
            before, sent_before = claims(daemon), rx.count
            await asyncio.sleep(1.0)  # the measurement window
            ran, sent = claims(daemon) - before, rx.count - sent_before
        assert sent >= 20, "the backlog drains meanwhile"
        assert ran <= 2 * sent + 50, f"{ran} claim queries for {sent} deliveries"
