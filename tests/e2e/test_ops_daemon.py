"""`hookd run` as systemd runs it: the notify protocol on a real socket, SIGHUP reload, JSON logs.

The daemon is a child process (`python -m hookd run`). NOTIFY_SOCKET is a unix datagram socket
the test binds, so READY=1, WATCHDOG=1, STATUS=, RELOADING=1 and STOPPING=1 arrive as systemd
would receive them (sd_notify(3)). Waits are bounded and driven by what arrives, never by sleeps
alone.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import asyncpg
import orjson
from aiohttp import web

from support.daemon import add_endpoint, wait_until
from support.tcpproxy import TcpProxy

_PUBLISH_MANY = (
    "SELECT hookd.publish('order.paid', jsonb_build_object('i', i)) FROM generate_series(1, $1) i"
)

# Short leases and timeouts, fast retries, the admin server on a free port.
_BASE: dict[str, dict[str, Any]] = {
    "daemon": {"lease_s": 5.0, "poll_interval_s": 0.5, "flush_interval_s": 0.01},
    "http": {"total_timeout_s": 3.0, "connect_timeout_s": 1.0},
    "retry": {"schedule_s": [0.0, 0.1, 0.1, 0.1], "max_attempts": 4, "jitter": 0.0},
    "admin": {"port": 0, "stats_interval_s": 0.2},
    # The receivers run on loopback, which the SSRF guard refuses unless opened explicitly.
    "security": {"allow_cidrs": ["127.0.0.0/8", "::1/128"]},
}


def _toml(settings: Mapping[str, Mapping[str, Any]]) -> str:
    """A flat TOML document; values are written as JSON, which TOML shares for these types."""
    out = []
    for section, values in settings.items():
        out.append(f"[{section}]")
        out += [f"{k} = {orjson.dumps(v).decode()}" for k, v in values.items()]
    return "\n".join(out) + "\n"


def _write_config(path: Path, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    merged = {k: dict(v) for k, v in _BASE.items()}
    for section, values in (overrides or {}).items():
        merged.setdefault(section, {}).update(values)
    path.write_text(_toml(merged), encoding="utf-8")
    return path


# -- the notify socket -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Notice:
    """One sd_notify datagram: its KEY=VALUE lines and when it arrived (time.monotonic())."""

    fields: dict[str, str]
    at: float


class NotifySocket:
    """A unix datagram socket for NOTIFY_SOCKET that records every message; context manager.

    The path lives in a short temporary directory: sun_path holds at most 107 bytes. Datagrams
    are read by a loop reader callback, which wakes waiters synchronously (no extra tasks).
    """

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="hookd-notify-")
        self.path = os.path.join(self._dir, "notify.sock")
        self.notices: list[Notice] = []
        self._sock: socket.socket | None = None
        self._waiters: set[asyncio.Future[None]] = set()

    async def __aenter__(self) -> Self:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(self.path)
        sock.setblocking(False)
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self.drain)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
        os.unlink(self.path)
        os.rmdir(self._dir)

    def drain(self) -> None:
        """Read every datagram waiting now (also the loop's reader callback)."""
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(4096)
            except BlockingIOError:
                break
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.notices.append(Notice(fields, time.monotonic()))
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def having(self, key: str, value: str | None = None) -> list[Notice]:
        return [
            n for n in self.notices if key in n.fields and (value is None or n.fields[key] == value)
        ]

    async def wait_for(
        self, key: str, value: str | None = None, timeout_s: float = 10.0, *, nth: int = 1
    ) -> Notice:
        """The `nth` notice with `key` (and `value`), waiting for it (bounded)."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout_s):
                while len(self.having(key, value)) < nth:
                    waiter = loop.create_future()
                    self._waiters.add(waiter)
                    try:
                        await waiter
                    finally:
                        self._waiters.discard(waiter)
        except TimeoutError:
            raise AssertionError(
                f"no {key}={value or '*'} #{nth} within {timeout_s}s; "
                f"got {[n.fields for n in self.notices]}"
            ) from None
        return self.having(key, value)[nth - 1]


# -- the daemon as a child ---------------------------------------------------------------------

_SYSTEMD_VARS = frozenset({"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "HOOKD_DSN"})


class Hookd:
    """`python -m hookd run --config FILE` with the DSN in HOOKD_DSN (as the systemd unit passes
    it) and `env` added; an async context manager that kills the child if the test leaves early.

    Every output line is kept in `lines`.
    """

    def __init__(self, dsn: str, config: Path, env: Mapping[str, str] | None = None) -> None:
        self.dsn = dsn
        self.config = config
        # Nothing of the test runner's own service manager leaks in (pytest under systemd).
        inherited = {k: v for k, v in os.environ.items() if k not in _SYSTEMD_VARS}
        self.env = {**inherited, "HOOKD_DSN": dsn, **(env or {})}
        self.lines: list[str] = []
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()
        self._eof = False

    async def __aenter__(self) -> Self:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hookd",
            "run",
            "--config",
            str(self.config),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._proc is not None and self._reader is not None
        if self._proc.returncode is None:
            self._proc.kill()
        async with asyncio.timeout(10):
            await self._proc.wait()
            await self._reader

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        while raw := await self._proc.stdout.readline():
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))
            async with self._changed:
                self._changed.notify_all()
        self._eof = True
        async with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def send(self, sig: signal.Signals) -> None:
        assert self._proc is not None
        self._proc.send_signal(sig)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def wait_exit(self, timeout_s: float) -> int:
        assert self._proc is not None
        try:
            async with asyncio.timeout(timeout_s):
                return await self._proc.wait()
        except TimeoutError:
            raise AssertionError(
                f"hookd still running after {timeout_s}s:\n{self.output}"
            ) from None

    async def wait_for_line(self, needle: str, timeout_s: float = 10.0, *, after: int = 0) -> str:
        """The first output line from index `after` on that contains `needle` (bounded wait)."""

        def found() -> str | None:
            return next((ln for ln in self.lines[after:] if needle in ln), None)

        try:
            async with asyncio.timeout(timeout_s), self._changed:
                await self._changed.wait_for(lambda: found() is not None or self._eof)
        except TimeoutError:
            raise AssertionError(
                f"no {needle!r} in hookd's output within {timeout_s}s:\n{self.output}"
            ) from None
        line = found()
        assert line is not None, f"hookd exited before printing {needle!r}:\n{self.output}"
        return line

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Wait (bounded, woken by every output line) until `predicate()`; return whether it held."""
        try:
            async with asyncio.timeout(timeout_s), self._changed:
                await self._changed.wait_for(lambda: predicate() or self._eof)
        except TimeoutError:
            pass
        return predicate()

    async def admin_port(self) -> int:
        line = await self.wait_for_line("admin server on http://")
        m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert m, line
        return int(m.group(1))


# -- a receiver that answers after a delay and counts concurrency ----------------------------------


class SlowSink:
    """An HTTP server on loopback answering `status` after `delay_s`; records, per request, the
    webhook-id and how many requests were open at its arrival (itself included)."""

    def __init__(self, *, delay_s: float = 0.0, status: int = 204) -> None:
        self.delay_s = delay_s
        self.status = status
        self.arrivals: list[tuple[str | None, int, float]] = []
        self.active = 0
        self.answered = 0
        self.cancelled = 0
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Condition()

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        async with asyncio.timeout(10):
            await self._runner.cleanup()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _changed_now(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.active += 1
        self.arrivals.append((request.headers.get("webhook-id"), self.active, time.monotonic()))
        await self._changed_now()
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)  # the scenario: a receiver that takes its time
            self.answered += 1
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.active -= 1
        await self._changed_now()
        return web.Response(status=self.status)

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout_s), self._changed:
                await self._changed.wait_for(predicate)
        except TimeoutError:
            raise AssertionError(
                f"receiver: {what} not within {timeout_s}s (arrivals={len(self.arrivals)}, "
                f"active={self.active}, answered={self.answered})"
            ) from None


