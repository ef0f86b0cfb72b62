"""The flags of `hookd endpoint ...` turned into values: the per-endpoint overrides (--timeout,
--retry-schedule, --final-statuses, --unset ...), event types, metadata, payload filter and
authentication flags, and the argument groups that declare them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import orjson

from hookd.auth import validate_credentials
from hookd.cli_common import (
    _cfg,
)
from hookd.endpoints import SETTING_TYPES, validate_settings
from hookd.errors import HookdError

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
