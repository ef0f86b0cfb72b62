"""Upgrading an installation with data: the fixture of tests/fixtures/upgrade_v30 (a database that
hookd filled at schema version 30, see tests/support/upgrade_fixture.py) restored into a fresh
database, then `hookd migrate` run on it, the real command with every migration after 30.

What must hold whatever the migrations do to the tables: every row of version 30 is still there
with the same values, the figures are the recorded ones, idempotency keys still deduplicate, new
ids continue above the fixture's, and the real daemon then delivers exactly what a version-30
daemon delivered from the same data (recorded when the fixture was made): what was waiting, once,
and nothing that was delivered, paused, dead-lettered or backing off.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from hookd import migrate
from hookd.service import NotFound, Scope, Service
from hookd.store import Store

from support import upgrade_fixture as fx
from support.daemon import publish
from support.proc import run_cli

_numbers = itertools.count(1)

KEYS = {
    "hookd.events": ("id",),
    "hookd.deliveries": ("id",),
    "hookd.attempts": ("delivery_id", "attempt"),
    "hookd.endpoints": ("id",),
    "hookd.event_types": ("name",),
}


@pytest_asyncio.fixture(loop_scope="session")
async def empty_dsn(pg_cluster: Any) -> AsyncIterator[str]:
    """A fresh database with no hookd schema (not the migrated template), dropped after."""
    name = f"hookd_up_{os.getpid()}_{next(_numbers)}"
    admin = await asyncpg.connect(pg_cluster.admin_dsn, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close(timeout=5)
    yield pg_cluster.dsn_for(name)
    admin = await asyncpg.connect(pg_cluster.admin_dsn, timeout=10)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close(timeout=5)


Rows = dict[str, dict[tuple[Any, ...], tuple[Any, ...]]]


async def version_30_rows(conn: asyncpg.Connection, data: dict[str, Any]) -> Rows:
    """Every row of the fixture's hookd tables, by primary key, as the columns of version 30."""
    out: Rows = {}
    for table, key in KEYS.items():
        cols = data["tables"][table]["columns"]
        select = ", ".join(f'"{c}"' for c in cols)
        rows = await conn.fetch(f"SELECT {select} FROM {table}")
        out[table] = {tuple(r[k] for k in key): tuple(r) for r in rows}
    return out


