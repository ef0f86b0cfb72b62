"""`hookd endpoint ...`: adding, changing, enabling and disabling, testing and deleting endpoints
(settings overrides, payload filters, metadata, authentication, signing secrets), through the
operating service as an operator, and the `endpoint` parser; `list` and `show` are in
hookd/cli_endpoint_views.py, the parsing of the flags in hookd/cli_endpoint_flags.py.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from hookd import config
from hookd.cli_common import (
    EXIT_NOTHING,
    OPERATOR,
    _cfg,
    _db_args,
    _one_line,
    _with_service,
    _with_store,
    parse_duration,
)
from hookd.cli_endpoint_flags import (
    _credentials_from_args,
    _event_types_arg,
    _filter_arg,
    _metadata_arg,
    _metadata_pairs,
    _override_args,
    _settings_from_args,
    _unset_arg,
    _unset_keys,
)
from hookd.cli_endpoint_views import cmd_endpoint_list, cmd_endpoint_show
from hookd.errors import HookdError
from hookd.models import Endpoint
from hookd.service import (
    MAX_TEST_WAIT_S,
    EndpointChanges,
    NewEndpoint,
    Service,
    check_url,
)
from hookd.signing import InvalidSecret, decode_secret, public_key
from hookd.store import Store

NO_KEY_WARNING = (
    "hookd: warning: signing secret stored unencrypted: set security.secret_key_file or "
    "HOOKD_SECRET_KEY (create a key with `hookd keygen`)"
)


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


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `endpoint` and its subcommands to the `hookd` parser."""
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
