"""Composition root: builds the parts, runs them, and tears them down in order."""

from __future__ import annotations

import asyncio
import logging
import signal
import uuid
from collections.abc import Callable

import asyncpg

from hookd import migrate
from hookd.config import Config
from hookd.dispatcher import Dispatcher
from hookd.errors import DatabaseUnavailable, SchemaMissing
from hookd.hostpool import HostPools
from hookd.listener import Listener
from hookd.metrics import Metrics
from hookd.store import Store
from hookd.writer import OutcomeWriter

log = logging.getLogger("hookd")

# The daemon's own writes (claims, outcomes, the sleep flag) use asynchronous commit: a PostgreSQL
# crash can lose the last moments of progress, which only means those deliveries are attempted
# again (at-least-once). It keeps fsync latency out of the delivery path.
_SERVER_SETTINGS = {"application_name": "hookd", "synchronous_commit": "off"}


async def open_pool(cfg: Config, max_size: int | None = None) -> asyncpg.Pool:
    """Connect to the database and check the schema version.

    Raises:
        DatabaseUnavailable: the server cannot be reached or refuses us.
        SchemaMissing: `hookd migrate` has not been run (or is behind this version of hookd).
    """
    size = max_size or cfg.database.pool_size
    try:
        pool = await asyncpg.create_pool(
            cfg.database.dsn,
            min_size=1,
            max_size=size,
            timeout=cfg.database.connect_timeout_s,
            command_timeout=cfg.database.command_timeout_s,
            server_settings=_SERVER_SETTINGS,
        )
    except (
        OSError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        TimeoutError,
        ValueError,
    ) as exc:
        raise DatabaseUnavailable(
            f"cannot connect to the database: {exc or type(exc).__name__}"
        ) from None
    assert pool is not None
    try:
        async with pool.acquire() as conn:
            version = await migrate.current_version(conn)
    except BaseException:
        await pool.close()
        raise
    if version is None or version < migrate.latest_version():
        await pool.close()
        raise SchemaMissing(
            f"the hookd schema is at version {version or 'none'}, this hookd needs "
            f"{migrate.latest_version()}: run `hookd migrate`"
        )
    return pool


class Daemon:
    """One running hookd: listener, dispatcher, outcome writer and HTTP pools.

    `ready` is set once the database answered and LISTEN is active; `stop()` (or SIGTERM/SIGINT
    when `handle_signals` is used) drains and returns from `run()`.
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.metrics = Metrics()
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self.dispatcher: Dispatcher | None = None
        self.listener: Listener | None = None

    def stop(self) -> None:
        """Ask the daemon to drain and exit."""
        self._stop.set()

    def handle_signals(self) -> Callable[[], None]:
        """Install SIGTERM/SIGINT handlers that call stop(); returns a function that removes them."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

        def remove() -> None:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

        return remove

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("received %s: draining", sig.name)
        self.stop()

    async def run(self) -> None:
        """Run until stop(). Raises DatabaseUnavailable or SchemaMissing at start-up."""
        cfg = self.cfg
        pool = await open_pool(cfg)
        try:
            store = Store(pool, uuid.uuid4())
            install_id = await store.install_id()
            writer = OutcomeWriter(store, cfg.daemon.flush_interval_s, cfg.daemon.flush_batch)
            async with HostPools(cfg.http) as pools:
                dispatcher = self.dispatcher = Dispatcher(
                    cfg, store, pools, writer, self.metrics, install_id
                )
                listener = self.listener = Listener(
                    cfg.database.listen_dsn or cfg.database.dsn,
                    dispatcher.wake,
                    dispatcher.rescan,
                    check_interval_s=cfg.daemon.listener_check_interval_s,
                    check_timeout_s=cfg.daemon.listener_check_timeout_s,
                    connect_timeout_s=cfg.database.connect_timeout_s,
                    token=str(store.owner),
                )
                listener.on_reconnect_metric = self.metrics.listener_reconnects.inc
                async with asyncio.TaskGroup() as tg:
                    listen_task = tg.create_task(listener.run(), name="listener")
                    write_task = tg.create_task(writer.run(), name="writer")
                    await listener.ready.wait()
                    claim_task = tg.create_task(dispatcher.run(), name="dispatcher")
                    self.ready.set()
                    log.info("hookd ready (lease owner %s)", store.owner)
                    await self._stop.wait()
                    # Teardown order: stop claiming and let attempts finish, then write their
                    # outcomes, and only then drop the listener and the writer task.
                    await dispatcher.drain(cfg.daemon.shutdown_grace_s)
                    await claim_task
                    write_task.cancel()
                    listen_task.cancel()
                await self._final_flush(writer)
        finally:
            await pool.close()
        log.info("hookd stopped")

    @staticmethod
    async def _final_flush(writer: OutcomeWriter) -> None:
        for _ in range(3):
            try:
                await writer.flush()
                return
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                log.warning("final write of outcomes failed (%s)", exc)
                await asyncio.sleep(0.2)
        log.error(
            "%d outcomes not written; their leases will expire and they will be retried",
            len(writer),
        )
