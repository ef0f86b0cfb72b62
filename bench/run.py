"""One command for every benchmark: `python -m bench.run [--smoke] [options]`.

Sets up everything itself: a throwaway PostgreSQL with fsync on, nginx on 127.0.0.1-127.0.0.4
(the sink), the peers in bench/.peers/ (installed on first use), the daemon and workers as
subprocesses, all on ports chosen at run time; and stops all of it on exit, on errors and on
Ctrl-C or SIGTERM. Writes `bench/results/<timestamp>-<profile>.jsonl` (environment, one line per
scenario, summary), a markdown summary (`.md`) and a chart (`.png`) next to it, and prints the
markdown.

Exit status: 0 when every scenario ran and nothing is missing; 1 when a run is void (something
missing, a worker exit status that is not clean) or a scenario failed; with `--strict`, also 1
when a goal is missed; 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import uvloop

from bench import (
    burst,
    capture,
    chart,
    faults,
    idle_latency,
    multi_daemon,
    publish_overhead,
    report,
    steady,
    storm,
)
from bench.common import LOOPBACK_HOSTS, BenchError
from bench.payload import payload_json, request_body
from bench.pg import Postgres
from bench.sink import NginxSink
from bench.systems import Hookd, Tuning, ensure_peers, make

log = logging.getLogger("bench")

SCENARIOS = (
    "idle",
    "publish",
    "ceilings",
    "burst",
    "steady",
    "faults",
    "storm",
    "multi",
    "capture",
)
PEERS = ("pgqueuer", "graphile-worker")

# Sizes per profile; each can be overridden by the option of the same name.
PROFILES: dict[str, dict[str, Any]] = {
    "full": {
        "events": 50_000,
        "publish_seconds": 10.0,
        "rounds": 3,
        "warmup_seconds": 2.0,
        "idle_events": 1000,
        "peer_idle_events": 1000,
        "wrk_seconds": 5.0,
        "step_seconds": 10.0,
        "point_seconds": 15.0,
        "start_rate": 250.0,
        "growth": 1.5,
        "max_rate": 8000.0,
        "refine": 2,
        "points": "25,50,80",
        "steady_warmup": 2.0,
        "fault_seconds": 20.0,
        "storm_pending": 100_000,
        "outage_seconds": 60.0,
        "retry_delay": 75.0,
        "background_rate": 100.0,
        "storm_warmup": 5.0,
        "steady_peers": True,
        "multi_events": 20_000,
        "kill_interval": 2.0,
        "capture_rows": 100_000,
        "capture_seconds": 10.0,
        "ordering_seconds": 20.0,
        "ordering_rate": 200.0,
    },
    "smoke": {
        "events": 600,
        "publish_seconds": 1.0,
        "rounds": 1,
        "warmup_seconds": 0.0,
        "idle_events": 30,
        "peer_idle_events": 20,
        "wrk_seconds": 1.0,
        "step_seconds": 1.5,
        "point_seconds": 1.5,
        "start_rate": 150.0,
        "growth": 2.0,
        "max_rate": 150.0,
        "refine": 0,
        "points": "",
        "steady_warmup": 0.5,
        "fault_seconds": 1.0,
        "storm_pending": 1000,
        "outage_seconds": 1.5,
        "retry_delay": 1.0,
        "background_rate": 20.0,
        "storm_warmup": 1.0,
        "steady_peers": False,
        "multi_events": 300,
        "kill_interval": 0.0,
        "capture_rows": 2_000,
        "capture_seconds": 1.0,
        "ordering_seconds": 2.0,
        "ordering_rate": 50.0,
    },
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options; sizes default to the chosen profile."""
    p = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    p.add_argument("--smoke", action="store_true", help="reduced sizes (< 60 s in all), for CI")
    p.add_argument(
        "--only", default=",".join(SCENARIOS), help=f"comma-separated subset of {SCENARIOS}"
    )
    p.add_argument(
        "--peers", default=",".join(PEERS), help=f"comma-separated subset of {PEERS}, or ''"
    )
    g = p.add_argument_group("burst and ceilings")
    g.add_argument("--events", type=int, help="events pre-loaded (full 50000, smoke 600)")
    g.add_argument("--endpoints", type=int, default=4, help="endpoints, spread over 4 hosts")
    g.add_argument("--per-host", type=int, default=64, help="concurrent requests per origin")
    g.add_argument("--body-bytes", type=int, default=768, help="request body size, bytes")
    g.add_argument("--drain-timeout", type=float, default=900.0, help="seconds")
    g.add_argument("--wrk-seconds", type=float, help="length of the wrk run (full 5)")
    g = p.add_argument_group("peer tuning (defaults: bench/README.md)")
    t = Tuning()
    g.add_argument("--pgqueuer-batch", type=int, default=t.pgqueuer_batch)
    g.add_argument("--pgqueuer-max-tasks", type=int, default=t.pgqueuer_max_tasks)
    g.add_argument("--pgqueuer-pool", type=int, default=t.pgqueuer_pool)
    g.add_argument("--graphile-concurrency", type=int, default=t.graphile_concurrency)
    g.add_argument("--graphile-local-queue", type=int, default=t.graphile_local_queue)
    g.add_argument("--graphile-max-pool", type=int, default=t.graphile_max_pool)
    g = p.add_argument_group("publish overhead")
    g.add_argument("--writers", type=int, default=16)
    g.add_argument("--publish-seconds", type=float, help="per variant and round (full 10)")
    g.add_argument("--rounds", type=int, help="rounds of all variants; medians reported (full 3)")
    g.add_argument("--warmup-seconds", type=float, help="unmeasured run per variant (full 2)")
    g = p.add_argument_group("idle latency")
    g.add_argument("--idle-events", type=int, help="serial events per series (full 1000)")
    g.add_argument("--peer-idle-events", type=int, help="serial events per peer (full 1000)")
    g = p.add_argument_group("steady load")
    g.add_argument("--step-seconds", type=float, help="length of a search step (full 10)")
    g.add_argument("--point-seconds", type=float, help="length of a latency point (full 15)")
    g.add_argument("--start-rate", type=float, help="first rate tried, events/s (full 250)")
    g.add_argument("--growth", type=float, help="rate multiplier between steps (full 1.5)")
    g.add_argument("--max-rate", type=float, help="highest rate tried, events/s (full 8000)")
    g.add_argument("--refine", type=int, help="bisection steps after the first failure (full 2)")
    g.add_argument("--points", help="latency points, percent of the maximum (full 25,50,80)")
    g.add_argument(
        "--steady-warmup", type=float, help="seconds of each step not judged for latency (full 2)"
    )
    g.add_argument(
        "--steady-peers",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the peers at hookd's 50%% rate (full yes, smoke no)",
    )
    g = p.add_argument_group("faults and storm")
    g.add_argument("--fault-rate", type=float, help="events/s (default: 50%% of the maximum)")
    g.add_argument("--fault-seconds", type=float, help="length of each fault run (full 20)")
    g.add_argument("--storm-pending", type=int, help="storm deliveries (full 100000)")
    g.add_argument("--outage-seconds", type=float, help="host failure length (full 60)")
    g.add_argument("--retry-delay", type=float, help="retry delay in the storm (full 75)")
    g.add_argument("--background-rate", type=float, help="events/s to healthy hosts (full 100)")
    g.add_argument("--storm-warmup", type=float, help="seconds before the storm (full 5)")
    g = p.add_argument_group("several daemons")
    g.add_argument("--multi-events", type=int, help="events of each burst (full 20000)")
    g.add_argument(
        "--multi-daemons", default="1,2,4", help="daemon counts on one database (default 1,2,4)"
    )
    g.add_argument(
        "--kill-interval",
        type=float,
        help="seconds a victim daemon lives before SIGKILL in the kill run; 0: no kill run "
        "(full 2)",
    )
    g = p.add_argument_group("capture and per-key ordering")
    g.add_argument("--capture-rows", type=int, help="rows of the bulk UPDATE (full 100000)")
    g.add_argument("--capture-seconds", type=float, help="per writer variant and round (full 10)")
    g.add_argument("--ordering-seconds", type=float, help="length of each ordering run (full 20)")
    g.add_argument("--ordering-rate", type=float, help="events/s in the ordering runs (full 200)")
    g.add_argument(
        "--stuck-rate", type=float, default=20.0, help="events/s of the failing key (20)"
    )
    g = p.add_argument_group("output")
    g.add_argument("--results-dir", type=Path, default=report.REPO_ROOT / "bench" / "results")
    g.add_argument("--keep-workdir", action="store_true", help="keep configs, logs, sink logs")
    g.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    g.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    args.profile = "smoke" if args.smoke else "full"
    for key, value in PROFILES[args.profile].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.only) - set(SCENARIOS)
    if unknown:
        p.error(f"--only: unknown scenario(s) {', '.join(sorted(unknown))}")
    args.peers = [s.strip() for s in args.peers.split(",") if s.strip()]
    if set(args.peers) - set(PEERS):
        p.error(f"--peers: choose from {', '.join(PEERS)}")
    args.points = [float(x) / 100 for x in str(args.points).split(",") if x.strip()]
    try:
        args.multi_daemons = tuple(int(x) for x in args.multi_daemons.split(",") if x.strip())
    except ValueError:
        p.error(f"--multi-daemons: a comma-separated list of counts, got {args.multi_daemons!r}")
    if not args.multi_daemons or min(args.multi_daemons) < 1:
        p.error("--multi-daemons: every count must be 1 or more")
    return args


