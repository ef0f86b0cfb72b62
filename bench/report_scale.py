"""The scale scenarios' part of the results: retry storm, several daemons, large fan-out, cold start, status.

For each of those scenarios (bench/storm.py, bench/multi_daemon.py, bench/scale.py) a
`*_summary` function picks the headline figures from its record for the run's summary, and a
`*_markdown` function renders them from the summary as markdown table lines; bench/report.py
calls them in its `summary` and `markdown`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.goals import get
from bench.report_cells import cell as _f
from bench.report_cells import latency_cell as _lat


def storm_summary(sm: Mapping[str, Any]) -> dict[str, Any]:
    """The retry storm's headline figures: timers, memory per pending retry, recovery."""
    out: dict[str, Any] = {
        k: sm.get(k)
        for k in (
            "params",
            "peak_retry_timers",
            "peak_pending_storm_deliveries",
            "rss_baseline_mib",
            "rss_at_peak_timers_mib",
            "rss_growth_bytes_per_pending_retry",
            "timer_lateness",
            "recovery_to_drained_s",
            "storm_attempts",
            "cpu_s_per_1000",
            "peak_rss_mib",
        )
    }
    out["storm_ledger"] = {
        k: get(sm, "storm_ledger", k)
        for k in ("published", "expected", "delivered", "missing", "duplicates")
    }
    out["background_p99_before_ms"] = get(sm, "background_before_storm", "latency", "p99_ms")
    out["background_p99_during_ms"] = get(sm, "background_during_storm", "latency", "p99_ms")
    return out


def storm_markdown(sm: Mapping[str, Any]) -> list[str]:
    """The retry storm's table."""
    p = sm.get("params") or {}
    led = sm.get("storm_ledger") or {}
    lines = [
        "",
        f"Retry storm: {_f(p.get('pending'))} deliveries for one host failing (HTTP 500) for "
        f"{_f(p.get('outage_s'))} s, retries every {_f(p.get('retry_delay_s'))} s:",
        "",
        "| figure | value |",
        "|---|---|",
        f"| peak retry timers / pending storm deliveries | {_f(sm.get('peak_retry_timers'))} "
        f"/ {_f(sm.get('peak_pending_storm_deliveries'))} |",
        f"| daemon RSS before → at peak timers (MiB) | {_f(sm.get('rss_baseline_mib'), 1)} → "
        f"{_f(sm.get('rss_at_peak_timers_mib'), 1)} |",
        f"| memory growth per pending retry (bytes) | "
        f"{_f(sm.get('rss_growth_bytes_per_pending_retry'))} |",
        f"| timer lateness p50 / p90 / p99 / max (ms) | {_lat(sm.get('timer_lateness'))} |",
        f"| recovery → last storm delivery (s) | {_f(sm.get('recovery_to_drained_s'), 1)} |",
        f"| other hosts' p99 before / during the storm (ms) | "
        f"{_f(sm.get('background_p99_before_ms'), 1)} / "
        f"{_f(sm.get('background_p99_during_ms'), 1)} |",
        f"| storm ledger: expected = delivered + missing (duplicates) | "
        f"{_f(led.get('expected'))} = {_f(led.get('delivered'))} + {_f(led.get('missing'))} "
        f"({_f(led.get('duplicates'))}) |",
    ]
    return lines


def multi_summary(mu: Mapping[str, Any]) -> dict[str, Any]:
    """Several daemons on one database: rates, shares and duplicates per count, the kill run."""
    out: dict[str, Any] = {
        "params": mu.get("params"),
        "speedup_over_one": mu.get("speedup_over_one"),
        "counts": {
            n: {
                k: rec.get(k)
                for k in (
                    "deliveries_per_s",
                    "shares",
                    "share_max_over_min",
                    "duplicates",
                    "cpu_s_per_1000",
                    "statements_per_delivery",
                    "wal_bytes_per_delivery",
                    "latency",
                    "void",
                )
            }
            | {"missing": get(rec, "ledger", "missing")}
            for n, rec in (mu.get("counts") or {}).items()
        },
    }
    if k := mu.get("kill"):
        out["kill"] = {
            key: k.get(key)
            for key in (
                "kills",
                "kill_interval_s",
                "leases_held_at_kills",
                "distinct_deliveries_held_at_kills",
                "duplicates",
                "duplicated_deliveries",
                "duplicated_not_held_by_a_killed_daemon",
                "deliveries_per_s",
                "latency",
                "void",
            )
        } | {"missing": get(k, "ledger", "missing"), "expected": get(k, "ledger", "expected")}
    return out


