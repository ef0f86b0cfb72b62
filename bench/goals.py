"""The benchmark's goals: each one's target and how a run's summary fares against it.

Goals are reported, never asserted: a run that misses one still completes (bench/README.md lists
them; `python -m bench.run --strict` turns a missed goal into exit status 1).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

GOAL_BURST_RATIO = 0.85
"""hookd's burst deliveries/s over the raw aiohttp ceiling, at least."""
GOAL_PEER_RATIO = 2.0
"""hookd's burst deliveries/s over the better peer's, at least."""
GOAL_IDLE_GAP_MS = 2.0
"""hookd's idle p50 minus the LISTEN/NOTIFY floor's p50, at most (ms)."""
GOAL_WAKEUP_COST = 0.05
"""1 - (hookd.publish commits/s) / (no-wake-up copy commits/s), at most."""
GOAL_CPU_S_PER_1000 = 0.11
"""Daemon CPU seconds per 1,000 deliveries in the burst, at most."""
GOAL_RSS_MIB = 150.0
"""Daemon peak resident memory, below (MiB), in every run."""
GOAL_HEALTHY_THROUGHPUT = 0.90
GOAL_HEALTHY_P99 = 1.20
GOAL_STEADY_TO_BURST = 0.8
"""hookd's max sustainable steady deliveries/s over its burst deliveries/s, at least."""
GOAL_STORM_P99 = 1.2
"""Healthy hosts' p99 during a retry storm over before it, at most."""


@dataclass(frozen=True, slots=True)
class Goal:
    """One goal and how this run did against it."""

    name: str
    value: float | None
    target: str
    met: bool | None
    """None when the figure was not measured (scenario skipped or failed)."""

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"goal": self.name, "value": self.value, "target": self.target, "met": self.met}


def _goal(name: str, value: float | None, target: str, ok: Callable[[float], bool]) -> Goal:
    return Goal(name, value, target, None if value is None else ok(value))


def get(d: Mapping[str, Any] | None, *path: str) -> Any:
    cur: Any = d
    for key in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(key)
    return cur


def goals(s: Mapping[str, Any]) -> list[Goal]:
    """Evaluate the goals on a summary (figures that were not measured give met=None)."""
    out = [
        _goal(
            "burst: hookd deliveries/s ÷ raw aiohttp ceiling",
            get(s, "burst", "hookd_ratio_to_raw"),
            f">= {GOAL_BURST_RATIO}",
            lambda v: v >= GOAL_BURST_RATIO,
        ),
        _goal(
            "burst: hookd deliveries/s ÷ the better peer's",
            get(s, "burst", "hookd_ratio_to_best_peer"),
            f">= {GOAL_PEER_RATIO}",
            lambda v: v >= GOAL_PEER_RATIO,
        ),
        _goal(
            "idle: hookd p50 - LISTEN/NOTIFY floor p50 (ms, from COMMIT returned)",
            get(s, "idle", "hookd_p50_minus_floor_ms"),
            f"<= {GOAL_IDLE_GAP_MS}",
            lambda v: v <= GOAL_IDLE_GAP_MS,
        ),
        _goal(
            "publish: wake-up cost, 1 - hookd ÷ no wake-up (16 writers)",
            get(s, "publish", "wakeup_cost"),
            f"<= {GOAL_WAKEUP_COST}",
            lambda v: v <= GOAL_WAKEUP_COST,
        ),
        _goal(
            "burst: daemon CPU-s per 1,000 deliveries",
            get(s, "burst", "systems", "hookd", "cpu_s_per_1000", "sut"),
            f"<= {GOAL_CPU_S_PER_1000}",
            lambda v: v <= GOAL_CPU_S_PER_1000,
        ),
        _goal(
            "daemon peak RSS, MiB (highest of all hookd runs)",
            s.get("hookd_peak_rss_mib"),
            f"< {GOAL_RSS_MIB:.0f}",
            lambda v: v < GOAL_RSS_MIB,
        ),
        _goal(
            "missing deliveries (all runs)",
            s.get("missing_total"),
            "= 0",
            lambda v: v == 0,
        ),
    ]
    steady_max = get(s, "steady", "max_sustainable_deliveries_per_s")
    burst = get(s, "burst", "systems", "hookd", "deliveries_per_s")
    out.append(
        _goal(
            "steady: max sustainable deliveries/s ÷ burst deliveries/s",
            round(steady_max / burst, 3) if steady_max and burst else None,
            f">= {GOAL_STEADY_TO_BURST}",
            lambda v: v >= GOAL_STEADY_TO_BURST,
        )
    )
    half = get(s, "steady", "points", "50%", "latency")
    peers = get(s, "steady", "peers_at_50pct") or {}
    for q in ("p50_ms", "p99_ms"):
        theirs = [
            get(rec, "latency", q)
            for rec in peers.values()
            if get(rec, "latency", q) is not None and rec.get("sustainable")
        ]
        ours = get(half, q)
        out.append(
            _goal(
                f"steady at 50 % of hookd's max: hookd {q[:3]} ÷ the better peer's at that rate",
                round(ours / min(theirs), 3) if ours is not None and theirs else None,
                "<= 1.0",
                lambda v: v <= 1.0,
            )
        )
    before = get(s, "storm", "background_p99_before_ms")
    during = get(s, "storm", "background_p99_during_ms")
    out.append(
        _goal(
            "retry storm: healthy hosts' p99 during ÷ before",
            round(during / before, 3) if before and during else None,
            f"<= {GOAL_STORM_P99}",
            lambda v: v <= GOAL_STORM_P99,
        )
    )
    for name, label in (("slow_1s", "one host 1 s slow"), ("hung_and_10s", "hung + 10 s hosts")):
        comp = get(s, "faults", "comparisons", name)
        out.append(
            _goal(
                f"faults, {label}: healthy hosts' throughput ÷ no fault",
                get(comp, "throughput_ratio"),
                f">= {GOAL_HEALTHY_THROUGHPUT}",
                lambda v: v >= GOAL_HEALTHY_THROUGHPUT,
            )
        )
        out.append(
            _goal(
                f"faults, {label}: healthy hosts' p99 ÷ no fault",
                get(comp, "p99_ratio"),
                f"<= {GOAL_HEALTHY_P99}",
                lambda v: v <= GOAL_HEALTHY_P99,
            )
        )
    return out