class Run:
    """The state of one run: where results go, what each scenario recorded."""

    def __init__(self, args: argparse.Namespace, results: Path) -> None:
        self.args = args
        self.results = results
        self.records: dict[str, dict[str, Any]] = {}

    async def scenario(self, name: str, coro: Awaitable[dict[str, Any]]) -> dict[str, Any]:
        """Await one scenario; a BenchError becomes a void record instead of ending the run."""
        t0 = time.perf_counter()
        log.info("== %s", name)
        try:
            record: dict[str, Any] = await coro
        except Exception as exc:  # one scenario's failure must not end the run
            log.error("%s failed: %s", name, exc, exc_info=not isinstance(exc, BenchError))
            record = {"error": f"{type(exc).__name__}: {exc}", "void": True}
        record = {"scenario": name, **record, "wall_s": round(time.perf_counter() - t0, 1)}
        self.records[name] = record
        report.append_jsonl(self.results, record)
        return record


def _tuning(args: argparse.Namespace) -> Tuning:
    return Tuning(
        per_host=args.per_host,
        pgqueuer_batch=args.pgqueuer_batch,
        pgqueuer_max_tasks=args.pgqueuer_max_tasks,
        pgqueuer_pool=args.pgqueuer_pool,
        graphile_concurrency=args.graphile_concurrency,
        graphile_local_queue=args.graphile_local_queue,
        graphile_max_pool=args.graphile_max_pool,
    )


