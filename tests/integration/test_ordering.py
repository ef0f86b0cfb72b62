"""Per-key ordering: FIFO per (endpoint, ordering key), and nobody else waits for a retrying key.

The contract (README, "Publishing events"): a later event of a key is not sent to an endpoint
until the earlier one was delivered to it or dead-lettered. Events without a key, other keys and
other endpoints are not delayed meanwhile. Each test runs the real daemon against real PostgreSQL
and a loopback receiver (the store-level one calls the real claim queries), and judges what the
receiver got and in which order.

Every test fails on hookd without ordering keys (the daemon sends e2 as soon as it is published,
or fan-out leases the whole batch), and the timing bounds fail if the end of the head does not
make the next one due at once: the poll interval is long (5 s) and a parked delivery waits 30 s.
"""

from __future__ import annotations

import asyncpg
import pytest

from hookd.models import DeliveryState, Outcome
from hookd.sender import webhook_id
from hookd.signing import generate_secret

from support.daemon import add_endpoint, publish, running_daemon, wait_until
from support.receiver import Receiver, RecordedRequest
from support.spans import open_store

PROMPT_S = 1.0
"""How soon after the head ends the next event of its key must arrive (the poll interval is 5 s)."""

OVERRIDES = {
    "daemon": {"poll_interval_s": 5.0},
    "retry": {"schedule_s": [0.0, 1.0], "max_attempts": 3, "jitter": 0.0},
}


async def install_id(db: asyncpg.Connection) -> str:
    value: str = await db.fetchval("SELECT install_id FROM hookd.meta")
    return value


def names(reqs: list[RecordedRequest], ids: dict[str, str]) -> list[str]:
    """The requests as event names (e1, e2, ...), in arrival order."""
    by_id = {v: k for k, v in ids.items()}
    return [by_id.get(r.webhook_id or "", f"?{r.webhook_id}") for r in reqs]


def arrival(reqs: list[RecordedRequest], ids: dict[str, str], name: str, nth: int = 0) -> float:
    return [r.received_loop_s for r in reqs if r.webhook_id == ids[name]][nth]


async def test_a_retrying_key_holds_back_only_its_own_later_events(
    dsn: str, db: asyncpg.Connection
) -> None:
    prefix = await install_id(db)
    async with Receiver() as rx:
        rx.script("/e", [500, 204])  # the first request (e1's first attempt) fails, then 204s
        await add_endpoint(dsn, rx.url_for("/e"))
        async with running_daemon(dsn, OVERRIDES):
            ids = {"e1": await publish(db, "order.updated", {"n": 1}, ordering_key="order-42")}
            await rx.wait_for(1, path="/e", timeout_s=5)
            ids["e2"] = await publish(db, "order.updated", {"n": 2}, ordering_key="order-42")
            ids["other"] = await publish(db, "order.updated", {"n": 3}, ordering_key="order-7")
            ids["unkeyed"] = await publish(db, "user.created", {"n": 4})
            got = await rx.wait_for(5, path="/e", timeout_s=10)
    ids = {k: webhook_id(prefix, v) for k, v in ids.items()}
    order = names(got, ids)
    assert order[0] == "e1" and order[3:] == ["e1", "e2"], order
    # The other key and the unkeyed event went out at once, ahead of e1's retry (1 s later).
    assert sorted(order[1:3]) == ["other", "unkeyed"], order
    assert arrival(got, ids, "e1", 1) - arrival(got, ids, "unkeyed") > 0.5
    # e2 went out as soon as e1 was delivered, not at the next poll.
    assert arrival(got, ids, "e2") - arrival(got, ids, "e1", 1) < PROMPT_S
    assert [r.json["position"] for r in got if r.webhook_id == ids["e2"]] == [
        int(ids["e2"].rsplit("_", 1)[1])
    ]
    assert {r.json.get("ordering_key") for r in got} == {"order-42", "order-7", None}


async def test_dead_lettering_the_head_releases_the_next(dsn: str, db: asyncpg.Connection) -> None:
    prefix = await install_id(db)
    overrides = {**OVERRIDES, "retry": {"schedule_s": [0.0, 0.3], "max_attempts": 2, "jitter": 0.0}}
    async with Receiver() as rx:
        rx.script("/e", [500, 500, 204])  # e1 fails both attempts; had e2 come first, it would fail
        await add_endpoint(dsn, rx.url_for("/e"))
        async with running_daemon(dsn, overrides):
            e1 = await publish(db, "a.b", {"n": 1}, ordering_key="k")
            await rx.wait_for(1, path="/e", timeout_s=5)
            e2 = await publish(db, "a.b", {"n": 2}, ordering_key="k")
            got = await rx.wait_for(3, path="/e", timeout_s=10)
            await wait_until(
                db, "SELECT state = 'delivered' FROM hookd.deliveries WHERE event_id = $1", e2
            )
    ids = {"e1": webhook_id(prefix, e1), "e2": webhook_id(prefix, e2)}
    assert names(got, ids) == ["e1", "e1", "e2"]
    assert await db.fetchval("SELECT state FROM hookd.deliveries WHERE event_id = $1", e1) == (
        "failed"
    )
    assert arrival(got, ids, "e2") - arrival(got, ids, "e1", 1) < PROMPT_S


