"""`hookd deliveries`, `attempts`, `retry`, `resend`, `replay` and `status`: looking at deliveries
and their attempts, and the actions that send them again, through the operating service as an
operator (`status` reads the store directly).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import UTC, datetime

import orjson

from hookd import config
from hookd.cli_common import (
    OPERATOR,
    _db_args,
    _flat,
    _nothing,
    _one_line,
    _print_json,
    _time,
    _when,
    _with_service,
    _with_store,
)
from hookd.errors import HookdError
from hookd.models import AttemptLogEntry, DeliveryRecord, DeliveryState
from hookd.service import (
    MAX_PAGE_SIZE,
    PageRequest,
    Selection,
    Service,
)
from hookd.store import Store


def _deliveries(count: int, state: str) -> str:
    """ "1 failed delivery", "3 failed deliveries"."""
    return f"{count} {state} {'delivery' if count == 1 else 'deliveries'}"


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


def _time_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", help="created at or after (ISO 8601 with zone)")
    p.add_argument("--until", help="created before (ISO 8601 with zone)")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `deliveries`, `attempts`, `retry`, `resend`, `replay` and `status` to the parser."""
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
