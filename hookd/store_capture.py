"""Capture (`hookd capture ...`): the DDL that captures a table, running it, listing captures.

The DDL is built inside PostgreSQL (hookd.capture_ddl in sql/010_capture_ordering.sql), so
identifiers are quoted by PostgreSQL itself; `CaptureMixin` only fetches and runs it. `Capture`
describes one captured table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from hookd.errors import (
    InvalidCapture,
)
from hookd.store_base import QUERIES, StoreBase, _mapped


@dataclass(frozen=True, slots=True)
class Capture:
    """One captured table, as `hookd capture add` (or the DDL it prints) recorded it."""

    table: str
    """Its qualified name now; the recorded one if the table was dropped since (`exists` false)."""
    exists: bool
    events: tuple[str, ...]
    """Of insert, update, delete."""
    columns: tuple[str, ...]
    """Captured columns (the key and status columns included)."""
    type_prefix: str
    key_column: str
    status_column: str | None
    tenant_column: str | None
    function_name: str
    """The generated trigger function, in schema hookd."""
    created_at: datetime
    missing_columns: tuple[str, ...]
    """Captured columns the table no longer has: run `hookd capture add` again."""


class CaptureMixin(StoreBase):
    """The capture queries."""

    @_mapped
    async def capture_ddl(
        self,
        table: str,
        *,
        events: Sequence[str] | None = None,
        columns: Sequence[str] | None = None,
        type_prefix: str | None = None,
        status_column: str | None = None,
        tenant_column: str | None = None,
        key_column: str | None = None,
    ) -> str:
        """The DDL that captures `table` (a SQL name: public.orders, "Order Items"); None takes
        the defaults (README, "Capturing table changes").

        Raises:
            InvalidCapture: no such table or column, no usable key, an invalid type prefix (one
                line naming the option to change).
        """
        try:
            ddl: str = await self.pool.fetchval(
                QUERIES["capture_ddl"],
                table,
                list(events) if events is not None else None,
                list(columns) if columns is not None else None,
                type_prefix,
                status_column,
                tenant_column,
                key_column,
            )
        except asyncpg.InvalidParameterValueError as exc:
            raise _invalid_capture(exc) from None
        return ddl

    @_mapped
    async def capture_drop_ddl(self, table: str) -> str:
        """The DDL that stops capturing `table` (also one dropped since it was captured).

        Raises:
            InvalidCapture: the table is not captured.
        """
        try:
            ddl: str = await self.pool.fetchval(QUERIES["capture_drop_ddl"], table)
        except asyncpg.InvalidParameterValueError as exc:
            raise _invalid_capture(exc) from None
        return ddl

    @_mapped
    async def apply_ddl(self, ddl: str) -> None:
        """Run DDL from capture_ddl / capture_drop_ddl in one transaction.

        Raises:
            InvalidCapture: the role may not create the trigger or the function (it needs the
                TRIGGER privilege on the table and CREATE on schema hookd).
        """
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute(ddl)
        except asyncpg.InsufficientPrivilegeError as exc:
            raise InvalidCapture(
                f"{exc} (capture needs the TRIGGER privilege on the table and CREATE on schema"
                " hookd: run it as the table's owner or grant them)"
            ) from None

    @_mapped
    async def captures(self, table: str | None = None) -> list[Capture]:
        """Every captured table by name, or only `table` (a SQL name)."""
        return [
            Capture(
                table=r["table_name"],
                exists=r["table_exists"],
                events=tuple(r["events"]),
                columns=tuple(r["columns"]),
                type_prefix=r["type_prefix"],
                key_column=r["key_column"],
                status_column=r["status_column"],
                tenant_column=r["tenant_column"],
                function_name=r["function_name"],
                created_at=r["created_at"],
                missing_columns=tuple(r["missing_columns"]),
            )
            for r in await self.pool.fetch(QUERIES["captures_list"], table)
        ]


def _invalid_capture(exc: asyncpg.PostgresError) -> InvalidCapture:
    """The one line for a refused capture definition: the message and its hint."""
    message = getattr(exc, "message", None) or str(exc)
    hint = getattr(exc, "hint", None)
    return InvalidCapture(f"{message}. {hint}" if hint else message)