def multi_markdown(mu: Mapping[str, Any]) -> list[str]:
    """The several-daemons table and the kill run's sentence."""
    p = mu.get("params") or {}
    lines = [
        "",
        f"Several daemons on one database, {_f(p.get('events'))} events x "
        f"{_f(p.get('endpoints'))} endpoints published in one transaction:",
        "",
        "| daemons | deliveries/s | ÷ one daemon | shares of deliveries | duplicates (sink / "
        "attempt log / attempt counters) | CPU-s per 1,000: daemons / postgres | statements "
        "per delivery | WAL bytes per delivery | missing |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n, r in (mu.get("counts") or {}).items():
        cpu = r.get("cpu_s_per_1000") or {}
        d = r.get("duplicates") or {}
        shares = " / ".join(f"{x:.0%}" for x in (r.get("shares") or []) if x is not None)
        lines.append(
            f"| {n} | {_f(r.get('deliveries_per_s'))} | "
            f"{_f((mu.get('speedup_over_one') or {}).get(n), 2)} | {shares} | "
            f"{_f(d.get('sink_repeat_2xx'))} / {_f(d.get('attempt_rows_beyond_one'))} / "
            f"{_f(d.get('attempt_counters_beyond_one'))} | {_f(cpu.get('daemons'), 3)} / "
            f"{_f(cpu.get('postgres'), 3)} | {_f(r.get('statements_per_delivery'), 3)} | "
            f"{_f(r.get('wal_bytes_per_delivery'))} | {_f(r.get('missing'))} |"
        )
    if k := mu.get("kill"):
        d = k.get("duplicates") or {}
        lines += [
            "",
            f"Kill run (2 daemons, one SIGKILLed {_f(k.get('kill_interval_s'), 1)} s after "
            f"each start, {_f(k.get('kills'))} kills): expected {_f(k.get('expected'))}, "
            f"missing {_f(k.get('missing'))}; {_f(d.get('sink_repeat_2xx'))} repeated 2xx "
            f"for {_f(k.get('duplicated_deliveries'))} deliveries; "
            f"{_f(k.get('distinct_deliveries_held_at_kills'))} deliveries were leased by a "
            f"daemon when it was killed, and duplicated deliveries not among them: "
            f"{_f(k.get('duplicated_not_held_by_a_killed_daemon'))}; "
            f"{_f(k.get('deliveries_per_s'))} deliveries/s.",
        ]
    return lines


def fanout_summary(fo: Mapping[str, Any]) -> dict[str, Any]:
    """One event for thousands of endpoints: pieces, timings, memory, idle CPU, the ledger."""
    out: dict[str, Any] = {
        k: fo.get(k)
        for k in (
            "params",
            "fan_out_max_deliveries",
            "pieces",
            "largest_piece",
            "fanned_out_s",
            "first_delivery_s",
            "all_delivered_s",
            "deliveries_per_s",
            "rss_idle_mib",
            "peak_rss_mib",
            "idle_cpu_cores_with_endpoints",
        )
    }
    out["ledger"] = {
        k: get(fo, "ledger", k) for k in ("expected", "delivered", "missing", "duplicates")
    }
    return out


def fanout_markdown(fo: Mapping[str, Any]) -> list[str]:
    """The large fan-out's table."""
    led = fo.get("ledger", {})
    lines = [
        "",
        f"One event for {_f(get(fo, 'params', 'endpoints'))} endpoints "
        f"(fan_out_max_deliveries {_f(fo.get('fan_out_max_deliveries'))}):",
        "",
        "| pieces (largest) | fanned out | first / all delivered | deliveries/s "
        "| RSS idle / peak MiB | idle CPU (cores) | expected = delivered + missing (dup.) |",
        "|---|---|---|---|---|---|---|",
        f"| {_f(fo.get('pieces'))} ({_f(fo.get('largest_piece'))}) "
        f"| {_f(fo.get('fanned_out_s'), 3)} s "
        f"| {_f(fo.get('first_delivery_s'), 3)} / {_f(fo.get('all_delivered_s'), 2)} s "
        f"| {_f(fo.get('deliveries_per_s'))} "
        f"| {_f(fo.get('rss_idle_mib'), 1)} / {_f(fo.get('peak_rss_mib'), 1)} "
        f"| {_f(fo.get('idle_cpu_cores_with_endpoints'), 3)} "
        f"| {_f(led.get('expected'))} = {_f(led.get('delivered'))} + "
        f"{_f(led.get('missing'))} ({_f(led.get('duplicates'))}) |",
    ]
    return lines


def coldstart_summary(cs: Mapping[str, Any]) -> dict[str, Any]:
    """A cold start on a backlog: rate, fairness per endpoint and host, memory, fresh events."""
    out: dict[str, Any] = {
        k: cs.get(k)
        for k in (
            "params",
            "build_s",
            "delivered_in_window",
            "deliveries_per_s",
            "endpoints_served",
            "first_delivery_per_endpoint_s",
            "per_endpoint_delivered",
            "per_host_delivered",
            "peak_requests_in_flight_per_host",
            "rss_mib",
            "peak_rss_mib",
        )
    }
    out["fresh_latency"] = get(cs, "fresh", "latency")
    out["fresh_ledger"] = {
        k: get(cs, "fresh", k) for k in ("expected", "delivered", "missing", "duplicates")
    }
    out["backlog_duplicates"] = get(cs, "backlog_ledger", "duplicates")
    return out


def coldstart_markdown(cs: Mapping[str, Any]) -> list[str]:
    """The cold start's table."""
    pe = cs.get("per_endpoint_delivered") or {}
    rss = cs.get("rss_mib") or {}
    first = cs.get("first_delivery_per_endpoint_s") or {}
    fl = cs.get("fresh_ledger") or {}
    lines = [
        "",
        f"Cold start on {_f(get(cs, 'params', 'deliveries'))} due deliveries for "
        f"{_f(get(cs, 'params', 'endpoints'))} endpoints on 4 hosts "
        f"({_f(get(cs, 'params', 'seconds'))} s window):",
        "",
        "| figure | value |",
        "|---|---|",
        f"| deliveries/s | {_f(cs.get('deliveries_per_s'))} |",
        f"| endpoints served / first delivery p50, max | {_f(cs.get('endpoints_served'))} / "
        f"{_f(first.get('p50'), 3)} s, {_f(first.get('max'), 3)} s |",
    ]
    for w, v in pe.items():
        lines.append(
            f"| per endpoint, {w.replace('_', ' ')}: min / max / Jain | {_f(v.get('min'))} / "
            f"{_f(v.get('max'))} / {_f(v.get('jain'), 3)} |"
        )
    lines += [
        f"| per host delivered | {cs.get('per_host_delivered')} |",
        f"| most requests in flight per host (limit {_f(get(cs, 'params', 'per_host'))}) "
        f"| {cs.get('peak_requests_in_flight_per_host')} |",
        f"| RSS MiB at 10 s / 30 s / end / peak | {_f(rss.get('at_10_s'), 1)} / "
        f"{_f(rss.get('at_30_s'), 1)} / {_f(rss.get('at_end'), 1)} / "
        f"{_f(rss.get('peak'), 1)} |",
        f"| fresh events commit→delivered p50 / p90 / p99 / max (ms) "
        f"| {_lat(cs.get('fresh_latency'))} |",
        f"| fresh ledger: expected = delivered + missing (dup.); backlog duplicates "
        f"| {_f(fl.get('expected'))} = {_f(fl.get('delivered'))} + {_f(fl.get('missing'))} "
        f"({_f(fl.get('duplicates'))}); {_f(cs.get('backlog_duplicates'))} |",
    ]
    return lines


def status_summary(st: Mapping[str, Any]) -> dict[str, Any]:
    """The status figures query at each outbox size."""
    return {"exact_below": st.get("exact_below"), "sizes": st.get("sizes")}


def status_markdown(st: Mapping[str, Any]) -> list[str]:
    """The status figures query's table."""
    lines = [
        "",
        "| status figures query, pending | version 21 (ms, median / p90) "
        "| cheap, as the daemon reads it | `--exact` |",
        "|---|---|---|---|",
    ]
    for n, v in (st.get("sizes") or {}).items():
        cells = [
            f"{_f(v[q]['median_ms'], 1)} / {_f(v[q]['p90_ms'], 1)}"
            for q in ("v21", "cheap", "exact")
        ]
        lines.append(f"| {_f(int(n))} | " + " | ".join(cells) + " |")
    return lines
