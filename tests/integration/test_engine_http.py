"""HTTP etiquette with a real daemon: body caps, redirects, Retry-After, 410 Gone, keep-alive.

Receivers on loopback play the misbehaving servers; the database shows what hookd decided.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from email.utils import formatdate, parsedate_to_datetime

import asyncpg

from hookd.daemon import Daemon
from hookd.store import Store

from support.daemon import add_endpoint, publish, running_daemon, wait_until
from support.receiver import CLOSE, DROP, ENDLESS, HUGE, Receiver

BASE: dict[str, dict[str, object]] = {
    "http": {"total_timeout_s": 2.0, "connect_timeout_s": 1.0},
    "daemon": {"lease_s": 10.0},
    "retry": {"schedule_s": [0.0, 30.0], "max_attempts": 2, "jitter": 0.0},
}


def settings(**sections: dict[str, object]) -> dict[str, dict[str, object]]:
    """BASE with `sections` merged in, section by section."""
    merged = {name: dict(values) for name, values in BASE.items()}
    for name, values in sections.items():
        merged.setdefault(name, {}).update(values)
    return merged


async def attempts_of(db: asyncpg.Connection, endpoint_id: int) -> list[asyncpg.Record]:
    """The attempt-log rows of an endpoint's deliveries, in order."""
    return list(
        await db.fetch(
            "SELECT a.delivery_id, a.attempt, a.started_at, a.duration_s, a.status, a.error,"
            " a.response_body FROM hookd.attempts a JOIN hookd.deliveries d"
            " ON d.id = a.delivery_id WHERE d.endpoint_id = $1 ORDER BY a.delivery_id, a.attempt",
            endpoint_id,
        )
    )


async def test_huge_and_endless_bodies_are_cut_at_the_cap(dsn: str, db: asyncpg.Connection) -> None:
    cap = 100
    async with Receiver() as rx:
        scripts = {"/huge-ok": HUGE, "/huge-500": ("huge", 500), "/endless": ENDLESS}
        ids = {}
        for path, behaviour in scripts.items():
            rx.script(path, [behaviour, 204])
            ids[path], _ = await add_endpoint(dsn, rx.url_for(path), (f"t{len(ids)}.*",))
            await publish(db, f"t{len(ids) - 1}.x", {"path": path})
        async with running_daemon(dsn, settings(http={"response_body_max_bytes": cap})):
            await wait_until(
                db,
                "SELECT count(*) = 3 FROM hookd.deliveries"
                " WHERE attempts = 1 AND lease_owner IS NULL",
            )
            # Reading stopped at the cap and the connections were closed: no handler still
            # writing a body (the endless one would write forever otherwise).
            await rx.wait_for(lambda r: r.in_flight == 0, timeout_s=1.0)
            # The origin's pool still works afterwards.
            after_id, _ = await add_endpoint(dsn, rx.url_for("/after"), ("after.*",))
            await publish(db, "after.x", {})
            await wait_until(
                db,
                "SELECT state = 'delivered' FROM hookd.deliveries WHERE endpoint_id = $1",
                after_id,
            )
        states = dict(await db.fetch("SELECT endpoint_id, state FROM hookd.deliveries"))
        assert states[ids["/huge-ok"]] == "delivered"
        assert states[ids["/endless"]] == "delivered"
        assert states[ids["/huge-500"]] == "pending"  # classified by its status: a retry
        for path, ep_id in ids.items():
            (row,) = await attempts_of(db, ep_id)
            assert row["status"] == (500 if path == "/huge-500" else 200), dict(row)
            body = row["response_body"]
            assert body is not None and len(body) <= cap and set(body) == {"x"}, (path, body)
            assert row["duration_s"] < 1.0, dict(row)
        (err,) = [r["error"] for r in await attempts_of(db, ids["/huge-500"])]
        assert err == "HTTP 500"


async def test_redirects_are_failed_attempts_and_the_target_sees_nothing(
    dsn: str, db: asyncpg.Connection
) -> None:
    statuses = (301, 307, 308)
    retry_s = 0.5
    async with Receiver() as rx, Receiver() as target:
        ids = {}
        for status in statuses:
            path = f"/r{status}"
            rx.script(path, [("redirect", status, target.url_for("/target"))])
            ids[status], _ = await add_endpoint(dsn, rx.url_for(path), (f"r{status}.*",))
            await publish(db, f"r{status}.x", {})
        overrides = settings(retry={"schedule_s": [0.0, retry_s], "max_attempts": 3, "jitter": 0.0})
        async with running_daemon(dsn, overrides):
            await wait_until(
                db, "SELECT count(*) = 3 FROM hookd.deliveries WHERE state = 'failed'", timeout_s=10
            )
        assert target.count == 0
        for status, ep_id in ids.items():
            rows = await attempts_of(db, ep_id)
            assert [r["status"] for r in rows] == [status] * 3
            assert all(r["error"] == f"redirect not followed (HTTP {status})" for r in rows), rows
            # Retried on the schedule: not before it, and not left for much longer.
            for prev, nxt in itertools.pairwise(rows):
                end = prev["started_at"].timestamp() + prev["duration_s"]
                gap = nxt["started_at"].timestamp() - end
                assert retry_s - 0.05 <= gap <= retry_s + 1.2, gap
        assert len(rx.requests) == 9


