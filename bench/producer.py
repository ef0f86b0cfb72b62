"""Producers: publish events the way an application would, for hookd or for a peer.

A standalone script (standard library, asyncpg, uvloop, aiohttp; pgqueuer for that peer), so it
runs in hookd's virtualenv and in PGQueuer's alike:
`python bench/producer.py --mode hookd|pgqueuer|graphile --dsn DSN [--url URL ...] MODE-ARGS`.

What one event is, per system (always in the producer's own transaction, BEGIN ... COMMIT):
  hookd     `SELECT hookd.publish(event_type => ..., payload => ...)`: one outbox row; hookd fans
            it out to its endpoints;
  pgqueuer  `Queries.enqueue([...], [...], [...])` with one job per endpoint URL (PGQueuer has no
            fan-out), each job's payload `{"url", "id", "body"}` carrying the exact request body;
  graphile  `graphile_worker.add_jobs(ARRAY[...])`, one job spec per endpoint URL, same payload.

Commands:
  burst   N events, B per transaction, as fast as one connection goes (the pre-loaded outbox);
  steady  open loop: events scheduled at a fixed rate for a fixed time over C connections, each
          event committed in its own transaction whether or not earlier ones are done (SIGTERM
          ends it early: no new events, the results so far are written);
  idle    N serial events to a receiver in this process: publish, wait until it arrives, pause.

Every command writes `<key> <commit unix time>` per event to `--out` (the key is what the sink
sees in `webhook-id`: hookd's event id, or the event number for the peers) and prints one JSON
summary line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

import asyncpg
import uvloop
from aiohttp import web
from payload import DEFAULT_BODY_BYTES, EVENT_TYPE, payload_json, request_body

GRAPHILE_TASK = "webhook"
PGQUEUER_ENTRYPOINT = "webhook"


class Publisher:
    """How one system publishes; `one` and `batch` run inside the caller's transaction."""

    def __init__(self, mode: str, urls: Sequence[str], body_bytes: int, event_type: str) -> None:
        self.mode = mode
        self.urls = list(urls)
        self.body_bytes = body_bytes
        self.event_type = event_type
        self._queries: dict[int, Any] = {}

    def _jobs(self, no: int) -> list[str]:
        body = request_body(payload_json(no, self.body_bytes), self.event_type, no).decode()
        return [json.dumps({"url": u, "id": no, "body": body}) for u in self.urls]

    async def one(self, conn: asyncpg.Connection, no: int) -> int:
        """Publish event number `no`; return its key."""
        if self.mode == "hookd":
            key: int = await conn.fetchval(
                "SELECT hookd.publish(event_type => $1, payload => $2::jsonb)",
                self.event_type,
                payload_json(no, self.body_bytes),
            )
            return key
        await self._peer_jobs(conn, self._jobs(no))
        return no

    async def batch(self, conn: asyncpg.Connection, first: int, count: int) -> list[int]:
        """Publish events `first` .. `first + count - 1`; return their keys."""
        if self.mode == "hookd":
            rows = await conn.fetch(
                "SELECT hookd.publish(event_type => $1, payload => x::jsonb) AS id"
                " FROM unnest($2::text[]) WITH ORDINALITY AS t(x, n) ORDER BY n",
                self.event_type,
                [payload_json(first + i, self.body_bytes) for i in range(count)],
            )
            return [int(r["id"]) for r in rows]
        jobs: list[str] = []
        for i in range(count):
            jobs.extend(self._jobs(first + i))
        await self._peer_jobs(conn, jobs)
        return list(range(first, first + count))

    async def _peer_jobs(self, conn: asyncpg.Connection, jobs: list[str]) -> None:
        if self.mode == "graphile":
            await conn.fetchval(
                "SELECT count(*) FROM graphile_worker.add_jobs(ARRAY("
                f"SELECT ROW('{GRAPHILE_TASK}', p, NULL, NULL, NULL, NULL, NULL, NULL)"
                "::graphile_worker.job_spec FROM unnest($1::json[]) AS p))",
                jobs,
            )
        elif self.mode == "pgqueuer":
            queries = self._queries.get(id(conn))
            if queries is None:
                from pgqueuer.db import AsyncpgDriver
                from pgqueuer.queries import Queries

                queries = self._queries[id(conn)] = Queries(AsyncpgDriver(conn))
            await queries.enqueue(
                [PGQUEUER_ENTRYPOINT] * len(jobs), [j.encode() for j in jobs], [0] * len(jobs)
            )
        else:
            raise SystemExit(f"unknown mode {self.mode!r}")


