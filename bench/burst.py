"""Burst drain: N events x M endpoints already in the outbox when the worker starts.

For each system (hookd, then the peers), in a fresh database:
  1. M endpoints on the sink's loopback hosts (round-robin, one URI each);
  2. the producer loads N events (5,000 per transaction): hookd.publish for hookd, M jobs per
     event for the peers (they have no fan-out);
  3. the worker starts; the meter runs from its "ready" line until nothing is outstanding
     (polled every 0.2 s, bounded by --drain-timeout); then the worker is stopped (SIGTERM);
  4. the sink's log of the run is tallied against the producer's commits.

Deliveries/s = delivered / (the sink's last 2xx receipt - the worker's ready time).
Commit→delivered is the producer's commit time to the sink's receipt; for a pre-loaded burst it is
mostly queueing. The ceilings run around the systems: the raw aiohttp client (same bodies, same
per-origin limit, no database) before and after, and the raw asyncpg claim-and-acknowledge loop
(bench/raw_db.py, same tables, no HTTP).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench import raw_client
from bench.common import BenchError, ratio
from bench.ledger import endpoint_path, read_commits, read_requests, tally
from bench.meter import Meter
from bench.pg import SUT_ROLE, Postgres
from bench.procs import Child
from bench.sink import NginxSink
from bench.systems import Hookd, System, Tuning, run_producer

log = logging.getLogger("bench.burst")

LOAD_BATCH = 5000
"""Events per loading transaction."""
POLL_S = 0.2
"""How often the drain is checked, seconds."""


@dataclass(frozen=True, slots=True)
class BurstParams:
    """Sizes and limits of one burst run."""

    events: int = 50_000
    endpoints: int = 4
    per_host: int = 64
    """Concurrent requests per origin, for hookd (per_host_limit and per_endpoint_limit), the raw
    client and the peers' HTTP clients alike."""
    body_bytes: int = 768
    drain_timeout_s: float = 900.0
    """Longest wait for a worker to drain; anything left then is counted missing."""


async def _wait_drained(
    system: System, conn: asyncpg.Connection, worker: Child, timeout_s: float
) -> bool:
    """Poll (EXISTS, cheap) until nothing is left; False on timeout or if the worker died."""
    deadline = time.monotonic() + timeout_s
    while await system.busy(conn):
        if time.monotonic() > deadline or not worker.running:
            log.warning("%s: drain not finished (worker running: %s)", system.name, worker.running)
            return False
        await asyncio.sleep(POLL_S)
    return True


async def run_system(
    system: System,
    pg: Postgres,
    sink: NginxSink,
    monitor: asyncpg.Connection,
    workdir: Path,
    p: BurstParams,
) -> dict[str, Any]:
    """One system's burst; returns its record."""
    db = f"burst_{system.mode}"
    await system.create(pg, db, workdir)
    urls = sink.endpoint_urls(p.endpoints)
    await system.add_endpoints(pg, db, workdir, urls)
    t0 = time.perf_counter()
    loaded, commits_path = await run_producer(
        system,
        pg,
        db,
        workdir,
        f"burst-{system.mode}",
        urls,
        ["burst", f"--events={p.events}", f"--batch={LOAD_BATCH}"],
        body_bytes=p.body_bytes,
    )
    load_s = time.perf_counter() - t0
    log.info("%s: loaded %d events in %.1f s", system.name, loaded["events"], load_s)
    conn = await asyncpg.connect(pg.dsn_for(db), timeout=10)
    await monitor.execute("CHECKPOINT")  # the load's dirty pages are not the drain's to write
    await sink.cut_log()
    worker = system.worker(pg, db, workdir, f"{system.mode}-burst")
    meter = Meter(monitor, db, pg.pid, lambda: worker.pid, sink.pids)
    try:
        async with worker:
            await meter.start()
            drained = await _wait_drained(system, conn, worker, p.drain_timeout_s)
            await meter.stop()
            exit_code = await worker.stop()
    finally:
        await conn.close()
    log_path = await sink.cut_log(f"burst-{system.mode}")
    ledger = tally(
        read_commits([commits_path]), read_requests([log_path]), [endpoint_path(u) for u in urls]
    )
    last = ledger["last_delivery_unix"]
    drain_s = (last - worker.ready_unix_s) if last is not None else None
    delivered = ledger["delivered"]
    figures = await meter.figures(delivered, worker.peak_rss_bytes)
    await pg.drop_database(db)
    rate = round(delivered / drain_s, 1) if drain_s else None
    log.info("%s: %s deliveries/s, %d missing", system.name, rate, ledger["missing"])
    return {
        "system": system.name,
        "load_s": round(load_s, 3),
        "drain_s": round(drain_s, 3) if drain_s is not None else None,
        "deliveries_per_s": rate,
        **figures,
        "ledger": {k: v for k, v in ledger.items() if k != "per_endpoint"},
        "latency": ledger["latency"],
        "exit_code": exit_code,
        "log_warnings": worker.warnings,
        "log_errors": worker.errors,
        "timed_out": not drained,
        "void": ledger["missing"] != 0 or not drained or exit_code not in system.clean_exits,
    }


