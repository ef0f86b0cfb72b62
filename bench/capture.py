"""Capture and per-key ordering: what the triggers cost the application, and what a retrying key
costs everyone else.

Three parts, each on its own database of the run's PostgreSQL:

  bulk      one UPDATE of all `bulk_rows` rows (100,000 [2,000]) of a table, timed from BEGIN to
            COMMIT returned, in three variants on identical tables: `plain` (no trigger),
            `capture` (`hookd capture add --status-column status`: statement-level triggers with
            transition tables, one set-based insert into the outbox) and `row_publish` (an AFTER
            UPDATE FOR EACH ROW trigger calling hookd.publish with the same payload: the usual
            way, for comparison). Two statements: `total = total + 1` (one order.updated per row)
            and a status change (order.updated and order.status_changed per row). No daemon runs;
            before every run the outbox is emptied and the tables vacuumed; variants rotate order
            over `rounds` rounds; medians reported.
  writers   16 pgbench clients (`--protocol=prepared`) each commit single-row UPDATEs of random
            rows for `seconds` per run, with the daemon running (no endpoints, as in
            bench/publish_overhead.py): `plain`, `capture` (the captured table) and `publish` (the
            UPDATE and an explicit hookd.publish() of the same payload in one statement, so one
            transaction). Rounds rotate, medians reported.
  ordering  commit → received of events at `ordering_rate` per second, half with one of 1,000
            ordering keys and half without, plus `stuck_rate` per second of one more key, to a
            receiver in this process (one endpoint). Without a retrying key, that key's events
            are answered 204 like the others; with one, 500 every time: its head retries and the
            rest of the key waits. Four runs of `ordering_seconds` / 2 on fresh databases, in the
            order without, with, with, without; the figure is the p50/p99 of the judged events
            (all but that key's) of each kind, pooled.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web

from bench.common import BenchError, latency_summary_ms, median, ratio, wait_for
from bench.hookd_proc import HookdProcess, write_cli_config
from bench.pg import SUT_ROLE, Postgres, add_endpoint, hookd_cli
from bench.publish_overhead import run_pgbench

log = logging.getLogger("bench.capture")

BULK_VARIANTS = ("plain", "capture", "row_publish")
WRITER_VARIANTS = ("plain", "capture", "publish")
STATEMENTS = {
    "total": "UPDATE bench.{t} SET total = total + 1",
    "status": "UPDATE bench.{t} SET status = CASE WHEN status = 'new' THEN 'paid' ELSE 'new' END",
}

_TABLE = """
CREATE TABLE bench.{t} (
    id bigint PRIMARY KEY,
    account_id text,
    status text NOT NULL,
    total numeric NOT NULL,
    note text
);
INSERT INTO bench.{t} SELECT g, 'acct-' || (g % 100), 'new', g, 'a note of some length'
FROM generate_series(1, {rows}) g;
"""

# The usual row-level outbox trigger: one hookd.publish per row, the same payload as capture's.
_ROW_PUBLISH = """
CREATE FUNCTION bench.row_publish() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    previous jsonb := '{}';
BEGIN
    IF OLD.status IS DISTINCT FROM NEW.status THEN
        previous := previous || jsonb_build_object('status', OLD.status);
    END IF;
    IF OLD.total IS DISTINCT FROM NEW.total THEN
        previous := previous || jsonb_build_object('total', OLD.total);
    END IF;
    IF previous <> '{}' THEN
        PERFORM hookd.publish('order.updated',
            jsonb_build_object('id', NEW.id, 'status', NEW.status, 'total', NEW.total,
                               'previous', previous), NULL, NULL, 'order:' || NEW.id);
    END IF;
    IF OLD.status IS DISTINCT FROM NEW.status THEN
        PERFORM hookd.publish('order.status_changed',
            jsonb_build_object('id', NEW.id, 'status', NEW.status, 'total', NEW.total,
                               'from', OLD.status, 'to', NEW.status), NULL, NULL, 'order:' || NEW.id);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER row_publish AFTER UPDATE ON bench.{t} FOR EACH ROW EXECUTE FUNCTION bench.row_publish();
