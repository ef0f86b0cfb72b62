"""Status figures stay cheap at any backlog: exact up to the cap, PostgreSQL's estimate above it,
exact on request (`hookd status --exact`)."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson
import pytest

from hookd.store import QUERIES, STATUS_EXACT_BELOW, Store

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _pending(db: asyncpg.Connection, n: int, state: str = "pending") -> None:
    """`n` deliveries of one event in `state`, for endpoints numbered from 1 (bulk SQL)."""
    event_id = await db.fetchval(
        "INSERT INTO hookd.events (event_type, payload, fanned_out_at)"
        " VALUES ('x.y', '{}', now()) RETURNING id"
    )
    await db.execute(
        "INSERT INTO hookd.deliveries (event_id, endpoint_id, state, created_at, event_created_at)"
        " SELECT $1, g, $3, now() - interval '1 minute', now() FROM generate_series(1, $2) g",
        event_id,
        n,
        state,
    )


async def test_counts_below_the_cap_are_exact(db: asyncpg.Connection, store: Store) -> None:
    await _pending(db, 1234)
    await _pending(db, 7, "failed")
    s = await store.status()
    assert (s.pending, s.failed, s.paused, s.outbox_backlog) == (1234, 7, 0, 0)
    assert s.estimated == frozenset()
    assert s.oldest_pending_s is not None and 55 < s.oldest_pending_s < 600
    assert s.failed_attempts_last_hour == 0
    assert (await store.status(attempts=False)).failed_attempts_last_hour is None


async def test_counts_above_the_cap_are_estimates_unless_exact(
    db: asyncpg.Connection, store: Store
) -> None:
    n = STATUS_EXACT_BELOW * 3
    await _pending(db, n)
    await db.execute("ANALYZE hookd.deliveries")
    s = await store.status()
    assert s.estimated == frozenset({"pending"})
    # Never below the cap, and from fresh statistics close to the truth.
    assert s.pending > STATUS_EXACT_BELOW
    assert 0.8 * n < s.pending < 1.2 * n, s.pending
    exact = await store.status(exact=True)
    assert exact.pending == n and exact.estimated == frozenset()


async def test_cheap_counts_read_a_bounded_number_of_rows(
    db: asyncpg.Connection, store: Store
) -> None:
    """The cheap form reads at most the cap's worth of index entries per count, whatever the
    backlog: the buffers it touches do not grow with it (measured with EXPLAIN ANALYZE)."""
    await _pending(db, STATUS_EXACT_BELOW * 5)
    await db.execute("VACUUM ANALYZE hookd.deliveries")

    assert await _rows_read(db, "status_counts") <= 4 * (STATUS_EXACT_BELOW + 1) + 10
    assert await _rows_read(db, "status_counts_exact") >= STATUS_EXACT_BELOW * 5


async def _rows_read(db: asyncpg.Connection, query: str) -> int:
    """Rows read by the scans of one named query (EXPLAIN ANALYZE), its parameters filled in."""
    sql = QUERIES[query]
    if query == "status_counts":
        sql = sql.replace("$1", str(STATUS_EXACT_BELOW)).replace("$2", "false")
    plan = await db.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")

    def scans(node: dict[str, Any]) -> int:
        own = node.get("Actual Rows", 0) * node.get("Actual Loops", 1)
        counted = own if "Scan" in node["Node Type"] else 0
        return counted + sum(scans(c) for c in node.get("Plans", []))

    return scans(orjson.loads(plan)[0]["Plan"])
