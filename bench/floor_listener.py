"""The wake-up floor's listener: a separate process that LISTENs and stamps each notification.

A listener in the publishing process would see the notification in the same event-loop turn as
the commit's reply and report ~0 ms; hookd's listener is another process, so this one is too
(asyncpg on uvloop, like hookd). It prints "ready", then one line per notification:
`<payload> <time.time() at the callback>`. It exits when stdin closes or after `--max-s` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import asyncpg
import uvloop

from bench.common import BenchError, stop_process


async def listen(dsn: str, channel: str, max_s: float) -> None:
    """Listen on `channel` until stdin reaches EOF or `max_s` seconds pass."""
    conn = await asyncpg.connect(dsn, timeout=10)
    out = sys.stdout

    def on_notify(_conn: object, _pid: int, _channel: str, payload: object) -> None:
        at = time.time()
        out.write(f"{payload} {at:.6f}\n")
        out.flush()

    try:
        await conn.add_listener(channel, on_notify)
        out.write("ready\n")
        out.flush()
        loop = asyncio.get_running_loop()
        stdin = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stdin.read(), max_s)
    finally:
        await conn.close()


REPO_ROOT = Path(__file__).resolve().parents[1]


class FloorListener:
    """Parent side: runs this module as a child; `async with FloorListener(dsn, ch) as fl`.

    `await fl.wait(payload, timeout_s)` returns the child's callback time for that payload.
    """

    def __init__(self, dsn: str, channel: str, max_s: float = 900.0) -> None:
        self._args = ["--dsn", dsn, "--channel", channel, f"--max-s={max_s}"]
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._seen: dict[str, float] = {}
        self._waiters: dict[str, asyncio.Future[float]] = {}

    async def __aenter__(self) -> FloorListener:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.floor_listener",
            *self._args,
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            assert self._proc.stdout is not None
            line = await asyncio.wait_for(self._proc.stdout.readline(), 30.0)
            if line.strip() != b"ready":
                raise BenchError(f"floor listener did not start: {line!r}")
        except BaseException:
            await stop_process(self._proc, signal.SIGTERM, 5.0)
            raise
        self._reader = asyncio.create_task(self._read(), name="floor-listener-stdout")
        return self

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        while line := await self._proc.stdout.readline():
            payload, at_text = line.decode().split()
            at = float(at_text)
            self._seen[payload] = at
            waiter = self._waiters.pop(payload, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(at)

    async def wait(self, payload: str, timeout_s: float) -> float | None:
        """The listener's time.time() when `payload` arrived; None after `timeout_s` seconds."""
        if payload in self._seen:
            return self._seen.pop(payload)
        fut = self._waiters[payload] = asyncio.get_running_loop().create_future()
        try:
            return await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            return None
        finally:
            self._waiters.pop(payload, None)
            self._seen.pop(payload, None)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()  # the child exits at EOF
        try:
            await asyncio.wait_for(proc.wait(), 5.0)
        except TimeoutError:
            pass
        finally:
            await stop_process(proc, signal.SIGTERM, 5.0)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 5.0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: `python -m bench.floor_listener --dsn DSN --channel NAME`."""
    p = argparse.ArgumentParser(prog="python -m bench.floor_listener", description=__doc__)
    p.add_argument("--dsn", required=True)
    p.add_argument("--channel", required=True)
    p.add_argument("--max-s", type=float, default=900.0)
    args = p.parse_args(argv)
    uvloop.run(listen(args.dsn, args.channel, args.max_s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
