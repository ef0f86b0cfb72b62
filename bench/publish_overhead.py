"""Publish overhead: what hookd's wake-up machinery costs an application's commit rate.

16 concurrent writers (pgbench, a C client, so the client is not what limits the rate) each commit
one row per transaction (one statement in autocommit) for a fixed time, with the daemon running,
in four variants:

  plain       INSERT of the same row into a bare table (same columns as hookd.events, primary key
              only): the application without hookd.
  naive       the same INSERT into a bare table with an AFTER INSERT FOR EACH ROW trigger calling
              pg_notify (the usual outbox: NOTIFY on every commit).
  no_wakeup   `bench.publish(...)`: hookd.publish copied from pg_get_functiondef with its wake-up
              block (`IF pg_try_advisory_xact_lock(...) THEN PERFORM pg_notify(...); END IF;`, or
              the older waker-table form) removed; it writes to hookd.events like the real one,
              so the daemon claims these events too. If the block is not found the scenario fails.
  hookd       `hookd.publish(...)` as shipped.

The daemon runs with no endpoint: it claims and fans out (to nobody) every event, keeps up with the
writers, and so goes to sleep and is woken over and over, the worst case for the wake-up machinery.
Variants run in rotated order for `rounds` rounds after a warm-up; each figure is the median of its
rounds. A CHECKPOINT before every run keeps checkpoints from landing on one variant. Whether the
daemon is asleep (publishers would NOTIFY: no awake daemon holds the advisory lock, see
bench/wakeup.py) is sampled every 50 ms, and the daemon's NOTIFY wake-ups are counted per run.
"""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench import wakeup
from bench.common import BenchError, median, ratio
from bench.hookd_proc import HookdProcess
from bench.payload import EVENT_TYPE, payload_json
from bench.pg import SUT_ROLE, Postgres

log = logging.getLogger("bench.publish")

VARIANTS = ("plain", "naive", "no_wakeup", "hookd")
SAMPLE_INTERVAL_S = 0.05
"""How often the daemon's sleep state is sampled during a run, seconds."""

_SETUP_SQL = """
CREATE SCHEMA bench;
CREATE TABLE bench.bare_events (LIKE hookd.events INCLUDING DEFAULTS INCLUDING IDENTITY,
                                PRIMARY KEY (id));
CREATE TABLE bench.naive_events (LIKE hookd.events INCLUDING DEFAULTS INCLUDING IDENTITY,
                                 PRIMARY KEY (id));
CREATE FUNCTION bench.naive_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('bench_naive', NEW.id::text);
    RETURN NULL;
END
$$;
CREATE TRIGGER naive_notify AFTER INSERT ON bench.naive_events
    FOR EACH ROW EXECUTE FUNCTION bench.naive_notify();
"""


@dataclass(frozen=True, slots=True)
class PublishParams:
    """Durations and sizes of the publish-overhead scenario."""

    writers: int = 16
    seconds: float = 10.0
    """Length of one measured run of one variant."""
    rounds: int = 3
    warmup_s: float = 2.0
    """Unmeasured run of each variant before the first round (0: none)."""
    body_bytes: int = 768


def _scripts(workdir: Path, body_bytes: int) -> dict[str, Path]:
    payload = payload_json(1, body_bytes).replace("'", "''")
    row = f"'{EVENT_TYPE}', '{payload}'::jsonb"
    sql = {
        "plain": f"INSERT INTO bench.bare_events (event_type, payload) VALUES ({row});",
        "naive": f"INSERT INTO bench.naive_events (event_type, payload) VALUES ({row});",
        "no_wakeup": f"SELECT bench.publish(event_type => '{EVENT_TYPE}',"
        f" payload => '{payload}'::jsonb);",
        "hookd": f"SELECT hookd.publish(event_type => '{EVENT_TYPE}',"
        f" payload => '{payload}'::jsonb);",
    }
    paths = {}
    for name, text in sql.items():
        path = workdir / f"publish-{name}.sql"
        path.write_text(text + "\n")
        paths[name] = path
    return paths


