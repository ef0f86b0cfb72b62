"""The `hookd` commands that set up and run hookd rather than operate it: `migrate` (the schema
and the roles' grants), `run` (the daemon), `keygen` (the key for secrets at rest), `demo`, and
`api-token` (bearer tokens of the operator API, hookd/tokens.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hookd import config, logs, migrate, tokens
from hookd.cli_common import _db_args, _dsn
from hookd.errors import HookdError
from hookd.secretbox import generate_key


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


async def cmd_demo(args: argparse.Namespace) -> int:
    from hookd.demo import run_demo

    return await run_demo()


def add_migrate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `migrate` to the `hookd` parser."""
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


def add_run_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `run` to the `hookd` parser."""
    p = sub.add_parser("run", help="run the daemon")
    p.add_argument("--config", help="TOML configuration file (see config/hookd.example.toml)")
    p.add_argument("--dsn", help="overrides database.dsn and $HOOKD_DSN")
    p.set_defaults(fn=cmd_run)


def add_keygen_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `keygen` to the `hookd` parser."""
    p = sub.add_parser("keygen", help="print a new key for encrypting secrets at rest")
    p.set_defaults(fn=cmd_keygen)


def add_demo_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `demo` to the `hookd` parser."""
    p = sub.add_parser("demo", help="run everything on a throwaway PostgreSQL and a local receiver")
    p.set_defaults(fn=cmd_demo)


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


def add_api_token_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `api-token` and its subcommands to the `hookd` parser."""
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