async def test_retry_after_in_both_forms_sets_the_next_attempt_capped(
    dsn: str, db: asyncpg.Connection
) -> None:
    cap_s = 4.0
    now = time.time()
    soon = formatdate(now + 3.5, usegmt=True)  # whole seconds: 2.5 to 3.5 s from now
    soon_s = parsedate_to_datetime(soon).timestamp()
    cases: dict[str, tuple[object, str, float]] = {
        # path: (behaviour, how the expected time is counted, seconds)
        "/s429": ((429, {"Retry-After": "2"}), "after", 2.0),
        "/s503": ((503, {"Retry-After": "2"}), "after", 2.0),
        "/d429": ((429, {"Retry-After": soon}), "at", soon_s),
        "/d503": ((503, {"Retry-After": soon}), "at", soon_s),
        "/cap-s": ((429, {"Retry-After": "3600"}), "after", cap_s),
        "/cap-d": ((503, {"Retry-After": formatdate(now + 3600, usegmt=True)}), "after", cap_s),
        "/none": (503, "after", 30.0),  # no header: the schedule
        "/other": ((500, {"Retry-After": "2"}), "after", 30.0),  # only 429 and 503 count
    }
    async with Receiver() as rx:
        ids = {}
        for i, (path, (behaviour, _, _)) in enumerate(cases.items()):
            rx.script(path, [behaviour, 204])  # type: ignore[list-item]
            ids[path], _ = await add_endpoint(dsn, rx.url_for(path), (f"k{i}.*",))
            await publish(db, f"k{i}.x", {})
        # And one that is followed through: the second attempt really waits for Retry-After.
        rx.script("/then-ok", [(429, {"Retry-After": "1"}), 204])
        then_ok, _ = await add_endpoint(dsn, rx.url_for("/then-ok"), ("then.*",))
        await publish(db, "then.x", {})
        overrides = settings(http={"max_retry_after_s": cap_s})
        async with running_daemon(dsn, overrides):
            await wait_until(
                db,
                "SELECT count(*) = $1 FROM hookd.deliveries"
                " WHERE attempts = 1 AND lease_owner IS NULL AND state = 'pending'",
                len(cases),
            )
            rows = {
                r["endpoint_id"]: r
                for r in await db.fetch(
                    "SELECT d.endpoint_id, d.next_attempt_at, a.started_at, a.duration_s, a.status"
                    " FROM hookd.deliveries d JOIN hookd.attempts a ON a.delivery_id = d.id"
                    " WHERE a.attempt = 1"
                )
            }
            await wait_until(
                db,
                "SELECT state = 'delivered' FROM hookd.deliveries WHERE endpoint_id = $1",
                then_ok,
                timeout_s=5,
            )
        for path, (_, kind, seconds) in cases.items():
            r = rows[ids[path]]
            answered = r["started_at"].timestamp() + r["duration_s"]
            expected = answered + seconds if kind == "after" else seconds
            off = r["next_attempt_at"].timestamp() - expected
            assert -0.05 <= off <= 0.3, (path, off, r["status"])
        first, second = rx.requests_for("/then-ok")
        waited = second.received_wall_s - first.received_wall_s
        assert 0.95 <= waited <= 2.5, waited


