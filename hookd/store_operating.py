"""The operating surface's reads and actions (hookd/service.py: the API and the console).

`OperatingMixin` holds the tenant-scoped reads of endpoints, events and attempts, the endpoint
update in one transaction, `requeue` (with its result, `Requeued`) and the wake-up of daemons.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from hookd.models import (
    AttemptLogEntry,
    DeliveryState,
    Endpoint,
    EndpointStats,
    EventRecord,
)
from hookd.store_base import QUERIES, StoreBase, _mapped
from hookd.store_rows import (
    _attempt_entry,
    _endpoint,
    _event_record,
    _window,
)


@dataclass(frozen=True, slots=True)
class Requeued:
    """What `Store.requeue` did (or, for a dry run, would do)."""

    count: int
    """Deliveries selected and made pending or paused."""
    paused: int
    """Of `count`, those made paused because their endpoint is disabled."""
    ids: list[int]
    """The first 1,000 of their ids, ascending."""


class OperatingMixin(StoreBase):
    """What the API and the console read and do."""

    @_mapped
    async def endpoint(self, endpoint_id: int, tenant: str | None = None) -> Endpoint | None:
        """One endpoint (of `tenant` when given), or None."""
        row = await self.pool.fetchrow(QUERIES["endpoint_get"], endpoint_id, tenant)
        return None if row is None else _endpoint(row, self.box)

    @_mapped
    async def endpoints_page(
        self, tenant: str | None, before_id: int | None, limit: int
    ) -> list[Endpoint]:
        """Endpoints (of `tenant` when given) with ids below `before_id`, highest first."""
        rows = await self.pool.fetch(QUERIES["endpoints_page"], tenant, before_id, limit)
        return [_endpoint(r, self.box) for r in rows]

    @_mapped
    async def update_endpoint(
        self,
        endpoint_id: int,
        tenant: str | None,
        fields: Mapping[str, Any],
        *,
        settings_unset: Sequence[str] = (),
        credentials: Any = None,
        replace_credentials: bool = False,
        enabled: bool | None = None,
    ) -> Endpoint | None:
        """Change the given fields of an endpoint (of `tenant` when given) in one transaction;
        return it as it is now, or None if there is no such endpoint.

        `fields` (already validated) may hold url, event_types, tenant, description and
        payload_filter (None clears them), metadata (replaces) and settings (merged into the
        overrides); `settings_unset` keys
        are removed from the overrides (back to the configured default). `replace_credentials`
        sets the credentials to `credentials` (None: none). `enabled` True or False enables or
        disables the endpoint and resumes or pauses its deliveries, as `set_endpoint_enabled`.
        """
        changes = dict(fields)
        if settings_unset:
            changes["settings_unset"] = list(settings_unset)
        sealed = self._seal_credentials(credentials) if replace_credentials else None
        async with self.pool.acquire() as conn, conn.transaction():
            found = await conn.fetchval(
                QUERIES["endpoint_update"],
                endpoint_id,
                tenant,
                orjson.dumps(changes).decode(),
                replace_credentials,
                sealed,
            )
            if found is None:
                return None
            if enabled is not None:
                await conn.fetchrow(
                    QUERIES["endpoint_set_enabled"],
                    endpoint_id,
                    enabled,
                    None if enabled else "disabled by operator",
                )
            row = await conn.fetchrow(QUERIES["endpoint_get"], endpoint_id, None)
        assert row is not None
        return _endpoint(row, self.box)

    @_mapped
    async def event(self, event_id: int, tenant: str | None = None) -> EventRecord | None:
        """One event of the outbox (of `tenant` when given), or None."""
        row = await self.pool.fetchrow(QUERIES["event_get"], event_id, tenant)
        return None if row is None else _event_record(row)

    @_mapped
    async def events_page(
        self,
        scope_tenant: str | None,
        before_id: int | None,
        limit: int,
        *,
        event_type: str | None = None,
        tenant: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[EventRecord]:
        """Events matching every given filter (`scope_tenant` and `tenant` both), ids below
        `before_id`, highest first; `since`/`until` bound created_at (until exclusive)."""
        rows = await self.pool.fetch(
            QUERIES["events_page"],
            scope_tenant,
            before_id,
            limit,
            event_type,
            tenant,
            since,
            until,
        )
        return [_event_record(r) for r in rows]

    @_mapped
    async def event_types(self, tenant: str | None = None) -> list[str]:
        """Distinct event types in the outbox (of `tenant` when given), sorted; one index probe
        per type (a loose index scan)."""
        return [r["event_type"] for r in await self.pool.fetch(QUERIES["event_types_seen"], tenant)]

    @_mapped
    async def attempts(self, delivery_id: int) -> list[AttemptLogEntry]:
        """The attempt log of one delivery, oldest first."""
        rows = await self.pool.fetch(QUERIES["attempts_of"], delivery_id)
        return [_attempt_entry(r) for r in rows]

    @_mapped
    async def first_attempt(self, delivery_id: int) -> AttemptLogEntry | None:
        """The first attempt-log row of a delivery, or None before one is written."""
        row = await self.pool.fetchrow(QUERIES["attempt_first"], delivery_id)
        return None if row is None else _attempt_entry(row)

    @_mapped
    async def endpoint_stats(self, endpoint_id: int) -> EndpointStats:
        """Attempt figures of one endpoint over the last hour and day, and its newest attempt."""
        r = await self.pool.fetchrow(QUERIES["endpoint_stats"], endpoint_id)
        assert r is not None
        return EndpointStats(
            endpoint_id=endpoint_id,
            last_status=r["last_status"],
            last_error=r["last_error"],
            last_attempt_at=r["last_attempt_at"],
            last_hour=_window(r, "hour", 3600.0),
            last_day=_window(r, "day", 86400.0),
        )

    @_mapped
    async def requeue(
        self,
        states: Sequence[DeliveryState],
        *,
        ids: Sequence[int] | None = None,
        endpoint_id: int | None = None,
        event_type: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        tenant: str | None = None,
        dry_run: bool = False,
    ) -> Requeued:
        """Give deliveries in `states` that match every given condition another attempt, in one
        statement (so the count is exact): pending and due now, or paused when their endpoint is
        disabled (they go out when it is enabled). Deliveries of deleted endpoints are left alone;
        the attempt counter keeps counting. `dry_run` changes nothing and counts the same
        selection. Does not wake daemons (see `notify_due`)."""
        r = await self.pool.fetchrow(
            QUERIES["deliveries_requeue"],
            list(ids) if ids is not None else None,
            endpoint_id,
            [s.value for s in states],
            event_type,
            since,
            until,
            tenant,
            dry_run,
        )
        assert r is not None
        return Requeued(int(r["count"]), int(r["paused"]), list(r["ids"]))

    @_mapped
    async def insert_test_delivery(
        self, endpoint_id: int, tenant: str | None, event_type: str, payload: Any
    ) -> tuple[int, int] | None:
        """Create an event of `event_type` with `payload` for one enabled endpoint (of `tenant`
        when given) and its one delivery, pending and due now, in one statement; the event
        carries the endpoint's tenant and is marked fanned out, so no other endpoint gets it.
        Returns (delivery id, event id), or None if the endpoint is gone or disabled."""
        row = await self.pool.fetchrow(
            QUERIES["test_delivery_insert"],
            event_type,
            orjson.dumps(payload).decode(),
            endpoint_id,
            tenant,
        )
        return None if row is None else (row["id"], row["event_id"])

    @_mapped
    async def notify_due(self) -> None:
        """NOTIFY running daemons that deliveries were made due now (payload "due")."""
        await self.pool.execute(QUERIES["notify_due"])
