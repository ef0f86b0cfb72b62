"""The operating service (hookd/service.py) against a real database, and a real daemon and
receiver where attempts are needed: pages, tenant scopes, PATCH, retry, resend, replay, test
events and the SSRF check at add time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from hookd.destinations import DestinationPolicy
from hookd.models import DeliveryState
from hookd.service import (
    TEST_EVENT_TYPE,
    Conflict,
    EndpointChanges,
    InvalidInput,
    NewEndpoint,
    NotFound,
    PageRequest,
    Scope,
    Selection,
    Service,
)
from hookd.store import Store

from support.daemon import running_daemon, wait_until
from support.receiver import Receiver

OPERATOR = Scope()
LOOPBACK = DestinationPolicy(allow_cidrs=["127.0.0.0/8", "::1/128"])


@pytest_asyncio.fixture(loop_scope="session")
async def store(dsn: str) -> AsyncIterator[Store]:
    s = await Store.open(dsn, pool_size=2, connect_timeout_s=5.0, command_timeout_s=10.0)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def service(store: Store) -> Service:
    return Service(store, allow_http=True, policy=LOOPBACK)


async def _event(db: asyncpg.Connection, event_type: str, tenant: str | None = None) -> int:
    """An event already fanned out (so a running daemon leaves it alone)."""
    event_id: int = await db.fetchval(
        "INSERT INTO hookd.events (event_type, tenant, payload, fanned_out_at)"
        " VALUES ($1, $2, '{}', now()) RETURNING id",
        event_type,
        tenant,
    )
    return event_id


async def _delivery(
    db: asyncpg.Connection, event_id: int, endpoint_id: int, state: str = "failed"
) -> int:
    delivery_id: int = await db.fetchval(
        "INSERT INTO hookd.deliveries (event_id, endpoint_id, state, attempts, finished_at,"
        " event_created_at)"
        " VALUES ($1, $2, $3, 1, CASE WHEN $3 IN ('delivered', 'failed') THEN now() END,"
        " (SELECT created_at FROM hookd.events WHERE id = $1))"
        " RETURNING id",
        event_id,
        endpoint_id,
        state,
    )
    return delivery_id


async def _endpoint(
    service: Service, url: str = "https://receiver.example/hook", tenant: str | None = None
) -> int:
    ep, _ = await service.create_endpoint(OPERATOR, NewEndpoint(url=url, tenant=tenant))
    return ep.id


async def test_pages_neither_skip_nor_repeat_while_rows_arrive(
    service: Service, db: asyncpg.Connection
) -> None:
    ep = await _endpoint(service)
    first = [await _event(db, "order.paid") for _ in range(7)]
    first_deliveries = [await _delivery(db, e, ep) for e in first]

    seen_events: list[int] = []
    seen_deliveries: list[int] = []
    page = PageRequest(limit=3)
    dpage = PageRequest(limit=3)
    for _ in range(10):
        events = await service.list_events(OPERATOR, page)
        deliveries = await service.list_deliveries(OPERATOR, dpage, endpoint_id=ep)
        seen_events += [e.id for e in events.items]
        seen_deliveries += [d.id for d in deliveries.items]
        # New rows between pages get higher ids: they must not shift what comes next.
        new = await _event(db, "order.paid")
        await _delivery(db, new, ep)
        if events.next_before_id is None and deliveries.next_before_id is None:
            break
        page = PageRequest(limit=3, before_id=events.next_before_id)
        dpage = PageRequest(limit=3, before_id=deliveries.next_before_id)
        if events.next_before_id is None or deliveries.next_before_id is None:
            pytest.fail("events and deliveries should end on the same page here")
    assert seen_events == sorted(first, reverse=True)
    assert seen_deliveries == sorted(first_deliveries, reverse=True)

    with pytest.raises(InvalidInput) as info:
        await service.list_events(OPERATOR, PageRequest(limit=0))
    assert info.value.field == "limit"


async def test_tenant_scope_sees_only_its_own(service: Service, db: asyncpg.Connection) -> None:
    acme = Scope("acme")
    mine = await _endpoint(service, tenant="acme")
    theirs = await _endpoint(service, tenant="globex")
    await _endpoint(service)  # no tenant: operators only
    my_event = await _event(db, "order.paid", "acme")
    their_event = await _event(db, "invoice.sent", "globex")
    await _event(db, "user.created")
    my_delivery = await _delivery(db, my_event, mine, "failed")
    their_failed = await _delivery(db, their_event, theirs, "failed")
    their_delivered = await _delivery(db, await _event(db, "invoice.sent", "globex"), theirs)
    await db.execute(
        "UPDATE hookd.deliveries SET state = 'delivered' WHERE id = $1", their_delivered
    )

    page = PageRequest()
    assert [e.id for e in (await service.list_endpoints(acme, page)).items] == [mine]
    assert [e.id for e in (await service.list_events(acme, page)).items] == [my_event]
    assert [d.id for d in (await service.list_deliveries(acme, page)).items] == [my_delivery]
    assert await service.event_types(acme) == ["order.paid"]
    assert await service.event_types(OPERATOR) == ["invoice.sent", "order.paid", "user.created"]
    assert (await service.list_events(acme, page, tenant="globex")).items == []

    calls = {
        "get_endpoint": service.get_endpoint(acme, theirs),
        "update_endpoint": service.update_endpoint(
            acme, theirs, EndpointChanges(description="mine now")
        ),
        "delete_endpoint": service.delete_endpoint(acme, theirs),
        "rotate_secret": service.rotate_secret(acme, theirs, 60.0),
        "reveal_secret": service.reveal_secret(acme, theirs),
        "endpoint_stats": service.endpoint_stats(acme, theirs),
        "send_test": service.send_test(acme, theirs, 0.0),
        "get_event": service.get_event(acme, their_event),
        "deliveries by endpoint": service.list_deliveries(acme, page, endpoint_id=theirs),
        "deliveries by event": service.list_deliveries(acme, page, event_id=their_event),
        "get_delivery": service.get_delivery(acme, their_failed),
        "attempts": service.attempts(acme, their_failed),
        "retry by id": service.retry(acme, Selection(ids=(their_failed,))),
        "retry by endpoint": service.retry(acme, Selection(endpoint_id=theirs)),
        "resend": service.resend(acme, their_delivered),
        "replay": service.replay(acme, Selection(endpoint_id=theirs), dry_run=True),
    }
    for name, call in calls.items():
        with pytest.raises(NotFound):
            await call
            pytest.fail(f"{name} reached another tenant's object")

    # Nothing of theirs changed, and the operator still sees all of it.
    assert (await service.get_endpoint(OPERATOR, theirs)).description is None
    states = dict(await db.fetch("SELECT id, state FROM hookd.deliveries"))
    assert states[their_failed] == "failed" and states[their_delivered] == "delivered"
    assert await db.fetchval("SELECT count(*) FROM hookd.events") == 4, "no test event created"

    # A tenant cannot create or move endpoints outside itself.
    with pytest.raises(InvalidInput) as info:
        await service.create_endpoint(acme, NewEndpoint(url="https://a.example/", tenant="globex"))
    assert info.value.field == "tenant"
    created, _ = await service.create_endpoint(acme, NewEndpoint(url="https://a.example/"))
    assert created.tenant == "acme"
    with pytest.raises(InvalidInput) as info:
        await service.update_endpoint(acme, mine, EndpointChanges(tenant=None))
    assert info.value.field == "tenant"


async def test_patch_changes_only_given_fields(service: Service) -> None:
    ep, secret = await service.create_endpoint(
        OPERATOR,
        NewEndpoint(
            url="https://receiver.example/hook",
            event_types=("order.*",),
            tenant="acme",
            description="orders to the ERP",
            metadata={"team": "billing"},
            settings={"retry_schedule_s": [0, 5, 300], "total_timeout_s": 10},
            credentials={"bearer": "t0k3n"},
        ),
    )
    after = await service.update_endpoint(
        OPERATOR, ep.id, EndpointChanges(settings={"total_timeout_s": 5, "max_concurrency": 4})
    )
    assert after.settings == {
        "retry_schedule_s": [0.0, 5.0, 300.0],
        "total_timeout_s": 5.0,
        "max_concurrency": 4,
    }
    unchanged = ("url", "event_types", "tenant", "description", "metadata", "secret", "enabled")
    for name in unchanged:
        assert getattr(after, name) == getattr(ep, name), name
    assert after.credentials == {"bearer": "t0k3n"}
    assert secret == after.secret

    after = await service.update_endpoint(
        OPERATOR, ep.id, EndpointChanges(settings={"retry_schedule_s": None})
    )
    assert after.settings == {"total_timeout_s": 5.0, "max_concurrency": 4}

    after = await service.update_endpoint(
        OPERATOR,
        ep.id,
        EndpointChanges(
            url="https://other.example/x",
            event_types=["user.created", "order.*"],
            description=None,
            metadata={"team": "growth", "tier": "gold"},
            credentials=None,
            tenant="globex",
        ),
    )
    assert after.url == "https://other.example/x"
    assert after.event_types == ("user.created", "order.*")
    assert after.description is None and after.tenant == "globex"
    assert after.metadata == {"team": "growth", "tier": "gold"}
    assert after.credentials is None
    assert after.settings == {"total_timeout_s": 5.0, "max_concurrency": 4}

    after = await service.update_endpoint(OPERATOR, ep.id, EndpointChanges(enabled=False))
    assert not after.enabled and after.disabled_reason == "disabled by operator"
    assert after.url == "https://other.example/x"

    bad = {
        "settings.total_timeout_s": EndpointChanges(settings={"total_timeout_s": -1}),
        "settings.nope": EndpointChanges(settings={"nope": None}),
        "metadata.k": EndpointChanges(metadata={"k": 5}),
        "description": EndpointChanges(description="x" * 1001),
        "event_types": EndpointChanges(event_types="not a type"),
        "url": EndpointChanges(url="ftp://x.example/"),
        "tenant": EndpointChanges(tenant=""),
    }
    for field_name, changes in bad.items():
        with pytest.raises(InvalidInput) as info:
            await service.update_endpoint(OPERATOR, ep.id, changes)
        assert info.value.field == field_name, (field_name, str(info.value))
    assert (await service.get_endpoint(OPERATOR, ep.id)).url == "https://other.example/x"


async def test_replay_counts_exactly_and_touches_only_its_endpoint(
    service: Service, db: asyncpg.Connection
) -> None:
    target = await _endpoint(service)
    healthy = await _endpoint(service, "https://healthy.example/hook")
    events = [await _event(db, "order.paid") for _ in range(4)] + [await _event(db, "user.created")]
    picked = []
    for i, event_id in enumerate(events):
        picked.append(await _delivery(db, event_id, target, "failed" if i % 2 else "delivered"))
        await _delivery(db, event_id, healthy, "delivered")
    await _delivery(db, await _event(db, "order.paid"), target, "pending")
    before = await db.fetch("SELECT * FROM hookd.deliveries WHERE endpoint_id = $1", healthy)

    sel = Selection(
        endpoint_id=target,
        event_type="order.paid",
        states=(DeliveryState.DELIVERED, DeliveryState.FAILED),
    )
    dry = await service.replay(OPERATOR, sel, dry_run=True)
    assert dry.dry_run and dry.count == 4
    assert await db.fetchval("SELECT count(*) FROM hookd.deliveries WHERE state = 'pending'") == 1
    real = await service.replay(OPERATOR, sel, dry_run=False)
    assert real.count == dry.count and sorted(real.ids) == sorted(dry.ids) == picked[:4]
    pending = await db.fetch(
        "SELECT id, finished_at, lease_owner FROM hookd.deliveries WHERE state = 'pending'"
    )
    assert len(pending) == 5
    assert all(r["finished_at"] is None and r["lease_owner"] is None for r in pending)
    after = await db.fetch("SELECT * FROM hookd.deliveries WHERE endpoint_id = $1", healthy)
    assert [dict(r) for r in after] == [dict(r) for r in before]
    # The user.created delivery was not selected; again: nothing left to replay.
    assert (await service.replay(OPERATOR, sel, dry_run=True)).count == 0

    with pytest.raises(InvalidInput) as info:
        await service.replay(OPERATOR, Selection(), dry_run=True)
    assert info.value.field == "endpoint_id"
    with pytest.raises(InvalidInput) as info:
        await service.replay(
            OPERATOR, Selection(endpoint_id=target, states=(DeliveryState.PENDING,)), dry_run=True
        )
    assert info.value.field == "states"


async def test_retry_of_nothing_and_of_a_disabled_endpoint(
    service: Service, db: asyncpg.Connection
) -> None:
    ep = await _endpoint(service)
    delivered = await _delivery(db, await _event(db, "order.paid"), ep, "delivered")
    nothing = await service.retry(OPERATOR, Selection(endpoint_id=ep))
    assert (nothing.count, nothing.ids) == (0, [])
    assert (await service.retry(OPERATOR, Selection(ids=(delivered,)))).count == 0
    with pytest.raises(NotFound):
        await service.retry(OPERATOR, Selection(ids=(delivered + 1000,)))

    failed = await _delivery(db, await _event(db, "order.paid"), ep, "failed")
    await service.update_endpoint(OPERATOR, ep, EndpointChanges(enabled=False))
    done = await service.retry(OPERATOR, Selection(endpoint_id=ep))
    assert (done.count, done.paused, done.ids) == (1, 1, [failed])
    assert (await service.get_delivery(OPERATOR, failed)).state is DeliveryState.PAUSED
    with pytest.raises(Conflict):
        await service.resend(OPERATOR, failed)
    await service.update_endpoint(OPERATOR, ep, EndpointChanges(enabled=True))
    assert (await service.get_delivery(OPERATOR, failed)).state is DeliveryState.PENDING


async def test_resend_makes_a_second_attempt_with_the_same_webhook_id(
    dsn: str, service: Service, db: asyncpg.Connection
) -> None:
    async with Receiver() as rx, running_daemon(dsn):
        ep, rx.secrets["/x"] = await service.create_endpoint(
            OPERATOR, NewEndpoint(url=rx.url_for("/x"))
        )
        await db.fetchval("SELECT hookd.publish('order.paid', '{\"id\": 1}')")
        await rx.wait_for(1, timeout_s=10)
        delivery_id = await wait_until(
            db, "SELECT id FROM hookd.deliveries WHERE state = 'delivered'"
        )
        again = await service.resend(OPERATOR, delivery_id)
        assert again.state in (DeliveryState.PENDING, DeliveryState.DELIVERED)
        got = await rx.wait_for(2, timeout_s=10)
        await wait_until(
            db,
            "SELECT count(*) = 2 FROM hookd.attempts WHERE delivery_id = $1",
            delivery_id,
        )
        attempts = await service.attempts(OPERATOR, delivery_id)
    assert [r.webhook_id for r in got] == [got[0].webhook_id] * 2
    assert all(r.verified for r in got)
    assert [a.attempt for a in attempts] == [1, 2]
    assert [a.status for a in attempts] == [204, 204]
    pending = await _delivery(db, await _event(db, "order.paid"), ep.id, "pending")
    with pytest.raises(Conflict):
        await service.resend(OPERATOR, pending)


async def test_send_test_returns_its_attempt_and_reaches_no_other_endpoint(
    dsn: str, service: Service, db: asyncpg.Connection
) -> None:
    async with Receiver(default=200) as rx:
        ep, rx.secrets["/test"] = await service.create_endpoint(
            OPERATOR, NewEndpoint(url=rx.url_for("/test"), tenant="acme")
        )
        await service.create_endpoint(OPERATOR, NewEndpoint(url=rx.url_for("/other")))
        await service.create_endpoint(
            OPERATOR, NewEndpoint(url=rx.url_for("/acme-other"), tenant="acme")
        )
        # A poll interval far beyond the wait: the attempt must come from the "due" wake-up.
        async with running_daemon(dsn, {"daemon": {"poll_interval_s": 30.0}}) as daemon:
            assert daemon.dispatcher is not None
            async with asyncio.timeout(5):
                await daemon.dispatcher.asleep.wait()  # its start-up due claim is behind it
            loop = asyncio.get_running_loop()
            started = loop.time()
            result = await service.send_test(OPERATOR, ep.id, 5.0)
            took_s = loop.time() - started
            # Something else for everyone, to show the daemon fans out as usual meanwhile.
            await db.fetchval("SELECT hookd.publish('order.paid', '{}', 'acme')")
            await rx.wait_for(3, timeout_s=10)
    assert result.attempt is not None, "no attempt within the wait"
    assert result.attempt.status == 200 and took_s < 5.0
    assert result.delivery.endpoint_id == ep.id and result.delivery.event_type == TEST_EVENT_TYPE
    pings = [r for r in rx.requests if r.json["type"] == TEST_EVENT_TYPE]
    assert [r.path for r in pings] == ["/test"]
    assert pings[0].verified and pings[0].webhook_id == result.webhook_id
    assert pings[0].json["data"] == {"endpoint_id": ep.id, "message": "test event from hookd"}
    event = await service.get_event(Scope("acme"), result.delivery.event_id)
    assert event.tenant == "acme"

    await service.update_endpoint(OPERATOR, ep.id, EndpointChanges(enabled=False))
    with pytest.raises(Conflict):
        await service.send_test(OPERATOR, ep.id, 0.0)


async def test_ssrf_guard_refuses_internal_urls_at_add_time(store: Store) -> None:
    guarded = Service(store, allow_http=True, policy=DestinationPolicy())
    for url in (
        "http://127.0.0.1:8080/hook",
        "http://localhost:8080/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://0x7f.1/hook",
        "http://[::ffff:127.0.0.1]/hook",
    ):
        with pytest.raises(InvalidInput) as info:
            await guarded.create_endpoint(OPERATOR, NewEndpoint(url=url))
        assert info.value.field == "url", url
    assert await store.endpoints() == []

    ep, _ = await guarded.create_endpoint(OPERATOR, NewEndpoint(url="https://receiver.example/"))
    with pytest.raises(InvalidInput) as info:
        await guarded.update_endpoint(OPERATOR, ep.id, EndpointChanges(url="http://127.0.0.1/"))
    assert info.value.field == "url"

    opened = Service(store, allow_http=True, policy=DestinationPolicy(allow_cidrs=["127.0.0.0/8"]))
    for url in ("http://127.0.0.1:8080/hook", "http://localhost:8080/hook"):
        made, _ = await opened.create_endpoint(OPERATOR, NewEndpoint(url=url))
        assert made.url == url
    still = Service(store, allow_http=True, policy=DestinationPolicy(allow_cidrs=["127.0.0.0/8"]))
    with pytest.raises(InvalidInput):
        await still.create_endpoint(OPERATOR, NewEndpoint(url="http://169.254.169.254/"))

    https_only = Service(store, allow_http=False, policy=DestinationPolicy())
    with pytest.raises(InvalidInput) as info:
        await https_only.create_endpoint(OPERATOR, NewEndpoint(url="http://receiver.example/"))
    assert "security.allow_http" in str(info.value)


async def test_stats_and_attempt_log(service: Service, db: asyncpg.Connection) -> None:
    ep = await _endpoint(service)
    empty = await service.endpoint_stats(OPERATOR, ep)
    assert empty.last_hour.attempts == 0 and empty.last_hour.success_rate is None
    assert empty.last_attempt_at is None
    d = await _delivery(db, await _event(db, "order.paid"), ep, "delivered")
    await db.execute(
        "INSERT INTO hookd.attempts (delivery_id, attempt, started_at, duration_s, status, error)"
        " VALUES ($1, 1, now() - interval '2 hours', 0.5, NULL, 'timeout'),"
        "        ($1, 2, now() - interval '10 minutes', 0.1, 500, NULL),"
        "        ($1, 3, now() - interval '1 minute', 0.2, 200, NULL)",
        d,
    )
    stats = await service.endpoint_stats(OPERATOR, ep)
    assert (stats.last_status, stats.last_error) == (200, None)
    assert (stats.last_hour.attempts, stats.last_hour.succeeded) == (2, 1)
    assert stats.last_hour.success_rate == 0.5
    assert stats.last_hour.p50_duration_s == pytest.approx(0.15)
    assert (stats.last_day.attempts, stats.last_day.succeeded) == (3, 1)
    assert stats.last_day.p50_duration_s == pytest.approx(0.2)
    log = await service.attempts(OPERATOR, d)
    assert [(a.attempt, a.status, a.error) for a in log] == [
        (1, None, "timeout"),
        (2, 500, None),
        (3, 200, None),
    ]


async def test_a_failed_test_ping_gets_exactly_one_attempt_and_says_it_was_a_test(
    dsn: str, service: Service, db: asyncpg.Connection
) -> None:
    """A hookd.ping is not retried: it ends failed after its first failed attempt, with a
    last_error saying so, while an ordinary event to the same endpoint is retried."""
    fast = {"retry": {"schedule_s": [0.0, 0.05, 0.05], "max_attempts": 3, "jitter": 0.0}}
    async with Receiver(default=500) as rx, running_daemon(dsn, fast):
        ep, _ = await service.create_endpoint(OPERATOR, NewEndpoint(url=rx.url_for("/down")))
        result = await service.send_test(OPERATOR, ep.id, 10)
        assert result.attempt is not None and result.attempt.status == 500
        test_d = result.delivery.id
        await db.fetchval("SELECT hookd.publish('order.paid', '{}')")
        await wait_until(
            db,
            "SELECT count(*) = 2 FROM hookd.deliveries WHERE state = 'failed'",
            timeout_s=15,
        )
        rows = {
            r["id"]: r
            for r in await db.fetch("SELECT id, attempts, last_error FROM hookd.deliveries")
        }
    assert rows[test_d]["attempts"] == 1
    assert "test" in rows[test_d]["last_error"] and "not retried" in rows[test_d]["last_error"]
    (other,) = [r for i, r in rows.items() if i != test_d]
    assert other["attempts"] == 3
    assert (
        await db.fetchval("SELECT count(*) FROM hookd.attempts WHERE delivery_id = $1", test_d) == 1
    )


async def test_a_tenant_cannot_point_tls_credentials_at_files_of_the_daemons_host(
    service: Service, tmp_path: Path
) -> None:
    """TLS client certificates and CA bundles are file paths on the daemon's host: a tenant
    could probe for files or have hookd read one of the operator's. Only an operator sets them."""
    pem = tmp_path / "ca.pem"
    pem.write_text("not a certificate", encoding="utf-8")
    tls = {"tls": {"ca_bundle": str(pem)}}
    acme = Scope("acme")
    with pytest.raises(InvalidInput) as info:
        await service.create_endpoint(
            acme, NewEndpoint(url="https://acme.example/hook", credentials=tls)
        )
    assert info.value.field == "credentials.tls", info.value
    ep, _ = await service.create_endpoint(acme, NewEndpoint(url="https://acme.example/hook"))
    with pytest.raises(InvalidInput) as info:
        await service.update_endpoint(acme, ep.id, EndpointChanges(credentials=tls))
    assert info.value.field == "credentials.tls", info.value
    # Other kinds stay the tenant's to set.
    bearer = {"bearer": "t0ken"}
    changed = await service.update_endpoint(acme, ep.id, EndpointChanges(credentials=bearer))
    assert changed.credentials == bearer


