"""Retention of the partitioned history (migration 031, hookd/retention.py): days are dropped
whole once past `retention.delivered_keep_s` (dead letters: `dead_letter_keep_s`), open work is
never dropped, partitions are made ahead, and a real daemon keeps delivering while days go.

Time is moved by giving the maintenance step a later `at`, not by waiting: the partitions of
today are "old" for a step run as if ten days from now."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from hookd.config import RetentionConfig
from hookd.errors import Busy
from hookd.metrics import Metrics
from hookd.retention import Retention
from hookd.store import Store

from support.daemon import add_endpoint, publish, running_daemon, wait_until
from support.receiver import Receiver

pytestmark = pytest.mark.asyncio(loop_scope="session")

DAY_S = 86400.0
KEEP_S = 7 * DAY_S
DEAD_KEEP_S = 30 * DAY_S

PARENTS = (
    ("events", "created_at"),
    ("deliveries_delivered", "event_created_at"),
    ("deliveries_failed", "event_created_at"),
    ("attempts", "started_at"),
)

WHERE = """
SELECT tableoid::regclass::text FROM hookd.deliveries WHERE id = $1
"""


def _days_later(n: float) -> datetime:
    return datetime.now(UTC) + timedelta(days=n)


async def _step(store: Store, days: float, ahead: int = 3) -> dict[str, int]:
    """One maintenance step `days` from now; the relations it dropped or cleaned, with rows."""
    actions = await store.maintain_history(KEEP_S, DEAD_KEEP_S, ahead, at=_days_later(days))
    return {a.relation: a.rows for a in actions if a.action != "create"}


async def _partitions(store: Store) -> set[str]:
    return {p.name for p in await store.history_partitions()}


async def test_partitions_are_made_ahead_and_a_late_day_moves_out_of_the_default(
    db: asyncpg.Connection, store: Store
) -> None:
    today = datetime.now(UTC).date()
    names = await _partitions(store)
    # The migration made today and two more days.
    for i in range(3):
        day = (today + timedelta(days=i)).strftime("%Y%m%d")
        assert {f"events_{day}", f"attempts_{day}", f"deliveries_delivered_{day}"} <= names
    far = today + timedelta(days=20)
    # An event for a day with no partition yet lands in the default partition...
    event_id = await db.fetchval(
        "INSERT INTO hookd.events (event_type, payload, created_at) VALUES ('x.y', '{}', $1)"
        " RETURNING id",
        datetime(far.year, far.month, far.day, 12, tzinfo=UTC),
    )
    where = "SELECT tableoid::regclass::text FROM hookd.events WHERE id = $1"
    assert await db.fetchval(where, event_id) == "hookd.events_default"
    # ... and moves into that day's partition when a step makes it.
    await store.maintain_history(KEEP_S, DEAD_KEEP_S, 1, at=_days_later(20))
    assert await db.fetchval(where, event_id) == f"hookd.events_{far.strftime('%Y%m%d')}"
    assert f"events_{(far + timedelta(days=1)).strftime('%Y%m%d')}" in await _partitions(store)


async def test_a_day_goes_whole_but_open_work_and_kept_dead_letters_stay(
    dsn: str, db: asyncpg.Connection, store: Store
) -> None:
    async with Receiver() as rx:
        ok, _ = await add_endpoint(dsn, rx.url_for("/ok"))
        down, _ = await add_endpoint(dsn, rx.url_for("/down"))
        gone, _ = await add_endpoint(dsn, rx.url_for("/gone"))
        rx.script("/down", [503])
        rx.script("/gone", [413])
        first = await publish(db, "order.paid", {"n": 1}, idempotency_key="k-1")
        async with running_daemon(dsn, {"retry": {"schedule_s": [0.0, 3600.0], "max_attempts": 5}}):
            await wait_until(
                db,
                "SELECT count(*) = 3 FROM hookd.deliveries WHERE attempts > 0"
                " AND (state <> 'pending' OR last_status = 503)",
            )
        # Published while no daemon runs: not fanned out yet.
        waiting = await publish(db, "order.paid", {"n": 2})
    ids = dict(
        await db.fetch("SELECT endpoint_id, id FROM hookd.deliveries WHERE event_id = $1", first)
    )
    delivered, retrying, dead = ids[ok], ids[down], ids[gone]
    assert await db.fetchval(WHERE, retrying) == "hookd.deliveries_open"
    today = datetime.now(UTC).strftime("%Y%m%d")

    # Eight days on, today's partitions are past the 7-day retention.
    done = await _step(store, 8)
    assert {f"events_{today}", f"attempts_{today}", f"deliveries_delivered_{today}"} <= set(done)
    assert f"deliveries_failed_{today}" not in done  # dead letters: 30 days
    assert await db.fetchval("SELECT count(*) FROM hookd.deliveries WHERE id = $1", delivered) == 0
    # The retrying delivery, the dead letter and the waiting event survive, with their events and
    # attempt logs (moved to the default partitions).
    assert await db.fetchval(WHERE, retrying) == "hookd.deliveries_open"
    assert await db.fetchval(WHERE, dead) == f"hookd.deliveries_failed_{today}"
    kept = await db.fetch(
        "SELECT id, tableoid::regclass::text AS part FROM hookd.events ORDER BY id"
    )
    assert [(r["id"], r["part"]) for r in kept] == [
        (first, "hookd.events_default"),
        (waiting, "hookd.events_default"),
    ]
    logged = await db.fetch(
        "SELECT delivery_id, tableoid::regclass::text AS part FROM hookd.attempts"
        " ORDER BY delivery_id"
    )
    assert {r["delivery_id"] for r in logged} == {retrying, dead}
    assert {r["part"] for r in logged} == {"hookd.attempts_default"}
    # Idempotency keys live as long as delivered history: the key is forgotten.
    assert await db.fetchval("SELECT count(*) FROM hookd.idempotency_keys") == 0

    # A second step the same day finds nothing more to drop.
    assert await _step(store, 8) == {}

    # The kept work still goes out: the retrying delivery and the late event are delivered.
    async with Receiver() as rx2:
        await db.execute("UPDATE hookd.endpoints SET url = $1", rx2.url_for("/ok"))
        await db.execute(
            "UPDATE hookd.deliveries SET next_attempt_at = now() WHERE id = $1", retrying
        )
        async with running_daemon(dsn):
            # The retry, and the late event's three deliveries.
            await rx2.wait_for(4, timeout_s=10)
            await wait_until(
                db, "SELECT count(*) = 0 FROM hookd.deliveries WHERE state = 'pending'"
            )
        assert len(rx2.requests_for("/ok")) == 4

    # Past 30 days the dead letter goes too, and with it (this step or the next: a step cleans
    # the default partitions before it drops days) everything else of today.
    done = await _step(store, 31)
    assert f"deliveries_failed_{today}" in done
    assert await db.fetchval("SELECT count(*) FROM hookd.deliveries WHERE id = $1", dead) == 0
    await _step(store, 31)
    assert await db.fetchval("SELECT count(*) FROM hookd.events") == 0
    assert await db.fetchval("SELECT count(*) FROM hookd.deliveries") == 0
    assert await db.fetchval("SELECT count(*) FROM hookd.attempts") == 0


async def test_retention_off_keeps_everything(db: asyncpg.Connection, store: Store) -> None:
    event_id = await publish(db, "order.paid", {"n": 1})
    actions = await store.maintain_history(None, None, 3, at=_days_later(400))
    assert {a.action for a in actions} == {"create"}
    assert await db.fetchval("SELECT count(*) FROM hookd.events WHERE id = $1", event_id) == 1


async def test_a_daemon_makes_partitions_ahead_as_configured(
    dsn: str, db: asyncpg.Connection
) -> None:
    day = (datetime.now(UTC).date() + timedelta(days=6)).strftime("%Y%m%d")
    part = f"hookd.events_{day}"
    assert await db.fetchval("SELECT to_regclass($1)", part) is None
    async with running_daemon(dsn, {"retention": {"partitions_ahead": 6}}):
        await wait_until(db, "SELECT to_regclass($1) IS NOT NULL", part)


async def test_a_step_is_counted_and_a_locked_table_makes_it_give_up(
    dsn: str, db: asyncpg.Connection, store: Store
) -> None:
    metrics = Metrics()
    retention = Retention(store, RetentionConfig(delivered_keep_s=KEEP_S), metrics)
    assert await retention.step()
    assert metrics.retention_last_success._value.get() > 0
    # A transaction that holds hookd.events keeps a drop of today's events from getting its
    # lock: the step gives up after 1 s (lock_timeout) and leaves the day in place.
    async with db.transaction():
        await db.execute("LOCK TABLE hookd.events IN ROW EXCLUSIVE MODE")
        with pytest.raises(Busy):
            await store.maintain_history(KEEP_S, DEAD_KEEP_S, 3, at=_days_later(8))
    today = datetime.now(UTC).strftime("%Y%m%d")
    assert await db.fetchval("SELECT to_regclass($1)", f"hookd.events_{today}") is not None


async def test_days_dropped_under_load_lose_and_repeat_nothing(
    dsn: str, db: asyncpg.Connection, store: Store
) -> None:
    """Today's partitions are made and dropped five times while events are published and
    delivered: every (event, endpoint) arrives exactly once, and the daemon keeps running."""
    events, endpoints = 150, 3
    async with Receiver() as rx:
        for i in range(endpoints):
            await add_endpoint(dsn, rx.url_for(f"/in{i}"))
        async with running_daemon(dsn) as daemon:

            async def publisher() -> None:
                for n in range(events):
                    await publish(db, "order.paid", {"n": n})
                    if n % 10 == 0:
                        await asyncio.sleep(0.01)  # pacing: publishing spread over the turns

            async def turnover(conn: asyncpg.Connection) -> int:
                dropped = 0
                today = datetime.now(UTC).date()
                for _ in range(5):
                    for parent, key in PARENTS:
                        await conn.execute(
                            "SELECT hookd.history_partition_create($1, $2, $3)", parent, key, today
                        )
                    done = await _step(store, 8)
                    day = today.strftime("%Y%m%d")
                    dropped += sum(f"{parent}_{day}" in done for parent, _ in PARENTS)
                    await asyncio.sleep(0.05)  # pacing: let deliveries happen between turns
                return dropped

            conn = await asyncpg.connect(dsn)
            try:
                _, dropped = await asyncio.gather(publisher(), turnover(conn))
            finally:
                await conn.close()
            # Dead letters are kept 30 days: all but deliveries_failed, five times.
            assert dropped == 5 * (len(PARENTS) - 1)
            await rx.wait_for(events * endpoints, timeout_s=30)
            await wait_until(
                db,
                "SELECT count(*) = 0 FROM hookd.deliveries WHERE state = 'pending'"
                " AND NOT EXISTS (SELECT 1 FROM hookd.events WHERE fanned_out_at IS NULL)",
            )
            assert daemon.metrics.internal_errors._value.get() == 0
            # No claim or outcome write failed on a lock (a deadlock with a drop, say).
            assert daemon.metrics.db_errors._value.get() == 0
        for i in range(endpoints):
            ids = rx.ids_for(f"/in{i}")  # webhook-id: one per event
            assert len(ids) == events, i
            assert len(set(ids)) == events, f"a delivery to endpoint {i} was sent twice"
