"""The main path with a real daemon, real PostgreSQL and real receivers on loopback."""

from __future__ import annotations

import re
import socket
from datetime import datetime

import asyncpg
import orjson

from support.daemon import add_endpoint, publish, running_daemon, wait_until
from support.receiver import Receiver

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


async def test_fan_out_filters_and_tenants(dsn: str, db: asyncpg.Connection) -> None:
    async with Receiver() as rx:
        endpoints = {
            "/all": (("*",), None),
            "/orders": (("order.*",), None),
            "/user-created": (("user.created",), None),
            "/acme-all": (("*",), "acme"),
            "/acme-orders": (("order.*", "invoice.sent"), "acme"),
        }
        for path, (types, tenant) in endpoints.items():
            _, rx.secrets[path] = await add_endpoint(dsn, rx.url_for(path), types, tenant)
        events = [
            ("order.paid", None),
            ("order.refund.partial", None),
            ("user.created", None),
            ("user.deleted", None),
            (
                "orders.paid",
                None,
            ),  # 'order.*' must not match a type that merely starts with "order"
            ("order.paid", "acme"),
            ("invoice.sent", "acme"),
            ("user.created", "globex"),  # no endpoint of tenant globex: delivered nowhere
        ]
        for etype, tenant in events:
            await publish(db, etype, {"t": etype}, tenant=tenant)
        tx = db.transaction()
        await tx.start()
        await publish(db, "order.paid", {"rolled": "back"})
        await tx.rollback()

        expected = {
            "/all": [
                "order.paid",
                "order.refund.partial",
                "user.created",
                "user.deleted",
                "orders.paid",
            ],
            "/orders": ["order.paid", "order.refund.partial"],
            "/user-created": ["user.created"],
            "/acme-all": ["order.paid", "invoice.sent"],
            "/acme-orders": ["order.paid", "invoice.sent"],
        }
        total = sum(map(len, expected.values()))
        async with running_daemon(dsn):
            await rx.wait_for(total, timeout_s=10)
            await wait_until(
                db, "SELECT count(*) = $1 FROM hookd.deliveries WHERE state = 'delivered'", total
            )
        got = {p: sorted(r.json["type"] for r in rx.requests_for(p)) for p in endpoints}
        assert got == {p: sorted(v) for p, v in expected.items()}
        assert rx.count == total, "nothing beyond the expected deliveries (rolled back, globex)"
        assert all(r.verified for r in rx.requests), [r.verify_error for r in rx.requests]
        assert await db.fetchval("SELECT count(*) FROM hookd.events") == len(events)
        assert await db.fetchval("SELECT count(*) FROM hookd.deliveries") == total


async def test_request_shape_and_shared_webhook_id(dsn: str, db: asyncpg.Connection) -> None:
    async with Receiver() as rx:
        for path in ("/a", "/b"):
            _, rx.secrets[path] = await add_endpoint(dsn, rx.url_for(path))
        event_id = await publish(db, "order.paid", {"id": 7, "items": [1, 2], "note": "ünï"})
        async with running_daemon(dsn):
            await rx.wait_for(2, timeout_s=10)
        a, b = rx.requests_for("/a")[0], rx.requests_for("/b")[0]
        assert a.method == "POST"
        assert a.headers["Content-Type"] == "application/json"
        assert a.json["type"] == "order.paid"
        assert a.json["data"] == {"id": 7, "items": [1, 2], "note": "ünï"}
        assert RFC3339_UTC.match(a.json["timestamp"]), a.json["timestamp"]
        published = await db.fetchval("SELECT created_at FROM hookd.events WHERE id = $1", event_id)
        assert datetime.fromisoformat(a.json["timestamp"]) == published
        assert a.webhook_id == b.webhook_id and a.webhook_id is not None
        assert a.verified and b.verified


async def test_retry_after_500_then_success(dsn: str, db: asyncpg.Connection) -> None:
    async with Receiver() as rx:
        _, rx.secrets["/flaky"] = await add_endpoint(dsn, rx.url_for("/flaky"))
        rx.script("/flaky", [500, 503, 200])
        await publish(db, "order.paid", {"id": 1})
        async with running_daemon(dsn):
            await rx.wait_for(3, path="/flaky", timeout_s=10)
            await wait_until(db, "SELECT state = 'delivered' FROM hookd.deliveries")
        ids = rx.ids_for("/flaky")
        assert len(set(ids)) == 1, "every attempt carries the same webhook-id"
        assert all(r.verified for r in rx.requests)
        row = await db.fetchrow("SELECT attempts, last_status, last_error FROM hookd.deliveries")
        assert row is not None and row["attempts"] == 3 and row["last_status"] == 200
        attempts = await db.fetch(
            "SELECT attempt, status, error FROM hookd.attempts ORDER BY attempt"
        )
        assert [(a["attempt"], a["status"]) for a in attempts] == [(1, 500), (2, 503), (3, 200)]
        assert attempts[0]["error"] == "HTTP 500" and attempts[2]["error"] is None