"""

_WRITER_SQL = {
    "plain": "UPDATE bench.w_plain SET total = total + 1 WHERE id = :id;",
    "capture": "UPDATE bench.w_capture SET total = total + 1 WHERE id = :id;",
    "publish": (
        "WITH u AS (UPDATE bench.w_publish SET total = total + 1 WHERE id = :id"
        " RETURNING id, status, total)"
        " SELECT hookd.publish('order.updated', jsonb_build_object('id', id, 'status', status,"
        " 'total', total, 'previous', jsonb_build_object('total', total - 1)),"
        " ordering_key => 'order:' || id) FROM u;"
    ),
}


@dataclass(frozen=True, slots=True)
class CaptureParams:
    """Sizes of the capture scenario."""

    bulk_rows: int = 100_000
    rounds: int = 3
    writers: int = 16
    writer_rows: int = 100_000
    seconds: float = 10.0
    ordering_seconds: float = 20.0
    ordering_rate: float = 200.0
    stuck_rate: float = 20.0


# -- bulk ---------------------------------------------------------------------------------------


async def _capture_table(dsn: str, table: str) -> None:
    await asyncio.to_thread(
        hookd_cli, "capture", "add", "--dsn", dsn, "--table", table, "--columns",
        "id,status,total", "--status-column", "status", "--type-prefix", "order",
    )  # fmt: skip


async def _bulk(pg: Postgres, p: CaptureParams) -> dict[str, Any]:
    dsn = await pg.hookd_database("bench_capture_bulk")
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute("CREATE SCHEMA bench")
        for v in BULK_VARIANTS:
            await conn.execute(_TABLE.format(t=f"b_{v}", rows=p.bulk_rows))
        await _capture_table(dsn, "bench.b_capture")
        await conn.execute(_ROW_PUBLISH.replace("{t}", "b_row_publish"))
        times: dict[str, dict[str, list[float]]] = {
            s: {v: [] for v in BULK_VARIANTS} for s in STATEMENTS
        }
        events: dict[str, dict[str, int]] = {s: {} for s in STATEMENTS}
        for r in range(p.rounds):
            order = BULK_VARIANTS[r % 3 :] + BULK_VARIANTS[: r % 3]
            for stmt, sql in STATEMENTS.items():
                for v in order:
                    await conn.execute("TRUNCATE hookd.events CASCADE")
                    await conn.execute(f"VACUUM ANALYZE bench.b_{v}")
                    await conn.execute("CHECKPOINT")
                    t0 = time.perf_counter()
                    async with conn.transaction():
                        await conn.execute(sql.format(t=f"b_{v}"))
                    times[stmt][v].append(time.perf_counter() - t0)
                    events[stmt][v] = await conn.fetchval("SELECT count(*) FROM hookd.events")
                    log.info("bulk %s %-11s %.3f s, %d events", stmt, v, times[stmt][v][-1],
                             events[stmt][v])  # fmt: skip
    finally:
        await conn.close()
    out: dict[str, Any] = {"rows": p.bulk_rows}
    for stmt in STATEMENTS:
        med = {v: median(times[stmt][v]) for v in BULK_VARIANTS}
        out[stmt] = {
            "statement": STATEMENTS[stmt].format(t="<table>"),
            "seconds": {v: round(med[v], 3) for v in BULK_VARIANTS},
            "runs_s": {v: [round(x, 3) for x in times[stmt][v]] for v in BULK_VARIANTS},
            "events": events[stmt],
            "capture_ratio_to_plain": ratio(med["capture"], med["plain"], 2),
            "row_publish_ratio_to_plain": ratio(med["row_publish"], med["plain"], 2),
            "capture_ratio_to_row_publish": ratio(med["capture"], med["row_publish"], 2),
        }
    expected = {"total": p.bulk_rows, "status": 2 * p.bulk_rows}
    out["void"] = any(
        events[s].get(v) != expected[s] for s in STATEMENTS for v in ("capture", "row_publish")
    )
    return out


# -- writers -------------------------------------------------------------------------------------


async def _writers(pg: Postgres, workdir: Path, p: CaptureParams) -> dict[str, Any]:
    name = "bench_capture_writers"
    dsn = await pg.hookd_database(name)
    conn = await asyncpg.connect(dsn, timeout=10)
    scripts: dict[str, Path] = {}
    for v, sql in _WRITER_SQL.items():
        path = scripts[v] = workdir / f"capture-writers-{v}.sql"
        path.write_text(f"\\set id random(1, {p.writer_rows})\n{sql}\n")
    try:
        await conn.execute("CREATE SCHEMA bench")
        for v in WRITER_VARIANTS:
            await conn.execute(_TABLE.format(t=f"w_{v}", rows=p.writer_rows))
            await conn.execute(f"VACUUM ANALYZE bench.w_{v}")
        await _capture_table(dsn, "bench.w_capture")
        runs: dict[str, list[float]] = {v: [] for v in WRITER_VARIANTS}
        async with HookdProcess(pg.dsn_for(name, SUT_ROLE), workdir, "hookd-capture", {}) as d:
            for r in range(p.rounds):
                order = WRITER_VARIANTS[r % 3 :] + WRITER_VARIANTS[: r % 3]
                for v in order:
                    await conn.execute("CHECKPOINT")
                    tps = await run_pgbench(pg.pgbench(), dsn, scripts[v], p.writers, p.seconds)
                    runs[v].append(tps)
                    log.info("writers round %d %-8s %8.0f commits/s", r + 1, v, tps)
            backlog = await _fanned_out(conn)
            exit_code = await d.stop()
        events = await conn.fetchval("SELECT count(*) FROM hookd.events")
    finally:
        await conn.close()
    med = {v: median(runs[v]) for v in WRITER_VARIANTS}
    return {
        "writers": p.writers,
        "seconds": p.seconds,
        "client": "pgbench --protocol=prepared, one statement per transaction (autocommit)",
        "statements": _WRITER_SQL,
        "commits_per_s": {v: round(med[v], 1) for v in WRITER_VARIANTS},
        "runs": {v: [round(x, 1) for x in runs[v]] for v in WRITER_VARIANTS},
        "capture_ratio_to_publish": ratio(med["capture"], med["publish"], 3),
        "capture_ratio_to_plain": ratio(med["capture"], med["plain"], 3),
        "publish_ratio_to_plain": ratio(med["publish"], med["plain"], 3),
        "events": events,
        "backlog_after": backlog,
        "daemon_exit_code": exit_code,
        "void": backlog != 0 or exit_code != 0,
    }


async def _fanned_out(conn: asyncpg.Connection, timeout_s: float = 120.0) -> int:
    async def done() -> bool:
        return not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM hookd.events WHERE fanned_out_at IS NULL)"
        )

    try:
        await wait_for(done, timeout_s, 0.2, "the daemon to fan out every event")
    except BenchError as exc:
        log.warning("%s", exc)
    left: int = await conn.fetchval("SELECT count(*) FROM hookd.events WHERE fanned_out_at IS NULL")
    return left


# -- ordering ------------------------------------------------------------------------------------


class _KeyReceiver:
    """Records when each event id first arrives (time.time()); answers 500 to the stuck key."""

    STUCK = b'"ordering_key":"stuck"'

    def __init__(self) -> None:
        self.arrived: dict[int, float] = {}
        self.failed = 0
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        at = time.time()
        body = await request.read()
        if self.STUCK in body:
            self.failed += 1
            return web.Response(status=500)
        event_id = int(request.headers.get("webhook-id", "_0").rsplit("_", 1)[1])
        self.arrived.setdefault(event_id, at)
        return web.Response(status=204)

    async def __aenter__(self) -> str:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}/hook"

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def _produce(
    dsn: str, p: CaptureParams, seconds: float, extra_key: str
) -> tuple[dict[int, float], int]:
    """Publish for `seconds` on a fixed schedule from 4 connections; return the commit times
    (time.time() after the autocommit returned) of the judged events, and how many events of
    `extra_key` (`stuck_rate` per second, not judged) were published among them."""
    rng = random.Random(42)
    committed: dict[int, float] = {}
    extra = 0
    conns = [await asyncpg.connect(dsn, timeout=10) for _ in range(4)]
    sql = "SELECT hookd.publish('order.updated', $1::jsonb, ordering_key => $2)"
    payload = '{"id": 1, "status": "paid", "total": 12, "pad": "' + "x" * 600 + '"}'
    try:
        start = time.monotonic()
        n = int(seconds * p.ordering_rate)
        extra_every = max(1, int(p.ordering_rate / p.stuck_rate)) if p.stuck_rate > 0 else 0

        async def one(i: int) -> None:
            nonlocal extra
            conn = conns[i % len(conns)]
            await asyncio.sleep(max(0.0, start + i / p.ordering_rate - time.monotonic()))
            if extra_every and i % extra_every == 0:
                await conn.fetchval(sql, payload, extra_key)
                extra += 1
            key = f"k{rng.randrange(1000)}" if i % 2 else None
            event_id = await conn.fetchval(sql, payload, key)
            committed[event_id] = time.time()

        # One task per connection in order, so a connection never runs two statements at once.
        async def lane(lane_no: int) -> None:
            for i in range(lane_no, n, len(conns)):
                await one(i)

        async with asyncio.TaskGroup() as tg:
            for lane_no in range(len(conns)):
                tg.create_task(lane(lane_no))
    finally:
        for c in conns:
            await c.close()
    return committed, extra


async def _ordering_run(
    pg: Postgres, workdir: Path, p: CaptureParams, stuck: bool, no: int
) -> tuple[list[float], dict[str, Any]]:
    """One run on a fresh database and daemon: (latencies in seconds of the judged events, facts)."""
    name = f"bench_ordering_{no}"
    dsn = await pg.hookd_database(name)
    receiver = _KeyReceiver()
    async with receiver as url:
        await add_endpoint(dsn, url, write_cli_config(workdir))
        async with HookdProcess(pg.dsn_for(name, SUT_ROLE), workdir, f"hookd-{name}", {}) as d:
            committed, extra = await _produce(
                dsn, p, p.ordering_seconds / 2, "stuck" if stuck else "steady"
            )

            async def arrived() -> bool:
                return all(e in receiver.arrived for e in committed)

            try:
                await wait_for(arrived, 30.0, 0.1, "every judged event to arrive")
            except BenchError as exc:
                log.warning("%s", exc)
            exit_code = await d.stop()
    lat = [receiver.arrived[e] - t for e, t in committed.items() if e in receiver.arrived]
    missing = len(committed) - len(lat)
    log.info(
        "ordering run %d (%s): %d judged, p99 %s ms",
        no,
        "a key retrying" if stuck else "no key retrying",
        len(lat),
        latency_summary_ms(lat)["p99_ms"],
    )
    return lat, {
        "retrying_key": stuck,
        "judged_events": len(committed),
        "missing": missing,
        "extra_key_events": extra,
        "failed_attempts": receiver.failed,
        "latency": latency_summary_ms(lat),
        "daemon_exit_code": exit_code,
        "void": missing != 0 or exit_code != 0,
    }


async def _ordering(pg: Postgres, workdir: Path, p: CaptureParams) -> dict[str, Any]:
    """Four runs of half the time each, in the order clear, stuck, stuck, clear, so that a
    machine getting busier (or quieter) during the scenario weighs on both alike."""
    lat: dict[bool, list[float]] = {False: [], True: []}
    runs = []
    for no, stuck in enumerate((False, True, True, False), start=1):
        got, facts = await _ordering_run(pg, workdir, p, stuck, no)
        lat[stuck].extend(got)
        runs.append(facts)
    clear, retrying = latency_summary_ms(lat[False]), latency_summary_ms(lat[True])
    return {
        "rate": p.ordering_rate,
        "seconds": p.ordering_seconds,
        "stuck_rate": p.stuck_rate,
        "without_retrying_key": {"latency": clear},
        "with_retrying_key": {"latency": retrying},
        "runs": runs,
        "p99_ratio": ratio(retrying["p99_ms"], clear["p99_ms"], 3),
        "p50_ratio": ratio(retrying["p50_ms"], clear["p50_ms"], 3),
        "void": any(r["void"] for r in runs),
    }


async def run(pg: Postgres, workdir: Path, p: CaptureParams) -> dict[str, Any]:
    """Run the capture scenario; return one result record (see the module docstring)."""
    bulk = await _bulk(pg, p)
    writers = await _writers(pg, workdir, p)
    ordering = await _ordering(pg, workdir, p)
    return {
        "scenario": "capture",
        "params": {
            "bulk_rows": p.bulk_rows,
            "rounds": p.rounds,
            "writers": p.writers,
            "writer_rows": p.writer_rows,
            "seconds": p.seconds,
            "ordering_seconds": p.ordering_seconds,
            "ordering_rate": p.ordering_rate,
            "stuck_rate": p.stuck_rate,
        },
        "bulk": bulk,
        "writers": writers,
        "ordering": ordering,
        "void": bool(bulk["void"] or writers["void"] or ordering["void"]),
    }