async def test_429_cuts_the_endpoint_concurrency_and_success_grows_it_back(
    dsn: str, db: asyncpg.Connection
) -> None:
    limit = 4
    async with Receiver() as rx:
        await add_endpoint(dsn, rx.url_for("/x"))
        # The first `limit` requests (sent together) are refused; later ones take 0.2 s each.
        rx.script("/x", [429] * limit + [("slow", 0.2)])
        await db.execute(
            "SELECT hookd.publish(event_type => 'a.x', payload => '{}') FROM generate_series(1, 12)"
        )
        overrides = settings(
            http={"per_endpoint_limit": limit},
            retry={"schedule_s": [0.0, 0.1], "max_attempts": 3, "jitter": 0.0},
        )
        async with running_daemon(dsn, overrides):
            await wait_until(
                db,
                "SELECT count(*) = 12 FROM hookd.deliveries WHERE state = 'delivered'",
                timeout_s=10,
            )
        got = rx.requests
        assert [r.status for r in got[:limit]] == [429] * limit
        # Four 429s halve the limit to 1: the next request goes alone, the one after it only
        # once it has been answered (0.2 s later).
        alone = got[limit + 1].received_wall_s - got[limit].received_wall_s
        assert alone >= 0.18, alone
        # Successes grow the limit again (never beyond the configured one). Each later request
        # is handled for 0.2 s from its arrival: count how many overlapped at most.
        starts = [r.received_wall_s for r in got[limit:]]
        overlap = max(sum(1 for t in starts if t <= s < t + 0.2) for s in starts)
        assert 2 <= overlap <= limit, overlap


async def test_410_gone_disables_the_endpoint_until_it_is_enabled(
    dsn: str, db: asyncpg.Connection
) -> None:
    async with Receiver() as rx:
        gone_id, _ = await add_endpoint(dsn, rx.url_for("/gone"), ("a.*",))
        other_id, _ = await add_endpoint(dsn, rx.url_for("/other"), ("a.*",))
        rx.script("/gone", [410])
        for i in range(3):
            await publish(db, f"a.e{i}", {})
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
        assert pool is not None
        overrides = settings(
            http={"per_endpoint_limit": 1},
            retry={"schedule_s": [0.0, 0.2], "max_attempts": 5, "jitter": 0.0},
        )
        try:
            async with running_daemon(dsn, overrides):
                await wait_until(
                    db,
                    "SELECT count(*) = 3 FROM hookd.deliveries"
                    " WHERE endpoint_id = $1 AND state = 'paused' AND lease_owner IS NULL",
                    gone_id,
                )
                ep = await db.fetchrow(
                    "SELECT enabled, disabled_reason FROM hookd.endpoints WHERE id = $1", gone_id
                )
                assert ep is not None and ep["enabled"] is False
                assert "410" in (ep["disabled_reason"] or ""), ep["disabled_reason"]
                assert len(rx.requests_for("/gone")) == 1, "no attempt after the 410"
                # Events published now are not for the disabled endpoint; others still get them.
                await publish(db, "a.later", {})
                await rx.wait_for(4, path="/other")
                await wait_until(
                    db, "SELECT count(*) = 4 FROM hookd.deliveries WHERE state = 'delivered'"
                )
                assert len(rx.requests_for("/gone")) == 1

                # `hookd endpoint enable` resumes the paused deliveries.
                rx.script("/gone", [204])
                assert await Store(pool).set_endpoint_enabled(gone_id, True, None) == 3
                await wait_until(
                    db,
                    "SELECT count(*) = 3 FROM hookd.deliveries"
                    " WHERE endpoint_id = $1 AND state = 'delivered'",
                    gone_id,
                    timeout_s=5,
                )
        finally:
            await pool.close()
        got = rx.requests_for("/gone")
        assert [r.status for r in got] == [410, 204, 204, 204]
        assert sorted(r.json["type"] for r in got[1:]) == ["a.e0", "a.e1", "a.e2"]
        assert other_id != gone_id


async def daemon_sees_enabled(daemon: Daemon, endpoint_id: int, enabled: bool) -> None:
    """Wait (bounded) until the daemon's endpoint cache says `enabled` for the endpoint.

    The daemon reloads endpoints every few seconds and signals nothing when it does; reading its
    cache (without touching it) replaces a sleep "long enough for a reload".
    """
    dispatcher = daemon.dispatcher
    assert dispatcher is not None
    async with asyncio.timeout(5):
        while True:
            rt = dispatcher._endpoints.get(endpoint_id)
            if rt is not None and rt.endpoint.enabled is enabled:
                return
            await asyncio.sleep(0.01)


