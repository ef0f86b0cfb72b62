"""Payload filters: SQL/JSON path predicates checked by PostgreSQL when an endpoint is added or
changed, and evaluated by the fan-out query, with a real daemon and receiver."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from hookd.destinations import DestinationPolicy
from hookd.service import EndpointChanges, InvalidInput, NewEndpoint, Scope, Service
from hookd.store import Store

from support.daemon import publish, running_daemon, wait_until
from support.receiver import Receiver

OPERATOR = Scope()
LOOPBACK = DestinationPolicy(allow_cidrs=["127.0.0.0/8", "::1/128"])
SETTLED = (
    "SELECT NOT EXISTS (SELECT 1 FROM hookd.events WHERE fanned_out_at IS NULL)"
    " AND NOT EXISTS (SELECT 1 FROM hookd.deliveries WHERE state <> 'delivered')"
)


@pytest_asyncio.fixture(loop_scope="session")
async def service(dsn: str) -> AsyncIterator[Service]:
    store = await Store.open(dsn, pool_size=2, connect_timeout_s=5.0, command_timeout_s=10.0)
    try:
        yield Service(store, allow_http=True, policy=LOOPBACK)
    finally:
        await store.close()


async def _endpoint(service: Service, url: str, payload_filter: str | None = None) -> int:
    ep, _ = await service.create_endpoint(
        OPERATOR, NewEndpoint(url=url, payload_filter=payload_filter)
    )
    return ep.id


async def _event_ids(db: asyncpg.Connection, endpoint_id: int) -> list[int]:
    rows = await db.fetch(
        "SELECT event_id FROM hookd.deliveries WHERE endpoint_id = $1 ORDER BY event_id",
        endpoint_id,
    )
    return [r["event_id"] for r in rows]


async def test_only_events_the_filter_holds_for_get_a_delivery(
    dsn: str, service: Service, db: asyncpg.Connection
) -> None:
    async with Receiver() as rx:
        eur = await _endpoint(service, rx.url_for("/eur"), '$.total > 100 && $.currency == "EUR"')
        strict = await _endpoint(service, rx.url_for("/strict"), "strict $.total > 100")
        every = await _endpoint(service, rx.url_for("/every"))
        payloads = {
            "true": {"total": 150, "currency": "EUR"},
            "false": {"total": 50, "currency": "EUR"},
            "type mismatch": {"total": "lots", "currency": "EUR"},
            "missing field": {"currency": "EUR"},
        }
        ids = {name: await publish(db, "order.paid", p) for name, p in payloads.items()}
        # What PostgreSQL answers for each, so the test says which case is which: a type
        # mismatch is unknown (NULL); a missing field is false in lax mode, unknown in strict.
        answers = {
            name: tuple(
                [
                    await db.fetchval(
                        "SELECT payload @@ payload_filter FROM hookd.events e, hookd.endpoints ep"
                        " WHERE e.id = $1 AND ep.id = $2",
                        event_id,
                        ep_id,
                    )
                    for ep_id in (eur, strict)
                ]
            )
            for name, event_id in ids.items()
        }
        assert answers == {
            "true": (True, True),
            "false": (False, False),
            "type mismatch": (None, None),
            "missing field": (False, None),
        }
        async with running_daemon(dsn):
            await rx.wait_for(4, path="/every", timeout_s=10)
            await wait_until(db, SETTLED)
        assert await _event_ids(db, every) == sorted(ids.values())
        # False and unknown create no delivery row at all.
        assert await _event_ids(db, eur) == [ids["true"]]
        assert await _event_ids(db, strict) == [ids["true"]]
        assert [r.json["data"] for r in rx.requests_for("/eur")] == [payloads["true"]]
        assert [r.json["data"] for r in rx.requests_for("/strict")] == [payloads["true"]]


async def test_a_filter_that_fails_on_one_payload_holds_up_nothing(
    dsn: str, service: Service, db: asyncpg.Connection
) -> None:
    """`@@` is silent about missing fields and type mismatches, not about every error: a variable
    reached only by some payloads, or a datetime comparison that needs a time zone, raises. Such
    an event must count as unknown for that endpoint, not fail the whole fan-out batch."""
    async with Receiver() as rx:
        # Both pass the check at add time: on {} the left operand is false and `&&` stops there.
        variable = await _endpoint(service, rx.url_for("/variable"), '$.kind == "x" && $limit > 2')
        zoned = await _endpoint(
            service,
            rx.url_for("/zoned"),
            '$.kind == "x" && $.at.datetime() < "2030-01-01T00:00:00Z".datetime()',
        )
        every = await _endpoint(service, rx.url_for("/every"))
        poison = await publish(db, "order.paid", {"kind": "x", "at": "2026-01-01"})
        matched: bool | None = None
        try:
            matched = await db.fetchval(
                "SELECT payload @@ $2::jsonpath FROM hookd.events WHERE id = $1",
                poison,
                '$.kind == "x" && $limit > 2',
            )
            raised = False
        except asyncpg.PostgresError:
            raised = True
        # PostgreSQL 18 raises here; 15 keeps silent (false for the variable, unknown for the
        # time zone): either way the filtered endpoints get no delivery and the rest go out.
        if int(await db.fetchval("SHOW server_version_num")) >= 180000:
            assert raised
        else:
            assert not matched
        after = await publish(db, "order.paid", {"kind": "y"})
        async with running_daemon(dsn):
            await rx.wait_for(2, path="/every", timeout_s=10)
            await wait_until(db, SETTLED)
        assert await _event_ids(db, every) == [poison, after]
        assert await _event_ids(db, variable) == []
        assert await _event_ids(db, zoned) == []


async def test_at_question_mark_is_the_wrong_operator_for_a_predicate(
    db: asyncpg.Connection,
) -> None:
    """Why fan-out uses `@@` (jsonb_path_match): `@?` (jsonb_path_exists) asks whether the path
    yields anything, and a predicate always yields a boolean, so it is true even when false."""
    row = await db.fetchrow(
        "SELECT $1::jsonb @? $2::jsonpath AS exists, $1::jsonb @@ $2::jsonpath AS match",
        '{"total": 50}',
        "$.total > 100",
    )
    assert (row["exists"], row["match"]) == (True, False)


@pytest.mark.parametrize(
    ("payload_filter", "message"),
    [
        ("$.total >", "filter: syntax error at end of jsonpath input"),
        (
            "$.total",
            "filter: single boolean result is expected (not a predicate: write a comparison such"
            " as $.total > 100, or exists($.field) to test that a field is there)",
        ),
        ('$.items ? (@.sku == "a")', "filter: single boolean result is expected (not a predicate"),
        (
            "$.total > $min",
            'filter: could not find jsonpath variable "min" (a filter cannot use variables)',
        ),
        ('$.name like_regex "("', "filter: invalid regular expression"),
        ("   ", "filter: must not be empty"),
        ("$.a == 1" + " || $.a == 1" * 300, "filter: is 3608 characters; at most 2000 allowed"),
        ("$.a\0 == 1", "filter: must not contain NUL characters"),
    ],
)
async def test_invalid_filters_are_refused_with_postgresqls_message(
    service: Service, payload_filter: str, message: str
) -> None:
    new = NewEndpoint(url="https://receiver.example/h", payload_filter=payload_filter)
    with pytest.raises(InvalidInput) as info:
        await service.create_endpoint(OPERATOR, new)
    assert info.value.field == "filter"
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)
    ep = await _endpoint(service, "https://receiver.example/h")
    with pytest.raises(InvalidInput) as info:
        await service.update_endpoint(OPERATOR, ep, EndpointChanges(payload_filter=payload_filter))
    assert str(info.value).startswith(message), str(info.value)


async def test_update_sets_and_clears_a_filter_in_postgresqls_form(service: Service) -> None:
    ep = await _endpoint(service, "https://receiver.example/h", "exists($.refund)")
    assert (await service.get_endpoint(OPERATOR, ep)).payload_filter == 'exists ($."refund")'
    changed = await service.update_endpoint(
        OPERATOR, ep, EndpointChanges(payload_filter='$.total >= 10 && $.currency == "EUR"')
    )
    assert changed.payload_filter == '($."total" >= 10 && $."currency" == "EUR")'
    untouched = await service.update_endpoint(OPERATOR, ep, EndpointChanges(description="d"))
    assert untouched.payload_filter == changed.payload_filter
    cleared = await service.update_endpoint(OPERATOR, ep, EndpointChanges(payload_filter=None))
    assert cleared.payload_filter is None