async def raw_db_ceiling(
    pg: Postgres, monitor: asyncpg.Connection, sink: NginxSink, workdir: Path, p: BurstParams
) -> dict[str, Any]:
    """bench/raw_db.py on hookd's schema with the burst's events and endpoints."""
    system = Hookd(Tuning())
    db = "burst_rawdb"
    await system.create(pg, db, workdir)
    await system.add_endpoints(pg, db, workdir, sink.endpoint_urls(p.endpoints))
    await run_producer(
        system,
        pg,
        db,
        workdir,
        "burst-rawdb",
        [],
        ["burst", f"--events={p.events}", f"--batch={LOAD_BATCH}"],
        body_bytes=p.body_bytes,
    )
    result: dict[str, Any] = {}
    finished = asyncio.Event()

    def on_line(text: str) -> None:
        if text.startswith("{"):
            result.update(orjson.loads(text))
            finished.set()

    child = Child(
        "raw-db",
        [sys.executable, "-m", "bench.raw_db", "--dsn", pg.dsn_for(db, SUT_ROLE)],
        workdir,
        ready_text="ready",
        cwd=raw_client.REPO_ROOT,
        on_line=on_line,
    )
    meter = Meter(monitor, db, pg.pid, lambda: child.pid, list)
    async with child:
        await meter.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(finished.wait(), p.drain_timeout_s)
        await meter.stop()
        code = await child.stop()
    if code != 0 or "deliveries" not in result:
        raise BenchError(f"raw asyncpg ceiling failed (status {code}); see {child.log_path}")
    figures = await meter.figures(int(result["deliveries"]))
    await pg.drop_database(db)
    figures.pop("peak_rss_mib", None)
    return {**result, **figures, "expected": p.events * p.endpoints}


async def raw_client_ceiling(sink: NginxSink, p: BurstParams) -> dict[str, Any]:
    """The raw aiohttp client on the burst's endpoint URLs (its requests are not ledgered)."""
    await sink.cut_log()
    result = await raw_client.run_subprocess(
        sink.endpoint_urls(p.endpoints), p.events, p.per_host, p.body_bytes, p.drain_timeout_s
    )
    await sink.cut_log()
    return result


def summarise(
    records: dict[str, dict[str, Any]],
    raw_before: dict[str, Any] | None,
    raw_after: dict[str, Any] | None,
) -> dict[str, Any]:
    """Ratios of hookd's burst to the ceilings and peers."""
    raws = [r["requests_per_s"] for r in (raw_before, raw_after) if r and r.get("requests_per_s")]
    raw_mean = sum(raws) / len(raws) if raws else None
    hookd = records.get("hookd", {}).get("deliveries_per_s")
    peers = {
        k: v.get("deliveries_per_s") for k, v in records.items() if k != "hookd" and v is not None
    }
    best_peer = max((v for v in peers.values() if v), default=None)
    return {
        "raw_requests_per_s": round(raw_mean, 1) if raw_mean else None,
        "hookd_ratio_to_raw": ratio(hookd, raw_mean, 3),
        "best_peer_deliveries_per_s": best_peer,
        "hookd_ratio_to_best_peer": ratio(hookd, best_peer, 3),
    }