async def restore(dsn: str) -> tuple[dict[str, Any], Rows]:
    """Restore the fixture into the empty database `dsn`; return its manifest and its rows."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        data = await fx.restore(conn)
        assert await migrate.current_version(conn) == fx.SCHEMA_VERSION
        return data, await version_30_rows(conn, data)
    finally:
        await conn.close(timeout=5)


async def hookd_migrate(dsn: str) -> None:
    result = await run_cli("migrate", "--dsn", dsn)
    assert result.returncode == 0, result.describe()
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        assert await migrate.current_version(conn) == migrate.latest_version()
    finally:
        await conn.close(timeout=5)


async def integrity(conn: asyncpg.Connection) -> dict[str, int]:
    """Rows that point at nothing: deliveries without their event, attempts without their
    delivery (the schema may or may not enforce these with foreign keys)."""
    row = await conn.fetchrow(
        """
        SELECT (SELECT count(*) FROM hookd.deliveries d
                WHERE NOT EXISTS (SELECT 1 FROM hookd.events e WHERE e.id = d.event_id))
                   AS orphan_deliveries,
               (SELECT count(*) FROM hookd.attempts a
                WHERE NOT EXISTS (SELECT 1 FROM hookd.deliveries d WHERE d.id = a.delivery_id))
                   AS orphan_attempts
        """
    )
    assert row is not None
    return dict(row)


async def partition_layout(conn: asyncpg.Connection) -> dict[str, int]:
    """Rows per partition of the history tables (version 31), by partition name."""
    rows = await conn.fetch(
        "SELECT tableoid::regclass::text AS part, count(*) AS n FROM hookd.events GROUP BY 1"
        " UNION ALL SELECT tableoid::regclass::text, count(*) FROM hookd.deliveries GROUP BY 1"
        " UNION ALL SELECT tableoid::regclass::text, count(*) FROM hookd.attempts GROUP BY 1"
    )
    return {r["part"].removeprefix("hookd."): r["n"] for r in rows}


async def test_migrate_applies_up_to_a_target_version(empty_dsn: str) -> None:
    conn = await asyncpg.connect(empty_dsn, timeout=10)
    try:
        with pytest.raises(ValueError, match="no migration with version 8"):
            await migrate.apply(conn, target=8)
        assert await migrate.apply(conn, target=10) == [1, 2, 3, 4, 5, 6, 7, 10]
        assert await migrate.apply(conn, target=7) == []  # never goes back
        assert await migrate.current_version(conn) == 10
    finally:
        await conn.close(timeout=5)


async def test_migrating_the_fixture_keeps_every_row_and_figure(empty_dsn: str) -> None:
    data, before = await restore(empty_dsn)
    conn = await asyncpg.connect(empty_dsn, timeout=10)
    try:
        # The restore itself: the figures recorded when the fixture was made.
        assert await fx.counts(conn) == data["counts"]
        assert await integrity(conn) == {"orphan_deliveries": 0, "orphan_attempts": 0}
        await hookd_migrate(empty_dsn)
        assert await fx.counts(conn) == data["counts"]
        assert await integrity(conn) == {"orphan_deliveries": 0, "orphan_attempts": 0}
        after = await version_30_rows(conn, data)
        layout = await partition_layout(conn)
    finally:
        await conn.close(timeout=5)
    # Version 31's layout: open work in deliveries_open, the rest by state and day; history
    # from before the upgrade's day in its "before" partition, nothing in the defaults.
    by_state = data["counts"]["deliveries_by_state"]
    assert layout["deliveries_open"] == by_state["pending"] + by_state["paused"]
    assert (
        sum(n for p, n in layout.items() if p.startswith("deliveries_delivered"))
        == (by_state["delivered"])
    )
    assert (
        sum(n for p, n in layout.items() if p.startswith("deliveries_failed"))
        == (by_state["failed"])
    )
    assert not {p for p, n in layout.items() if p.endswith("_default") and n}, layout
    assert any("_before_" in p and n for p, n in layout.items()), layout
    for table in KEYS:
        assert len(after[table]) == len(before[table]) == data["tables"][table]["rows"], table
        changed = [k for k, v in before[table].items() if after[table].get(k) != v]
        assert not changed, f"{table}: {len(changed)} rows changed, e.g. {changed[:3]}"


async def test_an_upgraded_installation_goes_on_where_it_stopped(empty_dsn: str) -> None:
    data, before = await restore(empty_dsn)
    await hookd_migrate(empty_dsn)
    max_event = data["sequences"]["events.id"]["last_value"]
    max_delivery = data["sequences"]["deliveries.id"]["last_value"]
    deliveries = before["hookd.deliveries"]
    cols = data["tables"]["hookd.deliveries"]["columns"]
    state, event_col, endpoint_col = (cols.index(c) for c in ("state", "event_id", "endpoint_id"))
    by_state: dict[str, set[tuple[int, int]]] = {}
    for row in deliveries.values():
        by_state.setdefault(row[state], set()).add((row[endpoint_col], row[event_col]))

    conn = await asyncpg.connect(empty_dsn, timeout=10)
    try:
        # Idempotency keys of version 30 still deduplicate: the old id, no new event.
        keyed = await conn.fetch(
            "SELECT DISTINCT ON (tenant IS NULL) id, event_type, tenant, idempotency_key"
            " FROM hookd.events WHERE idempotency_key IS NOT NULL ORDER BY tenant IS NULL, id"
        )
        assert {r["tenant"] is None for r in keyed} == {True, False}
        for r in keyed:
            again = await publish(
                conn, r["event_type"], {"again": True}, tenant=r["tenant"],
                idempotency_key=r["idempotency_key"],
            )  # fmt: skip
            assert again == r["id"]
        assert await conn.fetchval("SELECT count(*) FROM hookd.events") == data["counts"]["events"]
        # A new event (of a tenant without endpoints: it changes no delivery) gets a new id.
        new_id = await publish(conn, "user.created", {"user": "new"}, tenant="initech")
        assert new_id > max_event

        got = await fx.deliver_waiting(empty_dsn)
        assert not got.foreign and not got.unverified, (got.foreign, got.unverified)
        assert len(got.pairs) == len(set(got.pairs)), "a delivery was sent twice"
        received = set(got.pairs)
        for kept in ("delivered", "failed", "paused"):
            resent = received & by_state[kept]
            assert not resent, f"{len(resent)} {kept} deliveries sent again: {sorted(resent)[:3]}"
        expected = {tuple(p) for p in data["daemon_v30"]["delivered"]}
        assert received == expected, (
            f"missing {sorted(expected - received)[:5]}, unexpected {sorted(received - expected)[:5]}"
        )

        figures = await fx.counts(conn)
        want = dict(data["daemon_v30"]["counts_after"], events=data["counts"]["events"] + 1)
        assert figures == want
        new_deliveries = await conn.fetch(
            "SELECT id, state FROM hookd.deliveries WHERE id > $1", max_delivery
        )
        # The events not fanned out got deliveries with new ids, all delivered.
        assert len(new_deliveries) == figures["deliveries"] - data["counts"]["deliveries"] > 0
        assert {r["state"] for r in new_deliveries} == {"delivered"}

        # Nothing the daemon had no business with changed: delivered, dead-lettered, paused and
        # backing-off deliveries of version 30 are as they were, attempts and all.
        now = await version_30_rows(conn, data)
        sent = {(row[endpoint_col], row[event_col]) for row in deliveries.values()} & received
        untouched = {
            k: v for k, v in deliveries.items() if (v[endpoint_col], v[event_col]) not in sent
        }
        assert sent and sent <= by_state["pending"], "what was sent of the fixture's was pending"
        assert len(untouched) == len(deliveries) - len(sent)
        assert {k: now["hookd.deliveries"][k] for k in untouched} == untouched
        sent_ids = {k[0] for k, v in deliveries.items() if k not in untouched}
        old_attempts = {k: v for k, v in before["hookd.attempts"].items() if k[0] not in sent_ids}
        assert {k: now["hookd.attempts"][k] for k in old_attempts} == old_attempts

        # The attempt log of version 30 reads through the service, in the tenant's scope too.
        backing_off = await conn.fetchrow(
            "SELECT d.id, e.tenant FROM hookd.deliveries d JOIN hookd.events e ON e.id = d.event_id"
            " WHERE d.state = 'pending' AND d.attempts >= 3 ORDER BY d.id LIMIT 1"
        )
        assert backing_off is not None and backing_off["tenant"] is not None
        store = await Store.open(empty_dsn, pool_size=1, connect_timeout_s=5, command_timeout_s=10)
        try:
            service = Service(store, allow_http=True, policy=None)
            log = await service.attempts(Scope(backing_off["tenant"]), backing_off["id"])
            with pytest.raises(NotFound):
                await service.attempts(Scope("someone-else"), backing_off["id"])
        finally:
            await store.close()
        acols = data["tables"]["hookd.attempts"]["columns"]
        fields = ("attempt", "started_at", "status", "error", "response_body")
        want_log = sorted(
            tuple(v[acols.index(f)] for f in fields)
            for k, v in before["hookd.attempts"].items()
            if k[0] == backing_off["id"]
        )
        assert [tuple(getattr(a, f) for f in fields) for a in log] == want_log
        assert [(a.attempt, a.status) for a in log] == [(1, 500), (2, 500), (3, 500)]

        # The captured table still publishes, above the fixture's ids.
        await conn.execute(
            "INSERT INTO public.shipments (id, carrier, weight_kg) VALUES (100000, 'dhl', 1)"
        )
        captured = await conn.fetchrow(
            "SELECT id, event_type FROM hookd.events ORDER BY id DESC LIMIT 1"
        )
        assert captured is not None and captured["event_type"] == "shipment.created"
        assert captured["id"] > new_id
    finally:
        await conn.close(timeout=5)
