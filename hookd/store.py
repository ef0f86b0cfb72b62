"""The only module that runs SQL (with migrations and the listener's own connection).

Queries live in `sql/queries.sql` as named blocks. Every method returns models, never driver
records, and every driver failure leaves this module in one of three shapes: `StoreUnavailable`
(transient: connection loss, a server going away, overload, a failover; see `is_transient`),
`PermissionDenied` (SQLSTATE 42501: the role lacks a grant; one line naming the role and the fix),
or the driver's own exception for a bug in a query, which must not be retried forever. Methods that write
outcomes are fenced by the lease owner, so a daemon whose lease expired cannot overwrite another
daemon's work; a delivered outcome is the one exception (a 2xx is never thrown away).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any, ParamSpec, TypeVar

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from hookd import migrate
from hookd.errors import (
    Busy,
    ConfigError,
    InvalidCapture,
    InvalidPayloadFilter,
    PermissionDenied,
    SchemaMissing,
    StoreUnavailable,
)
from hookd.models import (
    AttemptLogEntry,
    AttemptRecord,
    Delivery,
    DeliveryRecord,
    DeliveryState,
    Endpoint,
    EndpointStats,
    EventRecord,
    EventType,
    Outcome,
    WindowStats,
)
from hookd.secretbox import SecretBox

log = logging.getLogger("hookd.store")

_P = ParamSpec("_P")
_T = TypeVar("_T")

# Only startup parameters every pooler passes on: PgBouncer refuses any it does not track
# ("unsupported startup parameter"), and application_name is one it tracks.
_SERVER_SETTINGS = {"application_name": "hookd"}

# The daemon's own hot-path writes (fan-out, claims, outcomes) use asynchronous commit: a PostgreSQL
# crash can lose the last moments of progress, which only means those deliveries are attempted
# again (at-least-once), and it keeps fsync latency out of the delivery path. It is set per
# transaction, not per session (a pooler in transaction mode hands sessions around), and without a
# round trip of its own: fan_out and claim_due set it inside their statement (set_config(...,
# true), see queries.sql), and `record` sends it with its BEGIN. Every other write (the operating
# surface's) commits synchronously, as the server is configured.
_BEGIN_ASYNC_COMMIT = "BEGIN; SET LOCAL synchronous_commit TO off"

_TRANSIENT_CLASSES = ("08", "53", "57P")
_TRANSIENT_STATES = frozenset({"40001", "40P01", "57014", "25006"})
_DROP_CONNECTION_STATES = frozenset({"25006"})
"""A read-only answer means the server became a standby (failover): replace every connection."""

_FILTER_ERROR_CLASSES = ("22", "42", "0A")
"""SQLSTATE classes a payload filter the user wrote can cause: data exceptions (22), syntax
errors and undefined objects (42), features not supported (0A)."""

POOL_CLOSE_TIMEOUT_S = 5.0
"""How long `close()` lets connections end politely before terminating them."""


def _load_queries() -> dict[str, str]:
    text = resources.files("hookd.sql").joinpath("queries.sql").read_text(encoding="utf-8")
    parts = re.split(r"^-- name: (\w+)\n", text, flags=re.MULTILINE)
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts), 2)}


QUERIES = _load_queries()


def is_transient(exc: BaseException) -> bool:
    """Whether a driver or network error means "try again later" rather than a bug in a query.

    Transient: the connection is lost or unusable (asyncpg's InterfaceError and
    InternalClientError, OSError, TimeoutError), and the SQLSTATEs listed on `StoreUnavailable`.
    """
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        return state.startswith(_TRANSIENT_CLASSES) or state in _TRANSIENT_STATES
    return isinstance(
        exc, asyncpg.InterfaceError | asyncpg.InternalClientError | OSError | TimeoutError
    )


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_LOST_STATEMENT_STATES = frozenset({"26000", "42P05"})
"""invalid_sql_statement_name, duplicate_prepared_statement: a named prepared statement (asyncpg's
statement cache; hookd names none itself) missing from, or already in, the server session. That
happens when the session changed between two transactions: a pooler in transaction mode."""

UNDECLARED_POOLER = (
    "database.dsn: goes through a pooler in transaction mode (the server session changed "
    'between two transactions): set database.pooler = "transaction", or connect straight to '
    "PostgreSQL"
)


def _mapped(fn: Callable[_P, Awaitable[_T]]) -> Callable[_P, Coroutine[Any, Any, _T]]:
    """Turn transient driver errors raised by a Store method into StoreUnavailable, a missing
    privilege into PermissionDenied, and the trace of an undeclared transaction pooler into
    ConfigError (once)."""

    @functools.wraps(fn)
    async def call(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return await fn(*args, **kwargs)
        except (StoreUnavailable, PermissionDenied):
            raise
        except Exception as exc:
            store = args[0]
            assert isinstance(store, Store)
            if getattr(exc, "sqlstate", None) in _LOST_STATEMENT_STATES:
                raise ConfigError(UNDECLARED_POOLER) from exc
            if _denied(exc):
                raise await store._permission_denied(exc) from exc
            if not is_transient(exc):
                raise
            await store._after_transient(exc)
            raise StoreUnavailable(f"database unavailable ({_describe(exc)})") from exc

    return call


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


async def _no_session_reset(conn: asyncpg.Connection) -> None:
    """Pool reset: nothing beyond asyncpg's own rollback of an open transaction.

    asyncpg's default reset (unlock every advisory lock, UNLISTEN, RESET ALL) is one more round
    trip per release, which nothing here needs: the store keeps no session state (settings are
    SET LOCAL or set_config(..., true); advisory locks and LISTEN live on the listener's own
    connection). Measured: a single pool.fetchval took 99-153 µs without it against 196-327 µs
    with it (loopback, this machine). Behind a pooler in transaction mode it would moreover act on
    some other client's server session."""


