"""Slow and hung hosts during steady load: do the healthy hosts keep their pace?

hookd runs the steady load (bench/steady.py) at one rate (default: 50 % of its highest sustainable
rate) three times, each with a fresh database and daemon and 4 endpoints on 4 hosts:

  no_fault        all four hosts are nginx (204 at once): the reference;
  slow_1s         host 4 answers after 1 s (bench/fault_sink.py), hosts 1-3 nginx;
  hung_and_10s    host 3 accepts requests and never answers, host 4 answers after 10 s, hosts 1-2
                  nginx (issue 3, point 10a).

The faulty hosts' deliveries pile up (64 slots per host cannot carry the offered load at 1 s or
10 s per request), which is the point: the healthy hosts' throughput (deliveries of events
committed after the warm-up, per second) must stay >= 90 % of the reference run's for the same
hosts, and their p99 commit→delivered within 20 % of it. Only the healthy hosts are judged and
drained; the rest is left pending when the daemon stops.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import free_port, ratio
from bench.pg import Postgres
from bench.procs import Child
from bench.sink import HOOK_PATH, NginxSink
from bench.steady import Rig, SteadyParams
from bench.systems import BENCH_DIR, System

log = logging.getLogger("bench.faults")

THROUGHPUT_GOAL = 0.90
P99_GOAL = 1.20
SHUTDOWN_GRACE_S = 1.0
"""The daemon's shutdown grace in these runs: hung requests are cancelled (and counted as
attempts) after it, instead of after the default 10 s."""


@dataclass(frozen=True, slots=True)
class FaultParams:
    """Rate and length of the fault runs."""

    rate: float | None = None
    """Events/s; None: 50 % of the steady search's result (or `fallback_rate`)."""
    fallback_rate: float = 200.0
    seconds: float = 20.0


def _urls(sink: NginxSink, faulty: dict[int, str]) -> tuple[list[str], list[str]]:
    """Endpoint URLs (host n -> nginx or the fault sink's port on that host) and fault binds."""
    urls = sink.endpoint_urls(4)
    binds = []
    for index, mode in faulty.items():
        host = sink.hosts[index]
        port = free_port((host,))
        urls[index] = f"http://{host}:{port}{HOOK_PATH}/e{index + 1}"
        binds.append(f"{host}:{port}:{mode}")
    return urls, binds


async def _one(
    system: System,
    pg: Postgres,
    sink: NginxSink,
    monitor: asyncpg.Connection,
    workdir: Path,
    sp: SteadyParams,
    fp: FaultParams,
    rate: float,
    label: str,
    faulty: dict[int, str],
) -> dict[str, Any]:
    urls, binds = _urls(sink, faulty)
    healthy = [u for i, u in enumerate(urls) if i not in faulty]
    fault_log = workdir / f"fault-sink-{label}.log"
    fault_child: Child | None = None
    if binds:
        fault_child = Child(
            f"fault-sink-{label}",
            [
                sys.executable,
                "-m",
                "bench.fault_sink",
                f"--log={fault_log}",
                *(f"--bind={b}" for b in binds),
            ],
            workdir,
            ready_text="ready",
            cwd=BENCH_DIR.parent,
            stop_timeout_s=10.0,
        )
        await fault_child.__aenter__()
    try:
        async with Rig(
            system,
            pg,
            sink,
            monitor,
            workdir,
            f"fault-{label}",
            urls,
            sp,
            settings={"daemon": {"shutdown_grace_s": SHUTDOWN_GRACE_S}},
            extra_logs=[fault_log] if binds else [],
        ) as rig:
            rec = await rig.step(rate, fp.seconds, label=label, judge=healthy)
            worker = rig.worker
        # After the rig stopped the daemon: its exit status with requests hung or slow.
        assert worker is not None
        rec["exit_code"] = worker.exit_code
        rec["peak_rss_mib"] = (
            round(worker.peak_rss_bytes / 2**20, 1) if worker.peak_rss_bytes else None
        )
    finally:
        if fault_child is not None:
            await fault_child.__aexit__(None, None, None)
    rec["faults"] = {f"host{i + 1}": mode for i, mode in faulty.items()}
    rec["healthy_endpoints"] = [u.rsplit("/", 1)[1] for u in healthy]
    return rec


def _healthy_view(rec: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """Throughput and worst p99 of some healthy endpoints in a fault or reference record."""
    per = rec["per_endpoint"]
    keys = [k for k in per if k.rsplit("/", 1)[1] in names]
    received = sum(per[k]["received_in_window"] for k in keys)
    p99s = [per[k]["latency"]["p99_ms"] for k in keys if per[k]["latency"]["p99_ms"] is not None]
    window_s = rec["window_s"]
    return {
        "endpoints": names,
        "deliveries_per_s": round(received / window_s, 1) if window_s else None,
        "worst_p99_ms": max(p99s, default=None),
    }


async def run(
    system: System,
    pg: Postgres,
    sink: NginxSink,
    monitor: asyncpg.Connection,
    workdir: Path,
    sp: SteadyParams,
    fp: FaultParams,
    max_rate: float | None,
) -> dict[str, Any]:
    """The three runs and their comparison."""
    rate = fp.rate or (round(max_rate * 0.5, 1) if max_rate else fp.fallback_rate)
    runs = {
        "no_fault": await _one(system, pg, sink, monitor, workdir, sp, fp, rate, "no_fault", {}),
        "slow_1s": await _one(
            system, pg, sink, monitor, workdir, sp, fp, rate, "slow_1s", {3: "delay=1"}
        ),
        "hung_and_10s": await _one(
            system,
            pg,
            sink,
            monitor,
            workdir,
            sp,
            fp,
            rate,
            "hung_and_10s",
            {2: "hang", 3: "delay=10"},
        ),
    }
    ref = runs["no_fault"]
    comparisons = {}
    for name, healthy in (("slow_1s", ["e1", "e2", "e3"]), ("hung_and_10s", ["e1", "e2"])):
        base = _healthy_view(ref, healthy)
        got = _healthy_view(runs[name], healthy)
        tp = ratio(got["deliveries_per_s"], base["deliveries_per_s"], 3)
        p99 = ratio(got["worst_p99_ms"], base["worst_p99_ms"], 3)
        comparisons[name] = {
            "healthy": healthy,
            "reference": base,
            "faulty_run": got,
            "throughput_ratio": tp,
            "p99_ratio": p99,
            "throughput_met": tp is not None and tp >= THROUGHPUT_GOAL,
            "p99_met": p99 is not None and p99 <= P99_GOAL,
        }
    return {
        "rate_events_per_s": rate,
        "seconds": fp.seconds,
        "runs": runs,
        "comparisons": comparisons,
        "void": any(r["ledger"]["missing"] for r in runs.values()),
    }
