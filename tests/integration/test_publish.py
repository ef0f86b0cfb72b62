"""hookd.publish() in the application's transaction, and `migrate`."""

from __future__ import annotations

import asyncio
import uuid

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


async def test_upgrade_to_ordering_keys_keeps_who_may_publish(dsn: str) -> None:
    # Version 10 replaces hookd.publish (a new optional parameter): an application role granted
    # EXECUTE before (and PUBLIC revoked) keeps exactly that on the new function.
    role = f"hookd_app_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP SCHEMA hookd CASCADE")
        async with conn.transaction():
            await conn.execute(
                "CREATE SCHEMA hookd; CREATE TABLE hookd.schema_migrations (version integer"
                " PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for mig in migrate.available():
                if mig.version < 10:
                    await conn.execute(mig.sql)
                    await conn.execute(
                        "INSERT INTO hookd.schema_migrations (version, name) VALUES ($1, $2)",
                        mig.version,
                        mig.name,
                    )
        await conn.execute(f"CREATE ROLE {role}")
        old = "hookd.publish(text, jsonb, text, text)"
        await conn.execute(f"REVOKE EXECUTE ON FUNCTION {old} FROM PUBLIC")
        await conn.execute(f"GRANT EXECUTE ON FUNCTION {old} TO {role}")

        assert 10 in await migrate.apply(conn)
        new = "hookd.publish(text, jsonb, text, text, text)"
        assert await conn.fetchval("SELECT has_function_privilege($1, $2, 'EXECUTE')", role, new)
        assert not await conn.fetchval(
            "SELECT has_function_privilege('public', $1, 'EXECUTE')", new
        )
        assert await conn.fetchval(
            "SELECT prosecdef FROM pg_proc WHERE oid = $1::regprocedure", new
        )
    finally:
        await conn.execute(f"DROP OWNED BY {role}")
        await conn.execute(f"DROP ROLE IF EXISTS {role}")
        await conn.close()
