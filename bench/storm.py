"""Retry storm: one host fails for a while with a huge backlog for it, then recovers.

hookd has four endpoints: e1-e3 on hosts 1-3 take `order.*` events, e4 on host 4 takes `storm.*`.
nginx answers 500 on host 4 from the start (HTTP 500: a plain failure, retried on schedule; 503 or
429 would also halve the endpoint's concurrency, which only slows the storm down). In order:

  1. the daemon starts; a background producer offers `background_rate` order events/s (3
     deliveries each) until the storm is over;
  2. after `warmup_s`, `pending` storm events are published at once (5,000 per transaction): each
     becomes one delivery for e4, attempted at once and failing;
  3. `outage_s` after the storm was published, host 4 recovers (nginx answers 204 again);
  4. the scenario ends when every storm delivery is delivered (bounded).

Settings for this run only: retry schedule [0, `retry_delay_s`] (repeating), jitter 0 (so each
retry's due time is known exactly from the attempt log), circuit breaker threshold 1,000,000 (so
every failed delivery waits for its own retry timer rather than the breaker's probe: the case issue
3 point 10b asks about, "at least 100,000 pending retries"), status figures (and with them the
hookd_retry_timers gauge) every 2 s.

Reported: peak retry timers (hookd_retry_timers) and pending storm deliveries; the daemon's memory
before the storm and at the peak, and the growth per pending retry; timer lateness = each retry
attempt's start - (the previous attempt's end + retry_delay_s), p50/p99/max over all retries (it
includes the outcome write, the timer tick, the claim and the wait for a connection slot); time from
recovery to the last storm delivery; the background hosts' p99 before and during the storm; the
usual ledger, CPU and database figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import latency_summary_ms, rss_bytes
from bench.hookd_proc import HookdProcess
from bench.ledger import endpoint_path, read_commits, read_requests, tally
from bench.meter import Meter
from bench.pg import Postgres
from bench.sink import NginxSink
from bench.systems import Hookd, run_producer

log = logging.getLogger("bench.storm")

SAMPLE_S = 1.0
"""How often memory, timers and the storm's pending count are sampled (the count reads up to
`pending` index entries, so not too often)."""


@dataclass(frozen=True, slots=True)
class StormParams:
    """Sizes and times of the storm."""

    pending: int = 100_000
    outage_s: float = 60.0
    retry_delay_s: float = 75.0
    """Longer than the first attempts of `pending` deliveries take (one endpoint, 64 slots: about
    2,000 failing attempts/s here), so every storm delivery waits for its retry at the peak."""
    background_rate: float = 100.0
    warmup_s: float = 5.0
    drain_timeout_s: float = 600.0
    body_bytes: int = 768


def daemon_settings(p: StormParams) -> dict[str, dict[str, Any]]:
    """hookd's configuration for the storm (see the module docstring)."""
    return {
        "retry": {
            "schedule_s": [0.0, p.retry_delay_s],
            "jitter": 0.0,
            "max_attempts": 50,
            "max_age_s": 86400.0,
        },
        "breaker": {"failure_threshold": 1_000_000},
        # hookd_retry_timers is refreshed with the status figures; their query counts pending
        # deliveries (85 ms with 100,000 pending), so not more often than every 2 s.
        "admin": {"stats_interval_s": 2.0},
        "log": {"failed_attempts_per_s": 1.0},
    }


_LATENESS_SQL = """
WITH a AS (
    SELECT a.started_at, a.attempt,
           lag(a.started_at) OVER w AS prev_start,
           lag(a.duration_s) OVER w AS prev_duration
    FROM hookd.attempts a
    JOIN hookd.deliveries d ON d.id = a.delivery_id
    WHERE d.endpoint_id = $1
    WINDOW w AS (PARTITION BY a.delivery_id ORDER BY a.attempt)
)
SELECT extract(epoch FROM started_at - prev_start)::float8 - prev_duration - $2 AS late
FROM a WHERE prev_start IS NOT NULL
"""


