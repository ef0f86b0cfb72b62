"""Several daemons on one database: throughput, fairness, duplicates, PostgreSQL's cost, kills.

For each daemon count in `--multi-daemons` (1, 2, 4), in a fresh database:
  1. M endpoints on the sink's loopback hosts;
  2. the daemons start (all at once, each its own `hookd run` with its own admin port) and are
     left to fall asleep on an empty outbox;
  3. the producer publishes the whole burst (N events) in ONE transaction, so every daemon sees
     all of it at the same instant (the commit) and none has a head start;
  4. the meter runs from the producer's return until nothing is outstanding; then each daemon's
     own counters are scraped (`hookd_attempts_total{status_class="2xx"}`: the deliveries it
     made) and it is stopped with SIGTERM.

Reported per daemon count: deliveries/s (delivered / (last 2xx at the sink - the commit)), each
daemon's share of the deliveries (fairness: min and max share, and max/min), duplicates three
ways (further 2xx for the same (endpoint, event) at the sink; attempt-log rows beyond one per
delivery; the deliveries' attempt counters beyond one), and PostgreSQL's CPU seconds, statements
and WAL bytes per delivery (bench/meter.py), plus the daemons' CPU summed.

The kill run: 2 daemons, the same burst; one of them (the victim) is killed with SIGKILL every
`--kill-interval` seconds after it logged ready, and started again at once, until the drain is
over. Leases are short in this run (`lease_s` 10, `total_timeout_s` 5) so the deliveries a
killed daemon held are claimed again within seconds, not after the default 120 s. Just after
each kill the dead daemon's leases (its owner id from its "hookd ready" line; pending deliveries
still leased to it) are read from the database: a request that reached the sink but whose outcome
the daemon had not written when it died is sent again by whoever claims it once the lease expires
(at-least-once). Every delivery the sink saw more than once must be one of those leases, and
nothing may be lost: every delivery delivered, the sink's ledger complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench import wakeup
from bench.common import ratio, wait_for
from bench.ledger import endpoint_path, read_commits, read_requests, tally
from bench.meter import Meter
from bench.pg import Postgres
from bench.sink import NginxSink
from bench.systems import Hookd, run_producer

log = logging.getLogger("bench.multi")

POLL_S = 0.2
"""How often the drain is checked, seconds."""
ASLEEP_TIMEOUT_S = 30.0
"""Longest wait for freshly started daemons to settle before the burst is published."""
KILL_SETTINGS: dict[str, dict[str, Any]] = {
    "daemon": {"lease_s": 10.0, "shutdown_grace_s": 1.0},
    "http": {"total_timeout_s": 5.0, "connect_timeout_s": 2.0},
}
"""The kill run's daemon settings: leases that expire within seconds of a kill."""

_LEDGER_SQL = """
SELECT count(*)::bigint AS deliveries,
       count(*) FILTER (WHERE state = 'delivered')::bigint AS delivered,
       count(*) FILTER (WHERE attempts > 1)::bigint AS claimed_more_than_once,
       coalesce(sum(attempts), 0)::bigint AS attempts_counted,
       (SELECT count(*) FROM hookd.attempts)::bigint AS attempt_rows,
       (SELECT count(DISTINCT delivery_id) FROM hookd.attempts)::bigint AS attempted_deliveries,
       (SELECT count(*) FROM hookd.events WHERE fanned_out_at IS NULL)::bigint AS not_fanned_out
FROM hookd.deliveries
"""


_HELD_SQL = """
SELECT d.event_id, e.url
FROM hookd.deliveries d JOIN hookd.endpoints e ON e.id = d.endpoint_id
WHERE d.lease_owner = $1::uuid AND d.state = 'pending'
"""
_OWNER_RE = re.compile(r"hookd ready \(lease owner ([0-9a-f-]{36})\)")


@dataclass(frozen=True, slots=True)
class MultiParams:
    """Sizes of the several-daemons scenario."""

    events: int = 20_000
    endpoints: int = 4
    daemons: tuple[int, ...] = (1, 2, 4)
    kill_interval_s: float = 2.0
    """Seconds the victim lives after logging ready before it is killed again (0: no kill run)."""
    body_bytes: int = 768
    drain_timeout_s: float = 900.0


def _sum_metric(samples: dict[str, float], name: str, label: str = "") -> float:
    """The sum of every sample of `name` (whose labels contain `label`, if given)."""
    total = 0.0
    for key, value in samples.items():
        base, _, labels = key.partition("{")
        if base == name and label in labels:
            total += value
    return total