async def test_bulk_retry_and_replay_leave_failed_test_pings_alone(
    service: Service, db: asyncpg.Connection
) -> None:
    """A failed hookd.ping is a report, not a lost event: `retry --since` or `--endpoint` and a
    replay skip it; naming its id (or its event type) still retries it."""
    ep = await _endpoint(service)
    ping = await _delivery(db, await _event(db, TEST_EVENT_TYPE), ep)
    real = await _delivery(db, await _event(db, "order.paid"), ep)
    since = await db.fetchval("SELECT now() - interval '1 hour'")
    for selection in (Selection(since=since), Selection(endpoint_id=ep)):
        done = await service.retry(OPERATOR, selection)
        assert list(done.ids) == [real], done
        await db.execute("UPDATE hookd.deliveries SET state = 'failed' WHERE id = $1", real)
    replayed = await service.replay(
        OPERATOR, Selection(endpoint_id=ep, states=(DeliveryState.FAILED,)), dry_run=True
    )
    assert list(replayed.ids) == [real], replayed
    for selection in (Selection(ids=(ping,)), Selection(event_type=TEST_EVENT_TYPE)):
        done = await service.retry(OPERATOR, selection)
        assert list(done.ids) == [ping], done
        await db.execute("UPDATE hookd.deliveries SET state = 'failed' WHERE id = $1", ping)