async def _idle(run: Run, pg: Postgres, workdir: Path) -> dict[str, Any]:
    a = run.args
    rec = await idle_latency.run(pg, workdir, idle_latency.IdleParams(a.idle_events, a.body_bytes))
    peers = {}
    for name in a.peers:
        peers[name] = await idle_latency.peer_idle(
            make(name, _tuning(a)), pg, workdir, a.peer_idle_events, a.body_bytes
        )
    rec["peers"] = peers
    rec["void"] = bool(rec.get("void")) or any(p["void"] for p in peers.values())
    return rec


async def _ceilings(
    run: Run, pg: Postgres, sink: NginxSink, monitor: asyncpg.Connection, workdir: Path
) -> dict[str, Any]:
    a = run.args
    body = request_body(payload_json(1, a.body_bytes))
    await sink.cut_log()
    wrk = await sink.wrk_ceiling(a.wrk_seconds, body)
    await sink.cut_log()
    raw_db = await burst.raw_db_ceiling(pg, monitor, sink, workdir, _burst_params(a))
    return {"wrk": wrk, "raw_db": raw_db, "void": False}


def _burst_params(a: argparse.Namespace) -> burst.BurstParams:
    return burst.BurstParams(a.events, a.endpoints, a.per_host, a.body_bytes, a.drain_timeout)


