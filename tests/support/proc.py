"""hookd as a real child process, the CLI as a command, and a slow recording receiver.

For the end-to-end tests (tests/e2e): the daemon runs as `python -m hookd run --dsn DSN --config
FILE`, so signals, crashes and exit statuses are the real ones. Every wait here is bounded, and
readiness is the daemon's own "hookd ready" line on stderr, never a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from aiohttp import web

READY_LINE = "hookd ready"
_OWNER = re.compile(r"hookd ready \(lease owner ([0-9a-f-]{36})\)")


# -- configuration files -------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def to_toml(settings: Mapping[str, Mapping[str, Any]]) -> str:
    """A flat `[section]` / `key = value` TOML document (all hookd's configuration needs)."""
    lines: list[str] = []
    for section, values in settings.items():
        lines.append(f"[{section}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in values.items())
        lines.append("")
    return "\n".join(lines)


E2E_SETTINGS: dict[str, dict[str, Any]] = {
    "daemon": {"lease_s": 5.0, "poll_interval_s": 0.5, "flush_interval_s": 0.01},
    "http": {"total_timeout_s": 3.0, "connect_timeout_s": 1.0},
    # Short retries: a failed attempt must not stall a test for the default 5 s.
    "retry": {"schedule_s": [0.0, 0.2, 0.5, 1.0], "max_attempts": 4, "jitter": 0.0},
    # Any free port: the default 9464 would collide between two daemons (or two test runs).
    "admin": {"port": 0},
    # The receivers are plain http on loopback.
    # The receivers run on loopback: open it explicitly, as an operator would for internal targets.
    "security": {"allow_http": True, "allow_cidrs": ["127.0.0.0/8", "::1/128"]},
}
"""Short leases and timeouts, so crash recovery happens within a test's patience."""


def write_config(path: Path, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """Write E2E_SETTINGS with `overrides` merged per section to `path`; return `path`.

    The DSN is not written: tests pass it with `--dsn`.
    """
    merged: dict[str, dict[str, Any]] = {k: dict(v) for k, v in E2E_SETTINGS.items()}
    for section, values in (overrides or {}).items():
        merged.setdefault(section, {}).update(values)
    path.write_text(to_toml(merged), encoding="utf-8")
    return path


def _child_env() -> dict[str, str]:
    # No HOOKD_DSN from the developer's shell: the tests say which database they mean.
    return {k: v for k, v in os.environ.items() if k != "HOOKD_DSN"}


# -- the CLI -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CliResult:
    """What one `hookd ...` command did."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        """For assertion messages."""
        return (
            f"hookd {' '.join(self.args)} -> exit {self.returncode}\n"
            f"--- stdout ---\n{self.stdout}--- stderr ---\n{self.stderr}"
        )


async def run_cli(*args: str, timeout_s: float = 30.0) -> CliResult:
    """Run `python -m hookd ARGS` to completion (bounded) and capture its output.

    Raises:
        AssertionError: it did not finish within `timeout_s` (it is killed first).
    """
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hookd",
        *args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_child_env(),
    )
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        async with asyncio.timeout(5):
            await proc.wait()
        raise AssertionError(f"hookd {' '.join(args)} did not finish in {timeout_s}s") from None
    assert proc.returncode is not None
    return CliResult(
        args, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")
    )


# -- the daemon ----------------------------------------------------------------------------------


class DaemonProcess:
    """`python -m hookd run --dsn DSN --config FILE` as a child; an async context manager.

    Entering starts it and waits (bounded) for "hookd ready" on stderr; a child that exits first
    fails with its output. Every stderr line is kept in `lines` (stdout is merged into it).
    Leaving kills the child if it still runs, so a failing test leaves no daemon behind.
    """

    def __init__(
        self,
        dsn: str,
        config_path: Path,
        *,
        name: str = "hookd",
        ready_timeout_s: float = 20.0,
        wait_ready: bool = True,
    ) -> None:
        """`wait_ready` False: entering only starts the child (for a daemon that is not expected
        to become ready); leaving then gives it a moment to exit by itself before killing it, so a
        child that just exited is reaped with its own status."""
        self.wait_ready = wait_ready
        self.dsn = dsn
        self.config_path = config_path
        self.name = name
        self.ready_timeout_s = ready_timeout_s
        self.lines: list[str] = []
        self.returncode: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()
        self._eof = False

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._proc is not None:
            raise RuntimeError(f"{self.name} already started")
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hookd",
            "run",
            "--dsn",
            self.dsn,
            "--config",
            str(self.config_path),
            stdin=subprocess.DEVNULL,
            # One pipe for both: hookd logs to stderr, and anything on stdout belongs with it.
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=_child_env(),
        )
        # Owned by this object and awaited in close(); it drains the pipe so the child never
        # blocks on a full stderr.
        self._reader = asyncio.create_task(self._read_stderr(), name=f"{self.name}-stderr")
        if not self.wait_ready:
            return
        try:
            await self.wait_for_line(READY_LINE, self.ready_timeout_s)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Kill the child if it still runs, and reap it and the stderr reader (bounded)."""
        proc = self._proc
        if proc is not None and proc.returncode is None and not self.wait_ready:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await proc.wait()
        if proc is not None and proc.returncode is None:
            proc.kill()
        if proc is not None:
            async with asyncio.timeout(10):
                self.returncode = await proc.wait()
        if self._reader is not None:
            async with asyncio.timeout(10):
                await self._reader

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- signals -------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    def send(self, sig: signal.Signals) -> None:
        """Send `sig` to the daemon (a plain Python process: no wrapper shell in between)."""
        assert self._proc is not None
        self._proc.send_signal(sig)

    async def wait_exit(self, timeout_s: float) -> int:
        """Wait for the child to exit and return its status (negative: killed by that signal).

        Raises:
            AssertionError: still running after `timeout_s`.
        """
        assert self._proc is not None
        try:
            async with asyncio.timeout(timeout_s):
                self.returncode = await self._proc.wait()
        except TimeoutError:
            raise AssertionError(
                f"{self.name} still running {timeout_s}s later; stderr:\n{self.stderr}"
            ) from None
        return self.returncode

    async def kill9(self) -> None:
        """SIGKILL, and wait (bounded) until the process is gone."""
        self.send(signal.SIGKILL)
        code = await self.wait_exit(10)
        assert code == -signal.SIGKILL, f"{self.name} exited with {code} before SIGKILL landed"

    # -- stderr --------------------------------------------------------------------------------

    async def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        while raw := await self._proc.stdout.readline():
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))
            async with self._changed:
                self._changed.notify_all()
        self._eof = True
        async with self._changed:
            self._changed.notify_all()

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    async def wait_for_line(self, needle: str, timeout_s: float) -> str:
        """Wait until a stderr line contains `needle`; return that line.

        Raises:
            AssertionError: the child exited (stderr closed) or `timeout_s` passed first.
        """

        def found() -> str | None:
            return next((line for line in self.lines if needle in line), None)

        try:
            async with asyncio.timeout(timeout_s), self._changed:
                await self._changed.wait_for(lambda: found() is not None or self._eof)
        except TimeoutError:
            raise AssertionError(
                f"{self.name}: no {needle!r} on stderr within {timeout_s}s; stderr:\n{self.stderr}"
            ) from None
        line = found()
        if line is None:
            raise AssertionError(
                f"{self.name} closed stderr (exited?) before logging {needle!r}; "
                f"stderr:\n{self.stderr}"
            )
        return line

    @property
    def lease_owner(self) -> str:
        """The lease owner UUID this daemon announced in its ready line."""
        for line in self.lines:
            if m := _OWNER.search(line):
                return m.group(1)
        raise AssertionError(
            f"{self.name}: no lease owner in the ready line; stderr:\n{self.stderr}"
        )


# -- a receiver that answers slowly --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hit:
    """One request as a SlowReceiver saw it (recorded on arrival, before the delay)."""

    path: str
    webhook_id: str | None
    user_agent: str | None
    wall_s: float
    """time.time() on arrival (comparable with PostgreSQL's now() on this machine)."""


class Ledger:
    """What one or more SlowReceivers saw, in arrival order; waits are woken on every change.

    `active` counts requests waiting for their answer; a client that gives up (or dies) cancels
    its handler, counted in `cancelled`.
    """

    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self.active = 0
        self.answered = 0
        self.cancelled = 0
        self._waiters: set[asyncio.Future[None]] = set()

    def _notify(self) -> None:
        # Synchronous, so a cancelled handler can report from its `finally` without awaiting.
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def pairs(self) -> Counter[tuple[str, str | None]]:
        """How often each (path, webhook-id) arrived."""
        return Counter((h.path, h.webhook_id) for h in self.hits)

    async def wait_until(
        self, predicate: Callable[[], bool], timeout_s: float, what: str = "condition"
    ) -> None:
        """Wait (no polling: woken on every arrival and answer) until `predicate()` holds.

        Raises:
            AssertionError: not within `timeout_s`.
        """
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout_s):
                while not predicate():
                    waiter = loop.create_future()
                    self._waiters.add(waiter)
                    try:
                        await waiter
                    finally:
                        self._waiters.discard(waiter)
        except TimeoutError:
            raise AssertionError(
                f"receivers: {what} not reached in {timeout_s}s (hits={len(self.hits)}, "
                f"active={self.active}, answered={self.answered}, cancelled={self.cancelled})"
            ) from None


