"""Publish-side limits enforced by hookd.publish() (issue 4, point 7).

tests/integration/test_publish.py covers the basic refusals (bad characters, empty type, NULL and
over-cap payloads, empty tenant, a 201-character idempotency key); these add the boundaries (200
accepted, 201 refused), the remaining shapes, and the error text.
"""

from __future__ import annotations

import asyncpg
import pytest

PUBLISH = "SELECT hookd.publish(event_type => $1, payload => $2::jsonb, tenant => $3, idempotency_key => $4)"


async def _publish(
    db: asyncpg.Connection,
    event_type: str = "order.paid",
    payload: str = "{}",
    tenant: str | None = None,
    key: str | None = None,
) -> int:
    value: int = await db.fetchval(PUBLISH, event_type, payload, tenant, key)
    return value


async def _refused(db: asyncpg.Connection, message: str, **kwargs: str | None) -> str:
    before = await db.fetchval("SELECT count(*) FROM hookd.events")
    with pytest.raises(asyncpg.InvalidParameterValueError, match=message) as info:
        await _publish(db, **kwargs)  # type: ignore[arg-type]
    assert info.value.sqlstate == "22023"
    assert await db.fetchval("SELECT count(*) FROM hookd.events") == before
    return str(info.value)


async def test_event_type_of_200_characters_is_accepted_201_refused(db: asyncpg.Connection) -> None:
    ok = ".".join(["a" * 99, "b" * 100])
    assert len(ok) == 200
    await _publish(db, event_type=ok)
    await _refused(db, "invalid event_type", event_type=ok + "c")


@pytest.mark.parametrize(
    "event_type",
    [
        ".order",
        "order.",
        "order paid",
        "order/paid",
        "order.*",
        "*",
        "ordér.paid",
        "order.paid\n",
        "order\npaid",
        "order;paid",
        "order..paid",
    ],
)
async def test_event_type_pattern(db: asyncpg.Connection, event_type: str) -> None:
    await _refused(db, "invalid event_type", event_type=event_type)


@pytest.mark.parametrize("event_type", ["a", "A.b_c-d.9", "x" * 200, "order.paid.v2", "-"])
async def test_valid_event_types(db: asyncpg.Connection, event_type: str) -> None:
    await _publish(db, event_type=event_type)


async def test_event_type_error_is_short_and_has_a_hint(db: asyncpg.Connection) -> None:
    long_bad = "x" * 100_000 + "!"
    with pytest.raises(asyncpg.InvalidParameterValueError) as info:
        await _publish(db, event_type=long_bad)
    assert len(str(info.value)) < 400, "the message quotes at most the start of the value"
    assert "1-200 characters" in (info.value.hint or "")


async def test_tenant_length_boundaries(db: asyncpg.Connection) -> None:
    await _publish(db, tenant="t" * 200)
    await _refused(db, "tenant must be 1-200 characters", tenant="t" * 201)
    await _refused(db, "tenant must be 1-200 characters", tenant="")


async def test_idempotency_key_length_boundaries(db: asyncpg.Connection) -> None:
    first = await _publish(db, key="k" * 200)
    assert await _publish(db, key="k" * 200) == first
    await _refused(db, "idempotency_key must be 1-200 characters", key="")
    await _refused(db, "idempotency_key must be 1-200 characters", key="k" * 201)


async def test_payload_cap_boundary(db: asyncpg.Connection) -> None:
    # Incompressible text near the 262,144-byte cap: the stored jsonb size decides.
    below = '{"x": "' + "".join(f"{i:07d}" for i in range(36_000)) + '"}'
    size = await db.fetchval("SELECT pg_column_size($1::jsonb)", below)
    assert 250_000 < size <= 262_144
    await _publish(db, payload=below)
    above = '{"x": "' + "".join(f"{i:07d}" for i in range(38_000)) + '"}'
    message = await _refused(db, "over the 262144-byte cap", payload=above)
    assert str(await db.fetchval("SELECT pg_column_size($1::jsonb)", above)) in message


async def test_refusal_rolls_back_the_application_transaction(db: asyncpg.Connection) -> None:
    await db.execute("CREATE TABLE orders (id int)")
    with pytest.raises(asyncpg.InvalidParameterValueError):
        async with db.transaction():
            await db.execute("INSERT INTO orders VALUES (1)")
            await _publish(db, tenant="t" * 201)
    assert await db.fetchval("SELECT count(*) FROM orders") == 0
    assert await db.fetchval("SELECT count(*) FROM hookd.events") == 0