async def _burst(
    run: Run, pg: Postgres, sink: NginxSink, monitor: asyncpg.Connection, workdir: Path
) -> dict[str, Any]:
    a = run.args
    p = _burst_params(a)
    raw_before = await burst.raw_client_ceiling(sink, p)
    log.info("raw aiohttp ceiling: %s requests/s", raw_before.get("requests_per_s"))
    systems: dict[str, dict[str, Any]] = {}
    for name in ["hookd", *a.peers]:
        systems[name] = await burst.run_system(
            make(name, _tuning(a)), pg, sink, monitor, workdir, p
        )
    raw_after = await burst.raw_client_ceiling(sink, p)
    log.info("raw aiohttp ceiling again: %s requests/s", raw_after.get("requests_per_s"))
    return {
        "params": {
            "events": p.events,
            "endpoints": p.endpoints,
            "hosts": len(LOOPBACK_HOSTS),
            "per_host": p.per_host,
            "body_bytes": p.body_bytes,
        },
        "raw_before": raw_before,
        "raw_after": raw_after,
        "systems": systems,
        "summary": burst.summarise(systems, raw_before, raw_after),
        "void": any(r.get("void") for r in systems.values()),
    }


def _steady_params(a: argparse.Namespace) -> steady.SteadyParams:
    return steady.SteadyParams(
        step_seconds=a.step_seconds,
        point_seconds=a.point_seconds,
        start_rate=a.start_rate,
        growth=a.growth,
        max_rate=a.max_rate,
        refine=a.refine,
        endpoints=a.endpoints,
        body_bytes=a.body_bytes,
        points=tuple(a.points),
        warmup_s=a.steady_warmup,
    )


async def _steady(
    run: Run, pg: Postgres, sink: NginxSink, monitor: asyncpg.Connection, workdir: Path
) -> dict[str, Any]:
    a = run.args
    sp = _steady_params(a)
    rec = await steady.search(Hookd(_tuning(a)), pg, sink, monitor, workdir, sp)
    peers = {}
    half = rec.get("points", {}).get("50%", {}).get("offered_events_per_s")
    if a.steady_peers and half:
        for name in a.peers:
            peers[name] = await steady.peer_point(
                make(name, _tuning(a)), pg, sink, monitor, workdir, sp, half
            )
    rec["peers"] = peers
    rec["void"] = bool(rec.get("void")) or any(p["void"] for p in peers.values())
    return rec


async def _faults(
    run: Run, pg: Postgres, sink: NginxSink, monitor: asyncpg.Connection, workdir: Path
) -> dict[str, Any]:
    a = run.args
    max_rate = run.records.get("steady", {}).get("max_sustainable_events_per_s")
    fp = faults.FaultParams(rate=a.fault_rate, seconds=a.fault_seconds)
    return await faults.run(
        Hookd(_tuning(a)), pg, sink, monitor, workdir, _steady_params(a), fp, max_rate
    )


async def _storm(
    run: Run, pg: Postgres, sink: NginxSink, monitor: asyncpg.Connection, workdir: Path
) -> dict[str, Any]:
    a = run.args
    p = storm.StormParams(
        pending=a.storm_pending,
        outage_s=a.outage_seconds,
        retry_delay_s=a.retry_delay,
        background_rate=a.background_rate,
        warmup_s=a.storm_warmup,
        drain_timeout_s=a.drain_timeout,
        body_bytes=a.body_bytes,
    )
    return await storm.run(Hookd(_tuning(a)), pg, sink, monitor, workdir, p)