async def test_two_endpoints_keep_their_own_order(dsn: str, db: asyncpg.Connection) -> None:
    prefix = await install_id(db)
    async with Receiver() as rx:
        rx.script("/a", [500, 204])
        await add_endpoint(dsn, rx.url_for("/a"))
        await add_endpoint(dsn, rx.url_for("/b"))
        async with running_daemon(dsn, OVERRIDES):
            e1 = await publish(db, "a.b", {"n": 1}, ordering_key="k")
            await rx.wait_for(1, path="/a", timeout_s=5)
            e2 = await publish(db, "a.b", {"n": 2}, ordering_key="k")
            got_b = await rx.wait_for(2, path="/b", timeout_s=5)
            got_a = await rx.wait_for(3, path="/a", timeout_s=10)
    ids = {"e1": webhook_id(prefix, e1), "e2": webhook_id(prefix, e2)}
    assert names(got_b, ids) == ["e1", "e2"]
    assert names(got_a, ids) == ["e1", "e1", "e2"]
    # /b did not wait for /a's retry.
    assert arrival(got_b, ids, "e2") < arrival(got_a, ids, "e1", 1)


async def test_a_batch_leases_only_the_head_of_each_key(dsn: str, db: asyncpg.Connection) -> None:
    pool, store = await open_store(dsn)
    try:
        ep = (await store.add_endpoint("https://receiver.example/", generate_secret())).id
        async with db.transaction():
            k = [await publish(db, "a.b", {"n": i}, ordering_key="k") for i in range(5)]
            j = await publish(db, "a.b", {"n": 5}, ordering_key="j")
            plain = [await publish(db, "a.b", {"n": 6 + i}) for i in range(2)]
        fan = await store.fan_out(100, 30.0, [(ep, 100)])
        assert fan.created == 8
        assert sorted(d.event_id for d in fan.deliveries) == sorted([k[0], j, *plain])

        # The rest of k waits, parked by the due claim (no longer taking a claim's room).
        due = await store.claim_due(100, 30.0, [(ep, 100)])
        assert due.deliveries == [] and due.parked == {ep: 4}
        parked = await db.fetchval(
            "SELECT bool_and(next_attempt_at > now() + interval '20 seconds') FROM hookd.deliveries"
            " WHERE event_id = ANY ($1::bigint[])",
            k[1:],
        )
        assert parked

        # The head is delivered: the next of k is due at once, and only it.
        head = next(d for d in fan.deliveries if d.event_id == k[0])
        await store.record(
            [Outcome(head.id, head.attempt, DeliveryState.DELIVERED, None, 204, None)], []
        )
        due = await store.claim_due(100, 30.0, [(ep, 100)])
        assert [d.event_id for d in due.deliveries] == [k[1]]
        assert due.deliveries[0].ordering_key == "k"
    finally:
        await pool.close()


async def test_an_event_still_being_fanned_out_holds_back_later_ones_of_its_key(
    dsn: str, db: asyncpg.Connection
) -> None:
    # e1 committed before e2, but is locked by a fan-out that has not committed yet (another
    # daemon's, here a transaction of the test): the daemon claims e2 alone and must not send it.
    prefix = await install_id(db)
    other = await asyncpg.connect(dsn)
    try:
        async with Receiver() as rx:
            await add_endpoint(dsn, rx.url_for("/e"))
            e1 = await publish(db, "a.b", {"n": 1}, ordering_key="k")
            e2 = await publish(db, "a.b", {"n": 2}, ordering_key="k")
            lock = other.transaction()
            await lock.start()
            await other.execute("SELECT 1 FROM hookd.events WHERE id = $1 FOR UPDATE", e1)
            async with running_daemon(dsn, OVERRIDES):
                # e2 fanned out, and its delivery looked at by a due claim and parked.
                await wait_until(
                    db,
                    "SELECT next_attempt_at > now() FROM hookd.deliveries WHERE event_id = $1",
                    e2,
                )
                assert rx.count == 0, [r.describe() for r in rx.requests]
                await lock.rollback()
                got = await rx.wait_for(2, path="/e", timeout_s=10)
    finally:
        await other.close()
    assert [r.webhook_id for r in got] == [webhook_id(prefix, e1), webhook_id(prefix, e2)]


@pytest.mark.parametrize("key", ["", "k" * 201])
async def test_publish_refuses_an_ordering_key_outside_1_to_200_characters(
    db: asyncpg.Connection, key: str
) -> None:
    with pytest.raises(asyncpg.InvalidParameterValueError, match="ordering_key must be 1-200"):
        await publish(db, "a.b", {}, ordering_key=key)
    assert await db.fetchval("SELECT count(*) FROM hookd.events") == 0