@asynccontextmanager
async def _notify_daemon(
    dsn: str, config: Path, watchdog_usec: int | None = None
) -> AsyncIterator[tuple[Hookd, NotifySocket]]:
    async with NotifySocket() as notify:
        env = {"NOTIFY_SOCKET": notify.path}
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        async with Hookd(dsn, config, env) as hookd:
            yield hookd, notify


# -- the notify protocol -----------------------------------------------------------------------


async def test_notify_ready_only_with_listen_then_watchdog_status_and_stopping(
    dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    async with TcpProxy.to_postgres(dsn) as proxy:
        # The LISTEN connection goes through a proxy that is dead at start: the database answers
        # (the pool connects directly) but LISTEN cannot be set up yet.
        proxy.blackhole()
        config = _write_config(
            tmp_path / "hookd.toml",
            {"database": {"listen_dsn": proxy.dsn_through(dsn), "connect_timeout_s": 0.3}},
        )
        async with _notify_daemon(dsn, config, watchdog_usec=400_000) as (hookd, notify):
            await hookd.admin_port()
            await hookd.wait_for_line("listener cannot connect")
            await asyncio.sleep(1.0)  # READY=1 must not come while LISTEN is impossible
            assert not notify.having("READY"), hookd.output
            assert "hookd ready" not in hookd.output

            proxy.restore()
            ready = await notify.wait_for("READY", "1", timeout_s=10)
            dbname = await db.fetchval("SELECT current_database()")
            listeners = await db.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = 'hookd-listener' AND datname = $1",
                dbname,
            )
            assert listeners == 1, "READY=1 before the LISTEN connection existed"

            # WATCHDOG=1 at half of WATCHDOG_USEC (0.2 s), steadily, from the event loop.
            await asyncio.sleep(1.3)  # the measurement window: about six watchdog periods
            pings = [n.at for n in notify.having("WATCHDOG", "1") if n.at > ready.at]
            gaps = [b - a for a, b in itertools.pairwise(pings)]
            assert len(pings) >= 5, pings
            assert 0.15 <= statistics.median(gaps) <= 0.3, gaps
            assert max(gaps) < 0.4, f"a gap reached the watchdog interval: {gaps}"

            status = (await notify.wait_for("STATUS")).fields["STATUS"]
            assert re.fullmatch(
                r"backlog \d+ events, \d+ pending deliveries, \d+ delivered/s", status
            ), status

            hookd.send(signal.SIGTERM)
            stopping = await notify.wait_for("STOPPING", "1", timeout_s=10)
            assert await hookd.wait_exit(15) == 0, hookd.output
            notify.drain()
        assert stopping.at > ready.at
        assert len(notify.having("READY", "1")) == 1
        assert "Traceback" not in hookd.output, hookd.output