async def _multi(
    run: Run, pg: Postgres, sink: NginxSink, monitor: asyncpg.Connection, workdir: Path
) -> dict[str, Any]:
    a = run.args
    p = multi_daemon.MultiParams(
        events=a.multi_events,
        endpoints=a.endpoints,
        daemons=a.multi_daemons,
        kill_interval_s=a.kill_interval,
        body_bytes=a.body_bytes,
        drain_timeout_s=a.drain_timeout,
    )
    return await multi_daemon.run(Hookd(_tuning(a)), pg, sink, monitor, workdir, p)


async def run_all(args: argparse.Namespace) -> int:
    """Run the selected scenarios; return the exit status."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results = args.results_dir / f"{stamp}-{args.profile}.jsonl"
    workdir = Path(tempfile.mkdtemp(prefix="hookd-bench-"))
    failed = True
    run = Run(args, results)
    env: dict[str, Any] = {}
    try:
        t_install = time.perf_counter()
        peer_versions = await ensure_peers(args.peers)
        install_s = time.perf_counter() - t_install
        t0 = time.perf_counter()
        async with Postgres(workdir) as pg, NginxSink(workdir, LOOPBACK_HOSTS) as sink:
            env = report.environment(
                pg.settings, sink.version, args.profile, peer_versions, sys.argv
            )
            env["peers_install_s"] = round(install_s, 1)
            report.append_jsonl(results, env)
            log.info(
                "PostgreSQL %s in %s; results to %s",
                pg.settings["server_version"],
                workdir,
                results,
            )
            monitor = await asyncpg.connect(pg.admin_dsn, timeout=10)
            try:
                if "idle" in args.only:
                    await run.scenario("idle_latency", _idle(run, pg, workdir))
                if "publish" in args.only:
                    params = publish_overhead.PublishParams(
                        args.writers,
                        args.publish_seconds,
                        args.rounds,
                        args.warmup_seconds,
                        args.body_bytes,
                    )
                    await run.scenario(
                        "publish_overhead", publish_overhead.run(pg, workdir, params)
                    )
                steps = {
                    "ceilings": _ceilings,
                    "burst": _burst,
                    "steady": _steady,
                    "faults": _faults,
                    "storm": _storm,
                    "multi": _multi,
                }
                for name, fn in steps.items():
                    if name in args.only:
                        await run.scenario(name, fn(run, pg, sink, monitor, workdir))
                if "capture" in args.only:
                    cp = capture.CaptureParams(
                        bulk_rows=args.capture_rows,
                        rounds=args.rounds,
                        writers=args.writers,
                        writer_rows=max(args.capture_rows, 1000),
                        seconds=args.capture_seconds,
                        ordering_seconds=args.ordering_seconds,
                        ordering_rate=args.ordering_rate,
                        stuck_rate=args.stuck_rate,
                    )
                    await run.scenario("capture", capture.run(pg, workdir, cp))
            finally:
                await monitor.close()
        failed = False
    finally:
        if args.keep_workdir or failed:
            log.info("work directory kept: %s", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    s = report.summary(env, run.records, results)
    s["wall_s"] = round(time.perf_counter() - t0, 1)
    s["peers_install_s"] = round(install_s, 1)
    report.append_jsonl(results, s)
    md = report.markdown(s)
    results.with_suffix(".md").write_text(md + "\n")
    try:
        chart.draw(s, results.with_suffix(".png"), chart.title_of(env, s))
    except ImportError:
        log.warning("matplotlib is not installed: no chart (pip install -e '.[bench]')")
    sys.stdout.write(md + "\n")
    log.info("wall time %.0f s; results %s", s["wall_s"], results)
    if s["void"]:
        return 1
    if args.strict and any(g["met"] is False for g in s["goals"]):
        return 1
    return 0


async def _main(args: argparse.Namespace) -> int:
    # Ctrl-C and SIGTERM cancel the run, so every `async with` tears down what it started. The
    # children run in their own sessions: a terminal's Ctrl-C reaches only this process, which
    # then stops them in order.
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    return await run_all(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m bench.run`."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s: %(message)s",
    )
    try:
        return uvloop.run(_main(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        log.error("interrupted; everything started was stopped")
        return 130
    except BenchError as exc:
        log.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
