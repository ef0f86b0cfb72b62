"""The daemon's hot path: fan-out, due claims, outcomes and the small reads around them.

`HotPathMixin` holds the queries the engine runs on every tick (`fan_out`, `claim_due`, `record`,
`near_due`, `set_breaker`, `outbox_waiting`, `install_id`), with their results (`FanOut`,
`DueClaim`) and the asynchronous commit these writes use.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from hookd.models import (
    AttemptRecord,
    Delivery,
    Outcome,
)
from hookd.store_base import QUERIES, StoreBase, _mapped
from hookd.store_rows import (
    _delivery,
)

# The daemon's own hot-path writes (fan-out, claims, outcomes) use asynchronous commit: a PostgreSQL
# crash can lose the last moments of progress, which only means those deliveries are attempted
# again (at-least-once), and it keeps fsync latency out of the delivery path. It is set per
# transaction, not per session (a pooler in transaction mode hands sessions around), and without a
# round trip of its own: fan_out and claim_due set it inside their statement (set_config(...,
# true), see queries.sql), and `record` sends it with its BEGIN. Every other write (the operating
# surface's) commits synchronously, as the server is configured.
_BEGIN_ASYNC_COMMIT = "BEGIN; SET LOCAL synchronous_commit TO off"


@contextlib.asynccontextmanager
async def _async_commit_transaction(
    conn: PoolConnectionProxy[asyncpg.Record],
) -> AsyncIterator[None]:
    """A transaction on `conn` that commits asynchronously; BEGIN and the setting go in one
    round trip (asyncpg's `conn.transaction()` would need a second one for the SET LOCAL)."""
    await conn.execute(_BEGIN_ASYNC_COMMIT)
    try:
        yield
    except BaseException:
        # A rollback that fails (a lost connection) leaves the transaction to the pool, whose
        # release rolls back or drops the connection; the original error is the one to raise.
        with contextlib.suppress(Exception):
            await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT")


@dataclass(frozen=True, slots=True)
class FanOut:
    """Result of one fan-out claim: how many events were taken and the deliveries created."""

    events_claimed: int
    oldest_claimed: int
    """Of `events_claimed`, those taken oldest-first (not by the fresh lane)."""
    created: int
    """Deliveries created, including those left unleased for endpoints without room."""
    deliveries: list[Delivery]
    """The created deliveries leased to us."""
    last_event_id: int
    """The highest id of the events claimed oldest-first (0 if none)."""
    unleased_endpoints: frozenset[int]
    """Endpoints some of whose new deliveries were left unleased because they had no room (not
    those that only wait for an earlier delivery of their ordering key: its end wakes them)."""
    cut_event_id: int | None = None
    """The event at which this claim reached its bound of deliveries (it and the events after it
    are not claimed yet; the next claim resumes it after the last endpoint done), or None."""


@dataclass(frozen=True, slots=True)
class DueClaim:
    """Result of one due claim: the deliveries leased to us, and those parked behind their key."""

    deliveries: list[Delivery]
    parked: dict[int, int]
    """Endpoint id -> deliveries parked because an earlier one of their ordering key is open (or
    not fanned out yet): they took room in this claim, so more may be due."""


KEY_PARK_S = 30.0
"""How long claim_due parks a delivery behind an open earlier delivery of its ordering key; the
end of that one makes it due at once (keys_next_due), so this only bounds a missed wake-up."""


class HotPathMixin(StoreBase):
    """The daemon's own reads and writes, fenced by the lease owner."""

    @_mapped
    async def fan_out(
        self,
        limit: int,
        lease_s: float,
        rooms: Sequence[tuple[int, int]] = (),
        after_id: int = 0,
        newest: int = 0,
        max_deliveries: int = 5000,
    ) -> FanOut:
        """Claim up to `limit` new events with ids above `after_id` and create their deliveries
        (one short transaction), whatever room endpoints have: the outbox is never blocked.

        Of each endpoint's new deliveries, the first `room` (from `rooms`, (endpoint id, room)
        pairs; endpoints not listed have none) are leased to us for `lease_s` seconds; the others
        stay pending and unleased, due now, for a later `claim_due` by whoever has room.
        `newest` more events are taken from the newest end of the outbox (the fresh lane, used
        while a backlog drains).

        At most `max_deliveries` are created, in (event id, endpoint id) order: the event at
        which the bound is reached is fanned out in pieces, each claim resuming after the last
        endpoint the previous one committed (`events.fan_out_cursor`), and is counted as
        claimed with its last piece (`cut_event_id` until then).
        """
        rows = await self.pool.fetch(
            QUERIES["fan_out"],
            limit,
            lease_s,
            self.owner,
            [ep for ep, _ in rooms],
            [room for _, room in rooms],
            after_id,
            newest,
            max_deliveries,
        )
        done = [r for r in rows if r["done"]]
        events = {r["event_id"] for r in done}
        oldest = {r["event_id"] for r in done if not r["newest"]}
        created = [r for r in rows if r["id"] is not None]
        cut: int | None = rows[0]["cut_event_id"] if rows else None
        last = max((r["event_id"] for r in done if not r["newest"]), default=0)
        if cut is not None and any(r["event_id"] == cut and not r["newest"] for r in rows):
            # Cut in the oldest-first part: the next scan must start at it again.
            last = cut - 1
        return FanOut(
            len(events),
            len(oldest),
            len(created),
            [_delivery(r) for r in created if r["leased"]],
            last,
            frozenset(r["endpoint_id"] for r in created if not r["leased"] and r["key_head"]),
            cut,
        )

    @_mapped
    async def claim_due(
        self,
        limit: int,
        lease_s: float,
        rooms: Sequence[tuple[int, int]],
        unfanned_park_s: float = 1.0,
    ) -> DueClaim:
        """Lease up to `limit` due pending deliveries for `lease_s` seconds, at most `room` of
        each (endpoint_id, room) in `rooms`; first attempts ahead of retries, then most overdue
        first.

        A delivery with an ordering key is leased only as the head of its (endpoint, key); one
        behind an open earlier delivery of its key is parked for KEY_PARK_S seconds (until that
        one ends), one behind an earlier event not yet fanned out for `unfanned_park_s`.
        """
        if not rooms or limit <= 0:
            return DueClaim([], {})
        rows = await self.pool.fetch(
            QUERIES["claim_due"],
            limit,
            lease_s,
            self.owner,
            [ep for ep, _ in rooms],
            [room for _, room in rooms],
            KEY_PARK_S,
            unfanned_park_s,
        )
        parked: dict[int, int] = {}
        leased: list[Delivery] = []
        for r in rows:
            if r["parked"]:
                parked[r["endpoint_id"]] = parked.get(r["endpoint_id"], 0) + 1
            else:
                leased.append(_delivery(r, r["delivery_created_at"]))
        return DueClaim(leased, parked)

    @_mapped
    async def record(self, outcomes: Sequence[Outcome], attempts: Sequence[AttemptRecord]) -> int:
        """Write outcomes and attempt-log rows in one transaction; return outcomes applied.

        An outcome whose lease was lost (expired and taken over) is skipped, its attempt row kept;
        a delivered outcome is applied whatever the lease says, unless the delivery is already
        delivered. A retry for an endpoint disabled meanwhile is written as paused, and one for an
        endpoint deleted meanwhile as failed ("endpoint deleted"). A delivery with an ordering key
        that ends (delivered, failed) makes the next one of its (endpoint, key) due now.
        """
        async with self.pool.acquire() as conn, _async_commit_transaction(conn):
            applied: int = 0
            if outcomes:
                row = await conn.fetchrow(
                    QUERIES["record_outcomes"],
                    [o.delivery_id for o in outcomes],
                    [o.attempt for o in outcomes],
                    [o.state.value for o in outcomes],
                    [o.retry_in_s for o in outcomes],
                    [o.status for o in outcomes],
                    [o.error for o in outcomes],
                    [o.counted for o in outcomes],
                    self.owner,
                )
                assert row is not None
                applied = row["applied"]
                if row["ended_keys"]:
                    # Its own statement: see keys_next_due in queries.sql.
                    await conn.execute(
                        QUERIES["keys_next_due"], row["ended_endpoints"], row["ended_keys"]
                    )
            if attempts:
                await conn.execute(
                    QUERIES["record_attempts"],
                    [a.delivery_id for a in attempts],
                    [a.attempt for a in attempts],
                    [a.started_unix_s for a in attempts],
                    [a.duration_s for a in attempts],
                    [a.status for a in attempts],
                    [a.error for a in attempts],
                    [a.response_body for a in attempts],
                )
        return applied

    @_mapped
    async def near_due(self, horizon_s: float, limit: int) -> list[tuple[int, float]]:
        """Unleased pending deliveries due within `horizon_s`: (id, seconds until due)."""
        rows = await self.pool.fetch(QUERIES["near_due"], horizon_s, limit)
        return [(r["id"], r["due_in_s"]) for r in rows]

    @_mapped
    async def set_breaker(self, endpoint_id: int, open_until: datetime | None) -> None:
        """Record an endpoint's breaker state (None: closed) for status and metrics."""
        await self.pool.execute(QUERIES["set_breaker"], endpoint_id, open_until)

    @_mapped
    async def outbox_waiting(self, after_id: int = 0) -> bool:
        """True if an event with an id above `after_id` waits for fan-out (one index probe)."""
        return bool(await self.pool.fetchval(QUERIES["outbox_waiting"], after_id))

    @_mapped
    async def install_id(self) -> str:
        """The installation's webhook-id prefix."""
        value: str = await self.pool.fetchval(QUERIES["install_id"])
        return value