async def run_pgbench(pgbench: Path, dsn: str, script: Path, writers: int, seconds: float) -> float:
    """Run pgbench for `seconds` with `writers` clients; return transactions (commits) per second."""
    seconds_int = max(1, round(seconds))
    proc = await asyncio.create_subprocess_exec(
        str(pgbench),
        "--no-vacuum",
        "--protocol=prepared",
        f"--client={writers}",
        "--jobs=2",
        f"--time={seconds_int}",
        f"--file={script}",
        dsn,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), seconds_int + 60.0)
    finally:
        if proc.returncode is None:
            proc.kill()
    text = out.decode(errors="replace")
    m = re.search(r"^tps = ([\d.]+) \(without initial connection time\)", text, re.MULTILINE)
    failed = re.search(r"^number of failed transactions: (\d+)", text, re.MULTILINE)
    if proc.returncode != 0 or m is None:
        raise BenchError(f"pgbench failed: {err.decode(errors='replace').strip() or text}")
    if failed is not None and int(failed.group(1)) > 0:
        raise BenchError(f"pgbench: {failed.group(1)} failed transactions")
    return float(m.group(1))


class _SleepSampler:
    """Samples whether the daemon is asleep every SAMPLE_INTERVAL_S on its own connection."""

    def __init__(self, conn: asyncpg.Connection, sql: str) -> None:
        self._conn = conn
        self._sql = sql
        self.samples = 0
        self.sleeping = 0

    async def run(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end:
            if await self._conn.fetchval(self._sql):
                self.sleeping += 1
            self.samples += 1
            await asyncio.sleep(SAMPLE_INTERVAL_S)


@dataclass(frozen=True, slots=True)
class _Run:
    """One measured run of one variant."""

    commits_per_s: float
    sleeping_fraction: float | None
    """Share of samples in which the daemon was asleep (publishers would NOTIFY)."""
    notify_wakeups_per_s: float | None
    """The daemon's NOTIFY wake-ups (hookd_wakeups_total{source="notify"}) per second."""


async def _measure(
    pg: Postgres,
    dsn: str,
    script: Path,
    p: PublishParams,
    conn: asyncpg.Connection,
    daemon: HookdProcess,
    asleep_sql: str,
) -> _Run:
    """CHECKPOINT, then pgbench for `p.seconds` while the daemon's sleep state is sampled."""
    await conn.execute("CHECKPOINT")
    sampler = _SleepSampler(conn, asleep_sql)
    before = await daemon.wakeups()
    async with asyncio.TaskGroup() as tg:
        bench_task = tg.create_task(run_pgbench(pg.pgbench(), dsn, script, p.writers, p.seconds))
        tg.create_task(sampler.run(max(0.0, p.seconds - 0.5)))
    after = await daemon.wakeups()
    notifies = after.get("notify", 0) - before.get("notify", 0) if after and before else None
    return _Run(
        bench_task.result(),
        sampler.sleeping / sampler.samples if sampler.samples else None,
        notifies / p.seconds if notifies is not None else None,
    )


async def _prepare(
    conn: asyncpg.Connection, workdir: Path, body_bytes: int
) -> tuple[dict[str, Path], str]:
    """Create the bare tables, the naive trigger and the no-wake-up copy; write pgbench scripts.

    Returns the scripts and the wake-up form of the installed hookd.publish.
    """
    await conn.execute(_SETUP_SQL)
    fdef = await wakeup.publish_definition(conn)
    copy = wakeup.strip_wakeup(fdef)
    await conn.execute(copy)
    (workdir / "publish-no-wakeup-function.sql").write_text(copy)
    return _scripts(workdir, body_bytes), wakeup.form_of(fdef)


async def _rounds(
    pg: Postgres,
    dsn: str,
    scripts: dict[str, Path],
    p: PublishParams,
    conn: asyncpg.Connection,
    daemon: HookdProcess,
    asleep_sql: str,
) -> dict[str, list[_Run]]:
    """Warm up, then `p.rounds` rounds of every variant in rotated order."""
    if p.warmup_s > 0:
        warm = PublishParams(p.writers, p.warmup_s, 1, 0.0, p.body_bytes)
        for name in VARIANTS:
            await _measure(pg, dsn, scripts[name], warm, conn, daemon, asleep_sql)
    runs: dict[str, list[_Run]] = {v: [] for v in VARIANTS}
    for r in range(p.rounds):
        order = VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]
        for name in order:
            one = await _measure(pg, dsn, scripts[name], p, conn, daemon, asleep_sql)
            runs[name].append(one)
            log.info(
                "round %d %-9s %8.0f commits/s (daemon asleep in %s of the samples)",
                r + 1,
                name,
                one.commits_per_s,
                one.sleeping_fraction,
            )
    return runs


