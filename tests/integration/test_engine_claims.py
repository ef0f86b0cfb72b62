"""Claiming: the outbox never blocked, first attempts first, no linger, late committers found.

Each test runs the real daemon (`running_daemon`) against real PostgreSQL and loopback receivers,
changes endpoints only through `hookd.store.Store`, and judges only what is seen from outside: the
requests the receiver got (with their arrival and completion times), and the database rows.

- test_outbox_is_never_blocked_by_a_full_endpoint: one endpoint hangs with max_concurrency 1:
  every event is still fanned out, another endpoint's events are delivered, the hung endpoint's
  extra deliveries wait unleased in the database, and the daemon leases at most twice the
  endpoint's own limit of them.
- test_first_attempts_go_ahead_of_late_retries: with a backlog of overdue retries for a failing
  endpoint, a new event for a healthy endpoint (same origin, or another origin under the
  process-wide limit) is sent after at most a few of the backlog's retries, not behind them.
- test_steady_load_does_not_pay_the_idle_linger: with a long `daemon.idle_linger_s`, an event
  published right after the previous one was delivered (the daemon still awake, so publishing
  sends no NOTIFY) is delivered within the polling bound, not at the end of the linger.
- test_late_committer_is_fanned_out_while_a_backlog_drains: an event whose transaction commits
  late (its id below a large committed backlog) is fanned out within the polling interval plus a
  margin of its commit, not after the whole backlog.

"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from support.daemon import add_endpoint, publish, running_daemon, wait_until
from support.receiver import Receiver
from support.spans import (
    SpanReceiver,
    add_endpoint_with,
    open_store,
    publish_many,
    try_wait_until,
)

# -- C: the outbox is never blocked by a full endpoint ---------------------------------------------

C_HUNG_EVENTS = 200
C_HEALTHY_EVENTS = 20
C_SAMPLES = 20


async def test_outbox_is_never_blocked_by_a_full_endpoint(dsn: str, db: asyncpg.Connection) -> None:
    # The hung request outlasts the test: one attempt of H, hanging, the whole time.
    overrides = {
        "daemon": {"lease_s": 30.0, "shutdown_grace_s": 0.5},
        "http": {"total_timeout_s": 20.0, "connect_timeout_s": 1.0},
        "retry": {"schedule_s": [0.0, 60.0], "max_attempts": 2, "jitter": 0.0},
    }
    pool, store = await open_store(dsn)
    try:
        async with SpanReceiver() as rx:
            rx.script("/h", ["hang"])
            hung = await add_endpoint_with(
                store, rx.url_for("/h"), ("h.*",), {"max_concurrency": 1}
            )
            healthy = await add_endpoint_with(store, rx.url_for("/g"), ("g.*",), {})
            async with running_daemon(dsn, overrides):
                await publish_many(db, "h.x", C_HUNG_EVENTS)
                await rx.wait_for(1, path="/h", timeout_s=10)
                await publish_many(db, "g.x", C_HEALTHY_EVENTS)
                outbox_stuck = await try_wait_until(
                    db,
                    "SELECT count(*) = 0 FROM hookd.events WHERE fanned_out_at IS NULL",
                    timeout_s=10,
                )
                healthy_stuck = await try_wait_until(
                    db,
                    "SELECT count(*) = $2 FROM hookd.deliveries"
                    " WHERE endpoint_id = $1 AND state = 'delivered'",
                    healthy,
                    C_HEALTHY_EVENTS,
                    timeout_s=10,
                )
                # The measurement window: how many of H's deliveries the daemon holds leased.
                leased = []
                for _ in range(C_SAMPLES):
                    leased.append(
                        await db.fetchval(
                            "SELECT count(*) FROM hookd.deliveries"
                            " WHERE endpoint_id = $1 AND lease_owner IS NOT NULL",
                            hung,
                        )
                    )
                    await asyncio.sleep(0.05)  # the sampling window: C_SAMPLES samples
                unleased = await db.fetchval(
                    "SELECT count(*) FROM hookd.deliveries"
                    " WHERE endpoint_id = $1 AND state = 'pending' AND lease_owner IS NULL",
                    hung,
                )
                still_hanging = len(rx.requests_for("/h")) == 1 and rx.in_flight >= 1
        summary = (
            f"outbox drained: {not outbox_stuck}; healthy endpoint delivered: "
            f"{not healthy_stuck}; H still hanging: {still_hanging}; H leased over "
            f"{C_SAMPLES} samples: max {max(leased)} {leased}; H unleased pending: {unleased} "
            f"of {C_HUNG_EVENTS}"
        )
        assert still_hanging, summary
        assert not outbox_stuck, f"{summary}\n{outbox_stuck}"
        assert not healthy_stuck, f"{summary}\n{healthy_stuck}"
        assert max(leased) <= 2, f"more than 2 x max_concurrency of H leased: {summary}"
        assert unleased >= C_HUNG_EVENTS - 2, summary
    finally:
        await pool.close()


# -- D: first attempts go ahead of late retries ----------------------------------------------------

D_BACKLOG = 200
D_LIMIT = 2
"""The limit shared by the backlog's retries and the new event (per origin, or per process)."""
D_AHEAD_MAX = 3 * D_LIMIT
"""Most of the backlog's retries that may be sent between the new event's commit and its send."""


