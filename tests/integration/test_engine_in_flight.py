"""Deliveries in flight while endpoints change, and the lease that bounds every attempt.

Each test runs the real daemon (`running_daemon`) against real PostgreSQL and loopback receivers,
changes endpoints only through `hookd.store.Store`, and judges only what is seen from outside: the
requests the receiver got (with their arrival and completion times), and the database rows.

- test_endpoint_change_while_in_flight_sends_each_event_once: disabling and re-enabling an
  endpoint, changing its URL (to another path on the same receiver) or its settings while slow
  requests are in flight: every webhook-id is received exactly once, no two requests for one
  webhook-id overlap, nothing is sent after a 2xx, and every delivery ends 'delivered'.
- test_delete_while_in_flight_keeps_answered_deliveries_delivered: deleting an endpoint while its
  requests are in flight: a 2xx answered for one of them still ends 'delivered' (not 'failed
  endpoint deleted'); no request goes out for a delivery the database already settled, and the
  daemon stops sending to the deleted endpoint soon after.
- test_an_attempt_never_outlives_its_lease: a receiver that drops reused keep-alive connections
  late (so hookd's one fresh-connection resend runs after the first send): no attempt (first send
  plus resend) lasts longer than the lease minus a margin, no 2xx answer is followed by another
  request for the same webhook-id, and no two requests for one delivery overlap.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from support.daemon import add_endpoint, running_daemon
from support.spans import (
    SpanReceiver,
    by_webhook_id,
    open_store,
    overlaps_and_resends,
    publish_many,
    states_by_marker,
    try_wait_until,
)

# -- A: endpoint changes while deliveries are in flight --------------------------------------------

A_EVENTS = 50
A_SLOW_S = 1.5


@pytest.mark.parametrize("change", ["disable-enable", "set-url", "settings"])
async def test_endpoint_change_while_in_flight_sends_each_event_once(
    dsn: str, db: asyncpg.Connection, change: str
) -> None:
    pool, store = await open_store(dsn)
    try:
        async with SpanReceiver(default=("slow", A_SLOW_S)) as rx:
            ep_id, _ = await add_endpoint(dsn, rx.url_for("/a"))
            await publish_many(db, "a.x", A_EVENTS)
            async with running_daemon(dsn):
                # Requests in flight: the change lands while their answers are pending.
                await rx.wait_for(lambda r: r.in_flight >= 10, timeout_s=10)
                if change == "disable-enable":
                    assert await store.set_endpoint_enabled(ep_id, False, "maintenance") is not None
                    assert await store.set_endpoint_enabled(ep_id, True, None) is not None
                elif change == "set-url":
                    assert await store.set_url(ep_id, rx.url_for("/a2"))
                else:
                    settings = {"max_concurrency": 8, "total_timeout_s": 4.0}
                    assert await store.set_endpoint_settings(ep_id, settings)
                timed_out = await try_wait_until(
                    db,
                    "SELECT count(*) = $1 FROM hookd.deliveries WHERE state = 'delivered'",
                    A_EVENTS,
                    timeout_s=20,
                )
            # The daemon has stopped: every request it will ever send has been recorded.
        spans = rx.spans
        overlapping, after_2xx = overlaps_and_resends(spans)
        counts = {wid: len(g) for wid, g in by_webhook_id(spans).items()}
        repeated = {wid: n for wid, n in counts.items() if n != 1}
        states = await states_by_marker(db, ep_id)
        not_delivered = {
            i: (r["state"], r["last_error"]) for i, r in states.items() if r["state"] != "delivered"
        }
        summary = (
            f"{change}: {len(spans)} requests for {A_EVENTS} events ({len(counts)} webhook-ids); "
            f"{len(repeated)} ids received more than once, {len(overlapping)} with overlapping "
            f"requests, {len(after_2xx)} resent after a 2xx; not delivered: {not_delivered}"
        )
        assert not after_2xx, f"{summary}\nfirst: {after_2xx[:2]}"
        assert not overlapping, f"{summary}\nfirst: {overlapping[:2]}"
        assert not repeated and len(counts) == A_EVENTS, summary
        assert not timed_out and not not_delivered, f"{summary}\n{timed_out}"
    finally:
        await pool.close()


DELETE_LIMIT = 10
"""Per-endpoint concurrency in the delete test: requests go out in waves of this many."""
DELETE_NOTICE_S = 3.0
"""How soon after `delete_endpoint` the daemon must have stopped starting requests to it."""


async def test_delete_while_in_flight_keeps_answered_deliveries_delivered(
    dsn: str, db: asyncpg.Connection
) -> None:
    pool, store = await open_store(dsn)
    loop = asyncio.get_running_loop()
    try:
        async with SpanReceiver(default=("slow", A_SLOW_S)) as rx:
            ep_id, _ = await add_endpoint(dsn, rx.url_for("/d"))
            await publish_many(db, "d.x", A_EVENTS)
            overrides = {"http": {"per_endpoint_limit": DELETE_LIMIT}}
            async with running_daemon(dsn, overrides):
                await rx.wait_for(lambda r: r.in_flight >= DELETE_LIMIT, timeout_s=10)
                assert await store.delete_endpoint(ep_id)
                deleted_at = loop.time()
                # The requests in flight at the delete are answered; wait for their outcomes.
                await rx.wait_for(lambda r: r.in_flight == 0, timeout_s=10)
                timed_out = await try_wait_until(
                    db,
                    "SELECT count(*) = 0 FROM hookd.deliveries d JOIN hookd.events e"
                    " ON e.id = d.event_id WHERE d.state = 'pending'"
                    " AND (e.payload->>'i')::int = ANY($1::int[])",
                    [s.marker for s in rx.spans],
                    timeout_s=10,
                )
        states = await states_by_marker(db, ep_id)
        spans = rx.spans
        answered = [s for s in spans if s.status is not None and 200 <= s.status < 300]
        lost = {
            s.marker: (states[s.marker]["state"], states[s.marker]["last_error"])
            for s in answered
            if s.marker in states and states[s.marker]["state"] != "delivered"
        }
        after_settled = [
            s.describe()
            for s in spans
            if (r := states.get(s.marker)) is not None
            and r["state"] != "delivered"
            and r["finished_at"] is not None
            and s.start_wall > r["finished_at"].timestamp()
        ]
        late = [s.describe() for s in spans if s.start > deleted_at + DELETE_NOTICE_S]
        started_after = sum(1 for s in spans if s.start > deleted_at)
        summary = (
            f"{len(spans)} requests, {len(answered)} answered 2xx, {started_after} started after "
            f"the delete; answered but not delivered: {len(lost)} {dict(list(lost.items())[:3])}; "
            f"sent after the database settled the delivery: {len(after_settled)}; "
            f"sent more than {DELETE_NOTICE_S} s after the delete: {len(late)}"
        )
        assert not lost, summary
        assert not after_settled, f"{summary}\nfirst: {after_settled[:2]}"
        assert not late, f"{summary}\nfirst: {late[:2]}"
        assert not timed_out, f"{summary}\n{timed_out}"
    finally:
        await pool.close()


# -- B: an attempt never outlives its lease --------------------------------------------------------

LEASE_S = 5.0
LEASE_MARGIN_S = 0.5
B_EVENTS = 8
B_FIRST_S = 2.6
"""A request on a new connection is answered 204 after this long."""
B_DROP_S = 2.8
"""A request on a reused connection is dropped unanswered after this long."""


async def test_an_attempt_never_outlives_its_lease(dsn: str, db: asyncpg.Connection) -> None:
    overrides = {
        "daemon": {"lease_s": LEASE_S},
        # Accepted by validation (lease_s > total_timeout_s + flush_interval_s).
        "http": {"total_timeout_s": 4.0, "connect_timeout_s": 1.0, "per_endpoint_limit": 4},
        "retry": {"schedule_s": [0.0, 0.2], "max_attempts": 20, "jitter": 0.0},
        "breaker": {"failure_threshold": 1000},
    }
    async with SpanReceiver(default=("slow", B_FIRST_S)) as rx:
        rx.late_drop["/b"] = B_DROP_S
        ep_id, _ = await add_endpoint(dsn, rx.url_for("/b"))
        await publish_many(db, "b.x", B_EVENTS)
        async with running_daemon(dsn, overrides):
            timed_out = await try_wait_until(
                db,
                "SELECT count(*) = $1 FROM hookd.deliveries WHERE state = 'delivered'",
                B_EVENTS,
                timeout_s=60,
            )
    attempts = await db.fetch(
        "SELECT a.delivery_id, a.attempt, a.duration_s, a.status, a.error FROM hookd.attempts a"
        " JOIN hookd.deliveries d ON d.id = a.delivery_id WHERE d.endpoint_id = $1"
        " ORDER BY a.duration_s DESC",
        ep_id,
    )
    spans = rx.spans
    too_long = [dict(r) for r in attempts if r["duration_s"] > LEASE_S - LEASE_MARGIN_S]
    overlapping, after_2xx = overlaps_and_resends(spans)
    reused_drops = sum(1 for s in spans if s.reused)
    summary = (
        f"{len(spans)} requests ({reused_drops} dropped on reused connections) for {B_EVENTS} "
        f"events, {len(attempts)} attempts logged, longest "
        f"{attempts[0]['duration_s'] if attempts else 0:.2f} s (lease {LEASE_S} s); "
        f"{len(too_long)} attempts over {LEASE_S - LEASE_MARGIN_S} s; {len(after_2xx)} 2xx "
        f"answers followed by another request; {len(overlapping)} ids with overlapping requests"
    )
    assert reused_drops > 0, f"the scenario needs reused connections: {summary}"
    assert not too_long, f"{summary}\nfirst: {too_long[:2]}"
    assert not after_2xx, f"{summary}\nfirst: {after_2xx[:2]}"
    assert not overlapping, f"{summary}\nfirst: {overlapping[:2]}"
    assert not timed_out, f"{summary}\n{timed_out}"