async def test_exhausted_retries_dead_letter_then_manual_retry(
    dsn: str, db: asyncpg.Connection
) -> None:
    async with Receiver() as rx:
        _, rx.secrets["/down"] = await add_endpoint(dsn, rx.url_for("/down"))
        rx.script("/down", [500])
        await publish(db, "order.paid", {"id": 1})
        async with running_daemon(dsn) as daemon:
            await wait_until(db, "SELECT state = 'failed' FROM hookd.deliveries")
            assert len(rx.requests_for("/down")) == 4  # max_attempts in the test settings
            assert await db.fetchval("SELECT count(*) FROM hookd.attempts") == 4
            rx.script("/down", [200])
            assert daemon.dispatcher is not None
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
            assert pool is not None
            try:
                from hookd.store import Store

                revived = await Store(pool).retry_failed(endpoint_id=None, ids=None)
            finally:
                await pool.close()
            assert len(revived) == 1
            await rx.wait_for(5, path="/down", timeout_s=10)
            await wait_until(db, "SELECT state = 'delivered' FROM hookd.deliveries")
        assert await db.fetchval("SELECT attempts FROM hookd.deliveries") == 5


async def test_connection_refused_is_a_retryable_failure(dsn: str, db: asyncpg.Connection) -> None:
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    await add_endpoint(dsn, f"http://127.0.0.1:{port}/x")
    await publish(db, "order.paid", {})
    async with running_daemon(dsn, {"retry": {"schedule_s": [0.0, 30.0]}}):
        await wait_until(db, "SELECT attempts = 1 AND lease_owner IS NULL FROM hookd.deliveries")
    row = await db.fetchrow(
        "SELECT state, next_attempt_at > now() + interval '20 seconds' AS later FROM hookd.deliveries"
    )
    assert row is not None and row["state"] == "pending" and row["later"]
    error = await db.fetchval("SELECT error FROM hookd.attempts")
    assert error is not None and "connect" in error.lower()


async def test_disabled_endpoint_receives_nothing_until_enabled(
    dsn: str, db: asyncpg.Connection
) -> None:
    from hookd.store import Store

    async with Receiver() as rx:
        ep_id, rx.secrets["/x"] = await add_endpoint(dsn, rx.url_for("/x"))
        rx.script("/x", [500, 204])
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
        assert pool is not None
        store = Store(pool)
        try:
            await publish(db, "a.first", {})
            async with running_daemon(dsn, {"retry": {"schedule_s": [0.0, 1.0]}}):
                await rx.wait_for(1, timeout_s=10)
                await wait_until(
                    db, "SELECT attempts = 1 AND lease_owner IS NULL FROM hookd.deliveries"
                )
                assert await store.set_endpoint_enabled(ep_id, False, "test") == 1
                await publish(db, "a.second", {})  # published while disabled: never delivered
                await wait_until(
                    db,
                    "SELECT fanned_out_at IS NOT NULL FROM hookd.events WHERE event_type = 'a.second'",
                )
                assert await db.fetchval("SELECT state FROM hookd.deliveries") == "paused"
                assert rx.count == 1
                assert await store.set_endpoint_enabled(ep_id, True, None) == 1
                await rx.wait_for(2, timeout_s=10)
                await wait_until(db, "SELECT state = 'delivered' FROM hookd.deliveries")
            assert [r.json["type"] for r in rx.requests] == ["a.first", "a.first"]
        finally:
            await pool.close()


async def test_endpoint_added_later_gets_only_newer_events(
    dsn: str, db: asyncpg.Connection
) -> None:
    async with Receiver() as rx:
        await publish(db, "a.old", {})
        await db.execute("SELECT pg_sleep(0.01)")  # distinct transaction timestamps
        _, rx.secrets["/x"] = await add_endpoint(dsn, rx.url_for("/x"))
        await publish(db, "a.new", {})
        async with running_daemon(dsn):
            await rx.wait_for(1, timeout_s=10)
            await wait_until(
                db, "SELECT count(*) = 2 FROM hookd.events WHERE fanned_out_at IS NOT NULL"
            )
        assert [orjson.loads(r.body)["type"] for r in rx.requests] == ["a.new"]


async def test_deleted_endpoint_receives_nothing_and_its_deliveries_fail(
    dsn: str, db: asyncpg.Connection
) -> None:
    from hookd.store import Store

    async with Receiver() as rx:
        ep_id, rx.secrets["/x"] = await add_endpoint(dsn, rx.url_for("/x"))
        rx.script("/x", [500])
        await publish(db, "a.first", {})
        async with running_daemon(dsn, {"retry": {"schedule_s": [0.0, 1.0]}}):
            await rx.wait_for(1, timeout_s=10)
            await wait_until(
                db, "SELECT attempts = 1 AND lease_owner IS NULL FROM hookd.deliveries"
            )
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
            assert pool is not None
            try:
                assert await Store(pool).delete_endpoint(ep_id)
                assert not await Store(pool).delete_endpoint(ep_id)
            finally:
                await pool.close()
            row = await db.fetchrow("SELECT state, last_error FROM hookd.deliveries")
            assert row is not None and tuple(row) == ("failed", "endpoint deleted")
            await publish(db, "a.second", {})
            await wait_until(db, "SELECT bool_and(fanned_out_at IS NOT NULL) FROM hookd.events")
        # The retry (due 1 s after the first attempt) and the new event went nowhere.
        assert rx.count == 1
        assert await db.fetchval("SELECT count(*) FROM hookd.deliveries") == 1