@pytest.mark.parametrize("same_origin", [True, False], ids=["one-origin", "two-origins"])
async def test_first_attempts_go_ahead_of_late_retries(
    dsn: str, db: asyncpg.Connection, same_origin: bool
) -> None:
    base: dict[str, dict[str, Any]] = {
        "retry": {"schedule_s": [0.0, 600.0], "max_attempts": 3, "jitter": 0.0},
        "breaker": {"failure_threshold": 100000},
    }
    limit = {"per_host_limit": D_LIMIT} if same_origin else {"max_concurrent_requests": D_LIMIT}
    loop = asyncio.get_running_loop()
    async with SpanReceiver() as rx, SpanReceiver() as other:
        target = rx if same_origin else other
        # First round: quick 500s; the retries, later, are slow 500s.
        rx.script("/f", [500] * D_BACKLOG + [("slow", 0.2, 500)])
        failing, _ = await add_endpoint(dsn, rx.url_for("/f"), ("f.*",))
        healthy, _ = await add_endpoint(dsn, target.url_for("/k"), ("k.*",))
        await publish_many(db, "f.x", D_BACKLOG)
        async with running_daemon(dsn, base):
            await wait_until(
                db,
                "SELECT count(*) = $2 FROM hookd.deliveries WHERE endpoint_id = $1"
                " AND state = 'pending' AND attempts = 1 AND lease_owner IS NULL",
                failing,
                D_BACKLOG,
                timeout_s=15,
            )
        # The backlog: every one of them failed once, and its retry is overdue.
        await db.execute(
            "UPDATE hookd.deliveries SET next_attempt_at = now() - interval '10 minutes'"
            " WHERE endpoint_id = $1 AND state = 'pending'",
            failing,
        )
        overrides = {**base, "http": limit}
        async with running_daemon(dsn, overrides):
            await rx.wait_for(D_BACKLOG + 1, path="/f", timeout_s=10)
            await publish(db, "k.x", {"i": 0})
            published = loop.time()
            sent = (await target.wait_for(1, path="/k", timeout_s=20))[0]
            k_arrival = target.spans_for("/k")[0].start
            await wait_until(
                db,
                "SELECT state = 'delivered' FROM hookd.deliveries WHERE endpoint_id = $1",
                healthy,
                timeout_s=10,
            )
            retried_ahead = sum(1 for s in rx.spans_for("/f") if published < s.start < k_arrival)
            not_retried = await db.fetchval(
                "SELECT count(*) FROM hookd.deliveries"
                " WHERE endpoint_id = $1 AND state = 'pending' AND attempts = 1",
                failing,
            )
        assert sent.status == 204
        assert retried_ahead <= D_AHEAD_MAX, (
            f"{retried_ahead} of the backlog's retries were sent between the new event's commit "
            f"and its first attempt ({k_arrival - published:.2f} s); at most {D_AHEAD_MAX} "
            f"allowed; {not_retried} of {D_BACKLOG} retries not yet made when it was delivered"
        )


# -- E: steady load does not pay the linger -------------------------------------------------------

LINGER_S = 5.0
E_POLL_S = 1.0
E_BOUND_S = E_POLL_S + 0.5
E_ROUNDS = 3


