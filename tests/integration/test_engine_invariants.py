"""Delivery invariants the engine must keep under change, slowness and load (real daemon, real DB).

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
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp import web

from hookd.signing import generate_secret
from hookd.store import Store

from support.daemon import add_endpoint, publish, running_daemon, wait_until
from support.receiver import Receiver

# -- a receiver that also records when each request ended, and on which connection ----------------


@dataclass(slots=True)
class Span:
    """One request as the receiver handled it: from arrival to the end of its handler.

    `status` is the status answered, None when the connection was dropped or the client gave up
    before the answer. `reused` tells whether an earlier request came on the same connection.
    Times are the test loop's `loop.time()`; `start_wall` is `time.time()` at arrival.
    """

    webhook_id: str | None
    path: str
    marker: Any
    reused: bool
    start: float
    start_wall: float
    end: float | None = None
    status: int | None = None

    def describe(self) -> str:
        end = f"{self.end:.3f}" if self.end is not None else "open"
        return (
            f"{self.path} {self.webhook_id} reused={self.reused} "
            f"[{self.start:.3f} .. {end}] -> {self.status}"
        )


class SpanReceiver(Receiver):
    """A `Receiver` that keeps a `Span` per request, and can drop reused connections late.

    `late_drop` maps a path to (seconds, behaviour): a request that arrives on a connection that
    already carried a request waits `seconds` and then has its connection aborted with no
    response; a request on a new connection is answered with the path's usual behaviour.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spans: list[Span] = []
        self.late_drop: dict[str, float] = {}
        self._served: dict[object, int] = {}

    def spans_for(self, path: str) -> list[Span]:
        return [s for s in self.spans if s.path == path]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        conn = request.protocol
        reused = self._served.get(conn, 0) > 0
        self._served[conn] = self._served.get(conn, 0) + 1
        body = await request.read()
        try:
            marker = (orjson.loads(body) or {}).get("data", {}).get("i")
        except (orjson.JSONDecodeError, AttributeError):
            marker = None
        span = Span(
            request.headers.get("webhook-id"),
            request.path,
            marker,
            reused,
            loop.time(),
            time.time(),
        )
        self.spans.append(span)
        try:
            drop_after = self.late_drop.get(request.path)
            if reused and drop_after is not None:
                # The scripted behaviour: hold the request, then drop it unanswered.
                await asyncio.sleep(drop_after)
                if request.transport is not None:
                    request.transport.abort()
                return web.Response(status=499)
            resp = await super()._handle(request)
            transport = request.transport
            if transport is not None and not transport.is_closing():
                span.status = resp.status
            return resp
        finally:
            span.end = loop.time()


def by_webhook_id(spans: list[Span]) -> dict[str | None, list[Span]]:
    groups: dict[str | None, list[Span]] = defaultdict(list)
    for s in sorted(spans, key=lambda s: s.start):
        groups[s.webhook_id].append(s)
    return groups


def overlaps_and_resends(spans: list[Span]) -> tuple[list[str], list[str]]:
    """(requests that overlapped another for the same webhook-id, requests sent after a 2xx)."""
    overlapping: list[str] = []
    after_2xx: list[str] = []
    for wid, group in by_webhook_id(spans).items():
        for i, s in enumerate(group[1:], start=1):
            if any(p.end is None or s.start < p.end for p in group[:i]):
                overlapping.append(f"{wid}: {[g.describe() for g in group]}")
                break
        for i, s in enumerate(group):
            if s.status is not None and 200 <= s.status < 300 and i + 1 < len(group):
                after_2xx.append(f"{wid}: {[g.describe() for g in group]}")
                break
    return overlapping, after_2xx


# -- shared helpers --------------------------------------------------------------------------------


async def publish_many(db: asyncpg.Connection, event_type: str, n: int, first: int = 1) -> None:
    """Publish `n` events of `event_type` in one transaction; payload {"i": first..first+n-1}."""
    await db.execute(
        "SELECT hookd.publish(event_type => $1, payload => jsonb_build_object('i', g))"
        " FROM generate_series($2::int, $3::int) AS g",
        event_type,
        first,
        first + n - 1,
    )


async def open_store(dsn: str) -> tuple[asyncpg.Pool, Store]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    assert pool is not None
    return pool, Store(pool)


async def add_endpoint_with(
    store: Store, url: str, event_types: tuple[str, ...], settings: dict[str, Any]
) -> int:
    ep = await store.add_endpoint(url, generate_secret(), event_types, None, settings)
    return ep.id


async def states_by_marker(db: asyncpg.Connection, endpoint_id: int) -> dict[int, asyncpg.Record]:
    """The endpoint's deliveries keyed by the event's payload marker `i`."""
    rows = await db.fetch(
        "SELECT (e.payload->>'i')::int AS i, d.state, d.last_error, d.finished_at, d.attempts"
        " FROM hookd.deliveries d JOIN hookd.events e ON e.id = d.event_id"
        " WHERE d.endpoint_id = $1",
        endpoint_id,
    )
    return {r["i"]: r for r in rows}


async def try_wait_until(db: asyncpg.Connection, query: str, *args: Any, timeout_s: float) -> str:
    """`wait_until`, returning its failure message instead of raising ("" when it held)."""
    try:
        await wait_until(db, query, *args, timeout_s=timeout_s)
    except AssertionError as exc:
        return str(exc)
    return ""


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
                    await asyncio.sleep(0.05)
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