def _denied(exc: BaseException) -> bool:
    return getattr(exc, "sqlstate", None) == migrate.INSUFFICIENT_PRIVILEGE


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


def _json(value: Any) -> Any:
    """A jsonb column as a Python value (asyncpg hands jsonb over as text)."""
    return orjson.loads(value) if isinstance(value, str) else value


def _endpoint(r: asyncpg.Record, box: SecretBox) -> Endpoint:
    settings = r["settings"]
    creds = r["credentials"]
    return Endpoint(
        id=r["id"],
        url=r["url"],
        tenant=r["tenant"],
        event_types=tuple(r["event_types"]),
        stored_secret=r["secret"],
        enabled=r["enabled"],
        disabled_reason=r["disabled_reason"],
        settings=orjson.loads(settings) if isinstance(settings, str) else settings,
        created_at=r["created_at"],
        breaker_open_until=r["breaker_open_until"],
        stored_previous_secret=r["previous_secret"],
        previous_secret_until=r["previous_secret_until"],
        stored_credentials=creds,
        updated_at=r["updated_at"],
        description=r["description"],
        metadata=_json(r["metadata"]),
        payload_filter=r["payload_filter"],
        opener=box.open,
    )


def _event_record(r: asyncpg.Record) -> EventRecord:
    return EventRecord(
        id=r["id"],
        event_type=r["event_type"],
        tenant=r["tenant"],
        payload=_json(r["payload"]),
        idempotency_key=r["idempotency_key"],
        created_at=r["created_at"],
        fanned_out_at=r["fanned_out_at"],
    )


def _event_type(r: asyncpg.Record) -> EventType:
    return EventType(
        name=r["name"],
        description=r["description"],
        schema=_json(r["schema"]),
        example=_json(r["example"]),
        created_at=r["created_at"],
        updated_at=r["updated_at"],
    )


def _jsonb(value: Any | None) -> str | None:
    """A Python value as jsonb text for a query parameter; None stays SQL NULL."""
    return None if value is None else orjson.dumps(value).decode()


def _delivery_record(r: asyncpg.Record) -> DeliveryRecord:
    return DeliveryRecord(
        id=r["id"],
        event_id=r["event_id"],
        endpoint_id=r["endpoint_id"],
        event_type=r["event_type"],
        tenant=r["tenant"],
        state=DeliveryState(r["state"]),
        attempts=r["attempts"],
        next_attempt_at=r["next_attempt_at"],
        leased_until=r["leased_until"],
        last_status=r["last_status"],
        last_error=r["last_error"],
        created_at=r["created_at"],
        finished_at=r["finished_at"],
    )


def _attempt_entry(r: asyncpg.Record) -> AttemptLogEntry:
    return AttemptLogEntry(
        delivery_id=r["delivery_id"],
        attempt=r["attempt"],
        started_at=r["started_at"],
        duration_s=r["duration_s"],
        status=r["status"],
        error=r["error"],
        response_body=r["response_body"],
    )


def _window(r: asyncpg.Record, prefix: str, window_s: float) -> WindowStats:
    attempts = int(r[f"{prefix}_attempts"])
    succeeded = int(r[f"{prefix}_succeeded"])
    return WindowStats(
        window_s=window_s,
        attempts=attempts,
        succeeded=succeeded,
        success_rate=succeeded / attempts if attempts else None,
        p50_duration_s=r[f"{prefix}_p50_s"],
        p99_duration_s=r[f"{prefix}_p99_s"],
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
        ordering_key=r["ordering_key"],
    )


