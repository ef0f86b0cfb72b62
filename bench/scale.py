"""Scale scenarios: one event for 10,000 endpoints, a cold start on a huge backlog, status cost.

`fanout` (`--only fanout`): 10,000 endpoints (inserted with one SQL statement, spread over the four
sink hosts, each with its own path) take `fanout.*`; the daemon starts, idles `idle_s` (its cost
with 10,000 endpoints in its cache), then one event is published. Reported: commit → first and
last delivery, deliveries/s, the fan-out pieces (deliveries.created_at is the fan-out
transaction's start, so the distinct values count the transactions and the largest group is the
most one statement created), daemon RSS before and at the peak, CPU, and the ledger (10,000
expected, duplicates).

`coldstart` (`--only coldstart`): a backlog of `deliveries` due pending deliveries across
`endpoints` endpoints (four hosts), built with INSERT ... SELECT generate_series as if the daemon
had been stopped for a day, and one more endpoint on host 1 for fresh events. The daemon starts;
for `seconds` a producer publishes `fresh_rate` fresh events/s to the fresh endpoint. Reported:
how soon every backlog endpoint got its first delivery and how evenly the window's deliveries
were spread (per endpoint min / max and Jain's index, per host shares), the most requests in
flight per host sampled from the daemon's gauge (against the per-host limit), daemon RSS over
time, deliveries/s, duplicates, and the fresh events' commit → delivered latency and ledger. The
backlog is not drained to the end (a million deliveries take minutes here): the figures are those
of the window.

`status` (`--only status`): the status figures query with 100,000 and 1,000,000 pending
deliveries: the query of schema version 21 (every count reads its whole partial index), the cheap
one the daemon now reads (exact up to 10,000, estimates above) and `hookd status --exact`.
Median and p90 of `status_runs` runs each, after VACUUM ANALYZE.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import rss_bytes
from bench.hookd_proc import HookdProcess
from bench.ledger import endpoint_path, read_requests, tally
from bench.meter import Meter
from bench.payload import payload_json
from bench.pg import Postgres
from bench.sink import HOOK_PATH, NginxSink
from bench.systems import Hookd
from hookd.signing import generate_secret
from hookd.store import QUERIES, STATUS_EXACT_BELOW

log = logging.getLogger("bench.scale")

SAMPLE_S = 0.25


@dataclass(frozen=True, slots=True)
class FanOutParams:
    endpoints: int = 10_000
    idle_s: float = 6.0
    timeout_s: float = 300.0
    body_bytes: int = 768


@dataclass(frozen=True, slots=True)
class ColdStartParams:
    deliveries: int = 1_000_000
    endpoints: int = 1_000
    seconds: float = 60.0
    fresh_rate: float = 20.0
    body_bytes: int = 768


_ENDPOINTS_SQL = """
INSERT INTO hookd.endpoints (url, event_types, secret, created_at)
SELECT u, $2::text[], $3, now() - interval '2 days' FROM unnest($1::text[]) u
"""


async def _bulk_endpoints(conn: asyncpg.Connection, urls: list[str], event_types: str) -> None:
    """Endpoints for `urls` in one statement (one shared secret: the sink does not verify)."""
    await conn.execute(_ENDPOINTS_SQL, urls, [event_types], generate_secret())


class _Sampler:
    """RSS and in-flight requests per host of a daemon, every SAMPLE_S, in a task."""

    def __init__(self, daemon: HookdProcess) -> None:
        self.daemon = daemon
        self.samples: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            metrics = await self.daemon.metrics()
            hosts = {
                k.split('"')[1]: v
                for k, v in metrics.items()
                if k.startswith("hookd_requests_in_flight{")
            }
            self.samples.append(
                {"t": time.time(), "rss": rss_bytes(self.daemon.pid), "in_flight": hosts}
            )
            await asyncio.sleep(SAMPLE_S)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def peak_rss_mib(self, since: float = 0.0) -> float | None:
        v = [s["rss"] for s in self.samples if s["rss"] and s["t"] >= since]
        return round(max(v) / 2**20, 1) if v else None

    def rss_mib_at(self, t: float) -> float | None:
        v = [s["rss"] for s in self.samples if s["rss"] and s["t"] <= t]
        return round(v[-1] / 2**20, 1) if v else None

    def peak_in_flight(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in self.samples:
            for host, n in s["in_flight"].items():
                out[host] = max(out.get(host, 0.0), n)
        return out


async def fan_out(
    hookd: Hookd,
    pg: Postgres,
    sink: NginxSink,
    monitor: asyncpg.Connection,
    workdir: Path,
    p: FanOutParams,
) -> dict[str, Any]:
    """One event for `p.endpoints` endpoints; return the record."""
    db = "fanout"
    await hookd.create(pg, db, workdir)
    urls = sink.endpoint_urls(p.endpoints)
    conn = await asyncpg.connect(pg.dsn_for(db), timeout=10)
    try:
        await _bulk_endpoints(conn, urls, "fanout.*")
        await sink.cut_log()
        daemon = hookd.worker(pg, db, workdir, "hookd-fanout")
        meter = Meter(monitor, db, pg.pid, lambda: daemon.pid, sink.pids)
        sampler = _Sampler(daemon)
        async with daemon:
            sampler.start()
            idle_from = time.time()
            cpu0 = daemon.cpu_s()
            await asyncio.sleep(p.idle_s)
            idle_cpu_per_s = (daemon.cpu_s() - cpu0) / (time.time() - idle_from)
            await meter.start()
            async with conn.transaction():
                event_id = await conn.fetchval(
                    "SELECT hookd.publish('fanout.big', $1::jsonb)", payload_json(1, p.body_bytes)
                )
            committed = time.time()
            deadline = time.monotonic() + p.timeout_s
            delivered = 0
            while time.monotonic() < deadline and daemon.running:
                delivered = await conn.fetchval(
                    "SELECT count(*) FROM hookd.deliveries WHERE state = 'delivered'"
                )
                if delivered >= p.endpoints:
                    break
                await asyncio.sleep(0.1)
            await meter.stop()
            await sampler.stop()
            exit_code = await daemon.stop()
        pieces = await conn.fetch(
            "SELECT created_at, count(*) AS n FROM hookd.deliveries WHERE event_id = $1"
            " GROUP BY created_at ORDER BY created_at",
            event_id,
        )
        fanned = await conn.fetchval(
            "SELECT extract(epoch FROM fanned_out_at - created_at)::float8 FROM hookd.events"
            " WHERE id = $1",
            event_id,
        )
    finally:
        await conn.close()
    log_path = await sink.cut_log("fanout")
    led = tally({event_id: committed}, read_requests([log_path]), [endpoint_path(u) for u in urls])
    led.pop("per_endpoint")
    figures = await meter.figures(led["delivered"], daemon.peak_rss_bytes)
    await pg.drop_database(db)
    last = led.get("last_delivery_unix")
    first = led.get("first_delivery_unix")
    all_s = last - committed if last else None
    return {
        "params": {"endpoints": p.endpoints, "body_bytes": p.body_bytes},
        "fan_out_max_deliveries": daemon.settings.get("daemon", {}).get(
            "fan_out_max_deliveries", 5000
        ),
        "pieces": len(pieces),
        "largest_piece": max((r["n"] for r in pieces), default=0),
        "fanned_out_s": round(fanned, 3) if fanned is not None else None,
        "first_delivery_s": round(first - committed, 3) if first else None,
        "all_delivered_s": round(all_s, 3) if all_s else None,
        "deliveries_per_s": round(led["delivered"] / all_s, 1) if all_s else None,
        "rss_idle_mib": sampler.rss_mib_at(committed),
        "peak_rss_mib": figures["peak_rss_mib"],
        "idle_cpu_cores_with_endpoints": round(idle_cpu_per_s, 4),
        "ledger": led,
        "figures": figures,
        "exit_code": exit_code,
        "void": bool(led["missing"] or led["duplicates"] or exit_code not in (0, None)),
    }


def _jain(values: list[int]) -> float | None:
    """Jain's fairness index: 1 when all equal, 1/n when one takes all."""
    if not values or not any(values):
        return None
    return round(sum(values) ** 2 / (len(values) * sum(v * v for v in values)), 4)


