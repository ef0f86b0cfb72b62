"""Endpoints and administration: what `hookd endpoint`, `deliveries`, `retry`, `status` run.

`AdminMixin` adds, changes and lists endpoints, checks payload filters, lists and retries
deliveries, and reads the backlog figures (`StatusCounts`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from hookd.errors import (
    InvalidPayloadFilter,
)
from hookd.models import (
    DeliveryRecord,
    Endpoint,
)
from hookd.store_base import QUERIES, StoreBase, _denied, _mapped, is_transient
from hookd.store_rows import (
    _delivery_record,
    _endpoint,
)

_FILTER_ERROR_CLASSES = ("22", "42", "0A")
"""SQLSTATE classes a payload filter the user wrote can cause: data exceptions (22), syntax
errors and undefined objects (42), features not supported (0A)."""


@dataclass(frozen=True, slots=True)
class StatusCounts:
    """Backlog figures for `hookd status` and metrics.

    Counts above `STATUS_EXACT_BELOW` are the planner's estimates unless read with `exact`:
    `estimated` names them (of outbox_backlog, pending, paused, failed).
    """

    outbox_backlog: int
    pending: int
    paused: int
    failed: int
    oldest_pending_s: float | None
    failed_attempts_last_hour: int | None
    """None when not asked for (`Store.status(attempts=False)`)."""
    disabled_endpoints: int
    open_breakers: int
    estimated: frozenset[str] = frozenset()


STATUS_EXACT_BELOW = 10_000
"""Status counts up to this are exact; above it they are the planner's estimates (each count
reads at most this many index entries: a few ms), unless `hookd status --exact`."""


class AdminMixin(StoreBase):
    """Endpoints, deliveries and backlog figures, for the CLI and the daemon."""

    @_mapped
    async def endpoints(self) -> list[Endpoint]:
        """All endpoints, enabled or not, by id."""
        return [_endpoint(r, self.box) for r in await self.pool.fetch(QUERIES["endpoints_all"])]

    @_mapped
    async def add_endpoint(
        self,
        url: str,
        secret: str,
        event_types: Sequence[str] = ("*",),
        tenant: str | None = None,
        settings: Mapping[str, Any] | None = None,
        *,
        description: str | None = None,
        metadata: Mapping[str, str] | None = None,
        credentials: Mapping[str, Any] | None = None,
        enabled: bool = True,
        payload_filter: str | None = None,
    ) -> Endpoint:
        """Insert an endpoint (already validated by the caller) and return it.

        Created disabled (`enabled` False), its reason is "disabled by operator".
        `payload_filter` is jsonpath text (see `check_payload_filter`).
        """
        row = await self.pool.fetchrow(
            QUERIES["endpoint_insert"],
            url,
            tenant,
            list(event_types),
            self.box.seal(secret),
            orjson.dumps(dict(settings or {})).decode(),
            description,
            orjson.dumps(dict(metadata or {})).decode(),
            self._seal_credentials(credentials),
            enabled,
            payload_filter,
        )
        assert row is not None
        return _endpoint(row, self.box)

    @_mapped
    async def check_payload_filter(self, text: str) -> str:
        """Ask PostgreSQL whether `text` is a usable payload filter; return its canonical text.

        Usable: a valid jsonpath whose evaluation on `{}` yields a boolean or unknown, that is a
        predicate without variables (at least on the branches `{}` reaches).
        Raises InvalidPayloadFilter with PostgreSQL's message and SQLSTATE (syntax errors, invalid
        regular expressions, data exceptions, undefined variables); StoreUnavailable.
        """
        try:
            row = await self.pool.fetchrow(QUERIES["payload_filter_check"], text)
        except asyncpg.PostgresError as exc:
            state = exc.sqlstate or ""
            if _denied(exc) or is_transient(exc) or not state.startswith(_FILTER_ERROR_CLASSES):
                raise
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else state
            raise InvalidPayloadFilter(message, state) from None
        assert row is not None
        canonical: str = row["canonical"]
        return canonical

    @_mapped
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

    @_mapped
    async def delete_endpoint(self, endpoint_id: int, tenant: str | None = None) -> bool:
        """Delete an endpoint (of `tenant` when given) and fail its open deliveries; False if
        there was none."""
        async with self.pool.acquire() as conn, conn.transaction():
            found = await conn.fetchval(QUERIES["endpoint_delete"], endpoint_id, tenant)
            if found is None:
                return False
            await conn.execute(QUERIES["endpoint_settle_deleted"], endpoint_id)
        return True

    @_mapped
    async def set_endpoint_settings(self, endpoint_id: int, settings: dict[str, Any]) -> bool:
        """Replace an endpoint's overrides (already validated); False if there is no such endpoint."""
        found = await self.pool.fetchval(
            QUERIES["endpoint_set_settings"], endpoint_id, orjson.dumps(settings).decode()
        )
        return found is not None

    @_mapped
    async def rotate_secret(self, endpoint_id: int, new_secret: str, grace_s: float) -> bool:
        """Make `new_secret` current; keep signing with the old one for `grace_s` seconds too."""
        found = await self.pool.fetchval(
            QUERIES["endpoint_rotate_secret"], endpoint_id, self.box.seal(new_secret), grace_s
        )
        return found is not None

    @_mapped
    async def set_credentials(self, endpoint_id: int, credentials: dict[str, Any] | None) -> bool:
        """Replace how hookd authenticates to the endpoint (None: no authentication)."""
        sealed = self._seal_credentials(credentials)
        found = await self.pool.fetchval(QUERIES["endpoint_set_credentials"], endpoint_id, sealed)
        return found is not None

    @_mapped
    async def set_url(self, endpoint_id: int, url: str) -> bool:
        """Change an endpoint's URL (validated by the caller)."""
        return await self.pool.fetchval(QUERIES["endpoint_set_url"], endpoint_id, url) is not None

    @_mapped
    async def deliveries(
        self,
        state: str | None = None,
        endpoint_id: int | None = None,
        limit: int = 100,
        *,
        event_id: int | None = None,
        ids: Sequence[int] | None = None,
        tenant: str | None = None,
        before_id: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[DeliveryRecord]:
        """Deliveries matching every given filter, newest (highest id) first, at most `limit`,
        with ids below `before_id` (keyset pagination). `tenant`: only deliveries of that tenant's
        events. `since`/`until` bound the delivery's creation time (until exclusive)."""
        rows = await self.pool.fetch(
            QUERIES["deliveries_page"],
            tenant,
            before_id,
            limit,
            endpoint_id,
            event_id,
            state,
            since,
            until,
            list(ids) if ids is not None else None,
        )
        return [_delivery_record(r) for r in rows]

    @_mapped
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

    @_mapped
    async def leases(self) -> tuple[int, datetime | None]:
        """(pending deliveries leased by a daemon now, when the last of those leases expires)."""
        r = await self.pool.fetchrow(QUERIES["leases_held"])
        assert r is not None
        return int(r["leased"]), r["expire_by"]

    @_mapped
    async def failed_attempts_by_endpoint(self) -> dict[int, int]:
        """Failed attempts (no answer or not 2xx) of the last hour, by endpoint id."""
        rows = await self.pool.fetch(QUERIES["failed_attempts_by_endpoint"])
        return {r["endpoint_id"]: int(r["failed"]) for r in rows}

    @_mapped
    async def status(self, *, exact: bool = False, attempts: bool = True) -> StatusCounts:
        """Backlog and pending figures, cheap at any backlog (a few ms).

        Counts above STATUS_EXACT_BELOW are PostgreSQL's estimates (EXPLAIN, from the statistics
        of the last ANALYZE), named in `estimated`; `exact` counts them all instead, at a cost
        that grows with the backlog (about 100 ms per million pending here). `attempts` False
        leaves out the failed attempts of the last hour (None), which read the hour's attempts.
        """
        if exact:
            r = await self.pool.fetchrow(QUERIES["status_counts_exact"])
        else:
            r = await self.pool.fetchrow(QUERIES["status_counts"], STATUS_EXACT_BELOW, attempts)
        assert r is not None
        return StatusCounts(**{**dict(r), "estimated": frozenset(r["estimated"])})
