"""The store: the only code that runs SQL (with migrations and the listener's own connection).

Queries live in `sql/queries.sql` as named blocks. Every method returns models, never driver
records, and every driver failure leaves this module in one of three shapes: `StoreUnavailable`
(transient: connection loss, a server going away, overload, a failover; see `is_transient`),
`PermissionDenied` (SQLSTATE 42501: the role lacks a grant; one line naming the role and the fix),
or the driver's own exception for a bug in a query, which must not be retried forever. Methods that write
outcomes are fenced by the lease owner, so a daemon whose lease expired cannot overwrite another
daemon's work; a delivered outcome is the one exception (a 2xx is never thrown away).

The methods are grouped by responsibility in mixins, which `Store` combines: the connection pool,
schema check and error mapping in `hookd.store_base`, the daemon's hot path in
`hookd.store_hotpath`, endpoints and administration in `hookd.store_admin`, the operating surface's
reads and actions in `hookd.store_operating`, the event catalogue in `hookd.store_catalogue`, capture in
`hookd.store_capture`, retention in `hookd.store_retention` (row converters in `hookd.store_rows`). Import the store's names
from here.
"""

from __future__ import annotations

from hookd.store_admin import STATUS_EXACT_BELOW, AdminMixin, StatusCounts
from hookd.store_base import (
    POOL_CLOSE_TIMEOUT_S,
    QUERIES,
    UNDECLARED_POOLER,
    StoreBase,
    is_transient,
)
from hookd.store_capture import Capture, CaptureMixin
from hookd.store_catalogue import CatalogueMixin
from hookd.store_hotpath import KEY_PARK_S, DueClaim, FanOut, HotPathMixin
from hookd.store_operating import OperatingMixin, Requeued
from hookd.store_retention import HistoryAction, HistoryPartition, RetentionMixin

__all__ = [
    "KEY_PARK_S",
    "POOL_CLOSE_TIMEOUT_S",
    "QUERIES",
    "STATUS_EXACT_BELOW",
    "UNDECLARED_POOLER",
    "Capture",
    "DueClaim",
    "FanOut",
    "HistoryAction",
    "HistoryPartition",
    "Requeued",
    "StatusCounts",
    "Store",
    "StoreBase",
    "is_transient",
]


class Store(HotPathMixin, AdminMixin, OperatingMixin, CatalogueMixin, CaptureMixin, RetentionMixin):
    """Data access for one daemon or one CLI command, over an asyncpg pool it owns.

    Open one with `await Store.open(...)` and end it with `await store.close()`; tests and tools may
    wrap a pool of their own with `Store(pool)` (then they close the pool). `owner` identifies this
    process's leases (a random UUID per daemon run); `box` encrypts secrets on the way in and
    decrypts them on the way out.
    """
