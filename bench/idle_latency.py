"""Idle latency: commit → request received, for serial events, on an idle daemon and back to back.

One endpoint points at a small aiohttp receiver in this process that records `time.time()` when a
request arrives. Every event is published the way the README tells applications to: inside a
transaction (`BEGIN; SELECT hookd.publish(...); COMMIT`); its commit time is `time.time()` right
after COMMIT returns. Two series of serial events (each published after the previous one arrived):

  idle          before each publish, wait until the daemon is asleep (no awake daemon holds the
                advisory lock, or the older waker flag is set: bench/wakeup.py), so every event
                takes the wake-up path. The goals apply to this series.
  back_to_back  publish at once after the previous event arrived, while the daemon may still be
                finishing its claim round. An event committed while the daemon is between its
                last look for work and falling asleep waits for its second look
                (`daemon.idle_recheck_s`) or the polling fallback; events over 100 ms are counted.

The wake-up floor is measured in the idle series, interleaved event by event: a transaction that
INSERTs a row and calls pg_notify, from COMMIT to the callback of an asyncpg listener in another
process (as hookd's is). PostgreSQL signals listeners during the commit, before the committing
client has read its reply, so this floor is about 0 ms and can be negative. Both latencies are
therefore also given from the moment COMMIT was sent (the commit's fsync included), and the ratio
to the floor uses those. All times are time.time() on this machine.

The peers get the same kind of series (`peer_idle`): bench/producer.py `idle` publishes one event
for one endpoint (a receiver in the producer's process), waits until it arrives, pauses 10 ms, and
so on; the worker has nothing else to do, so every event finds it waiting for work.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web

from bench import wakeup
from bench.common import BenchError, free_port, latency_summary_ms, ratio, wait_for
from bench.floor_listener import FloorListener
from bench.hookd_proc import HookdProcess, write_cli_config
from bench.payload import EVENT_TYPE, payload_json
from bench.pg import SUT_ROLE, Postgres, add_endpoint
from bench.systems import System, run_producer

log = logging.getLogger("bench.idle")

RECEIVE_TIMEOUT_S = 5.0
"""Longest wait for one event (hookd's polling fallback is 1 s); later counts as missing."""
PEER_GAP_MS = 10.0
"""Pause between a peer's serial events."""
ASLEEP_TIMEOUT_S = 5.0
"""Longest wait for the daemon to declare itself asleep before an idle-series event."""
FLOOR_CHANNEL = "bench_floor"
SLOW_S = 0.1
"""Latencies above this (seconds) are counted as waits for the polling fallback."""


class Receiver:
    """An aiohttp server on 127.0.0.1 that records when each webhook-id arrives (time.time())."""

    def __init__(self) -> None:
        self.received: dict[int, float] = {}
        self.requests = 0
        self._waiters: dict[int, asyncio.Future[float]] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _handle(self, request: web.Request) -> web.Response:
        at = time.time()
        self.requests += 1
        await request.read()
        # webhook-id is msg_<install id>_<event id>
        event_id = int(request.headers.get("webhook-id", "_0").rsplit("_", 1)[1])
        self.received.setdefault(event_id, at)
        waiter = self._waiters.pop(event_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(at)
        return web.Response(status=204)

    async def start(self) -> str:
        """Start listening on a free port; return the hook URL."""
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{self.port}/hook"

    async def stop(self) -> None:
        """Stop the server."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait(self, event_id: int, timeout_s: float) -> float | None:
        """The receive time of `event_id`, waiting up to `timeout_s`; None if it did not come."""
        if event_id in self.received:
            return self.received[event_id]
        fut = self._waiters[event_id] = asyncio.get_running_loop().create_future()
        try:
            return await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            return None
        finally:
            self._waiters.pop(event_id, None)


@dataclass(frozen=True, slots=True)
class IdleParams:
    """Size of the idle-latency scenario."""

    events: int = 1000
    """Events in each series (idle, back to back)."""
    body_bytes: int = 768


@dataclass(slots=True)
class _Series:
    """Latencies of one kind, seconds: from COMMIT's return and from COMMIT's send."""

    from_commit: list[float] = field(default_factory=list)
    from_send: list[float] = field(default_factory=list)
    missing: int = 0

    def add(self, sent: float, committed: float, at: float | None) -> None:
        if at is None:
            self.missing += 1
        else:
            self.from_commit.append(at - committed)
            self.from_send.append(at - sent)

    @property
    def slow(self) -> int:
        """Events slower than SLOW_S from commit."""
        return sum(1 for x in self.from_commit if x > SLOW_S)


async def _in_tx(conn: asyncpg.Connection, sql: str, *args: Any) -> tuple[Any, float, float]:
    """Run `sql` in a transaction; return (its value, COMMIT sent, COMMIT returned) in time.time()."""
    tx = conn.transaction()
    await tx.start()
    try:
        value = await conn.fetchval(sql, *args)
    except BaseException:
        await tx.rollback()
        raise
    sent = time.time()
    await tx.commit()
    return value, sent, time.time()


async def _floor_once(conn: asyncpg.Connection, floor: FloorListener, no: int, s: _Series) -> None:
    """INSERT + NOTIFY in one transaction → the listener process's callback."""
    _, sent, committed = await _in_tx(
        conn,
        "WITH i AS (INSERT INTO bench_floor (no) VALUES ($1)) SELECT pg_notify($2, $1::text)",
        no,
        FLOOR_CHANNEL,
    )
    s.add(sent, committed, await floor.wait(str(no), RECEIVE_TIMEOUT_S))


async def _hookd_once(
    conn: asyncpg.Connection, receiver: Receiver, payload: str, s: _Series
) -> None:
    """hookd.publish in a transaction → the receiver."""
    event_id, sent, committed = await _in_tx(
        conn, "SELECT hookd.publish(event_type => $1, payload => $2::jsonb)", EVENT_TYPE, payload
    )
    s.add(sent, committed, await receiver.wait(event_id, RECEIVE_TIMEOUT_S))


async def run(pg: Postgres, workdir: Path, p: IdleParams) -> dict[str, Any]:
    """Run the idle-latency scenario; return one result record (see the module docstring)."""
    dsn = await pg.hookd_database("bench_idle")
    receiver = Receiver()
    url = await receiver.start()
    try:
        await add_endpoint(dsn, url, write_cli_config(workdir))
        return await _measure(dsn, pg.dsn_for("bench_idle", SUT_ROLE), workdir, receiver, p)
    finally:
        await receiver.stop()


def _wakeup_delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after}


async def _measure(
    dsn: str, daemon_dsn: str, workdir: Path, receiver: Receiver, p: IdleParams
) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn, timeout=10)
    idle, floor, back = _Series(), _Series(), _Series()
    try:
        await conn.execute("CREATE TABLE bench_floor (no bigint, at timestamptz DEFAULT now())")
        payload = payload_json(1, p.body_bytes)
        asleep_sql = wakeup.ASLEEP_SQL[await wakeup.form(conn)]
        async with (
            FloorListener(dsn, FLOOR_CHANNEL) as listener,
            HookdProcess(daemon_dsn, workdir, "hookd-idle", {}) as daemon,
        ):

            async def asleep() -> bool:
                return bool(await conn.fetchval(asleep_sql))

            w0 = await daemon.wakeups()
            for no in range(1, p.events + 1):
                await _floor_once(conn, listener, no, floor)
                await wait_for(asleep, ASLEEP_TIMEOUT_S, 0.001, "the daemon to fall asleep")
                await _hookd_once(conn, receiver, payload, idle)
            w1 = await daemon.wakeups()
            for _ in range(p.events):
                await _hookd_once(conn, receiver, payload, back)
            w2 = await daemon.wakeups()

            async def all_written() -> bool:
                n = await conn.fetchval(
                    "SELECT count(*) FROM hookd.deliveries WHERE state = 'delivered'"
                )
                return bool(n >= 2 * p.events)

            try:
                await wait_for(all_written, 10.0, 0.1, "outcomes to be written")
            except BenchError as exc:
                log.warning("%s", exc)
            exit_code = await daemon.stop()
        delivered = await conn.fetchval(
            "SELECT count(*) FROM hookd.deliveries WHERE state = 'delivered'"
        )
    finally:
        await conn.close()

    h, f = latency_summary_ms(idle.from_commit), latency_summary_ms(floor.from_commit)
    p50_gap = (
        round(h["p50_ms"] - f["p50_ms"], 3)
        if h["p50_ms"] is not None and f["p50_ms"] is not None
        else None
    )
    hs, fs = latency_summary_ms(idle.from_send), latency_summary_ms(floor.from_send)
    missing = idle.missing + back.missing
    return {
        "scenario": "idle_latency",
        "params": {"events_per_series": p.events, "body_bytes": p.body_bytes},
        "publish": "BEGIN; SELECT hookd.publish(...); COMMIT (asyncpg)",
        "hookd": h,
        "floor": f,
        "hookd_from_commit_sent": hs,
        "floor_from_commit_sent": fs,
        "p50_minus_floor_p50_ms": p50_gap,
        "p50_ratio_to_floor": ratio(hs["p50_ms"], fs["p50_ms"], 2),
        "p99_ratio_to_floor": ratio(hs["p99_ms"], fs["p99_ms"], 2),
        "idle_over_100ms": idle.slow,
        "idle_wakeups": _wakeup_delta(w1, w0),
        "back_to_back": latency_summary_ms(back.from_commit),
        "back_to_back_over_100ms": back.slow,
        "back_to_back_wakeups": _wakeup_delta(w2, w1),
        "published": 2 * p.events,
        "received": len(idle.from_commit) + len(back.from_commit),
        "missing": missing,
        "delivered_in_db": int(delivered),
        "receiver_requests": receiver.requests,
        "floor_missing": floor.missing,
        "daemon_exit_code": exit_code,
        "daemon_log_warnings": daemon.warnings,
        "daemon_log_errors": daemon.errors,
        "void": missing != 0 or exit_code != 0,
    }


async def peer_idle(
    system: System, pg: Postgres, workdir: Path, events: int, body_bytes: int
) -> dict[str, Any]:
    """A peer's serial events (see the module docstring); its worker runs throughout."""
    db = f"idle_{system.mode}"
    await system.create(pg, db, workdir)
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook/e1"
    worker = system.worker(pg, db, workdir, f"{system.mode}-idle")
    async with worker:
        result, _ = await run_producer(
            system,
            pg,
            db,
            workdir,
            f"idle-{system.mode}",
            [url],
            [
                "idle",
                f"--events={events}",
                f"--gap-ms={PEER_GAP_MS}",
                f"--port={port}",
                "--max-s=120",
            ],
            body_bytes=body_bytes,
            timeout_s=180.0,
        )
        exit_code = await worker.stop()
    await pg.drop_database(db)
    return {
        "system": system.name,
        "events": result["events"],
        "received": result["received"],
        "missing": result["missing"],
        "gap_ms": result["gap_ms"],
        "latency": result["latency"],
        "exit_code": exit_code,
        "void": result["missing"] != 0 or exit_code not in system.clean_exits,
    }
