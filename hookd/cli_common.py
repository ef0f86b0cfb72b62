"""What the `hookd` command modules (hookd/cli.py and the hookd/cli_*.py it wires) share: exit
statuses, the operator scope, opening the store or the operating service from a command's --dsn
and --config (and those two arguments), parsing durations and times given as flags, and printing
helpers (times, JSON, one-line text, "nothing matches" reports).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from hookd import config
from hookd.errors import ConfigError, HookdError
from hookd.service import (
    Scope,
    Service,
)
from hookd.store import Store

EXIT_USAGE = 2
EXIT_NOTHING = 1
"""Exit status of a command whose selection matched nothing (or whose test did not get a 2xx)."""

EXIT_BROKEN_PIPE = 141
"""Exit status when stdout's reader went away (128 + SIGPIPE, as a shell reports it)."""

OPERATOR = Scope()


def _dsn(args: argparse.Namespace) -> str:
    if getattr(args, "dsn", None):
        return str(args.dsn)
    if os.environ.get("HOOKD_DSN"):
        return os.environ["HOOKD_DSN"]
    if getattr(args, "config", None):
        return config.load(args.config).database.dsn
    raise ConfigError("database.dsn: not set (use --dsn, HOOKD_DSN or --config)")


async def _with_store(args: argparse.Namespace, fn: Callable[[Store], Awaitable[int]]) -> int:
    cfg = _cfg(args)
    store = await Store.open(
        cfg.database.dsn,
        pool_size=1,
        connect_timeout_s=cfg.database.connect_timeout_s,
        command_timeout_s=cfg.database.command_timeout_s,
        box=cfg.security.box(),
        pooler=cfg.database.pooler,
    )
    try:
        return await fn(store)
    finally:
        await store.close()


def _cfg(args: argparse.Namespace) -> config.Config:
    return config.load(getattr(args, "config", None), _dsn(args))


async def _with_service(
    args: argparse.Namespace, fn: Callable[[Service, config.Config], Awaitable[int]]
) -> int:
    """Run `fn` with an operator's Service over a store opened from the command's settings."""
    cfg = _cfg(args)

    async def go(store: Store) -> int:
        service = Service(store, allow_http=cfg.security.allow_http, policy=cfg.security.policy())
        return await fn(service, cfg)

    return await _with_store(args, go)


def _nothing(message: str) -> int:
    """Report a selection that matched nothing: one line on stderr, exit status 1."""
    print(f"hookd: {message}", file=sys.stderr)
    return EXIT_NOTHING


def _time(value: datetime | None) -> str:
    """A time for tables: UTC to the second, or "-"."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"


def _json_default(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(type(value).__name__)


def _print_json(value: Any) -> None:
    """JSON on stdout: dataclasses as objects, times as RFC 3339 strings."""
    print(orjson.dumps(value, default=_json_default).decode())


def _flat(text: str) -> str:
    """`text` on one line (runs of whitespace, line breaks included, become one space), whole."""
    return " ".join(text.split())


def _one_line(text: str | None, width: int) -> str:
    if not text:
        return "-"
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(text: str, flag: str) -> float:
    """Seconds from '90', '90s', '15m', '24h' or '7d'. Raises HookdError naming `flag`."""
    m = _DURATION.match(text)
    if not m:
        raise HookdError(f"{flag}: not a duration: {text!r} (e.g. 30s, 15m, 24h, 7d)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def _when(value: str | None, flag: str) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise HookdError(f"{flag}: not an ISO 8601 time: {value!r}") from None
    if when.tzinfo is None:
        raise HookdError(f"{flag}: give a time zone, e.g. {value}Z or {value}+00:00")
    return when


def _db_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dsn", help="PostgreSQL connection string (default: $HOOKD_DSN)")
    p.add_argument("--config", help="read the DSN from this TOML file")