def _median_of(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(median(present), 3) if present else None


async def run(pg: Postgres, workdir: Path, p: PublishParams) -> dict[str, Any]:
    """Run the publish-overhead scenario; return one result record (see the module docstring)."""
    dsn = await pg.hookd_database("bench_publish")
    naive_seen = 0

    def on_naive(*_: object) -> None:
        nonlocal naive_seen
        naive_seen += 1

    conn = await asyncpg.connect(dsn, timeout=10)
    listen = await asyncpg.connect(dsn, timeout=10)
    try:
        scripts, form = await _prepare(conn, workdir, p.body_bytes)
        # A naive outbox has a listener too; this one also keeps the notify queue drained.
        await listen.add_listener("bench_naive", on_naive)
        daemon_dsn = pg.dsn_for("bench_publish", SUT_ROLE)
        async with HookdProcess(daemon_dsn, workdir, "hookd-publish", {}) as d:
            runs = await _rounds(pg, dsn, scripts, p, conn, d, wakeup.ASLEEP_SQL[form])
            backlog = await _wait_fanned_out(conn)
            exit_code = await d.stop()
        events = await conn.fetchval("SELECT count(*) FROM hookd.events")
    finally:
        await listen.close()
        await conn.close()

    med = {v: median(r.commits_per_s for r in runs[v]) for v in VARIANTS}
    return {
        "scenario": "publish_overhead",
        "params": {
            "writers": p.writers,
            "seconds": p.seconds,
            "rounds": p.rounds,
            "warmup_s": p.warmup_s,
            "client": "pgbench --protocol=prepared, one statement per transaction (autocommit)",
        },
        "commits_per_s": {v: round(med[v], 1) for v in VARIANTS},
        "runs": {v: [round(r.commits_per_s, 1) for r in runs[v]] for v in VARIANTS},
        "ratio_to_plain": {v: ratio(med[v], med["plain"]) for v in VARIANTS},
        "ratio_to_no_wakeup": {v: ratio(med[v], med["no_wakeup"]) for v in VARIANTS},
        "wakeup_cost": round(1.0 - med["hookd"] / med["no_wakeup"], 4),
        "wakeup_form": form,
        "daemon_asleep_fraction": {
            v: _median_of([r.sleeping_fraction for r in runs[v]]) for v in VARIANTS
        },
        "daemon_notify_wakeups_per_s": {
            v: _median_of([r.notify_wakeups_per_s for r in runs[v]]) for v in VARIANTS
        },
        "naive_notifications_received": naive_seen,
        "events_published": events,
        "backlog_after": backlog,
        "daemon_exit_code": exit_code,
        "daemon_log_warnings": d.warnings,
        "daemon_log_errors": d.errors,
        "void": backlog != 0 or exit_code != 0,
    }


async def _wait_fanned_out(conn: asyncpg.Connection, timeout_s: float = 60.0) -> int:
    """Wait (bounded) until the daemon has claimed every event; return what is left."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while True:
        left: int = await conn.fetchval(
            "SELECT count(*) FROM hookd.events WHERE fanned_out_at IS NULL"
        )
        if left == 0 or loop.time() > end:
            return left
        await asyncio.sleep(0.2)
