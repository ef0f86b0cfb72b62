"""`hookd capture ...`: events from table changes (README, "Capturing table changes"): installing,
printing, removing and listing the capture triggers of a table, through the store.
"""

from __future__ import annotations

import argparse
import sys

import orjson

from hookd.cli_common import _db_args, _with_store
from hookd.store import Capture, Store


def _split(value: str | None) -> list[str] | None:
    return None if value is None else [x.strip() for x in value.split(",") if x.strip()]


async def _capture_ddl(args: argparse.Namespace, store: Store) -> str:
    """The DDL `capture add` (or, with --remove / `capture remove`, its undoing) runs."""
    if getattr(args, "remove", False):
        return await store.capture_drop_ddl(args.table)
    return await store.capture_ddl(
        args.table,
        events=_split(args.events),
        columns=_split(args.columns),
        type_prefix=args.type_prefix,
        status_column=args.status_column,
        tenant_column=args.tenant_column,
        key_column=args.key_column,
    )


def _capture_line(c: Capture) -> str:
    kinds = {"insert": ["created"], "update": ["updated"], "delete": ["deleted"]}
    if c.status_column:
        kinds["update"].append("status_changed")
    types = ", ".join(f"{c.type_prefix}.{k}" for e in c.events for k in kinds[e])
    line = (
        f"{c.table}: {types}; key {c.key_column}; tenant column {c.tenant_column or '-'}; "
        f"columns {','.join(c.columns)}"
    )
    if not c.exists:
        line += " (table dropped: run capture remove)"
    elif c.missing_columns:
        line += f" (no longer has {','.join(c.missing_columns)}: run capture add again)"
    return line


async def cmd_capture_add(args: argparse.Namespace) -> int:
    async def go(store: Store) -> int:
        await store.apply_ddl(await _capture_ddl(args, store))
        for c in await store.captures(args.table):
            print(f"capturing {_capture_line(c)}")
        return 0

    return await _with_store(args, go)


async def cmd_capture_remove(args: argparse.Namespace) -> int:
    async def go(store: Store) -> int:
        await store.apply_ddl(await store.capture_drop_ddl(args.table))
        print(f"capture of {args.table} removed; its events already published stay")
        return 0

    return await _with_store(args, go)


async def cmd_capture_sql(args: argparse.Namespace) -> int:
    async def go(store: Store) -> int:
        sys.stdout.write(await _capture_ddl(args, store))
        return 0

    return await _with_store(args, go)


async def cmd_capture_list(args: argparse.Namespace) -> int:
    async def go(store: Store) -> int:
        caps = await store.captures()
        if args.json:
            rows = [
                {
                    "table": c.table,
                    "exists": c.exists,
                    "events": list(c.events),
                    "columns": list(c.columns),
                    "type_prefix": c.type_prefix,
                    "key_column": c.key_column,
                    "status_column": c.status_column,
                    "tenant_column": c.tenant_column,
                    "function": f"hookd.{c.function_name}",
                    "missing_columns": list(c.missing_columns),
                }
                for c in caps
            ]
            print(orjson.dumps(rows).decode())
            return 0
        for c in caps:
            print(_capture_line(c))
        return 0

    return await _with_store(args, go)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `capture` and its subcommands to the `hookd` parser."""
    cap = sub.add_parser(
        "capture", help="publish events from changes to a table (triggers in its transactions)"
    ).add_subparsers(dest="action", required=True)
    table_help = "the table, as in SQL: public.orders, or '\"Order Items\"' for a quoted name"
    for name, fn, help_text in (
        ("add", cmd_capture_add, "install (or replace) the capture triggers of a table"),
        ("sql", cmd_capture_sql, "print the DDL `add` (or with --remove, `remove`) would run"),
    ):
        p = cap.add_parser(name, help=help_text)
        _db_args(p)
        p.add_argument("--table", required=True, help=table_help)
        p.add_argument(
            "--events", help="comma-separated of insert, update, delete (default: all three)"
        )
        p.add_argument("--columns", help="captured columns, comma-separated (default: all)")
        p.add_argument(
            "--type-prefix", help="event types are PREFIX.created etc. (default: from the table)"
        )
        p.add_argument("--status-column", help="publish PREFIX.status_changed when it changes")
        p.add_argument("--tenant-column", help="the events' tenant comes from this column")
        p.add_argument(
            "--key-column",
            help="pairs old and new rows and gives the ordering key (default: the primary key)",
        )
        if name == "sql":
            p.add_argument("--remove", action="store_true", help="print the DDL of `remove`")
        p.set_defaults(fn=fn)
    p = cap.add_parser("remove", help="drop a table's capture triggers and function")
    _db_args(p)
    p.add_argument("--table", required=True, help=table_help)
    p.set_defaults(fn=cmd_capture_remove)
    p = cap.add_parser("list", help="captured tables")
    _db_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_capture_list)
