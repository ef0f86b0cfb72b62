"""The only module that runs SQL. Queries live in `sql/queries.sql` as named blocks.

Every method returns models, never driver records. Methods that write outcomes are fenced by the
lease owner, so a daemon whose lease expired cannot overwrite another daemon's work.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

import asyncpg
import orjson

from hookd.models import AttemptRecord, Delivery, Endpoint, Outcome
from hookd.secretbox import SecretBox


def _load_queries() -> dict[str, str]:
    text = resources.files("hookd.sql").joinpath("queries.sql").read_text(encoding="utf-8")
    parts = re.split(r"^-- name: (\w+)\n", text, flags=re.MULTILINE)
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts), 2)}


QUERIES = _load_queries()


@dataclass(frozen=True, slots=True)
class FanOut:
    """Result of one fan-out claim: how many events were taken and the deliveries created."""

    events_claimed: int
    created: int
    """Deliveries created, including those left unleased for saturated endpoints."""
    deliveries: list[Delivery]
    """The created deliveries leased to us."""
    last_event_id: int
    """The highest event id claimed (0 if none)."""


@dataclass(frozen=True, slots=True)
class StatusCounts:
    """Backlog figures for `hookd status` and metrics."""

    outbox_backlog: int
    pending: int
    paused: int
    failed: int
    oldest_pending_s: float | None
    failed_attempts_last_hour: int
    disabled_endpoints: int
    open_breakers: int


def _endpoint(r: asyncpg.Record, box: SecretBox) -> Endpoint:
    settings = r["settings"]
    creds = r["credentials"]
    return Endpoint(
        id=r["id"],
        url=r["url"],
        tenant=r["tenant"],
        event_types=tuple(r["event_types"]),
        secret=box.open(r["secret"]),
        enabled=r["enabled"],
        disabled_reason=r["disabled_reason"],
        settings=orjson.loads(settings) if isinstance(settings, str) else settings,
        created_at=r["created_at"],
        breaker_open_until=r["breaker_open_until"],
        previous_secret=box.open(r["previous_secret"]) if r["previous_secret"] else None,
        previous_secret_until=r["previous_secret_until"],
        credentials=orjson.loads(box.open(creds)) if creds else None,
        updated_at=r["updated_at"],
    )


def _delivery(r: asyncpg.Record, created_at: datetime | None = None) -> Delivery:
    return Delivery(
        id=r["id"],
        endpoint_id=r["endpoint_id"],
        attempt=r["attempts"],
        event_id=r["event_id"],
        event_type=r["event_type"],
        published_at=r["created_at"],
        payload=r["payload"],
        created_at=created_at or r["created_at"],
    )


class Store:
    """Data access for one daemon or one CLI command, over an asyncpg pool.

    `owner` identifies this process's leases (a random UUID per daemon run); `box` encrypts
    secrets on the way in and decrypts them on the way out.
    """

    def __init__(
        self, pool: asyncpg.Pool, owner: uuid.UUID | None = None, box: SecretBox | None = None
    ) -> None:
        self.pool = pool
        self.owner = owner or uuid.uuid4()
        self.box = box or SecretBox(None)

    # -- the daemon's hot path -------------------------------------------------------------

    async def fan_out(
        self,
        limit: int,
        lease_s: float,
        saturated_endpoints: Sequence[int] = (),
        after_id: int = 0,
    ) -> FanOut:
        """Claim up to `limit` new events with ids above `after_id` and create their deliveries
        (one short transaction).

        Deliveries are leased to us for `lease_s` seconds, except for `saturated_endpoints`, whose
        deliveries stay pending for a later `claim_due`.
        """
        rows = await self.pool.fetch(
            QUERIES["fan_out"], limit, lease_s, self.owner, list(saturated_endpoints), after_id
        )
        events = {r["event_id"] for r in rows}
        created = [r for r in rows if r["id"] is not None]
        return FanOut(
            len(events),
            len(created),
            [_delivery(r) for r in created if r["leased"]],
            max(events, default=0),
        )

    async def claim_due(
        self, limit: int, lease_s: float, rooms: Sequence[tuple[int, int]]
    ) -> list[Delivery]:
        """Lease up to `limit` due pending deliveries for `lease_s` seconds, at most `room` of
        each (endpoint_id, room) in `rooms`, most overdue first."""
        if not rooms or limit <= 0:
            return []
        rows = await self.pool.fetch(
            QUERIES["claim_due"],
            limit,
            lease_s,
            self.owner,
            [ep for ep, _ in rooms],
            [room for _, room in rooms],
        )
        return [_delivery(r, r["delivery_created_at"]) for r in rows]

    async def record(self, outcomes: Sequence[Outcome], attempts: Sequence[AttemptRecord]) -> int:
        """Write outcomes and attempt-log rows in one transaction; return outcomes applied.

        An outcome whose lease was lost (expired and taken over) is skipped, its attempt row kept.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            applied: int = 0
            if outcomes:
                applied = await conn.fetchval(
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

    async def near_due(self, horizon_s: float, limit: int) -> list[tuple[int, float]]:
        """Unleased pending deliveries due within `horizon_s`: (id, seconds until due)."""
        rows = await self.pool.fetch(QUERIES["near_due"], horizon_s, limit)
        return [(r["id"], r["due_in_s"]) for r in rows]

    async def set_breaker(self, endpoint_id: int, open_until: datetime | None) -> None:
        """Record an endpoint's breaker state (None: closed) for status and metrics."""
        await self.pool.execute(QUERIES["set_breaker"], endpoint_id, open_until)

    async def has_work(self, endpoints: Sequence[int], fan_out: bool) -> bool:
        """True if a delivery of one of `endpoints` is due, or (when `fan_out`) an event waits
        for fan-out: the work the caller could claim now."""
        return bool(await self.pool.fetchval(QUERIES["has_work"], list(endpoints), fan_out))

    async def next_due_in(self) -> float | None:
        """Seconds until the earliest pending delivery is due (<= 0: due now); None if none."""
        value: float | None = await self.pool.fetchval(QUERIES["next_due_in"])
        return value

    async def install_id(self) -> str:
        """The installation's webhook-id prefix."""
        value: str = await self.pool.fetchval(QUERIES["install_id"])
        return value

    # -- endpoints and administration ------------------------------------------------------

    async def endpoints(self) -> list[Endpoint]:
        """All endpoints, enabled or not, by id."""
        return [_endpoint(r, self.box) for r in await self.pool.fetch(QUERIES["endpoints_all"])]

    async def add_endpoint(
        self,
        url: str,
        secret: str,
        event_types: Sequence[str] = ("*",),
        tenant: str | None = None,
        settings: dict[str, Any] | None = None,
    ) -> Endpoint:
        """Insert an endpoint (already validated by the caller) and return it."""
        row = await self.pool.fetchrow(
            QUERIES["endpoint_insert"],
            url,
            tenant,
            list(event_types),
            self.box.seal(secret),
            orjson.dumps(settings or {}).decode(),
        )
        assert row is not None
        return _endpoint(row, self.box)

    async def set_endpoint_enabled(
        self, endpoint_id: int, enabled: bool, reason: str | None
    ) -> int | None:
        """Enable or disable an endpoint; pause or resume its deliveries.

        Returns the number of deliveries moved, or None if there is no such endpoint.
        """
        row = await self.pool.fetchrow(
            QUERIES["endpoint_set_enabled"], endpoint_id, enabled, reason
        )
        assert row is not None
        return None if row["found"] == 0 else int(row["moved"])

    async def delete_endpoint(self, endpoint_id: int) -> bool:
        """Delete an endpoint and fail its open deliveries; False if there was none."""
        async with self.pool.acquire() as conn, conn.transaction():
            found = await conn.fetchval(QUERIES["endpoint_delete"], endpoint_id)
            if found is None:
                return False
            await conn.execute(QUERIES["endpoint_settle_deleted"], endpoint_id)
        return True

    async def set_endpoint_settings(self, endpoint_id: int, settings: dict[str, Any]) -> bool:
        """Replace an endpoint's overrides (already validated); False if there is no such endpoint."""
        found = await self.pool.fetchval(
            QUERIES["endpoint_set_settings"], endpoint_id, orjson.dumps(settings).decode()
        )
        return found is not None

    async def rotate_secret(self, endpoint_id: int, new_secret: str, grace_s: float) -> bool:
        """Make `new_secret` current; keep signing with the old one for `grace_s` seconds too."""
        found = await self.pool.fetchval(
            QUERIES["endpoint_rotate_secret"], endpoint_id, self.box.seal(new_secret), grace_s
        )
        return found is not None

    async def set_credentials(self, endpoint_id: int, credentials: dict[str, Any] | None) -> bool:
        """Replace how hookd authenticates to the endpoint (None: no authentication)."""
        sealed = self.box.seal(orjson.dumps(credentials).decode()) if credentials else None
        found = await self.pool.fetchval(QUERIES["endpoint_set_credentials"], endpoint_id, sealed)
        return found is not None

    async def set_url(self, endpoint_id: int, url: str) -> bool:
        """Change an endpoint's URL (validated by the caller)."""
        return await self.pool.fetchval(QUERIES["endpoint_set_url"], endpoint_id, url) is not None

    async def deliveries(
        self, state: str | None = None, endpoint_id: int | None = None, limit: int = 100
    ) -> list[asyncpg.Record]:
        """Recent deliveries for `hookd deliveries`, newest first."""
        return list(await self.pool.fetch(QUERIES["deliveries_list"], state, endpoint_id, limit))

    async def retry_failed(
        self,
        ids: Sequence[int] | None = None,
        endpoint_id: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[int]:
        """Make dead-lettered deliveries pending again; return their ids."""
        rows = await self.pool.fetch(
            QUERIES["retry_failed"],
            list(ids) if ids is not None else None,
            endpoint_id,
            since,
            until,
        )
        return [r["id"] for r in rows]

    async def status(self) -> StatusCounts:
        """Backlog and pending figures."""
        r = await self.pool.fetchrow(QUERIES["status_counts"])
        assert r is not None
        return StatusCounts(**dict(r))
