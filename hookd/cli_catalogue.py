"""`hookd event-type ...`: the event catalogue from the command line (add, list, show, remove,
strict, export), through the operating service as an operator, like the other hookd/cli_*.py.

Schemas and examples are read from JSON files; a problem names the file and the JSON path of the
first problem in it (`--example ex.json: does not match the schema at $.total: ...`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from hookd import config
from hookd.errors import HookdError
from hookd.models import EventType
from hookd.service import UNSET, EventTypeChanges, InvalidInput, Scope, Service

OPERATOR = Scope()

Go = Callable[[Service, config.Config], Awaitable[int]]
Runner = Callable[[argparse.Namespace, Go], Awaitable[int]]
"""Runs a command's body with an operator's Service (hookd.cli_common._with_service)."""


def _json_file(path: str, flag: str) -> Any:
    """The parsed JSON value in file `path`. Raises HookdError naming `flag` and the file."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise HookdError(f"{flag} {path}: no such file") from None
    except OSError as exc:
        raise HookdError(f"{flag} {path}: cannot read: {exc.strerror}") from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HookdError(f"{flag} {path}: not valid JSON: {exc}") from None


def _file_change(path: str | None, remove: bool, flag: str) -> Any:
    """A field of EventTypeChanges from a FILE flag and its --no-... flag."""
    if remove:
        return None
    return UNSET if path is None else _json_file(path, flag)


def _pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


