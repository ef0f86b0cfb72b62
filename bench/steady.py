"""Steady open-loop load: the highest sustainable rate, and latency below it.

Producers (bench/producer.py `steady`, 16 connections) commit one event per transaction at a
fixed rate for a fixed time, whether or not earlier events are delivered (open loop). Each event
goes to 4 endpoints on 4 hosts (nginx answering 204). One database and one worker serve a whole
series of steps. A step is sustainable when:

  - p99 commit→delivered (sink receipt) of the events committed after a warm-up is <= 250 ms;
  - the backlog does not grow: the slope of the outstanding work (sampled every 0.5 s, warm-up
    excluded) is under 2 % of the offered deliveries/s, and everything is delivered within
    `drain_limit_s` after the producers stop;
  - the producers kept their schedule (achieved rate >= 97 % of offered) and nothing is missing.

Search: start at `start_rate` events/s and multiply by `growth` until a step fails (or
`max_rate`), then bisect (geometric mean) `refine` times between the last good and the first bad
rate. Then latency points at 25, 50 and 80 % of the highest sustainable rate; the peers run one
point at hookd's 50 % rate (the same offered load).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import asyncpg

from bench.common import BenchError
from bench.ledger import endpoint_path, read_commits, read_requests, tally
from bench.meter import Meter
from bench.pg import Postgres
from bench.procs import Child
from bench.sink import NginxSink
from bench.systems import System, run_producer

log = logging.getLogger("bench.steady")

SAMPLE_S = 0.5
P99_LIMIT_MS = 250.0
GROWTH_LIMIT = 0.02
"""Backlog slope, as a share of offered deliveries/s, above which the backlog counts as growing."""
SCHEDULE_SHARE = 0.97


@dataclass(frozen=True, slots=True)
class SteadyParams:
    """Sizes of the steady-load scenario."""

    step_seconds: float = 10.0
    point_seconds: float = 15.0
    start_rate: float = 250.0
    growth: float = 1.5
    max_rate: float = 8000.0
    refine: int = 2
    endpoints: int = 4
    connections: int = 16
    warmup_s: float = 2.0
    drain_limit_s: float = 5.0
    body_bytes: int = 768
    points: tuple[float, ...] = (0.25, 0.5, 0.8)
    """Latency points, as shares of the highest sustainable rate."""


def _slope(samples: Sequence[tuple[float, int]]) -> float | None:
    """Least-squares slope (per second) of (time, value) samples."""
    if len(samples) < 3:
        return None
    n = len(samples)
    mt = sum(t for t, _ in samples) / n
    mv = sum(v for _, v in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    if var == 0:
        return None
    return sum((t - mt) * (v - mv) for t, v in samples) / var


class Rig:
    """One database, endpoints and worker for a series of steps: `async with Rig(...) as rig`.

    `urls` are the endpoint URLs; `fault_binds` optional extra processes (the fault sink) are the
    caller's business. `settings` go to hookd's configuration.
    """

    def __init__(
        self,
        system: System,
        pg: Postgres,
        sink: NginxSink,
        monitor: asyncpg.Connection,
        workdir: Path,
        tag: str,
        urls: Sequence[str],
        p: SteadyParams,
        *,
        settings: dict[str, dict[str, Any]] | None = None,
        extra_logs: Sequence[Path] = (),
        event_types: str = "*",
    ) -> None:
        self.system = system
        self.pg = pg
        self.sink = sink
        self.monitor = monitor
        self.workdir = workdir
        self.tag = tag
        self.urls = list(urls)
        self.p = p
        self.settings = settings
        self.extra_logs = list(extra_logs)
        self.event_types = event_types
        self.db = f"steady_{tag}".replace("-", "_")
        self.worker: Child | None = None
        self.conn: asyncpg.Connection | None = None
        self._next_first = 1
        self._steps = 0

    async def __aenter__(self) -> Rig:
        await self.system.create(self.pg, self.db, self.workdir)
        await self.system.add_endpoints(self.pg, self.db, self.workdir, self.urls, self.event_types)
        self.conn = await asyncpg.connect(self.pg.dsn_for(self.db), timeout=10)
        self.worker = self.system.worker(
            self.pg, self.db, self.workdir, f"{self.system.mode}-{self.tag}", self.settings
        )
        try:
            await self.worker.__aenter__()
        except BaseException:
            await self.conn.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self.worker is not None:
                await self.worker.__aexit__(exc_type, exc, tb)
        finally:
            if self.conn is not None:
                await self.conn.close()
            with contextlib.suppress(Exception):
                await self.pg.drop_database(self.db)

    async def busy(self, endpoints: Sequence[str] | None = None) -> bool:
        """Whether work is left (of some endpoints' URLs only, for hookd, when given): cheap."""
        assert self.conn is not None
        if endpoints is not None and self.system.mode == "hookd":
            return bool(
                await self.conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM hookd.events WHERE fanned_out_at IS NULL)"
                    " OR EXISTS (SELECT 1 FROM hookd.deliveries d JOIN hookd.endpoints e"
                    "    ON e.id = d.endpoint_id WHERE d.state = 'pending' AND e.url = ANY($1))",
                    list(endpoints),
                )
            )
        return await self.system.busy(self.conn)

    async def outstanding(self, endpoints: Sequence[str] | None = None) -> int:
        """Outstanding work (of some endpoints' URLs only, for hookd, when given)."""
        assert self.conn is not None
        if endpoints is not None and self.system.mode == "hookd":
            n: int = await self.conn.fetchval(
                "SELECT (SELECT count(*) FROM hookd.events WHERE fanned_out_at IS NULL)"
                " + (SELECT count(*) FROM hookd.deliveries d JOIN hookd.endpoints e"
                "    ON e.id = d.endpoint_id WHERE d.state = 'pending' AND e.url = ANY($1))",
                list(endpoints),
            )
            return n
        return await self.system.outstanding(self.conn)

    async def step(
        self,
        rate: float,
        seconds: float,
        *,
        label: str,
        judge: Sequence[str] | None = None,
        drain_limit_s: float | None = None,
        event_type: str | None = None,
    ) -> dict[str, Any]:
        """Offer `rate` events/s for `seconds`; return the step's record.

        `judge` restricts the verdict (latency, backlog, ledger) to those endpoint URLs (the fault
        scenarios judge only the healthy hosts); all endpoints are tallied anyway.
        """
        assert self.worker is not None and self.conn is not None
        judge_urls = list(judge) if judge is not None else self.urls
        drain_limit = self.p.drain_limit_s if drain_limit_s is None else drain_limit_s
        self._steps += 1
        tag = f"{self.tag}-{self._steps:02d}-{label}"
        # Every step starts with a fresh checkpoint, so none of them pays for an earlier step's.
        await self.monitor.execute("CHECKPOINT")
        await self.sink.cut_log()
        worker = self.worker
        meter = Meter(self.monitor, self.db, self.pg.pid, lambda: worker.pid, self.sink.pids)
        samples: list[tuple[float, int]] = []
        start_unix = time.time()

        async def sample() -> None:
            while True:
                with contextlib.suppress(asyncpg.PostgresError, OSError):
                    samples.append((time.time(), await self.outstanding(judge_urls)))
                await asyncio.sleep(SAMPLE_S)

        await meter.start()
        sampler = asyncio.create_task(sample())
        try:
            produced, commits_path = await run_producer(
                self.system,
                self.pg,
                self.db,
                self.workdir,
                tag,
                self.urls,
                [
                    "steady",
                    f"--rate={rate}",
                    f"--seconds={seconds}",
                    f"--connections={self.p.connections}",
                ],
                body_bytes=self.p.body_bytes,
                event_type=event_type,
                first=self._next_first,
                timeout_s=seconds + 120.0,
            )
            end_unix = time.time()
            self._next_first += int(produced["scheduled"]) + 1
            drained_at: float | None = None
            deadline = time.monotonic() + drain_limit
            while time.monotonic() < deadline and worker.running:
                if not await self.busy(judge_urls):
                    drained_at = time.time()
                    break
                await asyncio.sleep(0.1)
            if drained_at is None:
                # Overloaded: let the backlog go out (bounded) so this step's ledger is complete
                # and nothing spills into the next step.
                deadline = time.monotonic() + 180.0
                while time.monotonic() < deadline and worker.running:
                    if not await self.busy(judge_urls):
                        break
                    await asyncio.sleep(0.2)
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        await meter.stop()
        log_path = await self.sink.cut_log(tag)
        commits = read_commits([commits_path])
        requests = read_requests([log_path, *self.extra_logs])
        window = (start_unix + self.p.warmup_s, end_unix)
        judged = tally(commits, requests, [endpoint_path(u) for u in judge_urls], window=window)
        full = (
            judged
            if judge_urls == self.urls
            else tally(commits, requests, [endpoint_path(u) for u in self.urls], window=window)
        )
        steady_samples = [(t, v) for t, v in samples if window[0] <= t <= window[1]]
        slope = _slope(steady_samples)
        offered_deliveries = rate * len(judge_urls)
        window_s = window[1] - window[0]
        drain_after_s = (drained_at - end_unix) if drained_at is not None else None
        p99 = judged["latency"]["p99_ms"]
        reasons = []
        if p99 is None or p99 > P99_LIMIT_MS:
            reasons.append(f"p99 {p99} ms > {P99_LIMIT_MS:.0f}")
        if slope is not None and slope > GROWTH_LIMIT * offered_deliveries:
            reasons.append(f"backlog grows {slope:.0f}/s")
        if drain_after_s is None or drain_after_s > drain_limit:
            reasons.append(f"not drained {drain_limit:.0f} s after the producers stopped")
        achieved = produced.get("achieved_per_s") or 0.0
        if achieved < SCHEDULE_SHARE * rate:
            reasons.append(f"producers reached {achieved:.0f}/s only")
        if judged["missing"]:
            reasons.append(f"{judged['missing']} missing")
        figures = await meter.figures(judged["delivered"], None)
        record = {
            "label": label,
            "system": self.system.name,
            "offered_events_per_s": rate,
            "offered_deliveries_per_s": offered_deliveries,
            "seconds": seconds,
            "producer": produced,
            "window_deliveries_per_s": round(judged["window_delivered"] / window_s, 1)
            if window_s > 0
            else None,
            "latency": judged["latency"],
            "backlog_slope_per_s": round(slope, 2) if slope is not None else None,
            "backlog_max": max((v for _, v in steady_samples), default=None),
            "drain_after_s": round(drain_after_s, 3) if drain_after_s is not None else None,
            "ledger": {k: v for k, v in judged.items() if k not in ("per_endpoint", "latency")},
            "window_s": round(window_s, 3),
            "window_received_per_s": round(judged["window_received"] / window_s, 1)
            if window_s > 0
            else None,
            "per_endpoint": {
                k: {
                    "delivered": v["delivered"],
                    "received_in_window": v["received_in_window"],
                    "latency": v["latency"],
                }
                for k, v in full["per_endpoint"].items()
            },
            **figures,
            "sustainable": not reasons,
            "why_not": reasons,
        }
        log.info(
            "%s %s: %.0f ev/s -> p99 %s ms, slope %s, drain %s s: %s",
            self.system.name,
            label,
            rate,
            p99,
            record["backlog_slope_per_s"],
            record["drain_after_s"],
            "ok" if not reasons else "; ".join(reasons),
        )
        return record