async def cold_start(
    hookd: Hookd,
    pg: Postgres,
    sink: NginxSink,
    monitor: asyncpg.Connection,
    workdir: Path,
    p: ColdStartParams,
) -> dict[str, Any]:
    """A daemon started on a backlog of `p.deliveries` due deliveries; return the record."""
    db = "coldstart"
    await hookd.create(pg, db, workdir)
    urls = sink.endpoint_urls(p.endpoints)
    fresh_url = f"http://{sink.hosts[0]}:{sink.port}{HOOK_PATH}/fresh"
    per_event = p.endpoints
    events = max(1, p.deliveries // per_event)
    conn = await asyncpg.connect(pg.dsn_for(db), timeout=10)
    try:
        await _bulk_endpoints(conn, urls, "cold.*")
        await _bulk_endpoints(conn, [fresh_url], "fresh.*")
        t0 = time.perf_counter()
        await conn.execute(
            "INSERT INTO hookd.events (event_type, payload, created_at, fanned_out_at)"
            " SELECT 'cold.backlog', $2::jsonb, now() - interval '1 day',"
            "        now() - interval '1 day'"
            " FROM generate_series(1, $1)",
            events,
            payload_json(1, p.body_bytes),
        )
        await conn.execute(
            "INSERT INTO hookd.deliveries (event_id, endpoint_id, next_attempt_at, created_at,"
            " event_created_at)"
            " SELECT e.id, ep.id, now() - interval '1 day', now() - interval '1 day', e.created_at"
            " FROM hookd.events e CROSS JOIN hookd.endpoints ep"
            " WHERE e.event_type = 'cold.backlog' AND 'cold.*' = ANY (ep.event_types)"
        )
        await conn.execute("VACUUM ANALYZE hookd.events")
        await conn.execute("VACUUM ANALYZE hookd.deliveries")
        build_s = time.perf_counter() - t0
        backlog = await conn.fetchval("SELECT count(*) FROM hookd.deliveries")
        log.info("coldstart: backlog of %d deliveries built in %.0f s", backlog, build_s)
        await monitor.execute("CHECKPOINT")
        await sink.cut_log()
        daemon = hookd.worker(pg, db, workdir, "hookd-coldstart")
        meter = Meter(monitor, db, pg.pid, lambda: daemon.pid, sink.pids)
        sampler = _Sampler(daemon)
        fresh: dict[int, float] = {}
        async with daemon:
            started = daemon.ready_unix_s or time.time()
            sampler.start()
            await meter.start()
            end = time.monotonic() + p.seconds
            while time.monotonic() < end and daemon.running:
                async with conn.transaction():
                    eid = await conn.fetchval(
                        "SELECT hookd.publish('fresh.ping', $1::jsonb)", payload_json(2, 200)
                    )
                fresh[eid] = time.time()
                await asyncio.sleep(1.0 / p.fresh_rate)
            stopped_publishing = time.time()
            # The last fresh events: bounded wait until they are delivered.
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline:
                left = await conn.fetchval(
                    "SELECT count(*) FROM hookd.deliveries d JOIN hookd.endpoints ep"
                    " ON ep.id = d.endpoint_id WHERE ep.url = $1 AND d.state <> 'delivered'",
                    fresh_url,
                )
                unfanned = await conn.fetchval(
                    "SELECT count(*) FROM hookd.events WHERE fanned_out_at IS NULL"
                )
                if not left and not unfanned:
                    break
                await asyncio.sleep(0.1)
            await meter.stop()
            await sampler.stop()
            exit_code = await daemon.stop()
        window_end = stopped_publishing
        delivered_backlog = await conn.fetchval(
            "SELECT count(*) FROM hookd.deliveries WHERE state = 'delivered'"
            " AND event_id <= (SELECT max(id) FROM hookd.events WHERE event_type = 'cold.backlog')"
        )
        backlog_events = {
            r["id"]: r["t"]
            for r in await conn.fetch(
                "SELECT id, extract(epoch FROM created_at)::float8 AS t FROM hookd.events"
                " WHERE event_type = 'cold.backlog'"
            )
        }
    finally:
        await conn.close()
    log_path = await sink.cut_log("coldstart")
    requests = read_requests([log_path])
    paths = [endpoint_path(u) for u in urls]
    fresh_led = tally(fresh, requests, [endpoint_path(fresh_url)])
    fresh_led.pop("per_endpoint")
    cold = tally(backlog_events, requests, paths)
    per = cold.pop("per_endpoint")
    cold.pop("missing")  # the backlog is not drained to its end on purpose
    cold.pop("latency")  # a day old by construction
    first_by_endpoint = {}
    counts_by_window: dict[float, list[int]] = {5.0: [], 10.0: [], p.seconds: []}
    per_host: dict[str, int] = {}
    for r in requests:
        if r.uri in per and 200 <= r.status < 300:
            first_by_endpoint[r.uri] = min(first_by_endpoint.get(r.uri, r.at), r.at)
    for w in counts_by_window:
        n: dict[str, int] = dict.fromkeys(paths, 0)
        for r in requests:
            if r.uri in n and 200 <= r.status < 300 and r.at <= started + w:
                n[r.uri] += 1
        counts_by_window[w] = list(n.values())
    for i, u in enumerate(paths):
        host = urls[i].split("/")[2].split(":")[0]
        per_host[host] = per_host.get(host, 0) + per[u]["delivered"]
    firsts = sorted(t - started for t in first_by_endpoint.values())
    figures = await meter.figures(cold["delivered"] + fresh_led["delivered"], daemon.peak_rss_bytes)
    await pg.drop_database(db)
    window_s = window_end - started
    return {
        "params": {
            "deliveries": backlog,
            "endpoints": p.endpoints,
            "hosts": len(sink.hosts),
            "per_host": hookd.tuning.per_host,
            "seconds": p.seconds,
            "fresh_rate": p.fresh_rate,
            "body_bytes": p.body_bytes,
        },
        "build_s": round(build_s, 1),
        "delivered_in_window": delivered_backlog,
        "deliveries_per_s": round(cold["delivered"] / window_s, 1) if window_s > 0 else None,
        "endpoints_served": len(first_by_endpoint),
        "first_delivery_per_endpoint_s": {
            "p50": round(statistics.median(firsts), 3) if firsts else None,
            "max": round(firsts[-1], 3) if firsts else None,
        },
        "per_endpoint_delivered": {
            f"first_{int(w)}_s": {
                "min": min(v) if v else None,
                "max": max(v) if v else None,
                "jain": _jain(v),
            }
            for w, v in counts_by_window.items()
        },
        "per_host_delivered": per_host,
        "peak_requests_in_flight_per_host": sampler.peak_in_flight(),
        "rss_mib": {
            "at_10_s": sampler.rss_mib_at(started + 10),
            "at_30_s": sampler.rss_mib_at(started + 30),
            "at_end": sampler.rss_mib_at(window_end),
            "peak": sampler.peak_rss_mib(),
        },
        "peak_rss_mib": figures["peak_rss_mib"],
        "fresh": fresh_led,
        "backlog_ledger": cold,
        "figures": figures,
        "exit_code": exit_code,
        "void": bool(
            fresh_led["missing"]
            or fresh_led["duplicates"]
            or cold["duplicates"]
            or exit_code not in (0, None)
        ),
    }


# The status query of schema version 21, for comparison.
_STATUS_V21 = """
SELECT
    (SELECT count(*) FROM hookd.events WHERE fanned_out_at IS NULL) AS outbox_backlog,
    (SELECT count(*) FROM hookd.deliveries WHERE state = 'pending') AS pending,
    (SELECT count(*) FROM hookd.deliveries WHERE state = 'paused') AS paused,
    (SELECT count(*) FROM hookd.deliveries WHERE state = 'failed') AS failed,
    (SELECT extract(epoch FROM now() - min(created_at))::float8
       FROM hookd.deliveries WHERE state = 'pending') AS oldest_pending_s,
    (SELECT count(*) FROM hookd.attempts
       WHERE started_at > now() - interval '1 hour'
         AND (status IS NULL OR status NOT BETWEEN 200 AND 299)) AS failed_attempts_last_hour,
    (SELECT count(*) FROM hookd.endpoints WHERE NOT enabled) AS disabled_endpoints,
    (SELECT count(*) FROM hookd.endpoints WHERE breaker_open_until IS NOT NULL) AS open_breakers
"""


async def status_cost(
    pg: Postgres, runs: int = 20, sizes: tuple[int, ...] = (100_000, 1_000_000)
) -> dict[str, Any]:
    """Time the status figures query at each backlog size; return the record."""
    db = "status"
    await pg.hookd_database(db)
    conn = await asyncpg.connect(pg.dsn_for(db), timeout=10)
    out: dict[str, Any] = {"exact_below": STATUS_EXACT_BELOW, "runs": runs, "sizes": {}}
    try:
        event_id = await conn.fetchval(
            "INSERT INTO hookd.events (event_type, payload, fanned_out_at)"
            " VALUES ('x.y', '{}', now()) RETURNING id"
        )
        done = 0
        for n in sizes:
            await conn.execute(
                "INSERT INTO hookd.deliveries (event_id, endpoint_id, event_created_at)"
                " SELECT $1, g, now() FROM generate_series($2::bigint, $3::bigint) g",
                event_id,
                done + 1,
                n,
            )
            done = n
            await conn.execute("VACUUM ANALYZE hookd.deliveries")
            size: dict[str, Any] = {}
            for name, sql, args in (
                ("v21", _STATUS_V21, ()),
                ("cheap", QUERIES["status_counts"], (STATUS_EXACT_BELOW, False)),
                ("exact", QUERIES["status_counts_exact"], ()),
            ):
                times = []
                row = None
                for _ in range(runs):
                    t = time.perf_counter()
                    row = await conn.fetchrow(sql, *args)
                    times.append(time.perf_counter() - t)
                assert row is not None
                times.sort()
                size[name] = {
                    "median_ms": round(statistics.median(times) * 1000, 2),
                    "p90_ms": round(times[int(0.9 * (len(times) - 1))] * 1000, 2),
                    "pending_reported": row["pending"],
                }
            out["sizes"][str(n)] = size
            log.info("status with %d pending: %s", n, size)
    finally:
        await conn.close()
    await pg.drop_database(db)
    out["void"] = False
    return out