class SlowReceiver:
    """An HTTP server on loopback that answers every request with `status` after `delay_s` seconds.

    The delay is what keeps many requests in flight at once; `delay_s` may be changed at any time
    (it applies to requests that arrive afterwards). Several receivers may share one `ledger`.
    """

    def __init__(
        self,
        ledger: Ledger | None = None,
        *,
        delay_s: float = 0.0,
        status: int = 204,
        host: str = "127.0.0.1",
    ) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"tests listen on loopback only, not {host!r}")
        self.ledger = ledger or Ledger()
        self.delay_s = delay_s
        self.status = status
        self.host = host
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a client that disconnects cancels its handler, so `active` tells
        # how many requests are really still open.
        runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            handler_cancellation=True,
            shutdown_timeout=1.0,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, 0, backlog=1024)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = runner.addresses[0][1]
        self._runner = runner
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            async with asyncio.timeout(10):
                await runner.cleanup()

    def url_for(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        ledger = self.ledger
        await request.read()
        ledger.hits.append(
            Hit(
                request.path,
                request.headers.get("webhook-id"),
                request.headers.get("User-Agent"),
                time.time(),
            )
        )
        ledger.active += 1
        ledger._notify()
        try:
            if self.delay_s > 0:
                # Deliberate: a slow receiver is the scenario (requests stay in flight this long).
                await asyncio.sleep(self.delay_s)
            ledger.answered += 1
        except asyncio.CancelledError:
            ledger.cancelled += 1
            raise
        finally:
            ledger.active -= 1
            ledger._notify()
        return web.Response(status=self.status)
