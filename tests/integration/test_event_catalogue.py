"""The event catalogue on a real database: entries with JSON Schemas and examples checked by the
jsonschema library, strict mode refusing unknown event types at publish, tenants reading but not
changing it, and test events built from an entry's example (real daemon and receiver)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from hookd.destinations import DestinationPolicy
from hookd.service import (
    Conflict,
    EventTypeChanges,
    Forbidden,
    InvalidInput,
    NewEndpoint,
    NotFound,
    Scope,
    Service,
)
from hookd.store import Store

from support.daemon import publish, running_daemon
from support.receiver import Receiver

OPERATOR = Scope()
ACME = Scope("acme")
LOOPBACK = DestinationPolicy(allow_cidrs=["127.0.0.0/8", "::1/128"])

ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "total"],
    "properties": {
        "id": {"type": "integer"},
        "total": {"type": "number"},
        "items": {"type": "array", "items": {"$ref": "#/$defs/item"}},
    },
    "$defs": {"item": {"type": "object", "properties": {"sku": {"type": "string"}}}},
}
ORDER_EXAMPLE = {"id": 42, "total": 99.5, "items": [{"sku": "A-1"}]}


@pytest_asyncio.fixture(loop_scope="session")
async def service(dsn: str) -> AsyncIterator[Service]:
    store = await Store.open(dsn, pool_size=2, connect_timeout_s=5.0, command_timeout_s=10.0)
    try:
        yield Service(store, allow_http=True, policy=LOOPBACK)
    finally:
        await store.close()


async def _count(db: asyncpg.Connection, event_type: str) -> int:
    n: int = await db.fetchval(
        "SELECT count(*) FROM hookd.events WHERE event_type = $1", event_type
    )
    return n


async def test_strict_mode_refuses_unknown_types_in_the_publishing_transaction(
    service: Service, db: asyncpg.Connection
) -> None:
    await service.put_catalogue_entry(
        OPERATOR, "order.paid", EventTypeChanges(description="An order was paid.")
    )
    # Off: a typo goes through (and nowhere), as it always did.
    await publish(db, "order.piad", {"id": 1})
    assert await service.catalogue_strict(OPERATOR) is False

    done = await service.set_catalogue_strict(OPERATOR, True)
    assert (done.strict, done.unknown_seen) == (True, ["order.piad"])
    assert await service.catalogue_strict(OPERATOR) is True

    before = await _count(db, "order.piad")
    tx = db.transaction()
    await tx.start()
    await db.execute("CREATE TEMP TABLE app_orders (id int)")
    await db.execute("INSERT INTO app_orders VALUES (1)")
    with pytest.raises(asyncpg.PostgresError) as info:
        await db.fetchval(
            "SELECT hookd.publish(event_type => 'order.piad', payload => '{\"id\": 1}')"
        )
    err = info.value
    assert err.sqlstate == "22023"
    assert err.args[0] == (
        "hookd.publish: unknown event type 'order.piad': strict mode accepts only event types in"
        " the catalogue"
    )
    assert err.hint is not None and "`hookd event-type add order.piad --description" in err.hint
    assert "`hookd event-type strict off`" in err.hint
    # The application's transaction is aborted: its own change cannot commit either.
    with pytest.raises(asyncpg.InFailedSQLTransactionError):
        await db.execute("INSERT INTO app_orders VALUES (2)")
    await tx.rollback()
    assert await _count(db, "order.piad") == before

    # Known types and hookd's own test event are accepted.
    await publish(db, "order.paid", {"id": 1})
    ep, _ = await service.create_endpoint(OPERATOR, NewEndpoint(url="https://receiver.example/h"))
    result = await service.send_test(OPERATOR, ep.id, 0)
    assert result.delivery.event_type == "hookd.ping"

    # Removing an entry makes its type unknown at once; off again accepts everything.
    await service.remove_catalogue_entry(OPERATOR, "order.paid")
    with pytest.raises(asyncpg.PostgresError, match=r"unknown event type 'order\.paid'"):
        await publish(db, "order.paid", {"id": 2})
    assert (await service.set_catalogue_strict(OPERATOR, False)).strict is False
    await publish(db, "order.piad", {"id": 3})
    assert await _count(db, "order.piad") == before + 1
    # Switching twice either way is harmless.
    await service.set_catalogue_strict(OPERATOR, False)
    await service.set_catalogue_strict(OPERATOR, True)
    await service.set_catalogue_strict(OPERATOR, True)
    assert (
        await db.fetchval(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'hookd.events'::regclass"
            " AND tgname = 'events_known_type'"
        )
        == 1
    )


async def test_switching_strict_mode_gives_up_when_a_transaction_holds_the_outbox(
    service: Service, dsn: str, db: asyncpg.Connection
) -> None:
    """A publisher whose transaction stays open holds hookd.events: the switch waits at most its
    lock_timeout (5 s) and says so, instead of queueing every other publisher behind it."""
    other = await asyncpg.connect(dsn)
    try:
        tx = other.transaction()
        await tx.start()
        await publish(other, "order.paid", {"id": 1})
        with pytest.raises(Conflict, match=r"hookd\.events stayed locked"):
            await service.set_catalogue_strict(OPERATOR, True)
        await tx.rollback()
    finally:
        await other.close()
    assert await service.catalogue_strict(OPERATOR) is False


async def test_tenants_read_the_catalogue_but_only_operators_change_it(service: Service) -> None:
    await service.put_catalogue_entry(OPERATOR, "order.paid", EventTypeChanges(description="d"))
    assert [e.name for e in await service.catalogue(ACME)] == ["order.paid"]
    assert (await service.catalogue_entry(ACME, "order.paid")).description == "d"
    assert await service.catalogue_strict(ACME) is False
    with pytest.raises(Forbidden, match="only an operator may change the event catalogue"):
        await service.put_catalogue_entry(ACME, "order.paid", EventTypeChanges(description="x"))
    with pytest.raises(Forbidden):
        await service.remove_catalogue_entry(ACME, "order.paid")
    with pytest.raises(Forbidden, match="only an operator may change strict mode"):
        await service.set_catalogue_strict(ACME, True)
    assert (await service.catalogue_entry(OPERATOR, "order.paid")).description == "d"


async def test_entries_keep_what_a_change_does_not_name(service: Service) -> None:
    entry, created = await service.put_catalogue_entry(
        OPERATOR,
        "order.paid",
        EventTypeChanges(description="paid", schema=ORDER_SCHEMA, example=ORDER_EXAMPLE),
    )
    assert created and (entry.schema, entry.example) == (ORDER_SCHEMA, ORDER_EXAMPLE)
    entry, created = await service.put_catalogue_entry(
        OPERATOR, "order.paid", EventTypeChanges(description="An order was paid.")
    )
    assert not created
    assert (entry.description, entry.schema, entry.example) == (
        "An order was paid.",
        ORDER_SCHEMA,
        ORDER_EXAMPLE,
    )
    assert entry.updated_at > entry.created_at
    entry, _ = await service.put_catalogue_entry(
        OPERATOR, "order.paid", EventTypeChanges(schema=None)
    )
    assert (entry.schema, entry.example) == (None, ORDER_EXAMPLE)
    entry, _ = await service.put_catalogue_entry(
        OPERATOR, "order.paid", EventTypeChanges(schema=True, example=None)
    )
    assert (entry.schema, entry.example) == (True, None)
    await service.remove_catalogue_entry(OPERATOR, "order.paid")
    with pytest.raises(NotFound, match=r"no event type order\.paid in the catalogue"):
        await service.remove_catalogue_entry(OPERATOR, "order.paid")
    with pytest.raises(NotFound):
        await service.catalogue_entry(OPERATOR, "order.paid")


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        (
            EventTypeChanges(schema={"type": "object", "properties": {"total": {"type": "numbr"}}}),
            "schema",
            "schema: not a valid JSON Schema at $.properties.total.type: 'numbr' is not valid"
            " under any of the given schemas",
        ),
        (EventTypeChanges(schema=[1]), "schema", "schema: a JSON Schema is an object"),
        (
            EventTypeChanges(schema={"$schema": "https://example.com/mine", "type": "object"}),
            "schema",
            "schema: $schema 'https://example.com/mine' is not a JSON Schema dialect hookd knows",
        ),
        (
            EventTypeChanges(schema=ORDER_SCHEMA, example={"id": 42, "total": "lots"}),
            "example",
            "example: does not match the schema at $.total: 'lots' is not of type 'number'",
        ),
        (
            EventTypeChanges(
                schema=ORDER_SCHEMA, example={"id": 1, "total": 1, "items": [{"sku": 7}]}
            ),
            "example",
            "example: does not match the schema at $.items[0].sku: 7 is not of type 'string'",
        ),
        (
            EventTypeChanges(
                schema={"properties": {"at": {"type": "string", "format": "date-time"}}},
                example={"at": "yesterday"},
            ),
            "example",
            "example: does not match the schema at $.at: 'yesterday' is not a 'date-time'",
        ),
        (
            EventTypeChanges(
                schema={"properties": {"a": {"$ref": "https://example.com/a.json"}}},
                example={"a": 1},
            ),
            "example",
            "example: the schema's $ref cannot be resolved",
        ),
        (EventTypeChanges(example=None, schema=None, description="x" * 1001), "description", ""),
    ],
)
async def test_invalid_schemas_and_examples_are_refused_naming_the_json_path(
    service: Service, changes: EventTypeChanges, field: str, message: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        await service.put_catalogue_entry(OPERATOR, "order.paid", changes)
    assert info.value.field == field
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)
    assert await service.catalogue(OPERATOR) == []


async def test_a_new_schema_is_checked_against_the_stored_example(service: Service) -> None:
    await service.put_catalogue_entry(
        OPERATOR, "order.paid", EventTypeChanges(example={"id": "A-42", "total": 1})
    )
    with pytest.raises(InvalidInput) as info:
        await service.put_catalogue_entry(
            OPERATOR, "order.paid", EventTypeChanges(schema=ORDER_SCHEMA)
        )
    assert str(info.value) == (
        "example: the stored example does not match the schema at $.id: 'A-42' is not of type"
        " 'integer'"
    )
    with pytest.raises(InvalidInput, match=r"^name: 'order paid' is not an event type"):
        await service.put_catalogue_entry(OPERATOR, "order paid", EventTypeChanges())


async def test_a_test_event_of_a_catalogue_type_carries_its_example(
    service: Service, dsn: str
) -> None:
    await service.put_catalogue_entry(
        OPERATOR,
        "order.paid",
        EventTypeChanges(schema=ORDER_SCHEMA, example=ORDER_EXAMPLE),
    )
    await service.put_catalogue_entry(OPERATOR, "order.shipped", EventTypeChanges())
    async with Receiver() as rx:
        ep, secret = await service.create_endpoint(
            OPERATOR, NewEndpoint(url=rx.url_for("/h"), event_types=("user.*",))
        )
        rx.secrets["/h"] = secret
        async with running_daemon(dsn):
            result = await service.send_test(OPERATOR, ep.id, 10, event_type="order.paid")
            assert result.attempt is not None and result.attempt.status == 204
        (request,) = rx.requests_for("/h")
        assert request.verified is True
        assert request.json["type"] == "order.paid"
        assert request.json["data"] == ORDER_EXAMPLE
        assert result.delivery.event_type == "order.paid"

        with pytest.raises(InvalidInput, match=r"order\.shipped has no example in the catalogue"):
            await service.send_test(OPERATOR, ep.id, 0, event_type="order.shipped")
        with pytest.raises(InvalidInput, match=r"order\.refunded is not in the event catalogue"):
            await service.send_test(OPERATOR, ep.id, 0, event_type="order.refunded")


async def test_the_published_document(service: Service) -> None:
    await service.put_catalogue_entry(
        OPERATOR,
        "order.paid",
        EventTypeChanges(description="paid", schema=ORDER_SCHEMA, example=ORDER_EXAMPLE),
    )
    await service.put_catalogue_entry(OPERATOR, "account.created", EventTypeChanges())
    doc = await service.catalogue_document()
    assert [t["name"] for t in doc["event_types"]] == ["account.created", "order.paid"]
    paid = doc["event_types"][1]
    assert paid == {
        "name": "order.paid",
        "description": "paid",
        "schema": ORDER_SCHEMA,
        "example": ORDER_EXAMPLE,
        "updated_at": paid["updated_at"],
    }
    assert paid["updated_at"].endswith("Z")
    assert doc["event_types"][0]["schema"] is None