async def test_unreachable_database_exits_2_without_ready(tmp_path: Path) -> None:
    """systemd sees a failed start (and Restart=on-failure tries again), never a READY=1."""
    config = _write_config(tmp_path / "hookd.toml", {"database": {"connect_timeout_s": 1.0}})
    closed = "postgresql://hookd@127.0.0.1:1/app"
    async with _notify_daemon(closed, config, watchdog_usec=400_000) as (hookd, notify):
        assert await hookd.wait_exit(15) == 2, hookd.output
        notify.drain()
    assert "hookd: error: cannot connect to the database" in hookd.output, hookd.output
    assert not notify.having("READY"), [n.fields for n in notify.notices]


async def test_no_notify_socket_means_no_notify_and_a_clean_exit(dsn: str, tmp_path: Path) -> None:
    """Without NOTIFY_SOCKET (not under systemd) the daemon runs and stops the same way."""
    config = _write_config(tmp_path / "hookd.toml")
    async with Hookd(dsn, config, {"WATCHDOG_USEC": "400000"}) as hookd:
        await hookd.wait_for_line("hookd ready")
        hookd.send(signal.SIGTERM)
        assert await hookd.wait_exit(15) == 0, hookd.output
    assert "Traceback" not in hookd.output


# -- SIGHUP ------------------------------------------------------------------------------------


