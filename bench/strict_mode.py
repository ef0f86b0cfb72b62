"""What strict event types (`hookd event-type strict on`) cost publishers.

Strict mode is a BEFORE INSERT trigger on hookd.events that probes the catalogue's primary key
(hookd/sql/021_event_catalogue.sql); off, the trigger does not exist. On a throwaway cluster with
durability on (bench/pg.py), with the catalogue holding 200 types, three measurements, each off
and on:

  per publish   one statement publishing 20,000 events (`SELECT count(hookd.publish(...)) FROM
                generate_series(...)`, rolled back): the server-side cost of one publish, in
                microseconds, without commits or round trips in the way. Fastest of 10, off
                and on alternating.
  bulk          one INSERT of 100,000 events (what a statement-level capture trigger does):
                seconds, fastest of 10 the same way.
  commits       16 pgbench clients, each committing one `hookd.publish` per transaction for
                `seconds`, `rounds` times off then on: median commits per second, the figure
                applications see (and each run, so the spread shows).

No daemon runs: the figures are the publishing side only. Run with `python -m bench.strict_mode`
(prints each pgbench run, then a small table; not part of `make bench`). The figures measured so
far are in bench/README.md, "Strict event types".
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import asyncpg

from bench.common import BenchError
from bench.pg import Postgres

CATALOGUE_SIZE = 200
PER_PUBLISH_EVENTS = 20_000
BULK_EVENTS = 100_000
WRITERS = 16
SERVER_ROUNDS = 10
"""Alternations of the server-side measurements (per publish, bulk)."""

_PUBLISH = "SELECT hookd.publish(event_type => 'order.paid', payload => '{\"id\": 1}'::jsonb);"


async def _pgbench(pg: Postgres, dsn: str, script: Path, seconds: int) -> float:
    proc = await asyncio.create_subprocess_exec(
        str(pg.pgbench()),
        "--no-vacuum",
        "--protocol=prepared",
        f"--client={WRITERS}",
        "--jobs=2",
        f"--time={seconds}",
        f"--file={script}",
        dsn,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), seconds + 60.0)
    m = re.search(rb"^tps = ([\d.]+)", out, re.MULTILINE)
    if proc.returncode != 0 or m is None:
        raise BenchError(f"pgbench failed: {err.decode(errors='replace').strip()}")
    return float(m.group(1))


async def _per_publish_us(conn: asyncpg.Connection, strict: bool) -> float:
    """One statement of PER_PUBLISH_EVENTS publishes, rolled back: microseconds per publish."""
    await conn.fetchval("SELECT hookd.set_strict_event_types($1)", strict)
    tx = conn.transaction()
    await tx.start()
    t0 = time.perf_counter()
    await conn.execute(
        "SELECT count(hookd.publish('order.paid', '{\"id\": 1}'::jsonb))"
        f" FROM generate_series(1, {PER_PUBLISH_EVENTS})"
    )
    elapsed = time.perf_counter() - t0
    await tx.rollback()
    return elapsed / PER_PUBLISH_EVENTS * 1e6


async def _bulk_s(conn: asyncpg.Connection, strict: bool) -> float:
    """One INSERT of BULK_EVENTS events, rolled back: seconds."""
    await conn.fetchval("SELECT hookd.set_strict_event_types($1)", strict)
    tx = conn.transaction()
    await tx.start()
    t0 = time.perf_counter()
    await conn.execute(
        "INSERT INTO hookd.events (event_type, payload)"
        f" SELECT 'order.paid', '{{\"id\": 1}}'::jsonb FROM generate_series(1, {BULK_EVENTS})"
    )
    elapsed = time.perf_counter() - t0
    await tx.rollback()
    return elapsed


async def run(seconds: int, rounds: int) -> dict[str, dict[str, float]]:
    """{"off": figures, "on": figures}; pgbench runs alternate off, on, off, on, ..."""
    tps: dict[str, list[float]] = {"off": [], "on": []}
    results: dict[str, dict[str, float]] = {"off": {}, "on": {}}
    with tempfile.TemporaryDirectory(prefix="hookd-strict-") as tmp:
        workdir = Path(tmp)
        script = workdir / "publish.sql"
        script.write_text(_PUBLISH + "\n")
        async with Postgres(workdir) as pg:
            dsn = await pg.hookd_database("strict")
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute(
                    "INSERT INTO hookd.event_types (name) SELECT 'type.' || i"
                    f" FROM generate_series(1, {CATALOGUE_SIZE - 1}) i"
                )
                await conn.execute("INSERT INTO hookd.event_types (name) VALUES ('order.paid')")
                for _ in range(rounds):
                    for mode in ("off", "on"):
                        await conn.fetchval("SELECT hookd.set_strict_event_types($1)", mode == "on")
                        await conn.execute("CHECKPOINT")
                        tps[mode].append(await _pgbench(pg, dsn, script, seconds))
                        # Each run, so the spread between runs of one mode shows the noise.
                        print(f"pgbench, strict {mode}: {tps[mode][-1]:.0f} commits/s", flush=True)
                        await conn.execute("TRUNCATE hookd.events CASCADE")
                # Alternating, many times, keeping each mode's fastest: on a busy machine other
                # work only ever adds time, so the minimum is the closest to the true cost.
                for mode in ("off", "on"):
                    results[mode]["per_publish_us"] = float("inf")
                    results[mode]["bulk_s"] = float("inf")
                for _ in range(SERVER_ROUNDS):
                    for mode in ("off", "on"):
                        row = results[mode]
                        row["per_publish_us"] = min(
                            row["per_publish_us"], await _per_publish_us(conn, mode == "on")
                        )
                        row["bulk_s"] = min(row["bulk_s"], await _bulk_s(conn, mode == "on"))
                for mode in ("off", "on"):
                    results[mode]["commits_per_s"] = statistics.median(tps[mode])
            finally:
                await conn.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="length of one pgbench run")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results = asyncio.run(run(args.seconds, args.rounds))
    off, on = results["off"], results["on"]
    print(f"{'':14} {'off':>10} {'on':>10} {'on / off':>9}")
    for key, label, fmt in (
        ("per_publish_us", "per publish µs", "{:10.2f}"),
        ("commits_per_s", "commits / s", "{:10.0f}"),
        ("bulk_s", "bulk 100k s", "{:10.3f}"),
    ):
        print(f"{label:14} {fmt.format(off[key])} {fmt.format(on[key])} {on[key] / off[key]:9.3f}")


if __name__ == "__main__":
    main()