async def run(
    hookd: Hookd,
    pg: Postgres,
    sink: NginxSink,
    monitor: asyncpg.Connection,
    workdir: Path,
    p: StormParams,
) -> dict[str, Any]:
    """Run the storm; return its record."""
    db = "storm"
    await hookd.create(pg, db, workdir)
    urls = sink.endpoint_urls(4)
    await hookd.add_endpoints(pg, db, workdir, urls[:3], "order.*")
    await hookd.add_endpoints(pg, db, workdir, urls[3:], "storm.*")
    conn = await asyncpg.connect(pg.dsn_for(db), timeout=10)
    sampler_conn = await asyncpg.connect(pg.dsn_for(db), timeout=10)
    storm_ep: int = await conn.fetchval("SELECT id FROM hookd.endpoints WHERE url = $1", urls[3])
    await sink.set_failing([sink.hosts[3]])
    await monitor.execute("CHECKPOINT")
    await sink.cut_log()
    samples: list[dict[str, Any]] = []
    marks: dict[str, float] = {}
    daemon = hookd.worker(pg, db, workdir, "hookd-storm", daemon_settings(p))
    assert isinstance(daemon, HookdProcess)
    meter = Meter(monitor, db, pg.pid, lambda: daemon.pid, sink.pids)
    background_s = p.warmup_s + p.outage_s + 3 * p.retry_delay_s + p.drain_timeout_s
    stop_background = asyncio.Event()

    async def sample() -> None:
        while True:
            with contextlib.suppress(asyncpg.PostgresError, OSError):
                pending = await sampler_conn.fetchval(
                    "SELECT count(*) FROM hookd.deliveries WHERE endpoint_id = $1"
                    " AND state = 'pending'",
                    storm_ep,
                )
                metrics = await daemon.metrics()
                samples.append(
                    {
                        "t": round(time.time(), 3),
                        "rss": rss_bytes(daemon.pid),
                        "timers": int(metrics.get("hookd_retry_timers", -1)),
                        "pending": int(pending),
                    }
                )
            await asyncio.sleep(SAMPLE_S)

    try:
        async with daemon:
            await meter.start()
            sampler = asyncio.create_task(sample())
            background = asyncio.create_task(
                run_producer(
                    hookd,
                    pg,
                    db,
                    workdir,
                    "storm-background",
                    urls[:3],
                    [
                        "steady",
                        f"--rate={p.background_rate}",
                        f"--seconds={background_s}",
                        "--connections=4",
                    ],
                    body_bytes=p.body_bytes,
                    event_type="order.paid",
                    timeout_s=background_s + 60.0,
                    stop=stop_background,
                )
            )
            try:
                marks["start"] = time.time()
                await asyncio.sleep(p.warmup_s)
                marks["baseline"] = time.time()
                _, storm_commits = await run_producer(
                    hookd,
                    pg,
                    db,
                    workdir,
                    "storm-events",
                    [],
                    ["burst", f"--events={p.pending}", "--batch=5000"],
                    body_bytes=p.body_bytes,
                    event_type="storm.fail",
                    first=10_000_000,
                )
                marks["published"] = time.time()
                log.info("storm: %d events published; host 4 fails", p.pending)
                await asyncio.sleep(max(0.0, marks["published"] + p.outage_s - time.time()))
                await sink.set_failing([])
                marks["recovered"] = time.time()
                log.info("storm: host 4 recovered")
                deadline = time.monotonic() + p.drain_timeout_s
                while time.monotonic() < deadline and daemon.running:
                    left = await conn.fetchval(
                        "SELECT EXISTS (SELECT 1 FROM hookd.events WHERE fanned_out_at IS NULL)"
                        " OR EXISTS (SELECT 1 FROM hookd.deliveries WHERE endpoint_id = $1"
                        "    AND state = 'pending')",
                        storm_ep,
                    )
                    if not left:
                        marks["drained"] = time.time()
                        break
                    await asyncio.sleep(0.2)
                await asyncio.sleep(min(5.0, p.warmup_s))  # the background after the storm
                stop_background.set()
                _, background_commits = await background
                while time.monotonic() < deadline and daemon.running:
                    if not await hookd.busy(conn):
                        break
                    await asyncio.sleep(0.2)
            finally:
                sampler.cancel()
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sampler
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await background
            await meter.stop()
            exit_code = await daemon.stop()
        late = [r["late"] for r in await conn.fetch(_LATENESS_SQL, storm_ep, p.retry_delay_s)]
        attempts = await conn.fetchrow(
            "SELECT count(*) AS attempts,"
            " count(*) FILTER (WHERE a.status IS NULL OR a.status NOT BETWEEN 200 AND 299) AS bad"
            " FROM hookd.attempts a JOIN hookd.deliveries d ON d.id = a.delivery_id"
            " WHERE d.endpoint_id = $1",
            storm_ep,
        )
    finally:
        await sampler_conn.close()
        await conn.close()
        await sink.set_failing([])
    log_path = await sink.cut_log("storm")
    requests = read_requests([log_path])
    storm_ledger = tally(read_commits([storm_commits]), requests, [endpoint_path(urls[3])])
    bg_commits = read_commits([background_commits])
    bg_paths = [endpoint_path(u) for u in urls[:3]]
    bg_before = tally(
        bg_commits, requests, bg_paths, window=(marks["start"] + 1, marks["baseline"])
    )
    bg_during = tally(
        bg_commits,
        requests,
        bg_paths,
        window=(marks["baseline"], marks.get("drained", marks["recovered"])),
    )
    total_delivered = storm_ledger["delivered"] + bg_before["delivered"]
    figures = await meter.figures(total_delivered, daemon.peak_rss_bytes)
    await pg.drop_database(db)

    base = [s["rss"] for s in samples if s["t"] <= marks["baseline"] and s["rss"]]
    baseline_rss = base[-1] if base else None
    peak = max(samples, key=lambda s: s["timers"], default=None)
    peak_pending = max((s["pending"] for s in samples), default=0)
    rss_at_peak = max(
        (s["rss"] for s in samples if peak and abs(s["t"] - peak["t"]) <= 1.0 and s["rss"]),
        default=None,
    )
    per_retry = (
        round((rss_at_peak - baseline_rss) / peak["timers"], 1)
        if peak and peak["timers"] > 0 and rss_at_peak and baseline_rss
        else None
    )
    last = storm_ledger["last_delivery_unix"]
    missing = storm_ledger["missing"] + bg_before["missing"]
    return {
        "system": "hookd",
        "params": {
            "pending": p.pending,
            "outage_s": p.outage_s,
            "retry_delay_s": p.retry_delay_s,
            "background_rate": p.background_rate,
            "failure": "HTTP 500 from nginx on host 4",
        },
        "peak_retry_timers": peak["timers"] if peak else None,
        "peak_pending_storm_deliveries": peak_pending,
        "rss_baseline_mib": round(baseline_rss / 2**20, 1) if baseline_rss else None,
        "rss_at_peak_timers_mib": round(rss_at_peak / 2**20, 1) if rss_at_peak else None,
        "rss_growth_bytes_per_pending_retry": per_retry,
        "timer_lateness": latency_summary_ms(late),
        "storm_attempts": int(attempts["attempts"]) if attempts else None,
        "storm_failed_attempts": int(attempts["bad"]) if attempts else None,
        "publish_s": round(marks["published"] - marks["baseline"], 3),
        "recovery_to_drained_s": round(last - marks["recovered"], 3) if last else None,
        "storm_ledger": {k: v for k, v in storm_ledger.items() if k != "per_endpoint"},
        "background_before_storm": {
            "latency": bg_before["latency"],
            "delivered": bg_before["delivered"],
        },
        "background_during_storm": {
            "latency": bg_during["latency"],
            "window_s": round(marks.get("drained", marks["recovered"]) - marks["baseline"], 1),
        },
        "background_ledger": {
            k: v for k, v in bg_before.items() if k not in ("per_endpoint", "latency")
        },
        **figures,
        "samples": samples[:: max(1, len(samples) // 120)],
        "exit_code": exit_code,
        "log_warnings": daemon.warnings,
        "log_errors": daemon.errors,
        "timed_out": "drained" not in marks,
        "void": missing != 0 or "drained" not in marks or exit_code != 0,
    }