def _entry_json(e: EventType) -> dict[str, Any]:
    return {
        "name": e.name,
        "description": e.description,
        "schema": e.schema,
        "example": e.example,
        "created_at": e.created_at.isoformat(),
        "updated_at": e.updated_at.isoformat(),
    }


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    db_args: Callable[[argparse.ArgumentParser], None],
    run: Runner,
) -> None:
    """Add `event-type` and its subcommands to the `hookd` parser."""

    async def cmd_add(args: argparse.Namespace) -> int:
        changes = EventTypeChanges(
            description=args.description if args.description is not None else UNSET,
            schema=_file_change(args.schema, args.no_schema, "--schema"),
            example=_file_change(args.example, args.no_example, "--example"),
        )

        async def go(service: Service, cfg: config.Config) -> int:
            try:
                entry, created = await service.put_catalogue_entry(OPERATOR, args.name, changes)
            except InvalidInput as exc:
                message = str(exc).removeprefix(f"{exc.field}: ")
                if exc.field == "schema" and args.schema:
                    raise HookdError(f"--schema {args.schema}: {message}") from None
                if exc.field == "example" and args.example:
                    raise HookdError(f"--example {args.example}: {message}") from None
                if exc.field == "example":
                    raise HookdError(
                        f"{message} (give --example FILE, or --no-example to remove it)"
                    ) from None
                raise
            given = (("schema", entry.schema), ("example", entry.example))
            parts = [name for name, value in given if value is not None]
            with_ = f" (with {' and '.join(parts)})" if parts else ""
            print(f"event type {entry.name} {'added' if created else 'updated'}{with_}")
            return 0

        return await run(args, go)

    async def cmd_list(args: argparse.Namespace) -> int:
        async def go(service: Service, cfg: config.Config) -> int:
            entries = await service.catalogue(OPERATOR)
            strict = await service.catalogue_strict(OPERATOR)
            if args.json:
                print(
                    orjson.dumps(
                        {"strict": strict, "event_types": [_entry_json(e) for e in entries]}
                    ).decode()
                )
                return 0
            state = "on: publishing refuses other types" if strict else "off"
            print(f"strict mode {state}")
            if not entries:
                print("the catalogue is empty: add types with `hookd event-type add NAME`")
                return 0
            width = max(len("event type"), *(len(e.name) for e in entries))
            print(f"{'event type':{width}}  schema  example  description")
            for e in entries:
                description = " ".join(e.description.split()) or "-"
                if len(description) > 60:
                    description = description[:59] + "…"
                print(
                    f"{e.name:{width}}  {'yes' if e.schema is not None else 'no':6}  "
                    f"{'yes' if e.example is not None else 'no':7}  {description}"
                )
            return 0

        return await run(args, go)

    async def cmd_show(args: argparse.Namespace) -> int:
        async def go(service: Service, cfg: config.Config) -> int:
            e = await service.catalogue_entry(OPERATOR, args.name)
            if args.json:
                print(orjson.dumps(_entry_json(e)).decode())
                return 0
            print(f"event type {e.name}")
            print(f"  description  {e.description or '-'}")
            print(f"  created      {e.created_at.isoformat()}")
            print(f"  updated      {e.updated_at.isoformat()}")
            for label, value in (("schema", e.schema), ("example", e.example)):
                if value is None:
                    print(f"{label}: none")
                else:
                    print(f"{label}:")
                    print(_pretty(value))
            return 0

        return await run(args, go)

    async def cmd_remove(args: argparse.Namespace) -> int:
        async def go(service: Service, cfg: config.Config) -> int:
            await service.remove_catalogue_entry(OPERATOR, args.name)
            print(f"event type {args.name} removed from the catalogue")
            if await service.catalogue_strict(OPERATOR):
                print(
                    f"hookd: warning: strict mode is on: publishing {args.name} fails from now on",
                    file=sys.stderr,
                )
            return 0

        return await run(args, go)

    async def cmd_strict(args: argparse.Namespace) -> int:
        async def go(service: Service, cfg: config.Config) -> int:
            if args.state is None:
                on = await service.catalogue_strict(OPERATOR)
                print(f"strict mode {'on' if on else 'off'}")
                return 0
            done = await service.set_catalogue_strict(OPERATOR, args.state == "on")
            if not done.strict:
                print("strict mode off: publishing accepts any event type")
                return 0
            print("strict mode on: publishing refuses event types not in the catalogue")
            if done.unknown_seen:
                print(
                    "hookd: warning: the outbox holds event types the catalogue lacks, which"
                    f" publishing now refuses: {', '.join(done.unknown_seen)} (add them with"
                    " `hookd event-type add NAME`)",
                    file=sys.stderr,
                )
            return 0

        return await run(args, go)

    async def cmd_export(args: argparse.Namespace) -> int:
        async def go(service: Service, cfg: config.Config) -> int:
            print(orjson.dumps(await service.catalogue_document()).decode())
            return 0

        return await run(args, go)

    et = sub.add_parser(
        "event-type", help="the event catalogue: types, descriptions, schemas, examples"
    ).add_subparsers(dest="action", required=True)
    p = et.add_parser(
        "add", help="add an event type, or change the given fields of one already there"
    )
    db_args(p)
    p.add_argument("name", help="the event type, e.g. order.paid")
    p.add_argument("--description", help="what the event means (at most 1,000 characters)")
    schema = p.add_mutually_exclusive_group()
    schema.add_argument("--schema", metavar="FILE", help="JSON Schema of the payload (JSON file)")
    schema.add_argument("--no-schema", action="store_true", help="remove the schema")
    example = p.add_mutually_exclusive_group()
    example.add_argument(
        "--example",
        metavar="FILE",
        help="an example payload (JSON file; checked against the schema)",
    )
    example.add_argument("--no-example", action="store_true", help="remove the example")
    p.set_defaults(fn=cmd_add)
    p = et.add_parser("list", help="the catalogue, and whether strict mode is on")
    db_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_list)
    p = et.add_parser("show", help="one event type with its schema and example")
    db_args(p)
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_show)
    p = et.add_parser("remove", help="remove an event type from the catalogue")
    db_args(p)
    p.add_argument("name")
    p.set_defaults(fn=cmd_remove)
    p = et.add_parser(
        "strict", help="on: publishing refuses event types not in the catalogue; none: show"
    )
    db_args(p)
    p.add_argument("state", nargs="?", choices=["on", "off"])
    p.set_defaults(fn=cmd_strict)
    p = et.add_parser(
        "export", help="print the catalogue as receivers read it (the API's /catalogue.json)"
    )
    db_args(p)
    p.set_defaults(fn=cmd_export)