async def test_sighup_applies_limits_and_log_format_and_refuses_an_invalid_config(
    dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    events = 8
    async with SlowSink(delay_s=0.3) as sink:
        await add_endpoint(dsn, sink.url())
        wide = {"http": {"per_endpoint_limit": 4, "per_host_limit": 4}}
        config = _write_config(tmp_path / "hookd.toml", wide)
        async with _notify_daemon(dsn, config) as (hookd, notify):
            await notify.wait_for("READY", "1")
            await db.execute(_PUBLISH_MANY, events)
            await sink.wait_until(lambda: sink.active == 4, 10, "4 requests open")

            # Reload while 4 requests are open: limits down to 1, logs to JSON.
            _write_config(
                config,
                {
                    "http": {"per_endpoint_limit": 1, "per_host_limit": 1},
                    "log": {"format": "json"},
                },
            )
            mark = len(hookd.lines)
            hookd.send(signal.SIGHUP)
            line = await hookd.wait_for_line("configuration reloaded", after=mark)
            assert orjson.loads(line)["message"] == "configuration reloaded", line
            reloading = await notify.wait_for("RELOADING", "1")
            assert (await notify.wait_for("READY", "1", nth=2)).at >= reloading.at

            # The open requests finish (nothing dropped); later ones go one at a time.
            await wait_until(
                db,
                "SELECT count(*) = $1 FROM hookd.deliveries WHERE state = 'delivered'",
                events,
                timeout_s=20,
            )
            assert sink.cancelled == 0
            later = [open_ for _, open_, _ in sink.arrivals[4:]]
            assert later and max(later) == 1, f"more than one request at a time: {later}"
            ids = [wid for wid, _, _ in sink.arrivals]
            assert len(ids) == len(set(ids)) == events, "each delivery sent exactly once"

            # An invalid configuration is refused, logged, and the running one is kept.
            config.write_text('[http]\nper_endpoint_limit = "many"\n', encoding="utf-8")
            mark = len(hookd.lines)
            hookd.send(signal.SIGHUP)
            line = await hookd.wait_for_line("reload refused", after=mark)
            refused = orjson.loads(line)  # still JSON: the old [log] settings are kept
            assert refused["level"] == "error" and "per_endpoint_limit" in refused["message"]
            await db.execute(_PUBLISH_MANY, 3)
            await wait_until(
                db,
                "SELECT count(*) = $1 FROM hookd.deliveries WHERE state = 'delivered'",
                events + 3,
                timeout_s=10,
            )
            assert max(open_ for _, open_, _ in sink.arrivals[events:]) == 1, "limit 1 kept"
            assert hookd.running

            hookd.send(signal.SIGTERM)
            assert await hookd.wait_exit(15) == 0, hookd.output


async def test_sighup_applies_security_allow_cidrs_to_deliveries(
    dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """[security] on reload reaches the delivery path, not only the API: opening loopback lets
    the next delivery through, closing it again refuses the next one (pooled connections too)."""
    closed = {"security": {"allow_cidrs": []}}
    async with SlowSink(delay_s=0.0) as sink:
        await add_endpoint(dsn, sink.url())
        config = _write_config(tmp_path / "hookd.toml", closed)
        async with _notify_daemon(dsn, config) as (hookd, notify):
            await notify.wait_for("READY", "1")
            await db.execute(_PUBLISH_MANY, 1)
            await wait_until(
                db,
                "SELECT count(*) > 0 FROM hookd.attempts WHERE error LIKE '%refused%'",
                timeout_s=10,
            )
            # Its retries (0.1 s apart) end before the reload, or one could pass after it.
            await wait_until(
                db, "SELECT count(*) = 1 FROM hookd.deliveries WHERE state = 'failed'", timeout_s=10
            )
            assert not sink.arrivals

            for event, allowed in ((2, ["127.0.0.0/8"]), (3, [])):
                _write_config(config, {"security": {"allow_cidrs": allowed}})
                mark = len(hookd.lines)
                hookd.send(signal.SIGHUP)
                await hookd.wait_for_line("configuration reloaded", after=mark)
                await db.execute(_PUBLISH_MANY, 1)
                first_attempt = (
                    "FROM hookd.attempts a JOIN hookd.deliveries d ON d.id = a.delivery_id"
                    " WHERE d.event_id = $1 AND a.attempt = 1"
                )
                await wait_until(db, f"SELECT count(*) > 0 {first_attempt}", event, timeout_s=10)
                error = await db.fetchval(f"SELECT a.error {first_attempt}", event)
                if allowed:
                    assert error is None, error
                else:
                    assert error is not None and "refused" in error, error
                assert len(sink.arrivals) == 1
            hookd.send(signal.SIGTERM)
            assert await hookd.wait_exit(15) == 0, hookd.output


# -- logs --------------------------------------------------------------------------------------

_FAILED = re.compile(r"^endpoint \d+ delivery \d+ attempt \d+ failed: ")
_SUPPRESSED = re.compile(r"^(\d+) similar lines suppressed")
_DEAD_LETTERED = re.compile(
    r"^endpoint \d+ delivery \d+ \(order\.\w+\) dead-lettered after 4 attempts: "
)


async def test_json_logs_and_failed_attempt_lines_rate_limited_under_a_storm(
    dsn: str, db: asyncpg.Connection, tmp_path: Path
) -> None:
    rate, events = 5.0, 150
    async with SlowSink(status=500) as sink:
        await add_endpoint(dsn, sink.url())
        config = _write_config(
            tmp_path / "hookd.toml",
            {
                "log": {"format": "json", "failed_attempts_per_s": rate},
                # The storm must not be cut short by the breaker.
                "breaker": {"failure_threshold": 1_000_000},
            },
        )
        async with Hookd(dsn, config) as hookd:
            await hookd.wait_for_line("hookd ready")
            started = time.monotonic()
            await db.execute(_PUBLISH_MANY, events)
            await wait_until(
                db,
                "SELECT count(*) = $1 FROM hookd.deliveries WHERE state = 'failed'",
                events,
                timeout_s=20,
            )
            storm_s = time.monotonic() - started
            total = await db.fetchval("SELECT count(*) FROM hookd.attempts WHERE status = 500")
            assert total == events * 4 == sink.answered

            # Every failed attempt but each delivery's last is either logged or counted in a
            # summary (the count of the storm's last stretch comes once the storm is over, about
            # a second later); the last one is told by the delivery's one dead-letter line.
            retried = total - events
            await hookd.wait_until(lambda: sum(_failure_accounting(hookd.lines)) >= retried, 5)
            logged, summarised = _failure_accounting(hookd.lines)
            assert logged + summarised == retried, (logged, summarised, retried)
            dead = [m for m in _messages(hookd.lines) if _DEAD_LETTERED.match(m)]
            assert len(dead) == events, len(dead)
            hookd.send(signal.SIGTERM)
            assert await hookd.wait_exit(15) == 0, hookd.output

    entries = [_json_entry(line) for line in hookd.lines]
    failed = [e for e in entries if _FAILED.match(e["message"])]
    # A token bucket: a burst of `rate`, then `rate` per second.
    assert len(failed) <= rate * (storm_s + 1) + rate, (len(failed), storm_s)
    assert summarised > 0, "no suppressed summary"
    assert all(e["level"] == "warning" for e in failed)


def _json_entry(line: str) -> dict[str, Any]:
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise AssertionError(f"not a JSON line: {line!r}") from None
    assert isinstance(entry, dict), line
    assert {"time", "level", "logger", "message"} <= entry.keys(), line
    return entry


def _messages(lines: list[str]) -> list[str]:
    return [_json_entry(line)["message"] for line in list(lines)]


def _failure_accounting(lines: list[str]) -> tuple[int, int]:
    """(failed-attempt lines, attempts counted in "N similar lines suppressed" summaries)."""
    messages = _messages(lines)
    logged = sum(1 for m in messages if _FAILED.match(m))
    summarised = sum(int(m.group(1)) for msg in messages if (m := _SUPPRESSED.match(msg)))
    return logged, summarised