async def test_enable_resumes_deliveries_right_after_the_daemon_saw_the_disable(
    dsn: str, db: asyncpg.Connection
) -> None:
    async with Receiver() as rx:
        ep_id, _ = await add_endpoint(dsn, rx.url_for("/x"), ("a.*",))
        await add_endpoint(dsn, rx.url_for("/other"), ("b.*",))
        rx.script("/x", [500, 204])
        await publish(db, "a.x", {})
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
        assert pool is not None
        store = Store(pool)
        try:
            async with running_daemon(dsn, BASE) as daemon:
                await wait_until(
                    db, "SELECT attempts = 1 AND lease_owner IS NULL FROM hookd.deliveries"
                )
                assert await store.set_endpoint_enabled(ep_id, False, "maintenance") == 1
                await daemon_sees_enabled(daemon, ep_id, False)
                assert await store.set_endpoint_enabled(ep_id, True, None) == 1
                await publish(db, "b.wake", {})  # the daemon claims at once, not at the poll
                await wait_until(
                    db,
                    "SELECT state = 'delivered' FROM hookd.deliveries WHERE endpoint_id = $1",
                    ep_id,
                    timeout_s=5,
                )
        finally:
            await pool.close()
        assert [r.status for r in rx.requests_for("/x")] == [500, 204]


async def test_keep_alive_closed_after_every_answer_costs_no_failed_attempt(
    dsn: str, db: asyncpg.Connection
) -> None:
    n = 30
    async with Receiver(default=CLOSE) as rx:
        ep_id, _ = await add_endpoint(dsn, rx.url_for("/close"))
        await db.execute(
            "SELECT hookd.publish(event_type => 'a.x', payload => '{}') FROM generate_series(1, $1)",
            n,
        )
        async with running_daemon(dsn, settings(http={"per_endpoint_limit": 1})):
            await wait_until(
                db,
                "SELECT count(*) = $1 FROM hookd.deliveries WHERE state = 'delivered'",
                n,
                timeout_s=10,
            )
        rows = await attempts_of(db, ep_id)
        assert [(r["status"], r["error"]) for r in rows] == [(204, None)] * n
        assert rx.count == n


async def test_receiver_restart_does_not_fail_the_next_delivery(
    dsn: str, db: asyncpg.Connection
) -> None:
    async with Receiver() as rx:
        ep_id, _ = await add_endpoint(dsn, rx.url_for("/x"))
        async with running_daemon(dsn, BASE):
            for i in range(3):
                await publish(db, f"a.e{i}", {})
                await wait_until(
                    db,
                    "SELECT count(*) = $1 FROM hookd.deliveries WHERE state = 'delivered'",
                    i + 1,
                )
                # The daemon's pooled connection to this origin is now closed by the server.
                await rx.stop()
                await rx.start()
        rows = await attempts_of(db, ep_id)
        assert [(r["status"], r["error"]) for r in rows] == [(204, None)] * 3


async def test_disconnect_on_a_reused_connection_is_resent_at_once_on_a_fresh_one(
    dsn: str, db: asyncpg.Connection
) -> None:
    async with Receiver() as rx:
        ep_id, _ = await add_endpoint(dsn, rx.url_for("/x"))
        rx.script("/x", [204, DROP, 204])
        async with running_daemon(dsn, BASE):
            await publish(db, "a.first", {})
            await wait_until(db, "SELECT state = 'delivered' FROM hookd.deliveries")
            # The second event goes over the kept-alive connection, which the receiver drops.
            await publish(db, "a.second", {})
            await wait_until(
                db, "SELECT count(*) = 2 FROM hookd.deliveries WHERE state = 'delivered'"
            )
        rows = await attempts_of(db, ep_id)
        assert [(r["attempt"], r["status"], r["error"]) for r in rows] == [(1, 204, None)] * 2
        ids = rx.ids_for("/x")
        assert len(ids) == 3 and ids[1] == ids[2] != ids[0]


async def test_disconnect_on_a_fresh_connection_is_a_failed_attempt_retried_on_schedule(
    dsn: str, db: asyncpg.Connection
) -> None:
    """Only a reused keep-alive connection gets the immediate second try (issue 3, point 4).

    A receiver that takes a request on a new connection and drops it has seen the attempt: it is
    logged as a failure ("server disconnected") and retried on the schedule, not resent at once.
    """
    retry_s = 0.5
    async with Receiver() as rx:
        ep_id, _ = await add_endpoint(dsn, rx.url_for("/x"))
        rx.script("/x", [DROP, 204])
        await publish(db, "a.first", {})
        overrides = settings(retry={"schedule_s": [0.0, retry_s], "max_attempts": 3})
        async with running_daemon(dsn, overrides):
            await wait_until(db, "SELECT state = 'delivered' FROM hookd.deliveries", timeout_s=5)
        rows = await attempts_of(db, ep_id)
        assert [(r["attempt"], r["status"]) for r in rows] == [(1, None), (2, 204)], rows
        assert (rows[0]["error"] or "").startswith("server disconnected"), rows[0]["error"]
        first, second = rx.requests_for("/x")
        assert second.received_wall_s - first.received_wall_s >= retry_s - 0.05
