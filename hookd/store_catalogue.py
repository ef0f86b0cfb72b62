"""The event catalogue: its entries and strict mode.

`CatalogueMixin` reads, adds, replaces and removes catalogue entries, and turns strict mode
(publishing refuses event types the catalogue does not hold) on or off.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from hookd.errors import (
    Busy,
)
from hookd.models import (
    EventType,
)
from hookd.store_base import QUERIES, StoreBase, _mapped
from hookd.store_rows import (
    _event_type,
    _jsonb,
)


class CatalogueMixin(StoreBase):
    """The event catalogue's queries."""

    @_mapped
    async def catalogue(self) -> list[EventType]:
        """Every entry of the event catalogue, by name."""
        return [_event_type(r) for r in await self.pool.fetch(QUERIES["catalogue_all"])]

    @_mapped
    async def catalogue_entry(self, name: str) -> EventType | None:
        """One entry of the event catalogue, or None."""
        row = await self.pool.fetchrow(QUERIES["catalogue_get"], name)
        return None if row is None else _event_type(row)

    @_mapped
    async def put_catalogue_entry(
        self,
        name: str,
        description: str,
        schema: Any | None,
        example: Any | None,
        read_updated_at: datetime | None,
    ) -> tuple[EventType, bool] | None:
        """Add an entry, or replace an existing one's description, schema and example (already
        checked), if it is unchanged since the caller read it (`read_updated_at`, None: it did
        not exist). Returns (entry, created), or None when it changed meanwhile."""
        row = await self.pool.fetchrow(
            QUERIES["catalogue_put"],
            name,
            description,
            _jsonb(schema),
            _jsonb(example),
            read_updated_at,
        )
        return None if row is None else (_event_type(row), bool(row["created"]))

    @_mapped
    async def remove_catalogue_entry(self, name: str) -> bool:
        """Remove an entry of the event catalogue; False if there was none."""
        return await self.pool.fetchval(QUERIES["catalogue_remove"], name) is not None

    @_mapped
    async def strict_event_types(self) -> bool:
        """Whether publishing refuses event types the catalogue does not hold (strict mode)."""
        return bool(await self.pool.fetchval(QUERIES["strict_types_get"]))

    @_mapped
    async def set_strict_event_types(self, strict: bool) -> None:
        """Turn strict mode on or off (hookd.set_strict_event_types creates or drops its trigger
        on hookd.events).

        Raises Busy when hookd.events stays locked by other transactions for the function's
        lock_timeout (5 s); PermissionDenied for a role without EXECUTE on the function.
        """
        try:
            await self.pool.fetchval(QUERIES["strict_types_set"], strict)
        except asyncpg.LockNotAvailableError:
            raise Busy(
                "hookd.events stayed locked by other transactions for 5 s (a long transaction"
                " that published?); try again"
            ) from None
