"""The admin HTTP server: Prometheus metrics and health checks, bound to loopback by default.

GET /metrics  the daemon's own registry in the Prometheus text format.
GET /healthz  200 when the event loop answers (this handler ran).
GET /readyz   200 when the database answers within 2 s and LISTEN is active, else 503 with why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hookd.metrics import Metrics

ReadyCheck = Callable[[], Awaitable[str | None]]
"""Returns None when ready, else a short reason."""


class AdminServer:
    """An aiohttp server for /metrics, /healthz and /readyz; async context manager."""

    def __init__(self, metrics: Metrics, ready_check: ReadyCheck, host: str, port: int) -> None:
        self._metrics = metrics
        self._ready_check = ready_check
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        """The bound port (useful when configured as 0)."""

    async def __aenter__(self) -> AdminServer:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics_handler)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metrics_handler(self, request: web.Request) -> web.Response:
        body = generate_latest(self._metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(2.0):
                problem = await self._ready_check()
        except TimeoutError:
            problem = "database did not answer within 2 s"
        if problem is None:
            return web.Response(text="ready\n")
        return web.Response(status=503, text=f"not ready: {problem}\n")