async def _all_asleep(conn: asyncpg.Connection) -> None:
    """Wait (bounded) until no daemon holds the awake lock: all of them idle, none ahead."""
    asleep_sql = wakeup.ASLEEP_SQL[await wakeup.form(conn)]

    async def asleep() -> bool:
        return bool(await conn.fetchval(asleep_sql))

    await wait_for(asleep, ASLEEP_TIMEOUT_S, 0.005, "the daemons to fall asleep")


async def _drained(system: Hookd, conn: asyncpg.Connection, deadline: float) -> bool:
    while await system.busy(conn):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(POLL_S)
    return True


async def _db_ledger(conn: asyncpg.Connection) -> dict[str, int]:
    row = await conn.fetchrow(_LEDGER_SQL)
    assert row is not None
    return {k: int(v) for k, v in dict(row).items()}


def _duplicates(ledger: dict[str, Any], db: dict[str, int]) -> dict[str, int]:
    return {
        "sink_repeat_2xx": int(ledger["duplicates"]),
        "attempt_rows_beyond_one": db["attempt_rows"] - db["attempted_deliveries"],
        "attempt_counters_beyond_one": db["attempts_counted"] - db["deliveries"],
        "deliveries_claimed_more_than_once": db["claimed_more_than_once"],
    }


async def _load(
    system: Hookd, pg: Postgres, db: str, workdir: Path, tag: str, urls: list[str], p: MultiParams
) -> tuple[Path, float]:
    """The burst in one transaction; returns the commits file and the commit time."""
    _, commits_path = await run_producer(
        system,
        pg,
        db,
        workdir,
        tag,
        urls,
        ["burst", f"--events={p.events}", f"--batch={p.events}"],
        body_bytes=p.body_bytes,
    )
    commits = read_commits([commits_path])
    return commits_path, max(commits.values())


async def run_count(
    n: int,
    system: Hookd,
    pg: Postgres,
    sink: NginxSink,
    monitor: asyncpg.Connection,
    workdir: Path,
    p: MultiParams,
) -> dict[str, Any]:
    """n healthy daemons drain one burst; returns the run's record."""
    db = f"multi_{n}"
    await system.create(pg, db, workdir)
    urls = sink.endpoint_urls(p.endpoints)
    await system.add_endpoints(pg, db, workdir, urls)
    conn = await asyncpg.connect(pg.dsn_for(db), timeout=10)
    daemons = [system.worker(pg, db, workdir, f"multi{n}-d{i + 1}") for i in range(n)]
    meter = Meter(monitor, db, pg.pid, lambda: None, sink.pids)
    per_daemon: list[dict[str, Any]] = []
    try:
        async with contextlib.AsyncExitStack() as stack:
            await asyncio.gather(*(stack.enter_async_context(d) for d in daemons))
            await _all_asleep(conn)
            await monitor.execute("CHECKPOINT")
            await sink.cut_log()
            commits_path, committed = await _load(system, pg, db, workdir, f"multi{n}", urls, p)
            cpu0 = [d.cpu_s() for d in daemons]
            await meter.start()
            drained = await _drained(system, conn, time.monotonic() + p.drain_timeout_s)
            await meter.stop()
            for d, c0 in zip(daemons, cpu0, strict=True):
                samples = await d.metrics()
                per_daemon.append(
                    {
                        "name": d.name,
                        "delivered_2xx": int(
                            _sum_metric(samples, "hookd_attempts_total", 'status_class="2xx"')
                        ),
                        "events_fanned_out": int(
                            _sum_metric(samples, "hookd_events_claimed_total")
                        ),
                        "claim_queries": int(_sum_metric(samples, "hookd_claim_queries_total")),
                        "cpu_s": round(d.cpu_s() - c0, 3),
                        "peak_rss_mib": None,
                    }
                )
            exits = [await d.stop() for d in daemons]
            for d, rec in zip(daemons, per_daemon, strict=True):
                rec["peak_rss_mib"] = round((d.peak_rss_bytes or 0) / 2**20, 1)
        db_ledger = await _db_ledger(conn)
    finally:
        await conn.close()
    log_path = await sink.cut_log(f"multi{n}")
    ledger = tally(
        read_commits([commits_path]), read_requests([log_path]), [endpoint_path(u) for u in urls]
    )
    delivered = ledger["delivered"]
    figures = await meter.figures(delivered)
    await pg.drop_database(db)
    last = ledger["last_delivery_unix"]
    drain_s = last - committed if last is not None else None
    rate = round(delivered / drain_s, 1) if drain_s else None
    made = [r["delivered_2xx"] for r in per_daemon]
    total_made = sum(made)
    shares = [round(m / total_made, 4) if total_made else None for m in made]
    daemon_cpu = sum(r["cpu_s"] for r in per_daemon)
    pg_cpu = figures["cpu_s"]["postgres"]
    dups = _duplicates(ledger, db_ledger)
    log.info(
        "%d daemon(s): %s deliveries/s, shares %s, duplicates %s, %d missing",
        n,
        rate,
        shares,
        dups["sink_repeat_2xx"],
        ledger["missing"],
    )
    figures.pop("peak_rss_mib", None)
    figures["cpu_s"]["daemons"] = round(daemon_cpu, 3)
    figures["cpu_s_per_1000"]["daemons"] = (
        round(daemon_cpu / delivered * 1000, 4) if delivered else None
    )
    figures["cpu_s_per_1000"]["total"] = (
        round((daemon_cpu + pg_cpu) / delivered * 1000, 4) if delivered else None
    )
    return {
        "daemons": n,
        "drain_s": round(drain_s, 3) if drain_s is not None else None,
        "deliveries_per_s": rate,
        "per_daemon": per_daemon,
        "shares": shares,
        "share_min": min((s for s in shares if s is not None), default=None),
        "share_max": max((s for s in shares if s is not None), default=None),
        "share_max_over_min": ratio(max(made, default=0), min(made, default=0), 3),
        "daemon_2xx_total": total_made,
        "duplicates": dups,
        "db_ledger": db_ledger,
        **figures,
        "pg_cpu_s_per_1000": figures["cpu_s_per_1000"]["postgres"],
        "ledger": {k: v for k, v in ledger.items() if k != "per_endpoint"},
        "latency": ledger["latency"],
        "exit_codes": exits,
        "log_errors": sum(d.errors for d in daemons),
        "timed_out": not drained,
        "void": (
            ledger["missing"] != 0
            or not drained
            or any(c != 0 for c in exits)
            or any(v != 0 for v in dups.values())
        ),
    }


