"""`hookd retention`: what the partitioned history holds, and a retention step on demand
(docs/retention.md)."""

from __future__ import annotations

import argparse
import dataclasses
from datetime import timedelta

from hookd.cli_common import _cfg, _db_args, _print_json, _with_store
from hookd.store import HistoryPartition, Store


def _day(p: HistoryPartition) -> str:
    """The UTC day a partition holds ("before YYYY-MM-DD" for the upgrade's, "default", and
    "open (any age)" for the open deliveries)."""
    if p.parent == "deliveries":
        return "open (any age)"
    if p.upper_bound is None:
        return "default"
    if "_before_" in p.name:
        return f"before {p.upper_bound.date().isoformat()}"
    return (p.upper_bound - timedelta(days=1)).date().isoformat()


def _mib(n: int) -> str:
    return f"{n / 1048576:.1f} MiB"


async def cmd_retention(args: argparse.Namespace) -> int:
    cfg = _cfg(args).retention

    async def go(store: Store) -> int:
        if args.apply:
            actions = await store.maintain_history(*cfg.keeps(), cfg.partitions_ahead)
            for a in actions:
                kept = f" ({a.rows} rows kept, in its default)" if a.action == "drop" else ""
                rows = f" ({a.rows} rows)" if a.action == "delete" else ""
                print(f"{a.action} {a.relation}{kept}{rows}")
            if not actions:
                print("nothing to do")
            return 0
        parts = await store.history_partitions()
        if args.json:
            _print_json([dataclasses.asdict(p) | {"day": _day(p)} for p in parts])
            return 0
        print(f"{'table':<22} {'day':<18} {'rows (est.)':>12} {'size':>12}")
        for p in parts:
            print(f"{p.parent:<22} {_day(p):<18} {p.rows_estimate:>12} {_mib(p.bytes):>12}")
        total = sum(p.bytes for p in parts)
        keep = (
            f"delivered kept {cfg.delivered_keep_s / 86400:g} days, dead letters"
            f" {cfg.dead_letter_keep_s / 86400:g} days"
            if cfg.enabled
            else "retention off: everything is kept"
        )
        print(f"{len(parts)} partitions, {_mib(total)} in all; {keep}")
        return 0

    return await _with_store(args, go)


def add_retention_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`hookd retention [--apply]`."""
    p = sub.add_parser(
        "retention", help="the partitions of the history; --apply runs a retention step now"
    )
    p.add_argument(
        "--apply",
        action="store_true",
        help="create partitions ahead and drop days past [retention] now (the daemon does it hourly)",
    )
    p.add_argument("--json", action="store_true", help="the partitions as JSON")
    _db_args(p)
    p.set_defaults(fn=cmd_retention)