async def test_steady_load_does_not_pay_the_idle_linger(dsn: str, db: asyncpg.Connection) -> None:
    overrides = {"daemon": {"idle_linger_s": LINGER_S, "poll_interval_s": E_POLL_S}}
    loop = asyncio.get_running_loop()
    async with Receiver() as rx:
        await add_endpoint(dsn, rx.url_for("/e"))
        async with running_daemon(dsn, overrides):
            await publish(db, "e.x", {"i": 0})
            # The first one may wait for the linger the daemon started with.
            await wait_until(
                db,
                "SELECT count(*) = 1 FROM hookd.deliveries WHERE state = 'delivered'",
                timeout_s=3 * LINGER_S,
            )
            took = []
            for n in range(1, E_ROUNDS + 1):
                # Right after the previous delivery: inside the linger, the daemon still awake.
                await publish(db, "e.x", {"i": n})
                started = loop.time()
                late = await try_wait_until(
                    db,
                    "SELECT count(*) = $1 FROM hookd.deliveries WHERE state = 'delivered'",
                    n + 1,
                    timeout_s=E_BOUND_S,
                )
                if late:
                    # How long it really takes, for the failure message (bounded).
                    await wait_until(
                        db,
                        "SELECT count(*) = $1 FROM hookd.deliveries WHERE state = 'delivered'",
                        n + 1,
                        timeout_s=3 * LINGER_S,
                    )
                took.append(round(loop.time() - started, 2))
                assert not late, (
                    f"event {n} published right after a delivery took {took[-1]} s "
                    f"(linger {LINGER_S} s, poll {E_POLL_S} s, bound {E_BOUND_S} s); "
                    f"rounds so far: {took}"
                )
    assert rx.count == E_ROUNDS + 1


# -- F: a late committer is found while a backlog drains ------------------------------------------

F_POLL_S = 0.5
F_BOUND_S = F_POLL_S + 2.0
F_FIRST = 200
F_BACKLOG = 3000


async def test_late_committer_is_fanned_out_while_a_backlog_drains(
    dsn: str, db: asyncpg.Connection
) -> None:
    # Two requests at a time, 20 ms each: the backlog takes far longer than 10 s to drain.
    overrides = {
        "daemon": {"poll_interval_s": F_POLL_S, "shutdown_grace_s": 1.0},
        "http": {"per_endpoint_limit": 2},
    }
    loop = asyncio.get_running_loop()
    total = F_FIRST + 1 + F_BACKLOG
    late_conn = await asyncpg.connect(dsn, timeout=10)
    try:
        async with Receiver(default=("slow", 0.02)) as rx:
            ep_id, _ = await add_endpoint(dsn, rx.url_for("/f"))
            async with running_daemon(dsn, overrides):
                await publish_many(db, "bulk.x", F_FIRST)
                await rx.wait_for(20, timeout_s=10)  # draining, the daemon awake
                late_tx = late_conn.transaction()
                await late_tx.start()
                late_id = await publish(late_conn, "late.x", {"i": 0})
                await publish_many(db, "bulk.x", F_BACKLOG, first=F_FIRST + 1)
                # Fan-out has gone past the open transaction's event id.
                await wait_until(
                    db,
                    "SELECT EXISTS (SELECT 1 FROM hookd.events WHERE id > $1"
                    " AND fanned_out_at IS NOT NULL)",
                    late_id,
                    timeout_s=20,
                )
                await late_tx.commit()
                committed = loop.time()
                missed = await try_wait_until(
                    db,
                    "SELECT fanned_out_at IS NOT NULL FROM hookd.events WHERE id = $1",
                    late_id,
                    timeout_s=F_BOUND_S,
                )
                found_after = loop.time() - committed
                delivered = await db.fetchval(
                    "SELECT count(*) FROM hookd.deliveries WHERE endpoint_id = $1"
                    " AND state = 'delivered'",
                    ep_id,
                )
                not_fanned = await db.fetchval(
                    "SELECT count(*) FROM hookd.events WHERE fanned_out_at IS NULL"
                )
        assert delivered < total - 100, f"the backlog drained too fast to test: {delivered}"
        assert not missed, (
            f"the late event (id {late_id}) was not fanned out {found_after:.2f} s after its "
            f"commit (bound {F_BOUND_S} s); backlog then: {delivered} of {total} delivered, "
            f"{not_fanned} events not fanned out"
        )
    finally:
        await late_conn.close()
