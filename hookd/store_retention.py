"""Retention: the maintenance step of the partitioned history, and what the partitions hold.

`RetentionMixin.maintain_history` runs the three steps of migration 031, each its own transaction:
partitions for the coming days, one at a time (`hookd.history_prepare_next`), clean-up of the default partitions
(`hookd.history_clean_defaults`), and drops of day partitions past their retention, one at a time
(`hookd.history_drop_next`; open work and what a longer retention still needs survive, moved to
the default partitions).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from hookd.errors import Busy
from hookd.store_base import QUERIES, StoreBase, _mapped


@dataclass(frozen=True, slots=True)
class HistoryAction:
    """One thing a maintenance step did: `action` is "create", "drop" or "delete"; `relation`
    the partition (or default partition, or hookd.idempotency_keys); `rows` the rows a drop kept
    (moved to the default partition) or a delete removed."""

    action: str
    relation: str
    rows: int


@dataclass(frozen=True, slots=True)
class HistoryPartition:
    """One partition of a history table: its parent table, name, exclusive upper bound (None for
    a default partition, which holds what has no day partition), size in bytes (with TOAST and
    indexes) and the planner's row estimate (-1 before the first ANALYZE shows as 0)."""

    parent: str
    name: str
    upper_bound: datetime | None
    bytes: int
    rows_estimate: int


class RetentionMixin(StoreBase):
    """The retention queries of `Store`."""

    @_mapped
    async def maintain_history(
        self,
        delivered_keep_s: float | None,
        dead_letter_keep_s: float | None,
        ahead_days: int,
        at: datetime | None = None,
    ) -> list[HistoryAction]:
        """One retention step at `at` (default: the database's now()): partitions exist for its
        UTC day and `ahead_days` more; rows of the default partitions past retention are deleted;
        day partitions whose day ended `delivered_keep_s` seconds before `at` are dropped (dead
        letters' after `dead_letter_keep_s`), one transaction each; None keeps forever. Pending,
        retrying and paused deliveries are never dropped, whatever their age. Returns what it
        did. Every creation and every drop is a transaction of its own; concurrent steps (several
        daemons) take turns on an advisory lock.

        Raises Busy when a table stays locked by other transactions for 1 s (the part of the step
        under way undoes itself, the parts done stay done: try again later); PermissionDenied
        for a role without EXECUTE on the hookd.history_* functions.
        """
        done: list[HistoryAction] = []
        try:
            while name := await self.pool.fetchval(QUERIES["history_prepare_next"], at, ahead_days):
                done.append(HistoryAction("create", name, 0))
            keeps = (at, delivered_keep_s, dead_letter_keep_s)
            for r in await self.pool.fetch(QUERIES["history_clean_defaults"], *keeps):
                done.append(HistoryAction("delete", r["relation"], r["row_count"]))
            while row := await self.pool.fetchrow(QUERIES["history_drop_next"], *keeps):
                done.append(HistoryAction("drop", row["relation"], row["row_count"]))
        except asyncpg.LockNotAvailableError:
            raise Busy(
                "a history table stayed locked by other transactions for 1 s (a long"
                " transaction?); the retention step will be tried again"
            ) from None
        return done

    @_mapped
    async def history_partitions(self) -> list[HistoryPartition]:
        """Every partition of the history tables, by table and then oldest first (defaults last)."""
        rows = await self.pool.fetch(QUERIES["history_partitions"])
        return [
            HistoryPartition(
                r["parent"], r["name"], r["upper_bound"], r["bytes"], r["rows_estimate"]
            )
            for r in rows
        ]
