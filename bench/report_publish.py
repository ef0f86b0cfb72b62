"""The publishing scenarios' part of the results: publish overhead and capture.

For bench/publish_overhead.py and bench/capture.py (what publishing through hookd costs the
application), a `*_summary` function picks the headline figures from the scenario's record for the
run's summary, and a `*_markdown` function renders them from the summary as markdown table lines;
bench/report.py calls them in its `summary` and `markdown`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.goals import get
from bench.report_cells import cell as _f


def publish_summary(po: Mapping[str, Any]) -> dict[str, Any]:
    """What hookd.publish and its wake-up cost a publishing application."""
    return {
        k: po.get(k)
        for k in (
            "commits_per_s",
            "ratio_to_plain",
            "ratio_to_no_wakeup",
            "wakeup_cost",
            "wakeup_form",
            "daemon_asleep_fraction",
            "daemon_notify_wakeups_per_s",
        )
    }


def publish_markdown(po: Mapping[str, Any]) -> list[str]:
    """The publish overhead table."""
    lines = [
        "",
        "| publish variant (16 writers, one row per transaction) | commits/s | ÷ plain "
        "INSERT | ÷ no wake-up |",
        "|---|---|---|---|",
    ]
    for v, label in (
        ("plain", "plain INSERT, bare table"),
        ("naive", "naive NOTIFY-per-insert trigger"),
        ("no_wakeup", "hookd.publish without wake-up machinery"),
        ("hookd", "hookd.publish as shipped, daemon running"),
    ):
        lines.append(
            f"| {label} | {_f(po['commits_per_s'][v])} | {_f(po['ratio_to_plain'][v], 3)} "
            f"| {_f(po['ratio_to_no_wakeup'][v], 3)} |"
        )
    return lines


def capture_summary(cap: Mapping[str, Any]) -> dict[str, Any]:
    """Capture's cost: bulk UPDATEs, concurrent writers, per-key ordering under a retrying key."""
    return {
        "bulk": {
            stmt: {
                k: get(cap, "bulk", stmt, k)
                for k in (
                    "statement",
                    "seconds",
                    "events",
                    "capture_ratio_to_plain",
                    "row_publish_ratio_to_plain",
                    "capture_ratio_to_row_publish",
                )
            }
            for stmt in ("total", "status")
        },
        "rows": get(cap, "bulk", "rows"),
        "writers": {
            k: get(cap, "writers", k)
            for k in (
                "commits_per_s",
                "capture_ratio_to_publish",
                "capture_ratio_to_plain",
                "publish_ratio_to_plain",
            )
        },
        "ordering": {
            "clear": get(cap, "ordering", "without_retrying_key", "latency"),
            "stuck": get(cap, "ordering", "with_retrying_key", "latency"),
            "p99_ratio": get(cap, "ordering", "p99_ratio"),
            "p50_ratio": get(cap, "ordering", "p50_ratio"),
            "rate": get(cap, "ordering", "rate"),
            "stuck_rate": get(cap, "ordering", "stuck_rate"),
        },
    }


def capture_markdown(cap: Mapping[str, Any]) -> list[str]:
    """The capture tables: bulk UPDATE, writers, per-key ordering."""
    lines = [
        "",
        f"Capture, one UPDATE of {_f(cap.get('rows'))} rows (seconds, BEGIN to COMMIT):",
        "",
        "| statement | no trigger | hookd capture | row trigger calling hookd.publish "
        "| capture ÷ none | row trigger ÷ none | capture ÷ row trigger |",
        "|---|---|---|---|---|---|---|",
    ]
    for stmt, label in (("total", "total = total + 1"), ("status", "status changes")):
        b = cap["bulk"][stmt]
        secs = b.get("seconds") or {}
        lines.append(
            f"| {label} | {_f(secs.get('plain'), 3)} | {_f(secs.get('capture'), 3)} "
            f"| {_f(secs.get('row_publish'), 3)} | {_f(b.get('capture_ratio_to_plain'), 2)} "
            f"| {_f(b.get('row_publish_ratio_to_plain'), 2)} "
            f"| {_f(b.get('capture_ratio_to_row_publish'), 2)} |"
        )
    w = cap["writers"]
    cps = w.get("commits_per_s") or {}
    lines += [
        "",
        "| 16 writers, one-row UPDATE per transaction | commits/s |",
        "|---|---|",
        f"| no trigger | {_f(cps.get('plain'))} |",
        f"| captured table | {_f(cps.get('capture'))} |",
        f"| UPDATE + explicit hookd.publish in the same transaction | {_f(cps.get('publish'))} |",
        f"| capture ÷ explicit publish | {_f(w.get('capture_ratio_to_publish'), 3)} |",
    ]
    o = cap["ordering"]
    clear, stuck = o.get("clear") or {}, o.get("stuck") or {}
    lines += [
        "",
        f"| per-key ordering, {_f(o.get('rate'))} events/s, one endpoint | p50 ms | p99 ms |",
        "|---|---|---|",
        f"| no key retrying (that key answered 204) | {_f(clear.get('p50_ms'), 1)} "
        f"| {_f(clear.get('p99_ms'), 1)} |",
        f"| one key ({_f(o.get('stuck_rate'))} events/s) failing every attempt "
        f"| {_f(stuck.get('p50_ms'), 1)} | {_f(stuck.get('p99_ms'), 1)} |",
        f"| ratio | {_f(o.get('p50_ratio'), 2)} | {_f(o.get('p99_ratio'), 2)} |",
    ]
    return lines
