"""Composition root: builds the parts, runs them, and tears them down in order."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import sdnotify  # type: ignore[import-untyped]  # ships no type information

from hookd import config, logs
from hookd.admin import AdminServer
from hookd.api import ApiServer, Setup
from hookd.config import Config, DatabaseConfig
from hookd.console import setup_console
from hookd.dispatcher import Dispatcher
from hookd.errors import ConfigError, HookdError, StoreUnavailable
from hookd.hostpool import HostPools
from hookd.listener import Listener, shares_sessions
from hookd.metrics import Metrics
from hookd.retention import Retention
from hookd.service import Service
from hookd.store import Store
from hookd.tokens import TokenFile
from hookd.writer import OutcomeWriter

log = logging.getLogger("hookd")


class Daemon:
    """One running hookd: listener, dispatcher, outcome writer, HTTP pools, admin server and (with
    `api.tokens_file` set) the operator API.

    `ready` is set once the database answered and LISTEN is active; `stop()` (or SIGTERM/SIGINT
    with `handle_signals()`) drains and returns from `run()`; SIGHUP calls `reload()`.
    `config_path` and `dsn_override` are what `reload()` reads again.
    """

    def __init__(
        self, cfg: Config, config_path: str | None = None, dsn_override: str | None = None
    ) -> None:
        self.cfg = cfg
        self.metrics = Metrics()
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._config_path = config_path
        self._dsn_override = dsn_override
        self.dispatcher: Dispatcher | None = None
        self.listener: Listener | None = None
        self.admin: AdminServer | None = None
        self.api: ApiServer | None = None
        self._store: Store | None = None
        self._notifier = sdnotify.SystemdNotifier() if os.environ.get("NOTIFY_SOCKET") else None

    # -- control ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the daemon to drain and exit."""
        self._stop.set()

    def reload(self) -> bool:
        """Read the configuration again and apply limits, log settings and the endpoint cache.

        An invalid new configuration is refused and logged; the old one stays. Database
        settings need a restart. Returns True if the new configuration was applied.
        """
        try:
            new = config.load(self._config_path, self._dsn_override)
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            return False
        if new.database != self.cfg.database:
            log.warning("reload: [database] changes need a restart; keeping the running ones")
            new = dataclasses.replace(new, database=self.cfg.database)
        if new.api != self.cfg.api:
            log.warning("reload: [api] changes need a restart; keeping the running ones")
            new = dataclasses.replace(new, api=self.cfg.api)
        self.cfg = new
        if self.api is not None:
            self.api.service.allow_http = new.security.allow_http
            self.api.service.policy = new.security.policy()
        logs.configure(new.log.level, new.log.format)
        if self.dispatcher is not None:
            self.dispatcher.reconfigure(new)
        log.info("configuration reloaded")
        return True

    def handle_signals(self) -> Callable[[], None]:
        """Install SIGTERM/SIGINT (drain) and SIGHUP (reload) handlers; returns their remover."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)

        def remove() -> None:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)

        return remove

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        log.info("received %s: draining", sig.name)
        self.stop()

    def _on_reload_signal(self) -> None:
        self._notify("RELOADING=1")
        self.reload()
        self._notify("READY=1")

    def _notify(self, message: str) -> None:
        """Send one sd_notify message (systemd's notify protocol) when NOTIFY_SOCKET is set."""
        if self._notifier is not None:
            self._notifier.notify(message)

    # -- running ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until stop(). Raises DatabaseUnavailable or SchemaMissing at start-up, or
        ConfigError if the admin or API port cannot be bound or the API's tokens file cannot be
        read. `stop()` works at every point of start-up: a daemon still waiting for its database
        or its LISTEN connection returns at once."""
        cfg = self.cfg
        box = cfg.security.box()
        tokens = self._tokens()
        if not await self._unless_stopped(asyncio.ensure_future(check_pooler(cfg.database))):
            log.info("hookd stopped before it was ready")
            return
        opening = asyncio.ensure_future(
            Store.open(
                cfg.database.dsn,
                pool_size=cfg.database.pool_size,
                connect_timeout_s=cfg.database.connect_timeout_s,
                command_timeout_s=cfg.database.command_timeout_s,
                owner=uuid.uuid4(),
                box=box,
                pooler=cfg.database.pooler,
            )
        )
        if not await self._unless_stopped(opening):
            log.info("hookd stopped before it was ready")
            return
        store = self._store = opening.result()
        try:
            install_id = await store.install_id()
            # Fail now, with one clear line, if stored secrets cannot be read with this key
            # (endpoints decrypt only when read); only then is "stored unencrypted" true.
            for ep in await store.endpoints():
                ep.check_secrets()
            if not box.encrypting:
                log.warning(
                    "no secret key configured (security.secret_key_file or HOOKD_SECRET_KEY): "
                    "endpoint secrets are stored unencrypted"
                )
            writer = OutcomeWriter(store, cfg.daemon.flush_interval_s, cfg.daemon.flush_batch)
            # Teardown order (reverse of this): the API and then the admin server stop answering
            # first, then the HTTP pools close (after every attempt ended), and the store's pool
            # closes last, after the final write of outcomes (API calls use it too).
            async with HostPools(cfg.http, cfg.security.policy()) as pools:
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
                    on_due=dispatcher.want_due,
                )
                listener.on_reconnect_metric = self.metrics.listener_reconnects.inc
                dispatcher.planner.set_awake = listener.set_awake
                async with self._admin_server(), self._api_server(store, tokens):
                    try:
                        await self._run_parts(store, writer, dispatcher, listener)
                    except* HookdError as group:
                        # A user's mistake met while running (e.g. grants revoked: the store's
                        # PermissionDenied) ends the daemon with its one line, not the task
                        # group's traceback. Other errors keep their group.
                        raise group.exceptions[0] from None
                await self._final_flush(writer)
        finally:
            await store.close()
        log.info("hookd stopped")

    async def _unless_stopped(self, step: asyncio.Future[Any]) -> bool:
        """Wait for a start-up step, or for stop(); True if the step finished (its error raised)."""
        stopping: asyncio.Future[Any] = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({step, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if step.done():
            step.result()
            return True
        step.cancel()
        # The step's own cancellation, expected here; a cancellation of run() itself still
        # propagates from the awaits above.
        with contextlib.suppress(asyncio.CancelledError):
            await step
        return False

    async def _run_parts(
        self, store: Store, writer: OutcomeWriter, dispatcher: Dispatcher, listener: Listener
    ) -> None:
        cfg = self.cfg
        async with asyncio.TaskGroup() as tg:
            listen_task = tg.create_task(listener.run(), name="listener")
            write_task = tg.create_task(writer.run(), name="writer")
            stats_task = tg.create_task(self._stats(store, dispatcher), name="stats")
            watchdog_task = tg.create_task(self._watchdog(), name="watchdog")
            retention = Retention(store, cfg.retention, self.metrics)
            retention_task = tg.create_task(retention.run(), name="retention")
            ready = asyncio.ensure_future(listener.ready.wait())
            if await self._unless_stopped(ready):
                claim_task = tg.create_task(dispatcher.run(), name="dispatcher")
                self.ready.set()
                self._notify("READY=1")
                log.info("hookd ready (lease owner %s)", store.owner)
                await self._stop.wait()
            else:
                claim_task = None
                log.info("stopping before the LISTEN connection was up")
            self._notify("STOPPING=1")
            # Teardown order: stop claiming and let attempts finish, then write their outcomes,
            # and only then drop the listener and the writer task.
            await dispatcher.drain(cfg.daemon.shutdown_grace_s)
            if claim_task is not None:
                await claim_task
            for task in (write_task, listen_task, stats_task, watchdog_task, retention_task):
                task.cancel()

    @contextlib.asynccontextmanager
    async def _admin_server(self) -> AsyncIterator[None]:
        """Serve /metrics, /healthz and /readyz while the body runs (if enabled).

        Started before the other parts so a port already in use is a clear start-up error.
        """
        cfg = self.cfg.admin
        if not cfg.enabled:
            yield
            return
        admin = AdminServer(self.metrics, self._ready_problem, cfg.host, cfg.port)
        try:
            await admin.__aenter__()
        except OSError as exc:
            raise ConfigError(
                f"admin: cannot listen on {cfg.host}:{cfg.port}: {exc.strerror or exc}"
            ) from None
        self.admin = admin
        log.info("admin server on http://%s:%d", cfg.host, admin.port)
        try:
            yield
        finally:
            await admin.__aexit__(None, None, None)

    def _tokens(self) -> TokenFile | None:
        """The API's tokens file, read once now so a missing or malformed one stops start-up
        (ConfigError); None when the API is off."""
        path = self.cfg.api.tokens_file
        if not path:
            return None
        tokens = TokenFile(path)
        if not tokens.load():
            log.warning(
                "api.tokens_file %s holds no tokens: every API call gets 401 until "
                "`hookd api-token add` adds one (the file is read again when it changes)",
                path,
            )
        return tokens

    def _api_setups(self, service: Service, tokens: TokenFile) -> list[Setup]:
        """What else the API server serves: the web console under /console."""
        return [setup_console(service, tokens, secure_cookies=self.cfg.api.secure_cookies)]

    @contextlib.asynccontextmanager
    async def _api_server(self, store: Store, tokens: TokenFile | None) -> AsyncIterator[None]:
        """Serve the operator API while the body runs (when a tokens file is configured).

        Started before the other parts so a port already in use is a clear start-up error.
        """
        cfg = self.cfg.api
        if tokens is None:
            log.info(
                "operator API off: set api.tokens_file (see `hookd api-token add`) to serve it"
            )
            yield
            return
        sec = self.cfg.security
        service = Service(store, allow_http=sec.allow_http, policy=sec.policy())
        api = ApiServer(service, tokens, cfg, setups=self._api_setups(service, tokens))
        try:
            await api.__aenter__()
        except OSError as exc:
            raise ConfigError(
                f"api.port: cannot listen on {cfg.host}:{cfg.port}: {exc.strerror or exc}"
            ) from None
        self.api = api
        log.info(
            "operator API on http://%s:%d (its description: /openapi.json)", cfg.host, api.port
        )
        try:
            yield
        finally:
            await api.__aexit__(None, None, None)

    async def _ready_problem(self) -> str | None:
        if self.listener is None or not self.listener.ready.is_set():
            return "LISTEN connection is down"
        if self._store is None:
            return "no database pool"
        if self.dispatcher is not None and not self.dispatcher.db_ok:
            return "database unavailable: claims are backing off"
        try:
            async with asyncio.timeout(self.cfg.database.connect_timeout_s):
                await self._store.ping()
        except (StoreUnavailable, TimeoutError) as exc:
            return f"database error: {exc or type(exc).__name__}"
        return None

    async def _stats(self, store: Store, dispatcher: Dispatcher) -> None:
        """Refresh database-derived gauges and the systemd STATUS line every stats_interval_s."""
        m = self.metrics
        last_delivered = m.deliveries.labels("delivered")._value.get()
        last_t = time.monotonic()
        while True:
            try:
                s = await store.status(attempts=False)
                m.outbox_backlog.set(s.outbox_backlog)
                m.deliveries_open.labels("pending").set(s.pending)
                m.deliveries_open.labels("paused").set(s.paused)
                m.deliveries_open.labels("failed").set(s.failed)
                m.oldest_pending.set(s.oldest_pending_s or 0.0)
                m.disabled_endpoints.set(s.disabled_endpoints)
                m.open_breakers.set(dispatcher.open_breakers())
                m.retry_timers.set(dispatcher.timers)
                m.up.set(1 if self.listener is not None and self.listener.ready.is_set() else 0)
                delivered = m.deliveries.labels("delivered")._value.get()
                now = time.monotonic()
                rate = (delivered - last_delivered) / max(now - last_t, 1e-6)
                last_delivered, last_t = delivered, now
                self._notify(
                    f"STATUS=backlog {s.outbox_backlog} events, {s.pending} pending deliveries, "
                    f"{rate:.0f} delivered/s"
                )
            except StoreUnavailable as exc:
                m.db_errors.inc()
                m.up.set(0)
                log.warning("reading status figures failed (%s)", exc)
            await asyncio.sleep(self.cfg.admin.stats_interval_s)

    async def _watchdog(self) -> None:
        """Send WATCHDOG=1 at half the interval systemd asked for (WATCHDOG_USEC), from the loop:
        a blocked event loop stops the pings and systemd restarts the service."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if self._notifier is None or not usec or (pid and int(pid) != os.getpid()):
            return
        interval_s = int(usec) / 1e6 / 2
        while True:
            self._notify("WATCHDOG=1")
            await asyncio.sleep(interval_s)

    @staticmethod
    async def _final_flush(writer: OutcomeWriter) -> None:
        for _ in range(3):
            try:
                await writer.flush()
                return
            except StoreUnavailable as exc:
                log.warning("final write of outcomes failed (%s)", exc)
                await asyncio.sleep(0.2)
        log.error(
            "%d outcomes not written; their leases will expire and they will be retried",
            len(writer),
        )


async def check_pooler(db: DatabaseConfig) -> None:
    """Refuse to start when a DSN goes through a pooler in transaction mode that the
    configuration does not account for (see `listener.shares_sessions`).

    The LISTEN connection (`database.listen_dsn`, else `database.dsn`) must have a session of its
    own: behind a transaction pooler its LISTEN and awake lock stay in a server session that other
    clients get, and wake-ups are lost. `database.dsn` behind one needs `database.pooler =
    "transaction"` (else asyncpg's named prepared statements fail in the next transaction). A DSN
    that cannot be reached is not judged here (the store and the listener deal with it).

    Raises:
        ConfigError: naming the setting to change.
    """
    listen_dsn = db.listen_dsn or db.dsn
    probes = {listen_dsn: shares_sessions(listen_dsn, timeout_s=db.connect_timeout_s)}
    if db.pooler == "none" and db.dsn != listen_dsn:
        probes[db.dsn] = shares_sessions(db.dsn, timeout_s=db.connect_timeout_s)
    shared = dict(zip(probes, await asyncio.gather(*probes.values()), strict=True))
    if shared[listen_dsn] and not db.listen_dsn:
        raise ConfigError(
            "database.dsn: goes through a pooler in transaction mode (its connections share "
            'server sessions): set database.pooler = "transaction" and database.listen_dsn to '
            "a DSN straight to PostgreSQL"
        )
    if shared[listen_dsn]:
        raise ConfigError(
            "database.listen_dsn: goes through a pooler in transaction mode (its connections "
            "share server sessions), where LISTEN loses wake-ups: point it straight at PostgreSQL"
        )
    if shared.get(db.dsn):
        raise ConfigError(
            "database.dsn: goes through a pooler in transaction mode (its connections share "
            'server sessions): set database.pooler = "transaction"'
        )


def config_path_of(path: str | None) -> str | None:
    """Absolute path of the configuration file, so SIGHUP reloads it after a chdir."""
    return str(Path(path).resolve()) if path else None
