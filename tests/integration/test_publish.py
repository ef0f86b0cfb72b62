"""hookd.publish() in the application's transaction, and `migrate`."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from hookd import migrate

from support.daemon import publish


async def test_publish_returns_id_and_stores_event(db: asyncpg.Connection) -> None:
    event_id = await publish(db, "order.paid", {"id": 1})
    row = await db.fetchrow(
        "SELECT event_type, payload::text, tenant FROM hookd.events WHERE id = $1", event_id
    )
    assert row is not None
    assert (row["event_type"], row["payload"], row["tenant"]) == ("order.paid", '{"id": 1}', None)


async def test_rolled_back_publish_leaves_nothing(db: asyncpg.Connection) -> None:
    tx = db.transaction()
    await tx.start()
    await publish(db, "order.paid", {"id": 1})
    await tx.rollback()
    assert await db.fetchval("SELECT count(*) FROM hookd.events") == 0


async def test_idempotency_key_returns_first_event_per_tenant(db: asyncpg.Connection) -> None:
    first = await publish(db, "order.paid", {"n": 1}, idempotency_key="k1")
    again = await publish(db, "order.paid", {"n": 2}, idempotency_key="k1")
    other_tenant = await publish(db, "order.paid", {"n": 3}, idempotency_key="k1", tenant="acme")
    assert again == first
    assert other_tenant != first
    assert await db.fetchval("SELECT count(*) FROM hookd.events") == 2
    assert await db.fetchval("SELECT payload->>'n' FROM hookd.events WHERE id = $1", first) == "1"


async def test_concurrent_idempotent_publishes_create_one_event(dsn: str) -> None:
    conns = [await asyncpg.connect(dsn) for _ in range(4)]
    try:
        ids = await asyncio.gather(*(publish(c, "a.b", {}, idempotency_key="same") for c in conns))
        assert len(set(ids)) == 1
        assert await conns[0].fetchval("SELECT count(*) FROM hookd.events") == 1
    finally:
        for c in conns:
            await c.close()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            "SELECT hookd.publish(event_type => 'bad type!', payload => '{}'::jsonb)",
            "invalid event_type",
        ),
        ("SELECT hookd.publish(event_type => '', payload => '{}'::jsonb)", "invalid event_type"),
        (
            "SELECT hookd.publish(event_type => 'a..b', payload => '{}'::jsonb)",
            "invalid event_type",
        ),
        ("SELECT hookd.publish(event_type => 'a.b', payload => NULL)", "payload must not be NULL"),
        (
            "SELECT hookd.publish(event_type => 'a.b', payload => jsonb_build_object('x', repeat('y', 300000)))",
            "over the 262144-byte cap",
        ),
        (
            "SELECT hookd.publish(event_type => 'a.b', payload => '{}'::jsonb, tenant => '')",
            "tenant",
        ),
        (
            "SELECT hookd.publish(event_type => 'a.b', payload => '{}'::jsonb, idempotency_key => repeat('k', 201))",
            "idempotency_key",
        ),
    ],
)
async def test_bad_input_raises_clear_error_and_stores_nothing(
    db: asyncpg.Connection, call: str, message: str
) -> None:
    with pytest.raises(asyncpg.InvalidParameterValueError, match=message):
        async with db.transaction():
            await db.execute(
                "CREATE TEMP TABLE app_change (x int); INSERT INTO app_change VALUES (1)"
            )
            await db.execute(call)
    assert await db.fetchval("SELECT count(*) FROM hookd.events") == 0
    assert await db.fetchval("SELECT to_regclass('pg_temp.app_change')") is None


async def test_non_json_payload_is_refused(db: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.InvalidTextRepresentationError, match="json"):
        await db.execute("SELECT hookd.publish(event_type => 'a.b', payload => '{not json'::jsonb)")
    assert await db.fetchval("SELECT count(*) FROM hookd.events") == 0


async def test_migrate_is_idempotent_and_safe_concurrently(dsn: str) -> None:
    conns = [await asyncpg.connect(dsn) for _ in range(3)]
    try:
        await conns[0].execute("DROP SCHEMA hookd CASCADE")
        results = await asyncio.gather(*(migrate.apply(c) for c in conns))
        assert sorted(results, key=len) == [[], [], [m.version for m in migrate.available()]]
        assert await migrate.apply(conns[0]) == []
        rows = await conns[0].fetch("SELECT version FROM hookd.schema_migrations")
        assert [r["version"] for r in rows] == [m.version for m in migrate.available()]
    finally:
        for c in conns:
            await c.close()
