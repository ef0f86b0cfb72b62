"""The store's core: the connection pool and how driver failures are mapped.

`StoreBase` opens and closes the asyncpg pool, checks the schema on opening and holds what every
part of the store shares (the pool, the lease owner, the secret box); `_mapped` is the decorator
every query method wears, turning transient driver errors into `StoreUnavailable`, a missing
privilege into `PermissionDenied` and an undeclared transaction pooler into `ConfigError`
(`is_transient` decides which errors are transient). The named queries of `sql/queries.sql` are
loaded here (`QUERIES`). The query methods themselves live in the `hookd.store_*` mixins that
`hookd.store.Store` combines.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from importlib import resources
from typing import Any, ParamSpec, Self, TypeVar

import asyncpg
import orjson

from hookd import migrate
from hookd.errors import (
    ConfigError,
    PermissionDenied,
    SchemaMissing,
    StoreUnavailable,
)
from hookd.secretbox import SecretBox

log = logging.getLogger("hookd.store")

_P = ParamSpec("_P")
_T = TypeVar("_T")

# Only startup parameters every pooler passes on: PgBouncer refuses any it does not track
# ("unsupported startup parameter"), and application_name is one it tracks.
_SERVER_SETTINGS = {"application_name": "hookd"}

_TRANSIENT_CLASSES = ("08", "53", "57P")
_TRANSIENT_STATES = frozenset({"40001", "40P01", "57014", "25006"})
_DROP_CONNECTION_STATES = frozenset({"25006"})
"""A read-only answer means the server became a standby (failover): replace every connection."""

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
            assert isinstance(store, StoreBase)
            if getattr(exc, "sqlstate", None) in _LOST_STATEMENT_STATES:
                raise ConfigError(UNDECLARED_POOLER) from exc
            if _denied(exc):
                raise await store._permission_denied(exc) from exc
            if not is_transient(exc):
                raise
            await store._after_transient(exc)
            raise StoreUnavailable(f"database unavailable ({_describe(exc)})") from exc

    return call


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


class StoreBase:
    """The pool, the lease owner and the secret box of one `Store`, and its opening and closing."""

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
    ) -> Self:
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

    def _seal_credentials(self, credentials: Mapping[str, Any] | None) -> str | None:
        return self.box.seal(orjson.dumps(dict(credentials)).decode()) if credentials else None
