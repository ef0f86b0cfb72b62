"""Bad receivers for the fault scenarios: hosts that answer late or never.

A separate process (aiohttp on uvloop), started by the benchmark:
`python -m bench.fault_sink --log FILE --bind HOST:PORT:MODE [--bind ...]` where MODE is
`delay=SECONDS` (answer 204 after that long) or `hang` (read the request, never answer; the
connection stays open until the client gives up). Each request is logged when it arrives, in the
nginx sink's format (`<unix time> <host> <uri> <webhook-id> <status>`, status being what it will
answer, 0 for hang), so the same ledger reads both. Prints "ready" once listening; SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Sequence

import uvloop
from aiohttp import web


class FaultSink:
    """The servers and their shared log."""

    def __init__(self, log_path: str) -> None:
        self._log = open(log_path, "a", buffering=1 << 16)  # noqa: SIM115 (closed in close())
        self._runners: list[web.AppRunner] = []
        self.requests = 0

    async def add(self, host: str, port: int, mode: str) -> None:
        """Serve `mode` on host:port."""
        delay: float | None = None
        if mode.startswith("delay="):
            delay = float(mode.removeprefix("delay="))
        elif mode != "hang":
            raise SystemExit(f"unknown mode {mode!r}")

        async def handle(request: web.Request) -> web.Response:
            at = time.time()
            self.requests += 1
            status = 204 if delay is not None else 0
            wid = request.headers.get("webhook-id", "-")
            self._log.write(f"{at:.3f} {host} {request.path} {wid} {status}\n")
            await request.read()
            if delay is None:
                await asyncio.Event().wait()  # never answers
            await asyncio.sleep(delay or 0.0)
            return web.Response(status=204)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await runner.setup()
        await web.TCPSite(runner, host, port, backlog=4096).start()
        self._runners.append(runner)

    async def close(self) -> None:
        """Stop serving and flush the log."""
        for runner in self._runners:
            await runner.cleanup()
        self._log.close()


async def serve(log_path: str, binds: Sequence[str], max_s: float) -> None:
    """Serve every bind until SIGTERM/SIGINT or `max_s` seconds."""
    sink = FaultSink(log_path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        for bind in binds:
            host, port, mode = bind.split(":", 2)
            await sink.add(host, int(port), mode)
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max_s)
    finally:
        await sink.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m bench.fault_sink`."""
    p = argparse.ArgumentParser(prog="python -m bench.fault_sink", description=__doc__)
    p.add_argument("--log", required=True)
    p.add_argument("--bind", action="append", required=True, help="HOST:PORT:MODE")
    p.add_argument("--max-s", type=float, default=1800.0, help="stop after this many seconds")
    args = p.parse_args(argv)
    uvloop.run(serve(args.log, args.bind, args.max_s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
