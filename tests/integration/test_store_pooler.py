"""The store's connection set-up for poolers, and its asynchronous commits per transaction.

- test_hot_path_statements_commit_asynchronously_in_their_own_transaction: fan_out and claim_due
  turn synchronous_commit off for their own transaction only, inside the statement (no round
  trip of their own); the session's setting is untouched afterwards.
- test_record_sends_the_setting_with_its_begin: an outcome write is the same four round trips
  as before: BEGIN (with SET LOCAL, so it ends with the transaction), outcomes, attempts, COMMIT.
- test_transaction_pooler_mode_prepares_no_named_statements: with `pooler = "transaction"`
  nothing is left prepared in the server session (a pooler would hand it to someone else); the
  default mode caches prepared statements as asyncpg does.
- test_shares_sessions_on_a_direct_connection: the pooler probe says False straight to
  PostgreSQL and None for a server it cannot reach (the PgBouncer cases are in
  tests/e2e/test_pgbouncer.py).
"""

from __future__ import annotations

import socket
import uuid

import asyncpg

from hookd.listener import shares_sessions
from hookd.models import AttemptRecord, DeliveryState, Outcome
from hookd.store import QUERIES, Store

from support.daemon import add_endpoint, publish

_SHOW = "SELECT current_setting('synchronous_commit')"


async def _leased_delivery(dsn: str, db: asyncpg.Connection) -> tuple[int, uuid.UUID]:
    """One event for one endpoint, fanned out and leased; (endpoint id, lease owner)."""
    ep_id, _ = await add_endpoint(dsn, "https://receiver.example/hook")
    await publish(db, "order.paid", {"id": 1})
    return ep_id, uuid.uuid4()


async def test_hot_path_statements_commit_asynchronously_in_their_own_transaction(
    dsn: str, db: asyncpg.Connection
) -> None:
    ep_id, owner = await _leased_delivery(dsn, db)
    await publish(db, "order.paid", {"id": 2})
    await db.execute("SET synchronous_commit = on")

    async with db.transaction():
        rows = await db.fetch(QUERIES["fan_out"], 10, 60.0, owner, [ep_id], [1], 0, 0, 5000)
        assert await db.fetchval(_SHOW) == "off"
    assert len(rows) == 2 and sum(r["leased"] for r in rows) == 1, rows
    assert await db.fetchval(_SHOW) == "on"

    async with db.transaction():
        claimed = await db.fetch(QUERIES["claim_due"], 10, 60.0, owner, [ep_id], [5], 1.0, 1.0)
        assert await db.fetchval(_SHOW) == "off"
    assert len(claimed) == 1, claimed
    assert await db.fetchval(_SHOW) == "on"


async def test_record_sends_the_setting_with_its_begin(dsn: str, db: asyncpg.Connection) -> None:
    ep_id, owner = await _leased_delivery(dsn, db)
    await publish(db, "order.paid", {"id": 2})
    sent: list[str] = []

    async def log_queries(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(lambda q: sent.append(q.query))

    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1, init=log_queries)
    assert pool is not None
    try:
        store = Store(pool, owner)
        fanned = await store.fan_out(10, 60.0, [(ep_id, 2)])
        applied = []
        # The first write also makes asyncpg look up the array types (once per connection).
        for delivery in fanned.deliveries:
            sent.clear()
            applied.append(
                await store.record(
                    [
                        Outcome(
                            delivery.id, delivery.attempt, DeliveryState.DELIVERED, None, 200, None
                        )
                    ],
                    [AttemptRecord(delivery.id, delivery.attempt, 1.7e9, 0.01, 200, None, "ok")],
                )
            )
        writes = sent[: sent.index("COMMIT") + 1]
    finally:
        await pool.close()

    assert applied == [1, 1]
    assert writes == [
        "BEGIN; SET LOCAL synchronous_commit TO off",
        QUERIES["record_outcomes"],
        QUERIES["record_attempts"],
        "COMMIT",
    ]
    assert await db.fetchval("SELECT array_agg(DISTINCT state) FROM hookd.deliveries") == [
        "delivered"
    ]


async def _named_statements(dsn: str, pooler: str) -> int:
    store = await Store.open(
        dsn, pool_size=1, connect_timeout_s=5.0, command_timeout_s=10.0, pooler=pooler
    )
    try:
        for _ in range(2):
            await store.status()
            await store.endpoints()
        async with store.pool.acquire() as conn:
            count: int = await conn.fetchval("SELECT count(*) FROM pg_prepared_statements")
    finally:
        await store.close()
    return count


async def test_transaction_pooler_mode_prepares_no_named_statements(dsn: str) -> None:
    assert await _named_statements(dsn, "transaction") == 0
    assert await _named_statements(dsn, "none") > 0


async def test_shares_sessions_on_a_direct_connection(dsn: str) -> None:
    assert await shares_sessions(dsn, timeout_s=5.0) is False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        closed = f"postgresql://hookd@127.0.0.1:{port}/hookd"
        assert await shares_sessions(closed, timeout_s=5.0) is None