def _write(path: str, rows: list[tuple[int, float]]) -> None:
    with open(path, "w") as f:
        f.writelines(f"{k} {t:.6f}\n" for k, t in rows)


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    data = sorted(values)
    pos = (len(data) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


async def burst(pub: Publisher, dsn: str, events: int, batch: int, first: int, out: str) -> dict:
    """Publish `events` events, `batch` per transaction, on one connection."""
    conn = await asyncpg.connect(dsn, timeout=10)
    rows: list[tuple[int, float]] = []
    t0 = time.perf_counter()
    try:
        done = 0
        while done < events:
            n = min(batch, events - done)
            async with conn.transaction():
                keys = await pub.batch(conn, first + done, n)
            at = time.time()
            rows.extend((k, at) for k in keys)
            done += n
    finally:
        await conn.close()
    _write(out, rows)
    return {"events": len(rows), "seconds": round(time.perf_counter() - t0, 3)}


async def steady(
    pub: Publisher,
    dsn: str,
    rate: float,
    seconds: float,
    connections: int,
    first: int,
    out: str,
) -> dict:
    """Open loop: event i is due at start + i / rate; each commits in its own transaction."""
    total = max(1, int(rate * seconds))
    conns = [await asyncpg.connect(dsn, timeout=10) for _ in range(connections)]
    rows: list[tuple[int, float]] = []
    lags: list[float] = []
    errors = 0
    nxt = 0
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    stopping = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)

    async def worker(conn: asyncpg.Connection) -> None:
        nonlocal nxt, errors
        while True:
            i = nxt
            if i >= total or stopping.is_set():
                return
            nxt += 1
            due = start + i / rate
            wait = due - loop.time()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), wait)
                if stopping.is_set():
                    return
            lags.append(loop.time() - due)
            try:
                async with conn.transaction():
                    key = await pub.one(conn, first + i)
            except (asyncpg.PostgresError, OSError) as exc:
                errors += 1
                sys.stderr.write(f"publish failed: {exc}\n")
                continue
            rows.append((key, time.time()))

    try:
        await asyncio.gather(*(worker(c) for c in conns))
    finally:
        for c in conns:
            await c.close()
    elapsed = loop.time() - start
    _write(out, rows)
    p99 = _quantile(lags, 0.99)
    return {
        "events": len(rows),
        "scheduled": nxt,
        "errors": errors,
        "offered_per_s": rate,
        "achieved_per_s": round(len(rows) / elapsed, 1) if elapsed > 0 else None,
        "seconds": round(elapsed, 3),
        "schedule_lag_p99_ms": round(p99 * 1000, 2) if p99 is not None else None,
        "schedule_lag_max_ms": round(max(lags) * 1000, 2) if lags else None,
    }


async def idle(
    pub: Publisher, dsn: str, events: int, gap_s: float, port: int, max_s: float, out: str
) -> dict:
    """Serial events to a receiver here: publish, wait (<= 5 s) for it, pause `gap_s`."""
    arrived: dict[int, float] = {}
    waiters: dict[int, asyncio.Future[float]] = {}

    async def handle(request: web.Request) -> web.Response:
        at = time.time()
        await request.read()
        key = int(request.headers.get("webhook-id", "_0").rsplit("_", 1)[1])
        arrived.setdefault(key, at)
        fut = waiters.pop(key, None)
        if fut is not None and not fut.done():
            fut.set_result(at)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    conn = await asyncpg.connect(dsn, timeout=10)
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    rows: list[tuple[int, float]] = []
    missing = 0
    deadline = loop.time() + max_s
    try:
        for no in range(1, events + 1):
            if loop.time() > deadline:
                break
            fut: asyncio.Future[float] = loop.create_future()
            async with conn.transaction():
                key = await pub.one(conn, no)
                waiters[key] = fut
            committed = time.time()
            rows.append((key, committed))
            if key in arrived and not fut.done():
                # It arrived before COMMIT returned: PostgreSQL wakes listeners during the commit.
                fut.set_result(arrived[key])
            try:
                at = await asyncio.wait_for(fut, 5.0)
                latencies.append(at - committed)
            except TimeoutError:
                missing += 1
            waiters.pop(key, None)
            await asyncio.sleep(gap_s)
    finally:
        await conn.close()
        await runner.cleanup()
    _write(out, rows)

    def ms(v: float | None) -> float | None:
        return round(v * 1000, 3) if v is not None else None

    return {
        "events": len(rows),
        "received": len(latencies),
        "missing": missing,
        "gap_ms": gap_s * 1000,
        "latency": {
            "n": len(latencies),
            "p50_ms": ms(_quantile(latencies, 0.5)),
            "p90_ms": ms(_quantile(latencies, 0.9)),
            "p99_ms": ms(_quantile(latencies, 0.99)),
            "max_ms": ms(max(latencies) if latencies else None),
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse arguments, run one command, print its JSON summary."""
    p = argparse.ArgumentParser(prog="bench/producer.py", description=__doc__)
    p.add_argument("--mode", choices=("hookd", "pgqueuer", "graphile"), required=True)
    p.add_argument("--dsn", required=True)
    p.add_argument("--url", action="append", default=[], help="endpoint URL (peers: one job each)")
    p.add_argument("--body-bytes", type=int, default=DEFAULT_BODY_BYTES)
    p.add_argument("--event-type", default=EVENT_TYPE)
    p.add_argument("--first", type=int, default=1, help="number of the first event")
    p.add_argument("--out", required=True, help="file for `<key> <commit time>` lines")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("burst")
    b.add_argument("--events", type=int, required=True)
    b.add_argument("--batch", type=int, default=5000)
    s = sub.add_parser("steady")
    s.add_argument("--rate", type=float, required=True, help="events per second")
    s.add_argument("--seconds", type=float, required=True)
    s.add_argument("--connections", type=int, default=16)
    i = sub.add_parser("idle")
    i.add_argument("--events", type=int, required=True)
    i.add_argument("--gap-ms", type=float, default=10.0)
    i.add_argument("--port", type=int, required=True)
    i.add_argument("--max-s", type=float, default=120.0)
    args = p.parse_args(argv)
    if args.mode != "hookd" and not args.url:
        p.error("--url is required for the peers")
    pub = Publisher(args.mode, args.url, args.body_bytes, args.event_type)
    if args.command == "burst":
        coro = burst(pub, args.dsn, args.events, args.batch, args.first, args.out)
    elif args.command == "steady":
        coro = steady(
            pub, args.dsn, args.rate, args.seconds, args.connections, args.first, args.out
        )
    else:
        coro = idle(pub, args.dsn, args.events, args.gap_ms / 1000, args.port, args.max_s, args.out)
    result = uvloop.run(coro)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