async def run_kills(
    system: Hookd,
    pg: Postgres,
    sink: NginxSink,
    monitor: asyncpg.Connection,
    workdir: Path,
    p: MultiParams,
) -> dict[str, Any]:
    """2 daemons, one SIGKILLed every kill_interval_s and restarted; returns the run's record."""
    db = "multi_kill"
    await system.create(pg, db, workdir)
    urls = sink.endpoint_urls(p.endpoints)
    await system.add_endpoints(pg, db, workdir, urls)
    conn = await asyncpg.connect(pg.dsn_for(db), timeout=10)
    steady = system.worker(pg, db, workdir, "multikill-d1", KILL_SETTINGS)
    meter = Meter(monitor, db, pg.pid, lambda: None, sink.pids)
    kills: list[dict[str, Any]] = []
    held_pairs: set[tuple[str, int]] = set()
    victims = 0
    try:
        async with steady:
            victim = system.worker(pg, db, workdir, "multikill-v0", KILL_SETTINGS)
            await victim.__aenter__()
            try:
                await _all_asleep(conn)
                await sink.cut_log()
                commits_path, committed = await _load(system, pg, db, workdir, "multikill", urls, p)
                await meter.start()
                deadline = time.monotonic() + p.drain_timeout_s
                next_kill = victim.ready_unix_s + p.kill_interval_s
                while await system.busy(conn):
                    if time.monotonic() > deadline or not steady.running:
                        break
                    if time.time() < next_kill:
                        await asyncio.sleep(POLL_S)
                        continue
                    samples = await victim.metrics()
                    os.kill(victim.pid, signal.SIGKILL)
                    code = await victim.stop()
                    # What the dead daemon held: its leases, which nobody may take for lease_s.
                    owner = _OWNER_RE.search(victim.log_path.read_text())
                    rows = await conn.fetch(_HELD_SQL, owner.group(1)) if owner else []
                    held_pairs.update((endpoint_path(r["url"]), int(r["event_id"])) for r in rows)
                    kills.append(
                        {
                            "at_unix": round(time.time(), 3),
                            "leases_held": len(rows),
                            "held_gauge": int(_sum_metric(samples, "hookd_deliveries_in_flight")),
                            "sending_gauge": int(_sum_metric(samples, "hookd_requests_in_flight")),
                            "delivered_2xx_before": int(
                                _sum_metric(samples, "hookd_attempts_total", 'status_class="2xx"')
                            ),
                            "exit_code": code,
                        }
                    )
                    victims += 1
                    victim = system.worker(pg, db, workdir, f"multikill-v{victims}", KILL_SETTINGS)
                    await victim.__aenter__()
                    next_kill = victim.ready_unix_s + p.kill_interval_s
                drained = not await system.busy(conn)
                await meter.stop()
                steady_samples = await steady.metrics()
            finally:
                victim_exit = await victim.stop()
            steady_exit = await steady.stop()
        db_ledger = await _db_ledger(conn)
    finally:
        await conn.close()
    log_path = await sink.cut_log("multikill")
    requests = read_requests([log_path])
    ledger = tally(read_commits([commits_path]), requests, [endpoint_path(u) for u in urls])
    ok = Counter((r.uri, r.key) for r in requests if 200 <= r.status < 300 and r.key is not None)
    repeated = {pair for pair, count in ok.items() if count > 1}
    delivered = ledger["delivered"]
    figures = await meter.figures(delivered)
    figures.pop("peak_rss_mib", None)
    for key in ("cpu_s", "cpu_s_per_1000", "cores_used"):
        figures[key].pop("sut", None)  # the daemons come and go: PostgreSQL's figures only
    figures["cpu_s_per_1000"].pop("total", None)
    await pg.drop_database(db)
    last = ledger["last_delivery_unix"]
    drain_s = last - committed if last is not None else None
    dups = _duplicates(ledger, db_ledger)
    held = sum(k["leases_held"] for k in kills)
    unexplained = len(repeated - held_pairs)
    log.info(
        "kill run: %d kills, %d missing, %d duplicates (%d deliveries leased by killed daemons;"
        " %d duplicated deliveries not among them)",
        len(kills),
        ledger["missing"],
        dups["sink_repeat_2xx"],
        held,
        unexplained,
    )
    if not kills:
        log.warning("kill run: the burst drained before the first kill (raise --multi-events)")
    return {
        "daemons": 2,
        "kill_interval_s": p.kill_interval_s,
        "settings": KILL_SETTINGS,
        "kills": len(kills),
        "kill_log": kills,
        "leases_held_at_kills": held,
        "distinct_deliveries_held_at_kills": len(held_pairs),
        "duplicates": dups,
        "duplicated_deliveries": len(repeated),
        "duplicated_not_held_by_a_killed_daemon": unexplained,
        "db_ledger": db_ledger,
        "survivor_delivered_2xx": int(
            _sum_metric(steady_samples, "hookd_attempts_total", 'status_class="2xx"')
        ),
        "drain_s": round(drain_s, 3) if drain_s is not None else None,
        "deliveries_per_s": round(delivered / drain_s, 1) if drain_s else None,
        **figures,
        "ledger": {k: v for k, v in ledger.items() if k != "per_endpoint"},
        "latency": ledger["latency"],
        "exit_codes": {"survivor": steady_exit, "last_victim": victim_exit},
        "timed_out": not drained,
        "void": (
            ledger["missing"] != 0
            or not drained
            or db_ledger["delivered"] != db_ledger["deliveries"]
            or unexplained != 0
            or steady_exit != 0
            or victim_exit != 0
        ),
    }


async def run(
    system: Hookd,
    pg: Postgres,
    sink: NginxSink,
    monitor: asyncpg.Connection,
    workdir: Path,
    p: MultiParams,
) -> dict[str, Any]:
    """The scenario: every daemon count, then the kill run."""
    counts: dict[str, dict[str, Any]] = {}
    for n in p.daemons:
        counts[str(n)] = await run_count(n, system, pg, sink, monitor, workdir, p)
    kill = await run_kills(system, pg, sink, monitor, workdir, p) if p.kill_interval_s > 0 else None
    base = counts.get("1", {}).get("deliveries_per_s")
    return {
        "params": {
            "events": p.events,
            "endpoints": p.endpoints,
            "daemons": list(p.daemons),
            "kill_interval_s": p.kill_interval_s,
            "body_bytes": p.body_bytes,
        },
        "counts": counts,
        "speedup_over_one": {
            k: ratio(v.get("deliveries_per_s"), base, 3) for k, v in counts.items()
        },
        "kill": kill,
        "void": any(r.get("void") for r in counts.values()) or bool(kill and kill.get("void")),
    }