class Store:
    """Data access for one daemon or one CLI command, over an asyncpg pool it owns.

    Open one with `await Store.open(...)` and end it with `await store.close()`; tests and tools may
    wrap a pool of their own with `Store(pool)` (then they close the pool). `owner` identifies this
    process's leases (a random UUID per daemon run); `box` encrypts secrets on the way in and
    decrypts them on the way out.
    """

    def __init__(
        self, pool: asyncpg.Pool, owner: uuid.UUID | None = None, box: SecretBox | None = None
    ) -> None:
        self.pool = pool
        self.owner = owner or uuid.uuid4()
        self.box = box or SecretBox(None)

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        pool_size: int,
        connect_timeout_s: float,
        command_timeout_s: float,
        owner: uuid.UUID | None = None,
        box: SecretBox | None = None,
        check_schema: bool = True,
        pooler: str = "none",
    ) -> Store:
        """Connect a pool of up to `pool_size` connections and (by default) check the schema.

        `pooler` is `database.pooler`: "transaction" when `dsn` goes through a pooler in
        transaction mode (PgBouncer's `pool_mode = transaction`). Then no named prepared
        statement is used (each would live in one server session, and the next transaction may
        run in another: asyncpg's `statement_cache_size=0`, which sends Parse, Bind and Execute
        before one Sync) and the pool does not reset sessions between uses.

        Raises:
            DatabaseUnavailable: the server cannot be reached or refuses us (one line, no driver
                traceback).
            SchemaMissing: `hookd migrate` has not been run, or is behind this version of hookd.
            PermissionDenied: the role lacks part of what the daemon's role is granted
                (`hookd.migrate.daemon_grants`), named in one line with the fix.
            ConfigError: `dsn` goes through a transaction pooler and `pooler` is "none", when
                the schema check already shows it (UNDECLARED_POOLER; store methods raise it too).
        """
        try:
            # min_size 0: no background refill of a connection floor, which retries and logs
            # a traceback per try during an outage; connections are opened as queries need them.
            pooled: dict[str, Any] = {"reset": _no_session_reset}
            if pooler == "transaction":
                pooled["statement_cache_size"] = 0
            pool = await asyncpg.create_pool(
                dsn,
                min_size=0,
                max_size=pool_size,
                timeout=connect_timeout_s,
                command_timeout=command_timeout_s,
                server_settings=_SERVER_SETTINGS,
                **pooled,
            )
        except migrate.CONNECT_ERRORS as exc:
            raise migrate.cannot_connect(exc) from None
        assert pool is not None
        store = cls(pool, owner, box)
        if not check_schema:
            return store
        try:
            async with pool.acquire() as conn:
                # Privileges first: without USAGE on the schema, reading its version fails too.
                denied = await migrate.missing_privileges(conn)
                version = None if denied else await migrate.current_version(conn)
        except BaseException as exc:
            denial = await store._permission_denied(exc) if _denied(exc) else None
            await store.close()
            if denial is not None:
                raise denial from None
            if getattr(exc, "sqlstate", None) in _LOST_STATEMENT_STATES:
                raise ConfigError(UNDECLARED_POOLER) from None
            # min_size 0 means the first acquire is the first login: a refused one ends here.
            if isinstance(exc, Exception) and (is_transient(exc) or migrate.refused_login(exc)):
                raise migrate.cannot_connect(exc) from None
            raise
        if denied is not None:
            await store.close()
            raise denied
        if version is None or version < migrate.latest_version():
            await store.close()
            raise SchemaMissing(
                f"the hookd schema is at version {version or 'none'}, this hookd needs "
                f"{migrate.latest_version()}: run `hookd migrate`"
            )
        return store

    async def close(self, timeout_s: float = POOL_CLOSE_TIMEOUT_S) -> None:
        """Close the pool: politely within `timeout_s`, else terminate every connection.

        Never raises for a database that is down or unresponsive (a dead TCP path can make a polite
        close hang).
        """
        try:
            async with asyncio.timeout(timeout_s):
                await self.pool.close()
        except Exception as exc:  # any failure to close politely ends in terminate()
            log.debug("pool close failed (%s); terminating connections", _describe(exc))
            self.pool.terminate()

    async def _permission_denied(self, exc: BaseException) -> PermissionDenied:
        """The one-line error for a statement refused with SQLSTATE 42501, naming the role."""
        role = "?"
        try:
            role = await self.pool.fetchval("SELECT current_user::text")
        except Exception as again:  # the error names the role if it can; the cause stays
            log.debug("reading current_user failed (%s)", _describe(again))
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return migrate.denied(role, f"a privilege ({detail})")

    async def _after_transient(self, exc: BaseException) -> None:
        """Drop connections that must not be reused (a standby after failover, a driver mix-up)."""
        state = getattr(exc, "sqlstate", None)
        if state in _DROP_CONNECTION_STATES or isinstance(exc, asyncpg.InternalClientError):
            try:
                await self.pool.expire_connections()
            except Exception as again:  # best effort: the next acquire reconnects anyway
                log.debug("expiring pool connections failed (%s)", _describe(again))

    @_mapped
    async def ping(self) -> None:
        """One round trip (for readiness). Raises StoreUnavailable."""
        await self.pool.fetchval("SELECT 1")

    # -- the daemon's hot path -------------------------------------------------------------

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

    # -- endpoints and administration ------------------------------------------------------

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

    def _seal_credentials(self, credentials: Mapping[str, Any] | None) -> str | None:
        return self.box.seal(orjson.dumps(dict(credentials)).decode()) if credentials else None

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

    # -- the operating surface (hookd/service.py) ----------------------------------------------

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

    # -- the event catalogue -----------------------------------------------------------------

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

    # -- capture (hookd capture ...) -------------------------------------------------------------
    #
    # The DDL is built inside PostgreSQL (hookd.capture_ddl in sql/010_capture_ordering.sql), so
    # identifiers are quoted by PostgreSQL itself; this section only fetches and runs it.

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