async def search(
    system: System,
    pg: Postgres,
    sink: NginxSink,
    monitor: asyncpg.Connection,
    workdir: Path,
    p: SteadyParams,
) -> dict[str, Any]:
    """Find hookd's highest sustainable rate, then measure 25/50/80 % of it."""
    urls = sink.endpoint_urls(p.endpoints)
    steps: list[dict[str, Any]] = []
    points: dict[str, dict[str, Any]] = {}
    async with Rig(system, pg, sink, monitor, workdir, "search", urls, p) as rig:
        good: float | None = None
        bad: float | None = None
        rate = p.start_rate
        while rate <= p.max_rate:
            rec = await rig.step(rate, p.step_seconds, label=f"{rate:.0f}")
            steps.append(rec)
            if rec["sustainable"]:
                good = rate
                rate *= p.growth
            else:
                bad = rate
                break
        if good is None:
            # Even the start rate fails: step down (bounded) until one holds.
            rate = p.start_rate
            for _ in range(4):
                rate /= 2
                rec = await rig.step(rate, p.step_seconds, label=f"{rate:.0f}")
                steps.append(rec)
                if rec["sustainable"]:
                    good = rate
                    break
                bad = rate
        if good is not None and bad is not None:
            for _ in range(p.refine):
                mid = round((good * bad) ** 0.5, 0)
                rec = await rig.step(mid, p.step_seconds, label=f"{mid:.0f}")
                steps.append(rec)
                if rec["sustainable"]:
                    good = mid
                else:
                    bad = mid
        if good is None:
            raise BenchError("no sustainable rate found")
        for share in p.points:
            rec = await rig.step(
                round(good * share, 1), p.point_seconds, label=f"point{int(share * 100)}"
            )
            points[f"{int(share * 100)}%"] = rec
        if not points:
            # No separate points (smoke): the last sustainable step stands for them.
            points["100%"] = next(r for r in reversed(steps) if r["sustainable"])
    return {
        "system": system.name,
        "max_sustainable_events_per_s": good,
        "max_sustainable_deliveries_per_s": good * p.endpoints,
        "first_unsustainable_events_per_s": bad,
        "steps": steps,
        "points": points,
        "void": any(r["ledger"]["missing"] for r in [*steps, *points.values()]),
    }


async def peer_point(
    system: System,
    pg: Postgres,
    sink: NginxSink,
    monitor: asyncpg.Connection,
    workdir: Path,
    p: SteadyParams,
    rate: float,
) -> dict[str, Any]:
    """One step for a peer at `rate` (hookd's 50 % point), to compare latency under load."""
    urls = sink.endpoint_urls(p.endpoints)
    async with Rig(system, pg, sink, monitor, workdir, f"peer-{system.mode}", urls, p) as rig:
        rec = await rig.step(rate, p.point_seconds, label="hookd50")
    rec["void"] = rec["ledger"]["missing"] != 0
    return rec
